//! The compare job: how a run changed under interventions, position by position.

use routelab_model::capture::CaptureSpec;
use routelab_model::interventions::Interventions;
use routelab_model::session::{RunRequest, Session};
use routelab_model::ModelError;
use serde::{Deserialize, Serialize};

use super::{Cancel, Job, Progress};
use crate::analysis::ablation::kl_from_logits;
use crate::analysis::diff::diff;
use crate::error::Result;
use crate::trace::Trace;

/// Two runs of the same prompt: `a` as it ran, `b` with `b_interventions`.
#[derive(Clone, Debug)]
pub struct CompareJob {
    pub a: Trace,
    pub b: Trace,
    pub b_interventions: Interventions,
}

/// What a compare cell shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompareSummary {
    /// Next-token KL(a ‖ b) along a's sequence (b's interventions teacher-forced on a's
    /// tokens), nats.
    pub kl: Vec<f64>,
    pub first_divergence: Option<usize>,
    /// Per MoE layer, share of positions whose top-k set changed.
    pub flip_rates: Vec<(usize, f64)>,
}

impl Job for CompareJob {
    type Progress<'a> = Progress;
    type Output = CompareSummary;

    fn execute(&self, session: &Session, _progress: &mut dyn FnMut(Progress), cancel: &Cancel) -> Result<CompareSummary> {
        let d = diff(&self.a, &self.b)?;
        // KL along a's sequence: both distributions condition on the same context, a's tokens.
        let forced = |iv: &Interventions| -> Result<Vec<Vec<f32>>> {
            if cancel.is_cancelled() {
                return Err(ModelError::Cancelled.into());
            }
            let req = RunRequest::forward(self.a.tokens().to_vec(), CaptureSpec::items(&["logits"]), iv.clone());
            let run = session.run(&req, &mut |_| true)?;
            Ok(run.logits().into_iter().map(|r| r.to_vec()).collect())
        };
        let la = forced(&self.a.meta.interventions)?;
        let lb = forced(&self.b_interventions)?;
        let kl = la.iter().zip(&lb).map(|(x, y)| kl_from_logits(x, y)).collect();
        Ok(CompareSummary { kl, first_divergence: d.first_divergence, flip_rates: d.flip_rates() })
    }
}
