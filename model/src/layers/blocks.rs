//! A weight kept in its GGUF blocks: read in place from the mapped file by RouteLab's block
//! kernels ([`routelab_kernels::blocks`]: Q4_K, Q6_K, Q8_0 on CPUs with AVX-512 VNNI), or as
//! a copy in candle's quantized tensors, whose matmul repacks Q4_K/Q6_K/Q8_0 into tiles where
//! only AVX2 is available.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use routelab_kernels::blocks::{matmul_t_grouped, BlockMatrix, BlockType, Product};

#[derive(Debug)]
pub enum Blocks {
    /// Blocks in the mapped file (or, for rows llama.cpp permuted, an owned copy).
    Mapped(BlockMatrix),
    /// A copy of the blocks in candle's quantized tensor (shared: its repacked tiles are
    /// cached inside it).
    Candle(Arc<QTensor>),
}

impl Blocks {
    /// The blocks in place, when RouteLab's kernels read them.
    pub fn mapped(&self) -> Option<&BlockMatrix> {
        match self {
            Blocks::Mapped(m) => Some(m),
            Blocks::Candle(_) => None,
        }
    }

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

/// Products of several activations with their weights' parts, in one parallel region (a MoE
/// layer's selected experts; q|k|v): `items` `(x [T, in], parts)`; per item the parts'
/// outputs side by side, `[T, Σ out]` f32 on the CPU.
pub fn grouped(items: &[(&Tensor, Vec<&BlockMatrix>)]) -> candle_core::Result<Vec<Tensor>> {
    let xs: Vec<Tensor> = items.iter().map(|(x, _)| x.to_dtype(DType::F32)?.contiguous()).collect::<candle_core::Result<_>>()?;
    let mut outs: Vec<Vec<f32>> = Vec::new();
    for (x, (_, parts)) in xs.iter().zip(items) {
        let (t, k) = x.dims2()?;
        for w in parts {
            if w.in_dim() != k {
                candle_core::bail!("x [{t}, {k}] does not fit a [{}, {}] weight", w.out_dim(), w.in_dim());
            }
            outs.push(vec![0f32; t * w.out_dim()]);
        }
    }
    {
        let guards: Vec<_> = xs.iter().map(|x| x.storage_and_layout()).collect();
        let mut slices = Vec::with_capacity(xs.len());
        for ((storage, layout), x) in guards.iter().zip(&xs) {
            let candle_core::Storage::Cpu(cpu) = &**storage else { candle_core::bail!("block matmul: x must be on the CPU") };
            slices.push(&cpu.as_slice::<f32>()?[layout.start_offset()..layout.start_offset() + x.elem_count()]);
        }
        let mut products = Vec::with_capacity(outs.len());
        let mut out_iter = outs.iter_mut();
        for ((x, xs_), (_, parts)) in slices.iter().zip(&xs).zip(items) {
            let m = xs_.dim(0)?;
            for w in parts {
                let Some(y) = out_iter.next() else { candle_core::bail!("block matmul: fewer outputs than parts") };
                products.push(Product { x, m, w, y: y.as_mut_slice() });
            }
        }
        matmul_t_grouped(&mut products);
    }
    let mut outs = outs.into_iter();
    let mut ys = Vec::with_capacity(items.len());
    for (x, (_, parts)) in xs.iter().zip(items) {
        let t = x.dim(0)?;
        let parts: Vec<Tensor> = parts
            .iter()
            .map(|w| match outs.next() {
                Some(y) => Tensor::from_vec(y, (t, w.out_dim()), &Device::Cpu),
                None => candle_core::bail!("block matmul: fewer outputs than parts"),
            })
            .collect::<candle_core::Result<_>>()?;
        ys.push(Tensor::cat(&parts, 1)?);
    }
    Ok(ys)
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
