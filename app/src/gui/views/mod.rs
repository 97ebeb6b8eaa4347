//! The views: each draws one thing from the state and returns actions.

pub mod attribution;
pub mod cells;
pub mod compare;
pub mod grid;
pub mod heatmap;
pub mod index_list;
pub mod markdown;
pub mod model_panel;
pub mod patching;
pub mod prompt;
pub mod replay;
pub mod scan;
pub mod signed_bars;
pub mod tokens;

use egui::Color32;

/// The colour of expert `e`, the same as in exported plots.
pub fn expert_color(e: usize) -> Color32 {
    let c = routelab_probes::export::plots::category_color(e);
    Color32::from_rgb(c.0, c.1, c.2)
}

/// Viridis, the exported heatmaps' scale.
pub fn scale_color(t: f32) -> Color32 {
    let c = routelab_probes::export::plots::scale_color(t);
    Color32::from_rgb(c.0, c.1, c.2)
}

/// Text colour readable on `bg`.
pub fn text_on(bg: Color32) -> Color32 {
    let l = 0.299 * bg.r() as f32 + 0.587 * bg.g() as f32 + 0.114 * bg.b() as f32;
    if l > 150.0 {
        Color32::BLACK
    } else {
        Color32::WHITE
    }
}

/// A few export buttons for a view.
pub fn export_buttons(ui: &mut egui::Ui, cell: u64, view: super::state::ExportKind, actions: &mut Vec<super::state::Action>) {
    export_menu(ui, "Export ▾", cell, view, actions);
}

/// [`export_buttons`] under another title, for a cell with several views.
pub fn export_menu(ui: &mut egui::Ui, title: &str, cell: u64, view: super::state::ExportKind, actions: &mut Vec<super::state::Action>) {
    ui.menu_button(title, |ui| {
        for ext in ["png", "svg", "csv"] {
            if ui.button(format!("as {}", ext.to_uppercase())).clicked() {
                actions.push(super::state::Action::ExportView { cell, view, ext });
                ui.close();
            }
        }
    });
}
