//! What cells' jobs produced, kept for the views: each prompt cell's run (live while it
//! streams, or rebuilt from its trace) and the traces of finished runs.

use std::collections::HashMap;

use routelab_probes::trace::Trace;

use super::document::Document;
use super::run_view::RunView;
use crate::notebook::CellKind;

#[derive(Default)]
pub struct Results {
    /// Each prompt cell's run: live while streaming, or loaded from its trace.
    pub runs: HashMap<u64, RunView>,
    /// Traces of finished runs (for export and compare).
    pub traces: HashMap<u64, Trace>,
}

impl Results {
    /// Every finished prompt cell's results, from its trace file; errors name the cell.
    pub fn load(doc: &Document) -> (Results, Vec<String>) {
        let mut r = Results::default();
        let errors = doc.notebook.cells.iter().filter_map(|c| r.load_cell(doc, c.id).err()).collect();
        (r, errors)
    }

    /// A finished prompt cell's results, from its trace file (nothing for other cells); the
    /// error names the cell.
    pub fn load_cell(&mut self, doc: &Document, id: u64) -> Result<(), String> {
        let Some(c) = doc.notebook.cell(id) else { return Ok(()) };
        if let CellKind::Prompt { result: Some(s), .. } = &c.kind {
            let t = Trace::read(&doc.dir.join(&s.trace))
                .map_err(|e| format!("cell “{}”: its saved results could not be read: {e}", c.title))?;
            self.runs.insert(id, RunView::from_trace(&t));
            self.traces.insert(id, t);
        }
        Ok(())
    }

    /// Forgets a cell's results (it is about to run again, or was deleted).
    pub fn remove(&mut self, id: u64) {
        self.runs.remove(&id);
        self.traces.remove(&id);
    }
}
