//! A weight kept in its GGUF blocks: read in place from the mapped file by RouteLab's block
//! kernels ([`routelab_kernels::blocks`]: Q4_K, Q6_K, Q8_0 on CPUs with AVX-512 VNNI), or as
//! a copy in candle's quantized tensors, whose matmul repacks Q4_K/Q6_K/Q8_0 into tiles where
//! only AVX2 is available.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use routelab_kernels::blocks::{BlockMatrix, BlockType};

#[derive(Debug)]
pub enum Blocks {
    /// Blocks in the mapped file (or, for rows llama.cpp permuted, an owned copy).
    Mapped(BlockMatrix),
    /// A copy of the blocks in candle's quantized tensor (shared: its repacked tiles are
    /// cached inside it).
    Candle(Arc<QTensor>),
}

impl Blocks {
    pub fn out_dim(&self) -> usize {
        match self {
            Blocks::Mapped(m) => m.out_dim(),
            Blocks::Candle(q) => q.shape().dims()[0],
        }
    }

    pub fn in_dim(&self) -> usize {
        match self {
            Blocks::Mapped(m) => m.in_dim(),
            Blocks::Candle(q) => q.shape().dims()[1],
        }
    }

    /// Bytes of blocks.
    pub fn bytes(&self) -> usize {
        match self {
            Blocks::Mapped(m) => m.bytes(),
            Blocks::Candle(q) => q.storage_size_in_bytes(),
        }
    }

    /// The block type's GGUF name.
    pub fn type_name(&self) -> String {
        match self {
            Blocks::Mapped(m) => m.block_type().name().to_string(),
            Blocks::Candle(q) => format!("{:?}", q.dtype()),
        }
    }

    /// `x` `[T, in]` → `[T, out]` f32 (on the CPU for mapped blocks, on the tensor's device
    /// for candle's).
    pub fn matmul_t(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Blocks::Mapped(m) => {
                let x = x.to_dtype(DType::F32)?.contiguous()?;
                let (t, k) = x.dims2()?;
                if k != m.in_dim() {
                    candle_core::bail!("x [{t}, {k}] does not fit a [{}, {}] weight", m.out_dim(), m.in_dim());
                }
                let mut y = vec![0f32; t * m.out_dim()];
                let (storage, layout) = x.storage_and_layout();
                let candle_core::Storage::Cpu(cpu) = &*storage else { candle_core::bail!("block matmul: x must be on the CPU") };
                let xs = &cpu.as_slice::<f32>()?[layout.start_offset()..layout.start_offset() + t * k];
                m.matmul_t(xs, t, &mut y);
                drop(storage);
                Tensor::from_vec(y, (t, m.out_dim()), &Device::Cpu)
            }
            Blocks::Candle(q) => {
                let x = x.to_dtype(DType::F32)?.contiguous()?;
                QMatMul::QTensor(q.clone()).forward(&x)
            }
        }
    }

    /// The whole `[out, in]` matrix in f32, on the blocks' device.
    pub fn dequantize(&self) -> candle_core::Result<Tensor> {
        match self {
            Blocks::Mapped(m) => Tensor::from_vec(m.dequantize(), (m.out_dim(), m.in_dim()), &Device::Cpu),
            Blocks::Candle(q) => q.dequantize(&q.device()),
        }
    }

    /// Rows `ids` dequantised, `[T, in]` f32 on the CPU (an embedding table's lookup).
    pub fn gather_rows(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        let (vocab, d) = (self.out_dim(), self.in_dim());
        let mut rows = vec![0f32; ids.len() * d];
        for (&id, out) in ids.iter().zip(rows.chunks_exact_mut(d.max(1))) {
            let id = id as usize;
            if id >= vocab {
                candle_core::bail!("token id {id} is outside the embedding table ({vocab} rows)");
            }
            match self {
                Blocks::Mapped(m) => m.dequantize_row(id, out),
                Blocks::Candle(q) => {
                    let data = q.data()?;
                    let row_bytes = data.len() / vocab.max(1);
                    let row = candle_core::quantized::ggml_file::qtensor_from_ggml(
                        q.dtype(),
                        &data[id * row_bytes..(id + 1) * row_bytes],
                        vec![1, d],
                        &Device::Cpu,
                    )?;
                    out.copy_from_slice(&row.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?);
                }
            }
        }
        Tensor::from_vec(rows, (ids.len(), d), &Device::Cpu)
    }
}

/// The block type RouteLab's kernels take for a GGUF type, if any.
pub fn kernel_type(dtype: GgmlDType) -> Option<BlockType> {
    match dtype {
        GgmlDType::Q4K => Some(BlockType::Q4K),
        GgmlDType::Q6K => Some(BlockType::Q6K),
        GgmlDType::Q8_0 => Some(BlockType::Q8_0),
        _ => None,
    }
}
