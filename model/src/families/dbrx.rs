//! DBRX: fused `Wqkv` clamped to ±`clip_qkv`, bias-free LayerNorm, 16 experts top-4 stored as
//! three stacked [E·I, D] tensors, top-k weights divided by their p-norm
//! (`moe_normalize_expert_weights`). Nested `attn_config` / `ffn_config` objects.

use routelab_kernels::routing::{Normalization, RoutingParams};

use super::common::*;
use super::layout::*;
use super::raw::RawConfig;
use super::Family;
use crate::config::*;
use crate::error::{ModelError, Result};

pub fn config(raw: &RawConfig) -> Result<ModelConfig> {
    let hidden = raw.usize("d_model")?;
    let num_heads = raw.usize("n_heads")?;
    let num_layers = raw.layer_count("n_layers")?;
    if num_heads == 0 || hidden % num_heads != 0 {
        return Err(ModelError::config(raw.path, format!("d_model {hidden} is not divisible by n_heads {num_heads}")));
    }
    let attn = raw.object("attn_config", "attn_config.")?;
    let ffn = raw.object("ffn_config", "ffn_config.")?;
    let num_kv_heads = attn.usize_or("kv_n_heads", 1)?;
    let heads = StandardAttentionFields { num_heads, num_kv_heads, head_dim: hidden / num_heads };
    if num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
        return Err(ModelError::config(
            raw.path,
            format!("n_heads {num_heads} is not a multiple of attn_config.kv_n_heads {num_kv_heads}"),
        ));
    }
    let act = match ffn.opt_object("ffn_act_fn", "ffn_config.ffn_act_fn.") {
        Some(a) => activation(&a, "name")?,
        None => Activation::Silu,
    };
    let normalization = match ffn.opt_f64("moe_normalize_expert_weights")? {
        None => Normalization::None,
        Some(p) => Normalization::PNorm(p as f32),
    };
    let moe = MoeConfig {
        routing: RoutingParams {
            normalization,
            ..RoutingParams::softmax_top_k(ffn.usize("moe_num_experts")?, ffn.usize("moe_top_k")?, false)
        },
        expert_intermediate_size: ffn.usize("ffn_hidden_size")?,
        correction_bias: false,
        shared: None,
        dense_residual: None,
    };
    // transformers ≥ 5 writes rope_parameters at the top level; older DBRX configs keep
    // rope_theta in attn_config.
    let theta = attn.f64_or("rope_theta", 10_000.0)?;
    let rope = rope(raw, heads.head_dim, theta)?;
    let b = Basics {
        vocab_size: raw.usize("vocab_size")?,
        hidden_size: hidden,
        num_layers,
        max_position_embeddings: raw.usize_or("max_seq_len", 2048)?,
        bos_token_id: raw.token_ids("bos_token_id")?.first().copied(),
        eos_token_ids: raw.token_ids("eos_token_id")?,
        tie_word_embeddings: raw.bool_or("tie_word_embeddings", false)?,
    };
    Ok(b.config(
        Family::Dbrx,
        Parts {
            lm_head_bias: false,
            norm: NormConfig { kind: NormKind::Layer { bias: false }, eps: 1e-5 },
            activation: act,
            attention: standard_attention(&heads, false, false, QkNorm::None, attn.opt_f64("clip_qkv")?),
            rope,
            layers: uniform_layers(vec![None; num_layers], FfnConfig::Moe(moe)),
        },
    ))
}

pub const LAYOUT: TensorLayout = TensorLayout {
    embed: "transformer.wte.weight",
    final_norm: "transformer.norm_f",
    lm_head: "lm_head",
    layer: "transformer.blocks.{}",
    attn_norm: "norm_attn_norm.norm_1",
    ffn_norm: "norm_attn_norm.norm_2",
    attn: AttnNames::Fused { prefix: "norm_attn_norm.attn", qkv: "Wqkv", o: "out_proj" },
    mlp: ("ffn", LLAMA_MLP),
    moe: Some(MoeNames {
        block: "ffn",
        router: "router.layer.weight",
        correction_bias: None,
        experts: ExpertNames::DbrxStacked { prefix: "experts.mlp" },
        shared: None,
        shared_gate: None,
    }),
    dense_residual: None,
};
