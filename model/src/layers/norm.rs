//! RMSNorm and LayerNorm, computed in f32 whatever the run dtype (as transformers does).

use candle_core::{DType, Tensor};

use crate::config::{NormConfig, NormKind};
use crate::error::Result;
use crate::weights::Weights;

#[derive(Clone, Debug)]
pub struct Norm {
    weight: Tensor,
    bias: Option<Tensor>,
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
        Ok(Norm { weight, bias, kind: config.kind, eps: config.eps as f32 })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
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
