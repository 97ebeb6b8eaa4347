//! What the workbench shows but does not keep: per-cell UI state, messages, theme (rerun's
//! "blueprint" next to the document and the jobs).

use std::collections::HashMap;

use routelab_model::interventions::Interventions;

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

/// What colours the tokens of a prompt cell's strip (for the chosen layer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StripColour {
    /// The token's top-1 expert.
    #[default]
    TopExpert,
    /// The token's routing margin: dark near ties, bright for clear decisions.
    Margin,
}

/// Per-cell UI state that is not part of the document.
#[derive(Clone, Debug, Default)]
pub struct CellUi {
    /// Layer whose routing colours the tokens.
    pub layer: usize,
    pub colour: StripColour,
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
    /// Where a patching cell's heat map was drawn last frame.
    pub patch_grid: Option<super::views::grid::GridGeometry>,
    /// A patching cell's layer and position lists as typed (kept while they do not parse); a
    /// prompt cell's replayed layers in `layers_text`.
    pub layers_text: Option<String>,
    pub positions_text: Option<String>,
}

/// The UI's own state: per cell, and for the whole window.
#[derive(Debug)]
pub struct UiState {
    pub cells: HashMap<u64, CellUi>,
    pub messages: Vec<(Severity, String)>,
    pub dark: bool,
    /// Show timings (off for reproducible screenshots and snapshot tests).
    pub show_timings: bool,
}

impl Default for UiState {
    fn default() -> Self {
        UiState {
            cells: HashMap::new(),
            messages: vec![],
            // ROUTELAB_THEME=light|dark overrides the default (dark).
            dark: std::env::var("ROUTELAB_THEME").map(|t| t != "light").unwrap_or(true),
            show_timings: true,
        }
    }
}

impl UiState {
    pub fn cell(&mut self, id: u64) -> &mut CellUi {
        self.cells.entry(id).or_default()
    }

    pub fn error(&mut self, m: impl Into<String>) {
        self.messages.push((Severity::Error, m.into()));
    }

    pub fn info(&mut self, m: impl Into<String>) {
        self.messages.push((Severity::Info, m.into()));
    }
}
