//! Activation patching sweeps (causal tracing): a clean and a corrupted prompt of the same
//! length; for each cell of a grid (layer × position, layer × head or layer × expert) one
//! forward of the corrupted prompt with the clean run's activation copied in at that cell
//! ([`routelab_model::patch`]), scored by a metric on the last position's logits.
//!
//! Each cell's score is also given as the share of the clean-vs-corrupted gap it recovers:
//! `(m − m_corrupt) / (m_clean − m_corrupt)` for a logit difference or a probability, and
//! `1 − KL(clean‖patched) / KL(clean‖corrupt)` for the KL metric. 1 means the patch alone
//! restores the clean prediction, 0 that it changes nothing.

use std::time::Instant;

use routelab_model::capture::CaptureSpec;
use routelab_model::hooks::{HookPattern, HookPoint, Quantity};
use routelab_model::interventions::Interventions;
use routelab_model::patch::{source_hook, Patch, Patches};
use routelab_model::session::{RunRecord, RunRequest, Session};
use serde::{Deserialize, Serialize};

use super::ablation::kl_from_logits;
use super::retrieval::Progress;
use crate::error::{ProbeError, Result};
use crate::stats::log_softmax;

/// What each cell patches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SweepSite {
    /// The residual stream after the layer (`layers.{l}.hidden`), per position.
    Resid,
    /// The attention block's output (`layers.{l}.attn.out`), per position.
    Attn,
    /// The feed-forward block's output (`layers.{l}.mlp.out`), per position.
    Mlp,
    /// One head's output (`layers.{l}.attn.head.{h}`), at the sweep's positions together.
    Head,
    /// One expert's weighted output (`layers.{l}.experts.{e}`), at the sweep's positions together.
    Expert,
    /// The shared experts' output (`layers.{l}.shared_expert`), per position.
    Shared,
    /// Arctic's parallel dense MLP's output (`layers.{l}.dense_residual`), per position.
    Dense,
}

impl SweepSite {
    pub const ALL: [SweepSite; 7] =
        [SweepSite::Resid, SweepSite::Attn, SweepSite::Mlp, SweepSite::Head, SweepSite::Expert, SweepSite::Shared, SweepSite::Dense];

    pub fn name(self) -> &'static str {
        match self {
            SweepSite::Resid => "resid",
            SweepSite::Attn => "attn",
            SweepSite::Mlp => "mlp",
            SweepSite::Head => "head",
            SweepSite::Expert => "expert",
            SweepSite::Shared => "shared",
            SweepSite::Dense => "dense",
        }
    }

    pub fn parse(s: &str) -> Result<SweepSite> {
        SweepSite::ALL.into_iter().find(|x| x.name() == s).ok_or_else(|| {
            let names: Vec<&str> = SweepSite::ALL.iter().map(|x| x.name()).collect();
            ProbeError::Invalid(format!("patch site {s:?}: expected one of {}", names.join(", ")))
        })
    }

    /// Whether the grid's columns are positions (else heads or experts).
    pub fn per_position(self) -> bool {
        !matches!(self, SweepSite::Head | SweepSite::Expert)
    }

    /// The hook point of cell (`layer`, `index`): `index` a head or an expert where the
    /// columns are those.
    fn hook(self, layer: usize, index: usize) -> HookPoint {
        match self {
            SweepSite::Resid => HookPoint::layer(layer, Quantity::Hidden),
            SweepSite::Attn => HookPoint::layer(layer, Quantity::AttnOut),
            SweepSite::Mlp => HookPoint::layer(layer, Quantity::MlpOut),
            SweepSite::Head => HookPoint::Head { layer, head: index },
            SweepSite::Expert => HookPoint::Expert { layer, expert: index },
            SweepSite::Shared => HookPoint::SharedExpert { layer },
            SweepSite::Dense => HookPoint::DenseResidual { layer },
        }
    }
}

/// How a patched run is scored, on its last position's logits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Metric {
    /// `logit(answer) − logit(other)`.
    LogitDiff { answer: String, other: String },
    /// `p(answer)`.
    Prob { answer: String },
    /// `KL(clean ‖ patched)` of the next-token distributions (nats).
    Kl,
}

impl Metric {
    /// `logit-diff:A,B`, `prob:A` or `kl`; A and B are token texts (leading spaces count).
    pub fn parse(s: &str) -> Result<Metric> {
        let bad = || ProbeError::Invalid(format!("metric {s:?}: expected logit-diff:ANSWER,OTHER, prob:ANSWER or kl"));
        match s.split_once(':') {
            None if s == "kl" => Ok(Metric::Kl),
            Some(("logit-diff", rest)) => {
                let (a, b) = rest.split_once(',').ok_or_else(bad)?;
                Ok(Metric::LogitDiff { answer: a.to_string(), other: b.to_string() })
            }
            Some(("prob", a)) => Ok(Metric::Prob { answer: a.to_string() }),
            _ => Err(bad()),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Metric::LogitDiff { answer, other } => format!("logit({answer:?}) − logit({other:?})"),
            Metric::Prob { answer } => format!("p({answer:?})"),
            Metric::Kl => "KL(clean ‖ patched)".into(),
        }
    }
}

/// A metric with its tokens resolved.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Scorer {
    LogitDiff(u32, u32),
    Prob(u32),
    Kl,
}

impl Scorer {
    fn new(metric: &Metric, session: &Session) -> Result<Scorer> {
        let token = |text: &str| -> Result<u32> {
            let ids = session.tokenizer.encode(text, false)?;
            match ids.as_slice() {
                [id] => Ok(*id),
                _ => Err(ProbeError::Invalid(format!(
                    "the metric's token {text:?} is {} tokens for this tokenizer; give one token (mind the leading space)",
                    ids.len()
                ))),
            }
        };
        Ok(match metric {
            Metric::LogitDiff { answer, other } => Scorer::LogitDiff(token(answer)?, token(other)?),
            Metric::Prob { answer } => Scorer::Prob(token(answer)?),
            Metric::Kl => Scorer::Kl,
        })
    }

    fn score(self, logits: &[f32], clean: &[f32]) -> f64 {
        let at = |t: u32| logits.get(t as usize).copied().unwrap_or(f32::NAN) as f64;
        match self {
            Scorer::LogitDiff(a, b) => at(a) - at(b),
            Scorer::Prob(a) => log_softmax(logits).get(a as usize).map_or(f64::NAN, |l| l.exp()),
            Scorer::Kl => kl_from_logits(clean, logits),
        }
    }

    /// The share of the clean-vs-corrupt gap a score recovers.
    fn recovered(self, m: f64, clean: f64, corrupt: f64) -> f64 {
        match self {
            Scorer::Kl => 1.0 - m / corrupt,
            _ => (m - corrupt) / (clean - corrupt),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PatchSettings {
    pub site: SweepSite,
    pub metric: Metric,
    /// Layers swept (None: every layer that has the site).
    pub layers: Option<Vec<usize>>,
    /// Positions: the columns of per-position sites, or the positions patched together for
    /// heads and experts (None: every position).
    pub positions: Option<Vec<usize>>,
}

impl Default for PatchSettings {
    fn default() -> Self {
        PatchSettings { site: SweepSite::Resid, metric: Metric::Kl, layers: None, positions: None }
    }
}

/// A finished (or cancelled) sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PatchResult {
    pub site: SweepSite,
    pub metric: Metric,
    /// Row labels' layers.
    pub layers: Vec<usize>,
    /// Column indices: positions, heads or experts.
    pub columns: Vec<usize>,
    /// Column labels (a position's clean and corrupted tokens; `h3`; `e5`).
    pub column_labels: Vec<String>,
    /// The metric per cell, `[layers][columns]`; NaN where a layer lacks the site or the sweep
    /// stopped first (JSON `null`, read back as NaN).
    #[serde(deserialize_with = "crate::json_float::matrix_or_nan")]
    pub values: Vec<Vec<f64>>,
    /// The share of the gap each cell recovers (module docs).
    #[serde(deserialize_with = "crate::json_float::matrix_or_nan")]
    pub recovered: Vec<Vec<f64>>,
    #[serde(deserialize_with = "crate::json_float::f64_or_nan")]
    pub clean_metric: f64,
    #[serde(deserialize_with = "crate::json_float::f64_or_nan")]
    pub corrupt_metric: f64,
    /// Positions patched together in head and expert sweeps.
    pub positions: Vec<usize>,
    pub incomplete: bool,
}

/// Runs one sweep: `clean` and `corrupt` token sequences of the same length.
pub fn sweep(
    session: &Session,
    clean: &[u32],
    corrupt: &[u32],
    settings: &PatchSettings,
    progress: &mut dyn FnMut(Progress) -> bool,
) -> Result<PatchResult> {
    if clean.len() != corrupt.len() {
        return Err(ProbeError::Invalid(format!(
            "the clean prompt is {} tokens and the corrupted one {}: patching copies position by position, so they must be the same length",
            clean.len(),
            corrupt.len()
        )));
    }
    let c = session.config();
    let t = clean.len();
    let site = settings.site;
    let scorer = Scorer::new(&settings.metric, session)?;
    let has_site = |l: usize| {
        let moe = c.moe(l);
        match site {
            SweepSite::Expert => moe.is_some(),
            SweepSite::Shared => moe.and_then(|m| m.shared.as_ref()).is_some(),
            SweepSite::Dense => moe.and_then(|m| m.dense_residual.as_ref()).is_some(),
            _ => true,
        }
    };
    let layers: Vec<usize> = match &settings.layers {
        Some(ls) => {
            if let Some(l) = ls.iter().find(|&&l| l >= c.num_layers) {
                return Err(ProbeError::Invalid(format!("layer {l}: the model has {} layers", c.num_layers)));
            }
            ls.clone()
        }
        None => (0..c.num_layers).filter(|&l| has_site(l)).collect(),
    };
    if layers.is_empty() {
        return Err(ProbeError::Invalid(format!("no layer of this model has the patch site {}", site.name())));
    }
    let positions: Vec<usize> = match &settings.positions {
        Some(ps) => {
            if let Some(p) = ps.iter().find(|&&p| p >= t) {
                return Err(ProbeError::Invalid(format!("position {p}: the prompts have {t} positions")));
            }
            ps.clone()
        }
        None => (0..t).collect(),
    };
    let text = |id: u32| session.tokenizer.decode(&[id], false).unwrap_or_default();
    let (columns, column_labels): (Vec<usize>, Vec<String>) = match site {
        SweepSite::Head => (0..c.attention.num_heads).map(|h| (h, format!("h{h}"))).unzip(),
        SweepSite::Expert => {
            let e = layers.iter().filter_map(|&l| c.moe(l)).map(|m| m.routing.num_experts).max().unwrap_or(0);
            (0..e).map(|e| (e, format!("e{e}"))).unzip()
        }
        _ => positions
            .iter()
            .map(|&p| {
                let label = if clean[p] == corrupt[p] {
                    format!("{p} {:?}", text(clean[p]))
                } else {
                    format!("{p} {:?}→{:?}", text(corrupt[p]), text(clean[p]))
                };
                (p, label)
            })
            .unzip(),
    };

    // The clean run records what the cells copy; both baselines their logits.
    let mut capture = CaptureSpec::none().with("logits");
    for &l in &layers {
        if let Some(h) = source_hook(&site.hook(l, 0)) {
            capture = capture.with(HookPattern::from(h).as_str());
        }
        if site == SweepSite::Expert {
            capture = capture.with(HookPattern::from(HookPoint::layer(l, Quantity::RouterExperts)).as_str());
        }
    }
    let forward = |tokens: &[u32], capture: CaptureSpec, patches: Option<&Patches>| -> Result<RunRecord> {
        let request = RunRequest::forward(tokens.to_vec(), capture, Interventions::default());
        Ok(session.run_patched(&request, patches, &mut |_| true)?)
    };
    let last = |r: &RunRecord| -> Result<Vec<f32>> {
        r.logits_at(t - 1).map(<[f32]>::to_vec).ok_or_else(|| ProbeError::Invalid("a run recorded no logits".into()))
    };
    let clean_run = forward(clean, capture, None)?;
    let clean_logits = last(&clean_run)?;
    let corrupt_logits = last(&forward(corrupt, CaptureSpec::none().with("logits"), None)?)?;
    let clean_metric = scorer.score(&clean_logits, &clean_logits);
    let corrupt_metric = scorer.score(&corrupt_logits, &clean_logits);

    let cells: Vec<(usize, usize)> = layers
        .iter()
        .enumerate()
        .filter(|(_, &l)| has_site(l))
        .flat_map(|(r, &l)| {
            let n = match site {
                SweepSite::Expert => c.moe(l).map_or(0, |m| m.routing.num_experts),
                _ => columns.len(),
            };
            (0..n).map(move |col| (r, col))
        })
        .collect();
    let mut values = vec![vec![f64::NAN; columns.len()]; layers.len()];
    let mut recovered = values.clone();
    let started = Instant::now();
    let mut incomplete = false;
    for (done, &(r, col)) in cells.iter().enumerate() {
        let elapsed = started.elapsed().as_secs_f64();
        let eta = (done > 0).then(|| elapsed / done as f64 * (cells.len() - done) as f64);
        if !progress(Progress { done, total: cells.len(), elapsed_seconds: elapsed, eta_seconds: eta }) {
            incomplete = true;
            break;
        }
        let l = layers[r];
        let items: Vec<Patch> = if site.per_position() {
            vec![Patch::from_store(&clean_run.store, site.hook(l, 0), columns[col]).map_err(ProbeError::Invalid)?]
        } else {
            positions
                .iter()
                .map(|&p| Patch::from_store(&clean_run.store, site.hook(l, columns[col]), p))
                .collect::<std::result::Result<_, _>>()
                .map_err(ProbeError::Invalid)?
        };
        let patches = Patches::new(items, c)?;
        let logits = last(&forward(corrupt, CaptureSpec::none().with("logits"), Some(&patches))?)?;
        let m = scorer.score(&logits, &clean_logits);
        values[r][col] = m;
        recovered[r][col] = scorer.recovered(m, clean_metric, corrupt_metric);
    }
    if !incomplete {
        let elapsed = started.elapsed().as_secs_f64();
        progress(Progress { done: cells.len(), total: cells.len(), elapsed_seconds: elapsed, eta_seconds: Some(0.0) });
    }
    Ok(PatchResult {
        site,
        metric: settings.metric.clone(),
        layers,
        columns,
        column_labels,
        values,
        recovered,
        clean_metric,
        corrupt_metric,
        positions: if site.per_position() { vec![] } else { positions },
        incomplete,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_parse_from_their_cli_form() {
        assert_eq!(Metric::parse("kl").unwrap(), Metric::Kl);
        assert_eq!(Metric::parse("logit-diff: Paris, Rome").unwrap(), Metric::LogitDiff { answer: " Paris".into(), other: " Rome".into() });
        assert_eq!(Metric::parse("prob: 7").unwrap(), Metric::Prob { answer: " 7".into() });
        assert!(Metric::parse("logit-diff:x").is_err());
        assert!(SweepSite::parse("neuron").is_err());
    }

    #[test]
    fn recovery_is_the_share_of_the_gap() {
        let s = Scorer::LogitDiff(0, 1);
        assert_eq!(s.recovered(3.0, 5.0, 1.0), 0.5);
        assert_eq!(Scorer::Kl.recovered(0.5, 0.0, 2.0), 0.75);
    }
}
