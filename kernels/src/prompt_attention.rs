//! A prompt's causal attention on the CPU, one block of queries at a time from scores to
//! output: a block's scores are computed, turned into probabilities in place and multiplied
//! with the values while they are still in the core's cache, and no `[H, T, S]` matrix exists.
//!
//! A block is the queries `first..first + len` of the `rep` heads that share one kv head,
//! stacked into `rep · len` rows, so grouped-query attention reads each kv head's packed keys
//! and values once per block. Blocks are independent; each thread takes the costliest block
//! left (later queries see more keys), and within a block the products run on the calling
//! thread ([`crate::matmul`]'s tiles, the same summation order as everywhere else).
//!
//! Keys come packed as a weight `[S, dk]` and values transposed, `[dv, S]`: a block's scores
//! are `Q Kᵀ` over the keys up to its last query, its output `P V` over the same prefix.

use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::matmul::{matmul_t_serial, PackedWeight};
use crate::slices::with_f32_slice;
use crate::softmax::{rows, Causal};

/// Scores per block at most (`rep · len · S`): 1 MiB of f32, which stays in L2 beside the
/// tiles that fill and drain it.
const BLOCK_SCORES: usize = 256 << 10;

/// Queries per block at most.
const MAX_BLOCK: usize = 64;

/// `y`, written by blocks that own disjoint rows.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: each block writes only its own (head, query) rows.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// The pointer, through `&self` so closures capture the `Sync` wrapper, not its field.
    fn at(&self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// Queries `q` `[H, T, dk]` f32 on the CPU, at absolute positions `c.q_first..c.q_first + T`;
/// `keys[g]` `[S, dk]` and `values[g]` `[dv, S]` (transposed) per kv head `g`, heads
/// `g · rep..(g + 1) · rep` sharing it. Returns the output `[H, T, dv]` and, with `c.stats`,
/// each query's head statistics `[H, T, 4]` (see [`crate::softmax`]).
pub fn prompt_attention(
    q: &Tensor,
    keys: &[PackedWeight],
    values: &[PackedWeight],
    c: &Causal,
) -> candle_core::Result<(Tensor, Option<Tensor>)> {
    let (heads, t, dk) = q.dims3()?;
    let kv_heads = keys.len();
    let s = keys.first().map_or(0, PackedWeight::out_dim);
    let dv = values.first().map_or(0, PackedWeight::out_dim);
    let fits = kv_heads > 0
        && heads % kv_heads == 0
        && values.len() == kv_heads
        && keys.iter().all(|k| k.out_dim() == s && k.in_dim() == dk)
        && values.iter().all(|v| v.out_dim() == dv && v.in_dim() == s)
        && c.q_first + t <= s;
    if !fits {
        candle_core::bail!(
            "prompt_attention: queries [{heads}, {t}, {dk}] at {} do not fit {kv_heads} kv heads of keys [{s}, {dk}] and values [{dv}, {s}]",
            c.q_first
        );
    }
    let rep = heads / kv_heads;
    let len = (BLOCK_SCORES / (rep * s).max(1)).clamp(1, MAX_BLOCK).min(t.max(1));
    let blocks = t.div_ceil(len);
    // (kv head, block), costliest first: a block's work grows with the keys it sees.
    let mut units: Vec<(usize, usize)> = (0..kv_heads).flat_map(|g| (0..blocks).map(move |b| (g, b))).collect();
    units.sort_by_key(|&(g, b)| (std::cmp::Reverse(b), g));
    let next = AtomicUsize::new(0);

    let mut out = Vec::<f32>::with_capacity(heads * t * dv);
    let mut stats = vec![0f32; if c.stats.is_some() { heads * t * 4 } else { 0 }];
    let (o, st) = (Shared(out.as_mut_ptr()), Shared(stats.as_mut_ptr()));
    with_f32_slice(q, "prompt_attention", |q| {
        let workers = rayon::current_num_threads().min(units.len()).max(1);
        (0..workers).into_par_iter().for_each(|_| {
            let mut xq = vec![0f32; rep * len * dk];
            let mut sc = vec![0f32; rep * len * s];
            let mut ob = vec![0f32; rep * len * dv];
            let mut bst = vec![0f32; if c.stats.is_some() { rep * len * 4 } else { 0 }];
            while let Some(&(g, b)) = units.get(next.fetch_add(1, Ordering::Relaxed)) {
                let first = b * len;
                let n = len.min(t - first);
                let rows_n = rep * n;
                let seen = (c.q_first + first + n).min(s);
                for h in 0..rep {
                    let src = &q[((g * rep + h) * t + first) * dk..][..n * dk];
                    xq[h * n * dk..(h + 1) * n * dk].copy_from_slice(src);
                }
                let sc = &mut sc[..rows_n * seen];
                matmul_t_serial(&xq[..rows_n * dk], rows_n, &keys[g].prefix(seen, dk), sc);
                let block = Causal { q_first: c.q_first + first, ..*c };
                let bst = &mut bst[..if c.stats.is_some() { rows_n * 4 } else { 0 }];
                // SAFETY: sc holds rows_n rows of `seen` scores, bst 4 per row with stats.
                unsafe { rows(sc.as_ptr(), sc.as_mut_ptr(), rows_n, seen, n, 0, &block, bst) };
                matmul_t_serial(sc, rows_n, &values[g].prefix(dv, seen), &mut ob[..rows_n * dv]);
                for h in 0..rep {
                    let at = (g * rep + h) * t + first;
                    // SAFETY: rows at..at + n of head g·rep + h belong to this block alone, and
                    // lie within out [H, T, dv] and stats [H, T, 4].
                    unsafe {
                        std::ptr::copy_nonoverlapping(ob[h * n * dv..].as_ptr(), o.at(at * dv), n * dv);
                        if c.stats.is_some() {
                            std::ptr::copy_nonoverlapping(bst[h * n * 4..].as_ptr(), st.at(at * 4), n * 4);
                        }
                    }
                }
            }
        });
    })?;
    // SAFETY: the blocks cover every (head, query) row, and each wrote its dv outputs.
    unsafe { out.set_len(heads * t * dv) };
    let out = Tensor::from_vec(out, (heads, t, dv), &Device::Cpu)?;
    let stats = if c.stats.is_some() { Some(Tensor::from_vec(stats, (heads, t, 4), &Device::Cpu)?) } else { None };
    Ok((out, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::softmax::causal_softmax;

    fn tensor(v: Vec<f32>, shape: (usize, usize, usize)) -> Tensor {
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Against scores, [`causal_softmax`] and a weighted sum of the values in f64, per head.
    #[test]
    fn matches_softmax_and_a_weighted_sum_in_f64() {
        // (heads, kv heads, queries, cached keys before them, dk, dv, window)
        for (heads, kv, t, past, dk, dv, window) in
            [(2, 2, 16, 0, 8, 8, None), (6, 2, 150, 0, 64, 64, None), (4, 1, 70, 33, 40, 24, Some(17)), (3, 3, 1, 5, 16, 16, None)]
        {
            let s = past + t;
            let q = crate::test_values::values(heads * t * dk, 1);
            let k = crate::test_values::values(kv * s * dk, 2);
            let v = crate::test_values::values(kv * s * dv, 3);
            let keys: Vec<PackedWeight> = (0..kv).map(|g| PackedWeight::from_f32(&k[g * s * dk..][..s * dk], s, dk)).collect();
            let values: Vec<PackedWeight> = (0..kv).map(|g| PackedWeight::from_f32_transposed(&v[g * s * dv..][..s * dv], s, dv)).collect();
            let c = Causal { scale: 0.3, q_first: past, window, stats: Some((1, 4)) };
            let (out, stats) = prompt_attention(&tensor(q.clone(), (heads, t, dk)), &keys, &values, &c).unwrap();
            let out = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let stats = stats.unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let rep = heads / kv;
            for h in 0..heads {
                let g = h / rep;
                let scores: Vec<f32> = (0..t)
                    .flat_map(|i| (0..s).map(move |j| (i, j)))
                    .map(|(i, j)| (0..dk).map(|d| q[(h * t + i) * dk + d] as f64 * k[(g * s + j) * dk + d] as f64).sum::<f64>() as f32)
                    .collect();
                let (p, want_stats) = causal_softmax(&tensor(scores, (1, t, s)), 0.3, past, window, Some((1, 4))).unwrap();
                let p = p.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let want_stats = want_stats.unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                for i in 0..t {
                    for e in 0..dv {
                        let want: f64 = (0..s).map(|j| p[i * s + j] as f64 * v[(g * s + j) * dv + e] as f64).sum();
                        let got = out[(h * t + i) * dv + e] as f64;
                        assert!(
                            (got - want).abs() <= 1e-4,
                            "head {h} query {i} [{e}] of {heads}/{kv} heads, {t} + {past}: {got} vs {want}"
                        );
                    }
                    let (got, want) = (&stats[(h * t + i) * 4..][..4], &want_stats[i * 4..][..4]);
                    for col in [0, 2, 3] {
                        assert!(
                            (got[col] - want[col]).abs() <= 1e-4 * (1.0 + want[col].abs()),
                            "head {h} query {i} stat {col}: {got:?} vs {want:?}"
                        );
                    }
                    assert_eq!(got[1], want[1], "head {h} query {i}: argmax");
                }
            }
        }
    }

    #[test]
    fn refuses_shapes_that_do_not_fit() {
        let keys = vec![PackedWeight::from_f32(&[0.0; 4 * 8], 4, 8)];
        let values = vec![PackedWeight::from_f32_transposed(&[0.0; 4 * 8], 4, 8)];
        let c = Causal { scale: 1.0, q_first: 0, window: None, stats: None };
        // Five queries but four keys; and heads not a multiple of the kv heads below.
        let q = Tensor::zeros((1, 5, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(prompt_attention(&q, &keys, &values, &c).unwrap_err().to_string().contains("do not fit"));
        let q = Tensor::zeros((1, 4, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(prompt_attention(&q, &[keys[0].clone(), keys[0].clone()], &[values[0].clone(), values[0].clone()], &c).is_err());
    }
}
