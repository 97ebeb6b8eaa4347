//! The document: the notebook a researcher works in, where it lives, and whether it may be
//! written. Saving, autosaving and "save as" are here; nothing here draws or runs.
//!
//! Runs' traces and `notebook.json` are written in the order `notebook::store` describes: a
//! run's trace to a file of its own ([`Document::begin_run`]), then the `notebook.json` that
//! references it, and only then is the trace it replaced removed ([`Document::save`]); so a
//! crash at any point leaves a saved notebook whose traces are all there and its own.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use routelab_model::interventions::Interventions;
use routelab_model::session::Prompt;

use crate::notebook::{self, prompt_cell, Cell, CellKind, Notebook, RunSummary};

/// Autosave this long after the last change.
pub const AUTOSAVE_DELAY: Duration = Duration::from_secs(2);

pub struct Document {
    pub notebook: Notebook,
    pub dir: PathBuf,
    /// Why the notebook must not be written (corrupt or newer); saves are refused.
    pub read_only: Option<String>,
    pub dirty_since: Option<Instant>,
    /// How long changes rest before they are saved ([`AUTOSAVE_DELAY`]).
    pub autosave_delay: Duration,
    /// Traces in `dir` that cells no longer reference (replaced by a later run, or their cell
    /// deleted): removed once a saved `notebook.json` no longer references them, not before,
    /// as the one on disk may.
    superseded: Vec<String>,
}

impl Document {
    /// Opens the notebook in `dir` (the example notebook if there is none), removing what an
    /// interrupted save left there (`notebook::remove_orphans`). A notebook that cannot be read
    /// opens empty and read-only, its directory untouched; the second value says why.
    pub fn open(dir: PathBuf, model: &str) -> (Document, Option<String>) {
        let (notebook, read_only) = if notebook::exists(&dir) {
            match notebook::load(&dir) {
                Ok(nb) => {
                    notebook::remove_orphans(&dir, &nb);
                    (nb, None)
                }
                Err(e) => (Notebook::new(model), Some(e.to_string())),
            }
        } else {
            (example_notebook(model), None)
        };
        let why = read_only.clone();
        let doc = Document { notebook, dir, read_only, dirty_since: None, autosave_delay: AUTOSAVE_DELAY, superseded: vec![] };
        (doc, why)
    }

    /// Where a new run of prompt cell `cell` writes its trace (relative to `dir`): a file no
    /// saved notebook references yet. The cell keeps its current result until
    /// [`record_run`](Self::record_run).
    pub fn begin_run(&mut self, cell: u64) -> String {
        notebook::trace_relpath(cell, self.notebook.fresh_id())
    }

    /// Records a finished run of prompt cell `cell` (its trace already written at
    /// `summary.trace`), replacing the cell's previous result; false if there is no such
    /// prompt cell. Head means measured on the reference run are kept with the cell.
    pub fn record_run(&mut self, cell: u64, summary: RunSummary, interventions: Interventions) -> bool {
        let Some(CellKind::Prompt { result, interventions: iv, .. }) = self.notebook.cell_mut(cell).map(|c| &mut c.kind) else {
            return false;
        };
        if let Some(old) = result.replace(summary) {
            self.superseded.push(old.trace);
        }
        *iv = interventions;
        self.mark_dirty();
        true
    }

    /// Deletes a cell; its trace is removed after the next save.
    pub fn delete_cell(&mut self, id: u64) -> bool {
        let Some(i) = self.notebook.index_of(id) else { return false };
        if let CellKind::Prompt { result: Some(r), .. } = self.notebook.cells.remove(i).kind {
            self.superseded.push(r.trace);
        }
        self.mark_dirty();
        true
    }

    pub fn mark_dirty(&mut self) {
        if self.dirty_since.is_none() {
            self.dirty_since = Some(Instant::now());
        }
    }

    /// Whether changes have rested long enough to be saved.
    pub fn autosave_due(&self) -> bool {
        self.read_only.is_none() && self.dirty_since.is_some_and(|t| t.elapsed() >= self.autosave_delay)
    }

    /// Saves now, recording `model` as the notebook's model (refused for read-only notebooks).
    pub fn save(&mut self, model: &str) -> Result<(), String> {
        if let Some(why) = &self.read_only {
            self.dirty_since = None;
            return Err(format!("not saved: the notebook is read-only ({why})"));
        }
        self.notebook.model = model.to_string();
        notebook::save(&self.dir, &self.notebook).map_err(|e| format!("saving failed, the previous notebook.json is intact: {e}"))?;
        self.dirty_since = None;
        // Only now does no notebook.json on disk reference them.
        notebook::remove_traces(&self.dir, &self.notebook, self.superseded.iter().map(String::as_str));
        self.superseded.clear();
        Ok(())
    }

    /// Copies the notebook's traces to `dir` and saves it there, then continues there. Each
    /// copy is atomic and `notebook.json` is written last, so `dir` never holds a notebook
    /// whose traces are missing. A directory that holds another notebook is refused (its
    /// traces could be overwritten). If any step fails the document stays where it was, and
    /// what was copied is left (nothing of the original is touched).
    pub fn save_as(&mut self, dir: &Path, model: &str) -> Result<(), String> {
        let same = |a: &Path, b: &Path| a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b);
        if same(dir, &self.dir) && self.read_only.is_none() {
            return self.save(model);
        }
        if notebook::exists(dir) {
            return Err(format!("save as: {} already holds a notebook; choose a new or empty folder", dir.display()));
        }
        for rel in notebook::referenced_traces(&self.notebook) {
            if !Path::new(rel).components().all(|c| matches!(c, std::path::Component::Normal(_))) {
                return Err(format!("save as: the trace {rel:?} is not a path inside the notebook"));
            }
            let (from, to) = (self.dir.join(rel), dir.join(rel));
            if let Some(parent) = to.parent() {
                routelab_probes::atomic::create_dir_durable(parent).map_err(|e| format!("save as: {e}"))?;
            }
            routelab_probes::atomic::copy_atomic(&from, &to).map_err(|e| format!("save as: copying {} failed: {e}", from.display()))?;
        }
        let (old_dir, old_read_only) = (std::mem::replace(&mut self.dir, dir.to_path_buf()), self.read_only.take());
        let superseded = std::mem::take(&mut self.superseded);
        if let Err(e) = self.save(model) {
            self.dir = old_dir;
            self.read_only = old_read_only;
            self.superseded = superseded;
            return Err(e);
        }
        // The superseded traces stay in the old directory, whose notebook.json may still
        // reference them.
        Ok(())
    }

    pub fn cell_title(&self, id: u64) -> String {
        self.notebook.cell(id).map(|c| c.title.clone()).unwrap_or_else(|| format!("cell-{id}"))
    }
}

/// The example notebook a new user opens: the bundled model's example prompts.
pub fn example_notebook(model: &str) -> Notebook {
    let mut nb = Notebook::new(model);
    let id = nb.fresh_id();
    nb.cells.push(Cell {
        id,
        title: "Welcome".into(),
        kind: CellKind::Markdown {
            text: "# RouteLab\nRun a cell with **Shift+Enter** or ▶. Tokens are coloured by the top-1 expert of the chosen layer; hover a token for its routing in every layer.\n- Click a cell of the expert-load heatmap or the head grid to mask it, then “Re-run with masks” for a side-by-side comparison.\n- Every view exports as PNG, SVG or CSV.".into(),
        },
    });
    for (title, prompt, max) in example_prompts(model) {
        let id = nb.fresh_id();
        let mut c = prompt_cell(id, &title, Prompt::text(&prompt));
        if let CellKind::Prompt { settings, .. } = &mut c.kind {
            settings.max_new_tokens = max;
        }
        nb.cells.push(c);
    }
    nb
}

/// (title, prompt, tokens to generate) from the bundled model's examples.json, else generic.
fn example_prompts(model: &str) -> Vec<(String, String, usize)> {
    let read = || -> Option<Vec<(String, String, usize)>> {
        let b = routelab_model::source::BUNDLED.iter().find(|b| b.name == model)?;
        let text = std::fs::read_to_string(routelab_model::source::assets_dir().join(b.relative).join("examples.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        let list = v.get("examples")?.as_array()?;
        // One prompt of each kind the workbench opens with: prose, code, needle.
        let pick = |kind: &str| list.iter().find(|p| p.get("kind").and_then(|k| k.as_str()) == Some(kind));
        Some(
            ["prose", "code", "needle"]
                .iter()
                .filter_map(|k| pick(k))
                .filter_map(|p| {
                    Some((
                        p.get("title")?.as_str()?.to_string(),
                        p.get("prompt")?.as_str()?.to_string(),
                        p.get("max_new_tokens").and_then(|m| m.as_u64()).unwrap_or(32) as usize,
                    ))
                })
                .collect(),
        )
    };
    read().filter(|v| !v.is_empty()).unwrap_or_else(|| {
        vec![
            ("Prose".into(), "Once upon a time, in a small village by the sea,".into(), 32),
            ("Code".into(), "fn main() {\n    let numbers = vec![1, 2, 3];\n".into(), 32),
            ("Needle".into(), "Notes from the meeting. The passkey is 48213. Remember it. The weather was mild and the agenda long.\nWhat is the passkey? The passkey is".into(), 8),
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use routelab_model::hooks::HookPoint;
    use routelab_model::store::{CaptureStore, Values};
    use routelab_probes::trace::{Trace, TraceMeta};

    fn trace(prompt: &str) -> Trace {
        let mut store = CaptureStore::new(0);
        store.append(HookPoint::Tokens, &[], Values::U32(vec![1, 2, 3])).unwrap();
        store.pieces = vec!["a".into(), "b".into(), "c".into()];
        let meta = TraceMeta {
            model: "m".into(),
            architecture: "llama".into(),
            config: serde_json::json!({}),
            prompt: prompt.into(),
            generated_from: 1,
            interventions: Interventions::default(),
            capture: Default::default(),
            sampling: serde_json::Value::Null,
            routelab_version: "test".into(),
            replay: None,
        };
        Trace { meta, store }
    }

    /// A run of `cell` as the worker and the state do it: trace first, then the result.
    fn run(doc: &mut Document, cell: u64, text: &str) -> String {
        let rel = doc.begin_run(cell);
        notebook::write_trace(&doc.dir, &rel, &trace(text)).unwrap();
        let summary = RunSummary {
            trace: rel.clone(),
            generated_text: text.into(),
            prompt_tokens: 1,
            generated_tokens: 2,
            stop: "max tokens".into(),
            prefill_seconds: 0.0,
            decode_seconds: 0.0,
            model: "m".into(),
        };
        assert!(doc.record_run(cell, summary, Interventions::default()));
        rel
    }

    fn prompt_of(dir: &Path, rel: &str) -> String {
        Trace::read(&dir.join(rel)).unwrap().meta.prompt
    }

    fn open(dir: &Path) -> Document {
        let (doc, why) = Document::open(dir.to_path_buf(), "m");
        assert!(why.is_none(), "{why:?}");
        doc
    }

    #[test]
    fn a_rerun_replaces_the_previous_trace_only_once_the_notebook_is_saved() {
        let dir = tempfile::tempdir().unwrap();
        let mut doc = open(dir.path());
        let cell = doc.notebook.cells.iter().find(|c| matches!(c.kind, CellKind::Prompt { .. })).unwrap().id;
        let first = run(&mut doc, cell, "first");
        doc.save("m").unwrap();
        let second = run(&mut doc, cell, "second");
        assert_ne!(first, second, "each run has its own file");
        // The saved notebook still references the first run, whose trace is untouched.
        let saved = notebook::load(dir.path()).unwrap();
        assert!(notebook::referenced_traces(&saved).contains(first.as_str()));
        assert_eq!(prompt_of(dir.path(), &first), "first");
        doc.save("m").unwrap();
        assert!(!dir.path().join(&first).exists());
        assert_eq!(prompt_of(dir.path(), &second), "second");
        assert!(notebook::referenced_traces(&notebook::load(dir.path()).unwrap()).contains(second.as_str()));
    }

    #[test]
    fn a_deleted_cells_trace_is_removed_after_the_next_save() {
        let dir = tempfile::tempdir().unwrap();
        let mut doc = open(dir.path());
        let cell = doc.notebook.cells.iter().find(|c| matches!(c.kind, CellKind::Prompt { .. })).unwrap().id;
        let rel = run(&mut doc, cell, "kept until saved");
        doc.save("m").unwrap();
        assert!(doc.delete_cell(cell));
        assert!(dir.path().join(&rel).exists());
        doc.save("m").unwrap();
        assert!(!dir.path().join(&rel).exists());
    }

    #[test]
    fn opening_removes_what_a_crash_left_but_a_read_only_notebook_is_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let mut doc = open(dir.path());
        let cell = doc.notebook.cells.iter().find(|c| matches!(c.kind, CellKind::Prompt { .. })).unwrap().id;
        let kept = run(&mut doc, cell, "saved");
        doc.save("m").unwrap();
        // A run whose trace was written but whose notebook was never saved, and a killed write.
        let orphan = run(&mut doc, cell, "unsaved");
        let tmp = dir.path().join("traces/.cell-1-99.safetensors.aB3dE5.tmp");
        std::fs::write(&tmp, b"half").unwrap();
        drop(doc);
        let doc = open(dir.path());
        assert_eq!(notebook::referenced_traces(&doc.notebook).into_iter().collect::<Vec<_>>(), [kept.as_str()]);
        assert!(dir.path().join(&kept).exists());
        assert!(!dir.path().join(&orphan).exists() && !tmp.exists());
        // A notebook that cannot be read opens read-only and nothing in its directory goes.
        std::fs::write(dir.path().join("traces/cell-7-7.safetensors"), b"x").unwrap();
        std::fs::write(notebook::notebook_file(dir.path()), b"{ not json").unwrap();
        let (doc, why) = Document::open(dir.path().to_path_buf(), "m");
        assert!(why.is_some() && doc.read_only.is_some());
        assert!(dir.path().join(&kept).exists() && dir.path().join("traces/cell-7-7.safetensors").exists());
    }

    #[test]
    fn notebooks_from_before_runs_had_their_own_files_load_and_rerun() {
        let dir = tempfile::tempdir().unwrap();
        let mut doc = open(dir.path());
        let cell = doc.notebook.cells.iter().find(|c| matches!(c.kind, CellKind::Prompt { .. })).unwrap().id;
        let legacy = format!("traces/cell-{cell}.safetensors");
        run(&mut doc, cell, "old");
        if let Some(CellKind::Prompt { result: Some(r), .. }) = doc.notebook.cell_mut(cell).map(|c| &mut c.kind) {
            std::fs::rename(dir.path().join(&r.trace), dir.path().join(&legacy)).unwrap();
            r.trace = legacy.clone();
        }
        notebook::save(dir.path(), &doc.notebook).unwrap();
        let mut doc = open(dir.path());
        assert_eq!(prompt_of(dir.path(), &legacy), "old");
        let new = run(&mut doc, cell, "new");
        doc.save("m").unwrap();
        assert!(!dir.path().join(&legacy).exists());
        assert_eq!(prompt_of(dir.path(), &new), "new");
    }

    #[test]
    fn save_as_copies_the_traces_then_the_notebook_and_refuses_another_notebook() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut doc = open(a.path());
        let cell = doc.notebook.cells.iter().find(|c| matches!(c.kind, CellKind::Prompt { .. })).unwrap().id;
        let first = run(&mut doc, cell, "first");
        doc.save("m").unwrap();
        let second = run(&mut doc, cell, "second");
        let target = b.path().join("copy");
        doc.save_as(&target, "m").unwrap();
        assert_eq!(doc.dir, target);
        assert_eq!(prompt_of(&target, &second), "second");
        assert!(!target.join(&first).exists(), "only referenced traces are copied");
        // The original keeps what its notebook.json references.
        assert_eq!(prompt_of(a.path(), &first), "first");
        assert!(notebook::referenced_traces(&notebook::load(a.path()).unwrap()).contains(first.as_str()));
        // Into a directory that holds a notebook: refused, nothing there changes.
        let before = std::fs::read(notebook::notebook_file(a.path())).unwrap();
        let err = doc.save_as(a.path(), "m").unwrap_err();
        assert!(err.contains("already holds a notebook"), "{err}");
        assert_eq!(doc.dir, target);
        assert_eq!(std::fs::read(notebook::notebook_file(a.path())).unwrap(), before);
    }
}
