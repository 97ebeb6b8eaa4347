//! `y = x Wᵀ` on the CPU for f32 activations and f32 or bf16 weights: the decode step's
//! projections, experts and LM head, and (bf16 weights, or the few tokens each expert gets)
//! prefill's too. `x` `[T, K]` is f32, `W` `[N, K]` f32 or bf16 (kept as stored: half the bytes
//! to read), `y` `[T, N]` f32.
//!
//! Decode reads every weight once per token, so its speed is memory bandwidth: the weight rows
//! are split across the thread pool (one core cannot pull the bandwidth two can), each weight
//! row is read once for all `T` rows of `x`, and the products run on wide vector registers
//! (AVX-512, or AVX2 with FMA, chosen at run time) in tiles of weight rows × rows of `x`, so a
//! loaded weight vector (widened from bf16 in registers) serves several rows of `x`.
//!
//! Each output element is summed in one fixed order (lane `i` of one accumulator takes the
//! elements `k ≡ i` mod the lane count, then the lanes are added), whatever the tile, the
//! number of rows of `x` or the thread count: a token's projection is the same bits in a
//! prompt and in decode.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use half::bf16;
use rayon::prelude::*;

/// Rows of `x` up to which [`matmul_t`] beats candle's GEMM on f32 weights (measured on
/// AVX-512: past a few dozen rows a GEMM's packing pays for itself). bf16 weights always take
/// this kernel: a GEMM would need them widened in memory first.
pub const MAX_ROWS: usize = 32;

/// Weight rows a thread takes at a time: large enough that scheduling is noise, small enough
/// that two threads share an expert's `[D, I]` down projection evenly.
const ROWS_PER_TASK: usize = 32;

/// The weight matrix as stored, `[N, K]` row-major.
#[derive(Clone, Copy, Debug)]
pub enum WeightRows<'a> {
    F32(&'a [f32]),
    Bf16(&'a [bf16]),
}

impl WeightRows<'_> {
    fn len(&self) -> usize {
        match self {
            WeightRows::F32(w) => w.len(),
            WeightRows::Bf16(w) => w.len(),
        }
    }
}

/// Where a task writes: `y` `[T, N]`, shared by tasks that write disjoint columns.
#[derive(Clone, Copy)]
struct Out {
    ptr: *mut f32,
    n: usize,
}
impl Out {
    /// The element `i` of `y` (a method, so closures capture the whole `Out`, which is Sync).
    fn at(self, i: usize) -> *mut f32 {
        self.ptr.wrapping_add(i)
    }
}

// SAFETY: tasks write disjoint sets of elements (their own weight rows' columns).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// Computes `y` for weight rows `rows` (all rows of `x`).
type BlockFn<W> = fn(x: &[f32], t: usize, k: usize, w: &[W], rows: std::ops::Range<usize>, out: Out);

#[derive(Clone, Copy)]
struct Kernels {
    f32: BlockFn<f32>,
    bf16: BlockFn<bf16>,
}

/// `y[t, n] = Σ_k x[t, k] · w[n, k]` for `x` `[t, k]`, `w` `[n, k]`, `y` `[t, n]`.
pub fn matmul_t_slices(x: &[f32], t: usize, k: usize, w: WeightRows, n: usize, y: &mut [f32]) {
    grouped_slices(&mut [Product { x, t, k, w, n, y }]);
}

/// One product `y = x Wᵀ` of a group: `x` `[t, k]`, `w` `[n, k]`, `y` `[t, n]`.
struct Product<'a> {
    x: &'a [f32],
    t: usize,
    k: usize,
    w: WeightRows<'a>,
    n: usize,
    y: &'a mut [f32],
}

/// Several independent products (the selected experts of a MoE layer) in one parallel region:
/// the tasks of all of them are shared out at once, so small matrices neither wait for the
/// pool one by one nor leave a thread idle at each one's end.
fn grouped_slices(items: &mut [Product]) {
    let kernels = pick();
    let mut tasks = Vec::new();
    for (i, p) in items.iter_mut().enumerate() {
        let (t, k, n) = (p.t, p.k, p.n);
        assert!(
            p.x.len() >= t * k && p.w.len() >= n * k && p.y.len() >= t * n,
            "matvec: slice lengths do not fit [{t}, {k}] x [{n}, {k}]ᵀ"
        );
        if p.t == 0 || p.n == 0 {
            continue;
        }
        let out = Out { ptr: p.y.as_mut_ptr(), n: p.n };
        for c in 0..p.n.div_ceil(ROWS_PER_TASK) {
            tasks.push((i, c * ROWS_PER_TASK..((c + 1) * ROWS_PER_TASK).min(p.n), out));
        }
    }
    let items = &*items;
    tasks.into_par_iter().for_each(|(i, rows, out)| {
        let Product { x, t, k, w, n, .. } = &items[i];
        match w {
            WeightRows::F32(w) => (kernels.f32)(&x[..t * k], *t, *k, &w[..n * k], rows, out),
            WeightRows::Bf16(w) => (kernels.bf16)(&x[..t * k], *t, *k, &w[..n * k], rows, out),
        }
    });
}

/// `y = x Wᵀ` for many rows of `x` and f32 weights: the `gemm` crate's microkernels (packing,
/// register blocking) on each thread's share of the weight rows, one single-threaded call per
/// share, instead of one call that splits and synchronises inside.
fn gemm_slices(x: &[f32], t: usize, k: usize, w: &[f32], n: usize, y: &mut [f32]) {
    let shares = (rayon::current_num_threads() * 2).max(1);
    let rows = n.div_ceil(shares).next_multiple_of(16).max(16);
    let out = Out { ptr: y.as_mut_ptr(), n };
    (0..n.div_ceil(rows)).into_par_iter().for_each(|c| {
        let (r0, r1) = (c * rows, ((c + 1) * rows).min(n));
        // SAFETY: y is [t, n] and this share writes its columns r0..r1 only; x is [t, k], the
        // weight rows r0..r1 lie within w ([n, k]); strides describe exactly those layouts.
        unsafe {
            gemm::gemm(
                t,
                r1 - r0,
                k,
                out.at(r0),
                1,
                n as isize,
                false,
                x.as_ptr(),
                1,
                k as isize,
                w.as_ptr().add(r0 * k),
                k as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        }
    });
}

/// A weight element: f32, or bf16 widened on load.
trait Elem: Copy + Sync + Default {
    const BF16: bool;
    fn to_f32(self) -> f32;
}
impl Elem for f32 {
    const BF16: bool = false;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}
impl Elem for bf16 {
    const BF16: bool = true;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from_bits((self.to_bits() as u32) << 16)
    }
}

/// One instruction set's vector operations (`LANES` f32 per register).
trait Isa {
    type V: Copy;
    const LANES: usize;
    unsafe fn zero() -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn load_w<W: Elem>(p: *const W) -> Self::V;
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn sum(v: Self::V) -> f32;
    /// A hint to fetch the cache line at `p`; nothing where the instruction set has none.
    unsafe fn prefetch(_p: *const u8) {}
}

/// Elements ahead of the current one that each weight row is prefetched at: the hardware's
/// stream prefetcher alone left bf16 rows (half the bytes per step of f32 ones) at ~80% of the
/// bandwidth f32 rows reach.
const PREFETCH: usize = 384;

/// `R` weight rows × `C` rows of `x` starting at `r0` / `t0`, written to `out`.
///
/// # Safety
/// The instruction set `I` is available; `r0 + R ≤ N`, `t0 + C ≤ T` (rows past the end are
/// passed as repeats of the last one and not written: see the callers).
#[inline(always)]
unsafe fn tile<I: Isa, W: Elem, const R: usize, const C: usize>(
    x: &[f32],
    k: usize,
    xr: [usize; C],
    w: &[W],
    wr: [usize; R],
    keep: (usize, usize),
    out: Out,
) {
    let l = I::LANES;
    let main = k / l * l;
    let mut acc = [[unsafe { I::zero() }; C]; R];
    let (xp, wp) = (x.as_ptr(), w.as_ptr());
    let mut i = 0;
    while i < main {
        let mut xv = [unsafe { I::zero() }; C];
        for (c, v) in xv.iter_mut().enumerate() {
            // SAFETY: xr[c]·k + i + LANES ≤ (xr[c] + 1)·k: within row xr[c] of x.
            *v = unsafe { I::load(xp.add(xr[c] * k + i)) };
        }
        for r in 0..R {
            // SAFETY: as above, within row wr[r] of w.
            let wv = unsafe { I::load_w(wp.add(wr[r] * k + i)) };
            // SAFETY: a prefetch never faults; the address may lie past the row (or matrix).
            // Ahead in this row, and in decode (one row of x, so nothing is reused from cache)
            // the same column of the next tile's row: short rows (an expert's down
            // projection) would otherwise start every tile cold.
            unsafe { I::prefetch(wp.wrapping_add(wr[r] * k + i + PREFETCH) as *const u8) };
            if C == 1 {
                unsafe { I::prefetch(wp.wrapping_add((wr[r] + R) * k + i) as *const u8) };
            }
            for c in 0..C {
                acc[r][c] = unsafe { I::fma(xv[c], wv, acc[r][c]) };
            }
        }
        i += l;
    }
    if main < k {
        // The tail, zero-padded to a full register: the same lanes as a longer row would use.
        let rem = k - main;
        let mut xt = [[0f32; 16]; C];
        let mut wt = [[W::default(); 16]; R];
        for c in 0..C {
            xt[c][..rem].copy_from_slice(&x[xr[c] * k + main..xr[c] * k + k]);
        }
        for r in 0..R {
            wt[r][..rem].copy_from_slice(&w[wr[r] * k + main..wr[r] * k + k]);
        }
        for r in 0..R {
            let wv = unsafe { I::load_w(wt[r].as_ptr()) };
            for c in 0..C {
                acc[r][c] = unsafe { I::fma(I::load(xt[c].as_ptr()), wv, acc[r][c]) };
            }
        }
    }
    for r in 0..keep.0 {
        for c in 0..keep.1 {
            // SAFETY: out is [T, N] and (xr[c], wr[r]) is in range; this task owns column wr[r].
            unsafe { *out.ptr.add(xr[c] * out.n + wr[r]) = I::sum(acc[r][c]) };
        }
    }
}

/// All rows of `x` against weight rows `rows`, in tiles of `R` weight rows × up to 4 rows of
/// `x`.
#[inline(always)]
unsafe fn block<I: Isa, W: Elem, const R: usize>(x: &[f32], t: usize, k: usize, w: &[W], rows: std::ops::Range<usize>, out: Out) {
    // Rows of x outer, weight rows inner: the task's weight rows (a few hundred KB) stay in
    // the core's L2 cache across the rows of x, where the other order streamed all of x (MBs
    // for a long prompt) through it once per weight tile.
    let mut t0 = 0;
    while t0 < t {
        let nc = 4.min(t - t0);
        let mut r0 = rows.start;
        while r0 < rows.end {
            let nr = R.min(rows.end - r0);
            let wr: [usize; R] = std::array::from_fn(|i| r0 + i.min(nr - 1));
            // SAFETY: forwarded from the caller; rows are within `rows` and `t`.
            unsafe {
                match nc {
                    1 => tile::<I, W, R, 1>(x, k, [t0], w, wr, (nr, 1), out),
                    2 => tile::<I, W, R, 2>(x, k, [t0, t0 + 1], w, wr, (nr, 2), out),
                    3 => tile::<I, W, R, 3>(x, k, [t0, t0 + 1, t0 + 2], w, wr, (nr, 3), out),
                    _ => tile::<I, W, R, 4>(x, k, [t0, t0 + 1, t0 + 2, t0 + 3], w, wr, (nr, 4), out),
                }
            }
            r0 += nr;
        }
        t0 += nc;
    }
}

/// The portable fallback: 16 "lanes" of plain f32.
struct Scalar;
impl Isa for Scalar {
    type V = [f32; 16];
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn zero() -> Self::V {
        [0.0; 16]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        // SAFETY: the caller reads 16 elements within a row.
        std::array::from_fn(|i| unsafe { *p.add(i) })
    }
    #[inline(always)]
    unsafe fn load_w<W: Elem>(p: *const W) -> Self::V {
        // SAFETY: as in `load`.
        std::array::from_fn(|i| unsafe { (*p.add(i)).to_f32() })
    }
    #[inline(always)]
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] * b[i] + c[i])
    }
    #[inline(always)]
    unsafe fn sum(v: Self::V) -> f32 {
        let mut v = v;
        let mut width = 8;
        while width > 0 {
            for i in 0..width {
                v[i] += v[i + width];
            }
            width /= 2;
        }
        v[0]
    }
}

fn scalar_f32(x: &[f32], t: usize, k: usize, w: &[f32], rows: std::ops::Range<usize>, out: Out) {
    // SAFETY: the scalar "instruction set" is always there.
    unsafe { block::<Scalar, f32, 2>(x, t, k, w, rows, out) }
}
fn scalar_bf16(x: &[f32], t: usize, k: usize, w: &[bf16], rows: std::ops::Range<usize>, out: Out) {
    // SAFETY: as above.
    unsafe { block::<Scalar, bf16, 2>(x, t, k, w, rows, out) }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{bf16, block, Elem, Isa, Kernels, Out};
    use std::arch::x86_64::*;
    use std::ops::Range;

    pub(super) struct Avx512;
    impl Isa for Avx512 {
        type V = __m512;
        const LANES: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> __m512 {
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn load_w<W: Elem>(p: *const W) -> __m512 {
            // bf16 → f32 is a 16-bit shift: widen 16 values to 32 bits, shift into the high half.
            unsafe {
                if W::BF16 {
                    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i))))
                } else {
                    _mm512_loadu_ps(p as *const f32)
                }
            }
        }
        #[inline(always)]
        unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn sum(v: __m512) -> f32 {
            unsafe { _mm512_reduce_add_ps(v) }
        }
        #[inline(always)]
        unsafe fn prefetch(p: *const u8) {
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p as *const i8) }
        }
    }

    pub(super) struct Avx2;
    impl Isa for Avx2 {
        type V = __m256;
        const LANES: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> __m256 {
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn load_w<W: Elem>(p: *const W) -> __m256 {
            unsafe {
                if W::BF16 {
                    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i))))
                } else {
                    _mm256_loadu_ps(p as *const f32)
                }
            }
        }
        #[inline(always)]
        unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn sum(v: __m256) -> f32 {
            unsafe {
                let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
            }
        }
    }

    // 4 weight rows × 4 rows of x = 16 accumulators of 32 AVX-512 registers; AVX2 has 16
    // registers, so 2 × 4 = 8 there.
    #[target_feature(enable = "avx512f,avx512bw")]
    fn avx512_f32(x: &[f32], t: usize, k: usize, w: &[f32], rows: Range<usize>, out: Out) {
        // SAFETY: compiled for, and only picked with, AVX-512.
        unsafe { block::<Avx512, f32, 4>(x, t, k, w, rows, out) }
    }
    #[target_feature(enable = "avx512f,avx512bw")]
    fn avx512_bf16(x: &[f32], t: usize, k: usize, w: &[bf16], rows: Range<usize>, out: Out) {
        // SAFETY: as above.
        unsafe { block::<Avx512, bf16, 4>(x, t, k, w, rows, out) }
    }
    #[target_feature(enable = "avx2,fma")]
    fn avx2_f32(x: &[f32], t: usize, k: usize, w: &[f32], rows: Range<usize>, out: Out) {
        // SAFETY: compiled for, and only picked with, AVX2 and FMA.
        unsafe { block::<Avx2, f32, 2>(x, t, k, w, rows, out) }
    }
    #[target_feature(enable = "avx2,fma")]
    fn avx2_bf16(x: &[f32], t: usize, k: usize, w: &[bf16], rows: Range<usize>, out: Out) {
        // SAFETY: as above.
        unsafe { block::<Avx2, bf16, 2>(x, t, k, w, rows, out) }
    }

    pub(super) fn pick() -> Option<Kernels> {
        // SAFETY (each closure): the features the function is compiled for were detected.
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
            Some(Kernels {
                f32: |x, t, k, w, r, o| unsafe { avx512_f32(x, t, k, w, r, o) },
                bf16: |x, t, k, w, r, o| unsafe { avx512_bf16(x, t, k, w, r, o) },
            })
        } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            Some(Kernels {
                f32: |x, t, k, w, r, o| unsafe { avx2_f32(x, t, k, w, r, o) },
                bf16: |x, t, k, w, r, o| unsafe { avx2_bf16(x, t, k, w, r, o) },
            })
        } else {
            None
        }
    }
}

fn pick() -> Kernels {
    static KERNELS: std::sync::OnceLock<Kernels> = std::sync::OnceLock::new();
    *KERNELS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if let Some(k) = x86::pick() {
            return k;
        }
        Kernels { f32: scalar_f32, bf16: scalar_bf16 }
    })
}

/// `x` `[T, K]` f32 times `w` `[N, K]` (f32 or bf16) transposed → `[T, N]` f32, on the CPU.
pub fn matmul_t(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    x.apply_op2_no_bwd(w, &MatmulT)
}

struct MatmulT;

impl CustomOp2 for MatmulT {
    fn name(&self) -> &'static str {
        "routelab-matmul-t"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (t, k) = xl.shape().dims2()?;
        let (n, k2) = wl.shape().dims2()?;
        if k != k2 {
            candle_core::bail!("matmul-t: x is [{t}, {k}] but w is [{n}, {k2}]");
        }
        let (Some((xa, xb)), Some((wa, wb))) = (xl.contiguous_offsets(), wl.contiguous_offsets()) else {
            candle_core::bail!("matmul-t: inputs must be contiguous")
        };
        let CpuStorage::F32(x) = xs else { candle_core::bail!("matmul-t: x must be f32, not {:?}", xs.dtype()) };
        let w = match ws {
            CpuStorage::F32(w) => WeightRows::F32(&w[wa..wb]),
            CpuStorage::BF16(w) => WeightRows::Bf16(&w[wa..wb]),
            other => candle_core::bail!("matmul-t: weights must be f32 or bf16, not {:?}", other.dtype()),
        };
        let mut y = vec![0f32; t * n];
        match w {
            WeightRows::F32(w) if t > MAX_ROWS => gemm_slices(&x[xa..xb], t, k, w, n, &mut y),
            _ => matmul_t_slices(&x[xa..xb], t, k, w, n, &mut y),
        }
        Ok((CpuStorage::F32(y), Shape::from((t, n))))
    }
}

/// [`matmul_t`] for several `(x, w)` pairs at once, in one parallel region (see
/// [`grouped_slices`]); CPU tensors, `x` f32 `[T_i, K_i]`, `w` f32 or bf16 `[N_i, K_i]`.
pub fn matmul_t_grouped(pairs: &[(&Tensor, &Tensor)]) -> candle_core::Result<Vec<Tensor>> {
    use candle_core::Storage;
    let mut guards = Vec::with_capacity(pairs.len());
    let mut outs = Vec::with_capacity(pairs.len());
    for (x, w) in pairs {
        let (t, k) = x.dims2()?;
        let (n, k2) = w.dims2()?;
        if k != k2 {
            candle_core::bail!("matmul-t: x is [{t}, {k}] but w is [{n}, {k2}]");
        }
        if !x.is_contiguous() || !w.is_contiguous() {
            candle_core::bail!("matmul-t: inputs must be contiguous");
        }
        guards.push((x.storage_and_layout(), w.storage_and_layout()));
        outs.push(vec![0f32; t * n]);
    }
    {
        let mut items = Vec::with_capacity(pairs.len());
        for (((xs, xl), (ws, wl)), y) in guards.iter().zip(outs.iter_mut()) {
            let (t, k) = xl.shape().dims2()?;
            let n = wl.shape().dims2()?.0;
            let (xa, wa) = (xl.start_offset(), wl.start_offset());
            let Storage::Cpu(CpuStorage::F32(x)) = &**xs else { candle_core::bail!("matmul-t: x must be f32 on the CPU") };
            let w = match &**ws {
                Storage::Cpu(CpuStorage::F32(w)) => WeightRows::F32(&w[wa..wa + n * k]),
                Storage::Cpu(CpuStorage::BF16(w)) => WeightRows::Bf16(&w[wa..wa + n * k]),
                _ => candle_core::bail!("matmul-t: weights must be f32 or bf16 on the CPU"),
            };
            items.push(Product { x: &x[xa..xa + t * k], t, k, w, n, y: y.as_mut_slice() });
        }
        grouped_slices(&mut items);
    }
    let device = candle_core::Device::Cpu;
    outs.into_iter().zip(pairs).map(|(y, (x, w))| Tensor::from_vec(y, (x.dim(0)?, w.dim(0)?), &device)).collect()
}

/// Threads the kernel splits rows across (rayon's pool: `RAYON_NUM_THREADS`, else one per core).
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// Memory read bandwidth in bytes/s as this kernel sees it: the best of a few `y = W x` over
/// an f32 `W` of `bytes` (make it larger than the last-level cache), on the thread pool.
pub fn read_bandwidth(bytes: usize) -> f64 {
    let k = 4096;
    let n = (bytes / 4 / k).max(1);
    let w: Vec<f32> = (0..n * k).map(|i| (i % 7) as f32).collect();
    let x = vec![1f32; k];
    let mut y = vec![0f32; n];
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        matmul_t_slices(&x, 1, k, WeightRows::F32(&w), n, &mut y);
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&y);
    (n * k * 4) as f64 / best
}

/// The dtypes [`matmul_t`] takes.
pub fn supports(x: DType, w: DType) -> bool {
    x == DType::F32 && matches!(w, DType::F32 | DType::BF16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Against a plain f64 sum over the same operands, for row counts and widths that hit the
    /// full-lane loop, the tail, several tasks and one-row and several-row paths.
    #[test]
    fn matches_a_plain_sum_in_f64() {
        for (t, k, n) in [(1, 1, 1), (1, 31, 5), (1, 2048, 300), (3, 100, 129), (8, 64, 65), (2, 33, 1000), (13, 70, 67)] {
            let x = values(t * k, 1);
            let w = values(n * k, 2);
            let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
            for bf in [false, true] {
                let mut y = vec![0f32; t * n];
                let rows = if bf { WeightRows::Bf16(&wb) } else { WeightRows::F32(&w) };
                matmul_t_slices(&x, t, k, rows, n, &mut y);
                for i in 0..t {
                    for j in 0..n {
                        let exact: f64 =
                            (0..k).map(|c| x[i * k + c] as f64 * if bf { wb[j * k + c].to_f64() } else { w[j * k + c] as f64 }).sum();
                        let got = y[i * n + j] as f64;
                        assert!(
                            (got - exact).abs() <= 1e-5 * (1.0 + k as f64).sqrt(),
                            "t {t} k {k} n {n} bf16 {bf}: [{i},{j}] {got} vs {exact}"
                        );
                    }
                }
            }
        }
    }

    /// The documented promise: a row's result does not depend on which other rows share the
    /// call (prompt vs decode) nor on how the weight rows are split into tasks and tiles.
    #[test]
    fn a_row_gets_the_same_bits_alone_and_among_others() {
        let (t, k, n) = (11, 200, 133);
        let x = values(t * k, 5);
        let w: Vec<bf16> = values(n * k, 6).into_iter().map(bf16::from_f32).collect();
        let mut all = vec![0f32; t * n];
        matmul_t_slices(&x, t, k, WeightRows::Bf16(&w), n, &mut all);
        for row in [0, 4, 10] {
            let mut one = vec![0f32; n];
            matmul_t_slices(&x[row * k..(row + 1) * k], 1, k, WeightRows::Bf16(&w), n, &mut one);
            assert_eq!(one, all[row * n..(row + 1) * n], "row {row}");
        }
    }

    #[test]
    fn grouped_products_equal_the_products_one_by_one() {
        let d = Device::Cpu;
        let shapes = [(1, 48, 130), (3, 48, 7), (0, 48, 20), (5, 17, 64)];
        let xs: Vec<Tensor> =
            shapes.iter().enumerate().map(|(i, &(t, k, _))| Tensor::from_vec(values(t * k, i as u64), (t, k), &d).unwrap()).collect();
        let ws: Vec<Tensor> = shapes
            .iter()
            .enumerate()
            .map(|(i, &(_, k, n))| Tensor::from_vec(values(n * k, 10 + i as u64), (n, k), &d).unwrap().to_dtype(DType::BF16).unwrap())
            .collect();
        let pairs: Vec<(&Tensor, &Tensor)> = xs.iter().zip(&ws).collect();
        let grouped = matmul_t_grouped(&pairs).unwrap();
        for ((x, w), g) in pairs.iter().zip(&grouped) {
            let alone = matmul_t(x, w).unwrap();
            assert_eq!(g.dims(), alone.dims());
            assert_eq!(g.flatten_all().unwrap().to_vec1::<f32>().unwrap(), alone.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        }
    }

    #[test]
    fn the_op_agrees_with_candles_matmul_and_checks_its_inputs() {
        let d = Device::Cpu;
        let x = Tensor::from_vec(values(2 * 40, 3), (2, 40), &d).unwrap();
        let w = Tensor::from_vec(values(70 * 40, 4), (70, 40), &d).unwrap();
        let ours = matmul_t(&x, &w).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let theirs = x.matmul(&w.t().unwrap()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (a, b) in ours.iter().zip(&theirs) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        let wb = w.to_dtype(DType::BF16).unwrap();
        let ours = matmul_t(&x, &wb).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let theirs = x.matmul(&wb.to_dtype(DType::F32).unwrap().t().unwrap()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (a, b) in ours.iter().zip(&theirs) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        // Past MAX_ROWS, f32 weights take the per-thread GEMM: same products.
        let long = Tensor::from_vec(values(45 * 40, 7), (45, 40), &d).unwrap();
        let ours = matmul_t(&long, &w).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let theirs = long.matmul(&w.t().unwrap()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(ours.len(), 45 * 70);
        for (a, b) in ours.iter().zip(&theirs) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        let short = Tensor::zeros((70, 39), DType::F32, &d).unwrap();
        assert!(matmul_t(&x, &short).unwrap_err().to_string().contains("[70, 39]"));
        assert!(matmul_t(&x.to_dtype(DType::BF16).unwrap(), &w).is_err());
    }
}
