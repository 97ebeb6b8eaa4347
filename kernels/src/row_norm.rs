//! Row-wise L2 norms `‖x_t‖₂` in f32 as one candle op: capture's contribution norms (routed
//! experts, shared experts, dense residual) per position. On CUDA (`cuda/row_norm.cu`, one
//! block per row) a norm is one launch reading the activations in their own dtype, instead of
//! a cast, a square, a sum and a square root.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};

use crate::launch::Launch;

#[derive(Clone, Copy, Debug, Default)]
pub struct RowNorm;

/// `[T, D]` (any float dtype) → `[T]` f32.
pub fn row_norm(x: &Tensor) -> candle_core::Result<Tensor> {
    let x = if x.device().is_cpu() { x.to_dtype(DType::F32)?.contiguous()? } else { x.contiguous()? };
    x.apply_op1_no_bwd(&RowNorm)
}

/// The CUDA launch for `rows` rows (also what the emulator runs): one block of 256 per row.
pub fn launch(kernel: &'static str, rows: usize, cols: usize) -> Launch {
    Launch::per_row(kernel, rows, cols)
}

impl CustomOp1 for RowNorm {
    fn name(&self) -> &'static str {
        "routelab-row-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, cols) = l.shape().dims2()?;
        let CpuStorage::F32(v) = s else { candle_core::bail!("row-norm: the CPU op takes f32 (row_norm converts)") };
        let Some((a, b)) = l.contiguous_offsets() else { candle_core::bail!("row-norm: input must be contiguous") };
        let out = v[a..b].chunks(cols.max(1)).take(rows).map(|r| r.iter().map(|x| x * x).sum::<f32>().sqrt()).collect();
        Ok((CpuStorage::F32(out), Shape::from(rows)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &candle_core::CudaStorage, l: &Layout) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
        use candle_core::cuda_backend::WrapErr;
        use half::{bf16, f16};

        let (rows, cols) = l.shape().dims2()?;
        let Some((a, b)) = l.contiguous_offsets() else { candle_core::bail!("row-norm: input must be contiguous") };
        let dev = s.device();
        // SAFETY: thread 0 of each row's block writes its norm.
        let out = unsafe { dev.alloc::<f32>(rows.max(1))? };
        let kernel = match s.dtype() {
            DType::F32 => "row_norm_f32",
            DType::BF16 => "row_norm_bf16",
            DType::F16 => "row_norm_f16",
            other => candle_core::bail!("row-norm: {other:?} is not a float type the kernel takes"),
        };
        if rows > 0 {
            let launch = launch(kernel, rows, cols);
            let func = dev.get_or_load_custom_func(kernel, "routelab_row_norm", crate::cuda::ROW_NORM)?;
            macro_rules! go {
                ($ty:ty) => {{
                    let x = s.as_cuda_slice::<$ty>()?.slice(a..b);
                    let mut bld = func.builder();
                    bld.arg(&x);
                    bld.arg(&out);
                    launch.push_scalars(&mut bld);
                    // SAFETY: buffers then scalars, as row_norm_* take them.
                    unsafe { bld.launch(launch.config()) }.w()?;
                }};
            }
            match s.dtype() {
                DType::BF16 => go!(bf16),
                DType::F16 => go!(f16),
                _ => go!(f32),
            }
        }
        Ok((candle_core::CudaStorage::wrap_cuda_slice(out, dev.clone()), Shape::from(rows)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn hand_computed_rows() {
        // [3, 4] → 5; [0, 0] → 0; bf16 input is read as its f32 value.
        let x = Tensor::from_vec(vec![3f32, 4.0, 0.0, 0.0], (2, 2), &Device::Cpu).unwrap();
        assert_eq!(row_norm(&x).unwrap().to_vec1::<f32>().unwrap(), vec![5.0, 0.0]);
        assert_eq!(row_norm(&x.to_dtype(DType::BF16).unwrap()).unwrap().to_vec1::<f32>().unwrap(), vec![5.0, 0.0]);
    }

    /// The CUDA kernel (run by the emulator) against the reference, f32 and bf16, rows shorter
    /// and longer than a block.
    #[test]
    fn kernel_matches_the_reference_on_the_emulator() {
        for cols in [1usize, 100, 256, 2049] {
            let rows = 3;
            let x: Vec<f32> = (0..rows * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
            let xb: Vec<u16> = x.iter().map(|v| half::bf16::from_f32(*v).to_bits()).collect();
            for bf16 in [false, true] {
                let vals: Vec<f32> = if bf16 { xb.iter().map(|b| half::bf16::from_bits(*b).to_f32()).collect() } else { x.clone() };
                let want = row_norm(&Tensor::from_vec(vals, (rows, cols), &Device::Cpu).unwrap()).unwrap().to_vec1::<f32>().unwrap();
                let (kernel, buf) =
                    if bf16 { ("row_norm_bf16", crate::emulate::Buf::U16(&xb)) } else { ("row_norm_f32", crate::emulate::Buf::F32(&x)) };
                let Some(got) = crate::emulate::run(&launch(kernel, rows, cols), &[buf, crate::emulate::Buf::Out(rows)]) else { return };
                for r in 0..rows {
                    assert!(
                        (got[0][r] - want[r]).abs() <= 1e-5 * want[r].max(1.0),
                        "{kernel} cols {cols} row {r}: kernel {} reference {}",
                        got[0][r],
                        want[r]
                    );
                }
            }
        }
    }
}
