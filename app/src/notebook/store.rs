//! Reading and writing notebook directories.
//!
//! Saves are atomic (temporary file, fsync, rename), so a crash or a full disk leaves the
//! previous `notebook.json` intact. A notebook that cannot be read — corrupt JSON, or written
//! by a newer RouteLab — is reported and must be opened read-only: it is never overwritten.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cell::Cell;

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

/// Where a prompt cell's trace lives, relative to the notebook directory.
pub fn trace_relpath(cell_id: u64) -> String {
    format!("traces/cell-{cell_id}.safetensors")
}

pub fn exists(dir: &Path) -> bool {
    notebook_file(dir).exists()
}

/// Reads a notebook directory.
pub fn load(dir: &Path) -> Result<Notebook, NotebookError> {
    let path = notebook_file(dir);
    let text = std::fs::read_to_string(&path).map_err(|source| NotebookError::Io { path: path.clone(), source })?;
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

/// Writes `notebook.json` atomically (creating the directory and `traces/`).
pub fn save(dir: &Path, nb: &Notebook) -> Result<(), NotebookError> {
    std::fs::create_dir_all(dir.join("traces")).map_err(|source| NotebookError::Io { path: dir.to_path_buf(), source })?;
    let json = serde_json::to_string_pretty(nb).map_err(|e| NotebookError::Save(e.to_string()))?;
    routelab_probes::atomic::write_atomic(&notebook_file(dir), json.as_bytes()).map_err(|e| NotebookError::Save(e.to_string()))
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
