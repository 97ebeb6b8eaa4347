//! The notebook: its cells in order, each in a frame with its header (title, kind, run,
//! move, delete, export).

use egui::{RichText, Ui};

use super::{compare, markdown, prompt, scan};
use crate::gui::state::{Action, AppState};
use crate::notebook::CellKind;

pub fn notebook(ui: &mut Ui, state: &mut AppState, actions: &mut Vec<Action>) {
    let ids: Vec<u64> = state.notebook.cells.iter().map(|c| c.id).collect();
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
        ] {
            if ui.button(label).clicked() {
                actions.push(a);
                ui.close();
            }
        }
    });
}

fn cell(ui: &mut Ui, state: &mut AppState, id: u64, actions: &mut Vec<Action>) {
    let running = state.running == Some(id);
    let queued = state.queue.contains(&id);
    let busy = state.busy();
    let model_ready = state.model.info.is_some();
    let has_chat = state.model.has_chat_template;
    let timings = state.show_timings;
    let titles: std::collections::HashMap<u64, String> = state.notebook.cells.iter().map(|c| (c.id, c.title.clone())).collect();
    let frame = egui::Frame::group(ui.style()).inner_margin(8.0).fill(ui.visuals().faint_bg_color);
    frame.show(ui, |ui| {
        let Some(i) = state.notebook.index_of(id) else { return };
        // Header.
        ui.horizontal(|ui| {
            let kind = state.notebook.cells[i].kind_name();
            let runnable = !matches!(state.notebook.cells[i].kind, CellKind::Markdown { .. });
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
            let title = &mut state.notebook.cells[i].title;
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
                if state.notebook.cells[i].has_result()
                    && ui.small_button("export cell").on_hover_text("Write every view of this cell (PNG, SVG, CSV) into a folder").clicked()
                {
                    actions.push(Action::ExportCell(id));
                }
                add_buttons(ui, Some(id), actions);
            });
        });
        if running {
            if let Some(p) = state.progress.get(&id) {
                scan::progress_bar(ui, Some(p), actions);
            } else if !matches!(state.notebook.cells[i].kind, CellKind::Prompt { .. }) {
                scan::progress_bar(ui, None, actions);
            } else {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("generating…");
                    if ui.button("Cancel").clicked() {
                        actions.push(Action::Cancel);
                    }
                });
            }
        }
        let editing = state.cell_ui.get(&id).is_some_and(|u| u.editing);
        let AppState { notebook, runs, cell_ui, progress: _, .. } = state;
        let c = &mut notebook.cells[i];
        match &mut c.kind {
            CellKind::Markdown { text } => {
                if editing {
                    let r = ui.add(egui::TextEdit::multiline(text).desired_width(f32::INFINITY).desired_rows(4));
                    r.widget_info(|| egui::WidgetInfo::labeled(egui::Role::MultilineTextInput, true, format!("markdown of cell {id}")));
                    if r.changed() {
                        actions.push(Action::Edited);
                    }
                    if ui.button("Done").clicked() {
                        cell_ui.entry(id).or_default().editing = false;
                    }
                } else {
                    let r = ui.scope(|ui| markdown::render(ui, text)).response.interact(egui::Sense::click());
                    if r.double_clicked() {
                        cell_ui.entry(id).or_default().editing = true;
                    }
                }
            }
            CellKind::Prompt { prompt: p, settings, interventions, result, .. } => {
                ui.add_enabled_ui(!running, |ui| prompt::editor(ui, id, p, settings, has_chat, actions));
                prompt::interventions(ui, id, interventions, actions);
                if let Some(run) = runs.get(&id) {
                    let ui_state = cell_ui.entry(id).or_default();
                    prompt::results(ui, id, run, result.as_ref(), timings, ui_state, actions);
                } else if !model_ready && !busy {
                    ui.label(RichText::new("Load a model to run this cell.").weak());
                }
            }
            CellKind::Compare { a, b, result } => {
                let name = |x: u64| {
                    format!(
                        "{}: {}",
                        if x == *a { "A" } else { "B" },
                        titles.get(&x).cloned().unwrap_or_else(|| format!("cell {x} (deleted)"))
                    )
                };
                let (ta, tb) = (name(*a), name(*b));
                let (ra, rb) = (runs.get(a), runs.get(b));
                compare::compare(ui, id, ra.map(|r| (ta.as_str(), r)), rb.map(|r| (tb.as_str(), r)), result.as_ref(), actions);
            }
            CellKind::RetrievalScan { settings, result } => {
                ui.add_enabled_ui(!running, |ui| scan::scan_settings(ui, settings, actions));
                if let Some(r) = result {
                    scan::scan_result(ui, id, r, actions);
                }
            }
            CellKind::Specialization { settings, result } => {
                ui.add_enabled_ui(!running, |ui| scan::specialization_settings(ui, settings, actions));
                if let Some(r) = result {
                    scan::specialization_result(ui, r);
                }
            }
        }
    });
}
