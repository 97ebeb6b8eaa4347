//! DeepSeek-V2 / V3 (and DeepSeekMoE-style fine-grained experts): multi-head latent attention,
//! shared experts added to the routed ones, the first `first_k_dense_replace` layers dense.
//!
//! Routing — V2: softmax scores, `greedy` or `group_limited_greedy` (group strength = best
//! expert), weights × `routed_scaling_factor`. V3 (`noaux_tc`): sigmoid scores, choice =
//! score + `e_score_correction_bias`, group strength = sum of its two best choices, weights =
//! the uncorrected scores, normalised, × `routed_scaling_factor`.

use routelab_kernels::routing::{GroupScore, Normalization, RoutingParams, Scoring, Selection};

use super::common::*;
use super::layout::*;
use super::raw::RawConfig;
use super::Family;
use crate::config::*;
use crate::error::{ModelError, Result};

pub fn config(raw: &RawConfig, family: Family) -> Result<ModelConfig> {
    let v3 = family == Family::DeepseekV3;
    let b = basics(raw, 2048)?;
    let num_heads = raw.usize("num_attention_heads")?;
    let mla = MlaAttention {
        q_lora_rank: raw.opt_usize("q_lora_rank")?,
        kv_lora_rank: raw.usize("kv_lora_rank")?,
        qk_nope_head_dim: raw.usize("qk_nope_head_dim")?,
        qk_rope_head_dim: raw.usize("qk_rope_head_dim")?,
        v_head_dim: raw.usize("v_head_dim")?,
        bias: raw.bool_or("attention_bias", false)?,
        // V2's reference rotates interleaved pairs (complex multiply); V3 makes it optional.
        rope_interleaved: if v3 { raw.bool_or("rope_interleave", true)? } else { true },
    };
    let rope = rope(raw, mla.qk_rope_head_dim, 10_000.0)?;
    // With YaRN the softmax temperature is corrected by mscale(factor, mscale_all_dim)².
    let mut softmax_scale = 1.0 / ((mla.qk_nope_head_dim + mla.qk_rope_head_dim) as f64).sqrt();
    if let RopeScaling::Yarn { factor, .. } = rope.scaling {
        let params = raw.opt_object("rope_parameters", "").or_else(|| raw.opt_object("rope_scaling", ""));
        let mscale_all = params.map(|p| p.f64_or("mscale_all_dim", 0.0)).transpose()?.unwrap_or(0.0);
        if mscale_all != 0.0 {
            let m = yarn_mscale(factor, mscale_all);
            softmax_scale *= m * m;
        }
    }
    let num_experts = raw.usize_any(&["n_routed_experts", "num_local_experts", "num_experts"])?;
    let top_k = raw.usize("num_experts_per_tok")?;
    let method = raw.str_or("topk_method", if v3 { "noaux_tc" } else { "greedy" })?;
    let scoring = match raw.str_or("scoring_func", if v3 { "sigmoid" } else { "softmax" })? {
        "softmax" => Scoring::Softmax,
        "sigmoid" => Scoring::Sigmoid,
        other => return Err(ModelError::config(raw.path, format!("scoring_func {other:?} is not supported (softmax, sigmoid)"))),
    };
    let groups = || -> Result<(usize, usize)> { Ok((raw.usize_or("n_group", 1)?, raw.usize_or("topk_group", 1)?)) };
    let selection = match method {
        "greedy" => Selection::TopK,
        "group_limited_greedy" => {
            let (groups, top_groups) = groups()?;
            Selection::GroupLimited { groups, top_groups, group_score: GroupScore::Max }
        }
        "noaux_tc" => {
            let (groups, top_groups) = groups()?;
            Selection::GroupLimited { groups, top_groups, group_score: GroupScore::TopTwoSum }
        }
        other => {
            return Err(ModelError::config(
                raw.path,
                format!("topk_method {other:?} is not supported (greedy, group_limited_greedy, noaux_tc)"),
            ))
        }
    };
    let norm_topk = raw.bool_or("norm_topk_prob", v3)?;
    let expert_intermediate_size = raw.usize("moe_intermediate_size")?;
    let n_shared = raw.usize_or("n_shared_experts", 0)?;
    let moe = MoeConfig {
        routing: RoutingParams {
            num_experts,
            top_k,
            scoring,
            selection,
            normalization: if norm_topk { Normalization::Sum } else { Normalization::None },
            routed_scaling: raw.f64_or("routed_scaling_factor", 1.0)? as f32,
        },
        expert_intermediate_size,
        correction_bias: method == "noaux_tc",
        shared: (n_shared > 0).then_some(SharedExpertConfig {
            intermediate_size: expert_intermediate_size * n_shared,
            gated: false,
            count: n_shared,
        }),
        dense_residual: None,
    };
    let dense = MlpConfig { intermediate_size: raw.usize("intermediate_size")?, bias: raw.bool_or("mlp_bias", false)? };
    let first_dense = raw.usize_or("first_k_dense_replace", 0)?;
    let freq = raw.usize_or("moe_layer_freq", 1)?.max(1);
    let layers = (0..b.num_layers)
        .map(|l| LayerConfig {
            sliding_window: None,
            ffn: if l >= first_dense && l % freq == 0 { FfnConfig::Moe(moe.clone()) } else { FfnConfig::Dense(dense) },
        })
        .collect();
    Ok(b.config(
        family,
        Parts {
            lm_head_bias: false,
            norm: rms_norm(raw, 1e-6)?,
            activation: activation(raw, "hidden_act")?,
            attention: AttentionConfig { num_heads, num_kv_heads: num_heads, kind: AttentionKind::Mla(mla), softmax_scale },
            rope,
            layers,
        },
    ))
}

pub const LAYOUT: TensorLayout = TensorLayout {
    attn: AttnNames::Mla { prefix: "self_attn" },
    moe: Some(MoeNames {
        block: "mlp",
        router: "gate.weight",
        correction_bias: Some("gate.e_score_correction_bias"),
        experts: ExpertNames::PerExpert { experts: "experts", mlp: LLAMA_MLP },
        shared: Some(("shared_experts", LLAMA_MLP)),
        shared_gate: None,
    }),
    ..TensorLayout::LLAMA
};
