//! The heads × experts job: needle trials, the steps where chosen heads copy the needle, and the
//! experts each MoE layer selects there against the other decoding steps.

use routelab_model::session::Session;
use serde::{Deserialize, Serialize};

use super::scan::NeedleSettings;
use super::{Cancel, Job, Progress};
use crate::analysis::heads_experts::{run_heads_experts, HeadChoice, HeadsExpertsRun};
use crate::analysis::retrieval::{ScanMode, RETRIEVAL_THRESHOLD};
use crate::error::Result;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HeadsExpertsSettings {
    #[serde(flatten)]
    pub needle: NeedleSettings,
    /// One prefill per trial with the answer teacher-forced, instead of generating it.
    pub teacher_forced: bool,
    /// Heads taken from scores or a scan are those scoring above this.
    pub threshold: f64,
}

impl Default for HeadsExpertsSettings {
    fn default() -> Self {
        HeadsExpertsSettings { needle: NeedleSettings::default(), teacher_forced: false, threshold: RETRIEVAL_THRESHOLD }
    }
}

impl HeadsExpertsSettings {
    pub fn mode(&self) -> ScanMode {
        if self.teacher_forced {
            ScanMode::TeacherForced
        } else {
            ScanMode::Generate
        }
    }
}

pub struct HeadsExpertsJob {
    pub settings: HeadsExpertsSettings,
    pub heads: HeadChoice,
}

impl Job for HeadsExpertsJob {
    type Progress<'a> = Progress;
    /// A cancelled job counts the trials it finished; its scan is marked `incomplete`.
    type Output = HeadsExpertsRun;

    fn execute(&self, session: &Session, progress: &mut dyn FnMut(Progress), cancel: &Cancel) -> Result<HeadsExpertsRun> {
        let s = &self.settings;
        let trials = s.needle.trials(session)?;
        run_heads_experts(session, &trials, s.mode(), &self.heads, s.threshold, &mut |p| {
            progress(p);
            !cancel.is_cancelled()
        })
    }
}
