//! The expert-specialization job: route a labelled corpus and measure how experts specialise
//! by token class and domain (OLMoE's analyses).

use std::path::PathBuf;

use routelab_model::session::Session;
use serde::{Deserialize, Serialize};

use super::{Cancel, Job, Progress};
use crate::analysis::corpus::{classes, read_corpus, route_corpus, specialization, CorpusRouting, LayerSpecialization};
use crate::error::Result;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SpecializationSettings {
    /// Corpus directory: one subdirectory of text files per domain.
    pub corpus: PathBuf,
    /// Tokens per context chunk.
    pub chunk_tokens: usize,
    /// Stop after this many tokens.
    pub max_tokens: usize,
    /// Domains whose word tokens count as `code` (others: `prose`).
    pub code_domains: Vec<String>,
}

impl Default for SpecializationSettings {
    fn default() -> Self {
        SpecializationSettings {
            corpus: PathBuf::new(),
            chunk_tokens: 256,
            max_tokens: 50_000,
            code_domains: ["code", "rust", "python"].iter().map(|s| s.to_string()).collect(),
        }
    }
}

pub struct SpecializationJob {
    pub settings: SpecializationSettings,
}

pub struct SpecializationOutput {
    pub routing: CorpusRouting,
    /// Per MoE layer.
    pub report: Vec<LayerSpecialization>,
    /// Files of the corpus that were not UTF-8 text or were empty.
    pub skipped: Vec<PathBuf>,
}

impl Job for SpecializationJob {
    type Progress<'a> = Progress;
    type Output = SpecializationOutput;

    fn execute(&self, session: &Session, progress: &mut dyn FnMut(Progress), cancel: &Cancel) -> Result<SpecializationOutput> {
        let s = &self.settings;
        let (docs, skipped) = read_corpus(&s.corpus)?;
        let routing = route_corpus(session, &docs, s.chunk_tokens, s.max_tokens, &mut |p| {
            progress(p);
            !cancel.is_cancelled()
        })?;
        let report = specialization(&routing, &classes(&routing, &s.code_domains));
        Ok(SpecializationOutput { routing, report, skipped })
    }
}
