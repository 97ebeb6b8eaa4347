//! The document: the notebook a researcher works in, where it lives, and whether it may be
//! written. Saving, autosaving and "save as" are here; nothing here draws or runs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use routelab_model::session::Prompt;

use crate::notebook::{self, prompt_cell, Cell, CellKind, Notebook};

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
}

impl Document {
    /// Opens the notebook in `dir` (the example notebook if there is none). A notebook that
    /// cannot be read opens empty and read-only; the second value says why.
    pub fn open(dir: PathBuf, model: &str) -> (Document, Option<String>) {
        let (notebook, read_only) = if notebook::exists(&dir) {
            match notebook::load(&dir) {
                Ok(nb) => (nb, None),
                Err(e) => (Notebook::new(model), Some(e.to_string())),
            }
        } else {
            (example_notebook(model), None)
        };
        let why = read_only.clone();
        (Document { notebook, dir, read_only, dirty_since: None, autosave_delay: AUTOSAVE_DELAY }, why)
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
        Ok(())
    }

    /// Copies the notebook's traces to `dir` and saves it there, then continues there. If any
    /// step fails the document stays where it was, and what was copied is left (nothing of
    /// the original is touched).
    pub fn save_as(&mut self, dir: &Path, model: &str) -> Result<(), String> {
        let traces = dir.join("traces");
        std::fs::create_dir_all(&traces).map_err(|e| format!("save as: {}: {e}", traces.display()))?;
        for c in &self.notebook.cells {
            if let CellKind::Prompt { result: Some(r), .. } = &c.kind {
                let (from, to) = (self.dir.join(&r.trace), dir.join(&r.trace));
                std::fs::copy(&from, &to).map_err(|e| format!("save as: copying {} to {}: {e}", from.display(), to.display()))?;
            }
        }
        let (old_dir, old_read_only) = (std::mem::replace(&mut self.dir, dir.to_path_buf()), self.read_only.take());
        if let Err(e) = self.save(model) {
            self.dir = old_dir;
            self.read_only = old_read_only;
            return Err(e);
        }
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
