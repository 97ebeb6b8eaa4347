//! The gated MLP (SwiGLU and friends): `down(act(gate(x)) ⊙ up(x))`, with gate and up fused
//! into one `[2I, D]` projection so each token costs two matmuls.

use candle_core::{DType, Tensor, D};
use routelab_kernels::blocks::BlockMatrix;
use routelab_kernels::gated;
use routelab_kernels::matmul::PackedWeight;

use crate::config::Activation;
use crate::error::Result;
use crate::families::layout::MlpNames;
use crate::layers::linear::Linear;
use crate::weights::Weights;

#[derive(Clone, Debug)]
pub struct Mlp {
    /// Gate rows then up rows, `[2I, D]`.
    pub gate_up: Linear,
    /// `[D, I]`.
    pub down: Linear,
    pub intermediate: usize,
    pub activation: Activation,
}

impl Mlp {
    pub fn load(
        w: &Weights,
        prefix: &str,
        names: MlpNames,
        hidden: usize,
        intermediate: usize,
        bias: bool,
        activation: Activation,
    ) -> Result<Self> {
        let gate_up = match names {
            MlpNames::Separate { gate, up, .. } => Linear::stack(&[
                Linear::load(w, &format!("{prefix}.{gate}"), hidden, intermediate, bias)?,
                Linear::load(w, &format!("{prefix}.{up}"), hidden, intermediate, bias)?,
            ])?,
            MlpNames::Fused { gate_up, .. } => Linear::load(w, &format!("{prefix}.{gate_up}"), hidden, 2 * intermediate, bias)?,
        };
        let down_name = match names {
            MlpNames::Separate { down, .. } | MlpNames::Fused { down, .. } => down,
        };
        let down = Linear::load(w, &format!("{prefix}.{down_name}"), intermediate, hidden, bias)?;
        Ok(Mlp { gate_up, down, intermediate, activation })
    }

    pub fn from_parts(gate_up: Tensor, down: Tensor, activation: Activation) -> Result<Self> {
        let intermediate = down.dim(1)?;
        Ok(Mlp { gate_up: Linear::new(gate_up, None), down: Linear::new(down, None), intermediate, activation })
    }

    /// Bytes of weights one token reads.
    pub fn bytes(&self) -> usize {
        self.gate_up.bytes() + self.down.bytes()
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.down.forward(&self.gated(&self.gate_up.forward(x)?)?)
    }

    /// `act(gate) ⊙ up` from the fused projection's output `[T, 2I]`.
    pub fn gated(&self, gu: &Tensor) -> Result<Tensor> {
        if self.activation == Activation::Silu && gu.device().is_cpu() && gu.dtype() == DType::F32 {
            return Ok(gated::silu_mul(gu, self.intermediate)?);
        }
        let gate = gu.narrow(D::Minus1, 0, self.intermediate)?;
        let up = gu.narrow(D::Minus1, self.intermediate, self.intermediate)?;
        Ok((activate(&gate, self.activation)? * up)?)
    }

    /// Both projections' packed weights, when both are packed and have no biases (what the
    /// MoE's grouped products take).
    pub fn packed(&self) -> Option<(&PackedWeight, &PackedWeight)> {
        match (self.gate_up.bias.is_none() && self.down.bias.is_none(), self.gate_up.packed(), self.down.packed()) {
            (true, Some(gu), Some(d)) => Some((gu, d)),
            _ => None,
        }
    }

    /// Both projections' blocks in place, when both are kept that way and have no biases
    /// (what the MoE's grouped block products take).
    pub fn mapped(&self) -> Option<(Vec<&BlockMatrix>, Vec<&BlockMatrix>)> {
        if self.gate_up.bias.is_some() || self.down.bias.is_some() {
            return None;
        }
        Some((self.gate_up.mapped_parts()?, self.down.mapped_parts()?))
    }

    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        vec![&mut self.gate_up, &mut self.down]
    }
}

pub fn activate(x: &Tensor, a: Activation) -> Result<Tensor> {
    Ok(match a {
        Activation::Silu => x.silu()?,
        Activation::GeluTanh => x.gelu()?,
        Activation::Gelu => x.gelu_erf()?,
        Activation::Relu => x.relu()?,
    })
}
