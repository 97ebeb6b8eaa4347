//! Activation rows rounded to 8 bits for the integer products: per super-block of 256 with
//! 16-value sums for the K-quants (llama.cpp's Q8_K); symmetric to ±127 for Q8_0 weights, per
//! 256 values when rows split into them (one scale per eight weight blocks: the float work per
//! block is one multiply-add shared by all activation rows), else per block of 32.

use rayon::prelude::*;

use super::format::{BlockType, QK8_0, QK_K};

/// `m` rows of `k` activations rounded for products against `ty` blocks.
pub(crate) struct Quantized {
    /// Values per scale (256, or 32 for Q8_0 rows that do not split into 256).
    pub group: usize,
    /// Groups per row.
    pub groups: usize,
    /// One scale per group, row after row.
    pub d: Vec<f32>,
    /// The rounded values, row after row; for Q4_K each 128 values reordered as the weight's
    /// nibbles come out of 64 bytes (sub-blocks 0, 2, 1, 3), see [`q4k_order`].
    pub qs: Vec<i8>,
    /// Sums of every 16 rounded values, in natural order (used by the K-quants).
    pub sums: Vec<i16>,
}

/// Where value `i` of a Q4_K super-block goes: 64 bytes of weights hold sub-blocks `2j` (low
/// nibbles) and `2j + 1` (high nibbles) of two pairs, so a 64-byte load of low nibbles pairs
/// with sub-blocks 0 and 2 (then 4 and 6).
pub(crate) fn q4k_order(i: usize) -> usize {
    let (half, sub, at) = (i / 128, (i % 128) / 32, i % 32);
    let slot = [0, 2, 1, 3][sub];
    half * 128 + slot * 32 + at
}

/// One row's index and its scales, values and sums, as [`quantize`] fills them.
type Row<'a> = (usize, (&'a mut [f32], (&'a mut [i8], &'a mut [i16])));

/// Rounds `x` (`m` rows of `k`) for `ty`; `k` must be a multiple of `ty`'s block.
pub(crate) fn quantize(ty: BlockType, x: &[f32], m: usize, k: usize) -> Quantized {
    let group = match ty {
        BlockType::Q8_0 if !k.is_multiple_of(QK_K) => QK8_0,
        _ => QK_K,
    };
    let groups = k / group;
    // Sums are kept for every type (Q8_0's go unused): one layout, rows split alike.
    let mut q = Quantized { group, groups, d: vec![0.0; m * groups], qs: vec![0; m * k], sums: vec![0; m * groups * 16] };
    let row = |(r, (d, (qs, sums))): Row| {
        let x = &x[r * k..(r + 1) * k];
        for g in 0..groups {
            let (src, dst) = (&x[g * group..(g + 1) * group], &mut qs[g * group..(g + 1) * group]);
            if ty == BlockType::Q8_0 {
                d[g] = round_q8_0(src, dst);
                continue;
            }
            let mut natural = [0i8; QK_K];
            d[g] = round_q8_k(src, &mut natural);
            for (s, chunk) in sums[g * 16..(g + 1) * 16].iter_mut().zip(natural.chunks_exact(16)) {
                *s = chunk.iter().map(|&v| v as i16).sum();
            }
            if ty == BlockType::Q4K {
                for (i, &v) in natural.iter().enumerate() {
                    dst[q4k_order(i)] = v;
                }
            } else {
                dst.copy_from_slice(&natural);
            }
        }
    };
    let rows = q.d.chunks_mut(groups).zip(q.qs.chunks_mut(k).zip(q.sums.chunks_mut(groups * 16)));
    // A prompt's rows in parallel; a decode row stays on this thread.
    if m >= 8 {
        rows.enumerate().par_bridge().for_each(row);
    } else {
        rows.enumerate().for_each(row);
    }
    q
}

/// Symmetric rounding to ±127 (llama.cpp's `quantize_row_q8_0`): returns the scale.
fn round_q8_0(x: &[f32], out: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    for (o, v) in out.iter_mut().zip(x) {
        *o = (v * id).round() as i8;
    }
    d
}

/// llama.cpp's `quantize_row_q8_K`: the value of largest magnitude maps to −128, the rest
/// round to nearest and clamp at 127; returns the scale.
fn round_q8_k(x: &[f32], out: &mut [i8]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        out.fill(0);
        return 0.0;
    }
    let iscale = -128.0 / max;
    for (o, v) in out.iter_mut().zip(x) {
        *o = ((iscale * v).round() as i32).min(127) as i8;
    }
    1.0 / iscale
}
