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
        let mut errors = vec![];
        for c in &doc.notebook.cells {
            if let CellKind::Prompt { result: Some(s), .. } = &c.kind {
                match Trace::read(&doc.dir.join(&s.trace)) {
                    Ok(t) => {
                        r.runs.insert(c.id, RunView::from_trace(&t));
                        r.traces.insert(c.id, t);
                    }
                    Err(e) => errors.push(format!("cell “{}”: its saved results could not be read: {e}", c.title)),
                }
            }
        }
        (r, errors)
    }

    /// Forgets a cell's results (it is about to run again, or was deleted).
    pub fn remove(&mut self, id: u64) {
        self.runs.remove(&id);
        self.traces.remove(&id);
    }
}
