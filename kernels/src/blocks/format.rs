//! GGUF's block formats as llama.cpp writes them (ggml-common.h), read from raw bytes: the
//! scalar dequantisation every kernel here is checked against.

use half::f16;

/// Values per super-block of the K-quants.
pub const QK_K: usize = 256;
/// Values per Q8_0 block.
pub const QK8_0: usize = 32;

/// The block types products run on directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockType {
    /// `{d: f16, qs: [i8; 32]}`: `w = d·q`.
    Q8_0,
    /// `{d, dmin: f16, scales: [u8; 12], qs: [u8; 128]}`: eight sub-blocks of 32 with 6-bit
    /// scales and mins, 4-bit values: `w = d·sc·q − dmin·m`.
    Q4K,
    /// `{ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16}`: sixteen groups of 16 with
    /// 8-bit scales, 6-bit values: `w = d·sc·(q − 32)`.
    Q6K,
}

impl BlockType {
    /// Values one block holds.
    pub fn block_values(self) -> usize {
        match self {
            BlockType::Q8_0 => QK8_0,
            BlockType::Q4K | BlockType::Q6K => QK_K,
        }
    }

    /// Bytes one block takes.
    pub fn block_bytes(self) -> usize {
        match self {
            BlockType::Q8_0 => 34,
            BlockType::Q4K => 144,
            BlockType::Q6K => 210,
        }
    }

    /// GGUF's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            BlockType::Q8_0 => "Q8_0",
            BlockType::Q4K => "Q4_K",
            BlockType::Q6K => "Q6_K",
        }
    }
}

#[inline]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// Q4_K's `j`-th sub-block scale and min from its 12 packed bytes (ggml's `get_scale_min_k4`).
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// One block's values into `out` (`ty.block_values()` of them).
pub fn dequantize_block(ty: BlockType, b: &[u8], out: &mut [f32]) {
    match ty {
        BlockType::Q8_0 => {
            let d = f16_at(b, 0);
            for (o, &q) in out[..QK8_0].iter_mut().zip(&b[2..34]) {
                *o = d * (q as i8) as f32;
            }
        }
        BlockType::Q4K => {
            let (d, dmin, scales, qs) = (f16_at(b, 0), f16_at(b, 2), &b[4..16], &b[16..144]);
            for j in 0..4 {
                let (s1, m1) = scale_min_k4(2 * j, scales);
                let (s2, m2) = scale_min_k4(2 * j + 1, scales);
                let q = &qs[32 * j..32 * j + 32];
                for l in 0..32 {
                    out[64 * j + l] = d * s1 as f32 * (q[l] & 0xF) as f32 - dmin * m1 as f32;
                    out[64 * j + 32 + l] = d * s2 as f32 * (q[l] >> 4) as f32 - dmin * m2 as f32;
                }
            }
        }
        BlockType::Q6K => {
            let d = f16_at(b, 208);
            for h in 0..2 {
                let (ql, qh) = (&b[64 * h..64 * h + 64], &b[128 + 32 * h..128 + 32 * h + 32]);
                let sc = |i: usize| (b[192 + 8 * h + i] as i8) as f32;
                let y = &mut out[128 * h..128 * h + 128];
                for l in 0..32 {
                    let is = l / 16;
                    let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                    let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                    let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                    let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                    y[l] = d * sc(is) * q1 as f32;
                    y[l + 32] = d * sc(is + 2) * q2 as f32;
                    y[l + 64] = d * sc(is + 4) * q3 as f32;
                    y[l + 96] = d * sc(is + 6) * q4 as f32;
                }
            }
        }
    }
}
