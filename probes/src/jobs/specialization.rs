//! The expert-specialization job: route a labelled corpus and measure how experts specialise
//! by token class and domain (OLMoE's analyses).

use std::path::PathBuf;

use routelab_model::session::Session;
use serde::{Deserialize, Serialize};

use super::{Cancel, Job, Progress};
use crate::analysis::corpus::{classes, read_corpus, route_corpus, specialization, CorpusRouting, LayerSpecialization, CLASSES};
use crate::error::Result;
use crate::export::csv::{num, Table};
use crate::export::plots::Heatmap;
use crate::export::views::{self, View};

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

/// One file of a specialization's results: a view (table and plot) or a table alone.
pub enum Export {
    View(View),
    Table(Table),
}

impl SpecializationOutput {
    /// Every result `routelab analyze specialization` writes and Python returns, by file stem:
    /// `summary`, `load`, `domains_layer{l}` and `top_tokens_layer{l}` per MoE layer, and the most
    /// specialised layer's `coactivation_layer{l}`. `piece` gives a token's text.
    pub fn exports(&self, model: &str, piece: &dyn Fn(u32) -> String) -> Vec<(String, Export)> {
        let report = &self.report;
        let mut out = vec![
            ("summary".to_string(), Export::View(views::specialization_summary(report, model))),
            ("load".to_string(), Export::View(self.load_view(model))),
        ];
        for l in report {
            out.push((format!("domains_layer{}", l.layer), Export::View(views::specialization_domains(l, &self.routing.domains, model))));
            let mut t = Table::new(&["expert", "rank", "token", "text", "selections", "share_of_token_routings"]);
            for (x, list) in l.top_tokens.iter().enumerate() {
                for (rank, (tok, c, share)) in list.iter().enumerate() {
                    t.push(vec![x.to_string(), (rank + 1).to_string(), tok.to_string(), piece(*tok), c.to_string(), num(*share)]);
                }
            }
            out.push((format!("top_tokens_layer{}", l.layer), Export::Table(t)));
        }
        if let Some(best) = report.iter().max_by(|x, y| x.mi_class_bits.total_cmp(&y.mi_class_bits)) {
            let mut t = Table::new(&["expert_a", "expert_b", "tokens_together"]);
            for (i, row) in best.coactivation.iter().enumerate() {
                for (j, c) in row.iter().enumerate() {
                    t.push(vec![i.to_string(), j.to_string(), c.to_string()]);
                }
            }
            out.push((format!("coactivation_layer{}", best.layer), Export::Table(t)));
        }
        out
    }

    /// Expert load across MoE layers: layer × expert share of the corpus's top-k selections.
    fn load_view(&self, model: &str) -> View {
        let e = self.routing.num_experts;
        let mut t = Table::new(&["layer", "expert", "selections", "share"]);
        for l in &self.report {
            for (x, (&c, s)) in l.load.counts.iter().zip(l.load.shares()).enumerate() {
                t.push(vec![l.layer.to_string(), x.to_string(), c.to_string(), num(s)]);
            }
        }
        View::Heatmap(
            t,
            Heatmap {
                title: format!("Expert load over {} corpus tokens — {model}", self.routing.tokens.len()),
                x_label: "expert".into(),
                y_label: "layer".into(),
                row_labels: self.report.iter().map(|l| l.layer.to_string()).collect(),
                col_labels: (0..e).map(|x| x.to_string()).collect(),
                values: self.report.iter().map(|l| l.load.shares()).collect(),
                scale_label: "share of top-k selections".into(),
                range: None,
                annotate: e <= 16 && self.report.len() <= 16,
            },
        )
    }

    /// The report `report.json` holds: model, domains, token count, token classes, and every
    /// MoE layer's measures.
    pub fn report_json(&self, model: &str) -> serde_json::Value {
        serde_json::json!({
            "model": model,
            "domains": self.routing.domains,
            "tokens": self.routing.tokens.len(),
            "classes": CLASSES,
            "layers": self.report,
        })
    }
}
