//! RMSNorm and LayerNorm, computed in f32 whatever the run dtype (as transformers does).
//!
//! In a bf16/f16 run on CUDA the input stays in its dtype: candle's CUDA norm kernels
//! accumulate and scale in f32 and round once on output, so one launch does what a cast to f32,
//! the norm and a cast back did in three (per norm, two to four per layer). The weight is then
//! the run dtype's copy, as in transformers' bf16 models (`weight * x.to(input_dtype)`). Not on
//! the CPU: candle's CPU norm divides and scales in bf16 itself, three roundings instead of
//! one, which doubled the bf16 rehearsal's logit error on several fixtures; rounding only the
//! weight (what the CUDA path adds) left it within noise (largest 8.9% of the top logit against
//! 6.6%, tolerance 12%).

use candle_core::{DType, Tensor};

use crate::config::{NormConfig, NormKind};
use crate::error::Result;
use crate::weights::Weights;

/// A norm's parameters on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct NormParameters {
    pub kind: NormKind,
    pub weight: Vec<f32>,
    /// LayerNorm's bias (zeros for a bias-free LayerNorm).
    pub bias: Option<Vec<f32>>,
    pub eps: f32,
}

#[derive(Clone, Debug)]
pub struct Norm {
    weight: Tensor,
    bias: Option<Tensor>,
    /// The weight and bias in the run dtype, for inputs in that dtype (CUDA bf16/f16 runs only).
    run: Option<(Tensor, Option<Tensor>)>,
    kind: NormKind,
    eps: f32,
}

impl Norm {
    /// Loads `{prefix}.weight` (and `{prefix}.bias` for LayerNorm with bias) of size `dim`.
    pub fn load(w: &Weights, prefix: &str, dim: usize, config: NormConfig) -> Result<Self> {
        let weight = w.get_as(&format!("{prefix}.weight"), &[dim], DType::F32)?;
        let bias = match config.kind {
            NormKind::Layer { bias: true } => Some(w.get_as(&format!("{prefix}.bias"), &[dim], DType::F32)?),
            NormKind::Layer { bias: false } => Some(Tensor::zeros(dim, DType::F32, w.device())?),
            NormKind::Rms => None,
        };
        let run = match w.dtype() {
            DType::BF16 | DType::F16 if w.device().is_cuda() => {
                Some((weight.to_dtype(w.dtype())?, bias.as_ref().map(|b| b.to_dtype(w.dtype())).transpose()?))
            }
            _ => None,
        };
        Ok(Norm { weight, bias, run, kind: config.kind, eps: config.eps as f32 })
    }

    /// Kind, weight, bias (LayerNorm) and epsilon, as f32 on the host: what linearising the
    /// norm around one input needs.
    pub fn parameters(&self) -> Result<NormParameters> {
        Ok(NormParameters {
            kind: self.kind,
            weight: self.weight.to_vec1()?,
            bias: self.bias.as_ref().map(|b| b.to_vec1()).transpose()?,
            eps: self.eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        if let Some((weight, bias)) = self.run.as_ref().filter(|(w, _)| w.dtype() == dtype) {
            let x = x.contiguous()?;
            return Ok(match (&self.kind, bias) {
                (NormKind::Rms, _) => candle_nn::ops::rms_norm(&x, weight, self.eps)?,
                (NormKind::Layer { .. }, Some(b)) => candle_nn::ops::layer_norm(&x, weight, b, self.eps)?,
                (NormKind::Layer { .. }, None) => unreachable!("LayerNorm always has a bias tensor"),
            });
        }
        // The fused kernels want contiguous rows; q/k slices of a fused projection are views.
        let x32 = x.to_dtype(DType::F32)?.contiguous()?;
        let y = match (&self.kind, &self.bias) {
            (NormKind::Rms, _) => candle_nn::ops::rms_norm(&x32, &self.weight, self.eps)?,
            (NormKind::Layer { .. }, Some(b)) => candle_nn::ops::layer_norm(&x32, &self.weight, b, self.eps)?,
            (NormKind::Layer { .. }, None) => unreachable!("LayerNorm always has a bias tensor"),
        };
        Ok(y.to_dtype(dtype)?)
    }
}
