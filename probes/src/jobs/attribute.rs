//! The attribution job: direct logit attribution over heads and experts, the logit lens, and
//! what each selected expert promotes, at one position of a prompt.

use routelab_model::session::{Prompt, Session};

use super::{Cancel, Job, Progress};
use crate::analysis::attribution::{attribute, Attribution, AttributionSettings};
use crate::error::Result;

#[derive(Clone, Debug)]
pub struct AttributeJob {
    pub prompt: Prompt,
    pub settings: AttributionSettings,
}

impl Job for AttributeJob {
    type Progress<'a> = Progress;
    type Output = Attribution;

    fn execute(&self, session: &Session, _progress: &mut dyn FnMut(Progress), cancel: &Cancel) -> Result<Attribution> {
        if cancel.is_cancelled() {
            return Err(routelab_model::ModelError::Cancelled.into());
        }
        attribute(session, &session.encode(&self.prompt)?, &self.settings)
    }
}
