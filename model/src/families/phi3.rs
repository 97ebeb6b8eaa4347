//! Phi-3: q/k/v fused into `qkv_proj`, gate and up fused into `gate_up_proj`, optional
//! sliding window on every layer, longrope scaling for the 128k variants.

use super::common::*;
use super::layout::*;
use super::raw::RawConfig;
use super::Family;
use crate::config::*;
use crate::error::Result;

pub fn config(raw: &RawConfig) -> Result<ModelConfig> {
    let b = basics(raw, 4096)?;
    let heads = attention_heads(raw, b.hidden_size, None)?;
    let mlp = MlpConfig { intermediate_size: raw.usize("intermediate_size")?, bias: false };
    Ok(b.config(
        Family::Phi3,
        Parts {
            lm_head_bias: false,
            norm: rms_norm(raw, 1e-5)?,
            activation: activation(raw, "hidden_act")?,
            attention: standard_attention(&heads, false, false, QkNorm::None, None),
            rope: rope(raw, heads.head_dim, 10_000.0)?,
            layers: uniform_layers(sliding_windows(raw, b.num_layers, |_| true)?, FfnConfig::Dense(mlp)),
        },
    ))
}

pub const LAYOUT: TensorLayout = TensorLayout {
    attn: AttnNames::Fused { prefix: "self_attn", qkv: "qkv_proj", o: "o_proj" },
    mlp: ("mlp", MlpNames::Fused { gate_up: "gate_up_proj", down: "down_proj" }),
    ..TensorLayout::LLAMA
};
