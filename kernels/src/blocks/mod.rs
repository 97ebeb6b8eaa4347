//! `y = x Wᵀ` straight on a GGUF file's quantized blocks (Q4_K, Q6_K, Q8_0) in the layout
//! llama.cpp writes, so a weight kept in its blocks exists once: in the mapped file, read in
//! place, with no repacked or dequantised copy. Activations are rounded to 8 bits per block
//! (llama.cpp's Q8_K and Q8_0) and every product is an integer dot product per block.
//!
//! The vector kernels ([`x86`], AVX-512 with VNNI, and F16C) compute the same integer sums as the
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
        if k == 0 || !k.is_multiple_of(bv) {
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
        matmul_t_grouped(&mut [Product { x, m, w: self, y }]);
    }
}

/// One product of [`matmul_t_grouped`]: `y = x Wᵀ`, `x` `[m, k]`, `y` `[m, n]`.
pub struct Product<'a> {
    pub x: &'a [f32],
    pub m: usize,
    pub w: &'a BlockMatrix,
    pub y: &'a mut [f32],
}

/// Several products in one parallel region (a MoE layer's selected experts, stacked q|k|v
/// parts): no thread waits at each product's end, and activations shared by several
/// products are rounded once per block type.
pub fn matmul_t_grouped(products: &mut [Product]) {
    for p in products.iter() {
        let (n, k) = (p.w.n, p.w.k);
        assert!(p.x.len() >= p.m * k && p.y.len() >= p.m * n, "block matmul: slices do not fit [{}, {k}] x [{n}, {k}]ᵀ", p.m);
    }
    // Activations rounded once per (slice, block type).
    let mut rounded: Vec<((usize, usize, BlockType), activations::Quantized)> = Vec::new();
    let mut which = Vec::with_capacity(products.len());
    for p in products.iter() {
        let key = (p.x.as_ptr() as usize, p.m * p.w.k, p.w.ty);
        let i = match rounded.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                rounded.push((key, activations::quantize(p.w.ty, &p.x[..p.m * p.w.k], p.m, p.w.k)));
                rounded.len() - 1
            }
        };
        which.push(i);
    }
    // Tasks of whole weight rows, about 64 KiB of blocks each, fewer for a small product: a
    // prompt's rows all pass over a task's weights while they are in L2, and there are
    // enough tasks to keep every thread busy without a scheduling cost per few rows.
    let threads = rayon::current_num_threads().max(1);
    let mut tasks = Vec::new();
    for (i, p) in products.iter().enumerate() {
        let (n, rb) = (p.w.n, p.w.row_bytes());
        if p.m == 0 || n == 0 {
            continue;
        }
        let per_task = (n / (4 * threads)).clamp(1, 16.max(64 * 1024 / rb.max(1)));
        tasks.extend((0..n.div_ceil(per_task)).map(|t| (i, t * per_task..((t + 1) * per_task).min(n))));
    }
    let outs: Vec<Out> = products.iter_mut().map(|p| Out(p.y.as_mut_ptr())).collect();
    let products = &*products;
    let vector = vector_kernels();
    tasks.into_par_iter().for_each(|(i, rows)| {
        let (p, xq, y) = (&products[i], &rounded[which[i]].1, outs[i]);
        // SAFETY: y is [m, n] (asserted above) and only this task writes these columns.
        unsafe { task(p.w, xq, p.m, rows, y, vector) }
    });
}

/// Rows `rows` of `w` against every row of `xq`, into columns `rows` of `y` `[m, n]`.
///
/// # Safety
/// `y` must hold `m · n` values and no other thread may write these columns.
unsafe fn task(w: &BlockMatrix, xq: &activations::Quantized, m: usize, rows: Range<usize>, y: Out, vector: bool) {
    let (n, rb, data) = (w.n, w.row_bytes(), w.data());
    for r0 in (0..m).step_by(4) {
        let left = (m - r0).min(4);
        for j in rows.clone() {
            let row = &data[j * rb..(j + 1) * rb];
            let mut out = [0f32; 4];
            if vector {
                // SAFETY: the CPU has the kernels' features, `row` is one row of blocks and
                // rows r0..r0 + left exist in `xq`.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    match left {
                        1 => out[..1].copy_from_slice(&x86::dots::<1>(w.ty, row, xq, r0)),
                        2 => out[..2].copy_from_slice(&x86::dots::<2>(w.ty, row, xq, r0)),
                        3 => out[..3].copy_from_slice(&x86::dots::<3>(w.ty, row, xq, r0)),
                        _ => out = x86::dots::<4>(w.ty, row, xq, r0),
                    }
                }
            } else {
                for (r, o) in out.iter_mut().enumerate().take(left) {
                    *o = scalar::dot(w.ty, row, xq, r0 + r);
                }
            }
            for (r, &v) in out.iter().enumerate().take(left) {
                // SAFETY: (r0 + r, j) lies in y (the caller's promise).
                unsafe { *y.0.add((r0 + r) * n + j) = v };
            }
        }
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
