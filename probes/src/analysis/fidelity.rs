//! Routing fidelity: the same model in two settings (f32 against bf16, CPU against CUDA, a GGUF
//! quant against f32) routes the same prompts; how often does the second select other experts,
//! and how does that depend on how close the first's decision was (its routing margin)?
//!
//! For each prompt, run `a` generates greedily with router and margin capture; run `b`
//! generates greedily too (where the two texts part), then reads a's tokens teacher-forced, so
//! each position's routing is compared at the same context. A position flips in a layer when
//! b's top-k set differs from a's there; flips are counted per layer and per bin of a's margin.

use routelab_model::capture::CaptureSpec;
use routelab_model::hooks::Quantity;
use routelab_model::interventions::Interventions;
use routelab_model::sampling::SamplingSettings;
use routelab_model::session::{Prompt, RunRequest, Session};
use routelab_model::ModelError;
use serde::{Deserialize, Serialize};

use crate::error::{ProbeError, Result};
use crate::jobs::{Cancel, Progress};

/// Upper edges of the margin bins (the last bin is open): near ties first.
pub const MARGIN_EDGES: &[f64] = &[1e-4, 1e-3, 1e-2, 1e-1];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FidelitySettings {
    pub prompts: Vec<Prompt>,
    pub max_new_tokens: usize,
}

/// One prompt in both settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptFidelity {
    pub prompt: String,
    /// a's tokens (prompt and generated): the positions compared.
    pub positions: usize,
    pub prompt_tokens: usize,
    /// First position where b's own greedy text differs from a's (None: the same tokens).
    pub texts_part_at: Option<usize>,
    pub a_text: String,
    pub b_text: String,
}

/// Flips in one margin bin of one layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MarginBin {
    /// a's margin in `[from, to)`.
    pub from: f64,
    pub to: f64,
    pub positions: usize,
    pub flips: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerFidelity {
    pub layer: usize,
    pub positions: usize,
    pub flips: usize,
    pub bins: Vec<MarginBin>,
}

impl LayerFidelity {
    pub fn flip_rate(&self) -> f64 {
        self.flips as f64 / self.positions.max(1) as f64
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FidelityReport {
    /// The first setting's model.
    pub model: String,
    /// What each setting is (device, dtype, and the model when they differ).
    pub a: String,
    pub b: String,
    pub prompts: Vec<PromptFidelity>,
    pub layers: Vec<LayerFidelity>,
}

/// The bin of `margin` (infinite margins, where nothing was left out, in the open last bin).
pub fn bin_of(margin: f64) -> usize {
    MARGIN_EDGES.iter().position(|&e| margin < e).unwrap_or(MARGIN_EDGES.len())
}

fn empty_bins() -> Vec<MarginBin> {
    (0..=MARGIN_EDGES.len())
        .map(|i| MarginBin {
            from: if i == 0 { 0.0 } else { MARGIN_EDGES[i - 1] },
            to: MARGIN_EDGES.get(i).copied().unwrap_or(f64::INFINITY),
            positions: 0,
            flips: 0,
        })
        .collect()
}

/// Runs every prompt in both sessions (`a_name`, `b_name` say what the settings are).
pub fn routing_fidelity(
    a: &Session,
    b: &Session,
    names: (&str, &str),
    settings: &FidelitySettings,
    progress: &mut dyn FnMut(Progress),
    cancel: &Cancel,
) -> Result<FidelityReport> {
    let (ca, cb) = (a.config(), b.config());
    let moe: Vec<usize> = (0..ca.num_layers).filter(|&l| ca.moe(l).is_some()).collect();
    if moe.is_empty() {
        return Err(ProbeError::Invalid(format!("{} is a dense model: it has no routing to compare", a.name)));
    }
    if ca.num_layers != cb.num_layers || ca.vocab_size != cb.vocab_size || moe.iter().any(|&l| cb.moe(l).is_none()) {
        return Err(ProbeError::Invalid(format!(
            "{} and {} are not the same model ({} and {} layers, vocabularies of {} and {})",
            names.0, names.1, ca.num_layers, cb.num_layers, ca.vocab_size, cb.vocab_size
        )));
    }
    let mut layers: Vec<LayerFidelity> =
        moe.iter().map(|&layer| LayerFidelity { layer, positions: 0, flips: 0, bins: empty_bins() }).collect();
    let mut prompts = vec![];
    let started = std::time::Instant::now();
    let total = settings.prompts.len();
    let mut report = |done: usize| {
        let elapsed_seconds = started.elapsed().as_secs_f64();
        let eta_seconds = (done > 0).then(|| elapsed_seconds / done as f64 * (total - done) as f64);
        progress(Progress { done, total, elapsed_seconds, eta_seconds })
    };
    for (i, prompt) in settings.prompts.iter().enumerate() {
        report(i);
        if cancel.is_cancelled() {
            return Err(ModelError::Cancelled.into());
        }
        let tokens = a.encode(prompt)?;
        if b.encode(prompt)? != tokens {
            return Err(ProbeError::Invalid(format!(
                "{} and {} tokenize {:?} differently: their tokenizers are not the same",
                names.0,
                names.1,
                prompt.display()
            )));
        }
        let generate = |s: &Session, capture: CaptureSpec| {
            let req = RunRequest {
                tokens: tokens.clone(),
                max_new_tokens: settings.max_new_tokens,
                sampling: SamplingSettings::default(),
                capture,
                interventions: Interventions::default(),
                stop_at_eos: true,
                replay: None,
            };
            s.run(&req, &mut |_| !cancel.is_cancelled())
        };
        let ra = generate(a, CaptureSpec::items(&["router", "margin"]))?;
        let rb_free = generate(b, CaptureSpec::none())?;
        let ta = ra.store.tokens().to_vec();
        let texts_part_at = (0..ta.len().min(rb_free.store.len())).find(|&p| ta[p] != rb_free.store.tokens()[p]).or_else(|| {
            // One stopped earlier (end of sequence): they part where the shorter ends.
            (ta.len() != rb_free.store.len()).then(|| ta.len().min(rb_free.store.len()))
        });
        let rb = b.run(&RunRequest::forward(ta.clone(), CaptureSpec::items(&["router"]), Interventions::default()), &mut |_| true)?;
        for lf in layers.iter_mut() {
            let (Some(xa), Some(xb), Some(margin)) =
                (ra.store.router(lf.layer), rb.store.router(lf.layer), ra.store.layer_f32(lf.layer, Quantity::RouterMargin))
            else {
                return Err(ProbeError::Invalid(format!("layer {} recorded no routing", lf.layer)));
            };
            for (p, &m) in margin.iter().enumerate().take(ta.len()) {
                let flipped = crate::stats::routing::selection_changed(xa.experts_at(p), xb.experts_at(p));
                let bin = &mut lf.bins[bin_of(m as f64)];
                bin.positions += 1;
                lf.positions += 1;
                if flipped {
                    bin.flips += 1;
                    lf.flips += 1;
                }
            }
        }
        prompts.push(PromptFidelity {
            prompt: prompt.display(),
            positions: ta.len(),
            prompt_tokens: tokens.len(),
            texts_part_at,
            a_text: ra.text,
            b_text: rb_free.text,
        });
    }
    report(total);
    Ok(FidelityReport { model: a.name.clone(), a: names.0.to_string(), b: names.1.to_string(), prompts, layers })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margins_fall_in_their_bins() {
        assert_eq!(bin_of(0.0), 0);
        assert_eq!(bin_of(0.99e-4), 0);
        assert_eq!(bin_of(1e-4), 1);
        assert_eq!(bin_of(0.05), 3);
        assert_eq!(bin_of(0.5), 4);
        assert_eq!(bin_of(f64::INFINITY), 4);
        let bins = empty_bins();
        assert_eq!(bins.len(), MARGIN_EDGES.len() + 1);
        assert_eq!((bins[0].from, bins[0].to, bins[4].from), (0.0, 1e-4, 1e-1));
    }
}
