//! `y = x Wᵀ` on the CPU: f32 activations `x` `[T, K]`, weights `W` `[N, K]` packed once at
//! load ([`PackedWeight`], f32 or bf16 as the checkpoint stores them), `y` `[T, N]` f32. The
//! one product behind every projection, expert and LM head, in decode and in prefill.
//!
//! Tasks take whole panels of `W` (32 output columns) and are shared out over rayon's pool:
//! decode streams every weight once across both cores, and the selected experts of a MoE layer
//! run in one parallel region. Within a task, tiles of up to `MR` rows of `x` × one panel keep
//! 2·`MR` accumulator registers busy per `k` step (see [`tile`]). Long prompts walk `k` in
//! blocks of [`KC`] so a panel block stays in L1 while every row of `x` passes over it.
//!
//! Summation order is fixed per output element (see [`tile`]): decode reproduces a prompt's
//! projections bit for bit, on any instruction set.

mod packed;
mod tile;
#[cfg(target_arch = "x86_64")]
mod x86;

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};
use rayon::prelude::*;

use crate::slices::with_f32_slice;
use packed::Panels;
pub use packed::{packs, PackedWeight, PANEL};
use tile::{Kernels, Tile};

/// Steps of `k` per block when `x` has more rows than one tile: 32 KiB of f32 panel (16 of
/// bf16), which stays in L1 while the tiles of `x` pass over it.
const KC: usize = 256;

/// Rows of `x` per block of a prompt: a block's `KC` columns (480 KiB) stay in L2 while a
/// task's panels pass over them. A multiple of every instruction set's tile height.
const MC: usize = 480;

/// Weight bytes a decode task reads at least: enough that scheduling a task is noise.
const TASK_BYTES: usize = 256 << 10;

fn kernels() -> Kernels {
    static PICKED: std::sync::OnceLock<Kernels> = std::sync::OnceLock::new();
    *PICKED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if let Some(k) = x86::pick() {
            return k;
        }
        tile::SCALAR
    })
}

/// The instruction set the products run on (`avx512`, `avx2` or `scalar`).
pub fn instruction_set() -> &'static str {
    kernels().name
}

/// One product of a group.
struct Product<'a> {
    x: &'a [f32],
    t: usize,
    w: &'a PackedWeight,
    y: Out,
}

/// `y`, shared by tasks that write disjoint columns.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: tasks write disjoint sets of elements (their own panels' columns).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// `y = x Wᵀ` for slices: `x` `[t, K]`, `y` `[t, N]` (overwritten).
pub fn matmul_t_slices(x: &[f32], t: usize, w: &PackedWeight, y: &mut [f32]) {
    let (n, k) = (w.out_dim(), w.in_dim());
    assert!(x.len() >= t * k && y.len() >= t * n, "matmul: slices do not fit [{t}, {k}] x [{n}, {k}]ᵀ");
    if k == 0 {
        y[..t * n].fill(0.0);
    }
    run(kernels(), &[Product { x, t, w, y: Out(y.as_mut_ptr()) }]);
}

/// [`matmul_t_slices`] on the calling thread alone, for callers that are already one task of
/// a parallel region (a block of [`crate::prompt_attention`]).
pub(crate) fn matmul_t_serial(x: &[f32], t: usize, w: &PackedWeight, y: &mut [f32]) {
    let (n, k) = (w.out_dim(), w.in_dim());
    assert!(x.len() >= t * k && y.len() >= t * n, "matmul: slices do not fit [{t}, {k}] x [{n}, {k}]ᵀ");
    if k == 0 {
        y[..t * n].fill(0.0);
    } else if t > 0 && n > 0 {
        let p = Product { x, t, w, y: Out(y.as_mut_ptr()) };
        // SAFETY: x and y fit (asserted), and the one task covers every panel.
        unsafe { task(kernels(), &p, 0..n.div_ceil(PANEL)) }
    }
}

/// The products' tasks, shared out at once over the pool.
fn run(kern: Kernels, items: &[Product]) {
    let threads = rayon::current_num_threads().max(1);
    let mut tasks = Vec::new();
    for (i, p) in items.iter().enumerate() {
        let (n, k) = (p.w.out_dim(), p.w.in_dim());
        if p.t == 0 || n == 0 || k == 0 {
            continue;
        }
        let panels = n.div_ceil(PANEL);
        // A prompt: two ranges of panels per thread, so a block of x stays in L2 across a
        // task's panels. Decode: tasks of about TASK_BYTES, their count a multiple of the
        // thread count and their sizes equal to a panel, so every thread streams weights until
        // the end (finer tasks measured slower).
        let count = if p.t > kern.mr {
            (2 * threads).min(panels)
        } else {
            let bytes = panels * k * PANEL * p.w.dtype().size_in_bytes();
            (bytes / TASK_BYTES).clamp(1, panels.div_ceil(threads).max(1)).next_multiple_of(threads).min(panels)
        };
        for c in 0..count {
            tasks.push((i, c * panels / count..(c + 1) * panels / count));
        }
    }
    tasks.into_par_iter().for_each(|(i, panels)| {
        let p = &items[i];
        // SAFETY: x is [t, k], y is [t, n] (checked by the callers), the panels lie within w,
        // and this task writes only its panels' columns of y.
        unsafe { task(kern, p, panels) }
    });
}

/// # Safety
/// See [`run`].
unsafe fn task(kern: Kernels, p: &Product, panels: std::ops::Range<usize>) {
    let (n, k, t, stride) = (p.w.out_dim(), p.w.in_dim(), p.t, p.w.stride());
    let (mc, kc) = if t > kern.mr { (MC, KC) } else { (t, k) };
    let wide = if t <= kern.wide_rows { kern.wide } else { 1 };
    for m_block in (0..t).step_by(mc) {
        for k0 in (0..k).step_by(kc) {
            let steps = kc.min(k - k0);
            let mut panel = panels.start;
            while panel < panels.end {
                let side = wide.min(panels.end - panel);
                let col0 = panel * PANEL;
                for m0 in (m_block..(m_block + mc).min(t)).step_by(kern.mr) {
                    let tile = Tile {
                        x: p.x[m0 * k + k0..].as_ptr(),
                        ldx: k,
                        rows: kern.mr.min(t - m0),
                        kc: steps,
                        y: p.y.0.wrapping_add(m0 * n + col0),
                        ldy: n,
                        panels: side,
                        wstride: match p.w.panels() {
                            Panels::F32(_) => stride * PANEL,
                            Panels::Bf16(_) => stride * PANEL / 2,
                        },
                        cols: (side * PANEL).min(n - col0),
                        first: k0 == 0,
                    };
                    // SAFETY: the tile lies within x, the panel and y (see the caller).
                    unsafe {
                        match p.w.panels() {
                            Panels::F32(d) => (kern.f32)(&tile, d[(panel * stride + k0) * PANEL..].as_ptr()),
                            Panels::Bf16(d) => (kern.bf16)(&tile, d[(panel * stride + k0) * PANEL / 2..].as_ptr()),
                        }
                    }
                }
                panel += side;
            }
        }
    }
}

/// `x` `[T, K]` f32 on the CPU times `w` transposed → `[T, N]` f32.
pub fn matmul_t(x: &Tensor, w: &PackedWeight) -> candle_core::Result<Tensor> {
    Ok(matmul_t_grouped(&[(x, w)])?.remove(0))
}

/// [`matmul_t`] for several `(x, w)` pairs in one parallel region: the selected experts of a
/// MoE layer neither wait for the pool one by one nor leave a thread idle at each one's end.
pub fn matmul_t_grouped(pairs: &[(&Tensor, &PackedWeight)]) -> candle_core::Result<Vec<Tensor>> {
    let xs: Vec<Tensor> = pairs.iter().map(|(x, _)| x.contiguous()).collect::<candle_core::Result<_>>()?;
    let mut outs = Vec::with_capacity(pairs.len());
    for (x, (_, w)) in xs.iter().zip(pairs) {
        let (t, k) = x.dims2()?;
        if k != w.in_dim() || x.dtype() != DType::F32 || !x.device().is_cpu() {
            candle_core::bail!(
                "matmul: x [{t}, {k}] {:?} on {:?} does not fit a packed [{}, {}] weight (f32 on the CPU)",
                x.dtype(),
                x.device(),
                w.out_dim(),
                w.in_dim()
            );
        }
        outs.push(Vec::<f32>::with_capacity(t * w.out_dim()));
    }
    {
        let guards: Vec<_> = xs.iter().map(|x| x.storage_and_layout()).collect();
        let mut items = Vec::with_capacity(pairs.len());
        for (((storage, layout), (_, w)), y) in guards.iter().zip(pairs).zip(outs.iter_mut()) {
            let (t, k) = layout.shape().dims2()?;
            let Storage::Cpu(CpuStorage::F32(x)) = &**storage else { candle_core::bail!("matmul: x must be f32 on the CPU") };
            let x = &x[layout.start_offset()..layout.start_offset() + t * k];
            items.push(Product { x, t, w, y: Out(y.as_mut_ptr()) });
        }
        run(kernels(), &items);
    }
    for (y, (x, w)) in outs.iter_mut().zip(xs.iter().zip(pairs.iter().map(|p| p.1))) {
        let len = x.dim(0)? * w.out_dim();
        if w.in_dim() == 0 {
            y.resize(len, 0.0);
        } else {
            // SAFETY: with K > 0 every element of y was written by the first k block of the
            // one tile that covers it (run's tasks cover all panels, tiles all rows).
            unsafe { y.set_len(len) };
        }
    }
    outs.into_iter().zip(&xs).zip(pairs).map(|((y, x), (_, w))| Tensor::from_vec(y, (x.dim(0)?, w.out_dim()), &Device::Cpu)).collect()
}

/// `x` `[B, T, K]` f32 on the CPU, batch `b` times `ws[b]` transposed → `[B, T, N]` in one
/// buffer and one parallel region (attention's heads: scores against each kv head's keys,
/// probabilities against its values).
pub fn matmul_t_batched(x: &Tensor, ws: &[PackedWeight]) -> candle_core::Result<Tensor> {
    let (b, t, k) = x.dims3()?;
    let n = ws.first().map_or(0, PackedWeight::out_dim);
    if ws.len() != b || ws.iter().any(|w| w.out_dim() != n || w.in_dim() != k) || x.dtype() != DType::F32 || !x.device().is_cpu() {
        candle_core::bail!(
            "matmul: x [{b}, {t}, {k}] {:?} does not fit {} packed weights of [{n}, {k}] (f32 on the CPU)",
            x.dtype(),
            ws.len()
        );
    }
    let mut y = Vec::<f32>::with_capacity(b * t * n);
    let out = Out(y.as_mut_ptr());
    with_f32_slice(x, "matmul", |v| {
        let items: Vec<Product> = ws
            .iter()
            .enumerate()
            .map(|(i, w)| Product { x: &v[i * t * k..(i + 1) * t * k], t, w, y: Out(out.0.wrapping_add(i * t * n)) })
            .collect();
        run(kernels(), &items);
    })?;
    if k == 0 {
        y.resize(b * t * n, 0.0);
    } else {
        // SAFETY: with K > 0 every element was written by the first k block of its tile.
        unsafe { y.set_len(b * t * n) };
    }
    Tensor::from_vec(y, (b, t, n), &Device::Cpu)
}

/// Threads the products split panels across (rayon's pool: `RAYON_NUM_THREADS`, else one per
/// core).
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// Memory read bandwidth in bytes/s as decode sees it: the best of a few one-row products
/// with an f32 weight of `bytes` (make it larger than the last-level cache).
pub fn read_bandwidth(bytes: usize) -> f64 {
    let k = 4096;
    let n = (bytes / 4 / k).max(1);
    let w = PackedWeight::filled(n, k, 0.5);
    let x = vec![1f32; k];
    let mut y = vec![0f32; n];
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        matmul_t_slices(&x, 1, &w, &mut y);
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&y);
    (n * k * 4) as f64 / best
}

#[cfg(test)]
mod tests;
