//! The tiles on AVX-512 (12 rows of `x` × 2 registers of 16 outputs: 24 accumulators) and on
//! AVX2 with FMA (6 rows × 2 registers of 8, one half-panel at a time). bf16 panel words widen
//! to f32 in registers: shift for the low halves, mask for the high ones.

use std::arch::x86_64::*;

use super::packed::PANEL;
use super::tile::{Kernels, Tile};

/// The best tiles the CPU runs, if any beats the portable ones.
pub(crate) fn pick() -> Option<Kernels> {
    if is_x86_feature_detected!("avx512f") {
        return Some(Kernels { mr: 12, wide: WIDE, wide_rows: WIDE_ROWS, f32: avx512_f32, bf16: avx512_bf16, name: "avx512" });
    }
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        return Some(Kernels { mr: 6, wide: 1, wide_rows: 0, f32: avx2_f32, bf16: avx2_bf16, name: "avx2" });
    }
    None
}

/// Steps of `k` ahead of the current one that a tile asks the cache for: the hardware's
/// prefetcher alone left decode at ~75% of the bandwidth.
const PREFETCH: usize = 16;

/// A `k` step's 32 weights as two registers of 16 (columns 0..16, 16..32).
trait Step512 {
    type W;
    unsafe fn load(w: *const Self::W, c: usize) -> (__m512, __m512);
    /// Asks for step `c`'s cache lines.
    unsafe fn prefetch(w: *const Self::W, c: usize);
}

struct F32Panel;
impl Step512 for F32Panel {
    type W = f32;
    #[inline(always)]
    unsafe fn load(w: *const f32, c: usize) -> (__m512, __m512) {
        unsafe { (_mm512_loadu_ps(w.add(c * PANEL)), _mm512_loadu_ps(w.add(c * PANEL + 16))) }
    }
    #[inline(always)]
    unsafe fn prefetch(w: *const f32, c: usize) {
        let p = w.wrapping_add(c * PANEL) as *const i8;
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p);
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64));
        }
    }
}

struct Bf16Panel;
impl Step512 for Bf16Panel {
    type W = u32;
    #[inline(always)]
    unsafe fn load(w: *const u32, c: usize) -> (__m512, __m512) {
        unsafe {
            let v = _mm512_loadu_si512(w.add(c * PANEL / 2) as *const __m512i);
            let lo = _mm512_slli_epi32::<16>(v);
            let hi = _mm512_and_si512(v, _mm512_set1_epi32(0xFFFF_0000u32 as i32));
            (_mm512_castsi512_ps(lo), _mm512_castsi512_ps(hi))
        }
    }
    #[inline(always)]
    unsafe fn prefetch(w: *const u32, c: usize) {
        unsafe { _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(c * PANEL / 2) as *const i8) }
    }
}

/// `R` rows × `P` panels; accumulator `[i][2p + h]` holds row `i`, columns `32p + 16h ..`.
#[inline(always)]
unsafe fn tile512<S: Step512, const R: usize, const P: usize>(t: &Tile, w: *const S::W) {
    let mut masks = [0 as __mmask16; 8];
    for (h, m) in masks.iter_mut().enumerate().take(2 * P) {
        let n = t.cols.saturating_sub(16 * h).min(16);
        *m = ((1u32 << n) - 1) as __mmask16;
    }
    // SAFETY (whole body): the caller's Tile contract; masked lanes are neither read nor written.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 8]; R];
        if !t.first {
            for (i, a) in acc.iter_mut().enumerate() {
                for (h, v) in a.iter_mut().enumerate().take(2 * P) {
                    *v = _mm512_maskz_loadu_ps(masks[h], t.y.add(i * t.ldy + 16 * h));
                }
            }
        }
        for c in 0..t.kc {
            let mut b = [_mm512_setzero_ps(); R];
            for (i, b) in b.iter_mut().enumerate() {
                *b = _mm512_set1_ps(*t.x.add(i * t.ldx + c));
            }
            for p in 0..P {
                let wp = w.wrapping_add(p * t.wstride);
                S::prefetch(wp, c + PREFETCH);
                let (w0, w1) = S::load(wp, c);
                for i in 0..R {
                    acc[i][2 * p] = _mm512_fmadd_ps(b[i], w0, acc[i][2 * p]);
                    acc[i][2 * p + 1] = _mm512_fmadd_ps(b[i], w1, acc[i][2 * p + 1]);
                }
            }
        }
        for (i, a) in acc.iter().enumerate() {
            for (h, v) in a.iter().enumerate().take(2 * P) {
                _mm512_mask_storeu_ps(t.y.add(i * t.ldy + 16 * h), masks[h], *v);
            }
        }
    }
}

/// Calls `$tile::<S, R>` (or `<S, R, P>`) with `R` = `$t.rows` as a constant.
macro_rules! by_rows {
    ($tile:ident, $s:ty, $t:expr, $w:expr, [$($r:literal)*]) => {
        match $t.rows {
            $($r => $tile::<$s, $r>($t, $w),)*
            r => unreachable!("tile of {r} rows"),
        }
    };
    ($tile:ident, $s:ty, $t:expr, $w:expr, [$($r:literal)*], $p:literal) => {
        match $t.rows {
            $($r => $tile::<$s, $r, $p>($t, $w),)*
            r => unreachable!("tile of {r} rows"),
        }
    };
}

/// Panels a decode tile streams at once on AVX-512, and the rows of `x` it takes: 3 × 8
/// accumulators.
const WIDE: usize = 4;
const WIDE_ROWS: usize = 3;

/// A tile of `t.rows` rows × `t.panels` panels, each a constant.
#[inline(always)]
unsafe fn by_panels512<S: Step512>(t: &Tile, w: *const S::W) {
    unsafe {
        match t.panels {
            1 => by_rows!(tile512, S, t, w, [1 2 3 4 5 6 7 8 9 10 11 12], 1),
            2 => by_rows!(tile512, S, t, w, [1 2 3], 2),
            3 => by_rows!(tile512, S, t, w, [1 2 3], 3),
            _ => by_rows!(tile512, S, t, w, [1 2 3], 4),
        }
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn avx512_f32(t: &Tile, w: *const f32) {
    unsafe { by_panels512::<F32Panel>(t, w) }
}

#[target_feature(enable = "avx512f")]
unsafe fn avx512_bf16(t: &Tile, w: *const u32) {
    unsafe { by_panels512::<Bf16Panel>(t, w) }
}

/// Half `h` of a `k` step's weights as two registers of 8, and the panel columns they are.
trait Step256 {
    type W;
    const COLUMNS: [[usize; 2]; 2];
    unsafe fn load(w: *const Self::W, c: usize, h: usize) -> (__m256, __m256);
}

impl Step256 for F32Panel {
    type W = f32;
    const COLUMNS: [[usize; 2]; 2] = [[0, 8], [16, 24]];
    #[inline(always)]
    unsafe fn load(w: *const f32, c: usize, h: usize) -> (__m256, __m256) {
        unsafe { (_mm256_loadu_ps(w.add(c * PANEL + h * 16)), _mm256_loadu_ps(w.add(c * PANEL + h * 16 + 8))) }
    }
}

impl Step256 for Bf16Panel {
    type W = u32;
    // Words 8h..8h+8 hold columns 8h.. (low halves) and 16 + 8h.. (high halves).
    const COLUMNS: [[usize; 2]; 2] = [[0, 16], [8, 24]];
    #[inline(always)]
    unsafe fn load(w: *const u32, c: usize, h: usize) -> (__m256, __m256) {
        unsafe {
            let v = _mm256_loadu_si256(w.add(c * PANEL / 2 + h * 8) as *const __m256i);
            let lo = _mm256_slli_epi32::<16>(v);
            let hi = _mm256_and_si256(v, _mm256_set1_epi32(0xFFFF_0000u32 as i32));
            (_mm256_castsi256_ps(lo), _mm256_castsi256_ps(hi))
        }
    }
}

#[inline(always)]
unsafe fn tile256<S: Step256, const R: usize>(t: &Tile, w: *const S::W) {
    let mask = |from: usize| unsafe {
        let n = t.cols.saturating_sub(from).min(8) as i32;
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
    };
    for h in 0..2 {
        let [c0, c1] = S::COLUMNS[h];
        if c0 >= t.cols {
            continue;
        }
        let (m0, m1) = (mask(c0), mask(c1));
        // SAFETY (whole body): the caller's Tile contract; masked lanes are neither read nor
        // written.
        unsafe {
            let mut a0 = [_mm256_setzero_ps(); R];
            let mut a1 = [_mm256_setzero_ps(); R];
            if !t.first {
                for i in 0..R {
                    a0[i] = _mm256_maskload_ps(t.y.add(i * t.ldy + c0), m0);
                    a1[i] = _mm256_maskload_ps(t.y.add(i * t.ldy + c1), m1);
                }
            }
            for c in 0..t.kc {
                let (w0, w1) = S::load(w, c, h);
                for i in 0..R {
                    let b = _mm256_set1_ps(*t.x.add(i * t.ldx + c));
                    a0[i] = _mm256_fmadd_ps(b, w0, a0[i]);
                    a1[i] = _mm256_fmadd_ps(b, w1, a1[i]);
                }
            }
            for i in 0..R {
                _mm256_maskstore_ps(t.y.add(i * t.ldy + c0), m0, a0[i]);
                _mm256_maskstore_ps(t.y.add(i * t.ldy + c1), m1, a1[i]);
            }
        }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_f32(t: &Tile, w: *const f32) {
    unsafe { by_rows!(tile256, F32Panel, t, w, [1 2 3 4 5 6]) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_bf16(t: &Tile, w: *const u32) {
    unsafe { by_rows!(tile256, Bf16Panel, t, w, [1 2 3 4 5 6]) }
}

/// The AVX2 tiles whatever the CPU's best (tests compare instruction sets).
#[cfg(test)]
pub(crate) fn avx2() -> (super::tile::TileFn<f32>, super::tile::TileFn<u32>) {
    (avx2_f32, avx2_bf16)
}
