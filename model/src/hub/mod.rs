//! Hugging Face hub repos: their file lists (from the hub when a network is there, else from
//! the local cache's snapshot), the quants of a GGUF repo ([`quants`]), and fetching a
//! safetensors checkpoint or one quant's files into the cache with progress. Everything that
//! is complete in the cache is used without a request.

pub mod quants;
pub mod verify;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{Api, ApiBuilder};
use hf_hub::{Cache, Repo, RepoType};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::source::LoadProgress;
pub use quants::Quant;

/// Where hub repos are looked up: the local cache, and whether the network may be used.
#[derive(Clone, Debug)]
pub struct Hub {
    pub cache: Cache,
    pub offline: bool,
}

/// Where a repo's file list came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "from", rename_all = "lowercase")]
pub enum Origin {
    Hub,
    /// The local cache's snapshot, which holds only what was downloaded; `why` the hub was
    /// not asked.
    Cache {
        why: String,
    },
}

/// A repo's files as `(path in the repo, size)`.
#[derive(Clone, Debug)]
pub struct RepoFiles {
    pub files: Vec<(String, Option<u64>)>,
    /// The commit the list is of (the snapshot's directory name in the cache).
    pub commit: Option<String>,
    pub origin: Origin,
    /// What each file must be once downloaded (from the hub's listing; empty for the cache).
    pub expected: HashMap<String, verify::Expected>,
}

/// The GGUF quants a repo offers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QuantListing {
    pub repo: String,
    pub revision: Option<String>,
    pub quants: Vec<Quant>,
    /// The repo (also) holds a safetensors checkpoint, which the bare repo id loads.
    pub has_checkpoint: bool,
    pub origin: Origin,
}

impl QuantListing {
    /// A GGUF repo: quants and no safetensors checkpoint.
    pub fn is_gguf(&self) -> bool {
        !self.has_checkpoint && !self.quants.is_empty()
    }

    /// `owner/name[@revision]`.
    pub fn repo_id(&self) -> String {
        repo_id(&self.repo, self.revision.as_deref())
    }

    /// The `--model` spec that loads `quant` (see [`spec`]).
    pub fn spec(&self, quant: &str) -> String {
        spec(&self.repo, self.revision.as_deref(), quant)
    }
}

/// `owner/name[@revision]`, as a `--model` names a repo.
pub fn repo_id(repo: &str, revision: Option<&str>) -> String {
    match revision {
        Some(r) => format!("{repo}@{r}"),
        None => repo.to_string(),
    }
}

/// The `--model` spec of a quant in a repo: `owner/name[@revision]:QUANT`.
pub fn spec(repo: &str, revision: Option<&str>, quant: &str) -> String {
    format!("{}:{quant}", repo_id(repo, revision))
}

/// `config.json` and safetensors weights at the repo's root.
fn has_checkpoint(files: &[(String, Option<u64>)]) -> bool {
    files.iter().any(|(f, _)| f == "config.json") && files.iter().any(|(f, _)| f.ends_with(".safetensors") && !f.contains('/'))
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

fn hf_repo(repo: &str, revision: Option<&str>) -> Repo {
    match revision {
        Some(r) => Repo::with_revision(repo.to_string(), RepoType::Model, r.to_string()),
        None => Repo::new(repo.to_string(), RepoType::Model),
    }
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

/// The hub's answer to `GET /api/models/{repo}/revision/{rev}?blobs=true`: hf-hub's `info()`
/// leaves out the sizes.
#[derive(Deserialize)]
struct RemoteInfo {
    sha: Option<String>,
    siblings: Vec<RemoteFile>,
}

#[derive(Deserialize)]
struct RemoteFile {
    rfilename: String,
    size: Option<u64>,
    lfs: Option<RemoteLfs>,
}

#[derive(Deserialize)]
struct RemoteLfs {
    sha256: String,
    size: u64,
}

/// Every file under `dir` as a `/`-separated relative path with its size; snapshot entries
/// are links into the cache's blobs, so a dangling one (blob gone) is left out.
fn list_dir(dir: &Path) -> Vec<(String, Option<u64>)> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, Option<u64>)>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            match std::fs::metadata(e.path()) {
                Ok(m) if m.is_dir() => walk(&e.path(), &rel, out),
                Ok(m) => out.push((rel, Some(m.len()))),
                Err(_) => {}
            }
        }
    }
    let mut out = vec![];
    walk(dir, "", &mut out);
    out.sort();
    out
}

impl Hub {
    /// The cache as the Python libraries find it (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
    /// `~/.cache/huggingface/hub`); offline when `HF_HUB_OFFLINE` is 1 or true.
    pub fn from_env() -> Hub {
        let cache = match std::env::var_os("HF_HUB_CACHE") {
            Some(p) => Cache::new(PathBuf::from(p)),
            None => Cache::from_env(),
        };
        let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        Hub { cache, offline }
    }

    pub fn new(cache: PathBuf, offline: bool) -> Hub {
        Hub { cache: Cache::new(cache), offline }
    }

    /// The snapshot directory of `repo` at `revision` in the cache: the commit a ref names,
    /// or the revision itself when it is a commit.
    pub fn snapshot(&self, repo: &str, revision: Option<&str>) -> Option<PathBuf> {
        let base = self.cache.path().join(hf_repo(repo, revision).folder_name());
        let rev = revision.unwrap_or("main");
        let commit = std::fs::read_to_string(base.join("refs").join(rev)).map(|c| c.trim().to_string()).unwrap_or_else(|_| rev.into());
        let dir = base.join("snapshots").join(commit);
        dir.is_dir().then_some(dir)
    }

    fn api(&self, repo: &str) -> Result<Api> {
        let mut builder = ApiBuilder::from_cache(self.cache.clone()).with_progress(false);
        // A mirror, as the Python libraries take it.
        if let Ok(endpoint) = std::env::var("HF_ENDPOINT") {
            builder = builder.with_endpoint(endpoint);
        }
        builder.build().map_err(|e| ModelError::Source(format!("{repo}: cannot reach the Hugging Face hub: {e}")))
    }

    /// The repo's file list from the hub, with sizes.
    fn remote_files(&self, repo: &str, revision: Option<&str>) -> Result<RepoFiles> {
        let fail = |e: String| ModelError::Source(format!("{repo}: cannot list the repository on the hub: {e}"));
        let mut response =
            self.api(repo)?.repo(hf_repo(repo, revision)).info_request().query("blobs", "true").call().map_err(|e| fail(e.to_string()))?;
        let body = response.body_mut().read_to_string().map_err(|e| fail(e.to_string()))?;
        let info: RemoteInfo = serde_json::from_str(&body).map_err(|e| fail(format!("unexpected answer: {e}")))?;
        let expected = info
            .siblings
            .iter()
            .map(|f| {
                let sha256 = f.lfs.as_ref().map(|l| l.sha256.clone());
                (f.rfilename.clone(), verify::Expected { size: f.lfs.as_ref().map(|l| l.size).or(f.size), sha256 })
            })
            .collect();
        Ok(RepoFiles {
            files: info.siblings.into_iter().map(|f| (f.rfilename, f.size)).collect(),
            commit: info.sha,
            origin: Origin::Hub,
            expected,
        })
    }

    fn cached_files(&self, repo: &str, revision: Option<&str>, why: String) -> Result<RepoFiles> {
        let snapshot = self.snapshot(repo, revision).ok_or_else(|| {
            ModelError::Source(format!(
                "{repo}: nothing is known of it: it is not in the local Hugging Face cache ({}), and the hub cannot be asked: {why}",
                self.cache.path().display()
            ))
        })?;
        let commit = snapshot.file_name().map(|c| c.to_string_lossy().into_owned());
        Ok(RepoFiles { files: list_dir(&snapshot), commit, origin: Origin::Cache { why }, expected: HashMap::new() })
    }

    /// The repo's files: from the hub, else (offline, or the hub not reachable) what the cache
    /// holds of them.
    pub fn files(&self, repo: &str, revision: Option<&str>) -> Result<RepoFiles> {
        if self.offline {
            return self.cached_files(repo, revision, "HF_HUB_OFFLINE is set".into());
        }
        self.remote_files(repo, revision).or_else(|e| self.cached_files(repo, revision, e.to_string()))
    }

    /// The GGUF quants of a repo (see [`quants`]).
    pub fn quants(&self, repo: &str, revision: Option<&str>) -> Result<QuantListing> {
        let listed = self.files(repo, revision)?;
        Ok(QuantListing {
            repo: repo.to_string(),
            revision: revision.map(str::to_string),
            quants: quants::group(&listed.files),
            has_checkpoint: has_checkpoint(&listed.files),
            origin: listed.origin,
        })
    }

    /// What a bare repo id loads: the snapshot directory of its safetensors checkpoint, or the
    /// first file of its GGUF quant when it has exactly one (several are refused, naming them).
    pub fn fetch(&self, repo: &str, revision: Option<&str>, progress: &mut dyn FnMut(LoadProgress)) -> Result<PathBuf> {
        // Offline path: everything the index or single file names is already cached.
        if let Some(dir) = self.snapshot(repo, revision) {
            if dir.join("config.json").exists() && crate::checkpoint::safetensors_files(&dir).is_ok() {
                return Ok(dir);
            }
        }
        let listed = self.files(repo, revision)?;
        if has_checkpoint(&listed.files) {
            return match &listed.origin {
                Origin::Hub => self.download_checkpoint(repo, revision, &listed, progress),
                Origin::Cache { why } => Err(ModelError::Source(format!(
                    "{repo}: only part of it is in the local Hugging Face cache, and the rest cannot be fetched: {why}"
                ))),
            };
        }
        let quants = quants::group(&listed.files);
        let mut names: Vec<&str> = quants.iter().map(|q| q.name.as_str()).collect();
        names.dedup();
        match names[..] {
            [] => Err(ModelError::Source(format!(
                "{repo}: no model in the repository{}: neither config.json with safetensors weights nor GGUF files with a quant in their names",
                if matches!(listed.origin, Origin::Hub) { "" } else { "'s cached files" }
            ))),
            [one] => self.fetch_quant(repo, revision, one, progress),
            _ => Err(ModelError::Source(format!(
                "{repo}: a GGUF repository with several quants ({}){}: choose one as {}",
                quants::names(&quants),
                if listed.origin == Origin::Hub { "" } else { " in the local cache" },
                spec(repo, revision, names[0])
            ))),
        }
    }

    /// The path of the first file of `quant` in a GGUF repo, with all its shards beside it:
    /// from the cache when they are all there, else downloaded with progress.
    pub fn fetch_quant(&self, repo: &str, revision: Option<&str>, quant: &str, progress: &mut dyn FnMut(LoadProgress)) -> Result<PathBuf> {
        let wanted = quants::normalize(quant).ok_or_else(|| {
            ModelError::Source(format!("{repo}: {quant:?} is not a GGUF quant name (such as Q4_K_M, Q8_0, IQ4_XS, BF16)"))
        })?;
        if let Some(snapshot) = self.snapshot(repo, revision) {
            let cached = quants::group(&list_dir(&snapshot));
            if let [q] = quants::find(&cached, &wanted)[..] {
                if q.is_complete() {
                    return Ok(snapshot.join(q.first_file()));
                }
            }
        }
        let listed = self.files(repo, revision)?;
        let all = quants::group(&listed.files);
        let q = match quants::find(&all, &wanted)[..] {
            [q] => q,
            [] if all.is_empty() => {
                return Err(ModelError::Source(format!(
                    "{repo}: no GGUF files with a quant in their names{}",
                    if listed.origin == Origin::Hub { "" } else { " in the local cache" }
                )))
            }
            [] => {
                return Err(ModelError::Source(format!(
                    "{repo}: no {wanted} quant{}; it has {}",
                    if listed.origin == Origin::Hub { "" } else { " in the local cache" },
                    quants::names(&all)
                )))
            }
            ref several => {
                let sets: Vec<&str> = several.iter().map(|q| q.first_file()).collect();
                return Err(ModelError::Source(format!(
                    "{repo}: {wanted} names several models in the repository ({}); download the one you want and give its path",
                    sets.join(", ")
                )));
            }
        };
        if let Origin::Cache { why } = &listed.origin {
            // The cache check above found it incomplete.
            let missing: Vec<String> = q.missing_shards().iter().map(usize::to_string).collect();
            return Err(ModelError::Source(format!(
                "{repo}: {wanted} is in {} shards, the local cache lacks shard {}, and they cannot be fetched: {why}",
                q.shards,
                missing.join(", ")
            )));
        }
        let snapshot = listed.commit.as_ref().map(|c| self.cache.repo(hf_repo(repo, revision)).pointer_path(c));
        let mut paths = Vec::with_capacity(q.files.len());
        for file in &q.files {
            verify::file_name(repo, file)?;
            let path = match snapshot.as_ref().map(|s| s.join(file)).filter(|p| p.exists()) {
                Some(p) => p,
                None => self.download(repo, revision, &listed, file, progress)?,
            };
            paths.push(path);
        }
        // The shards open from the first one's folder, so they must all be in one snapshot
        // (they are, unless the repo changed while they downloaded).
        if paths.iter().any(|p| p.parent() != paths[0].parent()) {
            return Err(ModelError::Source(format!("{repo}: the repository changed while {wanted} downloaded; load it again")));
        }
        Ok(paths.swap_remove(0))
    }

    /// Downloads what of a safetensors checkpoint the cache lacks; its snapshot directory.
    fn download_checkpoint(
        &self,
        repo: &str,
        revision: Option<&str>,
        listed: &RepoFiles,
        progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<PathBuf> {
        let cached = self.cache.repo(hf_repo(repo, revision));
        let available: Vec<String> = listed.files.iter().map(|(f, _)| f.clone()).collect();
        let mut dir = None;
        for file in needed_files(&available) {
            let path = match cached.get(&file) {
                Some(p) => p,
                None => self.download(repo, revision, listed, &file, progress)?,
            };
            if file == "config.json" {
                dir = path.parent().map(Path::to_path_buf);
            }
        }
        dir.ok_or_else(|| ModelError::Source(format!("{repo}: config.json did not download")))
    }

    /// Downloads one listed file into the cache and checks it (see [`verify`]).
    fn download(
        &self,
        repo: &str,
        revision: Option<&str>,
        listed: &RepoFiles,
        file: &str,
        progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<PathBuf> {
        verify::file_name(repo, file)?;
        let failed = |e: hf_hub::api::sync::ApiError| ModelError::Source(format!("{repo}: downloading {file} failed: {e}"));
        let api = self.api(repo)?;
        let remote = api.repo(hf_repo(repo, revision));
        let head = api.metadata(&remote.url(file)).map_err(failed)?;
        verify::cache_key(repo, "file hash (etag)", head.etag())?;
        verify::cache_key(repo, "commit", head.commit_hash())?;
        let path =
            remote.download_with_progress(file, Reporter { file: file.to_string(), total: 0, done: 0, sink: progress }).map_err(failed)?;
        let mut expected = listed.expected.get(file).cloned().unwrap_or_default();
        // The size the download itself announced, when the listing has none.
        expected.size = expected.size.or(Some(head.size() as u64));
        verify::downloaded(repo, file, &path, &expected)?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn specs_name_the_revision_when_there_is_one() {
        assert_eq!(spec("o/n", None, "Q8_0"), "o/n:Q8_0");
        assert_eq!(spec("o/n", Some("v2"), "Q8_0"), "o/n@v2:Q8_0");
    }
}
