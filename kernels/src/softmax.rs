//! Attention's scaled, causally masked softmax on the CPU: `softmax(scale · s)` over the keys
//! each query may see, zero elsewhere, in one pass per row (rows split across rayon's pool,
//! [`crate::exp`]'s exponential on AVX-512). Replaces scaling, adding a `0 / −∞` mask and a
//! generic softmax: three passes, a mask tensor, and an exponential for every masked key.
//!
//! Query `r` of a block sits at absolute position `i = q_first + r` and sees keys `j ≤ i`, and
//! with a sliding window `W` only `j > i − W` (transformers' sliding-window overlay).

use candle_core::{CpuStorage, Device, Storage, Tensor};
use rayon::prelude::*;

use crate::exp::exp;

/// The keys `[lo, hi)` query position `i` sees among `keys`.
fn visible(i: usize, keys: usize, window: Option<usize>) -> (usize, usize) {
    let hi = (i + 1).min(keys);
    let lo = window.map_or(0, |w| (i + 1).saturating_sub(w)).min(hi);
    (lo, hi)
}

fn row_scalar(src: &[f32], scale: f32, (lo, hi): (usize, usize), out: &mut [f32]) {
    out[..lo].fill(0.0);
    out[hi..].fill(0.0);
    let m = src[lo..hi].iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s * scale));
    let mut sum = 0.0;
    for (o, &s) in out[lo..hi].iter_mut().zip(&src[lo..hi]) {
        *o = exp(s * scale - m);
        sum += *o;
    }
    for o in &mut out[lo..hi] {
        *o /= sum;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn row_avx512(src: &[f32], scale: f32, (lo, hi): (usize, usize), out: &mut [f32]) {
    use crate::exp::x86::exp512;
    use std::arch::x86_64::*;
    out[..lo].fill(0.0);
    out[hi..].fill(0.0);
    let n = hi - lo;
    let (s, o) = (src[lo..hi].as_ptr(), out[lo..hi].as_mut_ptr());
    let lanes = |i: usize| -> __mmask16 { ((1u32 << (n - i).min(16)) - 1) as __mmask16 };
    // SAFETY: every access is masked to the n elements of the row's visible range.
    unsafe {
        let sc = _mm512_set1_ps(scale);
        let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
        for i in (0..n).step_by(16) {
            let v = _mm512_mask_loadu_ps(_mm512_set1_ps(f32::NEG_INFINITY), lanes(i), s.add(i));
            mx = _mm512_max_ps(mx, _mm512_mul_ps(v, sc));
        }
        let m = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
        let mut sum = _mm512_setzero_ps();
        for i in (0..n).step_by(16) {
            let v = _mm512_maskz_loadu_ps(lanes(i), s.add(i));
            let e = _mm512_maskz_mov_ps(lanes(i), exp512(_mm512_sub_ps(_mm512_mul_ps(v, sc), m)));
            _mm512_mask_storeu_ps(o.add(i), lanes(i), e);
            sum = _mm512_add_ps(sum, e);
        }
        let total = _mm512_set1_ps(_mm512_reduce_add_ps(sum));
        for i in (0..n).step_by(16) {
            let e = _mm512_maskz_loadu_ps(lanes(i), o.add(i));
            _mm512_mask_storeu_ps(o.add(i), lanes(i), _mm512_div_ps(e, total));
        }
    }
}

type RowFn = fn(&[f32], f32, (usize, usize), &mut [f32]);

fn pick() -> RowFn {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the feature is present.
        return |s, c, r, o| unsafe { row_avx512(s, c, r, o) };
    }
    row_scalar
}

/// `scores` `[H, L, S]` f32 on the CPU, query `r` of the block at absolute position
/// `q_first + r` → probabilities `[H, L, S]`, zero on the keys a query does not see.
pub fn causal_softmax(scores: &Tensor, scale: f32, q_first: usize, window: Option<usize>) -> candle_core::Result<Tensor> {
    let (h, l, s) = scores.dims3()?;
    let scores = scores.contiguous()?;
    let (storage, layout) = scores.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(v)) = &*storage else {
        candle_core::bail!("causal_softmax: scores must be f32 on the CPU, not {:?} on {:?}", scores.dtype(), scores.device())
    };
    let src = &v[layout.start_offset()..layout.start_offset() + h * l * s];
    let mut out = vec![0f32; h * l * s];
    if let Some(rows) = (16usize << 10).checked_div(s) {
        let row = pick();
        let rows_per_task = rows.max(1);
        out.par_chunks_mut(rows_per_task * s).zip(src.par_chunks(rows_per_task * s)).enumerate().for_each(|(c, (o, x))| {
            for (k, (o, x)) in o.chunks_mut(s).zip(x.chunks(s)).enumerate() {
                let r = (c * rows_per_task + k) % l;
                row(x, scale, visible(q_first + r, s, window), o);
            }
        });
    }
    Tensor::from_vec(out, (h, l, s), &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 40.0 - 20.0
            })
            .collect()
    }

    /// Against scale, an explicit `0 / −∞` mask and a softmax in f64.
    #[test]
    fn matches_a_masked_softmax_in_f64() {
        for (h, l, s, q_first, window) in
            [(3, 5, 5, 0, None), (2, 4, 37, 33, None), (2, 70, 70, 0, Some(9)), (1, 1, 300, 299, Some(40)), (4, 3, 19, 16, Some(1))]
        {
            let x = values(h * l * s, (h * l * s) as u64);
            let t = Tensor::from_vec(x.clone(), (h, l, s), &Device::Cpu).unwrap();
            let got = causal_softmax(&t, 0.125, q_first, window).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for hh in 0..h {
                for r in 0..l {
                    let i = q_first + r;
                    let seen = |j: usize| j <= i && window.is_none_or(|w| j + w > i);
                    let row = &x[(hh * l + r) * s..][..s];
                    let m = (0..s).filter(|&j| seen(j)).map(|j| row[j] as f64 * 0.125).fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = (0..s).filter(|&j| seen(j)).map(|j| (row[j] as f64 * 0.125 - m).exp()).sum();
                    for j in 0..s {
                        let want = if seen(j) { (row[j] as f64 * 0.125 - m).exp() / z } else { 0.0 };
                        let g = got[(hh * l + r) * s + j] as f64;
                        assert!(
                            (g - want).abs() <= 1e-6 * want + 1e-12,
                            "[{hh}, {r}, {j}] of [{h}, {l}, {s}] at {q_first} window {window:?}: {g} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_portable_rows_agree_and_a_nan_score_poisons_its_row() {
        let x = values(200, 9);
        for (lo, hi) in [(0, 200), (3, 150), (7, 8)] {
            let mut a = vec![1f32; 200];
            let mut b = vec![1f32; 200];
            row_scalar(&x, 0.3, (lo, hi), &mut a);
            pick()(&x, 0.3, (lo, hi), &mut b);
            for (p, q) in a.iter().zip(&b) {
                assert!((p - q).abs() <= 1e-6 * p.abs().max(1e-30), "{p} vs {q}");
            }
        }
        let mut y = x.clone();
        y[10] = f32::NAN;
        let mut out = vec![0f32; 200];
        pick()(&y, 1.0, (0, 200), &mut out);
        assert!(out.iter().all(|p| p.is_nan()));
    }
}
