//! Config pieces several families share: rotary embedding parameters, standard attention,
//! sliding windows, special tokens.

use crate::config::*;
use crate::error::{ModelError, Result};

use super::raw::RawConfig;

/// Rotary parameters from either transformers ≥ 5's `rope_parameters` or the older
/// `rope_theta` + `rope_scaling` fields (with `type` or `rope_type`), mirroring
/// `transformers.modeling_rope_utils.standardize_rope_params`.
pub fn rope(raw: &RawConfig, head_dim: usize, default_theta: f64) -> Result<RopeConfig> {
    let params = raw.opt_object("rope_parameters", "rope_parameters.").or_else(|| raw.opt_object("rope_scaling", "rope_scaling."));
    let theta = match params.map(|p| p.opt_f64("rope_theta")).transpose()?.flatten() {
        Some(t) => t,
        None => raw.f64_or("rope_theta", default_theta)?,
    };
    let partial = match params.map(|p| p.opt_f64("partial_rotary_factor")).transpose()?.flatten() {
        Some(f) => f,
        None => raw.f64_or("partial_rotary_factor", 1.0)?,
    };
    let rotary_dim = (head_dim as f64 * partial) as usize;
    let max_position_embeddings = raw.usize_or("max_position_embeddings", 2048)?;
    let scaling = match params {
        None => RopeScaling::None,
        Some(p) => scaling(raw, &p, max_position_embeddings)?,
    };
    Ok(RopeConfig { theta, rotary_dim, scaling, max_position_embeddings })
}

fn scaling(raw: &RawConfig, p: &RawConfig, max_pos: usize) -> Result<RopeScaling> {
    let kind = match p.opt_str("rope_type")? {
        Some(t) => t,
        None => p.str_or("type", "default")?,
    };
    // Phi-3 keeps the pretraining length at the top level; it takes priority there.
    let original_max = || -> Result<usize> {
        match raw.opt_usize("original_max_position_embeddings")? {
            Some(n) => Ok(n),
            None => p.usize_or("original_max_position_embeddings", max_pos),
        }
    };
    let factor = || p.opt_f64("factor")?.ok_or_else(|| p.missing("factor"));
    Ok(match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear { factor: factor()? },
        "dynamic" => RopeScaling::Dynamic { factor: factor()? },
        "llama3" => RopeScaling::Llama3 {
            factor: factor()?,
            low_freq_factor: p.opt_f64("low_freq_factor")?.ok_or_else(|| p.missing("low_freq_factor"))?,
            high_freq_factor: p.opt_f64("high_freq_factor")?.ok_or_else(|| p.missing("high_freq_factor"))?,
            original_max_position_embeddings: original_max()?,
        },
        "yarn" => {
            let original = original_max()?;
            let factor = match p.opt_f64("factor")? {
                Some(f) => f,
                None => max_pos as f64 / original as f64,
            };
            let attention_factor = match p.opt_f64("attention_factor")? {
                Some(a) => a,
                None => {
                    let mscale = p.f64_or("mscale", 0.0)?;
                    let mscale_all = p.f64_or("mscale_all_dim", 0.0)?;
                    if mscale != 0.0 && mscale_all != 0.0 {
                        yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all)
                    } else {
                        yarn_mscale(factor, 1.0)
                    }
                }
            };
            // `beta_fast or 32` in transformers: a 0 also falls back.
            let nonzero_or = |key: &str, d: f64| -> Result<f64> { Ok(p.opt_f64(key)?.filter(|&x| x != 0.0).unwrap_or(d)) };
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings: original,
                beta_fast: nonzero_or("beta_fast", 32.0)?,
                beta_slow: nonzero_or("beta_slow", 1.0)?,
                attention_factor,
                truncate: p.bool_or("truncate", true)?,
            }
        }
        "longrope" | "su" => {
            let original = original_max()?;
            let factor = match p.opt_f64("factor")? {
                Some(f) => f,
                None => max_pos as f64 / original as f64,
            };
            let default_attention = match p.opt_f64("attention_factor")? {
                Some(a) => a,
                None if factor <= 1.0 => 1.0,
                None => (1.0 + factor.ln() / (original as f64).ln()).sqrt(),
            };
            // Phi-3.5-MoE names the two attention factors explicitly.
            RopeScaling::LongRope {
                short_factor: p.f64_list("short_factor")?,
                long_factor: p.f64_list("long_factor")?,
                original_max_position_embeddings: original,
                short_attention_factor: p.f64_or("short_mscale", default_attention)?,
                long_attention_factor: p.f64_or("long_mscale", default_attention)?,
            }
        }
        other => {
            return Err(ModelError::config(
                raw.path,
                format!("rope type {other:?} is not supported (supported: default, linear, dynamic, llama3, yarn, longrope)"),
            ))
        }
    })
}

/// YaRN's attention temperature correction, `0.1·m·ln(s) + 1` for scale s > 1.
pub fn yarn_mscale(scale: f64, m: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * m * scale.ln() + 1.0
    }
}

/// The Llama-style attention block most families share.
pub struct StandardAttentionFields {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

pub fn attention_heads(raw: &RawConfig, hidden: usize, default_head_dim: Option<usize>) -> Result<StandardAttentionFields> {
    let num_heads = raw.usize("num_attention_heads")?;
    if num_heads == 0 || !hidden.is_multiple_of(num_heads) && !raw.has("head_dim") && default_head_dim.is_none() {
        return Err(ModelError::config(raw.path, format!("hidden_size {hidden} is not divisible by num_attention_heads {num_heads}")));
    }
    let num_kv_heads = raw.usize_or("num_key_value_heads", num_heads)?;
    if num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
        return Err(ModelError::config(
            raw.path,
            format!("num_attention_heads {num_heads} is not a multiple of num_key_value_heads {num_kv_heads}"),
        ));
    }
    let head_dim = match raw.opt_usize("head_dim")? {
        Some(d) => d,
        None => default_head_dim.unwrap_or(hidden / num_heads),
    };
    Ok(StandardAttentionFields { num_heads, num_kv_heads, head_dim })
}

pub fn standard_attention(
    heads: &StandardAttentionFields,
    qkv_bias: bool,
    o_bias: bool,
    qk_norm: QkNorm,
    clip_qkv: Option<f64>,
) -> AttentionConfig {
    AttentionConfig {
        num_heads: heads.num_heads,
        num_kv_heads: heads.num_kv_heads,
        softmax_scale: 1.0 / (heads.head_dim as f64).sqrt(),
        kind: AttentionKind::Standard(StandardAttention { head_dim: heads.head_dim, qkv_bias, o_bias, qk_norm, clip_qkv }),
    }
}

/// Per-layer sliding windows. transformers ≥ 5 writes `layer_types` into config.json; older
/// configs imply them (`default_rule` gives whether layer i slides, given the window).
pub fn sliding_windows(raw: &RawConfig, num_layers: usize, default_rule: impl Fn(usize) -> bool) -> Result<Vec<Option<usize>>> {
    let window = raw.opt_usize("sliding_window")?.filter(|&w| w > 0);
    if let Some(types) = raw.opt_str_list("layer_types")? {
        if types.len() != num_layers {
            return Err(ModelError::config(raw.path, format!("layer_types has {} entries for {num_layers} layers", types.len())));
        }
        return types
            .iter()
            .map(|t| match *t {
                "full_attention" => Ok(None),
                "sliding_attention" => window
                    .map(Some)
                    .ok_or_else(|| ModelError::config(raw.path, "layer_types has sliding_attention layers but sliding_window is not set")),
                other => Err(ModelError::config(raw.path, format!("layer type {other:?} is not supported"))),
            })
            .collect();
    }
    Ok((0..num_layers).map(|l| window.filter(|_| default_rule(l))).collect())
}

pub fn activation(raw: &RawConfig, key: &str) -> Result<Activation> {
    let name = raw.str_or(key, "silu")?;
    Activation::from_hf(name).ok_or_else(|| {
        ModelError::config(raw.path, format!("activation {name:?} in `{key}` is not supported (silu, gelu, gelu_pytorch_tanh, relu)"))
    })
}

pub fn rms_norm(raw: &RawConfig, default_eps: f64) -> Result<NormConfig> {
    Ok(NormConfig { kind: NormKind::Rms, eps: raw.f64_or("rms_norm_eps", default_eps)? })
}

/// Fields every family has under the same names.
pub struct Basics {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub max_position_embeddings: usize,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub tie_word_embeddings: bool,
}

/// What differs between families once the basics are read.
pub struct Parts {
    pub norm: NormConfig,
    pub activation: Activation,
    pub attention: AttentionConfig,
    pub rope: RopeConfig,
    pub layers: Vec<LayerConfig>,
    pub lm_head_bias: bool,
}

impl Basics {
    pub fn config(&self, family: crate::families::Family, p: Parts) -> ModelConfig {
        ModelConfig {
            family,
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            num_layers: self.num_layers,
            max_position_embeddings: self.max_position_embeddings,
            tie_word_embeddings: self.tie_word_embeddings,
            lm_head_bias: p.lm_head_bias,
            norm: p.norm,
            activation: p.activation,
            attention: p.attention,
            rope: p.rope,
            layers: p.layers,
            bos_token_id: self.bos_token_id,
            eos_token_ids: self.eos_token_ids.clone(),
            raw: serde_json::Value::Null,
        }
    }
}

/// Every layer with the same feed-forward, each with its sliding window.
pub fn uniform_layers(windows: Vec<Option<usize>>, ffn: FfnConfig) -> Vec<LayerConfig> {
    windows.into_iter().map(|w| LayerConfig { sliding_window: w, ffn: ffn.clone() }).collect()
}

pub fn basics(raw: &RawConfig, default_max_pos: usize) -> Result<Basics> {
    let num_layers = raw.layer_count("num_hidden_layers")?;
    Ok(Basics {
        vocab_size: raw.usize("vocab_size")?,
        hidden_size: raw.usize("hidden_size")?,
        num_layers,
        max_position_embeddings: raw.usize_or("max_position_embeddings", default_max_pos)?,
        bos_token_id: raw.token_ids("bos_token_id")?.first().copied(),
        eos_token_ids: raw.token_ids("eos_token_id")?,
        tie_word_embeddings: raw.bool_or("tie_word_embeddings", false)?,
    })
}
