//! Per-head attention statistics as a candle op: from each row of attention probabilities, its
//! entropy `−Σ p ln p` (nats) and its most-attended position (the first, on ties, as torch's
//! `argmax`).
//!
//! The attention layer applies it to each query block's probabilities, `[H·T, S]` rows, so
//! capturing head statistics costs one kernel launch per layer on CUDA
//! (`cuda/attn_stats.cu`, one block per row) instead of five, and one pass on the CPU.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::launch::Launch;

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

/// The CUDA launch for `rows` rows of `cols` probabilities (also what the emulator runs): one
/// block of 256 threads per row.
pub fn launch(rows: usize, cols: usize) -> Launch {
    Launch::per_row("attn_stats_f32", rows, cols)
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
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
        use candle_core::cuda_backend::WrapErr;

        let (rows, cols) = l.shape().dims2()?;
        let Some((a, b)) = l.contiguous_offsets() else { candle_core::bail!("attn-stats: input must be contiguous") };
        let probs = s.as_cuda_slice::<f32>()?.slice(a..b);
        let dev = s.device();
        // SAFETY: thread 0 of each row's block writes both of its outputs.
        let out = unsafe { dev.alloc::<f32>((rows * 2).max(1))? };
        if rows > 0 {
            let launch = launch(rows, cols);
            let func = dev.get_or_load_custom_func(launch.kernel, "routelab_attn_stats", crate::cuda::ATTN_STATS)?;
            let mut b = func.builder();
            b.arg(&probs);
            b.arg(&out);
            launch.push_scalars(&mut b);
            // SAFETY: buffers then scalars, as attn_stats_f32 takes them.
            unsafe { b.launch(launch.config()) }.w()?;
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

    /// The CUDA kernel (run by the emulator) against the reference: rows shorter than the
    /// block, exactly one block, and several strides long, with ties and exact zeros.
    #[test]
    fn kernel_matches_the_reference_on_the_emulator() {
        for cols in [1usize, 3, 255, 256, 257, 1000, 4099] {
            let rows = 5;
            let mut p = Vec::with_capacity(rows * cols);
            for r in 0..rows {
                // Row r: a few equal peaks (ties go to the first), zeros (masked keys), a smooth rest.
                let raw: Vec<f32> = (0..cols)
                    .map(|j| {
                        if j % 7 == r && j > 0 {
                            0.0
                        } else if j % 97 == 11 {
                            5.0
                        } else {
                            1.0 + ((j * 31 + r) % 13) as f32 / 13.0
                        }
                    })
                    .collect();
                let sum: f32 = raw.iter().sum();
                p.extend(raw.iter().map(|x| x / sum));
            }
            let Some(got) = crate::emulate::run(&launch(rows, cols), &[crate::emulate::Buf::F32(&p), crate::emulate::Buf::Out(rows * 2)])
            else {
                return;
            };
            for r in 0..rows {
                let (e, i) = row_stats(&p[r * cols..(r + 1) * cols]);
                let (ge, gi) = (got[0][2 * r], got[0][2 * r + 1]);
                assert_eq!(gi as u32, i, "cols {cols} row {r}: argmax");
                assert!((ge - e).abs() <= 1e-5 * (1.0 + e), "cols {cols} row {r}: entropy kernel {ge} reference {e}");
            }
        }
    }
}
