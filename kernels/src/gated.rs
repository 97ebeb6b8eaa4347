//! `silu(gate) ⊙ up` on the CPU, from the gated MLP's fused `[T, 2I]` projection output (gate
//! columns, then up columns) to `[T, I]`: one pass over rows split across rayon's pool, with
//! [`crate::exp`]'s exponential on AVX-512 / AVX2 (the same bits on every instruction set).

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::exp::exp;
use crate::slices::with_f32_slice;

/// `g / (1 + e^-g) · u` (a very negative gate gives -0, as with libm's overflowing `exp`).
#[inline(always)]
fn silu_mul_one(g: f32, u: f32) -> f32 {
    g / (1.0 + exp(0.0 - g)) * u
}

fn row_scalar(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = silu_mul_one(g, u);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use crate::exp::x86::{exp256, exp512};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn row_avx512(gate: &[f32], up: &[f32], out: &mut [f32]) {
        let main = out.len() / 16 * 16;
        // SAFETY: every access below is within 0..main of slices of at least out.len().
        unsafe {
            for i in (0..main).step_by(16) {
                let g = _mm512_loadu_ps(gate.as_ptr().add(i));
                let u = _mm512_loadu_ps(up.as_ptr().add(i));
                let e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), g));
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
            for i in (0..main).step_by(8) {
                let g = _mm256_loadu_ps(gate.as_ptr().add(i));
                let u = _mm256_loadu_ps(up.as_ptr().add(i));
                let e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), g));
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
    let mut out = vec![0f32; t * inter];
    with_f32_slice(gu, "silu_mul", |v| silu_mul_slices(pick(), v, inter, &mut out))?;
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
