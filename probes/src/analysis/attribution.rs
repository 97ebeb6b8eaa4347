//! Direct logit attribution that knows experts, the logit lens, and what each selected expert
//! promotes.
//!
//! The residual stream at the last layer is a sum of what every block wrote into it:
//! `x = embed + Σ_l (Σ_h W_O,h z_h + b_O + Σ_k w_k E_k + shared + dense)` (the dense MLP in
//! place of the experts in dense layers). The logit of token `t` is
//! `W_U[t] · norm(x) + b_U[t]`. The norm is linearised around `x` itself: its scale `s` is
//! frozen at `x`'s (`√(mean(x²) + ε)` for RMSNorm, `√(var(x) + ε)` for LayerNorm), so a
//! component `c` contributes `Σ_i W_U[t,i] g_i c_i / s` (LayerNorm: `c` centred first) and the
//! norm's bias with `b_U[t]` forms one more term. With `s` taken at `x`, the terms sum to the
//! logit exactly, up to float rounding (`Attribution::residual`).
//!
//! The logit lens applies the final norm and the LM head to the residual stream after each
//! layer, as the model does after its last.

use candle_core::Tensor;
use routelab_model::capture::CaptureSpec;
use routelab_model::config::NormKind;
use routelab_model::hooks::Quantity;
use routelab_model::interventions::Interventions;
use routelab_model::layers::norm::NormParameters;
use routelab_model::session::{RunRecord, RunRequest, Session};
use serde::{Deserialize, Serialize};

use crate::error::{ProbeError, Result};
use crate::stats::log_softmax;

/// What wrote a part of the residual stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Component {
    Embed,
    Head {
        layer: usize,
        head: usize,
    },
    /// The attention output projection's bias.
    AttnBias {
        layer: usize,
    },
    /// A dense layer's MLP.
    Mlp {
        layer: usize,
    },
    Expert {
        layer: usize,
        expert: usize,
        weight: f32,
    },
    Shared {
        layer: usize,
    },
    /// Arctic's parallel dense MLP.
    Dense {
        layer: usize,
    },
    /// The final norm's bias and the LM head's bias.
    Bias,
}

impl Component {
    /// Its name: hook-style where there is one (`layers.3.attn.head.2`, `layers.1.experts.5`).
    pub fn label(&self) -> String {
        match self {
            Component::Embed => "embed".into(),
            Component::Head { layer, head } => format!("layers.{layer}.attn.head.{head}"),
            Component::AttnBias { layer } => format!("layers.{layer}.attn.bias"),
            Component::Mlp { layer } => format!("layers.{layer}.mlp"),
            Component::Expert { layer, expert, .. } => format!("layers.{layer}.experts.{expert}"),
            Component::Shared { layer } => format!("layers.{layer}.shared_expert"),
            Component::Dense { layer } => format!("layers.{layer}.dense_residual"),
            Component::Bias => "bias".into(),
        }
    }

    pub fn layer(&self) -> Option<usize> {
        match *self {
            Component::Embed | Component::Bias => None,
            Component::Head { layer, .. }
            | Component::AttnBias { layer }
            | Component::Mlp { layer }
            | Component::Expert { layer, .. }
            | Component::Shared { layer }
            | Component::Dense { layer } => Some(layer),
        }
    }
}

/// One component's contribution to the target's logit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    pub component: Component,
    /// [`Component::label`].
    pub label: String,
    pub value: f32,
}

/// One lens row: what the residual stream after `layer` predicts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LensRow {
    pub layer: usize,
    pub target_logit: f32,
    pub target_prob: f64,
    /// 0 for the top token.
    pub target_rank: usize,
    /// The most probable tokens: (text, probability).
    pub top: Vec<(String, f64)>,
}

/// The tokens one selected expert's output pushes up most through the unembedding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExpertPromotion {
    pub layer: usize,
    pub expert: usize,
    pub weight: f32,
    /// (text, logit contribution), largest first.
    pub top: Vec<(String, f32)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attribution {
    pub position: usize,
    pub target: u32,
    pub target_text: String,
    /// The model's logit of the target at the position.
    pub logit: f32,
    /// The final norm's frozen scale `s`.
    pub scale: f32,
    pub norm: String,
    /// Every component's contribution, in the order it wrote.
    pub components: Vec<Contribution>,
    /// `logit − Σ contributions`: float rounding only.
    pub residual: f32,
    /// The logit lens at the position, one row per layer.
    pub lens: Vec<LensRow>,
    pub promotions: Vec<ExpertPromotion>,
    /// The lens over every position: per layer, the probability it gives the model's final
    /// top token at each position (`[layers][positions]`).
    pub lens_map: Vec<Vec<f64>>,
    /// The model's final top token at each position.
    pub final_tokens: Vec<String>,
    /// The input tokens' texts (the lens map's columns).
    #[serde(default)]
    pub tokens: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AttributionSettings {
    /// Position attributed (None: the last).
    pub position: Option<usize>,
    /// Token attributed, as text (None: the model's top prediction there).
    pub target: Option<String>,
    /// Tokens listed per lens row and per expert.
    pub top: usize,
}

impl Default for AttributionSettings {
    fn default() -> Self {
        AttributionSettings { position: None, target: None, top: 5 }
    }
}

/// The frozen-scale linear map of the final norm followed by the unembedding row `u`:
/// `c ↦ Σ_i u_i g_i (c_i − [LayerNorm] mean(c)) / s`.
pub struct LinearNorm {
    /// `u ⊙ g / s`.
    direction: Vec<f32>,
    centre: bool,
    pub scale: f32,
    /// `u · b` (LayerNorm's bias).
    pub bias: f32,
}

impl LinearNorm {
    /// Around the final residual `x`, for unembedding row `u`.
    pub fn new(norm: &NormParameters, x: &[f32], u: &[f32]) -> LinearNorm {
        let n = x.len().max(1) as f64;
        let centre = matches!(norm.kind, NormKind::Layer { .. });
        let mean = if centre { x.iter().map(|&v| v as f64).sum::<f64>() / n } else { 0.0 };
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let scale = (var + norm.eps as f64).sqrt() as f32;
        let direction = u.iter().zip(&norm.weight).map(|(u, g)| u * g / scale).collect();
        let bias = norm.bias.as_ref().map_or(0.0, |b| b.iter().zip(u).map(|(b, u)| b * u).sum());
        LinearNorm { direction, centre, scale, bias }
    }

    /// A component's contribution.
    pub fn apply(&self, c: &[f32]) -> f32 {
        self.normed(c).iter().sum()
    }
}

/// The capture attribution needs: every block's outputs and the residual stream.
pub fn capture() -> CaptureSpec {
    CaptureSpec::none().with("outputs").with("hidden").with("router").with("logits")
}

/// Attributes `settings.target` at `settings.position` of a forward over `tokens`.
pub fn attribute(session: &Session, tokens: &[u32], settings: &AttributionSettings) -> Result<Attribution> {
    let request = RunRequest::forward(tokens.to_vec(), capture(), Interventions::default());
    let run = session.run(&request, &mut |_| true)?;
    attribute_run(session, &run, settings)
}

fn row(run: &RunRecord, l: usize, q: Quantity, p: usize) -> Option<&[f32]> {
    run.store.row_f32(&routelab_model::hooks::HookPoint::layer(l, q), p)
}

/// [`attribute`] on a run that captured [`capture`].
pub fn attribute_run(session: &Session, run: &RunRecord, settings: &AttributionSettings) -> Result<Attribution> {
    let model = &session.model;
    let c = session.config();
    let t = run.store.len();
    let p = settings.position.unwrap_or(t.saturating_sub(1));
    if p >= t {
        return Err(ProbeError::Invalid(format!("position {p}: the prompt has {t} positions")));
    }
    let missing = |what: String| ProbeError::Invalid(format!("the run did not record {what}, which attribution reads"));
    let logits = run.logits_at(p).ok_or_else(|| missing("logits".into()))?;
    let target = match &settings.target {
        Some(text) => match session.tokenizer.encode(text, false)?.as_slice() {
            [id] => *id,
            ids => {
                return Err(ProbeError::Invalid(format!(
                    "the target {text:?} is {} tokens for this tokenizer; give one token (mind the leading space)",
                    ids.len()
                )))
            }
        },
        None => argmax(logits) as u32,
    };
    let text = |id: u32| session.tokenizer.decode(&[id], false).unwrap_or_default();
    let last = c.num_layers - 1;
    let x = row(run, last, Quantity::Hidden, p).ok_or_else(|| missing(format!("layers.{last}.hidden")))?;
    let (u, b_u) = model.unembedding(&[target])?;
    let u: Vec<f32> = u.flatten_all()?.to_vec1()?;
    let norm = model.final_norm()?;
    let lin = LinearNorm::new(&norm, x, &u);

    let mut components: Vec<Contribution> = vec![];
    let mut add = |component: Component, value: f32| components.push(Contribution { label: component.label(), component, value });
    let embed: Vec<f32> = model.embed(&run.tokens()[p..p + 1])?.flatten_all()?.to_vec1()?;
    add(Component::Embed, lin.apply(&embed));
    for l in 0..c.num_layers {
        let z = row(run, l, Quantity::AttnZ, p).ok_or_else(|| missing(format!("layers.{l}.attn.z")))?;
        let (w_o, b_o) = model.attn_output_projection(l)?;
        let (d, hdv) = w_o.dims2()?;
        let heads = c.attention.num_heads;
        let dv = hdv / heads.max(1);
        let w_o: Vec<f32> = w_o.flatten_all()?.to_vec1()?;
        for h in 0..heads {
            // Head h's write: W_O[:, h·dv..(h+1)·dv] z_h.
            let zh = &z[h * dv..(h + 1) * dv];
            let write: Vec<f32> =
                (0..d).map(|i| w_o[i * hdv + h * dv..i * hdv + (h + 1) * dv].iter().zip(zh).map(|(w, z)| w * z).sum()).collect();
            add(Component::Head { layer: l, head: h }, lin.apply(&write));
        }
        if let Some(b) = b_o {
            add(Component::AttnBias { layer: l }, lin.apply(&b.to_vec1::<f32>()?));
        }
        match c.moe(l) {
            None => {
                let m = row(run, l, Quantity::MlpOut, p).ok_or_else(|| missing(format!("layers.{l}.mlp.out")))?;
                add(Component::Mlp { layer: l }, lin.apply(m));
            }
            Some(moe) => {
                let k = moe.routing.top_k;
                let out = row(run, l, Quantity::ExpertOut, p).ok_or_else(|| missing(format!("layers.{l}.moe.expert_out")))?;
                let ids = run
                    .store
                    .row_u32(&routelab_model::hooks::HookPoint::layer(l, Quantity::RouterExperts), p)
                    .ok_or_else(|| missing(format!("layers.{l}.router.experts")))?;
                let ws = row(run, l, Quantity::RouterWeights, p).ok_or_else(|| missing(format!("layers.{l}.router.weights")))?;
                let d = out.len() / k.max(1);
                for slot in 0..k {
                    let comp = Component::Expert { layer: l, expert: ids[slot] as usize, weight: ws[slot] };
                    add(comp, lin.apply(&out[slot * d..(slot + 1) * d]));
                }
                if moe.shared.is_some() {
                    let s = row(run, l, Quantity::SharedOut, p).ok_or_else(|| missing(format!("layers.{l}.moe.shared_out")))?;
                    add(Component::Shared { layer: l }, lin.apply(s));
                }
                if moe.dense_residual.is_some() {
                    let s = row(run, l, Quantity::DenseOut, p).ok_or_else(|| missing(format!("layers.{l}.moe.dense_out")))?;
                    add(Component::Dense { layer: l }, lin.apply(s));
                }
            }
        }
    }
    add(Component::Bias, lin.bias + b_u[0]);
    let logit = logits[target as usize];
    let residual = logit - components.iter().map(|c| c.value).sum::<f32>();

    // The lens: every layer's residual stream at every position through norm and head.
    let v = c.vocab_size;
    let mut lens = vec![];
    let mut lens_map = vec![];
    let final_top: Vec<usize> = (0..t).map(|q| run.logits_at(q).map_or(0, argmax)).collect();
    // Positions go through the head a block at a time: a whole prompt's `[T, V]` logits per
    // layer would be gigabytes on a large vocabulary.
    const BLOCK: usize = 64;
    for l in 0..c.num_layers {
        let hidden = run
            .store
            .f32(&routelab_model::hooks::HookPoint::layer(l, Quantity::Hidden))
            .ok_or_else(|| missing(format!("layers.{l}.hidden")))?;
        let d = c.hidden_size;
        let mut map_row = Vec::with_capacity(t);
        let mut here: Option<(Vec<f64>, f32)> = None;
        for start in (0..t).step_by(BLOCK) {
            let n = BLOCK.min(t - start);
            let x = Tensor::from_slice(&hidden[start * d..(start + n) * d], (n, d), &candle_core::Device::Cpu)?;
            let rows: Vec<f32> = model.unembed(&x)?.flatten_all()?.to_vec1()?;
            for (i, row) in rows.chunks(v).enumerate() {
                let lp = log_softmax(row);
                map_row.push(lp[final_top[start + i]].exp());
                if start + i == p {
                    here = Some((lp, row[target as usize]));
                }
            }
        }
        lens_map.push(map_row);
        let Some((here, target_logit)) = here else { return Err(ProbeError::Invalid(format!("position {p} has no lens row"))) };
        let target_lp = here[target as usize];
        lens.push(LensRow {
            layer: l,
            target_logit,
            target_prob: target_lp.exp(),
            target_rank: here.iter().filter(|&&x| x > target_lp).count(),
            top: top_k(&here, settings.top).into_iter().map(|(i, x)| (text(i as u32), x.exp())).collect(),
        });
    }

    // What each selected expert pushes up: its linearised write through the whole unembedding.
    let mut promotions = vec![];
    let lin_all = LinearNorm::new(&norm, x, &vec![1.0; c.hidden_size]);
    for l in 0..c.num_layers {
        let Some(moe) = c.moe(l) else { continue };
        let k = moe.routing.top_k;
        let (Some(out), Some(ids), Some(ws)) = (
            row(run, l, Quantity::ExpertOut, p),
            run.store.row_u32(&routelab_model::hooks::HookPoint::layer(l, Quantity::RouterExperts), p),
            row(run, l, Quantity::RouterWeights, p),
        ) else {
            continue;
        };
        let d = out.len() / k.max(1);
        for slot in 0..k {
            let normed = lin_all.normed(&out[slot * d..(slot + 1) * d]);
            let scores: Vec<f32> =
                model.project_to_vocab(&Tensor::from_vec(normed, (1, d), &candle_core::Device::Cpu)?)?.flatten_all()?.to_vec1()?;
            let as_f64: Vec<f64> = scores.iter().map(|&x| x as f64).collect();
            let top = top_k(&as_f64, settings.top).into_iter().map(|(i, x)| (text(i as u32), x as f32)).collect();
            promotions.push(ExpertPromotion { layer: l, expert: ids[slot] as usize, weight: ws[slot], top });
        }
    }
    let kind = match norm.kind {
        NormKind::Rms => "RMSNorm",
        NormKind::Layer { .. } => "LayerNorm",
    };
    Ok(Attribution {
        position: p,
        target,
        target_text: text(target),
        logit,
        scale: lin.scale,
        norm: format!("{kind}, scale frozen at the final residual stream (s = {:.4})", lin.scale),
        components,
        residual,
        lens,
        promotions,
        lens_map,
        final_tokens: final_top.iter().map(|&i| text(i as u32)).collect(),
        tokens: run.tokens().iter().map(|&i| text(i)).collect(),
    })
}

impl LinearNorm {
    /// `direction ⊙ (c − [LayerNorm] mean(c))`; built with `u` all ones, `g ⊙ (c − mean) / s`:
    /// the component as the frozen norm passes it to the head.
    fn normed(&self, c: &[f32]) -> Vec<f32> {
        let mean = if self.centre { c.iter().sum::<f32>() / c.len().max(1) as f32 } else { 0.0 };
        c.iter().zip(&self.direction).map(|(c, d)| (c - mean) * d).collect()
    }
}

fn argmax(xs: &[f32]) -> usize {
    xs.iter().enumerate().fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) }).0
}

/// The `k` largest entries, largest first.
fn top_k(xs: &[f64], k: usize) -> Vec<(usize, f64)> {
    let mut idx: Vec<usize> = (0..xs.len()).collect();
    let k = k.min(xs.len());
    if k == 0 {
        return vec![];
    }
    idx.select_nth_unstable_by(k - 1, |&a, &b| xs[b].total_cmp(&xs[a]));
    idx.truncate(k);
    idx.sort_by(|&a, &b| xs[b].total_cmp(&xs[a]));
    idx.into_iter().map(|i| (i, xs[i])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_linearised_norm_of_the_whole_stream_is_the_norm() {
        // RMSNorm of x = (3, 4) with g = (1, 2), eps 0: s = √((9 + 16) / 2) = √12.5; the head
        // row u = (1, 1) reads g ⊙ x / s = (3, 8) / √12.5.
        let norm = NormParameters { kind: NormKind::Rms, weight: vec![1.0, 2.0], bias: None, eps: 0.0 };
        let lin = LinearNorm::new(&norm, &[3.0, 4.0], &[1.0, 1.0]);
        let want = 11.0 / 12.5f32.sqrt();
        assert!((lin.apply(&[3.0, 4.0]) - want).abs() < 1e-6);
        // Linear: the parts of x add up to the whole.
        assert!((lin.apply(&[3.0, 0.0]) + lin.apply(&[0.0, 4.0]) - want).abs() < 1e-6);
    }

    #[test]
    fn layer_norm_centres_each_component_and_keeps_its_bias_apart() {
        // x = (1, 3): mean 2, var 1, s = 1 (eps 0). g = (1, 1), b = (0.5, 0), u = (2, 1):
        // LN(x) = (-1, 1) + b, u · LN(x) = -2 + 1 + 1 = 0 (bias term u · b = 1).
        let norm = NormParameters { kind: NormKind::Layer { bias: true }, weight: vec![1.0, 1.0], bias: Some(vec![0.5, 0.0]), eps: 0.0 };
        let lin = LinearNorm::new(&norm, &[1.0, 3.0], &[2.0, 1.0]);
        assert!((lin.bias - 1.0).abs() < 1e-6);
        assert!((lin.apply(&[1.0, 3.0]) + lin.bias - 0.0).abs() < 1e-6);
        // A constant component is removed by the centring.
        assert!(lin.apply(&[5.0, 5.0]).abs() < 1e-6);
    }

    #[test]
    fn top_k_lists_the_largest_first() {
        assert_eq!(top_k(&[0.1, 3.0, -1.0, 2.0], 2), vec![(1, 3.0), (3, 2.0)]);
    }
}
