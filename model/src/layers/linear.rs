//! A dense projection `y = x Wᵀ + b` with the checkpoint's `[out, in]` weight.

use candle_core::{DType, Tensor};

use routelab_kernels::matmul::{self, PackedWeight};

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
}

impl Linear {
    /// `weight` `[out, in]`, `bias` `[out]`.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear { weight: Weight::Rows(weight), bias }
    }

    pub fn load(w: &Weights, prefix: &str, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = w.get(&format!("{prefix}.weight"), &[out_dim, in_dim])?;
        let bias = if bias { Some(w.get_as(&format!("{prefix}.bias"), &[out_dim], w.compute_dtype())?) } else { None };
        Ok(Linear::new(weight, bias))
    }

    /// Rows of several projections stacked into one (q|k|v, gate|up): one matmul instead of
    /// several.
    pub fn stack(parts: &[Linear]) -> Result<Self> {
        let weights = parts.iter().map(Linear::rows).collect::<Result<Vec<_>>>()?;
        let weight = Tensor::cat(&weights, 0)?;
        let bias = if parts.iter().all(|p| p.bias.is_none()) {
            None
        } else {
            let mut bs = Vec::with_capacity(parts.len());
            for (p, w) in parts.iter().zip(&weights) {
                bs.push(match &p.bias {
                    Some(b) => b.clone(),
                    None => Tensor::zeros(w.dim(0)?, w.dtype(), w.device())?,
                });
            }
            Some(Tensor::cat(&bs, 0)?)
        };
        Ok(Linear::new(weight, bias))
    }

    /// The weight as `[out, in]` (unpacked into a new tensor if it is packed).
    pub fn rows(&self) -> Result<Tensor> {
        Ok(match &self.weight {
            Weight::Rows(w) => w.clone(),
            Weight::Packed(p) => p.unpack()?,
        })
    }

    /// The packed weight, once [`Linear::pack`] has packed it.
    pub fn packed(&self) -> Option<&PackedWeight> {
        match &self.weight {
            Weight::Packed(p) => Some(p),
            Weight::Rows(_) => None,
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
        };
        weight + self.bias.as_ref().map_or(0, tensor_bytes)
    }

    pub fn out_dim(&self) -> usize {
        match &self.weight {
            Weight::Rows(w) => w.dims()[0],
            Weight::Packed(p) => p.out_dim(),
        }
    }

    pub fn in_dim(&self) -> usize {
        match &self.weight {
            Weight::Rows(w) => w.dims()[1],
            Weight::Packed(p) => p.in_dim(),
        }
    }

    /// `x`: `[T, in]` → `[T, out]`, in `x`'s dtype.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.weight {
            Weight::Rows(w) => x.matmul(&w.t()?)?,
            Weight::Packed(p) => matmul::matmul_t(&x.to_dtype(DType::F32)?, p)?.to_dtype(x.dtype())?,
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
