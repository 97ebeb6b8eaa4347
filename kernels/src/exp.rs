//! `eˣ` for the CPU kernels (SiLU, softmax): Cephes' `expf` (range reduction by `ln 2` in two
//! parts, a degree-6 polynomial, `2ⁿ` from exponent bits; within 2 ulp of the exact value),
//! written once per instruction set with the same operations in the same order, so the
//! scalar, AVX2 and AVX-512 versions give the same bits.
//!
//! Outside the polynomial's range: `+∞` above [`X_MAX`] (where f32 overflows), `0` below
//! [`X_MIN`] (where the result would be denormal), NaN for NaN.

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
pub(crate) const X_MAX: f32 = 88.72;
pub(crate) const X_MIN: f32 = -86.5;
const P: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5];

/// The polynomial part, for `x` within `[X_MIN, X_MAX]`.
#[inline(always)]
fn poly(x: f32) -> f32 {
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

#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    if x.is_nan() {
        x
    } else if x > X_MAX {
        f32::INFINITY
    } else if x < X_MIN {
        0.0
    } else {
        poly(x)
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// [`exp`] on 16 lanes. Call from a function with `avx512f` enabled.
    #[inline(always)]
    pub(crate) unsafe fn exp512(x: __m512) -> __m512 {
        unsafe {
            let c = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(X_MIN)), _mm512_set1_ps(X_MAX));
            let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(c, _mm512_set1_ps(LOG2E)));
            let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_HI), c);
            let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_LO), r);
            let mut p = _mm512_set1_ps(P[0]);
            for k in &P[1..] {
                p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*k));
            }
            let y = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0));
            let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(126))));
            let e = _mm512_mul_ps(_mm512_mul_ps(y, scale), _mm512_set1_ps(2.0));
            let e = _mm512_mask_mov_ps(e, _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, _mm512_set1_ps(X_MAX)), _mm512_set1_ps(f32::INFINITY));
            let e = _mm512_mask_mov_ps(e, _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(X_MIN)), _mm512_setzero_ps());
            _mm512_mask_mov_ps(e, _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x), x)
        }
    }

    /// [`exp`] on 8 lanes. Call from a function with `avx2` and `fma` enabled.
    #[inline(always)]
    pub(crate) unsafe fn exp256(x: __m256) -> __m256 {
        unsafe {
            let c = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(X_MIN)), _mm256_set1_ps(X_MAX));
            let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(c, _mm256_set1_ps(LOG2E)));
            let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_HI), c);
            let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_LO), r);
            let mut p = _mm256_set1_ps(P[0]);
            for k in &P[1..] {
                p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*k));
            }
            let y = _mm256_add_ps(_mm256_fmadd_ps(_mm256_mul_ps(p, r), r, r), _mm256_set1_ps(1.0));
            let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(126))));
            let e = _mm256_mul_ps(_mm256_mul_ps(y, scale), _mm256_set1_ps(2.0));
            let e = _mm256_blendv_ps(e, _mm256_set1_ps(f32::INFINITY), _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(X_MAX)));
            let e = _mm256_blendv_ps(e, _mm256_setzero_ps(), _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(X_MIN)));
            _mm256_blendv_ps(e, x, _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Vec<f32> {
        let mut v: Vec<f32> = (0..40001).map(|i| X_MIN - 1.0 + (X_MAX - X_MIN + 2.0) * i as f32 / 40000.0).collect();
        v.extend([0.0, -0.0, 1e-30, -1e-30, 1e10, -1e10, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, X_MAX, X_MIN]);
        v
    }

    #[test]
    fn within_two_ulp_of_the_exact_value_and_exact_outside_the_range() {
        for x in inputs() {
            let got = exp(x);
            let exact = (x as f64).exp() as f32;
            if x.is_nan() {
                assert!(got.is_nan());
            } else if x > X_MAX {
                assert_eq!(got, f32::INFINITY, "exp({x})");
            } else if x < X_MIN {
                assert_eq!(got, 0.0, "exp({x})");
            } else {
                let ulp = exact.to_bits().abs_diff(got.to_bits());
                assert!(ulp <= 2, "exp({x}) = {got}, exact {exact} ({ulp} ulp)");
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        use std::arch::x86_64::*;
        #[target_feature(enable = "avx512f")]
        unsafe fn on512(x: &[f32], out: &mut [f32]) {
            for (i, o) in x.chunks_exact(16).zip(out.chunks_exact_mut(16)) {
                unsafe { _mm512_storeu_ps(o.as_mut_ptr(), x86::exp512(_mm512_loadu_ps(i.as_ptr()))) };
            }
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn on256(x: &[f32], out: &mut [f32]) {
            for (i, o) in x.chunks_exact(8).zip(out.chunks_exact_mut(8)) {
                unsafe { _mm256_storeu_ps(o.as_mut_ptr(), x86::exp256(_mm256_loadu_ps(i.as_ptr()))) };
            }
        }
        let mut x = inputs();
        x.truncate(x.len() / 16 * 16);
        let scalar: Vec<u32> = x.iter().map(|&v| exp(v).to_bits()).collect();
        if is_x86_feature_detected!("avx512f") {
            let mut out = vec![0f32; x.len()];
            unsafe { on512(&x, &mut out) };
            assert_eq!(out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), scalar, "avx512");
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            let mut out = vec![0f32; x.len()];
            unsafe { on256(&x, &mut out) };
            assert_eq!(out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), scalar, "avx2");
        }
    }
}
