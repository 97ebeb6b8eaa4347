//! Cells and their results.

use routelab_model::capture::CaptureSpec;
use routelab_model::interventions::Interventions;
use routelab_model::session::Prompt;
use routelab_probes::analysis::attribution::Attribution;
pub use routelab_probes::analysis::attribution::AttributionSettings;
use routelab_probes::analysis::patching::PatchResult;
pub use routelab_probes::analysis::patching::PatchSettings;
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

/// A finished (or cancelled: `result.incomplete`) patching sweep. Small (layers × columns), so
/// it is kept in `notebook.json` itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PatchSummary {
    pub result: PatchResult,
    pub model: String,
}

/// A finished attribution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttributionSummary {
    pub result: Attribution,
    pub model: String,
}

/// A prompt cell's routing replay (`routelab_model::replay`): the expert choices, and the
/// weights when `weights`, of another prompt cell's finished run, at all of its positions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplaySettings {
    /// The source prompt cell's id (its latest trace is read when this cell runs).
    pub cell: u64,
    /// `None`: every layer the source recorded routing for.
    #[serde(default)]
    pub layers: Option<Vec<usize>>,
    /// Replay the combine weights too, instead of recomputing them from this run's router.
    #[serde(default)]
    pub weights: bool,
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
        /// Routing taken from another prompt cell's run; absent in notebooks saved before it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replay: Option<ReplaySettings>,
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
    /// Activation patching: `clean`'s activations copied into `corrupt`'s run, cell by cell.
    Patching {
        clean: String,
        corrupt: String,
        #[serde(default)]
        settings: PatchSettings,
        result: Option<PatchSummary>,
    },
    /// Direct logit attribution, the logit lens and the experts' promoted tokens at one position.
    Attribution {
        prompt: String,
        #[serde(default)]
        settings: AttributionSettings,
        result: Option<AttributionSummary>,
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
            CellKind::Patching { .. } => "activation patching",
            CellKind::Attribution { .. } => "logit attribution",
        }
    }

    pub fn has_result(&self) -> bool {
        match &self.kind {
            CellKind::Markdown { .. } => false,
            CellKind::Prompt { result, .. } => result.is_some(),
            CellKind::Compare { result, .. } => result.is_some(),
            CellKind::RetrievalScan { result, .. } => result.is_some(),
            CellKind::Specialization { result, .. } => result.is_some(),
            CellKind::Patching { result, .. } => result.is_some(),
            CellKind::Attribution { result, .. } => result.is_some(),
        }
    }

    pub fn clear_result(&mut self) {
        match &mut self.kind {
            CellKind::Markdown { .. } => {}
            CellKind::Prompt { result, .. } => *result = None,
            CellKind::Compare { result, .. } => *result = None,
            CellKind::RetrievalScan { result, .. } => *result = None,
            CellKind::Specialization { result, .. } => *result = None,
            CellKind::Patching { result, .. } => *result = None,
            CellKind::Attribution { result, .. } => *result = None,
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
            replay: None,
        },
    }
}

/// A new patching cell: a factual-recall pair whose context names another country (the same
/// token count in the bundled models' tokenizer).
pub fn patching_cell(id: u64) -> Cell {
    Cell {
        id,
        title: "Activation patching".into(),
        kind: CellKind::Patching {
            clean: "The capital of France is Paris. The capital of France is".into(),
            corrupt: "The capital of Spain is Paris. The capital of France is".into(),
            settings: PatchSettings::default(),
            result: None,
        },
    }
}

/// A new attribution cell (the last position, the model's own prediction).
pub fn attribution_cell(id: u64) -> Cell {
    Cell {
        id,
        title: "Logit attribution".into(),
        kind: CellKind::Attribution { prompt: "The capital of France is".into(), settings: AttributionSettings::default(), result: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notebook::{load, save, Notebook};
    use routelab_probes::analysis::attribution::{Component, Contribution, ExpertPromotion, LensRow};
    use routelab_probes::analysis::patching::{Metric, SweepSite};

    fn patched() -> Cell {
        let mut c = patching_cell(1);
        if let CellKind::Patching { settings, result, .. } = &mut c.kind {
            settings.site = SweepSite::Expert;
            settings.metric = Metric::LogitDiff { answer: " 7".into(), other: " 8".into() };
            settings.layers = Some(vec![0, 2]);
            *result = Some(PatchSummary {
                result: PatchResult {
                    site: SweepSite::Expert,
                    metric: settings.metric.clone(),
                    layers: vec![0, 2],
                    columns: vec![0, 1],
                    column_labels: vec!["e0".into(), "e1".into()],
                    // A cancelled sweep: the cells it did not reach are NaN.
                    values: vec![vec![1.5, -0.25], vec![f64::NAN, f64::NAN]],
                    recovered: vec![vec![0.75, -0.125], vec![f64::NAN, f64::NAN]],
                    clean_metric: 2.0,
                    corrupt_metric: 0.0,
                    positions: vec![3, 4],
                    incomplete: true,
                },
                model: "tiny-moe".into(),
            });
        }
        c
    }

    fn attributed() -> Cell {
        let mut c = attribution_cell(2);
        if let CellKind::Attribution { settings, result, .. } = &mut c.kind {
            settings.position = Some(1);
            settings.target = Some(" is".into());
            let contribution = |component: Component, value| Contribution { label: component.label(), component, value };
            *result = Some(AttributionSummary {
                result: Attribution {
                    position: 1,
                    target: 42,
                    target_text: " is".into(),
                    logit: 3.0,
                    scale: 1.5,
                    norm: "RMSNorm".into(),
                    components: vec![
                        contribution(Component::Embed, 1.0),
                        contribution(Component::Expert { layer: 0, expert: 3, weight: 0.5 }, 2.5),
                        contribution(Component::Head { layer: 0, head: 1 }, -0.5),
                    ],
                    residual: 0.0,
                    lens: vec![LensRow { layer: 0, target_logit: 3.0, target_prob: 0.25, target_rank: 0, top: vec![(" is".into(), 0.25)] }],
                    promotions: vec![ExpertPromotion { layer: 0, expert: 3, weight: 0.5, top: vec![(" is".into(), 1.25)] }],
                    lens_map: vec![vec![0.5, 0.25]],
                    final_tokens: vec![" a".into(), " is".into()],
                    tokens: vec!["A".into(), " cat".into()],
                },
                model: "tiny-moe".into(),
            });
        }
        c
    }

    #[test]
    fn patching_and_attribution_cells_round_trip_with_their_results() {
        let dir = tempfile::tempdir().unwrap();
        let mut nb = Notebook::new("tiny-moe");
        nb.cells = vec![patched(), attributed()];
        nb.next_id = 3;
        save(dir.path(), &nb).unwrap();
        let back = load(dir.path()).unwrap();
        // NaN is never equal to itself, so the sweep's unreached cells are checked apart.
        let CellKind::Patching { result: Some(r), .. } = &back.cells[0].kind else { panic!("{:?}", back.cells[0]) };
        assert!(r.result.values[1].iter().chain(&r.result.recovered[1]).all(|v| v.is_nan()));
        assert_eq!((r.result.values[0].as_slice(), r.result.recovered[0].as_slice()), (&[1.5, -0.25][..], &[0.75, -0.125][..]));
        assert_eq!(serde_json::to_string(&back).unwrap(), serde_json::to_string(&nb).unwrap());
        assert_eq!(back.cells[1], nb.cells[1]);
        assert_eq!((back.cells[0].kind_name(), back.cells[1].kind_name()), ("activation patching", "logit attribution"));
    }

    /// A prompt cell's replay setting survives a save; one saved without it reads as none.
    #[test]
    fn prompt_cells_round_trip_their_replay_setting() {
        let dir = tempfile::tempdir().unwrap();
        let mut nb = Notebook::new("tiny-moe");
        let mut b = prompt_cell(2, "b", Prompt::text("a b"));
        if let CellKind::Prompt { replay, .. } = &mut b.kind {
            *replay = Some(ReplaySettings { cell: 1, layers: Some(vec![0, 1, 2, 3, 5]), weights: true });
        }
        nb.cells = vec![prompt_cell(1, "a", Prompt::text("a c")), b];
        nb.next_id = 3;
        save(dir.path(), &nb).unwrap();
        let back = load(dir.path()).unwrap();
        assert_eq!(back.cells, nb.cells);
        let json = serde_json::to_string(&back.cells[0]).unwrap();
        assert!(!json.contains("replay"), "an unset replay is left out: {json}");
        let old: Cell = serde_json::from_str(&json).unwrap();
        assert!(matches!(old.kind, CellKind::Prompt { replay: None, .. }));
    }

    /// Settings left out (hand-written, or saved before a field existed) take the jobs' defaults.
    #[test]
    fn cells_without_settings_read_with_the_defaults() {
        let json = r#"[
            {"id": 4, "title": "p", "kind": "patching", "clean": "a b", "corrupt": "a c", "result": null},
            {"id": 5, "title": "a", "kind": "attribution", "prompt": "a b", "settings": {"position": 1}, "result": null}
        ]"#;
        let cells: Vec<Cell> = serde_json::from_str(json).unwrap();
        let CellKind::Patching { settings, .. } = &cells[0].kind else { panic!() };
        assert_eq!(*settings, PatchSettings::default());
        let CellKind::Attribution { settings, .. } = &cells[1].kind else { panic!() };
        assert_eq!((settings.position, settings.top), (Some(1), AttributionSettings::default().top));
    }
}
