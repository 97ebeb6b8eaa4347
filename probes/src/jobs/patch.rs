//! The activation-patching job: a sweep over layers × positions (or heads, or experts) of one
//! site, copying the clean prompt's activations into the corrupted prompt's run.

use routelab_model::session::{Prompt, Session};

use super::{Cancel, Job, Progress};
use crate::analysis::patching::{sweep, PatchResult, PatchSettings};
use crate::error::Result;

#[derive(Clone, Debug)]
pub struct PatchJob {
    /// The prompt whose activations are copied in.
    pub clean: Prompt,
    /// The prompt run with them; the same number of tokens as `clean`.
    pub corrupt: Prompt,
    pub settings: PatchSettings,
}

impl Job for PatchJob {
    type Progress<'a> = Progress;
    type Output = PatchResult;

    /// Cancelled, it returns the cells done so far (`incomplete`, NaN elsewhere).
    fn execute(&self, session: &Session, progress: &mut dyn FnMut(Progress), cancel: &Cancel) -> Result<PatchResult> {
        let clean = session.encode(&self.clean)?;
        let corrupt = session.encode(&self.corrupt)?;
        sweep(session, &clean, &corrupt, &self.settings, &mut |p| {
            progress(p);
            !cancel.is_cancelled()
        })
    }
}
