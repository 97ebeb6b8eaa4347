//! The views: each draws one thing from the state and returns actions.

pub mod cells;
pub mod compare;
pub mod grid;
pub mod markdown;
pub mod model_panel;
pub mod prompt;
pub mod scan;
pub mod tokens;

use egui::Color32;

/// The colour of expert `e`, the same as in exported plots.
pub fn expert_color(e: usize) -> Color32 {
    let c = routelab_probes::export::plots::category_color(e);
    Color32::from_rgb(c.0, c.1, c.2)
}

/// Viridis, as in exported heatmaps.
pub fn scale_color(t: f32) -> Color32 {
    use plotters_colormap::viridis;
    viridis(t.clamp(0.0, 1.0))
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
    ui.menu_button("Export ▾", |ui| {
        for ext in ["png", "svg", "csv"] {
            if ui.button(format!("as {}", ext.to_uppercase())).clicked() {
                actions.push(super::state::Action::ExportView { cell, view, ext });
                ui.close();
            }
        }
    });
}

/// Viridis, interpolated between the same anchors as plotters'.
mod plotters_colormap {
    use egui::Color32;

    // plotters' ViridisRGB anchors, so live views and exported plots agree.
    const ANCHORS: [(u8, u8, u8); 8] =
        [(68, 1, 84), (70, 50, 127), (54, 92, 141), (39, 127, 143), (31, 162, 136), (74, 194, 110), (160, 219, 57), (254, 232, 37)];

    pub fn viridis(t: f32) -> Color32 {
        let x = t * (ANCHORS.len() - 1) as f32;
        let i = (x.floor() as usize).min(ANCHORS.len() - 2);
        let f = x - i as f32;
        let (a, b) = (ANCHORS[i], ANCHORS[i + 1]);
        let mix = |p: u8, q: u8| (p as f32 + (q as f32 - p as f32) * f).round() as u8;
        Color32::from_rgb(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
    }
}
