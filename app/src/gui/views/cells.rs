//! The notebook: its cells in order, each in a frame with its header (title, kind, run,
//! move, delete, export).

use egui::{RichText, Ui};

use super::attribution::AttributionCell;
use super::compare::CompareCell;
use super::markdown::MarkdownCell;
use super::patching::PatchingCell;
use super::prompt::PromptCell;
use super::scan::{self, ScanCell, SpecializationCell};
use crate::gui::results::Results;
use crate::gui::state::{Action, AppState};
use crate::notebook::CellKind;

/// What a cell's view may read besides its own cell: the state of its job, of the model, and
/// the results of other cells (a compare cell shows two runs).
pub struct CellContext<'a> {
    pub id: u64,
    pub running: bool,
    /// Some job or a load is running.
    pub busy: bool,
    pub model_ready: bool,
    pub has_chat: bool,
    /// Show timings (off for reproducible snapshots).
    pub timings: bool,
    pub results: &'a Results,
    /// Every cell's title, by id.
    pub titles: &'a std::collections::HashMap<u64, String>,
    /// The loaded model's tokenizer (cells count their prompts' tokens).
    pub tokenizer: Option<&'a routelab_model::tokenizer::Tokenizer>,
}

pub fn notebook(ui: &mut Ui, state: &mut AppState, actions: &mut Vec<Action>) {
    let ids: Vec<u64> = state.doc.notebook.cells.iter().map(|c| c.id).collect();
    egui::ScrollArea::vertical().id_salt("notebook").auto_shrink([false, false]).show(ui, |ui| {
        ui.set_width(ui.available_width());
        for id in ids {
            cell(ui, state, id, actions);
            ui.add_space(6.0);
        }
        ui.horizontal(|ui| add_buttons(ui, None, actions));
        ui.add_space(40.0);
    });
}

pub fn add_buttons(ui: &mut Ui, after: Option<u64>, actions: &mut Vec<Action>) {
    ui.menu_button("+ Add cell", |ui| {
        for (label, a) in [
            ("Prompt", Action::AddPrompt(after)),
            ("Markdown", Action::AddMarkdown(after)),
            ("Retrieval-head scan", Action::AddScan(after)),
            ("Expert specialization over a corpus", Action::AddSpecialization(after)),
            ("Activation patching", Action::AddPatching(after)),
            ("Logit attribution and lens", Action::AddAttribution(after)),
        ] {
            if ui.button(label).clicked() {
                actions.push(a);
                ui.close();
            }
        }
    });
}

fn cell(ui: &mut Ui, state: &mut AppState, id: u64, actions: &mut Vec<Action>) {
    let running = state.jobs.running == Some(id);
    let queued = state.jobs.queue.contains(&id);
    let busy = state.busy();
    let model_ready = state.model.info.is_some();
    let has_chat = state.model.has_chat_template;
    let timings = state.ui.show_timings;
    let titles: std::collections::HashMap<u64, String> = state.doc.notebook.cells.iter().map(|c| (c.id, c.title.clone())).collect();
    let frame = egui::Frame::group(ui.style()).inner_margin(8.0).fill(ui.visuals().faint_bg_color);
    frame.show(ui, |ui| {
        let Some(i) = state.doc.notebook.index_of(id) else { return };
        // Header.
        ui.horizontal(|ui| {
            let kind = state.doc.notebook.cells[i].kind_name();
            let runnable = !matches!(state.doc.notebook.cells[i].kind, CellKind::Markdown { .. });
            if runnable {
                let label = if running {
                    "…"
                } else if queued {
                    "⋯"
                } else {
                    "▶"
                };
                if ui.add_enabled(model_ready && !running && !queued, egui::Button::new(label)).on_hover_text("Run (Shift+Enter)").clicked()
                {
                    actions.push(Action::RunCell(id));
                }
            }
            let title = &mut state.doc.notebook.cells[i].title;
            let r = ui.add(egui::TextEdit::singleline(title).desired_width(260.0).font(egui::TextStyle::Heading));
            r.widget_info(|| egui::WidgetInfo::labeled(egui::Role::TextInput, true, format!("title of cell {id}")));
            if r.changed() {
                actions.push(Action::Edited);
            }
            ui.label(RichText::new(kind).weak().small());
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if ui.small_button("✕").on_hover_text("Delete cell").clicked() {
                    actions.push(Action::DeleteCell(id));
                }
                if ui.small_button("↓").on_hover_text("Move down").clicked() {
                    actions.push(Action::MoveCell(id, 1));
                }
                if ui.small_button("↑").on_hover_text("Move up").clicked() {
                    actions.push(Action::MoveCell(id, -1));
                }
                if state.doc.notebook.cells[i].has_result()
                    && !running
                    && ui.small_button("export cell").on_hover_text("Write every view of this cell (PNG, SVG, CSV) into a folder").clicked()
                {
                    actions.push(Action::ExportCell(id));
                }
                add_buttons(ui, Some(id), actions);
            });
        });
        if running {
            let kind = &state.doc.notebook.cells[i].kind;
            if let Some(p) = state.jobs.progress.get(&id) {
                scan::progress_bar(ui, Some(p), actions);
            } else if !matches!(kind, CellKind::Prompt { .. } | CellKind::Attribution { .. }) {
                scan::progress_bar(ui, None, actions);
            } else {
                // One run with no steps to count.
                let doing = if matches!(kind, CellKind::Prompt { .. }) { "generating…" } else { "attributing…" };
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label(doing);
                    if ui.button("Cancel").clicked() {
                        actions.push(Action::Cancel);
                    }
                });
            }
        }
        let tokenizer = state.model.tokenizer.as_deref();
        let ctx = CellContext { id, running, busy, model_ready, has_chat, timings, results: &state.results, titles: &titles, tokenizer };
        let cell_ui = state.ui.cells.entry(id).or_default();
        match &mut state.doc.notebook.cells[i].kind {
            CellKind::Markdown { text } => MarkdownCell { text }.ui(ui, &ctx, cell_ui, actions),
            CellKind::Prompt { prompt, settings, interventions, result, replay, .. } => {
                PromptCell { prompt, settings, interventions, result: result.as_ref(), replay }.ui(ui, &ctx, cell_ui, actions)
            }
            CellKind::Compare { a, b, result } => CompareCell { a: *a, b: *b, result: result.as_ref() }.ui(ui, &ctx, actions),
            CellKind::RetrievalScan { settings, result } => ScanCell { settings, result: result.as_ref() }.ui(ui, &ctx, actions),
            CellKind::Specialization { settings, result } => SpecializationCell { settings, result: result.as_ref() }.ui(ui, &ctx, actions),
            CellKind::Patching { clean, corrupt, settings, result } => {
                PatchingCell { clean, corrupt, settings, result: result.as_ref() }.ui(ui, &ctx, cell_ui, actions)
            }
            CellKind::Attribution { prompt, settings, result } => {
                AttributionCell { prompt, settings, result: result.as_ref() }.ui(ui, &ctx, actions)
            }
        }
    });
}
