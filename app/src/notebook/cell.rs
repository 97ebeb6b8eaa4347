//! Cells and their results.

use routelab_model::capture::CaptureSpec;
use routelab_model::interventions::Interventions;
use routelab_model::session::Prompt;
use routelab_probes::analysis::retrieval::HeadScores;
// A cell's settings are its job's settings (their defaults live with the jobs).
pub use routelab_probes::jobs::compare::CompareSummary;
pub use routelab_probes::jobs::run::GenerationSettings;
pub use routelab_probes::jobs::scan::ScanSettings;
pub use routelab_probes::jobs::specialization::SpecializationSettings;
use serde::{Deserialize, Serialize};

/// What a finished prompt cell produced (its trace: `trace`, from `store::trace_relpath`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Relative to the notebook directory.
    pub trace: String,
    pub generated_text: String,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub stop: String,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
    /// The model it ran on.
    pub model: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScanSummary {
    pub scores: HeadScores,
    pub accuracy: f64,
    pub trials: usize,
    pub model: String,
}

/// Per MoE layer: (layer, balance, MI class bits, MI domain bits, vocabulary specialization).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpecializationSummary {
    pub domains: Vec<String>,
    pub tokens: usize,
    pub layers: Vec<(usize, f64, f64, f64, f64)>,
    pub model: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum CellKind {
    Markdown {
        text: String,
    },
    Prompt {
        prompt: Prompt,
        settings: GenerationSettings,
        interventions: Interventions,
        capture: CaptureSpec,
        result: Option<RunSummary>,
    },
    /// Two prompt cells side by side.
    Compare {
        a: u64,
        b: u64,
        result: Option<CompareSummary>,
    },
    RetrievalScan {
        settings: ScanSettings,
        result: Option<ScanSummary>,
    },
    Specialization {
        settings: SpecializationSettings,
        result: Option<SpecializationSummary>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub id: u64,
    pub title: String,
    #[serde(flatten)]
    pub kind: CellKind,
}

impl Cell {
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            CellKind::Markdown { .. } => "markdown",
            CellKind::Prompt { .. } => "prompt",
            CellKind::Compare { .. } => "compare",
            CellKind::RetrievalScan { .. } => "retrieval scan",
            CellKind::Specialization { .. } => "specialization",
        }
    }

    pub fn has_result(&self) -> bool {
        match &self.kind {
            CellKind::Markdown { .. } => false,
            CellKind::Prompt { result, .. } => result.is_some(),
            CellKind::Compare { result, .. } => result.is_some(),
            CellKind::RetrievalScan { result, .. } => result.is_some(),
            CellKind::Specialization { result, .. } => result.is_some(),
        }
    }

    pub fn clear_result(&mut self) {
        match &mut self.kind {
            CellKind::Markdown { .. } => {}
            CellKind::Prompt { result, .. } => *result = None,
            CellKind::Compare { result, .. } => *result = None,
            CellKind::RetrievalScan { result, .. } => *result = None,
            CellKind::Specialization { result, .. } => *result = None,
        }
    }
}

/// A new prompt cell with default settings (routing, head statistics and logits captured, so
/// compare cells can compute KL).
pub fn prompt_cell(id: u64, title: &str, prompt: Prompt) -> Cell {
    Cell {
        id,
        title: title.to_string(),
        kind: CellKind::Prompt {
            prompt,
            settings: GenerationSettings::default(),
            interventions: Interventions::default(),
            capture: CaptureSpec::default(),
            result: None,
        },
    }
}
