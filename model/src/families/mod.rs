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
use strum::{EnumIter, EnumString, IntoEnumIterator, IntoStaticStr};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use layout::TensorLayout;
use raw::RawConfig;

/// The supported families; each is named by its config.json `model_type` (`qwen2_moe`), which
/// `model_type()` gives, `str::parse` reads and `Family::iter()` lists in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, EnumIter, EnumString, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
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
    /// The `model_type` string of config.json.
    pub fn model_type(self) -> &'static str {
        self.into()
    }

    pub fn supported() -> Vec<&'static str> {
        Family::iter().map(Family::model_type).collect()
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
    let family = match model_type.parse::<Family>() {
        Ok(f) => f,
        // transformers would import the repository's own modeling file (trust_remote_code);
        // RouteLab never runs code from a model directory, so say that rather than "unknown".
        Err(_) if value.get("auto_map").is_some() => {
            let module = value["auto_map"].get("AutoModelForCausalLM").and_then(|m| m.as_str()).unwrap_or("its own modeling file");
            return Err(ModelError::config(
                path,
                format!(
                    "model_type {model_type:?} needs the repository's own Python code ({module}, trust_remote_code in \
                     transformers); RouteLab runs no code from model directories. Supported model types: {}",
                    Family::supported().join(", ")
                ),
            ));
        }
        Err(_) => {
            return Err(ModelError::UnknownArchitecture {
                path: path.to_path_buf(),
                found: model_type.to_string(),
                supported: Family::supported(),
            })
        }
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_named_by_transformers_model_types() {
        // The `model_type` values of transformers' configuration classes.
        let expected = [
            "llama",
            "mistral",
            "qwen2",
            "qwen3",
            "phi3",
            "mixtral",
            "qwen2_moe",
            "qwen3_moe",
            "olmoe",
            "phimoe",
            "deepseek_v2",
            "deepseek_v3",
            "dbrx",
            "arctic",
        ];
        assert_eq!(Family::supported(), expected);
        for f in Family::iter() {
            assert_eq!(f.model_type().parse::<Family>(), Ok(f));
        }
        assert!("Mixtral".parse::<Family>().is_err() && "qwen2moe".parse::<Family>().is_err());
    }

    #[test]
    fn an_unknown_model_type_lists_the_supported_ones() {
        let e = parse_config(Path::new("m/config.json"), &serde_json::json!({ "model_type": "gpt_neox_9000" })).unwrap_err().to_string();
        assert_eq!(
            e,
            "m/config.json: unknown model_type \"gpt_neox_9000\"; supported model types: llama, mistral, qwen2, qwen3, phi3, mixtral, \
             qwen2_moe, qwen3_moe, olmoe, phimoe, deepseek_v2, deepseek_v3, dbrx, arctic"
        );
    }

    #[test]
    fn remote_code_is_refused_by_name() {
        let c = serde_json::json!({
            "model_type": "my_moe",
            "auto_map": { "AutoConfig": "configuration_my.MyConfig", "AutoModelForCausalLM": "modeling_my.MyForCausalLM" }
        });
        let e = parse_config(Path::new("m/config.json"), &c).unwrap_err().to_string();
        assert!(
            e.starts_with("m/config.json: model_type \"my_moe\" needs the repository's own Python code (modeling_my.MyForCausalLM"),
            "{e}"
        );
        assert!(e.contains("runs no code") && e.contains("deepseek_v3"), "{e}");
        // A family RouteLab implements keeps loading when its config also names remote code
        // (DeepSeek-V2 and Phi-3.5-MoE ship auto_map): the code is simply not used.
        let mut known = c.clone();
        known["model_type"] = "deepseek_v2".into();
        let e = parse_config(Path::new("m/config.json"), &known).unwrap_err().to_string();
        assert!(!e.contains("Python code"), "{e}");
    }

    /// A hostile config.json drives no allocation: each family's parser reads the size fields
    /// before building per-layer tables, and absurd sizes are refused, naming the field.
    #[test]
    fn absurd_sizes_are_refused_before_anything_is_allocated() {
        let base = serde_json::json!({
            "model_type": "mixtral", "vocab_size": 32, "hidden_size": 16, "intermediate_size": 32,
            "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
            "num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": 8
        });
        assert!(parse_config(Path::new("m/config.json"), &base).is_ok());
        for (key, value) in [
            ("num_hidden_layers", serde_json::json!(1_000_000_000u64)),
            ("num_hidden_layers", serde_json::json!(1e300)),
            ("num_local_experts", serde_json::json!(u64::MAX)),
            ("vocab_size", serde_json::json!(1u64 << 40)),
            ("num_attention_heads", serde_json::json!(1u64 << 33)),
        ] {
            let mut c = base.clone();
            c[key] = value.clone();
            let e = parse_config(Path::new("m/config.json"), &c).unwrap_err().to_string();
            assert!(e.starts_with("m/config.json: ") && e.contains(key), "{key}={value}: {e}");
        }
    }

    #[test]
    fn a_billion_layers_is_an_error_before_any_per_layer_table() {
        // The per-layer specs were a vector of `num_hidden_layers` entries, allocated first.
        let mut config: serde_json::Value = serde_json::from_str(include_str!("../../../assets/models/tiny-moe/config.json")).unwrap();
        config["num_hidden_layers"] = 1_000_000_000.into();
        let e = parse_config(Path::new("m/config.json"), &config).unwrap_err().to_string();
        assert!(e.contains("m/config.json") && e.contains("num_hidden_layers is 1000000000") && e.contains("4096 layers"), "{e}");
        let dbrx = serde_json::json!({"model_type": "dbrx", "d_model": 64, "n_heads": 4, "n_layers": 1u64 << 40,
                                      "attn_config": {}, "ffn_config": {}, "vocab_size": 10});
        let e = parse_config(Path::new("m/config.json"), &dbrx).unwrap_err().to_string();
        assert!(e.contains("n_layers is 1099511627776"), "{e}");
    }
}
