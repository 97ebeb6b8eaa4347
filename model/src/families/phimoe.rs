//! Phi-3.5-MoE: Mixtral-shaped experts routed by sparsemixer, LayerNorm (with bias) instead of
//! RMSNorm, biases on attention and the LM head, longrope with explicit short/long mscales.

use routelab_kernels::routing::{Normalization, RoutingParams, Scoring, Selection};

use super::common::*;
use super::layout::*;
use super::mixtral::MIXTRAL_MOE;
use super::raw::RawConfig;
use super::Family;
use crate::config::*;
use crate::error::Result;

pub fn config(raw: &RawConfig) -> Result<ModelConfig> {
    let b = basics(raw, 4096 * 32)?;
    let heads = attention_heads(raw, b.hidden_size, None)?;
    let bias = raw.bool_or("attention_bias", false)?;
    let moe = MoeConfig {
        routing: RoutingParams {
            num_experts: raw.usize("num_local_experts")?,
            top_k: raw.usize_or("num_experts_per_tok", 2)?,
            scoring: Scoring::Softmax,
            selection: Selection::SparseMixer { jitter_eps: raw.f64_or("router_jitter_noise", 0.01)? as f32 },
            normalization: Normalization::None,
            routed_scaling: 1.0,
        },
        expert_intermediate_size: raw.usize("intermediate_size")?,
        correction_bias: false,
        shared: None,
        dense_residual: None,
    };
    Ok(b.config(
        Family::Phimoe,
        Parts {
            lm_head_bias: raw.bool_or("lm_head_bias", false)?,
            // Phi-3.5-MoE uses nn.LayerNorm; its eps is stored as rms_norm_eps.
            norm: NormConfig { kind: NormKind::Layer { bias: true }, eps: raw.f64_or("rms_norm_eps", 1e-5)? },
            activation: activation(raw, "hidden_act")?,
            attention: standard_attention(&heads, bias, bias, QkNorm::None, None),
            rope: rope(raw, heads.head_dim, 1_000_000.0)?,
            layers: uniform_layers(sliding_windows(raw, b.num_layers, |_| true)?, FfnConfig::Moe(moe)),
        },
    ))
}

pub const LAYOUT: TensorLayout = TensorLayout { moe: Some(MIXTRAL_MOE), ..TensorLayout::LLAMA };
