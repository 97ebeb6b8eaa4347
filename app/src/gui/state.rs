//! The workbench's state: the notebook, the model, what each cell's run produced, and the
//! actions views request. Nothing here draws.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use routelab_model::interventions::{ExpertMethod, HeadMethod, Intervention, Interventions};
use routelab_model::session::{ModelInfo, Prompt};
use routelab_model::source::LoadProgress;
use routelab_probes::analysis::retrieval::Progress;
use routelab_probes::export::views::{self, View};
use routelab_probes::jobs::run::RunJob;
use routelab_probes::trace::Trace;

use super::dialogs::FileDialogs;
use super::run_view::RunView;
use super::worker::{Command, Event, Worker};
use crate::notebook::{self, prompt_cell, Cell, CellKind, Notebook, SpecializationSettings};

/// Autosave this long after the last change.
const AUTOSAVE_DELAY: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, PartialEq)]
pub enum Severity {
    Info,
    Error,
}

/// A mask being chosen from a view (expert or head cell clicked).
#[derive(Clone, Debug, PartialEq)]
pub enum MaskTarget {
    Expert { layer: usize, expert: usize },
    Head { layer: usize, head: usize },
}

/// Per-cell UI state that is not part of the document.
#[derive(Clone, Debug, Default)]
pub struct CellUi {
    /// Layer whose top-1 expert colours the tokens.
    pub layer: usize,
    /// Masks chosen by pointing, to apply on the next re-run.
    pub pending: Interventions,
    pub mask_target: Option<MaskTarget>,
    pub editing: bool,
    /// Position the pointer is on in the token strip.
    pub hovered: Option<usize>,
    /// Pinned position (clicked token).
    pub pinned: Option<usize>,
    /// Where the expert-load and head grids were drawn last frame.
    pub load_grid: Option<super::views::grid::GridGeometry>,
    pub head_grid: Option<super::views::grid::GridGeometry>,
}

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportKind {
    ExpertLoad,
    Routing,
    Heads,
    RouterEntropy,
    Coactivation,
    HeadScores,
    Compare,
}

impl ExportKind {
    pub fn stem(self) -> &'static str {
        match self {
            ExportKind::ExpertLoad => "expert-load",
            ExportKind::Routing => "routing",
            ExportKind::Heads => "heads",
            ExportKind::RouterEntropy => "router-entropy",
            ExportKind::Coactivation => "coactivation",
            ExportKind::HeadScores => "retrieval-heads",
            ExportKind::Compare => "routing-diff",
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct ModelStatus {
    pub requested: String,
    pub device: String,
    pub loading: Option<LoadProgress>,
    pub load_started: Option<Instant>,
    pub info: Option<ModelInfo>,
    pub has_chat_template: bool,
    pub error: Option<String>,
}

pub struct AppState {
    pub notebook: Notebook,
    pub dir: PathBuf,
    /// Why the notebook must not be written (corrupt or newer); saves are refused.
    pub read_only: Option<String>,
    pub dirty_since: Option<Instant>,
    pub model: ModelStatus,
    /// Each prompt cell's run: live while streaming, or loaded from its trace.
    pub runs: HashMap<u64, RunView>,
    /// Traces of finished runs (for export and compare).
    pub traces: HashMap<u64, Trace>,
    pub cell_ui: HashMap<u64, CellUi>,
    /// The cell whose job the worker is doing.
    pub running: Option<u64>,
    pub progress: HashMap<u64, Progress>,
    pub queue: VecDeque<u64>,
    pub messages: Vec<(Severity, String)>,
    pub dark: bool,
    /// Set when a re-run with masks should produce a compare cell: (masked cell, original cell).
    pub compare_when_done: Vec<(u64, u64)>,
    /// Run every cell as soon as the model is loaded (`routelab gui --run-all`).
    pub run_all_when_loaded: bool,
    /// Show timings (off for reproducible screenshots and snapshot tests).
    pub show_timings: bool,
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

impl AppState {
    /// Opens the notebook in `dir` (creating the example notebook if there is none).
    pub fn open(dir: PathBuf, model_override: Option<String>) -> AppState {
        let mut messages = vec![];
        let mut read_only = None;
        let notebook = if notebook::exists(&dir) {
            match notebook::load(&dir) {
                Ok(nb) => nb,
                Err(e) => {
                    messages.push((
                        Severity::Error,
                        format!(
                            "{e}. The notebook is open read-only and will not be overwritten; use “Save as” to keep changes elsewhere."
                        ),
                    ));
                    read_only = Some(e.to_string());
                    Notebook::new(model_override.as_deref().unwrap_or(super::DEFAULT_MODEL))
                }
            }
        } else {
            example_notebook(model_override.as_deref().unwrap_or(super::DEFAULT_MODEL))
        };
        let mut s = AppState {
            model: ModelStatus {
                requested: model_override.unwrap_or_else(|| notebook.model.clone()),
                device: "cpu".into(),
                ..Default::default()
            },
            notebook,
            dir,
            read_only,
            dirty_since: None,
            runs: HashMap::new(),
            traces: HashMap::new(),
            cell_ui: HashMap::new(),
            running: None,
            progress: HashMap::new(),
            queue: VecDeque::new(),
            messages,
            // ROUTELAB_THEME=light|dark overrides the default (dark).
            dark: std::env::var("ROUTELAB_THEME").map(|t| t != "light").unwrap_or(true),
            compare_when_done: vec![],
            run_all_when_loaded: false,
            show_timings: true,
        };
        s.load_traces();
        s
    }

    /// Restores every finished prompt cell's results from its trace file.
    fn load_traces(&mut self) {
        for c in &self.notebook.cells {
            if let CellKind::Prompt { result: Some(r), .. } = &c.kind {
                match Trace::read(&self.dir.join(&r.trace)) {
                    Ok(t) => {
                        self.runs.insert(c.id, RunView::from_trace(&t));
                        self.traces.insert(c.id, t);
                    }
                    Err(e) => {
                        self.messages.push((Severity::Error, format!("cell “{}”: its saved results could not be read: {e}", c.title)))
                    }
                }
            }
        }
    }

    pub fn ui(&mut self, id: u64) -> &mut CellUi {
        self.cell_ui.entry(id).or_default()
    }

    pub fn mark_dirty(&mut self) {
        if self.dirty_since.is_none() {
            self.dirty_since = Some(Instant::now());
        }
    }

    pub fn error(&mut self, m: impl Into<String>) {
        self.messages.push((Severity::Error, m.into()));
    }

    pub fn info(&mut self, m: impl Into<String>) {
        self.messages.push((Severity::Info, m.into()));
    }

    /// Saves now (refused for read-only notebooks).
    pub fn save(&mut self) -> bool {
        if let Some(why) = &self.read_only {
            let why = why.clone();
            self.error(format!("not saved: the notebook is read-only ({why})"));
            self.dirty_since = None;
            return false;
        }
        self.notebook.model = self.model.requested.clone();
        match notebook::save(&self.dir, &self.notebook) {
            Ok(()) => {
                self.dirty_since = None;
                true
            }
            Err(e) => {
                self.error(format!("saving failed, the previous notebook.json is intact: {e}"));
                false
            }
        }
    }

    /// Saves if changes have rested long enough.
    pub fn autosave(&mut self) {
        if self.read_only.is_none() && self.dirty_since.is_some_and(|t| t.elapsed() >= AUTOSAVE_DELAY) {
            self.save();
        }
    }

    pub fn busy(&self) -> bool {
        self.running.is_some() || self.model.loading.is_some()
    }

    // ---- worker events ----

    pub fn on_event(&mut self, e: Event, worker: &Worker) {
        match e {
            Event::LoadProgress(p) => self.model.loading = Some(p),
            Event::Loaded { info, has_chat_template } => {
                self.model.loading = None;
                self.model.error = None;
                self.info(format!("loaded {}: {}", info.name, info.summary));
                self.model.info = Some(info);
                self.model.has_chat_template = has_chat_template;
                if std::mem::take(&mut self.run_all_when_loaded) {
                    let ids: Vec<u64> =
                        self.notebook.cells.iter().filter(|c| !matches!(c.kind, CellKind::Markdown { .. })).map(|c| c.id).collect();
                    self.queue.extend(ids);
                }
                self.next_in_queue(worker);
            }
            Event::LoadFailed(m) => {
                self.model.loading = None;
                self.model.info = None;
                self.model.error = Some(m.clone());
                self.queue.clear();
                self.error(format!("loading {} failed: {m}", self.model.requested));
            }
            Event::Prefilled { cell, rows, layers, heads, experts } => {
                let mut v = RunView::new(layers, heads, experts);
                v.prompt_len = rows.len();
                if let Err(e) = v.extend(&rows) {
                    self.error(format!("internal: the run's rows do not fit its view: {e}"));
                }
                let ui = self.ui(cell);
                ui.layer = ui.layer.min(layers.saturating_sub(1));
                if let Some(l) = v.experts.iter().position(|&e| e > 0) {
                    if v.experts[ui.layer] == 0 {
                        ui.layer = l;
                    }
                }
                self.runs.insert(cell, v);
            }
            Event::Token { cell, rows, text } => {
                if let Some(v) = self.runs.get_mut(&cell) {
                    let pushed = v.extend(&rows);
                    v.generated_text.push_str(&text);
                    if let Err(e) = pushed {
                        self.error(format!("internal: the run's rows do not fit its view: {e}"));
                    }
                }
            }
            Event::RunDone { cell, summary, trace, interventions } => {
                if let Some(v) = self.runs.get_mut(&cell) {
                    v.done = true;
                    v.generated_text = summary.generated_text.clone();
                }
                self.traces.insert(cell, *trace);
                if let Some(CellKind::Prompt { result, interventions: iv, .. }) = self.notebook.cell_mut(cell).map(|c| &mut c.kind) {
                    *result = Some(summary);
                    // Head means measured on the reference run are kept with the cell.
                    *iv = interventions;
                }
                self.mark_dirty();
                self.finish_job(cell, worker);
                if let Some(i) = self.compare_when_done.iter().position(|(m, _)| *m == cell) {
                    let (masked, original) = self.compare_when_done.remove(i);
                    self.add_compare(original, masked, worker);
                }
            }
            Event::Progress { cell, progress } => {
                self.progress.insert(cell, progress);
            }
            Event::CompareDone { cell, summary } => {
                if let Some(CellKind::Compare { result, .. }) = self.notebook.cell_mut(cell).map(|c| &mut c.kind) {
                    *result = Some(summary);
                }
                self.mark_dirty();
                self.finish_job(cell, worker);
            }
            Event::ScanDone { cell, summary } => {
                if let Some(CellKind::RetrievalScan { result, .. }) = self.notebook.cell_mut(cell).map(|c| &mut c.kind) {
                    *result = Some(summary);
                }
                self.mark_dirty();
                self.finish_job(cell, worker);
            }
            Event::SpecializationDone { cell, summary } => {
                if let Some(CellKind::Specialization { result, .. }) = self.notebook.cell_mut(cell).map(|c| &mut c.kind) {
                    *result = Some(summary);
                }
                self.mark_dirty();
                self.finish_job(cell, worker);
            }
            Event::Failed { cell, message } => {
                let title = cell.and_then(|c| self.notebook.cell(c)).map(|c| c.title.clone()).unwrap_or_default();
                self.error(if title.is_empty() { message } else { format!("cell “{title}”: {message}") });
                match cell {
                    Some(c) => self.finish_job(c, worker),
                    None => self.running = None,
                }
            }
        }
    }

    fn finish_job(&mut self, cell: u64, worker: &Worker) {
        if self.running == Some(cell) {
            self.running = None;
        }
        self.progress.remove(&cell);
        self.next_in_queue(worker);
    }

    fn next_in_queue(&mut self, worker: &Worker) {
        if self.running.is_some() || self.model.loading.is_some() {
            return;
        }
        while let Some(id) = self.queue.pop_front() {
            if self.start_cell(id, worker) {
                return;
            }
        }
    }

    /// Sends a cell's job to the worker; false if the cell has nothing to run.
    fn start_cell(&mut self, id: u64, worker: &Worker) -> bool {
        let Some(cell) = self.notebook.cell(id).cloned() else { return false };
        let cmd = match cell.kind {
            CellKind::Markdown { .. } => return false,
            CellKind::Prompt { prompt, settings, interventions, capture, .. } => {
                let rel = notebook::trace_relpath(id);
                self.runs.remove(&id);
                self.traces.remove(&id);
                if let Some(CellKind::Prompt { result, .. }) = self.notebook.cell_mut(id).map(|c| &mut c.kind) {
                    *result = None;
                }
                // Logits make compare cells possible.
                let job = RunJob { prompt, settings, interventions, capture: capture.with("logits") };
                Command::Run { cell: id, job, trace_path: self.dir.join(&rel), trace_rel: rel }
            }
            CellKind::Compare { a, b, .. } => {
                let trace = |c: u64| -> Option<PathBuf> {
                    match &self.notebook.cell(c)?.kind {
                        CellKind::Prompt { result: Some(r), .. } => Some(self.dir.join(&r.trace)),
                        _ => None,
                    }
                };
                let b_iv = match self.notebook.cell(b).map(|c| &c.kind) {
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
        };
        self.running = Some(id);
        worker.send(cmd);
        true
    }

    fn add_compare(&mut self, a: u64, b: u64, worker: &Worker) {
        let (ta, tb) = (
            self.notebook.cell(a).map(|c| c.title.clone()).unwrap_or_default(),
            self.notebook.cell(b).map(|c| c.title.clone()).unwrap_or_default(),
        );
        let id = self.notebook.fresh_id();
        self.notebook.insert_after(Some(b), Cell { id, title: format!("{ta} vs {tb}"), kind: CellKind::Compare { a, b, result: None } });
        self.mark_dirty();
        self.queue.push_back(id);
        self.next_in_queue(worker);
    }

    // ---- actions from views ----

    pub fn apply(&mut self, action: Action, worker: &Worker, dialogs: &mut dyn FileDialogs) {
        match action {
            Action::LoadModel => {
                self.model.info = None;
                self.model.error = None;
                self.model.loading = Some(LoadProgress::Layers { done: 0, total: 0 });
                self.model.load_started = Some(Instant::now());
                self.notebook.model = self.model.requested.clone();
                self.mark_dirty();
                worker.send(Command::Load { model: self.model.requested.clone(), device: self.model.device.clone() });
            }
            Action::RunCell(id) => {
                if !self.queue.contains(&id) && self.running != Some(id) {
                    self.queue.push_back(id);
                }
                self.next_in_queue(worker);
            }
            Action::RunAll => {
                let ids: Vec<u64> =
                    self.notebook.cells.iter().filter(|c| !matches!(c.kind, CellKind::Markdown { .. })).map(|c| c.id).collect();
                for id in ids {
                    if !self.queue.contains(&id) {
                        self.queue.push_back(id);
                    }
                }
                self.next_in_queue(worker);
            }
            Action::Cancel => {
                self.queue.clear();
                worker.cancel();
            }
            Action::DeleteCell(id) => {
                if let Some(i) = self.notebook.index_of(id) {
                    self.notebook.cells.remove(i);
                    self.runs.remove(&id);
                    self.traces.remove(&id);
                    self.mark_dirty();
                }
            }
            Action::MoveCell(id, by) => {
                if let Some(i) = self.notebook.index_of(id) {
                    let j = (i as i64 + by as i64).clamp(0, self.notebook.cells.len() as i64 - 1) as usize;
                    let c = self.notebook.cells.remove(i);
                    self.notebook.cells.insert(j, c);
                    self.mark_dirty();
                }
            }
            Action::AddMarkdown(after) => {
                let id = self.notebook.fresh_id();
                self.notebook.insert_after(after, Cell { id, title: "Notes".into(), kind: CellKind::Markdown { text: "Notes".into() } });
                self.ui(id).editing = true;
                self.mark_dirty();
            }
            Action::AddPrompt(after) => {
                let id = self.notebook.fresh_id();
                self.notebook.insert_after(after, prompt_cell(id, &format!("Prompt {id}"), Prompt::text("")));
                self.ui(id).editing = true;
                self.mark_dirty();
            }
            Action::AddScan(after) => {
                let id = self.notebook.fresh_id();
                self.notebook.insert_after(
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
                let id = self.notebook.fresh_id();
                let corpus = dialogs.pick_folder("Corpus: one subdirectory of text files per domain").unwrap_or_default();
                self.notebook.insert_after(
                    after,
                    Cell {
                        id,
                        title: "Expert specialization".into(),
                        kind: CellKind::Specialization { settings: SpecializationSettings { corpus, ..Default::default() }, result: None },
                    },
                );
                self.mark_dirty();
            }
            Action::SetMaskTarget(id, t) => self.ui(id).mask_target = Some(t),
            Action::SetMask(id, iv) => {
                let ui = self.ui(id);
                ui.pending.items.retain(|x| x.hook() != iv.hook());
                ui.pending.push(iv);
                ui.mask_target = None;
            }
            Action::RemoveIntervention(id, i) => {
                if let Some(CellKind::Prompt { interventions, .. }) = self.notebook.cell_mut(id).map(|c| &mut c.kind) {
                    if i < interventions.items.len() {
                        interventions.items.remove(i);
                    }
                }
                self.mark_dirty();
            }
            Action::RerunWithMasks(id) => self.rerun_with_masks(id, worker),
            Action::ExportView { cell, view, ext } => {
                let name = format!("{}-{}.{ext}", slug(&self.cell_title(cell)), view.stem());
                if let Some(path) = dialogs.save_file("Export view", &name) {
                    match self.view_of(cell, view).and_then(|v| v.write(&path).map_err(|e| e.to_string())) {
                        Ok(()) => self.info(format!("exported {}", path.display())),
                        Err(e) => self.error(format!("export failed: {e}")),
                    }
                }
            }
            Action::ExportCell(cell) => {
                if let Some(dir) = dialogs.pick_folder("Export every view of this cell into a folder") {
                    match self.export_cell(cell, &dir) {
                        Ok(n) => self.info(format!("exported {n} files to {}", dir.display())),
                        Err(e) => self.error(format!("export failed: {e}")),
                    }
                }
            }
            Action::Save => {
                if self.save() {
                    self.info(format!("saved {}", notebook::notebook_file(&self.dir).display()));
                }
            }
            Action::OpenNotebook => {
                if let Some(dir) = dialogs.pick_folder("Open a notebook directory") {
                    if self.dirty_since.is_some() {
                        self.save();
                    }
                    let model = self.model.requested.clone();
                    let fresh = AppState::open(dir, None);
                    let reload = fresh.model.requested != model || self.model.info.is_none();
                    let dark = self.dark;
                    *self = fresh;
                    self.dark = dark;
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

    /// Copies the notebook (and its traces) to a new directory and continues there.
    pub fn save_as(&mut self, dir: &Path) {
        let old = self.dir.clone();
        self.dir = dir.to_path_buf();
        self.read_only = None;
        let _ = std::fs::create_dir_all(dir.join("traces"));
        for c in &self.notebook.cells {
            if let CellKind::Prompt { result: Some(r), .. } = &c.kind {
                let _ = std::fs::copy(old.join(&r.trace), dir.join(&r.trace));
            }
        }
        if self.save() {
            self.info(format!("saved as {}", dir.display()));
        }
    }

    fn cell_title(&self, id: u64) -> String {
        self.notebook.cell(id).map(|c| c.title.clone()).unwrap_or_else(|| format!("cell-{id}"))
    }

    /// A new prompt cell with the original's prompt plus the pending masks; when it has run, a
    /// compare cell is added.
    fn rerun_with_masks(&mut self, id: u64, worker: &Worker) {
        let pending = std::mem::take(&mut self.ui(id).pending);
        let Some(Cell { title, kind: CellKind::Prompt { prompt, settings, interventions, capture, .. }, .. }) =
            self.notebook.cell(id).cloned()
        else {
            return;
        };
        if pending.is_empty() {
            return;
        }
        let mut all = interventions;
        all.items.extend(pending.items.iter().cloned());
        let labels: Vec<String> = pending.items.iter().map(|i| i.label()).collect();
        let new_id = self.notebook.fresh_id();
        let cell = Cell {
            id: new_id,
            title: format!("{title} + {}", labels.join(", ")),
            kind: CellKind::Prompt { prompt, settings, interventions: all, capture, result: None },
        };
        self.notebook.insert_after(Some(id), cell);
        self.mark_dirty();
        self.compare_when_done.push((new_id, id));
        self.queue.push_back(new_id);
        self.next_in_queue(worker);
    }

    /// The exportable view of a cell.
    pub fn view_of(&self, cell: u64, kind: ExportKind) -> Result<View, String> {
        let c = self.notebook.cell(cell).ok_or("no such cell")?;
        match (&c.kind, kind) {
            (CellKind::RetrievalScan { result: Some(r), .. }, _) => Ok(views::head_scores(&r.scores, &r.model)),
            (CellKind::Compare { a, b, .. }, _) => {
                let (ta, tb) = (self.traces.get(a).ok_or("run cell A first")?, self.traces.get(b).ok_or("run cell B first")?);
                let d = routelab_probes::analysis::diff::diff(ta, tb).map_err(|e| e.to_string())?;
                views::diff_routing(&d, &ta.pieces).map_err(|e| e.to_string())
            }
            (CellKind::Prompt { .. }, k) => {
                let t = self.traces.get(&cell).ok_or("run the cell first")?;
                let layer = self.cell_ui.get(&cell).map(|u| u.layer);
                match k {
                    ExportKind::ExpertLoad => views::expert_load(t),
                    ExportKind::Routing => views::routing_map(t),
                    ExportKind::Heads => views::heads_view(t),
                    ExportKind::RouterEntropy => views::router_entropy(t),
                    ExportKind::Coactivation => views::coactivation(t, layer.filter(|&l| t.router(l).is_some())),
                    _ => return Err("not a view of a prompt cell".into()),
                }
                .map_err(|e| e.to_string())
            }
            _ => Err("this cell has no results to export yet".into()),
        }
    }

    /// Writes every view of a cell (CSV, PNG, SVG) into `dir`; returns the number of files.
    pub fn export_cell(&self, cell: u64, dir: &Path) -> Result<usize, String> {
        let c = self.notebook.cell(cell).ok_or("no such cell")?;
        let kinds: &[ExportKind] = match &c.kind {
            CellKind::Prompt { .. } => {
                &[ExportKind::ExpertLoad, ExportKind::Routing, ExportKind::Heads, ExportKind::RouterEntropy, ExportKind::Coactivation]
            }
            CellKind::Compare { .. } => &[ExportKind::Compare],
            CellKind::RetrievalScan { .. } => &[ExportKind::HeadScores],
            _ => &[],
        };
        let stem = slug(&c.title);
        let mut n = 0;
        for &k in kinds {
            // Dense models have no routing views; skip what does not apply.
            if let Ok(v) = self.view_of(cell, k) {
                v.write_all(dir, &format!("{stem}-{}", k.stem())).map_err(|e| e.to_string())?;
                n += 3;
            }
        }
        if let Some(t) = self.traces.get(&cell) {
            t.write(&dir.join(format!("{stem}.safetensors"))).map_err(|e| e.to_string())?;
            n += 1;
        }
        if n == 0 {
            return Err("this cell has no results to export yet".into());
        }
        Ok(n)
    }
}

/// A file-name-safe version of a title.
pub fn slug(s: &str) -> String {
    let s: String = s.chars().map(|c| if c.is_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let s = s.split('-').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-");
    if s.is_empty() {
        "cell".into()
    } else {
        s.chars().take(60).collect()
    }
}

/// The interventions a click on a view can make.
pub fn expert_mask(layer: usize, expert: usize, method: ExpertMethod) -> Intervention {
    Intervention::Expert { layer, expert, method }
}

pub fn head_mask(layer: usize, head: usize, method: HeadMethod) -> Intervention {
    Intervention::Head { layer, head, method }
}
