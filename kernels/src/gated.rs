//! `silu(gate) ⊙ up` on the CPU, from the gated MLP's fused `[T, 2I]` projection output (gate
//! columns, then up columns) to `[T, I]`: one pass over rows split across rayon's pool, with an
//! exponential vectorised on AVX-512 / AVX2.
//!
//! The exponential is Cephes' `expf` (range reduction by `ln 2` in two parts, a degree-6
//! polynomial, `2ⁿ` from exponent bits; within 2 ulp of the exact value), written once per
//! instruction set with the same operations in the same order: the same bits everywhere.

use candle_core::{CpuStorage, Device, Storage, Tensor};
use rayon::prelude::*;

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// The range `exp` computes: up to where f32 overflows, down to where `1 + eˣ` is 1 (and
/// `2ⁿ⁻¹`, `n ≥ -125`, a normal float).
const X_MAX: f32 = 88.72;
const X_MIN: f32 = -86.5;
const P: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5];

/// `e^x` for `x` within `[X_MIN, X_MAX]` (callers clamp).
#[inline(always)]
fn exp(x: f32) -> f32 {
    let n = (x * LOG2E).round_ties_even();
    let r = n.mul_add(-LN2_HI, x);
    let r = n.mul_add(-LN2_LO, r);
    let mut p = P[0];
    for c in &P[1..] {
        p = p.mul_add(r, *c);
    }
    let y = (p * r).mul_add(r, r) + 1.0;
    // 2ⁿ as 2ⁿ⁻¹ · 2: n reaches 128 near X_MAX.
    y * f32::from_bits(((n as i32 + 126) as u32) << 23) * 2.0
}

/// `g / (1 + e^-g) · u`. Past `X_MAX` the exponential is infinite (as libm's overflows, so a
/// very negative gate gives -0); a NaN gate stays NaN.
#[inline(always)]
fn silu_mul_one(g: f32, u: f32) -> f32 {
    let x = 0.0 - g;
    // Not clamp: a NaN must become X_MIN here, as the vector max/min do (the NaN gate still
    // makes the result NaN).
    #[allow(clippy::manual_clamp)]
    let e = if x > X_MAX { f32::INFINITY } else { exp(x.max(X_MIN).min(X_MAX)) };
    g / (1.0 + e) * u
}

fn row_scalar(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = silu_mul_one(g, u);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn row_avx512(gate: &[f32], up: &[f32], out: &mut [f32]) {
        let main = out.len() / 16 * 16;
        // SAFETY: every access below is within 0..main of slices of at least out.len().
        unsafe {
            let (lo, hi) = (_mm512_set1_ps(X_MIN), _mm512_set1_ps(X_MAX));
            for i in (0..main).step_by(16) {
                let g = _mm512_loadu_ps(gate.as_ptr().add(i));
                let u = _mm512_loadu_ps(up.as_ptr().add(i));
                let neg = _mm512_sub_ps(_mm512_setzero_ps(), g);
                let x = _mm512_min_ps(_mm512_max_ps(neg, lo), hi);
                let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(x, _mm512_set1_ps(LOG2E)));
                let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_HI), x);
                let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_LO), r);
                let mut p = _mm512_set1_ps(P[0]);
                for c in &P[1..] {
                    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
                }
                let y = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0));
                let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(126))));
                let e = _mm512_mask_mov_ps(
                    _mm512_mul_ps(_mm512_mul_ps(y, scale), _mm512_set1_ps(2.0)),
                    _mm512_cmp_ps_mask::<_CMP_GT_OQ>(neg, hi),
                    _mm512_set1_ps(f32::INFINITY),
                );
                let s = _mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0), e));
                _mm512_storeu_ps(out.as_mut_ptr().add(i), _mm512_mul_ps(s, u));
            }
        }
        row_scalar(&gate[main..], &up[main..], &mut out[main..]);
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn row_avx2(gate: &[f32], up: &[f32], out: &mut [f32]) {
        let main = out.len() / 8 * 8;
        // SAFETY: every access below is within 0..main of slices of at least out.len().
        unsafe {
            let (lo, hi) = (_mm256_set1_ps(X_MIN), _mm256_set1_ps(X_MAX));
            for i in (0..main).step_by(8) {
                let g = _mm256_loadu_ps(gate.as_ptr().add(i));
                let u = _mm256_loadu_ps(up.as_ptr().add(i));
                let neg = _mm256_sub_ps(_mm256_setzero_ps(), g);
                let x = _mm256_min_ps(_mm256_max_ps(neg, lo), hi);
                let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(x, _mm256_set1_ps(LOG2E)));
                let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_HI), x);
                let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_LO), r);
                let mut p = _mm256_set1_ps(P[0]);
                for c in &P[1..] {
                    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
                }
                let y = _mm256_add_ps(_mm256_fmadd_ps(_mm256_mul_ps(p, r), r, r), _mm256_set1_ps(1.0));
                let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(126))));
                let e = _mm256_blendv_ps(
                    _mm256_mul_ps(_mm256_mul_ps(y, scale), _mm256_set1_ps(2.0)),
                    _mm256_set1_ps(f32::INFINITY),
                    _mm256_cmp_ps::<_CMP_GT_OQ>(neg, hi),
                );
                let s = _mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0), e));
                _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_mul_ps(s, u));
            }
        }
        row_scalar(&gate[main..], &up[main..], &mut out[main..]);
    }
}

type RowFn = fn(&[f32], &[f32], &mut [f32]);

fn pick() -> RowFn {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature is present.
            return |g, u, o| unsafe { x86::row_avx512(g, u, o) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the features are present.
            return |g, u, o| unsafe { x86::row_avx2(g, u, o) };
        }
    }
    row_scalar
}

/// Elements per rayon task: a few rows of a real MLP, enough that scheduling is noise.
const TASK_ELEMENTS: usize = 16 << 10;

fn silu_mul_slices(row: RowFn, gu: &[f32], inter: usize, out: &mut [f32]) {
    if inter == 0 {
        return;
    }
    let rows_per_task = (TASK_ELEMENTS / inter).max(1);
    out.par_chunks_mut(rows_per_task * inter).zip(gu.par_chunks(rows_per_task * 2 * inter)).for_each(|(o, g)| {
        for (o, g) in o.chunks_mut(inter).zip(g.chunks(2 * inter)) {
            row(&g[..inter], &g[inter..], o);
        }
    });
}

/// `silu(gu[:, :inter]) ⊙ gu[:, inter..]` for `gu` `[T, 2·inter]` f32 on the CPU → `[T, inter]`.
pub fn silu_mul(gu: &Tensor, inter: usize) -> candle_core::Result<Tensor> {
    let (t, w) = gu.dims2()?;
    if w != 2 * inter || !gu.device().is_cpu() {
        candle_core::bail!("silu_mul: [{t}, {w}] on {:?} is not a CPU [T, 2 × {inter}] gate|up output", gu.device());
    }
    let gu = gu.contiguous()?;
    let (storage, layout) = gu.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(v)) = &*storage else { candle_core::bail!("silu_mul: {:?} is not f32", gu.dtype()) };
    let mut out = vec![0f32; t * inter];
    silu_mul_slices(pick(), &v[layout.start_offset()..layout.start_offset() + t * w], inter, &mut out);
    Tensor::from_vec(out, (t, inter), &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Vec<f32> {
        let mut v: Vec<f32> = (0..2000).map(|i| (i as f32 - 1000.0) * 0.013).collect();
        v.extend([0.0, -0.0, 1e-30, -1e-30, 87.5, -87.5, 88.5, -88.5, 100.0, -100.0, 1e10, -1e10, f32::MIN_POSITIVE]);
        v
    }

    #[test]
    fn exp_is_within_two_ulp_of_the_exact_value() {
        for x in (0..20000).map(|i| X_MIN + (X_MAX - X_MIN) * i as f32 / 19999.0) {
            let (got, exact) = (exp(x) as f64, (x as f64).exp());
            let ulp = (exact as f32).to_bits().abs_diff((got as f32).to_bits());
            assert!(ulp <= 2, "exp({x}) = {got}, exact {exact} ({ulp} ulp)");
        }
    }

    #[test]
    fn silu_mul_matches_f64_and_every_instruction_set_gives_the_same_bits() {
        let g = inputs();
        let u: Vec<f32> = g.iter().enumerate().map(|(i, _)| 0.5 + (i % 7) as f32 * 0.25).collect();
        let mut scalar = vec![0f32; g.len()];
        row_scalar(&g, &u, &mut scalar);
        for ((&g, &u), &got) in g.iter().zip(&u).zip(&scalar) {
            let exact = g as f64 / (1.0 + (-g as f64).exp()) * u as f64;
            assert!((got as f64 - exact).abs() <= 1e-6 * exact.abs() + 1e-38, "silu({g}) * {u} = {got}, exact {exact}");
        }
        #[cfg(target_arch = "x86_64")]
        {
            let mut rows: Vec<(&str, RowFn)> = Vec::new();
            if is_x86_feature_detected!("avx512f") {
                rows.push(("avx512", |g, u, o| unsafe { x86::row_avx512(g, u, o) }));
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                rows.push(("avx2", |g, u, o| unsafe { x86::row_avx2(g, u, o) }));
            }
            for (name, row) in rows {
                let mut got = vec![0f32; g.len()];
                row(&g, &u, &mut got);
                let same = got.iter().zip(&scalar).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{name} differs from the portable version");
            }
        }
        let mut nan = [0f32; 1];
        row_scalar(&[f32::NAN], &[1.0], &mut nan);
        assert!(nan[0].is_nan());
    }

    #[test]
    fn the_op_splits_gate_and_up_columns() {
        let (t, inter) = (5, 3000);
        let gu: Vec<f32> = (0..t * 2 * inter).map(|i| ((i * 37 % 1001) as f32 - 500.0) * 0.01).collect();
        let x = Tensor::from_vec(gu.clone(), (t, 2 * inter), &Device::Cpu).unwrap();
        let y = silu_mul(&x, inter).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for r in 0..t {
            for j in (0..inter).step_by(97) {
                assert_eq!(y[r * inter + j].to_bits(), silu_mul_one(gu[r * 2 * inter + j], gu[r * 2 * inter + inter + j]).to_bits());
            }
        }
        assert!(silu_mul(&x, inter + 1).is_err());
    }
}
