//! The retrieval-head scan job: needle trials, per-head retrieval scores (Wu et al. 2024).

use std::path::PathBuf;

use routelab_model::interventions::Interventions;
use routelab_model::session::Session;
use serde::{Deserialize, Serialize};

use super::{Cancel, Job, Progress};
use crate::analysis::needle::{build_trials, NeedleFormat, NeedleGrid, Trial};
use crate::analysis::retrieval::{scan, ScanMode, ScanResult};
use crate::error::{ProbeError, Result};

/// Needle-in-a-haystack trials: the grid and the phrasing. Fields a notebook or command line
/// leaves out take the defaults here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NeedleSettings {
    /// Context lengths in tokens (whole prompt).
    pub lengths: Vec<usize>,
    /// Needle depths, 0 = start of the haystack, 1 = end.
    pub depths: Vec<f64>,
    /// Trials per (length, depth).
    pub per_cell: usize,
    pub seed: u64,
    /// Filler text; default assets/texts/haystack.txt (prose from the Rust book).
    pub haystack: Option<PathBuf>,
    /// Needle sentence with an `{answer}` placeholder; default: the model's own phrasing
    /// ([`NeedleFormat::for_model`]).
    pub needle: Option<String>,
    /// The question after the haystack; default as `needle`.
    pub question: Option<String>,
    /// Digits in each answer.
    pub digits: usize,
}

impl Default for NeedleSettings {
    fn default() -> Self {
        NeedleSettings {
            lengths: vec![512],
            depths: vec![0.0, 0.25, 0.5, 0.75, 1.0],
            per_cell: 2,
            seed: 0,
            haystack: None,
            needle: None,
            question: None,
            digits: 5,
        }
    }
}

impl NeedleSettings {
    /// The trials these settings describe for `session`'s model.
    pub fn trials(&self, session: &Session) -> Result<Vec<Trial>> {
        let path = self.haystack.clone().unwrap_or_else(|| routelab_model::source::assets_dir().join("texts/haystack.txt"));
        let text = std::fs::read_to_string(&path).map_err(|e| ProbeError::io(&path, e))?;
        // The bundled tiny models were trained on a passkey phrasing; others get the generic one.
        let default = NeedleFormat::for_model(&session.name);
        let format = NeedleFormat {
            needle: self.needle.clone().unwrap_or(default.needle),
            question: self.question.clone().map(|q| q.replace("\\n", "\n")).unwrap_or(default.question),
            answer_digits: self.digits,
            prefix_bos: default.prefix_bos,
        };
        let grid = NeedleGrid { lengths: self.lengths.clone(), depths: self.depths.clone(), per_cell: self.per_cell, seed: self.seed };
        build_trials(session, &text, &format, &grid)
    }
}

/// What a retrieval scan runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScanSettings {
    #[serde(flatten)]
    pub needle: NeedleSettings,
    /// One prefill per trial with the answer teacher-forced, instead of generating it (the
    /// paper's protocol, the default).
    pub teacher_forced: bool,
}

impl ScanSettings {
    pub fn mode(&self) -> ScanMode {
        if self.teacher_forced {
            ScanMode::TeacherForced
        } else {
            ScanMode::Generate
        }
    }
}

/// A retrieval scan; `state`, when set, keeps finished trials so a scan resumes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScanJob {
    pub settings: ScanSettings,
    pub interventions: Interventions,
    pub state: Option<PathBuf>,
}

impl Job for ScanJob {
    type Progress<'a> = Progress;
    /// Cancelled scans return what they finished, marked `incomplete`.
    type Output = ScanResult;

    fn execute(&self, session: &Session, progress: &mut dyn FnMut(Progress), cancel: &Cancel) -> Result<ScanResult> {
        let trials = self.settings.needle.trials(session)?;
        scan(session, &trials, self.settings.mode(), &self.interventions, self.state.as_deref(), &mut |p| {
            progress(p);
            !cancel.is_cancelled()
        })
    }
}
