//! OLMoE: 64 experts top-8 with *un-normalised* top-k weights (`norm_topk_prob` false), RMSNorm
//! on the whole q and k projections (not per head), optional clip of q/k/v.

use routelab_kernels::routing::RoutingParams;

use super::common::*;
use super::layout::*;
use super::raw::RawConfig;
use super::Family;
use crate::config::*;
use crate::error::Result;

pub fn config(raw: &RawConfig) -> Result<ModelConfig> {
    let b = basics(raw, 4096)?;
    let heads = attention_heads(raw, b.hidden_size, None)?;
    let bias = raw.bool_or("attention_bias", false)?;
    let moe = MoeConfig {
        routing: RoutingParams::softmax_top_k(
            raw.usize_any(&["num_experts", "num_local_experts"])?,
            raw.usize("num_experts_per_tok")?,
            raw.bool_or("norm_topk_prob", false)?,
        ),
        expert_intermediate_size: raw.usize("intermediate_size")?,
        correction_bias: false,
        shared: None,
        dense_residual: None,
    };
    Ok(b.config(
        Family::Olmoe,
        Parts {
            lm_head_bias: false,
            norm: rms_norm(raw, 1e-5)?,
            activation: activation(raw, "hidden_act")?,
            attention: standard_attention(&heads, bias, bias, QkNorm::Full, raw.opt_f64("clip_qkv")?),
            rope: rope(raw, heads.head_dim, 10_000.0)?,
            layers: uniform_layers(vec![None; b.num_layers], FfnConfig::Moe(moe)),
        },
    ))
}

pub const LAYOUT: TensorLayout = TensorLayout {
    moe: Some(MoeNames {
        block: "mlp",
        router: "gate.weight",
        correction_bias: None,
        experts: ExpertNames::PerExpert { experts: "experts", mlp: LLAMA_MLP },
        shared: None,
        shared_gate: None,
    }),
    ..TensorLayout::LLAMA
};
