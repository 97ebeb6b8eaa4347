//! A dense projection `y = x Wᵀ + b` with the checkpoint's `[out, in]` weight.

use std::sync::Arc;

use candle_core::{DType, Tensor};

use routelab_kernels::matmul::{self, PackedWeight};

use super::blocks::Blocks;
use crate::error::Result;
use crate::weights::Weights;

#[derive(Clone, Debug)]
pub struct Linear {
    weight: Weight,
    pub bias: Option<Tensor>,
}

#[derive(Clone, Debug)]
enum Weight {
    /// `[out, in]` as the checkpoint has it: on a GPU, and until [`Linear::pack`].
    Rows(Tensor),
    /// Packed for the CPU's matmul ([`routelab_kernels::matmul`]), in place of the rows.
    Packed(PackedWeight),
    /// GGUF blocks as stored (Q8_0, K-quants, …), see [`Blocks`]. Stacked projections keep
    /// one part each (a Q4_K_M file mixes block types across q, k and v); their outputs are
    /// concatenated.
    Quantized(Vec<Arc<Blocks>>),
}

impl Linear {
    /// `weight` `[out, in]`, `bias` `[out]`.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear { weight: Weight::Rows(weight), bias }
    }

    /// A quantized weight `[out, in]` as stored.
    pub fn quantized(weight: Blocks, bias: Option<Tensor>) -> Self {
        Linear { weight: Weight::Quantized(vec![Arc::new(weight)]), bias }
    }

    /// Loads `{prefix}.weight` (kept quantized when the weights keep their GGUF blocks) and
    /// `{prefix}.bias`.
    pub fn load(w: &Weights, prefix: &str, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let name = format!("{prefix}.weight");
        let quantized = w.get_quantized(&name, &[out_dim, in_dim])?;
        let rows = if quantized.is_none() { Some(w.get(&name, &[out_dim, in_dim])?) } else { None };
        let bias = if bias { Some(w.get_as(&format!("{prefix}.bias"), &[out_dim], w.compute_dtype())?) } else { None };
        Ok(match (quantized, rows) {
            (Some(q), _) => Linear::quantized(q, bias),
            (None, Some(r)) => Linear::new(r, bias),
            (None, None) => unreachable!("one of the two was loaded"),
        })
    }

    /// Every part's blocks in place (read by RouteLab's block kernels), if all are.
    pub fn mapped_parts(&self) -> Option<Vec<&routelab_kernels::blocks::BlockMatrix>> {
        match &self.weight {
            Weight::Quantized(q) => q.iter().map(|b| b.mapped()).collect(),
            _ => None,
        }
    }

    /// Whether the weight is kept in GGUF blocks.
    pub fn is_quantized(&self) -> bool {
        matches!(self.weight, Weight::Quantized(_))
    }

    /// Rows of several projections stacked into one (q|k|v, gate|up): one matmul instead of
    /// several (one per part for quantized weights, which stay as stored).
    pub fn stack(parts: &[Linear]) -> Result<Self> {
        if parts.iter().all(Linear::is_quantized) {
            let blocks = parts.iter().flat_map(|p| match &p.weight {
                Weight::Quantized(q) => q.clone(),
                _ => unreachable!("all parts are quantized"),
            });
            let mut stacked = Linear { weight: Weight::Quantized(blocks.collect()), bias: None };
            stacked.bias = Self::stacked_bias(parts, &parts.iter().map(Linear::out_dim).collect::<Vec<_>>())?;
            return Ok(stacked);
        }
        let weights = parts.iter().map(Linear::rows).collect::<Result<Vec<_>>>()?;
        let weight = Tensor::cat(&weights, 0)?;
        let bias = Self::stacked_bias(parts, &weights.iter().map(|w| w.dim(0)).collect::<candle_core::Result<Vec<_>>>()?)?;
        Ok(Linear::new(weight, bias))
    }

    /// The parts' biases end to end (zeros for a part without one), or none if no part has one.
    fn stacked_bias(parts: &[Linear], rows: &[usize]) -> Result<Option<Tensor>> {
        let Some(like) = parts.iter().find_map(|p| p.bias.as_ref()) else { return Ok(None) };
        let mut bs = Vec::with_capacity(parts.len());
        for (p, &n) in parts.iter().zip(rows) {
            bs.push(match &p.bias {
                Some(b) => b.clone(),
                None => Tensor::zeros(n, like.dtype(), like.device())?,
            });
        }
        Ok(Some(Tensor::cat(&bs, 0)?))
    }

    /// The weight as `[out, in]` (unpacked into a new tensor if it is packed).
    pub fn rows(&self) -> Result<Tensor> {
        Ok(match &self.weight {
            Weight::Rows(w) => w.clone(),
            Weight::Packed(p) => p.unpack()?,
            Weight::Quantized(q) => {
                let parts = q.iter().map(|q| q.dequantize()).collect::<candle_core::Result<Vec<_>>>()?;
                Tensor::cat(&parts, 0)?
            }
        })
    }

    /// Rows `ids` of the weight, `[n, in]` f32 on the weight's device, without unpacking or
    /// dequantising the rest (one token's unembedding direction).
    pub fn gather_rows(&self, ids: &[u32]) -> Result<Tensor> {
        Ok(match &self.weight {
            Weight::Rows(w) => w.index_select(&Tensor::from_vec(ids.to_vec(), ids.len(), w.device())?, 0)?.to_dtype(DType::F32)?,
            Weight::Packed(p) => p.gather_rows(ids)?.to_dtype(DType::F32)?,
            Weight::Quantized(q) if q.len() == 1 => q[0].gather_rows(ids)?,
            Weight::Quantized(_) => {
                let rows = self.rows()?;
                rows.index_select(&Tensor::from_vec(ids.to_vec(), ids.len(), rows.device())?, 0)?.to_dtype(DType::F32)?
            }
        })
    }

    /// The packed weight, once [`Linear::pack`] has packed it.
    pub fn packed(&self) -> Option<&PackedWeight> {
        match &self.weight {
            Weight::Packed(p) => Some(p),
            Weight::Rows(_) | Weight::Quantized(_) => None,
        }
    }

    /// Replaces a CPU f32 or bf16 weight by its packed form (the rows are dropped, so the
    /// weight stays in memory once). Runs must then compute in f32. Anything else is left
    /// as it is.
    pub fn pack(&mut self) -> Result<()> {
        if let Weight::Rows(w) = &self.weight {
            if w.device().is_cpu() && matmul::packs(w.dtype()) {
                self.weight = Weight::Packed(PackedWeight::pack(w)?);
            }
        }
        Ok(())
    }

    /// Bytes of weight (and bias) a forward call reads.
    pub fn bytes(&self) -> usize {
        let weight = match &self.weight {
            Weight::Rows(w) => tensor_bytes(w),
            Weight::Packed(p) => p.bytes(),
            Weight::Quantized(q) => q.iter().map(|q| q.bytes()).sum(),
        };
        weight + self.bias.as_ref().map_or(0, tensor_bytes)
    }

    pub fn out_dim(&self) -> usize {
        match &self.weight {
            Weight::Rows(w) => w.dims()[0],
            Weight::Packed(p) => p.out_dim(),
            Weight::Quantized(q) => q.iter().map(|q| q.out_dim()).sum(),
        }
    }

    pub fn in_dim(&self) -> usize {
        match &self.weight {
            Weight::Rows(w) => w.dims()[1],
            Weight::Packed(p) => p.in_dim(),
            Weight::Quantized(q) => q[0].in_dim(),
        }
    }

    /// `x`: `[T, in]` → `[T, out]`, in `x`'s dtype.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.weight {
            Weight::Rows(w) => x.matmul(&w.t()?)?,
            Weight::Packed(p) => matmul::matmul_t(&x.to_dtype(DType::F32)?, p)?.to_dtype(x.dtype())?,
            Weight::Quantized(_) if let Some(parts) = self.mapped_parts() => {
                super::blocks::grouped(&[(x, parts)])?.remove(0).to_dtype(x.dtype())?
            }
            Weight::Quantized(q) => {
                let x32 = x.to_dtype(DType::F32)?.contiguous()?;
                let parts = q.iter().map(|q| q.matmul_t(&x32)).collect::<candle_core::Result<Vec<_>>>()?;
                let y = Tensor::cat(&parts, 1)?;
                y.to_dtype(x.dtype())?
            }
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// Bytes a tensor's elements take.
pub fn tensor_bytes(t: &Tensor) -> usize {
    t.elem_count() * t.dtype().size_in_bytes()
}

#[cfg(test)]
mod tests {
    use super::super::blocks::kernel_type;
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::Device;
    use routelab_kernels::blocks::BlockMatrix;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// Both forms of kept blocks: candle's tensor, and RouteLab's kernels over the bytes.
    fn both_forms(q: &QTensor) -> [Blocks; 2] {
        let ty = kernel_type(q.dtype()).unwrap();
        let (n, k) = q.shape().dims2().unwrap();
        let data = q.data().unwrap().to_vec();
        let len = data.len();
        let mapped = BlockMatrix::new(ty, n, k, Arc::new(data), 0..len).unwrap();
        let copy = candle_core::quantized::ggml_file::qtensor_from_ggml(q.dtype(), &q.data().unwrap(), vec![n, k], &Device::Cpu).unwrap();
        [Blocks::Candle(Arc::new(copy)), Blocks::Mapped(mapped)]
    }

    /// A quantized projection (two stacked parts of different block types, with a bias) gives
    /// what its dequantised rows give, up to the activations' 8-bit quantization in the
    /// kernels: per block of 256 (32 for Q8_0) the activation error is at most half a step,
    /// |x|max / 254, so each output is off by at most Σ|w|·|x|max/254; with these values,
    /// well under 2% of the output scale.
    #[test]
    fn quantized_parts_match_their_dequantised_rows() {
        let dev = Device::Cpu;
        let (k, t) = (512, 5);
        let w1 = Tensor::randn(0f32, 0.05, (64, k), &dev).unwrap();
        let w2 = Tensor::randn(0f32, 0.05, (32, k), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, 96, &dev).unwrap();
        let q1 = QTensor::quantize(&w1, GgmlDType::Q4K).unwrap();
        let q2 = QTensor::quantize(&w2, GgmlDType::Q8_0).unwrap();
        let d1 = q1.dequantize(&dev).unwrap();
        let d2 = q2.dequantize(&dev).unwrap();
        for (p1, p2) in both_forms(&q1).into_iter().zip(both_forms(&q2)) {
            let form = format!("{p1:?}");
            let q = Linear::stack(&[
                Linear::quantized(p1, Some(bias.narrow(0, 0, 64).unwrap())),
                Linear::quantized(p2, Some(bias.narrow(0, 64, 32).unwrap())),
            ])
            .unwrap();
            let d = Linear::new(Tensor::cat(&[&d1, &d2], 0).unwrap(), Some(bias.clone()));
            assert!(q.is_quantized() && q.packed().is_none());
            assert_eq!((q.out_dim(), q.in_dim()), (96, k));
            let x = Tensor::randn(0f32, 1.0, (t, k), &dev).unwrap();
            let (yq, yd) = (q.forward(&x).unwrap(), d.forward(&x).unwrap());
            assert_eq!(yq.dims(), &[t, 96]);
            let scale = yd.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            let diff = max_diff(&yq, &yd);
            assert!(diff <= 0.02 * scale, "{form}: quantized {diff} vs scale {scale}");
            // The rows come back dequantised, and the bytes count the blocks.
            assert_eq!(max_diff(&q.rows().unwrap(), &Tensor::cat(&[&d1, &d2], 0).unwrap()), 0.0, "{form}");
            assert_eq!(q.bytes(), 64 * k / 256 * 144 + 32 * k / 32 * 34 + 96 * 4, "{form}");
        }
    }
}
