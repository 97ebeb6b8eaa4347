//! The integer products of [`super::x86`] written out one value at a time: the same rounding
//! and the same integer sums, so the vector kernels are checked against it to float rounding.

use super::activations::{q4k_order, Quantized};
use super::format::{f16_at, scale_min_k4, BlockType, QK_K};

/// Dot product of one weight row (`blocks` bytes) with activation row `r` of `x`.
pub(crate) fn dot(ty: BlockType, row: &[u8], x: &Quantized, r: usize) -> f32 {
    let bb = ty.block_bytes();
    if ty == BlockType::Q8_0 {
        let k = x.groups * x.group;
        let (xs, ds) = (&x.qs[r * k..(r + 1) * k], &x.d[r * x.groups..(r + 1) * x.groups]);
        return row
            .chunks_exact(bb)
            .zip(xs.chunks_exact(32))
            .enumerate()
            .map(|(b, (w, v))| {
                let s: i32 = w[2..34].iter().zip(v).map(|(&w, &v)| (w as i8) as i32 * v as i32).sum();
                f16_at(w, 0) * ds[b * 32 / x.group] * s as f32
            })
            .sum();
    }
    let mut total = 0f32;
    for g in 0..x.groups {
        let b = &row[g * bb..(g + 1) * bb];
        let at = r * x.groups + g;
        let (dx, xs) = (x.d[at], &x.qs[at * x.group..(at + 1) * x.group]);
        match ty {
            BlockType::Q8_0 => unreachable!("handled above"),
            BlockType::Q4K => {
                let sums = &x.sums[at * 16..at * 16 + 16];
                let (scales, qs) = (&b[4..16], &b[16..144]);
                let (mut isum, mut msum) = (0i32, 0i32);
                for j in 0..8 {
                    let (sc, m) = scale_min_k4(j, scales);
                    let mut s = 0i32;
                    for l in 0..32 {
                        let byte = qs[32 * (j / 2) + l];
                        let u = if j % 2 == 0 { byte & 0xF } else { byte >> 4 };
                        s += u as i32 * xs[q4k_order(32 * j + l)] as i32;
                    }
                    isum += sc as i32 * s;
                    msum += m as i32 * (sums[2 * j] as i32 + sums[2 * j + 1] as i32);
                }
                total += f16_at(b, 0) * dx * isum as f32 - f16_at(b, 2) * dx * msum as f32;
            }
            BlockType::Q6K => {
                let sums = &x.sums[at * 16..at * 16 + 16];
                let mut u = [0u8; QK_K];
                for h in 0..2 {
                    let (ql, qh) = (&b[64 * h..64 * h + 64], &b[128 + 32 * h..160 + 32 * h]);
                    for l in 0..32 {
                        u[128 * h + l] = (ql[l] & 0xF) | ((qh[l] & 3) << 4);
                        u[128 * h + l + 32] = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
                        u[128 * h + l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                        u[128 * h + l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
                    }
                }
                let (mut isum, mut corr) = (0i32, 0i32);
                for (grp, sum) in sums.iter().enumerate() {
                    let sc = (b[192 + grp] as i8) as i32;
                    let s: i32 = (0..16).map(|i| u[16 * grp + i] as i32 * xs[16 * grp + i] as i32).sum();
                    isum += sc * s;
                    corr += sc * *sum as i32;
                }
                total += f16_at(b, 208) * dx * (isum - 32 * corr) as f32;
            }
        }
    }
    total
}
