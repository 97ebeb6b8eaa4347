//! Scaled dot-product attention with per-head statistics and head interventions.
//!
//! Head statistics, per head and query: entropy `−Σ p ln p` (nats), the most-attended key
//! position, the mass on key 0 (the attention sink) and the mass on a chosen key span.
//!
//! On CUDA, unless full probabilities are asked for, attention is one fused kernel
//! ([`routelab_kernels::attention_op`]) that streams keys through an online softmax and computes
//! the statistics on the way: no score matrix exists at all, and a layer costs one launch.
//! Elsewhere (the CPU reference path, and CUDA when probabilities are kept) queries are processed
//! in blocks, so at most `H × block × S` scores exist at once (never the whole `T × T` matrix
//! unless it is asked for), and each block's probabilities yield the statistics on the spot.
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

use routelab_kernels::attention_op::{attention_with_stats, AttentionStats, MAX_HEADS, MAX_HEAD_DIM};
use routelab_kernels::matmul::{matmul_t_batched, PackedWeight};
use routelab_kernels::prompt_attention::prompt_attention;
use routelab_kernels::softmax::{causal_softmax, Causal};

use crate::capture::HeadStats;
use crate::error::Result;
use crate::interventions::HeadMethod;

/// Budget of score elements per block (`H × block × S`), 8M f32 = 32 MB.
const BLOCK_ELEMENTS: usize = 8 << 20;

/// Queries per block when scores stop at each block's last query (no probabilities kept).
const CAUSAL_BLOCK: usize = 64;

/// Queries from which a CPU call packs its keys and values (see [`attend`]).
const PACKED_KV_QUERIES: usize = 16;

/// A mask block: (sliding window, first query of the block, queries in it).
type MaskKey = (Option<usize>, usize, usize);

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
    blocks: RefCell<HashMap<MaskKey, Option<Tensor>>>,
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
    /// Key positions `[start, end)` whose attention mass is reported in [`Attended::span`];
    /// empty for none.
    pub span: (usize, usize),
    /// Take the fused kernel's path on the CPU too (its CPU reference instead of the block
    /// path), to check the GPU path's code without a GPU.
    pub fused: bool,
}

pub struct Attended {
    /// `[H, T, dv]`, after head interventions.
    pub out: Tensor,
    /// Entropy, argmax, sink and span per head and query (when `stats`).
    pub stats: Option<HeadStats>,
    /// `[H, T, S]` f32.
    pub probs: Option<Tensor>,
}

/// One layer's head interventions as per-head vectors: `out · keep + offset` after attention
/// (zero, scale, mean), and which heads attend uniformly.
struct HeadEdits {
    /// Multiplies each head's output.
    keep: Vec<f32>,
    /// Added to each head's output after `keep` (`mean`), `[H × dv]`.
    offset: Vec<f32>,
    /// 1 for a uniform head.
    uniform: Vec<f32>,
    /// Some head's output is edited.
    any_out: bool,
    /// Some head attends uniformly.
    any_uniform: bool,
}

impl HeadEdits {
    fn new(edits: &[(usize, HeadMethod)], heads: usize, dv: usize) -> Self {
        let mut e = HeadEdits {
            keep: vec![1f32; heads],
            offset: vec![0f32; heads * dv],
            uniform: vec![0f32; heads],
            any_out: false,
            any_uniform: false,
        };
        for (h, m) in edits {
            if *h >= heads {
                continue;
            }
            match m {
                HeadMethod::Zero => e.keep[*h] = 0.0,
                HeadMethod::Scale { factor } => e.keep[*h] *= factor,
                HeadMethod::Mean { reference } => {
                    e.keep[*h] = 0.0;
                    e.offset[h * dv..(h + 1) * dv].copy_from_slice(&reference[..dv.min(reference.len())]);
                }
                HeadMethod::Uniform => {
                    e.uniform[*h] = 1.0;
                    e.any_uniform = true;
                    continue;
                }
            }
            e.any_out = true;
        }
        e
    }

    /// The `zero`, `scale` and `mean` head interventions applied to `out` `[H, T, dv]`.
    fn apply(&self, out: Tensor) -> Result<Tensor> {
        if !self.any_out {
            return Ok(out);
        }
        let (heads, _, dv) = out.dims3()?;
        let keep = Tensor::from_vec(self.keep.clone(), (heads, 1, 1), out.device())?.to_dtype(out.dtype())?;
        let offset = Tensor::from_vec(self.offset.clone(), (heads, 1, dv), out.device())?.to_dtype(out.dtype())?;
        Ok(out.broadcast_mul(&keep)?.broadcast_add(&offset)?)
    }
}

/// `q` `[H, T, dk]`, `k` `[Hkv, S, dk]`, `v` `[Hkv, S, dv]`; S = positions so far.
pub fn attend(q: &Tensor, k: &Tensor, v: &Tensor, p: &AttendParams) -> Result<Attended> {
    let (heads, t, dk) = q.dims3()?;
    let (kv_heads, s, _) = k.dims3()?;
    let dv = v.dim(2)?;
    let rep = heads / kv_heads;
    let device = q.device();
    let block = (BLOCK_ELEMENTS / (heads * s).max(1)).clamp(1, t.max(1));

    // The kernel's limits (head dims, heads, one dtype); any other shape takes the block path.
    let fits = dk <= MAX_HEAD_DIM && dv <= MAX_HEAD_DIM && heads <= MAX_HEADS && q.dtype() == k.dtype() && k.dtype() == v.dtype();
    if (device.is_cuda() || p.fused) && !p.keep_probs && fits {
        return attend_fused(q, k, v, p);
    }
    let head_edits = HeadEdits::new(p.edits, heads, dv);
    let uniform_sel = if head_edits.any_uniform {
        let u = Tensor::from_vec(head_edits.uniform.clone(), (heads, 1, 1), device)?;
        let not_u = Tensor::from_vec(head_edits.uniform.iter().map(|x| 1.0 - x).collect::<Vec<_>>(), (heads, 1, 1), device)?;
        Some((u, not_u))
    } else {
        None
    };

    let kt = k.t()?;
    // A CPU prompt in f32: each kv head's keys, and its values transposed, packed once for
    // the call, so scores and outputs run on routelab_kernels::matmul (causal blocks take
    // prefixes). Decode reads the cache once anyway: packing it would double that.
    let packed_kv = if device.is_cpu() && t >= PACKED_KV_QUERIES && [q.dtype(), k.dtype(), v.dtype()].iter().all(|&d| d == DType::F32) {
        let keys = (0..kv_heads).map(|g| Ok(PackedWeight::pack(&k.get(g)?)?)).collect::<Result<Vec<_>>>()?;
        let values = (0..kv_heads)
            .map(|g| Ok(PackedWeight::from_f32_transposed(&v.get(g)?.flatten_all()?.to_vec1::<f32>()?, s, dv)))
            .collect::<Result<Vec<_>>>()?;
        Some((keys, values))
    } else {
        None
    };
    // The scores of a plain prompt (nor kept, nor replaced by uniform heads) need never exist
    // whole: one pass per block of queries, statistics on the way.
    if let (Some((keys, values)), false, None) = (&packed_kv, p.keep_probs, &uniform_sel) {
        let causal = Causal { scale: p.scale as f32, q_first: p.masks.q_start, window: p.window, stats: p.stats.then_some(p.span) };
        let (out, stats) = prompt_attention(q, keys, values, &causal)?;
        return Ok(Attended {
            out: head_edits.apply(out)?,
            stats: stats.map(|packed| HeadStats { packed, has_span: span_within(p.span, s).is_some() }),
            probs: None,
        });
    }
    let (mut outs, mut stats, mut probs) = (Vec::new(), Vec::new(), Vec::new());
    // Causal blocks: a block's queries see no key after its last one, so its scores stop
    // there (half the work of a prompt, in blocks of CAUSAL_BLOCK queries). Kept
    // probabilities are returned over all keys, so then the block spans them all.
    let block = if p.keep_probs { block } else { block.min(CAUSAL_BLOCK) };
    let mut first = 0;
    while first < t {
        let len = block.min(t - first);
        let keys = if p.keep_probs { s } else { (p.masks.q_start + first + len).min(s) };
        let span = span_within(p.span, keys);
        let qb = q.narrow(1, first, len)?.contiguous()?.reshape((kv_heads, rep * len, dk))?;
        let raw = match &packed_kv {
            Some((kp, _)) => matmul_t_batched(&qb, &kp.iter().map(|w| w.prefix(keys, dk)).collect::<Vec<_>>())?,
            None => qb.matmul(&kt.narrow(2, 0, keys)?)?,
        };
        let raw = raw.reshape((heads, len, keys))?;
        let mask = || -> Result<Option<Tensor>> { Ok(p.masks.block(p.window, first, len)?.map(|m| m.narrow(1, 0, keys)).transpose()?) };
        // On the CPU the softmax also yields the statistics (unless uniform heads change the
        // probabilities after it).
        let (mut pr, fused_stats) = if device.is_cpu() && raw.dtype() == DType::F32 {
            let span = (p.stats && uniform_sel.is_none()).then_some(p.span);
            causal_softmax(&raw, p.scale as f32, p.masks.q_start + first, p.window, span)?
        } else {
            let scores = (raw * p.scale)?.to_dtype(DType::F32)?;
            let pr = match mask()? {
                Some(m) => candle_nn::ops::softmax_last_dim(&scores.broadcast_add(&m)?)?,
                None => candle_nn::ops::softmax_last_dim(&scores)?,
            };
            (pr, None)
        };
        if let Some((u, not_u)) = &uniform_sel {
            // softmax of the 0/−∞ mask is exactly the uniform distribution over visible keys.
            let flat = match &mask()? {
                Some(m) => candle_nn::ops::softmax_last_dim(&m.contiguous()?)?,
                None => Tensor::full(1.0 / keys as f32, (len, keys), device)?,
            };
            pr = (pr.broadcast_mul(not_u)? + flat.unsqueeze(0)?.broadcast_mul(u)?)?;
        }
        if let Some(s) = fused_stats {
            stats.push(s);
        } else if p.stats {
            // One pass over the block (one kernel on CUDA): entropy −Σ p ln p and argmax.
            let (e, a) = routelab_kernels::attn_stats::attn_stats(&pr)?;
            let sink = pr.narrow(2, 0, 1)?.squeeze(2)?;
            let span_mass = match span {
                Some((a, n)) => pr.narrow(2, a, n)?.sum(2)?,
                None => sink.zeros_like()?,
            };
            // [H, len, 4], the columns of HeadStats.
            stats.push(Tensor::stack(&[e, a.to_dtype(DType::F32)?, sink, span_mass], 2)?);
        }
        let weights = pr.to_dtype(v.dtype())?.reshape((kv_heads, rep * len, keys))?;
        let o = match &packed_kv {
            Some((_, vp)) => matmul_t_batched(&weights, &vp.iter().map(|w| w.prefix(dv, keys)).collect::<Vec<_>>())?,
            None => weights.matmul(&v.narrow(1, 0, keys)?)?,
        };
        let o = o.reshape((heads, len, dv))?;
        outs.push(o);
        if p.keep_probs {
            probs.push(pr);
        }
        first += len;
    }
    // (cat of one tensor returns it as it is.)
    let out = Tensor::cat(&outs, 1)?;
    let out = head_edits.apply(out)?;
    let cat1 = |v: Vec<Tensor>| Tensor::cat(&v, 1);
    Ok(Attended {
        out,
        stats: if p.stats { Some(HeadStats { packed: cat1(stats)?, has_span: span_within(p.span, s).is_some() }) } else { None },
        probs: if p.keep_probs { Some(cat1(probs)?) } else { None },
    })
}

/// `(start, len)` of the span's part among `s` keys, or `None` when that part is empty.
fn span_within(span: (usize, usize), s: usize) -> Option<(usize, usize)> {
    let (a, b) = (span.0.min(s), span.1.min(s));
    (b > a).then_some((a, b - a))
}

/// The fused path: one kernel computes the output and every statistic; `uniform` heads are
/// handled inside it, the other interventions edit its output as on the block path.
fn attend_fused(q: &Tensor, k: &Tensor, v: &Tensor, p: &AttendParams) -> Result<Attended> {
    let head_edits = HeadEdits::new(p.edits, q.dim(0)?, v.dim(2)?);
    let uniform = head_edits.uniform.iter().map(|&u| u != 0.0).collect();
    let op = AttentionStats { scale: p.scale as f32, window: p.window, span: p.span, uniform };
    let r = attention_with_stats(q, k, v, &op)?;
    let out = head_edits.apply(r.out.to_dtype(v.dtype())?)?;
    let has_span = span_within(p.span, k.dim(1)?).is_some();
    // The kernel's statistics columns are HeadStats' columns: one view, no copy here.
    Ok(Attended { out, stats: p.stats.then(|| HeadStats { packed: r.stats, has_span }), probs: None })
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
        let a = attend(
            &q,
            &k,
            &v,
            &AttendParams {
                scale: 1.0,
                window: None,
                masks: &masks,
                edits: &[],
                stats: true,
                keep_probs: true,
                span: (0, 0),
                fused: false,
            },
        )
        .unwrap();
        let out = a.out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let e = (l3 * l3).exp();
        let expect2 = (1.0 + 2.0 + 3.0 * e) / (2.0 + e);
        assert!((out[0] - 1.0).abs() < 1e-6 && (out[1] - 1.5).abs() < 1e-6 && (out[2] - expect2).abs() < 1e-5, "{out:?}");
        let stats = a.stats.unwrap();
        let ent = stats.entropy().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(ent[0].abs() < 1e-6 && (ent[1] - 2f32.ln()).abs() < 1e-6, "{ent:?}");
        assert_eq!(stats.argmax().unwrap().flatten_all().unwrap().to_vec1::<u32>().unwrap()[2], 2);
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
        let a = attend(
            &q,
            &k,
            &v,
            &AttendParams {
                scale: 1.0,
                window: Some(2),
                masks: &masks,
                edits: &edits,
                stats: false,
                keep_probs: false,
                span: (0, 0),
                fused: false,
            },
        )
        .unwrap();
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
        let a = attend(
            &q,
            &k,
            &v,
            &AttendParams {
                scale: 1.0,
                window: None,
                masks: &masks,
                edits: &edits,
                stats: false,
                keep_probs: false,
                span: (0, 0),
                fused: false,
            },
        )
        .unwrap();
        assert_eq!(a.out.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![8.0, 0.0]);
    }

    /// The fused kernel's reference (routelab-kernels' attention op, two passes per query)
    /// against this block path (matmul, mask, softmax, then statistics): two implementations
    /// of the same attention, over grouped queries, d ≠ dv (as DeepSeek's MLA), a sliding
    /// window, a uniform head, zero/scale edits, a span, and queries after a cache.
    #[test]
    fn block_path_agrees_with_the_fused_reference() {
        let mut x = 12345u64;
        let mut rand = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((x >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
                })
                .collect()
        };
        let (heads, kv, d, dv) = (6, 2, 8, 5);
        for (q_start, t, window) in [(0, 9, None), (0, 9, Some(4)), (7, 3, Some(5)), (11, 1, None)] {
            let s = q_start + t;
            let q = t3(rand(heads * t * d), (heads, t, d));
            let k = t3(rand(kv * s * d), (kv, s, d));
            let v = t3(rand(kv * s * dv), (kv, s, dv));
            let masks = MaskCache::new(q_start, t, &Device::Cpu);
            let edits = [(1, HeadMethod::Uniform), (4, HeadMethod::Zero), (5, HeadMethod::Scale { factor: 0.5 })];
            let span = (2, 6);
            let p = AttendParams { scale: 0.7, window, masks: &masks, edits: &edits, stats: true, keep_probs: false, span, fused: false };
            let a = attend(&q, &k, &v, &p).unwrap();
            let uniform = (0..heads).map(|h| h == 1).collect();
            let r = attention_with_stats(&q, &k, &v, &AttentionStats { scale: 0.7, window, span, uniform }).unwrap();
            let flat = |x: &Tensor| x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let close = |what: &str, x: Vec<f32>, y: Vec<f32>| {
                assert_eq!(x.len(), y.len(), "{what}");
                for (i, (a, b)) in x.iter().zip(&y).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                        "{what} [{i}] (q_start {q_start}, window {window:?}): block {a} fused {b}"
                    );
                }
            };
            // The fused op leaves zero/scale edits to the caller; apply them to compare outputs.
            let factor = Tensor::from_vec(vec![1f32, 1.0, 1.0, 1.0, 0.0, 0.5], (heads, 1, 1), &Device::Cpu).unwrap();
            close("out", flat(&a.out), flat(&r.out.broadcast_mul(&factor).unwrap()));
            let per_query = |x: &Tensor| flat(&x.t().unwrap().contiguous().unwrap());
            let stats = a.stats.as_ref().unwrap();
            close("entropy", flat(&stats.entropy().unwrap()), per_query(&r.entropy().unwrap()));
            close("sink", flat(&stats.sink().unwrap()), per_query(&r.sink().unwrap()));
            close("span", flat(&stats.span().unwrap().unwrap()), per_query(&r.span().unwrap()));
            let arg_block = stats.argmax().unwrap().flatten_all().unwrap().to_vec1::<u32>().unwrap();
            assert_eq!(arg_block, r.argmax().unwrap().t().unwrap().contiguous().unwrap().flatten_all().unwrap().to_vec1::<u32>().unwrap());
        }
    }
}
