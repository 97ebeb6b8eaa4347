//! A dense projection `y = x Wᵀ + b` with the checkpoint's `[out, in]` weight.

use candle_core::Tensor;

use routelab_kernels::matvec;

use crate::error::Result;
use crate::weights::Weights;

#[derive(Clone, Debug)]
pub struct Linear {
    /// `[out, in]`.
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn load(w: &Weights, prefix: &str, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = w.get(&format!("{prefix}.weight"), &[out_dim, in_dim])?;
        let bias = if bias { Some(w.get_as(&format!("{prefix}.bias"), &[out_dim], w.compute_dtype())?) } else { None };
        Ok(Linear { weight, bias })
    }

    /// Rows of several projections stacked into one (q|k|v, gate|up): one matmul instead of
    /// several.
    pub fn stack(parts: &[Linear]) -> Result<Self> {
        let weights: Vec<&Tensor> = parts.iter().map(|p| &p.weight).collect();
        let weight = Tensor::cat(&weights, 0)?;
        let bias = if parts.iter().all(|p| p.bias.is_none()) {
            None
        } else {
            let mut bs = Vec::with_capacity(parts.len());
            for p in parts {
                bs.push(match &p.bias {
                    Some(b) => b.clone(),
                    None => Tensor::zeros(p.weight.dim(0)?, p.weight.dtype(), p.weight.device())?,
                });
            }
            Some(Tensor::cat(&bs, 0)?)
        };
        Ok(Linear { weight, bias })
    }

    /// Bytes of weight (and bias) a forward call reads.
    pub fn bytes(&self) -> usize {
        tensor_bytes(&self.weight) + self.bias.as_ref().map_or(0, tensor_bytes)
    }

    pub fn out_dim(&self) -> usize {
        self.weight.dims()[0]
    }

    /// `x`: `[T, in]` → `[T, out]`, in `x`'s dtype.
    ///
    /// On the CPU through [`matvec::matmul_t`]: its own kernel for bf16 weights and for a few
    /// rows of f32 ones (decode, an expert's tokens), the `gemm` crate per thread for longer
    /// prompts on f32 weights.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = &self.weight;
        let ours = x.device().is_cpu() && x.rank() == 2 && matvec::supports(x.dtype(), w.dtype());
        let y = if ours { matvec::matmul_t(&x.contiguous()?, w)? } else { x.matmul(&w.t()?)? };
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
