//! Llama 2/3 (and SmolLM2, which is a Llama) and Mistral: the reference dense decoder.
//! Mistral differs only by its sliding window, which applies to every layer when set.

use super::common::*;
use super::raw::RawConfig;
use super::Family;
use crate::config::*;
use crate::error::Result;

pub fn config(raw: &RawConfig, family: Family) -> Result<ModelConfig> {
    let b = basics(raw, 2048)?;
    let heads = attention_heads(raw, b.hidden_size, None)?;
    let bias = raw.bool_or("attention_bias", false)?;
    let mlp = MlpConfig { intermediate_size: raw.usize("intermediate_size")?, bias: raw.bool_or("mlp_bias", false)? };
    let windows = match family {
        Family::Mistral => sliding_windows(raw, b.num_layers, |_| true)?,
        _ => vec![None; b.num_layers],
    };
    Ok(b.config(
        family,
        Parts {
            lm_head_bias: false,
            norm: rms_norm(raw, 1e-6)?,
            activation: activation(raw, "hidden_act")?,
            attention: standard_attention(&heads, bias, bias, QkNorm::None, None),
            rope: rope(raw, heads.head_dim, 10_000.0)?,
            layers: uniform_layers(windows, FfnConfig::Dense(mlp)),
        },
    ))
}
