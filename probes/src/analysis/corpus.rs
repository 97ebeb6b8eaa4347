//! Routing over a labelled corpus and the specialization report built from it.
//!
//! A corpus is a directory with one subdirectory per domain (`code/`, `prose/`, …) holding
//! text files; files directly in the directory belong to the domain `default`. Each file is
//! tokenised and cut into chunks of at most `chunk_tokens`, each run as its own context.
//!
//! Token classes (for the mutual-information figure), the rule of the bundled models'
//! evaluation (assets/recipes/evaluate.py), checked in this order on the token decoded on its
//! own (partial UTF-8 bytes decode to U+FFFD): empty or only whitespace → `whitespace`; has an
//! ASCII letter → `code` in a code domain, else `prose`; has an ASCII digit → `digits`;
//! otherwise → `punctuation` (operators, brackets, underscores, other symbols).

use std::path::{Path, PathBuf};
use std::time::Instant;

use routelab_model::capture::CaptureSpec;
use routelab_model::interventions::Interventions;
use routelab_model::session::{RunRequest, Session};
use serde::Serialize;

use super::retrieval::Progress;
use crate::error::{ProbeError, Result};
use crate::stats::routing::{self, Agreement, Load};
use crate::stats::specialization as spec;

pub const CLASSES: [&str; 5] = ["code", "prose", "digits", "punctuation", "whitespace"];

/// The class index (into [`CLASSES`]) of a token's text in a document of the given kind.
pub fn token_class(text: &str, code_domain: bool) -> usize {
    if text.chars().all(|c| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')) {
        4
    } else if text.chars().any(|c| c.is_ascii_alphabetic()) {
        if code_domain {
            0
        } else {
            1
        }
    } else if text.chars().any(|c| c.is_ascii_digit()) {
        2
    } else {
        3
    }
}

#[derive(Clone, Debug)]
pub struct Document {
    pub domain: String,
    pub path: PathBuf,
    pub text: String,
}

/// Reads a corpus directory (see the module docs). Files that are not UTF-8 text are skipped
/// with a note in the returned list of skipped paths.
pub fn read_corpus(dir: &Path) -> Result<(Vec<Document>, Vec<PathBuf>)> {
    let mut docs = vec![];
    let mut skipped = vec![];
    let entries = std::fs::read_dir(dir).map_err(|e| ProbeError::io(dir, e))?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            let domain = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
            let mut files: Vec<PathBuf> = std::fs::read_dir(&p)
                .map_err(|e| ProbeError::io(&p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file())
                .collect();
            files.sort();
            for f in files {
                match std::fs::read_to_string(&f) {
                    Ok(text) if !text.trim().is_empty() => docs.push(Document { domain: domain.clone(), path: f, text }),
                    _ => skipped.push(f),
                }
            }
        } else if p.is_file() {
            match std::fs::read_to_string(&p) {
                Ok(text) if !text.trim().is_empty() => docs.push(Document { domain: "default".into(), path: p, text }),
                _ => skipped.push(p),
            }
        }
    }
    if docs.is_empty() {
        return Err(ProbeError::Invalid(format!("{}: no text files found (expected one subdirectory per domain)", dir.display())));
    }
    Ok((docs, skipped))
}

/// Routing of every token of a corpus, per MoE layer.
#[derive(Clone, Debug, Default)]
pub struct CorpusRouting {
    pub domains: Vec<String>,
    /// Decoder-layer indices of the MoE layers.
    pub layers: Vec<usize>,
    pub top_k: usize,
    pub num_experts: usize,
    pub tokens: Vec<u32>,
    /// Each token decoded on its own (what token classes are computed from).
    pub pieces: Vec<String>,
    /// Domain index per token.
    pub domain: Vec<usize>,
    /// Per MoE layer, `[N × K]` experts and weights.
    pub experts: Vec<Vec<u32>>,
    pub weights: Vec<Vec<f32>>,
    /// Per MoE layer, router entropy (nats) and top-k logit margin per token.
    pub entropy: Vec<Vec<f64>>,
    pub margin: Vec<Vec<f64>>,
    /// Chunk boundaries (token index where each chunk starts), for agreement statistics.
    pub chunk_starts: Vec<usize>,
}

/// Runs the corpus through the model with router capture.
pub fn route_corpus(
    session: &Session,
    docs: &[Document],
    chunk_tokens: usize,
    max_tokens: usize,
    progress: &mut dyn FnMut(Progress) -> bool,
) -> Result<CorpusRouting> {
    let c = session.config();
    let layers: Vec<usize> = (0..c.num_layers).filter(|&l| c.moe(l).is_some()).collect();
    let Some(m) = layers.first().and_then(|&l| c.moe(l)) else {
        return Err(ProbeError::Invalid(format!("{} is a dense model: it has no experts to analyse", session.name)));
    };
    let mut out = CorpusRouting {
        layers: layers.clone(),
        top_k: m.routing.top_k,
        num_experts: m.routing.num_experts,
        experts: vec![vec![]; layers.len()],
        weights: vec![vec![]; layers.len()],
        entropy: vec![vec![]; layers.len()],
        margin: vec![vec![]; layers.len()],
        ..Default::default()
    };
    let chunk = chunk_tokens.clamp(2, c.max_position_embeddings);
    // Tokenise first so progress knows the total.
    let mut work: Vec<(usize, Vec<u32>)> = vec![];
    let mut total = 0usize;
    for d in docs {
        let di = match out.domains.iter().position(|x| x == &d.domain) {
            Some(i) => i,
            None => {
                out.domains.push(d.domain.clone());
                out.domains.len() - 1
            }
        };
        let ids = session.tokenizer.encode(&d.text, true)?;
        for piece in ids.chunks(chunk) {
            if total >= max_tokens || piece.len() < 2 {
                continue;
            }
            let piece = &piece[..piece.len().min(max_tokens - total)];
            total += piece.len();
            work.push((di, piece.to_vec()));
        }
    }
    let started = Instant::now();
    let mut done_tokens = 0usize;
    for (di, ids) in work {
        let el = started.elapsed().as_secs_f64();
        let eta = (done_tokens > 0).then(|| el / done_tokens as f64 * (total - done_tokens) as f64);
        if !progress(Progress { done: done_tokens, total, elapsed_seconds: el, eta_seconds: eta }) {
            return Err(routelab_model::ModelError::Cancelled.into());
        }
        let req = RunRequest::forward(ids.clone(), CaptureSpec::items(&["router"]), Interventions::default());
        let run = session.run(&req, &mut |_| true)?;
        out.chunk_starts.push(out.tokens.len());
        for &token in run.tokens() {
            out.tokens.push(token);
            out.pieces.push(session.tokenizer.decode(&[token], false)?);
            out.domain.push(di);
        }
        for (i, &l) in layers.iter().enumerate() {
            let r = run.store.router(l).ok_or_else(|| ProbeError::Invalid(format!("internal: layer {l}'s routing was not recorded")))?;
            out.experts[i].extend_from_slice(r.experts);
            out.weights[i].extend_from_slice(r.weights);
            out.entropy[i].extend(routing::router_entropy(r.logits, out.num_experts));
            out.margin[i].extend(routing::top_k_margin(r.logits, out.num_experts, out.top_k));
        }
        done_tokens += ids.len();
    }
    progress(Progress { done: total, total, elapsed_seconds: started.elapsed().as_secs_f64(), eta_seconds: Some(0.0) });
    Ok(out)
}

/// One MoE layer's specialization figures.
#[derive(Clone, Debug, Serialize)]
pub struct LayerSpecialization {
    pub layer: usize,
    pub load: Load,
    pub balance: f64,
    /// Each domain's distribution over experts.
    pub domain_distributions: Vec<Vec<f64>>,
    /// Jensen–Shannon divergence (bits) of each domain's distribution from the overall one.
    pub jsd_from_overall: Vec<f64>,
    /// Pairwise JSD between domains (bits).
    pub jsd_pairwise: Vec<Vec<f64>>,
    /// Frequency-weighted vocabulary specialization (tokens seen ≥ 5 times).
    pub vocabulary_specialization: f64,
    /// Per expert: (token, selections, share of that token's routings).
    pub top_tokens: Vec<Vec<(u32, usize, f64)>>,
    pub mi_class_bits: f64,
    pub mi_domain_bits: f64,
    pub agreement: Agreement,
    pub coactivation: Vec<Vec<usize>>,
    pub mean_router_entropy: f64,
    pub mean_margin: f64,
}

/// Token classes of a routed corpus (see the module docs).
pub fn classes(routing: &CorpusRouting, code_domains: &[String]) -> Vec<usize> {
    routing
        .pieces
        .iter()
        .zip(&routing.domain)
        .map(|(p, &d)| token_class(p, code_domains.iter().any(|c| *c == routing.domains[d])))
        .collect()
}

pub fn specialization(routing: &CorpusRouting, classes: &[usize]) -> Vec<LayerSpecialization> {
    let k = routing.top_k;
    let e = routing.num_experts;
    let nd = routing.domains.len();
    routing
        .layers
        .iter()
        .enumerate()
        .map(|(i, &layer)| {
            let experts = &routing.experts[i];
            let load = routing::load(experts, &routing.weights[i], e);
            let dists = spec::label_distributions(&routing.domain, experts, k, nd, e);
            let overall = load.shares();
            let top1 = routing::top1(experts, k);
            // Agreement within chunks only: a chunk's first token has no predecessor.
            let mut agree_top1 = 0.0;
            let mut agree_topk = 0.0;
            let mut pairs = 0.0;
            let bounds: Vec<usize> = routing.chunk_starts.iter().cloned().chain(std::iter::once(routing.tokens.len())).collect();
            for w in bounds.windows(2) {
                let a = routing::consecutive_agreement(&experts[w[0] * k..w[1] * k], k);
                let n = (w[1] - w[0]).saturating_sub(1) as f64;
                agree_top1 += a.top1 * n;
                agree_topk += a.top_k * n;
                pairs += n;
            }
            let tr = spec::token_routing(&routing.tokens, experts, k, e);
            LayerSpecialization {
                layer,
                balance: load.balance(),
                load,
                jsd_from_overall: dists.iter().map(|d| spec::jensen_shannon(d, &overall)).collect(),
                jsd_pairwise: dists.iter().map(|a| dists.iter().map(|b| spec::jensen_shannon(a, b)).collect()).collect(),
                domain_distributions: dists,
                vocabulary_specialization: spec::mean_vocabulary_specialization(&tr, 5),
                top_tokens: spec::top_tokens_per_expert(&tr, e, 10),
                mi_class_bits: spec::mutual_information(classes, &top1),
                mi_domain_bits: spec::mutual_information(&routing.domain, &top1),
                agreement: Agreement { top1: agree_top1 / pairs.max(1.0), top_k: agree_topk / pairs.max(1.0) },
                coactivation: routing::coactivation(experts, k, e),
                mean_router_entropy: routing::mean(&routing.entropy[i]),
                mean_margin: routing::mean(&routing.margin[i]),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_classes_follow_the_documented_rule() {
        assert_eq!(CLASSES[token_class("  ", false)], "whitespace");
        assert_eq!(CLASSES[token_class("", false)], "whitespace");
        assert_eq!(CLASSES[token_class("\n", true)], "whitespace");
        assert_eq!(CLASSES[token_class(" 42", false)], "digits");
        assert_eq!(CLASSES[token_class("3.5", false)], "digits");
        assert_eq!(CLASSES[token_class(" {", true)], "punctuation");
        assert_eq!(CLASSES[token_class("_", true)], "punctuation");
        assert_eq!(CLASSES[token_class("\u{FFFD}", false)], "punctuation");
        assert_eq!(CLASSES[token_class("fn", true)], "code");
        assert_eq!(CLASSES[token_class("x2", true)], "code");
        assert_eq!(CLASSES[token_class(" the", false)], "prose");
    }
}
