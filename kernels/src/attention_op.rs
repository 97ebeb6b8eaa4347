//! Causal attention with per-head statistics computed on the fly, as one candle op.
//!
//! For each head and query it returns the attention output and four statistics of that query's
//! attention distribution: entropy `−Σ p ln p` (nats), the most-attended key (first on ties),
//! the mass on key 0 (the attention sink, Xiao et al. 2023) and the mass on a chosen key span
//! (a needle, a document). On CUDA (`cuda/attention.cu`) no score or probability matrix is
//! stored at all, not even one query block's: keys stream through in tiles with an online
//! softmax, and the statistics ride on the same recurrence; when a call has too few
//! (query, head) pairs to fill the GPU (decoding over a long context) the keys are split into
//! chunks whose running states a second kernel merges (flash-decoding). The CPU implementation here is the
//! reference: the textbook two passes per query (scores, max, exponentials, normalise, then
//! output and statistics), written for clarity.
//!
//! Masking: keys `0..=pos` for the query at absolute position `pos = S − T + t`, and with a
//! sliding window `W` only keys `j > pos − W` (transformers' convention). Heads marked
//! `uniform` (the head intervention) attend uniformly over the keys they may see.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::launch::{Launch, Scalar};

/// Largest query/key and value head dimensions the CUDA kernel takes (its shared/register
/// arrays); every supported family is within (DeepSeek's MLA: 192 and 128).
pub const MAX_HEAD_DIM: usize = 512;
/// Most query heads the kernel's uniform mask covers (four 64-bit words).
pub const MAX_HEADS: usize = 256;
/// Threads per block in `attention.cu` (`ATT_THREADS`).
const THREADS: u32 = 128;
/// Statistics per (head, query) after the outputs, in these columns (`attention.cu` writes the
/// same order; the model's `HeadStats` reads by these names).
pub const STATS: usize = 4;
pub const ENTROPY: usize = 0;
pub const ARGMAX: usize = 1;
pub const SINK: usize = 2;
pub const SPAN: usize = 3;
/// Floats of one key chunk's raw state (m, l, a, z, w, best score, its position) before its
/// dv accumulators, in the split-keys workspace.
#[cfg_attr(not(any(feature = "cuda", test)), allow(dead_code))]
const STATE: usize = 7;
/// Blocks worth filling the GPU with (an H100 has 132 SMs): below this, keys are split.
const TARGET_BLOCKS: usize = 512;
/// Fewest keys worth a chunk of their own.
const MIN_CHUNK: usize = 256;

/// The op: build with the layer's scale and window, apply with [`attention_with_stats`].
#[derive(Clone, Debug)]
pub struct AttentionStats {
    /// Score multiplier, usually `1/√d`.
    pub scale: f32,
    /// Sliding window `W` (keys `j > pos − W`), or none.
    pub window: Option<usize>,
    /// Key positions `[start, end)` whose attention mass is reported; empty for none.
    pub span: (usize, usize),
    /// Per query head: attend uniformly over the visible keys instead.
    pub uniform: Vec<bool>,
}

/// The op's results, as views of its single output.
#[derive(Clone, Debug)]
pub struct AttendedStats {
    /// `[H, T, dv]` f32.
    pub out: Tensor,
    /// `[H, T, 4]` f32: entropy, argmax (as f32), sink, span side by side, for moving them off
    /// the device in one piece; the methods below take one column each (no work until asked:
    /// the forward pass only moves `stats`).
    pub stats: Tensor,
}

impl AttendedStats {
    fn column(&self, c: usize) -> candle_core::Result<Tensor> {
        self.stats.narrow(2, c, 1)?.squeeze(2)
    }

    /// `[H, T]` f32, nats.
    pub fn entropy(&self) -> candle_core::Result<Tensor> {
        self.column(ENTROPY)
    }

    /// `[H, T]` u32, absolute key position.
    pub fn argmax(&self) -> candle_core::Result<Tensor> {
        self.column(ARGMAX)?.to_dtype(DType::U32)
    }

    /// `[H, T]` f32, attention on key 0.
    pub fn sink(&self) -> candle_core::Result<Tensor> {
        self.column(SINK)
    }

    /// `[H, T]` f32, attention on the span.
    pub fn span(&self) -> candle_core::Result<Tensor> {
        self.column(SPAN)
    }
}

/// `q` `[H, T, d]`, `k` `[Hkv, S, d]`, `v` `[Hkv, S, dv]`, `S ≥ T` (the last `T` keys are the
/// queries' own positions). On the CPU inputs of any float type are read as f32; on CUDA
/// q, k and v must share one of f32, bf16, f16, and k, v may be views of a larger cache.
pub fn attention_with_stats(q: &Tensor, k: &Tensor, v: &Tensor, op: &AttentionStats) -> candle_core::Result<AttendedStats> {
    let (q, k, v) = if q.device().is_cpu() {
        (q.to_dtype(DType::F32)?.contiguous()?, k.to_dtype(DType::F32)?.contiguous()?, v.to_dtype(DType::F32)?.contiguous()?)
    } else {
        (q.contiguous()?, k.clone(), v.clone())
    };
    let dv = v.dim(2)?;
    let packed = q.apply_op3_no_bwd(&k, &v, op)?;
    Ok(AttendedStats { out: packed.narrow(2, 0, dv)?, stats: packed.narrow(2, dv, STATS)? })
}

/// Shapes of one call, checked.
#[derive(Clone, Copy, Debug)]
struct Dims {
    heads: usize,
    kv_heads: usize,
    t: usize,
    s: usize,
    d: usize,
    dv: usize,
}

fn check(op: &AttentionStats, lq: &Layout, lk: &Layout, lv: &Layout) -> candle_core::Result<Dims> {
    let (heads, t, d) = lq.shape().dims3()?;
    let (kv_heads, s, dk) = lk.shape().dims3()?;
    let (kv2, s2, dv) = lv.shape().dims3()?;
    if dk != d || kv2 != kv_heads || s2 != s || kv_heads == 0 || heads % kv_heads != 0 || s < t {
        candle_core::bail!(
            "attention-stats: q {:?}, k {:?}, v {:?} do not fit [H, T, d], [Hkv, S, d], [Hkv, S, dv] with H a multiple of Hkv and S >= T",
            lq.shape(),
            lk.shape(),
            lv.shape()
        );
    }
    if op.uniform.len() > heads {
        candle_core::bail!("attention-stats: {} uniform flags for {heads} heads", op.uniform.len());
    }
    Ok(Dims { heads, kv_heads, t, s, d, dv })
}

impl AttentionStats {
    /// Keys per chunk when a call's (query, head) blocks are too few to fill the GPU (decoding
    /// over a long context): enough chunks for about [`TARGET_BLOCKS`] blocks, none shorter
    /// than [`MIN_CHUNK`] keys, a multiple of the kernel's 128-key tile. 0: no split.
    pub fn chunk_len(t: usize, heads: usize, s: usize) -> usize {
        let blocks = (t * heads).max(1);
        let chunks = TARGET_BLOCKS.div_ceil(blocks).min(s.div_ceil(MIN_CHUNK));
        if chunks <= 1 {
            return 0;
        }
        s.div_ceil(chunks).div_ceil(THREADS as usize) * THREADS as usize
    }

    /// The merge of a split call: one block per (query, head) over `chunks` raw states.
    pub fn combine_launch(t: usize, heads: usize, dv: usize, chunks: usize) -> Launch {
        Launch {
            kernel: "attention_combine",
            grid: (t as u32, heads as u32, 1),
            block: (THREADS, 1, 1),
            scalars: vec![Scalar::I32(t as i32), Scalar::I32(dv as i32), Scalar::I32(chunks as i32)],
        }
    }

    /// The CUDA launch for one call (also what the emulator runs): one block per (query, head),
    /// or with `chunk_len > 0` one per (query, head, chunk of keys) writing raw states for
    /// [`Self::combine_launch`]. `k_strides`/`v_strides` are (head, row) strides in elements.
    pub fn launch(
        &self,
        kernel: &'static str,
        dims: (usize, usize, usize, usize, usize, usize),
        k_strides: (usize, usize),
        v_strides: (usize, usize),
        chunk_len: usize,
    ) -> candle_core::Result<Launch> {
        let (heads, kv_heads, t, s, d, dv) = dims;
        if d > MAX_HEAD_DIM || dv > MAX_HEAD_DIM || heads > MAX_HEADS {
            candle_core::bail!("attention-stats: head dims {d}/{dv} or {heads} heads exceed the CUDA kernel's {MAX_HEAD_DIM}/{MAX_HEADS}");
        }
        let mut words = [0u64; 4];
        for (h, _) in self.uniform.iter().enumerate().filter(|(_, u)| **u) {
            words[h / 64] |= 1 << (h % 64);
        }
        let (span_start, span_end) = (self.span.0.min(s), self.span.1.min(s));
        let i = |x: usize| Scalar::I32(x as i32);
        let l = |x: usize| Scalar::I64(x as i64);
        let chunks = if chunk_len > 0 { s.div_ceil(chunk_len) } else { 1 };
        Ok(Launch {
            kernel,
            grid: (t as u32, heads as u32, chunks as u32),
            block: (THREADS, 1, 1),
            scalars: vec![
                i(heads),
                i(kv_heads),
                i(t),
                i(d),
                i(dv),
                l(k_strides.0),
                l(k_strides.1),
                l(v_strides.0),
                l(v_strides.1),
                Scalar::F32(self.scale),
                i(s - t),
                i(self.window.unwrap_or(0)),
                i(span_start),
                i(span_end),
                Scalar::U64(words[0]),
                Scalar::U64(words[1]),
                Scalar::U64(words[2]),
                Scalar::U64(words[3]),
                i(chunk_len),
            ],
        })
    }

    /// The reference for one (head, query): writes `dv` outputs then the [`STATS`] statistics.
    fn reference_row(&self, row: QueryRow, o: &mut [f32]) {
        let QueryRow { q, k, v, pos, d, dv, uniform } = row;
        let lo = self.window.map_or(0, |w| (pos + 1).saturating_sub(w));
        let keys = lo..=pos;
        let scores: Vec<f32> = keys
            .clone()
            .map(|j| if uniform { 0.0 } else { q.iter().zip(&k[j * d..(j + 1) * d]).map(|(a, b)| a * b).sum::<f32>() * self.scale })
            .collect();
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
        let sum: f32 = e.iter().sum();
        let p: Vec<f32> = e.iter().map(|x| x / sum).collect();
        let (out, stats) = o.split_at_mut(dv);
        out.fill(0.0);
        let (mut entropy, mut best, mut arg) = (0f32, f32::NEG_INFINITY, lo);
        for (j, &pj) in keys.clone().zip(&p) {
            for (x, vv) in out.iter_mut().zip(&v[j * dv..(j + 1) * dv]) {
                *x += pj * vv;
            }
            entropy -= pj * pj.clamp(1e-30, 1.0).ln();
            if pj > best {
                best = pj;
                arg = j;
            }
        }
        let mass = |a: usize, b: usize| keys.clone().zip(&p).filter(|(j, _)| (a..b).contains(j)).fold(0f32, |m, (_, x)| m + x);
        stats[ENTROPY] = entropy.max(0.0);
        stats[ARGMAX] = arg as f32;
        stats[SINK] = mass(0, 1);
        stats[SPAN] = mass(self.span.0, self.span.1);
    }
}

/// One (head, query) of the reference: the query, its kv head's keys and values, its absolute
/// position, head dims, and whether the head is made uniform.
struct QueryRow<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    pos: usize,
    d: usize,
    dv: usize,
    uniform: bool,
}

impl CustomOp3 for AttentionStats {
    fn name(&self) -> &'static str {
        "routelab-attention-stats"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let Dims { heads, kv_heads, t, s, d, dv } = check(self, l1, l2, l3)?;
        let (CpuStorage::F32(q), CpuStorage::F32(k), CpuStorage::F32(v)) = (s1, s2, s3) else {
            candle_core::bail!("attention-stats: the CPU op takes f32 (attention_with_stats converts)")
        };
        let slice = |x: &'_ Vec<f32>, l: &Layout| -> candle_core::Result<Vec<f32>> {
            let Some((a, b)) = l.contiguous_offsets() else { candle_core::bail!("attention-stats: CPU inputs must be contiguous") };
            Ok(x[a..b].to_vec())
        };
        let (q, k, v) = (slice(q, l1)?, slice(k, l2)?, slice(v, l3)?);
        let w = dv + STATS;
        let mut out = vec![0f32; heads * t * w];
        let rep = heads / kv_heads;
        out.par_chunks_mut(w).enumerate().for_each(|(row, o)| {
            let (h, ti) = (row / t, row % t);
            let kvh = h / rep;
            let uniform = self.uniform.get(h).copied().unwrap_or(false);
            let query = QueryRow {
                q: &q[row * d..(row + 1) * d],
                k: &k[kvh * s * d..(kvh + 1) * s * d],
                v: &v[kvh * s * dv..(kvh + 1) * s * dv],
                pos: s - t + ti,
                d,
                dv,
                uniform,
            };
            self.reference_row(query, o);
        });
        Ok((CpuStorage::F32(out), Shape::from((heads, t, w))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
        use candle_core::cuda_backend::WrapErr;
        use half::{bf16, f16};

        let Dims { heads, kv_heads, t, s, d, dv } = check(self, l1, l2, l3)?;
        if l1.contiguous_offsets().is_none() {
            candle_core::bail!("attention-stats: q must be contiguous");
        }
        let rows = |l: &Layout, what: &str| -> candle_core::Result<(usize, usize)> {
            let st = l.stride();
            if st[2] != 1 {
                candle_core::bail!("attention-stats: {what} rows must be contiguous (strides {st:?})");
            }
            Ok((st[0], st[1]))
        };
        let (ks, vs) = (rows(l2, "k")?, rows(l3, "v")?);
        let dtype = s1.dtype();
        if s2.dtype() != dtype || s3.dtype() != dtype {
            candle_core::bail!("attention-stats: q, k, v must share a dtype ({dtype:?}, {:?}, {:?})", s2.dtype(), s3.dtype());
        }
        let kernel = match dtype {
            DType::F32 => "attention_stats_f32",
            DType::BF16 => "attention_stats_bf16",
            DType::F16 => "attention_stats_f16",
            other => candle_core::bail!("attention-stats: {other:?} is not a float type the kernel takes"),
        };
        let chunk_len = Self::chunk_len(t, heads, s);
        let launch = self.launch(kernel, (heads, kv_heads, t, s, d, dv), ks, vs, chunk_len)?;
        let chunks = launch.grid.2 as usize;
        let dev = s1.device();
        let w = dv + STATS;
        // SAFETY: each block's threads write every element of their (head, query) row (or
        // chunk state); the combine writes every row.
        let out = unsafe { dev.alloc::<f32>((heads * t * w).max(1))? };
        let ws = if chunks > 1 { Some(unsafe { dev.alloc::<f32>(heads * t * chunks * (dv + STATE))? }) } else { None };
        if heads * t > 0 {
            let func = dev.get_or_load_custom_func(kernel, "routelab_attention", crate::cuda::ATTENTION)?;
            let target = ws.as_ref().unwrap_or(&out);
            macro_rules! push {
                ($ty:ty) => {{
                    let mut b = func.builder();
                    let q = s1.as_cuda_slice::<$ty>()?.slice(l1.start_offset()..);
                    let k = s2.as_cuda_slice::<$ty>()?.slice(l2.start_offset()..);
                    let v = s3.as_cuda_slice::<$ty>()?.slice(l3.start_offset()..);
                    b.arg(&q);
                    b.arg(&k);
                    b.arg(&v);
                    b.arg(target);
                    launch.push_scalars(&mut b);
                    // SAFETY: buffers then scalars, as attention.cu's kernels take them.
                    unsafe { b.launch(launch.config()) }.w()?;
                }};
            }
            match dtype {
                DType::BF16 => push!(bf16),
                DType::F16 => push!(f16),
                _ => push!(f32),
            }
            if let Some(ws) = &ws {
                let combine = Self::combine_launch(t, heads, dv, chunks);
                let func = dev.get_or_load_custom_func(combine.kernel, "routelab_attention", crate::cuda::ATTENTION)?;
                let mut b = func.builder();
                b.arg(ws);
                b.arg(&out);
                combine.push_scalars(&mut b);
                // SAFETY: buffers then scalars, as attention_combine takes them.
                unsafe { b.launch(combine.config()) }.w()?;
            }
        }
        Ok((candle_core::CudaStorage::wrap_cuda_slice(out, dev.clone()), Shape::from((heads, t, w))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    use crate::test_values::values;

    fn op(window: Option<usize>, span: (usize, usize), uniform: Vec<bool>) -> AttentionStats {
        AttentionStats { scale: 0.5, window, span, uniform }
    }

    #[test]
    fn hand_computed_case() {
        // One head, d = 1, three positions, scale 1: q = k = [0, 0, ln 3], v = [1, 2, 3].
        // Query 1 sees keys 0, 1 with equal scores: out 1.5, entropy ln 2, sink ½, argmax 0.
        // Query 2: scores [0, 0, (ln 3)²]; span [1, 3) holds (1 + e) / (2 + e), e = exp((ln 3)²).
        let l3 = 3f32.ln();
        let t = |v: Vec<f32>| Tensor::from_vec(v, (1, 3, 1), &Device::Cpu).unwrap();
        let a = attention_with_stats(
            &t(vec![0.0, 0.0, l3]),
            &t(vec![0.0, 0.0, l3]),
            &t(vec![1.0, 2.0, 3.0]),
            &AttentionStats { scale: 1.0, window: None, span: (1, 3), uniform: vec![] },
        )
        .unwrap();
        let row = |x: &Tensor| x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let e = (l3 * l3).exp();
        let out = row(&a.out);
        assert!(
            (out[0] - 1.0).abs() < 1e-6 && (out[1] - 1.5).abs() < 1e-6 && (out[2] - (3.0 + 3.0 * e) / (2.0 + e)).abs() < 1e-5,
            "{out:?}"
        );
        let ent = row(&a.entropy().unwrap());
        assert!(ent[0] == 0.0 && (ent[1] - 2f32.ln()).abs() < 1e-6, "{ent:?}");
        assert_eq!(a.argmax().unwrap().flatten_all().unwrap().to_vec1::<u32>().unwrap(), vec![0, 0, 2]);
        let sink = row(&a.sink().unwrap());
        assert!(sink[0] == 1.0 && (sink[1] - 0.5).abs() < 1e-6 && (sink[2] - 1.0 / (2.0 + e)).abs() < 1e-6, "{sink:?}");
        let span = row(&a.span().unwrap());
        assert!(span[0] == 0.0 && (span[1] - 0.5).abs() < 1e-6 && (span[2] - (1.0 + e) / (2.0 + e)).abs() < 1e-6, "{span:?}");
    }

    #[test]
    fn window_and_uniform_heads() {
        // Window 2, position 2 sees keys 1, 2; a uniform head averages their values: 2.5.
        let t = |v: Vec<f32>| Tensor::from_vec(v, (1, 3, 1), &Device::Cpu).unwrap();
        let a = attention_with_stats(
            &t(vec![5.0, -1.0, 2.0]),
            &t(vec![1.0, 3.0, -2.0]),
            &t(vec![1.0, 2.0, 3.0]),
            &op(Some(2), (0, 0), vec![true]),
        )
        .unwrap();
        assert_eq!(a.out.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![1.0, 1.5, 2.5]);
        // Uniform over keys 1, 2: first visible key is the argmax, no sink mass, entropy ln 2.
        assert_eq!(a.argmax().unwrap().flatten_all().unwrap().to_vec1::<u32>().unwrap(), vec![0, 0, 1]);
        assert_eq!(a.sink().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()[2], 0.0);
        assert!((a.entropy().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()[2] - 2f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn rejects_shapes_that_do_not_fit() {
        let z = |s: (usize, usize, usize)| Tensor::zeros(s, DType::F32, &Device::Cpu).unwrap();
        let err = attention_with_stats(&z((3, 2, 4)), &z((2, 2, 4)), &z((2, 2, 4)), &op(None, (0, 0), vec![])).unwrap_err().to_string();
        assert!(err.contains("H a multiple of Hkv"), "{err}");
        let err = attention_with_stats(&z((2, 3, 4)), &z((2, 2, 4)), &z((2, 2, 4)), &op(None, (0, 0), vec![])).unwrap_err().to_string();
        assert!(err.contains("S >= T"), "{err}");
    }

    fn bf16_bits(v: &[f32]) -> Vec<u16> {
        v.iter().map(|x| half::bf16::from_f32(*x).to_bits()).collect()
    }

    /// The CUDA kernel (run by the emulator) against the CPU reference: GQA, a window, a
    /// uniform head, a span, keys over several tiles, k and v as views of a larger cache.
    fn emulated_case(heads: usize, kv_heads: usize, t: usize, s: usize, window: Option<usize>, bf16: bool, chunk_len: usize) {
        let (d, dv, cap) = (24, 20, s + 17);
        let mut q = values(heads * t * d, 1);
        let mut kc = values(kv_heads * cap * d, 2);
        let mut vc = values(kv_heads * cap * dv, 3);
        // Sharper scores in head 0 (entropy near 0 is where cancellation would show).
        q.iter_mut().take(t * d).for_each(|x| *x *= 12.0);
        if bf16 {
            for v in [&mut q, &mut kc, &mut vc] {
                v.iter_mut().for_each(|x| *x = half::bf16::from_f32(*x).to_f32());
            }
        }
        let mut uniform = vec![false; heads];
        uniform[heads - 1] = true;
        let op = op(window, (s / 3, s / 2 + 1), uniform);
        // The reference on the same values, cache rows cut to S.
        let cut = |c: &[f32], w: usize| -> Vec<f32> { (0..kv_heads).flat_map(|h| c[h * cap * w..(h * cap + s) * w].to_vec()).collect() };
        let dev = Device::Cpu;
        let reference = attention_with_stats(
            &Tensor::from_vec(q.clone(), (heads, t, d), &dev).unwrap(),
            &Tensor::from_vec(cut(&kc, d), (kv_heads, s, d), &dev).unwrap(),
            &Tensor::from_vec(cut(&vc, dv), (kv_heads, s, dv), &dev).unwrap(),
            &op,
        )
        .unwrap();
        let kernel = if bf16 { "attention_stats_bf16" } else { "attention_stats_f32" };
        let launch = op.launch(kernel, (heads, kv_heads, t, s, d, dv), (cap * d, d), (cap * dv, dv), chunk_len).unwrap();
        let chunks = launch.grid.2 as usize;
        assert_eq!(chunks > 1, chunk_len > 0 && chunk_len < s, "the case splits as intended");
        let w = dv + STATS;
        let first_out = if chunk_len > 0 { heads * t * chunks * (dv + STATE) } else { heads * t * w };
        let (qb, kb, vb) = (bf16_bits(&q), bf16_bits(&kc), bf16_bits(&vc));
        let bufs = if bf16 {
            vec![emu::Buf::U16(&qb), emu::Buf::U16(&kb), emu::Buf::U16(&vb), emu::Buf::Out(first_out)]
        } else {
            vec![emu::Buf::F32(&q), emu::Buf::F32(&kc), emu::Buf::F32(&vc), emu::Buf::Out(first_out)]
        };
        let Some(mut got) = emu::run(&launch, &bufs) else { return };
        if chunk_len > 0 {
            // Then the merge, from the chunk states.
            let combine = AttentionStats::combine_launch(t, heads, dv, chunks);
            let Some(merged) = emu::run(&combine, &[emu::Buf::F32(&got[0]), emu::Buf::Out(heads * t * w)]) else { return };
            got = merged;
        }
        let got = &got[0];
        let flat = |x: &Tensor| x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (out, ent, sink, span) =
            (flat(&reference.out), flat(&reference.entropy().unwrap()), flat(&reference.sink().unwrap()), flat(&reference.span().unwrap()));
        let arg = reference.argmax().unwrap().flatten_all().unwrap().to_vec1::<u32>().unwrap();
        for row in 0..heads * t {
            let g = &got[row * w..(row + 1) * w];
            for c in 0..dv {
                let (x, y) = (g[c], out[row * dv + c]);
                assert!((x - y).abs() <= 2e-5 + 2e-5 * y.abs(), "row {row} out {c}: kernel {x} reference {y}");
            }
            assert!((g[dv] - ent[row]).abs() <= 5e-5 + 1e-5 * ent[row], "row {row} entropy: kernel {} reference {}", g[dv], ent[row]);
            assert_eq!(g[dv + 1] as u32, arg[row], "row {row} argmax");
            assert!((g[dv + 2] - sink[row]).abs() <= 1e-5, "row {row} sink: kernel {} reference {}", g[dv + 2], sink[row]);
            assert!((g[dv + 3] - span[row]).abs() <= 1e-5, "row {row} span: kernel {} reference {}", g[dv + 3], span[row]);
        }
    }

    use crate::emulate as emu;

    #[test]
    fn kernel_decode_over_several_tiles_with_a_window() {
        // 3 queries at positions 297..299: keys stream through three 128-key tiles.
        emulated_case(4, 2, 3, 300, Some(260), false, 0);
    }

    #[test]
    fn kernel_split_keys_decode_with_a_window() {
        // Chunks of 128 keys: the window's first chunk is partial, one chunk lies wholly
        // outside the window (empty state), queries end mid-chunk; plus one query per head
        // over 700 keys in chunks of 256.
        emulated_case(4, 2, 3, 300, Some(200), false, 128);
        emulated_case(2, 1, 1, 700, None, true, 256);
    }

    #[test]
    fn split_plan_fills_the_gpu_only_when_blocks_are_few() {
        // Decode over 32K keys with 32 heads: 16 chunks of 2048 keys (512 blocks).
        assert_eq!(AttentionStats::chunk_len(1, 32, 32768), 2048);
        // A 512-token prefill has blocks enough; a short decode is not worth splitting.
        assert_eq!(AttentionStats::chunk_len(512, 32, 512), 0);
        assert_eq!(AttentionStats::chunk_len(1, 32, 200), 0);
        // 600 keys: at most 3 chunks of >= 256 → 200 each, rounded up to the 128-key tile.
        assert_eq!(AttentionStats::chunk_len(1, 8, 600), 256);
    }

    #[test]
    fn kernel_prefill_without_window() {
        emulated_case(2, 1, 40, 40, None, false, 0);
    }

    #[test]
    fn kernel_bf16_inputs() {
        emulated_case(4, 4, 2, 150, None, true, 0);
    }
}
