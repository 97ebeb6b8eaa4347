//! `y = x Wᵀ` straight on a GGUF file's quantized blocks (Q4_K, Q6_K, Q8_0) in the layout
//! llama.cpp writes, so a weight kept in its blocks exists once: in the mapped file, read in
//! place, with no repacked or dequantised copy. Activations are rounded to 8 bits per block
//! (llama.cpp's Q8_K and Q8_0) and every product is an integer dot product per block.
//!
//! The vector kernels ([`x86`], AVX-512 with VNNI) compute the same integer sums as the
//! scalar ones ([`scalar`]); both are checked against the dequantised weights ([`format`]).

mod activations;
mod format;
mod scalar;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::ops::Range;
use std::sync::Arc;

use rayon::prelude::*;

pub use format::{dequantize_block, BlockType, QK8_0, QK_K};

/// Bytes a [`BlockMatrix`] reads its blocks from: a mapped file or an owned buffer.
pub type Bytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// An `[n, k]` weight in blocks of one [`BlockType`], row after row, as GGUF stores it.
#[derive(Clone)]
pub struct BlockMatrix {
    ty: BlockType,
    n: usize,
    k: usize,
    bytes: Bytes,
    range: Range<usize>,
}

impl std::fmt::Debug for BlockMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlockMatrix({} [{}, {}], {} bytes)", self.ty.name(), self.n, self.k, self.range.len())
    }
}

impl BlockMatrix {
    /// `[n, k]` in `ty` blocks at `range` of `bytes`; the sizes must agree.
    pub fn new(ty: BlockType, n: usize, k: usize, bytes: Bytes, range: Range<usize>) -> Result<Self, String> {
        let bv = ty.block_values();
        if k == 0 || k % bv != 0 {
            return Err(format!("{} rows of {k} values do not split into blocks of {bv}", ty.name()));
        }
        let want = n.checked_mul(k / bv).and_then(|b| b.checked_mul(ty.block_bytes()));
        if want != Some(range.len()) {
            return Err(format!("[{n}, {k}] in {} needs {want:?} bytes, the data has {}", ty.name(), range.len()));
        }
        if range.end > (*bytes).as_ref().len() {
            return Err(format!("blocks at {range:?} lie beyond the data's {} bytes", (*bytes).as_ref().len()));
        }
        Ok(BlockMatrix { ty, n, k, bytes, range })
    }

    pub fn block_type(&self) -> BlockType {
        self.ty
    }

    pub fn out_dim(&self) -> usize {
        self.n
    }

    pub fn in_dim(&self) -> usize {
        self.k
    }

    /// Bytes of blocks.
    pub fn bytes(&self) -> usize {
        self.range.len()
    }

    fn row_bytes(&self) -> usize {
        self.k / self.ty.block_values() * self.ty.block_bytes()
    }

    fn data(&self) -> &[u8] {
        &(*self.bytes).as_ref()[self.range.clone()]
    }

    /// Row `r`'s values.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let (bb, bv) = (self.ty.block_bytes(), self.ty.block_values());
        let row = &self.data()[r * self.row_bytes()..(r + 1) * self.row_bytes()];
        for (b, o) in row.chunks_exact(bb).zip(out[..self.k].chunks_exact_mut(bv)) {
            dequantize_block(self.ty, b, o);
        }
    }

    /// The whole matrix in f32, `[n, k]` row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.n * self.k];
        out.par_chunks_mut(self.k).enumerate().for_each(|(r, o)| self.dequantize_row(r, o));
        out
    }

    /// `y = x Wᵀ`: `x` `[m, k]`, `y` `[m, n]` (overwritten).
    pub fn matmul_t(&self, x: &[f32], m: usize, y: &mut [f32]) {
        let (n, k) = (self.n, self.k);
        assert!(x.len() >= m * k && y.len() >= m * n, "block matmul: slices do not fit [{m}, {k}] x [{n}, {k}]ᵀ");
        if m == 0 || n == 0 {
            return;
        }
        let xq = activations::quantize(self.ty, &x[..m * k], m, k);
        let vector = vector_kernels();
        let rb = self.row_bytes();
        let data = self.data();
        // Tasks of whole weight rows: a prompt's rows all pass over a task's weights while
        // they are in L1/L2; decode splits the rows finely enough to keep every thread busy.
        let threads = rayon::current_num_threads().max(1);
        let per_task = (n / (4 * threads)).clamp(1, 16.max(16 * 1024 / rb.max(1)));
        let y_ptr = Out(y.as_mut_ptr());
        (0..n.div_ceil(per_task)).into_par_iter().for_each(|t| {
            let rows = t * per_task..((t + 1) * per_task).min(n);
            let y = y_ptr;
            for r0 in (0..m).step_by(4) {
                for j in rows.clone() {
                    let w = &data[j * rb..(j + 1) * rb];
                    let left = m - r0;
                    let mut out = [0f32; 4];
                    if vector {
                        // SAFETY: the CPU has the kernels' features, `w` is one row of
                        // blocks and rows r0..r0 + left exist in `xq`.
                        #[cfg(target_arch = "x86_64")]
                        unsafe {
                            match left {
                                1 => out[..1].copy_from_slice(&x86::dots::<1>(self.ty, w, &xq, r0)),
                                2 => out[..2].copy_from_slice(&x86::dots::<2>(self.ty, w, &xq, r0)),
                                3 => out[..3].copy_from_slice(&x86::dots::<3>(self.ty, w, &xq, r0)),
                                _ => out = x86::dots::<4>(self.ty, w, &xq, r0),
                            }
                        }
                    } else {
                        for (r, o) in out.iter_mut().enumerate().take(left.min(4)) {
                            *o = scalar::dot(self.ty, w, &xq, r0 + r);
                        }
                    }
                    for (r, &v) in out.iter().enumerate().take(left.min(4)) {
                        // SAFETY: (r0 + r, j) lies in y, and only this task writes column j.
                        unsafe { *y.0.add((r0 + r) * n + j) = v };
                    }
                }
            }
        });
    }
}

/// `y`, shared by tasks that write disjoint columns.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: tasks write disjoint columns.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// Whether products run on the vector kernels here (else on the scalar ones, same sums).
pub fn vector_kernels() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(x86::available)
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}
