//! Snowflake Arctic: a dense MLP in parallel with a top-2 MoE of 128 experts
//! (`parallel_attn_mlp_res`). Every `moe_layer_frequency`-th layer is MoE; the others have a
//! plain MLP under `block_sparse_moe.mlp`. The residual MLP's hidden size is the model width.
//! Not in transformers: this follows Snowflake's published `modeling_arctic.py` (see
//! tests/fixtures/ARCTIC.md for the equations and source).

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
    let intermediate = raw.usize("intermediate_size")?;
    let frequency = raw.usize_or("moe_layer_frequency", 2)?.max(1);
    let parallel = raw.bool_or("parallel_attn_mlp_res", false)?;
    let moe = MoeConfig {
        routing: {
            // Snowflake renormalises the top-k weights only when k > 1.
            let k = raw.usize_or("num_experts_per_tok", 1)?;
            RoutingParams::softmax_top_k(raw.usize_or("num_local_experts", 8)?, k, k > 1)
        },
        expert_intermediate_size: intermediate,
        correction_bias: false,
        shared: None,
        dense_residual: parallel.then_some(MlpConfig { intermediate_size: b.hidden_size, bias: false }),
    };
    let dense = MlpConfig { intermediate_size: intermediate, bias: false };
    let layers = sliding_windows(raw, b.num_layers, |_| true)?
        .into_iter()
        .enumerate()
        .map(|(l, w)| LayerConfig {
            sliding_window: w,
            ffn: if (l + 1) % frequency == 0 { FfnConfig::Moe(moe.clone()) } else { FfnConfig::Dense(dense) },
        })
        .collect();
    Ok(b.config(
        Family::Arctic,
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

pub const LAYOUT: TensorLayout = TensorLayout {
    mlp: ("block_sparse_moe.mlp", MIXTRAL_EXPERT),
    moe: Some(MoeNames {
        block: "block_sparse_moe",
        router: "gate.weight",
        correction_bias: None,
        experts: ExpertNames::PerExpert { experts: "experts", mlp: MIXTRAL_EXPERT },
        shared: None,
        shared_gate: None,
    }),
    dense_residual: Some(DenseResidualNames { norm: "residual_layernorm", mlp: "residual_mlp", names: MIXTRAL_EXPERT }),
    ..TensorLayout::LLAMA
};
