//! Reading and writing notebook directories.
//!
//! Saves are atomic (temporary file, fsync, rename), so a crash or a full disk leaves the
//! previous `notebook.json` intact. A notebook that cannot be read — corrupt JSON, or written
//! by a newer RouteLab — is reported and must be opened read-only: it is never overwritten.
//!
//! Every run writes its trace to a new file ([`trace_relpath`]), never over one a saved
//! `notebook.json` may reference, and the trace is durable before any `notebook.json` names
//! it; a trace is removed only once a saved `notebook.json` no longer names it
//! ([`remove_traces`]). So at any instant the `notebook.json` on disk, old or new, names only
//! traces that exist and belong to its runs. What a crash leaves between those steps (a trace
//! no notebook names, a temporary file) is removed when the notebook is next opened
//! ([`remove_orphans`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use routelab_probes::atomic;
use routelab_probes::trace::Trace;
use serde::{Deserialize, Serialize};

use super::cell::{Cell, CellKind};

pub const FORMAT: &str = "routelab-notebook";
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notebook {
    pub format: String,
    pub version: u32,
    /// The model the notebook's cells run on (a `--model` string).
    pub model: String,
    pub cells: Vec<Cell>,
    pub next_id: u64,
}

impl Notebook {
    pub fn new(model: &str) -> Self {
        Notebook { format: FORMAT.into(), version: VERSION, model: model.to_string(), cells: vec![], next_id: 1 }
    }

    pub fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub fn cell(&self, id: u64) -> Option<&Cell> {
        self.cells.iter().find(|c| c.id == id)
    }

    pub fn cell_mut(&mut self, id: u64) -> Option<&mut Cell> {
        self.cells.iter_mut().find(|c| c.id == id)
    }

    pub fn index_of(&self, id: u64) -> Option<usize> {
        self.cells.iter().position(|c| c.id == id)
    }

    /// Inserts a cell after `after` (or at the end).
    pub fn insert_after(&mut self, after: Option<u64>, cell: Cell) {
        match after.and_then(|a| self.index_of(a)) {
            Some(i) => self.cells.insert(i + 1, cell),
            None => self.cells.push(cell),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotebookError {
    #[error("{}: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("{}: written by a newer RouteLab (notebook version {found}; this one reads up to {VERSION}); opened read-only", path.display())]
    Newer { path: PathBuf, found: u32 },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Save(String),
}

pub fn notebook_file(dir: &Path) -> PathBuf {
    dir.join("notebook.json")
}

/// Where the trace of a prompt cell's run lives, relative to the notebook directory. `run` is
/// unique within the notebook (a [`Notebook::fresh_id`]), so a re-run never overwrites the
/// trace the saved notebook references.
pub fn trace_relpath(cell_id: u64, run: u64) -> String {
    format!("traces/cell-{cell_id}-{run}.safetensors")
}

/// Whether `file_name` is a trace file by RouteLab's naming: `cell-{id}-{run}.safetensors`, or
/// `cell-{id}.safetensors` (notebooks saved before runs had their own files).
pub fn is_trace_file_name(file_name: &str) -> bool {
    let Some(stem) = file_name.strip_prefix("cell-").and_then(|s| s.strip_suffix(".safetensors")) else { return false };
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match stem.split_once('-') {
        Some((id, run)) => number(id) && number(run),
        None => number(stem),
    }
}

/// The file name of `rel` if it is `traces/{trace file}` ([`is_trace_file_name`]); nothing
/// else in a notebook directory is ever removed.
fn trace_file_name(rel: &str) -> Option<&str> {
    rel.strip_prefix("traces/").filter(|name| is_trace_file_name(name))
}

/// The traces `nb` references (relative paths).
pub fn referenced_traces(nb: &Notebook) -> BTreeSet<&str> {
    nb.cells
        .iter()
        .filter_map(|c| match &c.kind {
            CellKind::Prompt { result: Some(r), .. } => Some(r.trace.as_str()),
            _ => None,
        })
        .collect()
}

/// Writes a run's trace at `rel` (from [`trace_relpath`]), atomically and durably: a
/// `notebook.json` naming it is saved only after this returns.
pub fn write_trace(dir: &Path, rel: &str, trace: &Trace) -> Result<(), NotebookError> {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        atomic::create_dir_durable(parent).map_err(|e| NotebookError::Save(e.to_string()))?;
    }
    trace.write(&path).map_err(|e| NotebookError::Save(e.to_string()))
}

pub fn exists(dir: &Path) -> bool {
    notebook_file(dir).exists()
}

/// Reads a notebook directory.
pub fn load(dir: &Path) -> Result<Notebook, NotebookError> {
    let path = notebook_file(dir);
    let text = routelab_model::whole_file::read_to_string(&path, routelab_model::whole_file::NOTEBOOK_LIMIT, "notebook")
        .map_err(|source| NotebookError::Io { path: path.clone(), source })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| NotebookError::Corrupt { path: path.clone(), message: format!("not valid JSON ({e})") })?;
    if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(NotebookError::Corrupt { path, message: format!("not a RouteLab notebook (format is not {FORMAT:?})") });
    }
    let version = value
        .get("version")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| NotebookError::Corrupt { path: path.clone(), message: "no version field".into() })? as u32;
    if version > VERSION {
        return Err(NotebookError::Newer { path, found: version });
    }
    let nb: Notebook = serde_json::from_value(value)
        .map_err(|e| NotebookError::Corrupt { path: path.clone(), message: format!("unreadable cells ({e})") })?;
    let mut ids: Vec<u64> = nb.cells.iter().map(|c| c.id).collect();
    ids.sort();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        return Err(NotebookError::Corrupt { path, message: "two cells share an id".into() });
    }
    Ok(nb)
}

/// Writes `notebook.json` atomically (creating the directory and `traces/`). The traces it
/// references must already be written ([`write_trace`]).
pub fn save(dir: &Path, nb: &Notebook) -> Result<(), NotebookError> {
    atomic::create_dir_durable(&dir.join("traces")).map_err(|e| NotebookError::Save(e.to_string()))?;
    let json = serde_json::to_string_pretty(nb).map_err(|e| NotebookError::Save(e.to_string()))?;
    atomic::write_atomic(&notebook_file(dir), json.as_bytes()).map_err(|e| NotebookError::Save(e.to_string()))
}

/// Removes the traces `rels` that `saved` — the notebook just saved in `dir` — does not
/// reference (a cell's earlier run, a deleted cell's). Only files by RouteLab's trace naming
/// inside `traces/` are touched. Best effort: what cannot be removed now is an orphan, removed
/// when the notebook is next opened.
pub fn remove_traces<'a>(dir: &Path, saved: &Notebook, rels: impl IntoIterator<Item = &'a str>) {
    let keep = referenced_traces(saved);
    for rel in rels {
        if !keep.contains(rel) && trace_file_name(rel).is_some() {
            let _ = std::fs::remove_file(dir.join(rel));
        }
    }
}

/// Removes what interrupted saves left in `dir`, whose `notebook.json` is `nb` as read: trace
/// files (by RouteLab's naming, in `traces/`) that `nb` does not reference, and the temporary
/// files of `notebook.json` and of traces. Returns what was removed. Call it only when no run
/// is writing into `dir`.
pub fn remove_orphans(dir: &Path, nb: &Notebook) -> Vec<PathBuf> {
    let keep = referenced_traces(nb);
    let mut removed = vec![];
    let mut sweep = |d: &Path, orphan: &dyn Fn(&str) -> bool| {
        let Ok(entries) = std::fs::read_dir(d) else { return };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if orphan(name) && e.file_type().is_ok_and(|t| t.is_file()) && std::fs::remove_file(e.path()).is_ok() {
                removed.push(e.path());
            }
        }
    };
    sweep(dir, &|name| atomic::temp_target(name) == Some("notebook.json"));
    sweep(&dir.join("traces"), &|name| match atomic::temp_target(name) {
        Some(target) => is_trace_file_name(target),
        None => is_trace_file_name(name) && !keep.contains(format!("traces/{name}").as_str()),
    });
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notebook::cell::{prompt_cell, CellKind};
    use routelab_model::session::Prompt;

    #[test]
    fn notebooks_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut nb = Notebook::new("tiny-moe");
        let id = nb.fresh_id();
        nb.cells.push(prompt_cell(id, "prose", Prompt::text("Once upon a time")));
        let id2 = nb.fresh_id();
        nb.cells.push(crate::notebook::Cell { id: id2, title: "notes".into(), kind: CellKind::Markdown { text: "# Hi".into() } });
        save(dir.path(), &nb).unwrap();
        assert_eq!(load(dir.path()).unwrap(), nb);
    }

    fn ran(id: u64, trace: &str) -> Cell {
        let mut c = prompt_cell(id, "p", Prompt::text("x"));
        if let CellKind::Prompt { result, .. } = &mut c.kind {
            *result = Some(crate::notebook::RunSummary {
                trace: trace.into(),
                generated_text: String::new(),
                prompt_tokens: 1,
                generated_tokens: 0,
                stop: "max tokens".into(),
                prefill_seconds: 0.0,
                decode_seconds: 0.0,
                model: "m".into(),
            });
        }
        c
    }

    #[test]
    fn trace_names_are_recognised_exactly() {
        assert_eq!(trace_relpath(3, 17), "traces/cell-3-17.safetensors");
        for name in ["cell-3-17.safetensors", "cell-3.safetensors", "cell-0-0.safetensors"] {
            assert!(is_trace_file_name(name), "{name}");
        }
        for name in [
            "cell-.safetensors",
            "cell-3-.safetensors",
            "cell-3-1-2.safetensors",
            "cell-a.safetensors",
            "cell-3.safetensors.bak",
            "my-cell-3.safetensors",
            "notebook.json",
            "cell-3-17.csv",
        ] {
            assert!(!is_trace_file_name(name), "{name}");
        }
    }

    #[test]
    fn orphans_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut nb = Notebook::new("m");
        // One cell from before runs had their own files, one from now.
        nb.cells = vec![ran(1, "traces/cell-1.safetensors"), ran(2, "traces/cell-2-5.safetensors")];
        save(d, &nb).unwrap();
        let files = [
            "traces/cell-1.safetensors",
            "traces/cell-2-5.safetensors",
            // Left by crashes: a trace no notebook saved references, temporary files.
            "traces/cell-2-6.safetensors",
            "traces/.cell-2-7.safetensors.a1B2c3.tmp",
            ".notebook.json.Zz9yX8.tmp",
            // The user's own files.
            "traces/cell-1.safetensors.bak",
            "traces/notes.txt",
            "traces/.notes.txt.a1B2c3.tmp",
            "cell-4-4.safetensors",
            ".other.json.a1B2c3.tmp",
        ];
        for f in files {
            std::fs::write(d.join(f), f).unwrap();
        }
        std::fs::create_dir(d.join("traces/cell-9-9.safetensors")).unwrap();
        let mut removed: Vec<String> =
            remove_orphans(d, &load(d).unwrap()).iter().map(|p| p.strip_prefix(d).unwrap().to_string_lossy().into_owned()).collect();
        removed.sort();
        assert_eq!(removed, [".notebook.json.Zz9yX8.tmp", "traces/.cell-2-7.safetensors.a1B2c3.tmp", "traces/cell-2-6.safetensors"]);
        for f in files.iter().filter(|f| !removed.iter().any(|r| r == *f)) {
            assert!(d.join(f).exists(), "{f} was removed");
        }
        assert!(d.join("traces/cell-9-9.safetensors").is_dir());
        assert_eq!(load(d).unwrap(), nb);
    }

    #[test]
    fn removing_superseded_traces_spares_referenced_ones_and_other_paths() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut nb = Notebook::new("m");
        nb.cells = vec![ran(1, "traces/cell-1-2.safetensors")];
        save(d, &nb).unwrap();
        for f in ["traces/cell-1-2.safetensors", "traces/cell-1-1.safetensors", "keep.safetensors", "traces/x.safetensors"] {
            std::fs::write(d.join(f), f).unwrap();
        }
        remove_traces(
            d,
            &nb,
            [
                "traces/cell-1-2.safetensors",
                "traces/cell-1-1.safetensors",
                "keep.safetensors",
                "traces/x.safetensors",
                "traces/../notebook.json",
            ],
        );
        assert!(!d.join("traces/cell-1-1.safetensors").exists());
        for f in ["traces/cell-1-2.safetensors", "keep.safetensors", "traces/x.safetensors", "notebook.json"] {
            assert!(d.join(f).exists(), "{f} was removed");
        }
    }

    #[test]
    fn corrupt_and_newer_notebooks_are_reported_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(notebook_file(dir.path()), "{ \"format\": \"routelab-notebook\", \"version\": 1, \"cells\": [ ").unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("notebook.json") && e.contains("not valid JSON"), "{e}");
        let mut nb = serde_json::to_value(Notebook::new("m")).unwrap();
        nb["version"] = 7.into();
        std::fs::write(notebook_file(dir.path()), nb.to_string()).unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(matches!(e, NotebookError::Newer { found: 7, .. }), "{e}");
        assert!(e.to_string().contains("read-only"));
    }
}
