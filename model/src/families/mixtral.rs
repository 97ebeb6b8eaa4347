//! Mixtral 8x7B / 8x22B: every layer a sparse MoE of SwiGLU experts; softmax over the router
//! logits, top-2, renormalised.

use routelab_kernels::routing::RoutingParams;

use super::common::*;
use super::layout::*;
use super::raw::RawConfig;
use super::Family;
use crate::config::*;
use crate::error::Result;

pub fn config(raw: &RawConfig) -> Result<ModelConfig> {
    let b = basics(raw, 32768)?;
    let heads = attention_heads(raw, b.hidden_size, None)?;
    let intermediate = raw.usize("intermediate_size")?;
    let moe = MoeConfig {
        routing: RoutingParams::softmax_top_k(raw.usize("num_local_experts")?, raw.usize("num_experts_per_tok")?, true),
        expert_intermediate_size: intermediate,
        correction_bias: false,
        shared: None,
        dense_residual: None,
    };
    let layers = uniform_layers(sliding_windows(raw, b.num_layers, |_| true)?, FfnConfig::Moe(moe));
    Ok(b.config(
        Family::Mixtral,
        Parts {
            lm_head_bias: false,
            norm: rms_norm(raw, 1e-5)?,
            activation: activation(raw, "hidden_act")?,
            attention: standard_attention(&heads, false, false, QkNorm::None, None),
            rope: rope(raw, heads.head_dim, 1_000_000.0)?,
            layers,
        },
    ))
}

pub const MIXTRAL_MOE: MoeNames = MoeNames {
    block: "block_sparse_moe",
    router: "gate.weight",
    correction_bias: None,
    experts: ExpertNames::PerExpert { experts: "experts", mlp: MIXTRAL_EXPERT },
    shared: None,
    shared_gate: None,
};

pub const LAYOUT: TensorLayout = TensorLayout { moe: Some(MIXTRAL_MOE), ..TensorLayout::LLAMA };
