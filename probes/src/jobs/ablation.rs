//! The retrieval-head ablation job: needle accuracy with the top-N retrieval heads masked
//! against N random other heads.

use routelab_model::interventions::HeadMethod;
use routelab_model::session::Session;
use serde::{Deserialize, Serialize};

use super::scan::NeedleSettings;
use super::{Cancel, Job, Progress};
use crate::analysis::ablation::{retrieval_vs_random, MaskArms, RetrievalAblation};
use crate::analysis::retrieval::HeadScores;
use crate::error::{ProbeError, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AblationSettings {
    /// How many heads to mask.
    pub top: usize,
    /// Random draws of non-retrieval heads.
    pub draws: usize,
    /// How a head is masked: uniform attention (as in the paper) or zeroed.
    pub method: HeadMethod,
    #[serde(flatten)]
    pub needle: NeedleSettings,
}

impl Default for AblationSettings {
    fn default() -> Self {
        AblationSettings { top: 10, draws: 5, method: HeadMethod::Uniform, needle: NeedleSettings::default() }
    }
}

pub struct AblationJob {
    /// Per-head retrieval scores (from a scan) of the same model.
    pub scores: HeadScores,
    pub settings: AblationSettings,
}

impl AblationJob {
    /// Whether the head scores fit `session`'s model.
    pub fn check(&self, session: &Session) -> Result<()> {
        let c = session.config();
        let s = &self.scores;
        if s.layers != c.num_layers || s.heads != c.attention.num_heads {
            return Err(ProbeError::Invalid(format!(
                "the head scores cover {} layers × {} heads; the model has {} × {}",
                s.layers, s.heads, c.num_layers, c.attention.num_heads
            )));
        }
        Ok(())
    }
}

impl Job for AblationJob {
    type Progress<'a> = Progress;
    type Output = RetrievalAblation;

    fn execute(&self, session: &Session, progress: &mut dyn FnMut(Progress), cancel: &Cancel) -> Result<RetrievalAblation> {
        self.check(session)?;
        let a = &self.settings;
        let trials = a.needle.trials(session)?;
        let arms = MaskArms { n: a.top, draws: a.draws, method: a.method.clone(), seed: a.needle.seed };
        retrieval_vs_random(session, &self.scores, &trials, &arms, &mut |p| {
            progress(p);
            !cancel.is_cancelled()
        })
    }
}
