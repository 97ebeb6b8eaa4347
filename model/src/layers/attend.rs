//! Scaled dot-product attention with per-head statistics and head interventions.
//!
//! Queries are processed in blocks, so at most `H × block × S` scores exist at once (never the
//! whole `T × T` matrix unless it is asked for). Each block's probabilities yield the head
//! statistics on the spot: entropy `−Σ p ln p` (nats) and the most-attended key position.
//!
//! Grouped-query attention needs no copy of the keys: the queries of the `rep` heads sharing a
//! key/value head are stacked into one matrix, `[Hkv, rep·block, d]`, and multiplied with that
//! head's keys.
//!
//! Head interventions act here: `uniform` replaces a head's probabilities by the uniform
//! distribution over the keys its mask lets it see, before they weight the values; `zero`,
//! `scale` and `mean` edit the head's output (its slice of o_proj's input) afterwards.

use std::cell::RefCell;
use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use crate::error::Result;
use crate::interventions::HeadMethod;

/// Budget of score elements per block (`H × block × S`), 8M f32 = 32 MB.
const BLOCK_ELEMENTS: usize = 8 << 20;

/// Additive masks for one forward call, shared by all layers: built once per distinct sliding
/// window and query block.
pub struct MaskCache {
    /// Absolute position of the first query.
    pub q_start: usize,
    /// Number of queries.
    pub q_len: usize,
    /// Number of keys (cache + new).
    pub k_len: usize,
    device: Device,
    blocks: RefCell<HashMap<(Option<usize>, usize, usize), Option<Tensor>>>,
}

impl MaskCache {
    pub fn new(q_start: usize, q_len: usize, device: &Device) -> Self {
        MaskCache { q_start, q_len, k_len: q_start + q_len, device: device.clone(), blocks: RefCell::new(HashMap::new()) }
    }

    /// `[len, S]` additive mask (0 / −∞) for queries `first..first + len` of this call, or
    /// `None` when every key is visible to every query of the block.
    fn block(&self, window: Option<usize>, first: usize, len: usize) -> Result<Option<Tensor>> {
        let key = (window, first, len);
        if let Some(m) = self.blocks.borrow().get(&key) {
            return Ok(m.clone());
        }
        let s = self.k_len;
        let q_first = self.q_start + first;
        let q_last = q_first + len - 1;
        let causal_needed = q_first + 1 < s;
        let window_needed = window.is_some_and(|w| q_last + 1 > w);
        let mask = if !causal_needed && !window_needed {
            None
        } else {
            let mut m = vec![0f32; len * s];
            for r in 0..len {
                let i = q_first + r;
                for (j, x) in m[r * s..(r + 1) * s].iter_mut().enumerate() {
                    // transformers' sliding_window_overlay: visible iff j > i − W.
                    let visible = j <= i && window.is_none_or(|w| j + w > i);
                    if !visible {
                        *x = f32::NEG_INFINITY;
                    }
                }
            }
            Some(Tensor::from_vec(m, (len, s), &self.device)?)
        };
        self.blocks.borrow_mut().insert(key, mask.clone());
        Ok(mask)
    }
}

pub struct AttendParams<'a> {
    pub scale: f64,
    pub window: Option<usize>,
    pub masks: &'a MaskCache,
    pub edits: &'a [(usize, HeadMethod)],
    pub stats: bool,
    pub keep_probs: bool,
}

pub struct Attended {
    /// `[H, T, dv]`, after head interventions.
    pub out: Tensor,
    /// `[T, H]` f32.
    pub entropy: Option<Tensor>,
    /// `[T, H]` u32.
    pub argmax: Option<Tensor>,
    /// `[H, T, S]` f32.
    pub probs: Option<Tensor>,
}

/// Per-head multipliers and offsets for head interventions.
fn head_vectors(edits: &[(usize, HeadMethod)], heads: usize, dv: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>, bool, bool) {
    let mut keep = vec![1f32; heads]; // multiplies the attention output
    let mut offset = vec![0f32; heads * dv]; // added after (mean)
    let mut uniform = vec![0f32; heads];
    let (mut any_out, mut any_uniform) = (false, false);
    for (h, m) in edits {
        if *h >= heads {
            continue;
        }
        match m {
            HeadMethod::Zero => {
                keep[*h] = 0.0;
                any_out = true;
            }
            HeadMethod::Scale { factor } => {
                keep[*h] *= factor;
                any_out = true;
            }
            HeadMethod::Mean { reference } => {
                keep[*h] = 0.0;
                offset[h * dv..(h + 1) * dv].copy_from_slice(&reference[..dv.min(reference.len())]);
                any_out = true;
            }
            HeadMethod::Uniform => {
                uniform[*h] = 1.0;
                any_uniform = true;
            }
        }
    }
    (keep, offset, uniform, any_out, any_uniform)
}

/// `q` `[H, T, dk]`, `k` `[Hkv, S, dk]`, `v` `[Hkv, S, dv]`; S = positions so far.
pub fn attend(q: &Tensor, k: &Tensor, v: &Tensor, p: &AttendParams) -> Result<Attended> {
    let (heads, t, dk) = q.dims3()?;
    let (kv_heads, s, _) = k.dims3()?;
    let dv = v.dim(2)?;
    let rep = heads / kv_heads;
    let device = q.device();
    let block = (BLOCK_ELEMENTS / (heads * s).max(1)).clamp(1, t.max(1));

    let (keep, offset, uniform, any_out, any_uniform) = head_vectors(p.edits, heads, dv);
    let uniform_sel = if any_uniform {
        let u = Tensor::from_vec(uniform.clone(), (heads, 1, 1), device)?;
        let not_u = Tensor::from_vec(uniform.iter().map(|x| 1.0 - x).collect::<Vec<_>>(), (heads, 1, 1), device)?;
        Some((u, not_u))
    } else {
        None
    };

    let kt = k.t()?;
    let mut outs = Vec::new();
    let (mut ents, mut args, mut probs) = (Vec::new(), Vec::new(), Vec::new());
    let mut first = 0;
    while first < t {
        let len = block.min(t - first);
        let qb = q.narrow(1, first, len)?.contiguous()?.reshape((kv_heads, rep * len, dk))?;
        let scores = (qb.matmul(&kt)? * p.scale)?.reshape((heads, len, s))?;
        let scores = scores.to_dtype(DType::F32)?;
        let mask = p.masks.block(p.window, first, len)?;
        let scores = match &mask {
            Some(m) => scores.broadcast_add(m)?,
            None => scores,
        };
        let mut pr = candle_nn::ops::softmax_last_dim(&scores)?;
        if let Some((u, not_u)) = &uniform_sel {
            // softmax of the 0/−∞ mask is exactly the uniform distribution over visible keys.
            let flat = match &mask {
                Some(m) => candle_nn::ops::softmax_last_dim(m)?,
                None => Tensor::full(1.0 / s as f32, (len, s), device)?,
            };
            pr = (pr.broadcast_mul(not_u)? + flat.unsqueeze(0)?.broadcast_mul(u)?)?;
        }
        if p.stats {
            // One pass over the block (one kernel on CUDA): entropy −Σ p ln p and argmax.
            let (e, a) = routelab_kernels::attn_stats::attn_stats(&pr)?;
            ents.push(e);
            args.push(a);
        }
        let o = pr.to_dtype(v.dtype())?.reshape((kv_heads, rep * len, s))?.matmul(v)?.reshape((heads, len, dv))?;
        outs.push(o);
        if p.keep_probs {
            probs.push(pr);
        }
        first += len;
    }
    let mut out = if outs.len() == 1 { outs.pop().unwrap() } else { Tensor::cat(&outs, 1)? };
    if any_out {
        let keep = Tensor::from_vec(keep, (heads, 1, 1), device)?.to_dtype(out.dtype())?;
        let offset = Tensor::from_vec(offset, (heads, 1, dv), device)?.to_dtype(out.dtype())?;
        out = out.broadcast_mul(&keep)?.broadcast_add(&offset)?;
    }
    let cat1 = |v: Vec<Tensor>| -> Result<Tensor> { Ok(if v.len() == 1 { v.into_iter().next().unwrap() } else { Tensor::cat(&v, 1)? }) };
    Ok(Attended {
        out,
        entropy: if p.stats { Some(cat1(ents)?.t()?.contiguous()?) } else { None },
        argmax: if p.stats { Some(cat1(args)?.t()?.contiguous()?) } else { None },
        probs: if p.keep_probs { Some(cat1(probs)?) } else { None },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t3(v: Vec<f32>, shape: (usize, usize, usize)) -> Tensor {
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn causal_attention_with_stats_matches_a_hand_computed_case() {
        // One head, d = 1, three positions. q = k = [0, 0, ln 3]·1, scale 1, v = [1, 2, 3].
        // Position 0 sees key 0 only: p = [1], out 1, entropy 0.
        // Position 1 sees keys 0, 1 with equal scores: p = [½, ½], out 1.5, entropy ln 2.
        // Position 2: scores q·k = [0, 0, (ln 3)²]; argmax 2.
        let l3 = 3f32.ln();
        let q = t3(vec![0.0, 0.0, l3], (1, 3, 1));
        let k = t3(vec![0.0, 0.0, l3], (1, 3, 1));
        let v = t3(vec![1.0, 2.0, 3.0], (1, 3, 1));
        let masks = MaskCache::new(0, 3, &Device::Cpu);
        let a = attend(&q, &k, &v, &AttendParams { scale: 1.0, window: None, masks: &masks, edits: &[], stats: true, keep_probs: true }).unwrap();
        let out = a.out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let e = (l3 * l3).exp();
        let expect2 = (1.0 + 2.0 + 3.0 * e) / (2.0 + e);
        assert!((out[0] - 1.0).abs() < 1e-6 && (out[1] - 1.5).abs() < 1e-6 && (out[2] - expect2).abs() < 1e-5, "{out:?}");
        let ent = a.entropy.unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(ent[0].abs() < 1e-6 && (ent[1] - 2f32.ln()).abs() < 1e-6, "{ent:?}");
        assert_eq!(a.argmax.unwrap().flatten_all().unwrap().to_vec1::<u32>().unwrap()[2], 2);
        let probs = a.probs.unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(&probs[0..3], &[1.0, 0.0, 0.0]);
    }

    #[test]
    fn uniform_head_averages_visible_values_and_respects_the_window() {
        // Window 2: position 2 sees keys 1, 2 → mean of v = (2 + 3) / 2.
        let q = t3(vec![5.0, -1.0, 2.0], (1, 3, 1));
        let k = t3(vec![1.0, 3.0, -2.0], (1, 3, 1));
        let v = t3(vec![1.0, 2.0, 3.0], (1, 3, 1));
        let masks = MaskCache::new(0, 3, &Device::Cpu);
        let edits = [(0, HeadMethod::Uniform)];
        let a = attend(&q, &k, &v, &AttendParams { scale: 1.0, window: Some(2), masks: &masks, edits: &edits, stats: false, keep_probs: false }).unwrap();
        let out = a.out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(out, vec![1.0, 1.5, 2.5]);
    }

    #[test]
    fn grouped_query_heads_share_their_key_value_head() {
        // Two query heads, one kv head. Head 1 is zeroed, head 0 scaled by 2.
        let q = t3(vec![0.0, 0.0], (2, 1, 1));
        let k = t3(vec![0.0], (1, 1, 1));
        let v = t3(vec![4.0], (1, 1, 1));
        let masks = MaskCache::new(0, 1, &Device::Cpu);
        let edits = [(1, HeadMethod::Zero), (0, HeadMethod::Scale { factor: 2.0 })];
        let a = attend(&q, &k, &v, &AttendParams { scale: 1.0, window: None, masks: &masks, edits: &edits, stats: false, keep_probs: false }).unwrap();
        assert_eq!(a.out.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![8.0, 0.0]);
    }
}
