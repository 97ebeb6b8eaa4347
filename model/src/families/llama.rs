//! Llama 2/3 (and SmolLM2, which is a Llama) and Mistral: the reference dense decoder.
//! Mistral differs only by its sliding window, which applies to every layer when set.

use super::common::*;
use super::raw::RawConfig;
use super::{dense_layers, Family};
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
    Ok(ModelConfig {
        family,
        vocab_size: b.vocab_size,
        hidden_size: b.hidden_size,
        num_layers: b.num_layers,
        max_position_embeddings: b.max_position_embeddings,
        tie_word_embeddings: raw.bool_or("tie_word_embeddings", false)?,
        lm_head_bias: false,
        norm: rms_norm(raw, 1e-6)?,
        activation: activation(raw, "hidden_act")?,
        attention: standard_attention(&heads, bias, bias, QkNorm::None, None),
        rope: rope(raw, heads.head_dim, 10_000.0)?,
        layers: dense_layers(windows, mlp),
        bos_token_id: b.bos_token_id,
        eos_token_ids: b.eos_token_ids,
        raw: serde_json::Value::Null,
    })
}
