//! The compare job: how a run changed under interventions, position by position.

use routelab_model::capture::CaptureSpec;
use routelab_model::interventions::Interventions;
use routelab_model::session::{RunRequest, Session};
use routelab_model::ModelError;
use serde::{Deserialize, Serialize};

use super::{Cancel, Job, Progress};
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

/// What a compare cell shows. Everything but `first_divergence` is teacher-forced: both runs'
/// interventions applied over a's tokens, so a change is caused by b's interventions alone
/// (layers before the first intervened one never change), not by the texts parting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompareSummary {
    /// Next-token KL(a ‖ b) along a's sequence, nats.
    pub kl: Vec<f64>,
    /// First position where the generated tokens differ (the runs as they ran).
    pub first_divergence: Option<usize>,
    /// Per MoE layer, share of a's positions whose top-k set changed.
    pub flip_rates: Vec<(usize, f64)>,
}

impl Job for CompareJob {
    type Progress<'a> = Progress;
    type Output = CompareSummary;

    fn execute(&self, session: &Session, _progress: &mut dyn FnMut(Progress), cancel: &Cancel) -> Result<CompareSummary> {
        let free = diff(&self.a, &self.b)?;
        // Both forward passes condition on the same context, a's tokens.
        let forced = |iv: &Interventions| -> Result<Trace> {
            if cancel.is_cancelled() {
                return Err(ModelError::Cancelled.into());
            }
            let req = RunRequest::forward(self.a.tokens().to_vec(), CaptureSpec::items(&["logits", "router"]), iv.clone());
            let run = session.run(&req, &mut |_| true)?;
            Ok(Trace::from_run(run, &session.name, session.config(), &self.a.meta.prompt))
        };
        let forced = diff(&forced(&self.a.meta.interventions)?, &forced(&self.b_interventions)?)?;
        Ok(CompareSummary {
            kl: forced.kl.clone().unwrap_or_default(),
            first_divergence: free.first_divergence,
            flip_rates: forced.flip_rates(),
        })
    }
}
