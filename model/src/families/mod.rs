//! Model families, keyed by `model_type` in config.json.
//!
//! A family is a small adapter over the one generic decoder ([`crate::decoder`]): how its
//! config.json maps onto [`ModelConfig`] and where its checkpoint keeps each tensor
//! ([`layout::TensorLayout`]). Nothing else differs per family.

mod arctic;
pub mod common;
mod dbrx;
mod deepseek;
pub mod layout;
mod llama;
mod mixtral;
mod olmoe;
mod phi3;
mod phimoe;
mod qwen;
pub mod raw;

use std::path::Path;

use serde::Serialize;

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use layout::TensorLayout;
use raw::RawConfig;

/// The supported families.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Family {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    Phi3,
    Mixtral,
    Qwen2Moe,
    Qwen3Moe,
    Olmoe,
    Phimoe,
    DeepseekV2,
    DeepseekV3,
    Dbrx,
    Arctic,
}

impl Family {
    pub const ALL: [Family; 14] = [
        Family::Llama,
        Family::Mistral,
        Family::Qwen2,
        Family::Qwen3,
        Family::Phi3,
        Family::Mixtral,
        Family::Qwen2Moe,
        Family::Qwen3Moe,
        Family::Olmoe,
        Family::Phimoe,
        Family::DeepseekV2,
        Family::DeepseekV3,
        Family::Dbrx,
        Family::Arctic,
    ];

    /// The `model_type` string of config.json.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
            Family::Phi3 => "phi3",
            Family::Mixtral => "mixtral",
            Family::Qwen2Moe => "qwen2_moe",
            Family::Qwen3Moe => "qwen3_moe",
            Family::Olmoe => "olmoe",
            Family::Phimoe => "phimoe",
            Family::DeepseekV2 => "deepseek_v2",
            Family::DeepseekV3 => "deepseek_v3",
            Family::Dbrx => "dbrx",
            Family::Arctic => "arctic",
        }
    }

    pub fn from_model_type(model_type: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.model_type() == model_type)
    }

    pub fn supported() -> Vec<&'static str> {
        Family::ALL.iter().map(|f| f.model_type()).collect()
    }

    /// Where this family's checkpoints keep their tensors.
    pub fn layout(self) -> TensorLayout {
        match self {
            Family::Llama | Family::Mistral | Family::Qwen2 | Family::Qwen3 => TensorLayout::LLAMA,
            Family::Phi3 => phi3::LAYOUT,
            Family::Mixtral => mixtral::LAYOUT,
            Family::Qwen2Moe => qwen::QWEN2_MOE_LAYOUT,
            Family::Qwen3Moe => qwen::QWEN3_MOE_LAYOUT,
            Family::Olmoe => olmoe::LAYOUT,
            Family::Phimoe => phimoe::LAYOUT,
            Family::DeepseekV2 | Family::DeepseekV3 => deepseek::LAYOUT,
            Family::Dbrx => dbrx::LAYOUT,
            Family::Arctic => arctic::LAYOUT,
        }
    }

    fn parse(self, raw: &RawConfig) -> Result<ModelConfig> {
        match self {
            Family::Llama => llama::config(raw, Family::Llama),
            Family::Mistral => llama::config(raw, Family::Mistral),
            Family::Qwen2 => qwen::qwen2(raw),
            Family::Qwen3 => qwen::qwen3(raw),
            Family::Phi3 => phi3::config(raw),
            Family::Mixtral => mixtral::config(raw),
            Family::Qwen2Moe => qwen::qwen2_moe(raw),
            Family::Qwen3Moe => qwen::qwen3_moe(raw),
            Family::Olmoe => olmoe::config(raw),
            Family::Phimoe => phimoe::config(raw),
            Family::DeepseekV2 => deepseek::config(raw, Family::DeepseekV2),
            Family::DeepseekV3 => deepseek::config(raw, Family::DeepseekV3),
            Family::Dbrx => dbrx::config(raw),
            Family::Arctic => arctic::config(raw),
        }
    }
}

/// Parses a config.json value (read from `path`) into the normalised configuration.
pub fn parse_config(path: &Path, value: &serde_json::Value) -> Result<ModelConfig> {
    let raw = RawConfig::new(path, value);
    let model_type = raw.opt_str("model_type")?.ok_or_else(|| raw.missing("model_type"))?;
    let family = Family::from_model_type(model_type).ok_or_else(|| ModelError::UnknownArchitecture {
        path: path.to_path_buf(),
        found: model_type.to_string(),
        supported: Family::supported(),
    })?;
    let mut config = family.parse(&raw)?;
    config.raw = value.clone();
    validate(path, &config)?;
    Ok(config)
}

/// Cross-field checks every family needs.
fn validate(path: &Path, c: &ModelConfig) -> Result<()> {
    let fail = |m: String| Err(ModelError::config(path, m));
    if c.hidden_size == 0 || c.vocab_size == 0 {
        return fail("hidden_size and vocab_size must be positive".into());
    }
    if c.layers.len() != c.num_layers {
        return fail(format!("{} layer specs for {} layers", c.layers.len(), c.num_layers));
    }
    if !c.rope.rotary_dim.is_multiple_of(2) || c.rope.rotary_dim > c.attention.qk_head_dim() {
        return fail(format!(
            "rotary dimension {} must be even and at most the head dimension {}",
            c.rope.rotary_dim,
            c.attention.qk_head_dim()
        ));
    }
    if let crate::config::RopeScaling::LongRope { short_factor, long_factor, .. } = &c.rope.scaling {
        let half = c.rope.rotary_dim / 2;
        if short_factor.len() != half || long_factor.len() != half {
            return fail(format!(
                "longrope short_factor/long_factor have {}/{} entries, expected rotary_dim/2 = {half}",
                short_factor.len(),
                long_factor.len()
            ));
        }
    }
    for (l, layer) in c.layers.iter().enumerate() {
        if let crate::config::FfnConfig::Moe(m) = &layer.ffn {
            m.routing.validate(0).map_err(|e| ModelError::config(path, format!("layer {l}: {e}")))?;
        }
    }
    Ok(())
}
