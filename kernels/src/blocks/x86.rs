//! AVX-512 (and F16C) products straight on the stored blocks: weights as unsigned bytes, activations as
//! signed bytes (`vpmaddubsw`, or `vpdpbusd` for Q8_0), sub-block scales applied in the 16-bit
//! to 32-bit step (`vpdpwssd`), one float multiply-add per block and activation row. Up to four activation
//! rows share each decoded weight block. Same integer sums as [`super::scalar`].

use std::arch::x86_64::*;

use super::activations::Quantized;
use super::format::{scale_min_k4, BlockType};

/// Whether this CPU runs these kernels (AVX-512 F/BW/VL and VNNI).
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("f16c")
}

/// The f16 at `b[at..at + 2]` (a block's scale), by the F16C instruction.
#[inline]
#[target_feature(enable = "f16c")]
unsafe fn f16_at(b: &[u8], at: usize) -> f32 {
    debug_assert!(at + 2 <= b.len());
    // SAFETY: the two bytes lie in `b` (the caller's block).
    let bits = unsafe { std::ptr::read_unaligned(b.as_ptr().add(at).cast::<u16>()) };
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// Dot products of one weight row (`row`, all its blocks) with activation rows `r0..r0 + R`.
///
/// # Safety
/// [`available`] must hold, `row` must hold `x.groups` blocks of `ty` and `x` rows
/// `r0..r0 + R`.
pub(crate) unsafe fn dots<const R: usize>(ty: BlockType, row: &[u8], x: &Quantized, r0: usize) -> [f32; R] {
    debug_assert!(row.len() >= x.groups * x.group / ty.block_values() * ty.block_bytes() && (r0 + R) * x.groups <= x.d.len());
    // SAFETY: as the caller promises.
    unsafe {
        match ty {
            BlockType::Q4K => q4k::<R>(row, x, r0),
            BlockType::Q6K => q6k::<R>(row, x, r0),
            BlockType::Q8_0 => q8_0::<R>(row, x, r0),
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// Bytes ahead of the block in hand that a kernel asks the cache for: a task's rows are one
/// contiguous stream, and the hardware's prefetcher alone left decode waiting on the weights'
/// loads (perf: the hottest instructions were the loads of each block's second cache line).
const PREFETCH: usize = 2048;

/// Asks for the cache lines `PREFETCH` bytes past `bytes` bytes at `p` (a prefetch never
/// faults, past the end of the data included).
#[inline(always)]
fn prefetch(p: *const u8, bytes: usize) {
    let mut off = 0;
    while off < bytes {
        // SAFETY: a prefetch is a hint; the address is not dereferenced.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH + off).cast()) };
        off += 64;
    }
}

/// 32 lanes of 16 bits: lane `i` takes element `idx[i]`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn spread(v: __m512i, idx: &[i16; 32]) -> __m512i {
    // SAFETY: idx is 64 bytes.
    _mm512_permutexvar_epi16(unsafe { _mm512_loadu_si512(idx.as_ptr().cast()) }, v)
}

const fn lanes(pattern: [i16; 4], width: usize) -> [i16; 32] {
    let mut out = [0i16; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = pattern[i / width];
        i += 1;
    }
    out
}

// Q4_K: 64 bytes of nibbles hold sub-blocks (0, 2) in their low and (1, 3) in their high
// halves; each 16-bit lane after `vpmaddubsw` lies in one sub-block.
const Q4K_S: [[i16; 32]; 4] = [lanes([0, 0, 2, 2], 8), lanes([1, 1, 3, 3], 8), lanes([4, 4, 6, 6], 8), lanes([5, 5, 7, 7], 8)];
// Q6_K: 64 values are four groups of 16, 8 lanes each.
const Q6K_S: [[i16; 32]; 4] = [lanes([0, 1, 2, 3], 8), lanes([4, 5, 6, 7], 8), lanes([8, 9, 10, 11], 8), lanes([12, 13, 14, 15], 8)];

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c")]
unsafe fn q4k<const R: usize>(row: &[u8], x: &Quantized, r0: usize) -> [f32; R] {
    // SAFETY (whole body): loads stay within the row's blocks and the rows' activations
    // (see `dots`); the pair-index constants are 64 bytes.
    unsafe {
        let m4 = _mm512_set1_epi8(0xF);
        // Mins pair with the 16-value sums: lane g is sub-block g / 2.
        let mins_idx = _mm256_setr_epi16(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
        let mut acc = [_mm512_setzero_ps(); R];
        let mut accm = [_mm256_setzero_ps(); R];
        for g in 0..x.groups {
            let b = &row[g * 144..g * 144 + 144];
            prefetch(b.as_ptr(), 144);
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            let (mut sc, mut mn) = ([0u8; 16], [0u8; 16]);
            for j in 0..8 {
                (sc[j], mn[j]) = scale_min_k4(j, &b[4..16]);
            }
            let sc16 = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm_loadu_si128(sc.as_ptr().cast())));
            let mn16 = _mm256_permutexvar_epi16(mins_idx, _mm256_cvtepu8_epi16(_mm_loadu_si128(mn.as_ptr().cast())));
            let s = [spread(sc16, &Q4K_S[0]), spread(sc16, &Q4K_S[1]), spread(sc16, &Q4K_S[2]), spread(sc16, &Q4K_S[3])];
            let qa = _mm512_loadu_si512(b[16..].as_ptr().cast());
            let qb = _mm512_loadu_si512(b[80..].as_ptr().cast());
            let w = [
                _mm512_and_si512(qa, m4),
                _mm512_and_si512(_mm512_srli_epi16(qa, 4), m4),
                _mm512_and_si512(qb, m4),
                _mm512_and_si512(_mm512_srli_epi16(qb, 4), m4),
            ];
            k_rows(&w, &s, mn16, d, dmin, x, r0, g, &mut acc, &mut accm);
        }
        k_finish(&acc, &accm)
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c")]
unsafe fn q6k<const R: usize>(row: &[u8], x: &Quantized, r0: usize) -> [f32; R] {
    // SAFETY (whole body): as in `q4k`.
    unsafe {
        let (m4, m3) = (_mm512_set1_epi8(0xF), _mm512_set1_epi8(3));
        let mut acc = [_mm512_setzero_ps(); R];
        let mut accc = [_mm256_setzero_ps(); R];
        for g in 0..x.groups {
            let b = &row[g * 210..g * 210 + 210];
            prefetch(b.as_ptr(), 210);
            let d = f16_at(b, 208);
            let sc16y = _mm256_cvtepi8_epi16(_mm_loadu_si128(b[192..].as_ptr().cast()));
            let sc16 = _mm512_castsi256_si512(sc16y);
            let mut w = [_mm512_setzero_si512(); 4];
            for h in 0..2 {
                let q = _mm512_loadu_si512(b[64 * h..].as_ptr().cast());
                let hb = _mm256_loadu_si256(b[128 + 32 * h..].as_ptr().cast());
                let hi = _mm512_inserti64x4(_mm512_castsi256_si512(hb), _mm256_srli_epi16(hb, 2), 1);
                w[2 * h] = _mm512_or_si512(_mm512_and_si512(q, m4), _mm512_slli_epi16(_mm512_and_si512(hi, m3), 4));
                w[2 * h + 1] = _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi16(q, 4), m4),
                    _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(hi, 4), m3), 4),
                );
            }
            let s = [spread(sc16, &Q6K_S[0]), spread(sc16, &Q6K_S[1]), spread(sc16, &Q6K_S[2]), spread(sc16, &Q6K_S[3])];
            k_rows(&w, &s, sc16y, d, 32.0 * d, x, r0, g, &mut acc, &mut accc);
        }
        k_finish(&acc, &accc)
    }
}

/// The K-quants' shared step: one decoded super-block, four vectors of 64 weights `w` as
/// unsigned bytes with their 16-bit scale vectors `s`, against activation rows `r0..r0 + R` of
/// group `g`: `acc += d·dx·Σ s·w·x` and `corr += dc·dx·Σ c·sums`, where `c` weighs the
/// 16-value activation sums (Q4_K: its mins, with `dc` = dmin; Q6_K: its scales, with `dc` =
/// 32·d, undoing the values' offset of 32). The dot product is `acc − corr` ([`k_finish`]).
///
/// Inlined into the kernels (whose target features its intrinsics take), as the matmul's tiles
/// are.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn k_rows<const R: usize>(
    w: &[__m512i; 4],
    s: &[__m512i; 4],
    c: __m256i,
    d: f32,
    dc: f32,
    x: &Quantized,
    r0: usize,
    g: usize,
    acc: &mut [__m512; R],
    corr: &mut [__m256; R],
) {
    for (r, (acc, corr)) in acc.iter_mut().zip(corr.iter_mut()).enumerate() {
        let at = (r0 + r) * x.groups + g;
        let xq = x.qs[at * 256..].as_ptr();
        let dx = x.d[at];
        // SAFETY: `xq` points at the group's 256 activations, `sums` at its 16 sums.
        unsafe {
            let mut p = _mm512_setzero_si512();
            for (i, (wi, si)) in w.iter().zip(s).enumerate() {
                let xi = _mm512_loadu_si512(xq.add(64 * i).cast());
                p = _mm512_dpwssd_epi32(p, _mm512_maddubs_epi16(*wi, xi), *si);
            }
            *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_set1_ps(d * dx), *acc);
            let sums = _mm256_loadu_si256(x.sums[at * 16..].as_ptr().cast());
            let m = _mm256_madd_epi16(sums, c);
            *corr = _mm256_fmadd_ps(_mm256_cvtepi32_ps(m), _mm256_set1_ps(dc * dx), *corr);
        }
    }
}

/// Each row's `acc − corr`, summed across lanes.
#[inline(always)]
unsafe fn k_finish<const R: usize>(acc: &[__m512; R], corr: &[__m256; R]) -> [f32; R] {
    // SAFETY: register arithmetic only.
    std::array::from_fn(|r| unsafe { _mm512_reduce_add_ps(acc[r]) - hsum256(corr[r]) })
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c")]
unsafe fn q8_0<const R: usize>(row: &[u8], x: &Quantized, r0: usize) -> [f32; R] {
    if x.group == 32 {
        // SAFETY: as the caller promises.
        return unsafe { q8_0_by_block::<R>(row, x, r0) };
    }
    // SAFETY (whole body): as in `q4k`; a group of 256 activations is eight weight blocks.
    unsafe {
        let zero = _mm512_setzero_si512();
        let mut acc = [_mm512_setzero_ps(); R];
        for g in 0..x.groups {
            let mut part = [_mm512_setzero_ps(); R];
            for pair in 0..4 {
                let b = &row[(8 * g + 2 * pair) * 34..(8 * g + 2 * pair + 2) * 34];
                prefetch(b.as_ptr(), 68);
                let wq = _mm512_inserti64x4(
                    _mm512_castsi256_si512(_mm256_loadu_si256(b[2..].as_ptr().cast())),
                    _mm256_loadu_si256(b[36..].as_ptr().cast()),
                    1,
                );
                // |w| as unsigned bytes, w's sign moved onto the activations.
                let (aw, neg) = (_mm512_abs_epi8(wq), _mm512_movepi8_mask(wq));
                let dw = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(f16_at(b, 0)), _mm512_set1_ps(f16_at(b, 34)));
                for (r, part) in part.iter_mut().enumerate() {
                    let at = (r0 + r) * x.groups + g;
                    let xq = _mm512_loadu_si512(x.qs[at * 256 + 64 * pair..].as_ptr().cast());
                    let xs = _mm512_mask_sub_epi8(xq, neg, zero, xq);
                    let p = _mm512_dpbusd_epi32(zero, aw, xs);
                    *part = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), dw, *part);
                }
            }
            for r in 0..R {
                acc[r] = _mm512_fmadd_ps(part[r], _mm512_set1_ps(x.d[(r0 + r) * x.groups + g]), acc[r]);
            }
        }
        let mut out = [0f32; R];
        for r in 0..R {
            out[r] = _mm512_reduce_add_ps(acc[r]);
        }
        out
    }
}

/// Q8_0 against activations with a scale per block of 32.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c")]
unsafe fn q8_0_by_block<const R: usize>(row: &[u8], x: &Quantized, r0: usize) -> [f32; R] {
    // SAFETY (whole body): as in `q4k`.
    unsafe {
        let zero = _mm256_setzero_si256();
        let mut acc = [_mm256_setzero_ps(); R];
        for g in 0..x.groups {
            let b = &row[g * 34..g * 34 + 34];
            prefetch(b.as_ptr(), 34);
            let d = f16_at(b, 0);
            let wq = _mm256_loadu_si256(b[2..].as_ptr().cast());
            let (aw, neg) = (_mm256_abs_epi8(wq), _mm256_movepi8_mask(wq));
            for (r, acc) in acc.iter_mut().enumerate() {
                let at = (r0 + r) * x.groups + g;
                let xq = _mm256_loadu_si256(x.qs[at * 32..].as_ptr().cast());
                let xs = _mm256_mask_sub_epi8(xq, neg, zero, xq);
                let p = _mm256_dpbusd_epi32(zero, aw, xs);
                *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d * x.d[at]), *acc);
            }
        }
        let mut out = [0f32; R];
        for r in 0..R {
            out[r] = hsum256(acc[r]);
        }
        out
    }
}
