//! Per-head attention statistics as a candle op: from each row of attention probabilities, its
//! entropy `−Σ p ln p` (nats) and its most-attended position (the first, on ties, as torch's
//! `argmax`).
//!
//! The attention layer applies it to each query block's probabilities, `[H·T, S]` rows, so
//! capturing head statistics costs one kernel launch per layer on CUDA
//! (`cuda/attn_stats.cu`, one block per row) instead of five, and one pass on the CPU.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

/// The op; output `[R, 2]` f32: entropy, argmax (as f32, exact below 2^24).
#[derive(Clone, Copy, Debug, Default)]
pub struct AttnStats;

/// `(entropy [..], argmax [..] u32)` over the last dimension of `probs`.
pub fn attn_stats(probs: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let dims = probs.dims().to_vec();
    let cols = *dims.last().unwrap_or(&1);
    let lead = &dims[..dims.len().saturating_sub(1)];
    let rows = lead.iter().product::<usize>();
    let flat = probs.to_dtype(DType::F32)?.contiguous()?.reshape((rows, cols))?;
    let s = flat.apply_op1_no_bwd(&AttnStats)?;
    let entropy = s.narrow(1, 0, 1)?.squeeze(1)?.reshape(lead)?;
    let argmax = s.narrow(1, 1, 1)?.squeeze(1)?.to_dtype(DType::U32)?.reshape(lead)?;
    Ok((entropy, argmax))
}

/// The reference: one row's statistics.
pub fn row_stats(p: &[f32]) -> (f32, u32) {
    let mut ent = 0f32;
    let (mut best, mut bi) = (f32::NEG_INFINITY, 0u32);
    for (j, &x) in p.iter().enumerate() {
        // p = 0 adds 0 (masked keys are exactly 0): skipping their logarithm halves a causal
        // prefill's work.
        if x != 0.0 {
            ent += x * x.clamp(1e-30, 1.0).ln();
        }
        if x > best {
            best = x;
            bi = j as u32;
        }
    }
    // abs: a one-key distribution gives −0.0, which would print as "-0.0".
    (ent.abs(), bi)
}

impl CustomOp1 for AttnStats {
    fn name(&self) -> &'static str {
        "routelab-attn-stats"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, cols) = l.shape().dims2()?;
        let CpuStorage::F32(v) = s else { candle_core::bail!("attn-stats: probabilities must be f32") };
        let Some((a, b)) = l.contiguous_offsets() else { candle_core::bail!("attn-stats: input must be contiguous") };
        let v = &v[a..b];
        let mut out = vec![0f32; rows * 2];
        // Rows are independent: spread them over the cores, as candle's own CPU ops are.
        out.par_chunks_mut(2).zip(v.par_chunks(cols.max(1))).for_each(|(o, row)| {
            let (e, i) = row_stats(row);
            o[0] = e;
            o[1] = i as f32;
        });
        Ok((CpuStorage::F32(out), Shape::from((rows, 2))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &candle_core::CudaStorage, l: &Layout) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::WrapErr;

        let (rows, cols) = l.shape().dims2()?;
        let Some((a, b)) = l.contiguous_offsets() else { candle_core::bail!("attn-stats: input must be contiguous") };
        let probs = s.as_cuda_slice::<f32>()?.slice(a..b);
        let dev = s.device();
        // SAFETY: thread 0 of each row's block writes both of its outputs.
        let out = unsafe { dev.alloc::<f32>((rows * 2).max(1))? };
        if rows > 0 {
            let func = dev.get_or_load_custom_func("attn_stats_f32", "routelab_attn_stats", crate::cuda::ATTN_STATS)?;
            let cfg = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            let mut bld = func.builder();
            let (r, c) = (rows as i32, cols as i32);
            bld.arg(&probs);
            bld.arg(&out);
            bld.arg(&r);
            bld.arg(&c);
            // SAFETY: argument list matches attn_stats_f32's signature.
            unsafe { bld.launch(cfg) }.w()?;
        }
        Ok((candle_core::CudaStorage::wrap_cuda_slice(out, dev.clone()), Shape::from((rows, 2))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn hand_computed_rows() {
        // [1, 0, 0]: entropy 0, argmax 0. [½, ½, 0]: ln 2, argmax 0 (first of the tie).
        // [0.2, 0.3, 0.5]: −(0.2 ln 0.2 + 0.3 ln 0.3 + 0.5 ln 0.5) = 1.029653, argmax 2.
        let p = Tensor::from_vec(vec![1.0f32, 0.0, 0.0, 0.5, 0.5, 0.0, 0.2, 0.3, 0.5], (1, 3, 3), &Device::Cpu).unwrap();
        let (e, a) = attn_stats(&p).unwrap();
        assert_eq!(e.dims(), &[1, 3]);
        let e = e.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a.flatten_all().unwrap().to_vec1::<u32>().unwrap(), vec![0, 0, 2]);
        assert_eq!(e[0], 0.0);
        assert!((e[1] - 2f32.ln()).abs() < 1e-6, "{e:?}");
        assert!((e[2] - 1.029_653).abs() < 1e-5, "{e:?}");
    }
}
