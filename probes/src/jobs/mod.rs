//! Jobs: each kind of work RouteLab does on a loaded model, with one settings type whose
//! defaults live in one place and one way to run it, `execute(&Session, progress, cancel)`.
//! The CLI, the GUI worker and (later) Python all run these; none of them re-implements a job.
//!
//! | job | settings | output |
//! |---|---|---|
//! | [`run::RunJob`] | prompt, [`run::GenerationSettings`], interventions, capture | [`run::RunOutput`]: the trace and how the run ended |
//! | [`compare::CompareJob`] | two traces, the second's interventions | [`compare::CompareSummary`] |
//! | [`scan::ScanJob`] | [`scan::ScanSettings`] (needle grid and phrasing, mode) | [`crate::analysis::retrieval::ScanResult`] |
//! | [`heads_experts::HeadsExpertsJob`] | heads (given, from scores, or scanned), [`heads_experts::HeadsExpertsSettings`] | [`crate::analysis::heads_experts::HeadsExpertsRun`] |
//! | [`ablation::AblationJob`] | head scores, [`ablation::AblationSettings`] | [`crate::analysis::ablation::RetrievalAblation`] |
//! | [`specialization::SpecializationJob`] | [`specialization::SpecializationSettings`] | [`specialization::SpecializationOutput`] |
//! | [`patch::PatchJob`] | clean and corrupted prompts, [`crate::analysis::patching::PatchSettings`] | [`crate::analysis::patching::PatchResult`] |
//! | [`attribute::AttributeJob`] | prompt, [`crate::analysis::attribution::AttributionSettings`] | [`crate::analysis::attribution::Attribution`] |

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use routelab_model::session::Session;

use crate::error::Result;

pub mod ablation;
pub mod attribute;
pub mod compare;
pub mod heads_experts;
pub mod patch;
pub mod run;
pub mod scan;
pub mod specialization;

pub use crate::analysis::retrieval::Progress;

/// A job's way to be stopped from another thread: set it, and the job stops at its next
/// step (a token, a trial, a chunk) with `ModelError::Cancelled` or, for a run and a scan, with
/// what it has so far.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn new() -> Self {
        Cancel::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn reset(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Whether `other` is this flag (a clone of it), not merely in the same state.
    pub fn same(&self, other: &Cancel) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// One kind of work on a loaded model. Jobs own their settings and inputs (plain data that can
/// be saved, sent to the worker thread or built from Python).
pub trait Job: 'static {
    /// What the job reports while it works (progress through its trials, or a run's tokens).
    type Progress<'a>;
    type Output;

    fn execute(&self, session: &Session, progress: &mut dyn FnMut(Self::Progress<'_>), cancel: &Cancel) -> Result<Self::Output>;
}

#[cfg(test)]
mod tests {
    use super::scan::ScanSettings;
    use super::specialization::SpecializationSettings;

    /// Notebooks saved before the job layer kept these settings in their own shapes; they read
    /// into the jobs' settings, what they leave out taking the jobs' defaults.
    #[test]
    fn settings_saved_by_earlier_notebooks_still_read() {
        let scan: ScanSettings =
            serde_json::from_str(r#"{"lengths":[256],"depths":[0.0,1.0],"per_cell":3,"teacher_forced":true,"seed":7}"#).unwrap();
        assert_eq!((scan.needle.lengths.as_slice(), scan.needle.per_cell, scan.needle.seed), (&[256][..], 3, 7));
        assert!(scan.teacher_forced && scan.needle.haystack.is_none());
        assert_eq!(scan.needle.digits, 5);
        let back: ScanSettings = serde_json::from_str(&serde_json::to_string(&scan).unwrap()).unwrap();
        assert_eq!(back, scan);
        let spec: SpecializationSettings =
            serde_json::from_str(r#"{"corpus":"/data/corpus","chunk_tokens":128,"max_tokens":1000}"#).unwrap();
        assert_eq!(spec.corpus, std::path::PathBuf::from("/data/corpus"));
        assert_eq!(spec.code_domains, SpecializationSettings::default().code_domains);
    }
}
