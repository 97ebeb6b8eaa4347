//! The token embedding table and its lookup, in whichever form the table is kept.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use routelab_kernels::matmul::PackedWeight;

use super::blocks::Blocks;
use crate::error::Result;

pub enum Embedding {
    /// `[vocab, d]` rows.
    Rows(Tensor),
    /// The LM head's packed matrix, when the head is tied to the embeddings and packed: the
    /// table is then kept once.
    Tied(PackedWeight),
    /// A GGUF table kept in its blocks: a token's row is dequantised when it is looked up (the
    /// f32 table of a 50k-token, 2048-wide vocabulary is 412 MB; a row is 8 kB).
    Blocks(Arc<Blocks>),
}

impl Embedding {
    /// Rows of `tokens` `[T, d]` in `dtype` on `device`.
    pub fn lookup(&self, tokens: &[u32], device: &Device, dtype: DType) -> Result<Tensor> {
        let t = tokens.len();
        Ok(match self {
            Embedding::Rows(e) => e.index_select(&Tensor::from_vec(tokens.to_vec(), t, device)?, 0)?.to_dtype(dtype)?,
            // Packed only when computing in f32 on the CPU: the rows come out in that dtype.
            Embedding::Tied(p) => p.gather_rows(tokens)?,
            Embedding::Blocks(q) => q.gather_rows(tokens)?.to_device(device)?.to_dtype(dtype)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};

    #[test]
    fn block_rows_are_the_dequantised_table_rows() {
        let table = Tensor::randn(0f32, 1.0, (10, 256), &Device::Cpu).unwrap();
        for dtype in [GgmlDType::Q4K, GgmlDType::Q8_0, GgmlDType::Q5_0] {
            let q = QTensor::quantize(&table, dtype).unwrap();
            let full = q.dequantize(&Device::Cpu).unwrap();
            let ids = [3u32, 0, 9, 3];
            let got = Embedding::Blocks(Arc::new(Blocks::Candle(Arc::new(q)))).lookup(&ids, &Device::Cpu, DType::F32).unwrap();
            let want = full.index_select(&Tensor::new(&ids[..], &Device::Cpu).unwrap(), 0).unwrap();
            let diff = (got - want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            assert_eq!(diff, 0.0, "{dtype:?}");
        }
    }
}
