//! The attention block: projections, rotary embedding, cache, then [`attend`].
//!
//! Two kinds:
//! - standard multi-head / grouped-query attention, with the family options: q/k/v bias,
//!   q/k RMSNorm per head (Qwen3) or over the whole projection (OLMoE), clamping (DBRX, OLMoE);
//!   q, k and v are one stacked projection whatever the checkpoint stores;
//! - DeepSeek's multi-head latent attention (MLA): q through an optional low-rank bottleneck,
//!   keys and values decompressed from a shared latent `c_kv`, plus one rotary key shared by
//!   all heads. The cache keeps the decompressed per-head keys and values.

use candle_core::{Tensor, D};

use crate::config::{AttentionKind, MlaAttention, ModelConfig, NormConfig, NormKind, QkNorm, StandardAttention};
use crate::error::Result;
use crate::families::layout::{AttnNames, TensorLayout};
use crate::hooks::Quantity;
use crate::layers::attend::{attend, AttendParams};
use crate::layers::context::{LayerCtx, RotaryTables};
use crate::layers::linear::Linear;
use crate::layers::norm::Norm;
use crate::weights::Weights;

#[derive(Clone, Debug)]
enum Projections {
    Standard {
        /// q | k | v rows.
        qkv: Linear,
        q_norm: Option<Norm>,
        k_norm: Option<Norm>,
        spec: StandardAttention,
    },
    Mla {
        q: MlaQuery,
        kv_a: Linear,
        kv_norm: Norm,
        kv_b: Linear,
        spec: MlaAttention,
    },
}

#[derive(Clone, Debug)]
enum MlaQuery {
    Direct(Linear),
    LowRank { a: Linear, norm: Norm, b: Linear },
}

#[derive(Clone, Debug)]
pub struct Attention {
    proj: Projections,
    o: Linear,
    num_heads: usize,
    num_kv_heads: usize,
    scale: f64,
    window: Option<usize>,
}

/// DeepSeek checkpoints lay rotary dimensions out as interleaved pairs; the half-split
/// rotation wants evens then odds. Permutes rows `[offset + i·stride .. + rope]` of a `[rows,
/// in]` weight (or `[rows]` bias) for every block of `stride` rows.
fn deinterleave_rows(t: &Tensor, offset: usize, rope: usize, stride: usize) -> Result<Tensor> {
    let rows = t.dim(0)?;
    let mut order: Vec<u32> = (0..rows as u32).collect();
    for block in 0..rows / stride {
        let base = block * stride + offset;
        for i in 0..rope / 2 {
            order[base + i] = (base + 2 * i) as u32;
            order[base + rope / 2 + i] = (base + 2 * i + 1) as u32;
        }
    }
    let idx = Tensor::from_vec(order, rows, t.device())?;
    Ok(t.index_select(&idx, 0)?)
}

impl Attention {
    pub fn load(w: &Weights, c: &ModelConfig, layout: &TensorLayout, layer: usize) -> Result<Self> {
        let lp = layout.layer_prefix(layer);
        let a = &c.attention;
        let d = c.hidden_size;
        let (h, hkv) = (a.num_heads, a.num_kv_heads);
        let window = c.layers[layer].sliding_window;
        let (proj, o) = match (&a.kind, layout.attn) {
            (AttentionKind::Standard(s), AttnNames::Separate { prefix, q, k, v, o, q_norm, k_norm }) => {
                let p = format!("{lp}.{prefix}");
                let hd = s.head_dim;
                let qkv = Linear::stack(&[
                    Linear::load(w, &format!("{p}.{q}"), d, h * hd, s.qkv_bias)?,
                    Linear::load(w, &format!("{p}.{k}"), d, hkv * hd, s.qkv_bias)?,
                    Linear::load(w, &format!("{p}.{v}"), d, hkv * hd, s.qkv_bias)?,
                ])?;
                let rms = NormConfig { kind: NormKind::Rms, eps: c.norm.eps };
                let (qn, kn) = match s.qk_norm {
                    QkNorm::None => (None, None),
                    QkNorm::PerHead => {
                        (Some(Norm::load(w, &format!("{p}.{q_norm}"), hd, rms)?), Some(Norm::load(w, &format!("{p}.{k_norm}"), hd, rms)?))
                    }
                    QkNorm::Full => (
                        Some(Norm::load(w, &format!("{p}.{q_norm}"), h * hd, rms)?),
                        Some(Norm::load(w, &format!("{p}.{k_norm}"), hkv * hd, rms)?),
                    ),
                };
                let o = Linear::load(w, &format!("{p}.{o}"), h * hd, d, s.o_bias)?;
                (Projections::Standard { qkv, q_norm: qn, k_norm: kn, spec: s.clone() }, o)
            }
            (AttentionKind::Standard(s), AttnNames::Fused { prefix, qkv, o }) => {
                let p = format!("{lp}.{prefix}");
                let hd = s.head_dim;
                let qkv = Linear::load(w, &format!("{p}.{qkv}"), d, (h + 2 * hkv) * hd, s.qkv_bias)?;
                let o = Linear::load(w, &format!("{p}.{o}"), h * hd, d, s.o_bias)?;
                (Projections::Standard { qkv, q_norm: None, k_norm: None, spec: s.clone() }, o)
            }
            (AttentionKind::Mla(m), AttnNames::Mla { prefix }) => {
                let p = format!("{lp}.{prefix}");
                let qk = m.qk_nope_head_dim + m.qk_rope_head_dim;
                // DeepSeek's q_a/kv_a norms use their RMSNorm's default eps 1e-6.
                let rms = NormConfig { kind: NormKind::Rms, eps: 1e-6 };
                let permute = |l: Linear, offset: usize, stride: usize| -> Result<Linear> {
                    if !m.rope_interleaved {
                        return Ok(l);
                    }
                    let weight = deinterleave_rows(&l.rows()?, offset, m.qk_rope_head_dim, stride)?;
                    let bias = l.bias.as_ref().map(|b| deinterleave_rows(b, offset, m.qk_rope_head_dim, stride)).transpose()?;
                    Ok(Linear::new(weight, bias))
                };
                let q = match m.q_lora_rank {
                    None => MlaQuery::Direct(permute(Linear::load(w, &format!("{p}.q_proj"), d, h * qk, false)?, m.qk_nope_head_dim, qk)?),
                    Some(r) => MlaQuery::LowRank {
                        a: Linear::load(w, &format!("{p}.q_a_proj"), d, r, m.bias)?,
                        norm: Norm::load(w, &format!("{p}.q_a_layernorm"), r, rms)?,
                        b: permute(Linear::load(w, &format!("{p}.q_b_proj"), r, h * qk, false)?, m.qk_nope_head_dim, qk)?,
                    },
                };
                let kv_rows = m.kv_lora_rank + m.qk_rope_head_dim;
                let kv_a = permute(Linear::load(w, &format!("{p}.kv_a_proj_with_mqa"), d, kv_rows, m.bias)?, m.kv_lora_rank, kv_rows)?;
                let kv_norm = Norm::load(w, &format!("{p}.kv_a_layernorm"), m.kv_lora_rank, rms)?;
                let kv_b = Linear::load(w, &format!("{p}.kv_b_proj"), m.kv_lora_rank, h * (m.qk_nope_head_dim + m.v_head_dim), false)?;
                let o = Linear::load(w, &format!("{p}.o_proj"), h * m.v_head_dim, d, m.bias)?;
                (Projections::Mla { q, kv_a, kv_norm, kv_b, spec: m.clone() }, o)
            }
            (kind, names) => {
                return Err(crate::error::ModelError::Invalid(format!(
                    "internal: attention kind {kind:?} does not fit tensor layout {names:?}"
                )))
            }
        };
        Ok(Attention { proj, o, num_heads: h, num_kv_heads: hkv, scale: a.softmax_scale, window })
    }

    /// Every projection, for [`Linear::pack`].
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut all = match &mut self.proj {
            Projections::Standard { qkv, .. } => vec![qkv],
            Projections::Mla { q, kv_a, kv_b, .. } => {
                let mut v = match q {
                    MlaQuery::Direct(p) => vec![p],
                    MlaQuery::LowRank { a, b, .. } => vec![a, b],
                };
                v.extend([kv_a, kv_b]);
                v
            }
        };
        all.push(&mut self.o);
        all
    }

    /// Bytes of projection weights one token reads.
    pub fn bytes(&self) -> usize {
        let proj = match &self.proj {
            Projections::Standard { qkv, .. } => qkv.bytes(),
            Projections::Mla { q, kv_a, kv_b, .. } => {
                let q = match q {
                    MlaQuery::Direct(p) => p.bytes(),
                    MlaQuery::LowRank { a, b, .. } => a.bytes() + b.bytes(),
                };
                q + kv_a.bytes() + kv_b.bytes()
            }
        };
        proj + self.o.bytes()
    }

    /// The output projection, `[D, H·dv]` f32, and its bias: head `h` writes
    /// `W[:, h·dv..(h+1)·dv] z_h` into the residual stream.
    pub fn output_projection(&self) -> Result<(Tensor, Option<Tensor>)> {
        Ok((
            self.o.rows()?.to_dtype(candle_core::DType::F32)?,
            self.o.bias.as_ref().map(|b| b.to_dtype(candle_core::DType::F32)).transpose()?,
        ))
    }

    /// `x` `[T, D]` at the positions after what `ctx.cache` holds; returns `[T, D]`, and pushes
    /// the head statistics and probabilities `ctx` asks for.
    pub fn forward(&self, x: &Tensor, ctx: &mut LayerCtx) -> Result<Tensor> {
        let t = x.dim(0)?;
        let (h, hkv) = (self.num_heads, self.num_kv_heads);
        let RotaryTables { rope, cos, sin } = ctx.rotary;
        let (q, k, v) = match &self.proj {
            Projections::Standard { qkv, q_norm, k_norm, spec } => {
                let hd = spec.head_dim;
                let qkv = qkv.forward(x)?;
                let qkv = match spec.clip_qkv {
                    // DBRX clamps the fused projection; OLMoE clamps after its norms (below).
                    Some(c) if q_norm.is_none() => qkv.clamp(-c as f32, c as f32)?,
                    _ => qkv,
                };
                let mut q = qkv.narrow(1, 0, h * hd)?;
                let mut k = qkv.narrow(1, h * hd, hkv * hd)?;
                let mut v = qkv.narrow(1, (h + hkv) * hd, hkv * hd)?;
                if let (QkNorm::Full, Some(qn), Some(kn)) = (spec.qk_norm, q_norm, k_norm) {
                    q = qn.forward(&q)?;
                    k = kn.forward(&k)?;
                    if let Some(c) = spec.clip_qkv {
                        let c = c as f32;
                        q = q.clamp(-c, c)?;
                        k = k.clamp(-c, c)?;
                        v = v.clamp(-c, c)?;
                    }
                }
                let mut q = q.reshape((t, h, hd))?;
                let mut k = k.reshape((t, hkv, hd))?;
                if let (QkNorm::PerHead, Some(qn), Some(kn)) = (spec.qk_norm, q_norm, k_norm) {
                    q = qn.forward(&q)?;
                    k = kn.forward(&k)?;
                }
                let q = rope.apply(&q.transpose(0, 1)?.contiguous()?, cos, sin)?;
                let k = rope.apply(&k.transpose(0, 1)?.contiguous()?, cos, sin)?;
                let v = v.reshape((t, hkv, hd))?.transpose(0, 1)?.contiguous()?;
                (q, k, v)
            }
            Projections::Mla { q, kv_a, kv_norm, kv_b, spec: m } => {
                let (nope, rd, vd) = (m.qk_nope_head_dim, m.qk_rope_head_dim, m.v_head_dim);
                let q = match q {
                    MlaQuery::Direct(p) => p.forward(x)?,
                    MlaQuery::LowRank { a, norm, b } => b.forward(&norm.forward(&a.forward(x)?)?)?,
                };
                let q = q.reshape((t, h, nope + rd))?.transpose(0, 1)?.contiguous()?;
                let q_nope = q.narrow(D::Minus1, 0, nope)?;
                let q_pe = rope.apply(&q.narrow(D::Minus1, nope, rd)?.contiguous()?, cos, sin)?;
                let ckv = kv_a.forward(x)?;
                let latent = kv_norm.forward(&ckv.narrow(1, 0, m.kv_lora_rank)?)?;
                let k_pe = ckv.narrow(1, m.kv_lora_rank, rd)?.reshape((1, t, rd))?;
                let k_pe = rope.apply(&k_pe.contiguous()?, cos, sin)?;
                let kv = kv_b.forward(&latent)?.reshape((t, h, nope + vd))?.transpose(0, 1)?;
                let k_nope = kv.narrow(D::Minus1, 0, nope)?;
                let v = kv.narrow(D::Minus1, nope, vd)?.contiguous()?;
                let k = Tensor::cat(&[&k_nope, &k_pe.broadcast_as((h, t, rd))?], D::Minus1)?;
                let q = Tensor::cat(&[&q_nope, &q_pe], D::Minus1)?;
                (q, k, v)
            }
        };
        let (k_all, v_all) = ctx.cache.append(&k, &v)?;
        let plan = ctx.plan();
        let params = AttendParams {
            scale: self.scale,
            window: self.window,
            masks: ctx.masks,
            edits: &ctx.edits.heads,
            stats: plan.head_stats(),
            keep_probs: plan.wants(Quantity::AttnProbs),
            span: plan.span.unwrap_or((0, 0)),
            fused: ctx.fused_attention,
        };
        let attended = attend(&q, &k_all, &v_all, &params)?;
        if let Some(stats) = &attended.stats {
            ctx.capture.push_head_stats(stats);
        }
        if let Some(probs) = &attended.probs {
            ctx.capture.push(Quantity::AttnProbs, probs);
        }
        let dv = attended.out.dim(2)?;
        let mut per_head = attended.out.transpose(0, 1)?.contiguous()?; // [T, H, dv]
        if let Some(p) = ctx.patch.filter(|p| !p.heads.is_empty()) {
            per_head = crate::patch::replace_heads(per_head, &p.heads, ctx.start)?;
        }
        if plan.wants(Quantity::AttnZ) {
            ctx.capture.push(Quantity::AttnZ, &per_head.to_dtype(candle_core::DType::F32)?);
        }
        let out = self.o.forward(&per_head.reshape((t, h * dv))?)?;
        if ctx.keep_head_outputs {
            ctx.capture.head_outputs = Some(per_head);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn deinterleave_puts_even_rotary_rows_first() {
        // stride 5 = 1 nope row + 4 rope rows; rope rows [a0 b0 a1 b1] → [a0 a1 b0 b1].
        let t = Tensor::from_vec((0..10u32).map(|x| x as f32).collect::<Vec<_>>(), 10, &Device::Cpu).unwrap();
        let p = deinterleave_rows(&t, 1, 4, 5).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(p, vec![0.0, 1.0, 3.0, 2.0, 4.0, 5.0, 6.0, 8.0, 7.0, 9.0]);
    }
}
