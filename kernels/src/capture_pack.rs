//! Gathers many small tensors (one forward call's captures) into one flat f32 tensor, so that
//! they leave the device in a single copy.
//!
//! The reference is a cast and a concatenation per tensor. On CUDA the same result comes from
//! one launch of `cuda/capture_pack.cu`: a table of (address, destination offset, length, dtype)
//! rows goes to the device with the launch, and each thread converts one element. Packing a
//! 16-layer MoE decode step's captures was ~80 launches (a copy per tensor, a cast for the
//! ids), ~110 with contribution norms; it is one.
//!
//! Sources may be f32, bf16, f16 or u32 (expert ids; exact in f32 below 2^24), and must be
//! contiguous (non-contiguous ones are made so first).

use candle_core::{DType, Device, Result, Tensor};

use crate::launch::{Launch, Scalar};

/// The kernel's dtype code for a source tensor.
pub fn dtype_code(dtype: DType) -> Result<u64> {
    Ok(match dtype {
        DType::F32 => 0,
        DType::BF16 => 1,
        DType::F16 => 2,
        DType::U32 => 3,
        other => candle_core::bail!("capture-pack: cannot pack {other:?} tensors (f32, bf16, f16 or u32)"),
    })
}

/// The CUDA launch for `rows` table rows covering `total` destination elements: one thread per
/// element, 256 per block.
pub fn launch(rows: usize, total: usize) -> Launch {
    Launch {
        kernel: "capture_pack",
        grid: ((total as u64).div_ceil(256).max(1) as u32, 1, 1),
        block: (256, 1, 1),
        scalars: vec![Scalar::I32(rows as i32), Scalar::I64(total as i64)],
    }
}

/// `parts`, each flattened and cast to f32, one after another: `[Σ elements]` f32 on the parts'
/// device. An empty list gives an empty tensor on `device`.
pub fn pack_f32(parts: &[Tensor], device: &Device) -> Result<Tensor> {
    for p in parts {
        dtype_code(p.dtype())?;
        if !p.device().same_device(device) {
            candle_core::bail!("capture-pack: a part is on {:?}, not {:?}", p.device().location(), device.location());
        }
    }
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(dev) => cuda::pack(parts, dev),
        _ => reference(parts, device),
    }
}

/// Cast and concatenate: the ground truth the kernel is checked against.
pub fn reference(parts: &[Tensor], device: &Device) -> Result<Tensor> {
    let flat: Vec<Tensor> = parts.iter().map(|p| p.to_dtype(DType::F32)?.flatten_all()).collect::<Result<_>>()?;
    match flat.len() {
        0 => Tensor::zeros(0, DType::F32, device),
        // One part comes back as it is.
        _ => Tensor::cat(&flat, 0),
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DevicePtr, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::op::BackpropOp;
    use candle_core::{CudaDevice, CudaStorage, DType, Result, Storage, Tensor};
    use half::{bf16, f16};

    pub fn pack(parts: &[Tensor], dev: &CudaDevice) -> Result<Tensor> {
        let parts: Vec<Tensor> = parts.iter().filter(|p| p.elem_count() > 0).map(|p| p.contiguous()).collect::<Result<_>>()?;
        let total: usize = parts.iter().map(|p| p.elem_count()).sum();
        // SAFETY: the rows cover [0, total), so every element is written.
        let out = unsafe { dev.alloc::<f32>(total.max(1))? };
        if total > 0 {
            let stream = dev.cuda_stream();
            let guards: Vec<_> = parts.iter().map(|p| p.storage_and_layout()).collect();
            let mut table: Vec<u64> = Vec::with_capacity(4 * parts.len());
            // Each source's read is recorded on the stream until the launch is queued.
            let mut reads = Vec::with_capacity(parts.len());
            let mut at = 0u64;
            for (storage, layout) in &guards {
                let Storage::Cuda(cs) = &**storage else { candle_core::bail!("capture-pack: a part is not on the GPU") };
                let (start, len) = (layout.start_offset() as u64, layout.shape().elem_count() as u64);
                let (ptr, size) = match cs.dtype() {
                    DType::F32 => (cs.as_cuda_slice::<f32>()?.device_ptr(&stream), 4),
                    DType::BF16 => (cs.as_cuda_slice::<bf16>()?.device_ptr(&stream), 2),
                    DType::F16 => (cs.as_cuda_slice::<f16>()?.device_ptr(&stream), 2),
                    DType::U32 => (cs.as_cuda_slice::<u32>()?.device_ptr(&stream), 4),
                    other => candle_core::bail!("capture-pack: cannot pack {other:?} tensors"),
                };
                table.extend([ptr.0 + start * size, at, len, super::dtype_code(cs.dtype())?]);
                reads.push(ptr.1);
                at += len;
            }
            let rows = table.len() / 4;
            let table = stream.clone_htod(&table).w()?;
            let launch = super::launch(rows, total);
            let func = dev.get_or_load_custom_func(launch.kernel, "routelab_capture_pack", crate::cuda::CAPTURE_PACK)?;
            let mut b = func.builder();
            b.arg(&table);
            b.arg(&out);
            launch.push_scalars(&mut b);
            // SAFETY: buffers then scalars, as capture_pack takes them; the sources stay alive
            // (held by the caller) and their reads are recorded when `reads` drops below.
            unsafe { b.launch(launch.config()) }.w()?;
            drop(reads);
        }
        let storage = CudaStorage::wrap_cuda_slice(out, dev.clone());
        Ok(Tensor::from_storage(Storage::Cuda(storage), total, BackpropOp::none(), false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulate::{self, Buf};

    fn parts() -> Vec<Tensor> {
        let d = &Device::Cpu;
        let logits: Vec<f32> = (0..3 * 50).map(|i| (i as f32 * 0.37).sin() * 4.0).collect();
        vec![
            Tensor::from_vec(logits.clone(), (3, 50), d).unwrap().to_dtype(DType::BF16).unwrap(),
            Tensor::from_vec(vec![7u32, 0, 63, 1 << 20, 5, 2], (3, 2), d).unwrap(),
            Tensor::from_vec(vec![0.25f32, 0.75, 1.0, 0.0, 0.5, 0.5], (3, 2), d).unwrap(),
            Tensor::zeros((0, 4), DType::F32, d).unwrap(),
            Tensor::from_vec(logits[..40].to_vec(), (4, 10), d).unwrap().to_dtype(DType::F16).unwrap(),
            Tensor::from_vec((0..300).map(|i| i as f32 - 150.5).collect::<Vec<_>>(), 300, d).unwrap(),
        ]
    }

    #[test]
    fn reference_concatenates_in_order_and_casts() {
        let p = parts();
        let got = pack_f32(&p, &Device::Cpu).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(got.len(), 150 + 6 + 6 + 40 + 300);
        assert_eq!(&got[150..156], &[7.0, 0.0, 63.0, (1 << 20) as f32, 5.0, 2.0]);
        assert_eq!(got[0], p[0].flatten_all().unwrap().to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap()[0]);
        assert!(pack_f32(&[], &Device::Cpu).unwrap().dims() == [0]);
        let bad = Tensor::from_vec(vec![1i64], 1, &Device::Cpu).unwrap();
        assert!(pack_f32(&[bad], &Device::Cpu).unwrap_err().to_string().contains("I64"));
    }

    /// The kernel (run by the emulator) against the reference: every dtype, an empty part, the
    /// table as `pack` builds it, and a total that ends mid-block.
    #[test]
    fn kernel_matches_the_reference_on_the_emulator() {
        let p = parts();
        let want = reference(&p, &Device::Cpu).unwrap().to_vec1::<f32>().unwrap();
        // Buffers as the kernel sees them: the table (resolved by the emulator), the output,
        // then the sources it points at.
        let mut sources: Vec<Buf> = Vec::new();
        let (mut rows, mut at) = (Vec::new(), 0u64);
        let mut bits16: Vec<Vec<u16>> = Vec::new();
        let mut words: Vec<Vec<u32>> = Vec::new();
        let mut floats: Vec<Vec<f32>> = Vec::new();
        for t in p.iter().filter(|t| t.elem_count() > 0) {
            let flat = t.flatten_all().unwrap();
            match t.dtype() {
                DType::BF16 => bits16.push(flat.to_vec1::<half::bf16>().unwrap().iter().map(|x| x.to_bits()).collect()),
                DType::F16 => bits16.push(flat.to_vec1::<half::f16>().unwrap().iter().map(|x| x.to_bits()).collect()),
                DType::U32 => words.push(flat.to_vec1::<u32>().unwrap()),
                _ => floats.push(flat.to_vec1::<f32>().unwrap()),
            }
            let len = t.elem_count() as u64;
            rows.push((t.dtype(), at, len));
            at += len;
        }
        let (mut i16s, mut iu32, mut if32) = (0, 0, 0);
        let mut table = Vec::new();
        for (k, (dtype, start, len)) in rows.iter().enumerate() {
            let buf = match dtype {
                DType::BF16 | DType::F16 => {
                    i16s += 1;
                    Buf::U16(&bits16[i16s - 1])
                }
                DType::U32 => {
                    iu32 += 1;
                    Buf::U32(&words[iu32 - 1])
                }
                _ => {
                    if32 += 1;
                    Buf::F32(&floats[if32 - 1])
                }
            };
            sources.push(buf);
            // Buffer index 2 + k: after the table and the output.
            table.push([2 + k as u64, *start, *len, dtype_code(*dtype).unwrap()]);
        }
        let total = at as usize;
        let mut bufs = vec![Buf::Table(table), Buf::Out(total)];
        bufs.extend(sources);
        let Some(out) = emulate::run(&launch(rows.len(), total), &bufs) else { return };
        assert_eq!(out[0], want);
    }
}
