//! The eframe application: panels around the notebook, event polling, actions, autosave.

use std::path::PathBuf;

use egui::{RichText, Ui};

use super::dialogs::FileDialogs;
use super::state::{Action, AppState, Severity};
use super::views::{cells, model_panel};
use super::worker::Worker;

pub struct WorkbenchApp {
    pub state: AppState,
    pub worker: Worker,
    pub dialogs: Box<dyn FileDialogs>,
}

/// egui's fonts plus DejaVu Sans as a fallback: tokens and symbols (arrows, ▶, ✕, ↵, ⇥,
/// Cyrillic, Greek) that the defaults lack.
pub fn install_fonts(ctx: &egui::Context) {
    let mut fonts = egui::FontDefinitions::default();
    let bytes: &'static [u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");
    fonts.font_data.insert("dejavu".into(), std::sync::Arc::new(egui::FontData::from_static(bytes)));
    for family in [egui::FontFamily::Proportional, egui::FontFamily::Monospace] {
        fonts.families.entry(family).or_default().push("dejavu".into());
    }
    ctx.set_fonts(fonts);
}

impl WorkbenchApp {
    /// Opens the notebook at `dir` and starts loading its model.
    pub fn new(ctx: &egui::Context, dir: PathBuf, model: Option<String>, dialogs: Box<dyn FileDialogs>) -> Self {
        install_fonts(ctx);
        let c = ctx.clone();
        let worker = Worker::spawn(move || c.request_repaint());
        let state = AppState::open(dir, model);
        ctx.set_theme(if state.ui.dark { egui::Theme::Dark } else { egui::Theme::Light });
        let mut app = WorkbenchApp { state, worker, dialogs };
        app.apply(Action::LoadModel);
        app
    }

    pub fn apply(&mut self, a: Action) {
        self.state.apply(a, &self.worker, self.dialogs.as_mut());
    }

    /// Handles everything the worker reported since the last frame.
    pub fn poll(&mut self) {
        while let Ok(e) = self.worker.events.try_recv() {
            self.state.on_event(e, &self.worker);
        }
    }

    fn top_bar(&mut self, ui: &mut Ui, actions: &mut Vec<Action>) {
        ui.horizontal(|ui| {
            ui.label(RichText::new("RouteLab").strong().size(18.0));
            ui.separator();
            ui.label(RichText::new(self.state.doc.dir.display().to_string()).weak()).on_hover_text("notebook directory");
            if self.state.doc.read_only.is_some() {
                ui.label(RichText::new("read-only").color(ui.visuals().warn_fg_color));
            } else if self.state.doc.dirty_since.is_some() {
                ui.label(RichText::new("● unsaved").weak());
            }
            if ui.button("Save").clicked() {
                actions.push(Action::Save);
            }
            if ui.button("Save as…").clicked() {
                actions.push(Action::SaveNotebookAs);
            }
            if ui.button("Open…").clicked() {
                actions.push(Action::OpenNotebook);
            }
            ui.separator();
            if ui.add_enabled(self.state.model.info.is_some(), egui::Button::new("▶▶ Run all")).clicked() {
                actions.push(Action::RunAll);
            }
            if self.state.busy() && ui.button("■ Cancel").clicked() {
                actions.push(Action::Cancel);
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                let label = if self.state.ui.dark { "☀ Light" } else { "☾ Dark" };
                if ui.button(label).clicked() {
                    self.state.ui.dark = !self.state.ui.dark;
                    ui.ctx().set_theme(if self.state.ui.dark { egui::Theme::Dark } else { egui::Theme::Light });
                }
                ui.label(RichText::new(format!("zoom {:.0}%", ui.ctx().zoom_factor() * 100.0)).weak().small())
                    .on_hover_text("Ctrl + / Ctrl − / Ctrl 0");
            });
        });
    }

    fn status_bar(&mut self, ui: &mut Ui) {
        ui.horizontal(|ui| {
            if let Some(id) = self.state.jobs.running {
                ui.spinner();
                let title = self.state.doc.notebook.cell(id).map(|c| c.title.clone()).unwrap_or_default();
                ui.label(format!("running “{title}”"));
                if !self.state.jobs.queue.is_empty() {
                    ui.label(RichText::new(format!("({} queued)", self.state.jobs.queue.len())).weak());
                }
            } else if self.state.model.loading.is_some() {
                ui.spinner();
                ui.label(format!("loading {}", self.state.model.requested));
            } else if let Some(info) = &self.state.model.info {
                ui.label(RichText::new(format!("{} ready", info.name)).weak());
            }
            if let Some((sev, m)) = self.state.ui.messages.last() {
                ui.separator();
                let color = if *sev == Severity::Error { ui.visuals().error_fg_color } else { ui.visuals().weak_text_color() };
                ui.label(RichText::new(m).color(color)).on_hover_text(m);
                if ui.small_button("✕").clicked() {
                    self.state.ui.messages.clear();
                }
            }
        });
    }

    /// One frame of the whole UI (also what tests drive).
    pub fn frame(&mut self, ui: &mut Ui) {
        self.poll();
        let mut actions = vec![];
        egui::Panel::top("top").show(ui, |ui| self.top_bar(ui, &mut actions));
        egui::Panel::bottom("status").show(ui, |ui| self.status_bar(ui));
        egui::Panel::left("model").resizable(true).default_size(280.0).show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| model_panel::model_panel(ui, &mut self.state, &mut actions));
        });
        egui::CentralPanel::default().show(ui, |ui| cells::notebook(ui, &mut self.state, &mut actions));
        for a in actions {
            self.apply(a);
        }
        self.state.autosave();
        if self.state.busy() || self.state.doc.dirty_since.is_some() {
            // Keep polling the worker and the autosave timer.
            ui.ctx().request_repaint_after(std::time::Duration::from_millis(if self.state.busy() { 30 } else { 500 }));
        }
    }
}

impl eframe::App for WorkbenchApp {
    fn ui(&mut self, ui: &mut Ui, _frame: &mut eframe::Frame) {
        self.frame(ui);
    }

    fn on_exit(&mut self) {
        if self.state.doc.dirty_since.is_some() {
            self.state.save();
        }
    }
}
