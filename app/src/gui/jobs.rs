//! The cells' jobs as the workbench schedules them: one runs on the worker at a time, the
//! rest wait in order; their progress is kept for the views.

use std::collections::{HashMap, VecDeque};

use routelab_probes::analysis::retrieval::Progress;

#[derive(Default)]
pub struct JobQueue {
    /// The cell whose job the worker is doing.
    pub running: Option<u64>,
    /// The worker is still doing a job of a notebook closed since (`Action::OpenNotebook`):
    /// its events are dropped, and no job starts until it ends.
    pub stale: Option<u64>,
    pub queue: VecDeque<u64>,
    pub progress: HashMap<u64, Progress>,
    /// Set when a re-run with masks should produce a compare cell: (masked cell, original cell).
    pub compare_when_done: Vec<(u64, u64)>,
    /// Run every cell as soon as the model is loaded (`routelab gui --run-all`).
    pub run_all_when_loaded: bool,
}

impl JobQueue {
    /// Queues `id` unless it is queued or running already.
    pub fn enqueue(&mut self, id: u64) {
        if !self.queue.contains(&id) && self.running != Some(id) {
            self.queue.push_back(id);
        }
    }

    /// The job of `cell` ended (finished, failed or cancelled).
    pub fn finished(&mut self, cell: u64) {
        if self.running == Some(cell) {
            self.running = None;
        }
        self.progress.remove(&cell);
    }
}
