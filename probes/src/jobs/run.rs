//! The run job: generate from a prompt with capture and interventions, into a trace.

use routelab_model::capture::CaptureSpec;
use routelab_model::interventions::Interventions;
use routelab_model::sampling::SamplingSettings;
use routelab_model::session::{Prompt, RunEvent, RunRequest, Session, StopReason};
use serde::{Deserialize, Serialize};

use super::{Cancel, Job};
use crate::error::Result;
use crate::trace::Trace;

/// How a prompt is continued.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerationSettings {
    pub max_new_tokens: usize,
    pub sampling: SamplingSettings,
    /// Stop at an end-of-sequence token.
    pub stop_at_eos: bool,
}

impl Default for GenerationSettings {
    fn default() -> Self {
        GenerationSettings { max_new_tokens: 48, sampling: SamplingSettings::default(), stop_at_eos: true }
    }
}

/// Generate from `prompt` (nothing generated with `max_new_tokens` 0: one forward pass).
#[derive(Clone, Debug, PartialEq)]
pub struct RunJob {
    pub prompt: Prompt,
    pub settings: GenerationSettings,
    /// `mean` head interventions without a reference get the head's mean over the prompt.
    pub interventions: Interventions,
    pub capture: CaptureSpec,
    /// Routing taken from a recorded run in some layers.
    pub replay: Option<std::sync::Arc<routelab_model::replay::RoutingReplay>>,
}

/// A finished run.
#[derive(Clone, Debug)]
pub struct RunOutput {
    /// Everything recorded, with the run's metadata (interventions as applied, head means
    /// filled in).
    pub trace: Trace,
    /// Generated text (special tokens kept).
    pub text: String,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub stop: StopReason,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
}

impl Job for RunJob {
    /// The run's events: the prompt recorded, then each token.
    type Progress<'a> = RunEvent<'a>;
    type Output = RunOutput;

    fn execute(&self, session: &Session, progress: &mut dyn FnMut(RunEvent<'_>), cancel: &Cancel) -> Result<RunOutput> {
        let tokens = session.encode(&self.prompt)?;
        let mut interventions = self.interventions.clone();
        session.fill_head_means(&mut interventions, &tokens)?;
        let request = RunRequest {
            tokens,
            max_new_tokens: self.settings.max_new_tokens,
            sampling: self.settings.sampling.clone(),
            capture: self.capture.clone(),
            interventions,
            stop_at_eos: self.settings.stop_at_eos,
            replay: self.replay.clone(),
        };
        let record = session.run(&request, &mut |e| {
            progress(e);
            !cancel.is_cancelled()
        })?;
        let (text, prompt_tokens, generated_tokens) = (record.text.clone(), record.prompt_len, record.generated().len());
        let (stop, prefill_seconds, decode_seconds) = (record.stop, record.prefill_seconds, record.decode_seconds);
        let trace = Trace::from_run(record, &session.name, session.config(), &self.prompt.display());
        Ok(RunOutput { trace, text, prompt_tokens, generated_tokens, stop, prefill_seconds, decode_seconds })
    }
}
