//! Attention's scaled, causally masked softmax on the CPU: `softmax(scale · s)` over the keys
//! each query may see, zero elsewhere, in one pass per row ([`crate::exp`]'s exponential on
//! AVX-512). Replaces scaling, adding a `0 / −∞` mask and a generic softmax: three passes, a
//! mask tensor, and an exponential for every masked key.
//!
//! Query `r` of a block sits at absolute position `i = q_first + r` and sees keys `j ≤ i`, and
//! with a sliding window `W` only `j > i − W` (transformers' sliding-window overlay).
//!
//! Rows go from scores to probabilities in place or into another buffer ([`causal_softmax`]
//! for a tensor of scores, [`rows`] for [`crate::prompt_attention`]'s blocks).

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::exp::exp;
use crate::slices::with_f32_slice;

/// The keys `[lo, hi)` query position `i` sees among `keys`.
fn visible(i: usize, keys: usize, window: Option<usize>) -> (usize, usize) {
    let hi = (i + 1).min(keys);
    let lo = window.map_or(0, |w| (i + 1).saturating_sub(w)).min(hi);
    (lo, hi)
}

/// How a block of rows is masked and what it reports.
#[derive(Clone, Copy, Debug)]
pub struct Causal {
    pub scale: f32,
    /// Absolute position of the block's first query.
    pub q_first: usize,
    pub window: Option<usize>,
    /// Report each row's [`stats`], with the mass on this key span.
    pub stats: Option<(usize, usize)>,
}

/// What a row's pass leaves besides its probabilities, with `m` the largest scaled score:
/// `Z = Σ e^(x − m)` and `W = Σ e^(x − m) (x − m)` over the visible keys. The entropy needs no
/// logarithm per key: `−Σ p ln p = ln Z − W / Z`.
#[derive(Clone, Copy, Debug)]
struct RowSums {
    z: f32,
    w: f32,
}

/// One row of `n` scores at `src` into probabilities at `out`, zero outside `[lo, hi)`.
/// `out` may be `src` (in place): each element is read before it is written.
///
/// # Safety
/// `src` and `out` hold `n` elements, `lo ≤ hi ≤ n`.
type RowFn = unsafe fn(*const f32, *mut f32, usize, f32, (usize, usize)) -> RowSums;

/// A row's statistics from its probabilities `p` (see [`stats`]).
type StatsFn = fn(&[f32], (usize, usize), RowSums, (usize, usize)) -> [f32; 4];

/// # Safety
/// See [`RowFn`].
unsafe fn row_scalar(src: *const f32, out: *mut f32, n: usize, scale: f32, (lo, hi): (usize, usize)) -> RowSums {
    // SAFETY: the caller's contract; reads of src[j] precede writes of out[j].
    unsafe {
        let mut m = f32::NEG_INFINITY;
        for j in lo..hi {
            m = m.max(*src.add(j) * scale);
        }
        let (mut z, mut w) = (0.0, 0.0);
        for j in lo..hi {
            let x = *src.add(j) * scale - m;
            let e = exp(x);
            *out.add(j) = e;
            z += e;
            w += e * x;
        }
        for j in lo..hi {
            *out.add(j) /= z;
        }
        for j in (0..lo).chain(hi..n) {
            *out.add(j) = 0.0;
        }
        RowSums { z, w }
    }
}

/// A row's head statistics, the columns of the block path's `[H, L, 4]`: entropy `−Σ p ln p`
/// (nats), the most-attended key (the first on ties), the mass on key 0 and on a key span.
fn stats_scalar(p: &[f32], (lo, hi): (usize, usize), sums: RowSums, span: (usize, usize)) -> [f32; 4] {
    let (mut best, mut arg) = (f32::NEG_INFINITY, lo);
    for (j, &v) in p.iter().enumerate().take(hi).skip(lo) {
        if v > best {
            best = v;
            arg = j;
        }
    }
    finish(p, arg, sums, span)
}

fn finish(p: &[f32], arg: usize, RowSums { z, w, .. }: RowSums, span: (usize, usize)) -> [f32; 4] {
    let (a, b) = (span.0.min(p.len()), span.1.min(p.len()));
    let span_mass = if b > a { p[a..b].iter().sum() } else { 0.0 };
    // abs: a one-key distribution gives −0.0 (as the reference's Σ p ln p does).
    [(z.ln() - w / z).abs(), arg as f32, p.first().copied().unwrap_or(0.0), span_mass]
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn stats_avx512(p: &[f32], (lo, hi): (usize, usize), sums: RowSums, span: (usize, usize)) -> [f32; 4] {
    use std::arch::x86_64::*;
    let n = hi - lo;
    let q = p[lo..hi].as_ptr();
    let lanes = |i: usize| -> __mmask16 { ((1u32 << (n - i).min(16)) - 1) as __mmask16 };
    // SAFETY: every access is masked to the n elements of the row's visible range.
    unsafe {
        let mut best = _mm512_set1_ps(f32::NEG_INFINITY);
        for i in (0..n).step_by(16) {
            best = _mm512_max_ps(best, _mm512_mask_loadu_ps(_mm512_set1_ps(f32::NEG_INFINITY), lanes(i), q.add(i)));
        }
        let top = _mm512_set1_ps(_mm512_reduce_max_ps(best));
        let mut arg = lo;
        for i in (0..n).step_by(16) {
            let hit = _mm512_mask_cmp_ps_mask::<_CMP_EQ_OQ>(lanes(i), _mm512_maskz_loadu_ps(lanes(i), q.add(i)), top);
            if hit != 0 {
                arg = lo + i + hit.trailing_zeros() as usize;
                break;
            }
        }
        finish(p, arg, sums, span)
    }
}

/// # Safety
/// See [`RowFn`]; the CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn row_avx512(src: *const f32, out: *mut f32, len: usize, scale: f32, (lo, hi): (usize, usize)) -> RowSums {
    use crate::exp::x86::exp512;
    use std::arch::x86_64::*;
    let n = hi - lo;
    let lanes = |i: usize| -> __mmask16 { ((1u32 << (n - i).min(16)) - 1) as __mmask16 };
    // SAFETY: every access is masked to the n elements of the row's visible range, or lies
    // outside it within the row's len; reads of src precede writes of out element by element.
    unsafe {
        let (s, o) = (src.add(lo), out.add(lo));
        let sc = _mm512_set1_ps(scale);
        let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
        for i in (0..n).step_by(16) {
            let v = _mm512_mask_loadu_ps(_mm512_set1_ps(f32::NEG_INFINITY), lanes(i), s.add(i));
            mx = _mm512_max_ps(mx, _mm512_mul_ps(v, sc));
        }
        let max = _mm512_reduce_max_ps(mx);
        let m = _mm512_set1_ps(max);
        let (mut sum, mut weighted) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        for i in (0..n).step_by(16) {
            let x = _mm512_maskz_mov_ps(lanes(i), _mm512_sub_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(lanes(i), s.add(i)), sc), m));
            let e = _mm512_maskz_mov_ps(lanes(i), exp512(x));
            _mm512_mask_storeu_ps(o.add(i), lanes(i), e);
            sum = _mm512_add_ps(sum, e);
            weighted = _mm512_fmadd_ps(e, x, weighted);
        }
        let z = _mm512_reduce_add_ps(sum);
        let total = _mm512_set1_ps(z);
        for i in (0..n).step_by(16) {
            let e = _mm512_maskz_loadu_ps(lanes(i), o.add(i));
            _mm512_mask_storeu_ps(o.add(i), lanes(i), _mm512_div_ps(e, total));
        }
        std::ptr::write_bytes(out, 0, lo);
        std::ptr::write_bytes(out.add(hi), 0, len - hi);
        RowSums { z, w: _mm512_reduce_add_ps(weighted) }
    }
}

fn pick() -> (RowFn, StatsFn) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the feature is present.
        return (row_avx512, |p, r, sums, span| unsafe { stats_avx512(p, r, sums, span) });
    }
    (row_scalar, stats_scalar)
}

/// `n` rows of `s` scores at `src` into probabilities at `out` (which may be `src`); row `r`
/// is query `(first + r) % l` of a block of `l` queries (heads stacked). With `c.stats`, each
/// row's statistics into `stats[4r..4r + 4]`.
///
/// # Safety
/// `src` and `out` hold `n · s` elements; `stats` holds `4n` when `c.stats` is set.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn rows(src: *const f32, out: *mut f32, n: usize, s: usize, l: usize, first: usize, c: &Causal, stats: &mut [f32]) {
    let (row, row_stats) = pick();
    for r in 0..n {
        let seen = visible(c.q_first + (first + r) % l, s, c.window);
        // SAFETY: row r lies within both buffers (the caller's contract).
        let sums = unsafe { row(src.add(r * s), out.add(r * s), s, c.scale, seen) };
        if let Some(span) = c.stats {
            // SAFETY: the row function wrote every element of the row.
            let p = unsafe { std::slice::from_raw_parts(out.add(r * s), s) };
            stats[r * 4..r * 4 + 4].copy_from_slice(&row_stats(p, seen, sums, span));
        }
    }
}

/// `scores` `[H, L, S]` f32 on the CPU, query `r` of the block at absolute position
/// `q_first + r` → probabilities `[H, L, S]`, zero on the keys a query does not see (rows
/// split across rayon's pool); with `stats` (the key span whose mass to report), also each
/// row's statistics, `[H, L, 4]`.
pub fn causal_softmax(
    scores: &Tensor,
    scale: f32,
    q_first: usize,
    window: Option<usize>,
    stats: Option<(usize, usize)>,
) -> candle_core::Result<(Tensor, Option<Tensor>)> {
    let (h, l, s) = scores.dims3()?;
    let mut out = Vec::<f32>::with_capacity(h * l * s);
    let mut st = vec![0f32; if stats.is_some() { h * l * 4 } else { 0 }];
    let fill = |src: &[f32]| {
        let Some(per_task) = (16usize << 10).checked_div(s).map(|r| r.max(1)) else { return };
        let c = Causal { scale, q_first, window, stats };
        let st_chunk = if stats.is_some() { per_task * 4 } else { 0 };
        let tasks = out.spare_capacity_mut()[..h * l * s].par_chunks_mut(per_task * s).zip(src.par_chunks(per_task * s)).enumerate();
        // Without stats, each task gets an empty slice of `st`.
        let st_parts: Vec<&mut [f32]> =
            if stats.is_some() { st.chunks_mut(st_chunk).collect() } else { (0..h * l).step_by(per_task).map(|_| &mut [][..]).collect() };
        tasks.zip(st_parts.into_par_iter()).for_each(|((i, (o, x)), st)| {
            // SAFETY: o and x hold x.len() / s rows of s; st holds 4 per row with stats.
            unsafe { rows(x.as_ptr(), o.as_mut_ptr().cast(), x.len() / s, s, l, i * per_task, &c, st) };
        });
    };
    with_f32_slice(scores, "causal_softmax", fill)?;
    // SAFETY: the rows above wrote all h·l·s elements (none when s is 0).
    unsafe { out.set_len(h * l * s) };
    let probs = Tensor::from_vec(out, (h, l, s), &Device::Cpu)?;
    let stats = if stats.is_some() { Some(Tensor::from_vec(st, (h, l, 4), &Device::Cpu)?) } else { None };
    Ok((probs, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scores in [−20, 20): wide enough that some keys underflow.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        crate::test_values::values(n, seed).into_iter().map(|v| v * 20.0).collect()
    }

    /// Against scale, an explicit `0 / −∞` mask and a softmax in f64.
    #[test]
    fn matches_a_masked_softmax_in_f64() {
        for (h, l, s, q_first, window) in
            [(3, 5, 5, 0, None), (2, 4, 37, 33, None), (2, 70, 70, 0, Some(9)), (1, 1, 300, 299, Some(40)), (4, 3, 19, 16, Some(1))]
        {
            let x = values(h * l * s, (h * l * s) as u64);
            let t = Tensor::from_vec(x.clone(), (h, l, s), &Device::Cpu).unwrap();
            let span = (2, 7);
            let (got, stats) = causal_softmax(&t, 0.125, q_first, window, Some(span)).unwrap();
            let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let stats = stats.unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for hh in 0..h {
                for r in 0..l {
                    let i = q_first + r;
                    let seen = |j: usize| j <= i && window.is_none_or(|w| j + w > i);
                    let row = &x[(hh * l + r) * s..][..s];
                    let m = (0..s).filter(|&j| seen(j)).map(|j| row[j] as f64 * 0.125).fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = (0..s).filter(|&j| seen(j)).map(|j| (row[j] as f64 * 0.125 - m).exp()).sum();
                    let p: Vec<f64> = (0..s).map(|j| if seen(j) { (row[j] as f64 * 0.125 - m).exp() / z } else { 0.0 }).collect();
                    for (j, &want) in p.iter().enumerate() {
                        let g = got[(hh * l + r) * s + j] as f64;
                        assert!(
                            (g - want).abs() <= 1e-6 * want + 1e-12,
                            "[{hh}, {r}, {j}] of [{h}, {l}, {s}] at {q_first} window {window:?}: {g} vs {want}"
                        );
                    }
                    let entropy: f64 = -p.iter().filter(|&&x| x > 0.0).map(|x| x * x.ln()).sum::<f64>();
                    let argmax = (0..s).fold(0, |a, j| if p[j] > p[a] { j } else { a });
                    let span_mass: f64 = p[span.0.min(s)..span.1.min(s)].iter().sum();
                    let st = &stats[(hh * l + r) * 4..][..4];
                    let at = format!("row [{hh}, {r}] of [{h}, {l}, {s}] at {q_first} window {window:?}");
                    assert!((st[0] as f64 - entropy).abs() <= 1e-5 * (1.0 + entropy), "{at}: entropy {} vs {entropy}", st[0]);
                    assert_eq!(st[1] as usize, argmax, "{at}: argmax");
                    assert!((st[2] as f64 - p[0]).abs() <= 1e-6 * p[0] + 1e-12, "{at}: sink {} vs {}", st[2], p[0]);
                    assert!((st[3] as f64 - span_mass).abs() <= 1e-6, "{at}: span {} vs {span_mass}", st[3]);
                }
            }
        }
    }

    fn run_row(row: RowFn, x: &[f32], scale: f32, seen: (usize, usize)) -> (Vec<f32>, RowSums) {
        let mut out = vec![f32::NAN; x.len()];
        // SAFETY: both hold x.len() elements and seen lies within them.
        let sums = unsafe { row(x.as_ptr(), out.as_mut_ptr(), x.len(), scale, seen) };
        (out, sums)
    }

    #[test]
    fn the_portable_rows_agree_and_a_nan_score_poisons_its_row() {
        let x = values(200, 9);
        for (lo, hi) in [(0, 200), (3, 150), (7, 8)] {
            let (a, ma) = run_row(row_scalar, &x, 0.3, (lo, hi));
            let (b, mb) = run_row(pick().0, &x, 0.3, (lo, hi));
            for (p, q) in a.iter().zip(&b) {
                assert!((p - q).abs() <= 1e-6 * p.abs().max(1e-30), "{p} vs {q}");
            }
            let (sa, sb) = (stats_scalar(&a, (lo, hi), ma, (5, 20)), pick().1(&b, (lo, hi), mb, (5, 20)));
            assert_eq!(sa[1], sb[1], "argmax");
            for c in [0, 2, 3] {
                assert!((sa[c] - sb[c]).abs() <= 1e-5 * (1.0 + sa[c].abs()), "column {c}: {} vs {}", sa[c], sb[c]);
            }
        }
        let mut y = x.clone();
        y[10] = f32::NAN;
        let (out, _) = run_row(pick().0, &y, 1.0, (0, 200));
        assert!(out.iter().all(|p| p.is_nan()));
    }
}
