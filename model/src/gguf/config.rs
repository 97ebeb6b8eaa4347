//! A config.json equivalent from a GGUF file's metadata: the keys each family's parser reads,
//! filled from llama.cpp's `{arch}.*` keys (as transformers' GGUF loader maps them), so a GGUF
//! model is configured by the same code as its Hugging Face checkpoint.
//!
//! What GGUF leaves implicit is read off the tensors: tied embeddings (no `output.weight`),
//! q/k/v biases and norms, which layers of a MoE model are dense, and Llama 3's rotary
//! frequencies (`rope_freqs`, stored as per-frequency divisors).

use serde_json::{json, Map, Value};

use super::meta::{meta_err, Meta};
use crate::error::Result;
use crate::families::Family;

/// The architectures RouteLab reads, as `general.architecture` names them.
pub(crate) const ARCHITECTURES: &[&str] =
    &["llama", "qwen2", "qwen3", "qwen2moe", "qwen3moe", "olmoe", "phi3", "phimoe", "deepseek2", "dbrx", "arctic"];

/// The family a GGUF architecture loads as.
pub(crate) fn family(meta: &Meta, arch: &str) -> Result<Option<Family>> {
    let experts = meta.opt_u64(&format!("{arch}.expert_count"))?.unwrap_or(0);
    Ok(Some(match arch {
        "llama" if experts > 0 => Family::Mixtral,
        "llama" => Family::Llama,
        "qwen2" => Family::Qwen2,
        "qwen3" => Family::Qwen3,
        "qwen2moe" => Family::Qwen2Moe,
        "qwen3moe" => Family::Qwen3Moe,
        "olmoe" => Family::Olmoe,
        "phi3" => Family::Phi3,
        "phimoe" => Family::Phimoe,
        "arctic" => Family::Arctic,
        "dbrx" => Family::Dbrx,
        // V3's sigmoid router with a correction bias; V2 (and V2-Lite) softmax.
        "deepseek2" if meta.opt_u64("deepseek2.expert_gating_func")? == Some(2) => Family::DeepseekV3,
        "deepseek2" => Family::DeepseekV2,
        _ => return Ok(None),
    }))
}

/// Whether llama.cpp's converter interleaved the rotary pairs of q/k rows for `arch` (its
/// `LlamaModel.permute`): llama and arctic, whose converters derive from it.
pub(crate) fn permutes_qk(arch: &str) -> bool {
    matches!(arch, "llama" | "arctic")
}

/// Rotary tables some files store as tensors instead of metadata.
#[derive(Default)]
pub(crate) struct RopeTensors {
    /// Llama 3's `rope_freqs.weight`: per-frequency divisors.
    pub freqs: Option<Vec<f32>>,
    /// Phi-3's LongRoPE `rope_factors_short.weight` and `rope_factors_long.weight`.
    pub short: Option<Vec<f32>>,
    pub long: Option<Vec<f32>>,
}

/// The config.json equivalent for `family`.
/// `has` tells whether the file has a tensor.
pub(crate) fn config(
    meta: &Meta,
    arch: &str,
    family: Family,
    has: &dyn Fn(&str) -> bool,
    vocab_size: usize,
    rope: &RopeTensors,
) -> Result<Value> {
    let k = |s: &str| format!("{arch}.{s}");
    let u = |s: &str| -> Result<u64> { meta.u64(&k(s)) };
    let opt_u = |s: &str| -> Result<Option<u64>> { meta.opt_u64(&k(s)) };
    let opt_f = |s: &str| -> Result<Option<f64>> { meta.opt_f64(&k(s)) };
    let num_layers = u("block_count")? as usize;
    let hidden = u("embedding_length")?;
    let num_heads = u("attention.head_count")?;
    if num_heads == 0 {
        return Err(meta_err(meta.path, &k("attention.head_count"), "is zero"));
    }
    let head_dim = match (opt_u("attention.key_length")?, opt_u("rope.dimension_count")?) {
        (Some(d), _) if family != Family::DeepseekV2 && family != Family::DeepseekV3 => d,
        _ => hidden / num_heads,
    };
    let mut c = Map::new();
    let mut set = |key: &str, v: Value| {
        c.insert(key.to_string(), v);
    };
    set("model_type", json!(family.model_type()));
    set("vocab_size", json!(vocab_size));
    set("hidden_size", json!(hidden));
    set("num_hidden_layers", json!(num_layers));
    set("num_attention_heads", json!(num_heads));
    set("num_key_value_heads", json!(opt_u("attention.head_count_kv")?.unwrap_or(num_heads)));
    set("head_dim", json!(head_dim));
    let max_pos = opt_u("context_length")?.unwrap_or(4096);
    set("max_position_embeddings", json!(max_pos));
    set("rms_norm_eps", json!(opt_f("attention.layer_norm_rms_epsilon")?.unwrap_or(1e-6)));
    set("rope_theta", json!(opt_f("rope.freq_base")?.unwrap_or(10_000.0)));
    set("tie_word_embeddings", json!(!has("output.weight")));
    set("bos_token_id", json!(meta.opt_u64("tokenizer.ggml.bos_token_id")?));
    set("eos_token_id", json!(meta.opt_u64("tokenizer.ggml.eos_token_id")?));
    set("hidden_act", json!("silu"));
    set("attention_bias", json!(has("blk.0.attn_q.bias")));
    set("routelab_source", json!("gguf"));
    if let Some(ff) = opt_u("feed_forward_length")? {
        set("intermediate_size", json!(ff));
    }
    if let Some(w) = opt_u("attention.sliding_window")?.filter(|&w| w > 0) {
        set("sliding_window", json!(w));
        set("use_sliding_window", json!(true));
        set("max_window_layers", json!(0));
    }
    if let (Some(rd), true) = (opt_u("rope.dimension_count")?, head_dim > 0) {
        if rd != head_dim && !matches!(family, Family::DeepseekV2 | Family::DeepseekV3) {
            set("partial_rotary_factor", json!(rd as f64 / head_dim as f64));
        }
    }
    if let Some(scaling) = rope_scaling(meta, arch, rope, max_pos)? {
        set("rope_scaling", scaling);
    }

    let experts = opt_u("expert_count")?.unwrap_or(0);
    let used = opt_u("expert_used_count")?.unwrap_or(0);
    let norm = meta.opt_bool(&k("expert_weights_norm"));
    let expert_ff = opt_u("expert_feed_forward_length")?;
    // Layers without a router are dense (Qwen2-MoE's mlp_only_layers, DeepSeek's first ones).
    let dense_layers: Vec<usize> = (0..num_layers).filter(|l| !has(&format!("blk.{l}.ffn_gate_inp.weight"))).collect();
    match family {
        Family::Mixtral => {
            set("num_local_experts", json!(experts));
            set("num_experts_per_tok", json!(used));
        }
        // DBRX's own nested config; llama.cpp renormalises the top-k weights (p = 1), as
        // DBRX's moe_normalize_expert_weights = 1 does.
        Family::Dbrx => {
            set("d_model", json!(hidden));
            set("n_heads", json!(num_heads));
            set("n_layers", json!(num_layers));
            set("max_seq_len", json!(max_pos));
            let mut attn = json!({"kv_n_heads": opt_u("attention.head_count_kv")?.unwrap_or(num_heads), "rope_theta": opt_f("rope.freq_base")?.unwrap_or(10_000.0)});
            if let Some(clip) = opt_f("attention.clamp_kqv")? {
                attn["clip_qkv"] = json!(clip);
            }
            set("attn_config", attn);
            set(
                "ffn_config",
                json!({
                    "ffn_hidden_size": opt_u("feed_forward_length")?.unwrap_or(0), "moe_num_experts": experts,
                    "moe_top_k": used, "moe_normalize_expert_weights": 1.0, "ffn_act_fn": {"name": "silu"}
                }),
            );
        }
        Family::Arctic => {
            set("num_local_experts", json!(experts));
            set("num_experts_per_tok", json!(used));
            // Every layer of the GGUF has its experts; the residual MLP beside them when the
            // file has its norm.
            set("moe_layer_frequency", json!(1));
            set("parallel_attn_mlp_res", json!(has("blk.0.ffn_norm_exps.weight")));
        }
        Family::Phimoe => {
            set("num_local_experts", json!(experts));
            set("num_experts_per_tok", json!(used));
            set("lm_head_bias", json!(has("output.bias")));
            set(
                "rms_norm_eps",
                json!(opt_f("attention.layer_norm_rms_epsilon")?.or(opt_f("attention.layer_norm_epsilon")?).unwrap_or(1e-5)),
            );
        }
        Family::Olmoe => {
            set("num_experts", json!(experts));
            set("num_experts_per_tok", json!(used));
            set("norm_topk_prob", json!(norm.unwrap_or(false)));
            if let Some(ff) = expert_ff {
                set("intermediate_size", json!(ff));
            }
            if let Some(clip) = opt_f("attention.clamp_kqv")? {
                set("clip_qkv", json!(clip));
            }
        }
        Family::Qwen2Moe | Family::Qwen3Moe => {
            set("num_experts", json!(experts));
            set("num_experts_per_tok", json!(used));
            set(
                "moe_intermediate_size",
                json!(expert_ff.ok_or_else(|| meta_err(meta.path, &k("expert_feed_forward_length"), "is missing"))?),
            );
            set("norm_topk_prob", json!(norm.unwrap_or(family == Family::Qwen3Moe)));
            set("mlp_only_layers", json!(dense_layers));
            set("decoder_sparse_step", json!(1));
            set("shared_expert_intermediate_size", json!(opt_u("expert_shared_feed_forward_length")?.unwrap_or(0)));
            set("qkv_bias", json!(has("blk.0.attn_q.bias")));
        }
        Family::DeepseekV2 | Family::DeepseekV3 => deepseek(meta, arch, &mut c, experts, used, norm, expert_ff, dense_layers.len())?,
        _ => {}
    }
    Ok(Value::Object(c))
}

/// `rope_scaling` from `{arch}.rope.scaling.*`, Llama 3's `rope_freqs` tensor (per-frequency
/// divisors, applied as LongRoPE factors with no attention scaling: the same frequencies), or
/// Phi-3's short and long factor tensors (LongRoPE with its default attention factors).
fn rope_scaling(meta: &Meta, arch: &str, rope: &RopeTensors, max_pos: u64) -> Result<Option<Value>> {
    let k = |s: &str| format!("{arch}.rope.scaling.{s}");
    if let (Some(short), Some(long)) = (&rope.short, &rope.long) {
        let original = meta.opt_u64(&k("original_context_length"))?.unwrap_or(max_pos);
        let mut v = json!({
            "rope_type": "longrope", "short_factor": short, "long_factor": long,
            "original_max_position_embeddings": original
        });
        if let Some(a) = meta.opt_f64(&k("attn_factor"))? {
            v["attention_factor"] = json!(a);
        }
        return Ok(Some(v));
    }
    if let Some(f) = &rope.freqs {
        return Ok(Some(json!({
            "rope_type": "longrope", "short_factor": f, "long_factor": f,
            "original_max_position_embeddings": max_pos, "attention_factor": 1.0
        })));
    }
    let Some(kind) = meta.opt_str(&k("type"))? else { return Ok(None) };
    let factor = meta.opt_f64(&k("factor"))?.unwrap_or(1.0);
    let original = meta.opt_u64(&k("original_context_length"))?.unwrap_or(max_pos);
    Ok(match kind {
        "none" => None,
        "linear" => Some(json!({ "rope_type": "linear", "factor": factor })),
        "yarn" => {
            let mut y = json!({ "rope_type": "yarn", "factor": factor, "original_max_position_embeddings": original });
            // llama.cpp stores DeepSeek's mscale_all_dim as 0.1 · mscale_all_dim.
            if let Some(m) = meta.opt_f64(&k("yarn_log_multiplier"))? {
                y["mscale_all_dim"] = json!(m / 0.1);
                y["mscale"] = json!(m / 0.1);
            }
            Some(y)
        }
        other => return Err(meta_err(meta.path, &k("type"), &format!("is {other:?}, which RouteLab does not read"))),
    })
}

/// DeepSeek-V2/V3's MLA dimensions and routing.
#[allow(clippy::too_many_arguments)]
fn deepseek(
    meta: &Meta,
    arch: &str,
    c: &mut Map<String, Value>,
    experts: u64,
    used: u64,
    norm: Option<bool>,
    expert_ff: Option<u64>,
    leading_dense: usize,
) -> Result<()> {
    let k = |s: &str| format!("{arch}.{s}");
    let rope = meta.u64(&k("rope.dimension_count"))?;
    // Newer converters keep the un-absorbed sizes under `*_mla`.
    let key_len = match meta.opt_u64(&k("attention.key_length_mla"))? {
        Some(v) => v,
        None => meta.u64(&k("attention.key_length"))?,
    };
    let value_len = match meta.opt_u64(&k("attention.value_length_mla"))? {
        Some(v) => v,
        None => meta.u64(&k("attention.value_length"))?,
    };
    let q_lora = meta.opt_u64(&k("attention.q_lora_rank"))?.filter(|&r| r > 0);
    let mut set = |key: &str, v: Value| {
        c.insert(key.to_string(), v);
    };
    set("qk_rope_head_dim", json!(rope));
    set("qk_nope_head_dim", json!(key_len.saturating_sub(rope)));
    set("v_head_dim", json!(value_len));
    set("kv_lora_rank", json!(meta.u64(&k("attention.kv_lora_rank"))?));
    set("q_lora_rank", json!(q_lora));
    set("n_routed_experts", json!(experts));
    set("num_experts_per_tok", json!(used));
    set("moe_intermediate_size", json!(expert_ff.ok_or_else(|| meta_err(meta.path, &k("expert_feed_forward_length"), "is missing"))?));
    set("n_shared_experts", json!(meta.opt_u64(&k("expert_shared_count"))?.unwrap_or(0)));
    set("first_k_dense_replace", json!(meta.opt_u64(&k("leading_dense_block_count"))?.unwrap_or(leading_dense as u64)));
    set("moe_layer_freq", json!(1));
    set("routed_scaling_factor", json!(meta.opt_f64(&k("expert_weights_scale"))?.unwrap_or(1.0)));
    set("norm_topk_prob", json!(norm.unwrap_or(false)));
    let sigmoid = meta.opt_u64(&k("expert_gating_func"))? == Some(2);
    set("scoring_func", json!(if sigmoid { "sigmoid" } else { "softmax" }));
    let groups = meta.opt_u64(&k("expert_group_count"))?.unwrap_or(1);
    set("n_group", json!(groups));
    set("topk_group", json!(meta.opt_u64(&k("expert_group_used_count"))?.unwrap_or(groups)));
    let method = if sigmoid {
        "noaux_tc"
    } else if groups > 1 {
        "group_limited_greedy"
    } else {
        "greedy"
    };
    set("topk_method", json!(method));
    // llama.cpp's DeepSeek rope is the GPT-J (interleaved) style, as DeepSeek's own code.
    set("rope_interleave", json!(true));
    Ok(())
}
