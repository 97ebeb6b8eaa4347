//! The workbench GUI (eframe/egui): a notebook of cells that run prompts on the loaded model
//! and show, live, which experts the router picks and what the heads do.
//!
//! State and views are apart, as in rerun's viewer: [`state::AppState`] holds the document,
//! the jobs and what they produced, and the UI's own state; each view in [`views`] draws one thing from it and returns
//! [`state::Action`]s; the app applies actions and talks to the [`worker::Worker`] thread,
//! which owns the model.

pub mod app;
pub mod dialogs;
pub mod document;
pub mod export;
pub mod jobs;
pub mod results;
pub mod run_view;
pub mod state;
pub mod ui_state;
pub mod views;
pub mod worker;

use std::path::PathBuf;

pub use app::WorkbenchApp;

/// The model a new notebook opens on.
pub const DEFAULT_MODEL: &str = "tiny-moe";

/// Where the default notebook lives: `$ROUTELAB_NOTEBOOK`, else
/// `$XDG_DATA_HOME/routelab/notebooks/default` (or `~/.local/share/…`).
pub fn default_notebook_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("ROUTELAB_NOTEBOOK") {
        return PathBuf::from(p);
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data.join("routelab/notebooks/default")
}

/// Opens the workbench window.
pub fn run(notebook: Option<PathBuf>, model: Option<String>, run_all: bool) -> anyhow::Result<()> {
    let dir = notebook.unwrap_or_else(default_notebook_dir);
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_inner_size([1440.0, 900.0])
            .with_min_inner_size([800.0, 500.0])
            .with_title("RouteLab"),
        ..Default::default()
    };
    eframe::run_native(
        "RouteLab",
        options,
        Box::new(move |cc| {
            let mut app = WorkbenchApp::new(&cc.egui_ctx, dir, model, Box::new(dialogs::NativeDialogs));
            app.state.jobs.run_all_when_loaded = run_all;
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| anyhow::anyhow!("the window could not be opened: {e}"))
}
