//! Qwen2 (q/k/v bias), Qwen3 (per-head q/k RMSNorm), Qwen2-MoE (shared expert with a sigmoid
//! gate, optional dense layers) and Qwen3-MoE.

use routelab_kernels::routing::RoutingParams;

use super::common::*;
use super::layout::*;
use super::raw::RawConfig;
use super::Family;
use crate::config::*;
use crate::error::Result;

/// Qwen2/Qwen3's implied layer types before `layer_types` existed: sliding from
/// `max_window_layers` on, when `use_sliding_window`.
fn qwen2_windows(raw: &RawConfig, n: usize) -> Result<Vec<Option<usize>>> {
    let use_sw = raw.bool_or("use_sliding_window", false)?;
    let max_window_layers = raw.usize_or("max_window_layers", 28)?;
    if !use_sw && !raw.has("layer_types") {
        return Ok(vec![None; n]);
    }
    sliding_windows(raw, n, |l| use_sw && l >= max_window_layers)
}

fn dense(raw: &RawConfig, family: Family, qkv_bias: bool, qk_norm: QkNorm, default_head_dim: Option<usize>) -> Result<ModelConfig> {
    let b = basics(raw, 32768)?;
    let heads = attention_heads(raw, b.hidden_size, default_head_dim)?;
    let mlp = MlpConfig { intermediate_size: raw.usize("intermediate_size")?, bias: false };
    Ok(b.config(
        family,
        Parts {
            lm_head_bias: false,
            norm: rms_norm(raw, 1e-6)?,
            activation: activation(raw, "hidden_act")?,
            attention: standard_attention(&heads, qkv_bias, false, qk_norm, None),
            rope: rope(raw, heads.head_dim, 10_000.0)?,
            layers: uniform_layers(qwen2_windows(raw, b.num_layers)?, FfnConfig::Dense(mlp)),
        },
    ))
}

pub fn qwen2(raw: &RawConfig) -> Result<ModelConfig> {
    dense(raw, Family::Qwen2, true, QkNorm::None, None)
}

pub fn qwen3(raw: &RawConfig) -> Result<ModelConfig> {
    let bias = raw.bool_or("attention_bias", false)?;
    let mut c = dense(raw, Family::Qwen3, bias, QkNorm::PerHead, Some(128))?;
    if let AttentionKind::Standard(s) = &mut c.attention.kind {
        s.o_bias = bias;
    }
    Ok(c)
}

/// Which layers are MoE: not in `mlp_only_layers`, and every `decoder_sparse_step`-th.
fn moe_layers(raw: &RawConfig, n: usize, num_experts: usize) -> Result<Vec<bool>> {
    let dense_only = raw.usize_list_or_empty("mlp_only_layers")?;
    let step = raw.usize_or("decoder_sparse_step", 1)?.max(1);
    Ok((0..n).map(|l| !dense_only.contains(&l) && num_experts > 0 && (l + 1) % step == 0).collect())
}

fn moe(raw: &RawConfig, family: Family) -> Result<ModelConfig> {
    let qwen3 = family == Family::Qwen3Moe;
    let mut c = if qwen3 {
        let bias = raw.bool_or("attention_bias", false)?;
        dense(raw, family, bias, QkNorm::PerHead, Some(128))?
    } else {
        dense(raw, family, raw.bool_or("qkv_bias", true)?, QkNorm::None, None)?
    };
    let num_experts = raw.usize_any(&["num_experts", "num_local_experts"])?;
    let top_k = raw.usize("num_experts_per_tok")?;
    let routing = RoutingParams::softmax_top_k(num_experts, top_k, raw.bool_or("norm_topk_prob", false)?);
    let expert_intermediate_size = raw.usize("moe_intermediate_size")?;
    let shared = if qwen3 {
        None
    } else {
        let size = raw.usize("shared_expert_intermediate_size")?;
        (size > 0).then_some(SharedExpertConfig {
            intermediate_size: size,
            gated: true,
            count: (size / expert_intermediate_size.max(1)).max(1),
        })
    };
    let moe = MoeConfig { routing, expert_intermediate_size, correction_bias: false, shared, dense_residual: None };
    for (layer, is_moe) in c.layers.iter_mut().zip(moe_layers(raw, c.num_layers, num_experts)?) {
        if is_moe {
            layer.ffn = FfnConfig::Moe(moe.clone());
        }
    }
    Ok(c)
}

pub fn qwen2_moe(raw: &RawConfig) -> Result<ModelConfig> {
    // Qwen2-MoE's own implied windows: odd-numbered layers below max_window_layers.
    let mut c = moe(raw, Family::Qwen2Moe)?;
    if !raw.has("layer_types") {
        let use_sw = raw.bool_or("use_sliding_window", false)?;
        let max_window_layers = raw.usize_or("max_window_layers", 28)?;
        let windows = sliding_windows(raw, c.num_layers, |l| use_sw && (l + 1) % 2 == 1 && l < max_window_layers)?;
        for (layer, w) in c.layers.iter_mut().zip(windows) {
            layer.sliding_window = if use_sw { w } else { None };
        }
    }
    Ok(c)
}

pub fn qwen3_moe(raw: &RawConfig) -> Result<ModelConfig> {
    moe(raw, Family::Qwen3Moe)
}

const QWEN_MOE: MoeNames = MoeNames {
    block: "mlp",
    router: "gate.weight",
    correction_bias: None,
    experts: ExpertNames::PerExpert { experts: "experts", mlp: LLAMA_MLP },
    shared: Some(("shared_expert", LLAMA_MLP)),
    shared_gate: Some("shared_expert_gate.weight"),
};

pub const QWEN2_MOE_LAYOUT: TensorLayout = TensorLayout { moe: Some(QWEN_MOE), ..TensorLayout::LLAMA };

pub const QWEN3_MOE_LAYOUT: TensorLayout =
    TensorLayout { moe: Some(MoeNames { shared: None, shared_gate: None, ..QWEN_MOE }), ..TensorLayout::LLAMA };
