//! The workbench's state, as rerun splits a viewer's: the document (the notebook, [`Document`]),
//! what cells' jobs produced ([`Results`]) and their queue ([`JobQueue`]), the UI's own state
//! ([`UiState`]); and the actions views request, applied here. Nothing here draws.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use routelab_model::hub::{self, QuantListing};
use routelab_model::interventions::{ExpertMethod, HeadMethod, Intervention, Interventions};
use routelab_model::replay::RoutingReplay;
use routelab_model::session::{ModelInfo, Prompt};
use routelab_model::source::{LoadProgress, ModelSource};
use routelab_model::tokenizer::Tokenizer;
use routelab_probes::jobs::attribute::AttributeJob;
use routelab_probes::jobs::patch::PatchJob;
use routelab_probes::jobs::run::RunJob;
use routelab_probes::trace::Trace;

use super::dialogs::FileDialogs;
pub use super::document::example_notebook;
use super::document::Document;
pub use super::export::{export_cell, slug, view_of, ExportKind};
use super::jobs::JobQueue;
use super::results::Results;
use super::run_view::RunView;
pub use super::ui_state::{CellUi, MaskTarget, Severity, UiState};
use super::worker::{Command, Event, Worker};
use crate::notebook::{self, attribution_cell, patching_cell, prompt_cell, Cell, CellKind, ReplaySettings, SpecializationSettings};

/// What a view asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    LoadModel,
    RunCell(u64),
    RunAll,
    Cancel,
    DeleteCell(u64),
    MoveCell(u64, i32),
    AddMarkdown(Option<u64>),
    AddPrompt(Option<u64>),
    AddScan(Option<u64>),
    AddSpecialization(Option<u64>),
    AddPatching(Option<u64>),
    AddAttribution(Option<u64>),
    SetMaskTarget(u64, MaskTarget),
    SetMask(u64, Intervention),
    RemoveIntervention(u64, usize),
    RerunWithMasks(u64),
    ExportView { cell: u64, view: ExportKind, ext: &'static str },
    ExportCell(u64),
    Save,
    OpenNotebook,
    SaveNotebookAs,
    Edited,
}

#[derive(Clone, Debug, Default)]
pub struct ModelStatus {
    pub requested: String,
    pub device: String,
    /// The weights' dtype by name (`f32`, `bf16`), or `None` for the device's default.
    pub dtype: Option<String>,
    pub loading: Option<LoadProgress>,
    pub load_started: Option<Instant>,
    pub info: Option<ModelInfo>,
    pub has_chat_template: bool,
    /// The loaded model's tokenizer, for counting a prompt's tokens as it is typed.
    pub tokenizer: Option<Arc<Tokenizer>>,
    pub error: Option<String>,
    /// The quants of the hub repo last asked for, to choose from.
    pub quants: Option<QuantList>,
}

/// A hub repo's GGUF quants in the model panel.
#[derive(Clone, Debug, PartialEq)]
pub enum QuantList {
    /// Being listed; `repo` is `owner/name[@revision]`.
    Listing {
        repo: String,
    },
    Listed(QuantListing),
}

pub struct AppState {
    /// The notebook and where it lives (the store).
    pub doc: Document,
    pub model: ModelStatus,
    /// What cells' jobs produced.
    pub results: Results,
    pub jobs: JobQueue,
    /// Per-cell UI state, messages, theme (the blueprint).
    pub ui: UiState,
}

impl AppState {
    /// Opens the notebook in `dir` (creating the example notebook if there is none).
    pub fn open(dir: PathBuf, model_override: Option<String>) -> AppState {
        let (doc, unreadable) = Document::open(dir, model_override.as_deref().unwrap_or(super::DEFAULT_MODEL));
        let mut ui = UiState::default();
        if let Some(e) = unreadable {
            ui.error(format!("{e}. The notebook is open read-only and will not be overwritten; use “Save as” to keep changes elsewhere."));
        }
        let (results, errors) = Results::load(&doc);
        errors.into_iter().for_each(|e| ui.error(e));
        AppState {
            model: ModelStatus {
                requested: model_override.unwrap_or_else(|| doc.notebook.model.clone()),
                device: "cpu".into(),
                ..Default::default()
            },
            doc,
            results,
            jobs: JobQueue::default(),
            ui,
        }
    }

    pub fn cell_ui(&mut self, id: u64) -> &mut CellUi {
        self.ui.cell(id)
    }

    pub fn mark_dirty(&mut self) {
        self.doc.mark_dirty();
    }

    pub fn error(&mut self, m: impl Into<String>) {
        self.ui.error(m);
    }

    pub fn info(&mut self, m: impl Into<String>) {
        self.ui.info(m);
    }

    /// Saves now (refused for read-only notebooks); false, with a message, if not saved.
    pub fn save(&mut self) -> bool {
        match self.doc.save(&self.model.requested) {
            Ok(()) => true,
            Err(e) => {
                self.error(e);
                false
            }
        }
    }

    /// Saves if changes have rested long enough.
    pub fn autosave(&mut self) {
        if self.doc.autosave_due() {
            self.save();
        }
    }

    /// Copies the notebook (and its traces) to a new directory and continues there.
    pub fn save_as(&mut self, dir: &Path) {
        match self.doc.save_as(dir, &self.model.requested) {
            Ok(()) => self.info(format!("saved as {}", dir.display())),
            Err(e) => self.error(format!("{e}; the notebook stays in {}", self.doc.dir.display())),
        }
    }

    pub fn busy(&self) -> bool {
        self.jobs.running.is_some() || self.jobs.stale.is_some() || self.model.loading.is_some()
    }

    // ---- worker events ----

    pub fn on_event(&mut self, e: Event, worker: &Worker) {
        if self.jobs.stale.is_some() {
            let ended = matches!(
                e,
                Event::RunDone { .. }
                    | Event::CompareDone { .. }
                    | Event::ScanDone { .. }
                    | Event::SpecializationDone { .. }
                    | Event::PatchDone { .. }
                    | Event::AttributeDone { .. }
                    | Event::Failed { cell: Some(_), .. }
            );
            if ended || matches!(e, Event::Prefilled { .. } | Event::Token { .. } | Event::Progress { .. }) {
                // The closed notebook's job: its results must not land in this notebook.
                if ended {
                    self.jobs.stale = None;
                    self.next_in_queue(worker);
                }
                return;
            }
        }
        match e {
            Event::LoadProgress(p) => self.model.loading = Some(p),
            Event::Loaded { info, has_chat_template, tokenizer } => {
                self.model.tokenizer = Some(tokenizer);
                self.model.loading = None;
                self.model.error = None;
                self.info(format!("loaded {}: {}", info.name, info.summary));
                self.model.info = Some(info);
                self.model.has_chat_template = has_chat_template;
                if std::mem::take(&mut self.jobs.run_all_when_loaded) {
                    let ids: Vec<u64> =
                        self.doc.notebook.cells.iter().filter(|c| !matches!(c.kind, CellKind::Markdown { .. })).map(|c| c.id).collect();
                    self.jobs.queue.extend(ids);
                }
                self.next_in_queue(worker);
            }
            Event::QuantsListed { repo, listing } => {
                if !matches!(&self.model.quants, Some(QuantList::Listing { repo: r }) if *r == repo) {
                    return; // Another repo was asked for since.
                }
                match listing {
                    Ok(l) if l.is_gguf() => {
                        let mut names: Vec<&str> = l.quants.iter().map(|q| q.name.as_str()).collect();
                        names.dedup();
                        if let [only] = names[..] {
                            self.model.requested = l.spec(only);
                            self.model.quants = Some(QuantList::Listed(l));
                            self.load_model(worker);
                        } else {
                            self.info(format!("{repo} is a GGUF repository with {} quants: choose one in the model panel", l.quants.len()));
                            self.model.quants = Some(QuantList::Listed(l));
                        }
                    }
                    // A safetensors checkpoint (or nothing loadable, which the load will say).
                    Ok(_) => {
                        self.model.quants = None;
                        self.load_model(worker);
                    }
                    // Nothing was loaded: the model loaded before, if any, stays.
                    Err(m) => {
                        self.model.quants = None;
                        self.model.error = Some(m.clone());
                        self.jobs.queue.clear();
                        self.error(format!("listing {repo} failed: {m}"));
                    }
                }
            }
            Event::LoadFailed(m) => {
                self.model.loading = None;
                self.model.info = None;
                self.model.tokenizer = None;
                self.model.error = Some(m.clone());
                self.jobs.queue.clear();
                self.error(format!("loading {} failed: {m}", self.model.requested));
            }
            Event::Prefilled { cell, rows, layers, heads, experts } => {
                let mut v = RunView::new(layers, heads, experts);
                v.prompt_len = rows.len();
                if let Err(e) = v.extend(&rows) {
                    self.error(format!("internal: the run's rows do not fit its view: {e}"));
                }
                let ui = self.cell_ui(cell);
                ui.layer = ui.layer.min(layers.saturating_sub(1));
                if let Some(l) = v.experts.iter().position(|&e| e > 0) {
                    if v.experts[ui.layer] == 0 {
                        ui.layer = l;
                    }
                }
                self.results.runs.insert(cell, v);
            }
            Event::Token { cell, rows, text } => {
                if let Some(v) = self.results.runs.get_mut(&cell) {
                    let pushed = v.extend(&rows);
                    v.generated_text.push_str(&text);
                    if let Err(e) = pushed {
                        self.error(format!("internal: the run's rows do not fit its view: {e}"));
                    }
                }
            }
            Event::RunDone { cell, dir, summary, trace, interventions } => {
                // Saved as elsewhere while it ran: the trace follows the notebook, before the
                // notebook references it.
                if dir != self.doc.dir {
                    if let Err(e) = notebook::write_trace(&self.doc.dir, &summary.trace, &trace) {
                        self.error(format!("the run's trace could not be written to {}: {e}", self.doc.dir.display()));
                        self.finish_job(cell, worker);
                        return;
                    }
                }
                if let Some(v) = self.results.runs.get_mut(&cell) {
                    v.done = true;
                    v.generated_text = summary.generated_text.clone();
                }
                let rel = summary.trace.clone();
                if self.doc.record_run(cell, summary, interventions) {
                    self.results.traces.insert(cell, *trace);
                } else {
                    // The cell was deleted while it ran: nothing references the trace.
                    notebook::remove_traces(&self.doc.dir, &self.doc.notebook, [rel.as_str()]);
                }
                self.finish_job(cell, worker);
                if let Some(i) = self.jobs.compare_when_done.iter().position(|(m, _)| *m == cell) {
                    let (masked, original) = self.jobs.compare_when_done.remove(i);
                    self.add_compare(original, masked, worker);
                }
            }
            Event::Progress { cell, progress } => {
                self.jobs.progress.insert(cell, progress);
            }
            Event::CompareDone { cell, summary } => {
                if let Some(CellKind::Compare { result, .. }) = self.doc.notebook.cell_mut(cell).map(|c| &mut c.kind) {
                    *result = Some(summary);
                }
                self.mark_dirty();
                self.finish_job(cell, worker);
            }
            Event::ScanDone { cell, summary } => {
                if let Some(CellKind::RetrievalScan { result, .. }) = self.doc.notebook.cell_mut(cell).map(|c| &mut c.kind) {
                    *result = Some(summary);
                }
                self.mark_dirty();
                self.finish_job(cell, worker);
            }
            Event::SpecializationDone { cell, summary } => {
                if let Some(CellKind::Specialization { result, .. }) = self.doc.notebook.cell_mut(cell).map(|c| &mut c.kind) {
                    *result = Some(summary);
                }
                self.mark_dirty();
                self.finish_job(cell, worker);
            }
            Event::PatchDone { cell, summary } => {
                if summary.result.incomplete {
                    self.info("patching cancelled: the cell shows the cells swept so far");
                }
                if let Some(CellKind::Patching { result, .. }) = self.doc.notebook.cell_mut(cell).map(|c| &mut c.kind) {
                    *result = Some(summary);
                }
                self.mark_dirty();
                self.finish_job(cell, worker);
            }
            Event::AttributeDone { cell, summary } => {
                if let Some(CellKind::Attribution { result, .. }) = self.doc.notebook.cell_mut(cell).map(|c| &mut c.kind) {
                    *result = Some(*summary);
                }
                self.mark_dirty();
                self.finish_job(cell, worker);
            }
            Event::Failed { cell, message } => {
                let title = cell.and_then(|c| self.doc.notebook.cell(c)).map(|c| c.title.clone()).unwrap_or_default();
                self.error(if title.is_empty() { message } else { format!("cell “{title}”: {message}") });
                match cell {
                    Some(c) => {
                        // A re-run that failed or was cancelled: the cell shows its kept result again.
                        if self.jobs.running == Some(c) && self.doc.notebook.cell(c).is_some_and(|c| c.has_result()) {
                            if let Err(e) = self.results.load_cell(&self.doc, c) {
                                self.error(e);
                            }
                        }
                        self.finish_job(c, worker)
                    }
                    None => self.jobs.running = None,
                }
            }
        }
    }

    fn finish_job(&mut self, cell: u64, worker: &Worker) {
        self.jobs.finished(cell);
        self.next_in_queue(worker);
    }

    fn next_in_queue(&mut self, worker: &Worker) {
        if self.jobs.running.is_some() || self.jobs.stale.is_some() || self.model.loading.is_some() {
            return;
        }
        while let Some(id) = self.jobs.queue.pop_front() {
            if self.start_cell(id, worker) {
                return;
            }
        }
    }

    /// Sends a cell's job to the worker; false if the cell has nothing to run.
    fn start_cell(&mut self, id: u64, worker: &Worker) -> bool {
        let Some(cell) = self.doc.notebook.cell(id).cloned() else { return false };
        let cmd = match cell.kind {
            CellKind::Markdown { .. } => return false,
            CellKind::Prompt { prompt, settings, interventions, capture, replay, .. } => {
                // Built before the run begins, so a bad source leaves the cell as it was.
                let replay = match replay.map(|r| self.routing_replay(&r)).transpose() {
                    Ok(r) => r.map(Arc::new),
                    Err(e) => {
                        self.error(format!("cell “{}”: {e}", cell.title));
                        return false;
                    }
                };
                // The cell keeps its saved result (and trace) until the new run is recorded,
                // so a crash or a cancel mid-run loses nothing; the view shows the live run.
                let trace_rel = self.doc.begin_run(id);
                self.results.remove(id);
                // Logits make compare cells possible; margins colour the strip by near ties.
                let job = RunJob { prompt, settings, interventions, capture: capture.with("logits").with("margin"), replay };
                Command::Run { cell: id, job, dir: self.doc.dir.clone(), trace_rel }
            }
            CellKind::Compare { a, b, .. } => {
                let trace = |c: u64| -> Option<PathBuf> {
                    match &self.doc.notebook.cell(c)?.kind {
                        CellKind::Prompt { result: Some(r), .. } => Some(self.doc.dir.join(&r.trace)),
                        _ => None,
                    }
                };
                let b_iv = match self.doc.notebook.cell(b).map(|c| &c.kind) {
                    Some(CellKind::Prompt { interventions, .. }) => interventions.clone(),
                    _ => Interventions::default(),
                };
                match (trace(a), trace(b)) {
                    (Some(ta), Some(tb)) => Command::Compare { cell: id, a: ta, b: tb, b_interventions: b_iv },
                    _ => {
                        self.error(format!("compare “{}”: run both prompt cells first", cell.title));
                        return false;
                    }
                }
            }
            CellKind::RetrievalScan { settings, .. } => Command::Scan { cell: id, settings },
            CellKind::Specialization { settings, .. } => Command::Specialization { cell: id, settings },
            CellKind::Patching { clean, corrupt, settings, .. } => {
                Command::Patch { cell: id, job: PatchJob { clean: Prompt::text(&clean), corrupt: Prompt::text(&corrupt), settings } }
            }
            CellKind::Attribution { prompt, settings, .. } => {
                Command::Attribute { cell: id, job: AttributeJob { prompt: Prompt::text(&prompt), settings } }
            }
        };
        self.jobs.running = Some(id);
        worker.send(cmd);
        true
    }

    /// The routing a prompt cell replays: its source cell's latest trace (kept in memory
    /// since the run, else read back), at every position it recorded.
    fn routing_replay(&self, r: &ReplaySettings) -> Result<RoutingReplay, String> {
        let source = self.doc.notebook.cell(r.cell);
        let Some(Cell { kind: CellKind::Prompt { result: Some(run), .. }, .. }) = source else {
            return Err(match source {
                Some(c) => format!("routing replay: “{}” has no finished run to replay (run it first)", c.title),
                None => format!("routing replay: cell {} is no longer in the notebook", r.cell),
            });
        };
        let read;
        let trace = match self.results.traces.get(&r.cell) {
            Some(t) => t,
            None => {
                read = Trace::read(&self.doc.dir.join(&run.trace)).map_err(|e| format!("routing replay: {e}"))?;
                &read
            }
        };
        RoutingReplay::from_store(&trace.store, &run.trace, r.layers.as_deref(), 0..trace.store.len(), r.weights)
            .map_err(|e| format!("routing replay: {e}"))
    }

    fn add_compare(&mut self, a: u64, b: u64, worker: &Worker) {
        let (ta, tb) = (
            self.doc.notebook.cell(a).map(|c| c.title.clone()).unwrap_or_default(),
            self.doc.notebook.cell(b).map(|c| c.title.clone()).unwrap_or_default(),
        );
        let id = self.doc.notebook.fresh_id();
        self.doc
            .notebook
            .insert_after(Some(b), Cell { id, title: format!("{ta} vs {tb}"), kind: CellKind::Compare { a, b, result: None } });
        self.mark_dirty();
        self.jobs.queue.push_back(id);
        self.next_in_queue(worker);
    }

    /// Loads `model.requested` on the worker.
    fn load_model(&mut self, worker: &Worker) {
        self.model.info = None;
        self.model.error = None;
        self.model.loading = Some(LoadProgress::Layers { done: 0, total: 0 });
        self.model.load_started = Some(Instant::now());
        self.doc.notebook.model = self.model.requested.clone();
        self.mark_dirty();
        worker.send(Command::Load {
            model: self.model.requested.clone(),
            device: self.model.device.clone(),
            dtype: self.model.dtype.clone(),
        });
    }

    // ---- actions from views ----

    pub fn apply(&mut self, action: Action, worker: &Worker, dialogs: &mut dyn FileDialogs) {
        match action {
            Action::LoadModel => match ModelSource::parse(&self.model.requested) {
                // A bare repo id may name a GGUF repo of several quants: list it first; the
                // listing decides what loads (`on_event`).
                Ok(ModelSource::HfRepo { repo, revision }) => {
                    self.model.error = None;
                    self.model.quants = Some(QuantList::Listing { repo: hub::repo_id(&repo, revision.as_deref()) });
                    worker.list_quants(repo, revision);
                }
                source => {
                    // The list stays while one of its quants is chosen.
                    let same_repo = match (&source, &self.model.quants) {
                        (Ok(ModelSource::HfGguf { repo, revision, .. }), Some(QuantList::Listed(l))) => {
                            l.repo == *repo && l.revision == *revision
                        }
                        _ => false,
                    };
                    if !same_repo {
                        self.model.quants = None;
                    }
                    self.load_model(worker);
                }
            },
            Action::RunCell(id) => {
                self.jobs.enqueue(id);
                self.next_in_queue(worker);
            }
            Action::RunAll => {
                let ids: Vec<u64> =
                    self.doc.notebook.cells.iter().filter(|c| !matches!(c.kind, CellKind::Markdown { .. })).map(|c| c.id).collect();
                for id in ids {
                    if !self.jobs.queue.contains(&id) {
                        self.jobs.queue.push_back(id);
                    }
                }
                self.next_in_queue(worker);
            }
            Action::Cancel => {
                self.jobs.queue.clear();
                worker.cancel();
            }
            Action::DeleteCell(id) => {
                if self.doc.delete_cell(id) {
                    self.results.remove(id);
                }
            }
            Action::MoveCell(id, by) => {
                if let Some(i) = self.doc.notebook.index_of(id) {
                    let j = (i as i64 + by as i64).clamp(0, self.doc.notebook.cells.len() as i64 - 1) as usize;
                    let c = self.doc.notebook.cells.remove(i);
                    self.doc.notebook.cells.insert(j, c);
                    self.mark_dirty();
                }
            }
            Action::AddMarkdown(after) => {
                let id = self.doc.notebook.fresh_id();
                self.doc
                    .notebook
                    .insert_after(after, Cell { id, title: "Notes".into(), kind: CellKind::Markdown { text: "Notes".into() } });
                self.cell_ui(id).editing = true;
                self.mark_dirty();
            }
            Action::AddPrompt(after) => {
                let id = self.doc.notebook.fresh_id();
                self.doc.notebook.insert_after(after, prompt_cell(id, &format!("Prompt {id}"), Prompt::text("")));
                self.cell_ui(id).editing = true;
                self.mark_dirty();
            }
            Action::AddScan(after) => {
                let id = self.doc.notebook.fresh_id();
                self.doc.notebook.insert_after(
                    after,
                    Cell {
                        id,
                        title: "Retrieval heads".into(),
                        kind: CellKind::RetrievalScan { settings: Default::default(), result: None },
                    },
                );
                self.mark_dirty();
            }
            Action::AddSpecialization(after) => {
                let id = self.doc.notebook.fresh_id();
                let corpus = dialogs.pick_folder("Corpus: one subdirectory of text files per domain").unwrap_or_default();
                self.doc.notebook.insert_after(
                    after,
                    Cell {
                        id,
                        title: "Expert specialization".into(),
                        kind: CellKind::Specialization { settings: SpecializationSettings { corpus, ..Default::default() }, result: None },
                    },
                );
                self.mark_dirty();
            }
            Action::AddPatching(after) => {
                let id = self.doc.notebook.fresh_id();
                self.doc.notebook.insert_after(after, patching_cell(id));
                self.mark_dirty();
            }
            Action::AddAttribution(after) => {
                let id = self.doc.notebook.fresh_id();
                self.doc.notebook.insert_after(after, attribution_cell(id));
                self.mark_dirty();
            }
            Action::SetMaskTarget(id, t) => self.cell_ui(id).mask_target = Some(t),
            Action::SetMask(id, iv) => {
                let ui = self.cell_ui(id);
                ui.pending.items.retain(|x| x.hook() != iv.hook());
                ui.pending.push(iv);
                ui.mask_target = None;
            }
            Action::RemoveIntervention(id, i) => {
                if let Some(CellKind::Prompt { interventions, .. }) = self.doc.notebook.cell_mut(id).map(|c| &mut c.kind) {
                    if i < interventions.items.len() {
                        interventions.items.remove(i);
                    }
                }
                self.mark_dirty();
            }
            Action::RerunWithMasks(id) => self.rerun_with_masks(id, worker),
            Action::ExportView { cell, view, ext } => {
                let name = format!("{}-{}.{ext}", slug(&self.doc.cell_title(cell)), view.stem());
                if let Some(path) = dialogs.save_file("Export view", &name) {
                    match view_of(&self.doc, &self.results, &self.ui, cell, view).and_then(|v| v.write(&path).map_err(|e| e.to_string())) {
                        Ok(()) => self.info(format!("exported {}", path.display())),
                        Err(e) => self.error(format!("export failed: {e}")),
                    }
                }
            }
            Action::ExportCell(cell) => {
                if let Some(dir) = dialogs.pick_folder("Export every view of this cell into a folder") {
                    match export_cell(&self.doc, &self.results, &self.ui, cell, &dir) {
                        Ok(n) => self.info(format!("exported {n} files to {}", dir.display())),
                        Err(e) => self.error(format!("export failed: {e}")),
                    }
                }
            }
            Action::Save => {
                if self.save() {
                    self.info(format!("saved {}", notebook::notebook_file(&self.doc.dir).display()));
                }
            }
            Action::OpenNotebook => {
                if let Some(dir) = dialogs.pick_folder("Open a notebook directory") {
                    if self.doc.dirty_since.is_some() {
                        self.save();
                    }
                    // The running job belongs to this notebook: stop it; the new notebook
                    // ignores what it still reports.
                    let stale = self.jobs.running.or(self.jobs.stale);
                    if stale.is_some() {
                        worker.cancel();
                    }
                    let model = self.model.requested.clone();
                    let fresh = AppState::open(dir, None);
                    let reload = fresh.model.requested != model || self.model.info.is_none();
                    let dark = self.ui.dark;
                    *self = fresh;
                    self.ui.dark = dark;
                    self.jobs.stale = stale;
                    if reload {
                        self.apply(Action::LoadModel, worker, dialogs);
                    }
                }
            }
            Action::SaveNotebookAs => {
                if let Some(dir) = dialogs.pick_folder("Save the notebook into a directory") {
                    self.save_as(&dir);
                }
            }
            Action::Edited => self.mark_dirty(),
        }
    }

    /// A new prompt cell with the original's prompt plus the pending masks; when it has run, a
    /// compare cell is added.
    fn rerun_with_masks(&mut self, id: u64, worker: &Worker) {
        let pending = std::mem::take(&mut self.cell_ui(id).pending);
        let Some(Cell { title, kind: CellKind::Prompt { prompt, settings, interventions, capture, replay, .. }, .. }) =
            self.doc.notebook.cell(id).cloned()
        else {
            return;
        };
        if pending.is_empty() {
            return;
        }
        let mut all = interventions;
        all.items.extend(pending.items.iter().cloned());
        let labels: Vec<String> = pending.items.iter().map(|i| i.label()).collect();
        let new_id = self.doc.notebook.fresh_id();
        let cell = Cell {
            id: new_id,
            title: format!("{title} + {}", labels.join(", ")),
            kind: CellKind::Prompt { prompt, settings, interventions: all, capture, result: None, replay },
        };
        self.doc.notebook.insert_after(Some(id), cell);
        self.mark_dirty();
        self.jobs.compare_when_done.push((new_id, id));
        self.jobs.queue.push_back(new_id);
        self.next_in_queue(worker);
    }
}

/// The interventions a click on a view can make.
pub fn expert_mask(layer: usize, expert: usize, method: ExpertMethod) -> Intervention {
    Intervention::Expert { layer, expert, method }
}

pub fn head_mask(layer: usize, head: usize, method: HeadMethod) -> Intervention {
    Intervention::Head { layer, head, method }
}
