//! Reading config.json fields with errors that name the file and the field.

use std::path::Path;

use serde_json::Value;

use crate::error::{ModelError, Result};
use crate::hooks::{MAX_EXPERTS, MAX_LAYERS};

/// Upper bounds on the sizes that RouteLab allocates per item before any weight is read
/// (per-expert tables, head masks; layer counts go through [`RawConfig::layer_count`]). Each is far above every published model
/// (126 layers, 256 routed experts, 128 heads, 256k vocabulary, 53248 intermediate): a value
/// beyond it is a damaged or hostile file, refused before it can drive an allocation.
const LIMITS: &[(&str, u64)] = &[
    ("num_attention_heads", 1 << 14),
    ("n_heads", 1 << 14),
    ("num_key_value_heads", 1 << 14),
    ("kv_n_heads", 1 << 14),
    ("num_local_experts", MAX_EXPERTS as u64),
    ("num_experts", MAX_EXPERTS as u64),
    ("n_routed_experts", MAX_EXPERTS as u64),
    ("moe_num_experts", MAX_EXPERTS as u64),
    ("n_shared_experts", MAX_EXPERTS as u64),
    ("num_experts_per_tok", MAX_EXPERTS as u64),
    ("moe_top_k", MAX_EXPERTS as u64),
    ("n_group", 1 << 16),
    ("topk_group", 1 << 16),
    ("hidden_size", 1 << 20),
    ("d_model", 1 << 20),
    ("intermediate_size", 1 << 22),
    ("moe_intermediate_size", 1 << 22),
    ("shared_expert_intermediate_size", 1 << 22),
    ("ffn_hidden_size", 1 << 22),
    ("head_dim", 1 << 16),
    ("v_head_dim", 1 << 16),
    ("qk_rope_head_dim", 1 << 16),
    ("qk_nope_head_dim", 1 << 16),
    ("kv_lora_rank", 1 << 20),
    ("q_lora_rank", 1 << 20),
    ("vocab_size", 1 << 26),
];

/// A config.json object (or a nested object such as DBRX's `attn_config`) and the file it came
/// from. JSON `null` counts as absent, as transformers treats it.
#[derive(Clone, Copy)]
pub struct RawConfig<'a> {
    pub path: &'a Path,
    pub value: &'a Value,
    /// Field name prefix for nested objects (`"attn_config."`), for error messages.
    pub scope: &'a str,
}

impl<'a> RawConfig<'a> {
    pub fn new(path: &'a Path, value: &'a Value) -> Self {
        RawConfig { path, value, scope: "" }
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.value.get(key).filter(|v| !v.is_null())
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn err(&self, key: &str, what: &str, found: &Value) -> ModelError {
        ModelError::config(self.path, format!("field `{}{key}` must be {what}, found {found}", self.scope))
    }

    pub fn missing(&self, key: &str) -> ModelError {
        ModelError::config(self.path, format!("required field `{}{key}` is missing", self.scope))
    }

    pub fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        let n = match self.get(key) {
            None => return Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) => n,
                // Some configs write integers as floats (4096.0).
                None => match v.as_f64() {
                    Some(f) if (0.0..=u64::MAX as f64).contains(&f) && f.fract() == 0.0 => f as u64,
                    _ => return Err(self.err(key, "a non-negative integer", v)),
                },
            },
        };
        if let Some(&(_, limit)) = LIMITS.iter().find(|(k, _)| *k == key) {
            if n > limit {
                return Err(ModelError::config(
                    self.path,
                    format!(
                        "field `{}{key}` is {n}, beyond what any model has (RouteLab accepts at most {limit}); the file is damaged or not a model's config",
                        self.scope
                    ),
                ));
            }
        }
        usize::try_from(n).map(Some).map_err(|_| self.err(key, "an integer that fits in memory", &Value::from(n)))
    }

    /// The first of several aliases present (transformers renames fields between versions,
    /// e.g. `num_experts` → `num_local_experts`).
    /// A number of decoder layers: positive, and at most [`MAX_LAYERS`] (per-layer tables are
    /// built from it before any weight is read).
    pub fn layer_count(&self, key: &str) -> Result<usize> {
        match self.usize(key)? {
            0 => Err(ModelError::config(self.path, format!("{}{key} is 0", self.scope))),
            n if n > MAX_LAYERS => Err(ModelError::config(
                self.path,
                format!("{}{key} is {n}; RouteLab reads models of up to {MAX_LAYERS} layers", self.scope),
            )),
            n => Ok(n),
        }
    }

    pub fn usize_any(&self, keys: &[&str]) -> Result<usize> {
        for k in keys {
            if let Some(v) = self.opt_usize(k)? {
                return Ok(v);
            }
        }
        let names: Vec<String> = keys.iter().map(|k| format!("`{}{k}`", self.scope)).collect();
        Err(ModelError::config(self.path, format!("required field {} is missing", names.join(" (or ") + &")".repeat(keys.len() - 1))))
    }

    pub fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        Ok(self.opt_usize(key)?.unwrap_or(default))
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| self.err(key, "a number", v)),
        }
    }

    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        Ok(self.opt_f64(key)?.unwrap_or(default))
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.err(key, "true or false", v)),
        }
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| self.err(key, "a string", v)),
        }
    }

    pub fn str_or(&self, key: &str, default: &'a str) -> Result<&'a str> {
        Ok(self.opt_str(key)?.unwrap_or(default))
    }

    pub fn f64_list(&self, key: &str) -> Result<Vec<f64>> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        v.as_array()
            .and_then(|a| a.iter().map(|x| x.as_f64()).collect::<Option<Vec<_>>>())
            .ok_or_else(|| self.err(key, "a list of numbers", v))
    }

    pub fn usize_list_or_empty(&self, key: &str) -> Result<Vec<usize>> {
        match self.get(key) {
            None => Ok(vec![]),
            Some(v) => v
                .as_array()
                .and_then(|a| a.iter().map(|x| x.as_u64().map(|n| n as usize)).collect::<Option<Vec<_>>>())
                .ok_or_else(|| self.err(key, "a list of integers", v)),
        }
    }

    pub fn opt_str_list(&self, key: &str) -> Result<Option<Vec<&'a str>>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_array()
                .and_then(|a| a.iter().map(|x| x.as_str()).collect::<Option<Vec<_>>>())
                .map(Some)
                .ok_or_else(|| self.err(key, "a list of strings", v)),
        }
    }

    /// A token id field that may be one integer or a list (`eos_token_id`).
    pub fn token_ids(&self, key: &str) -> Result<Vec<u32>> {
        match self.get(key) {
            None => Ok(vec![]),
            Some(Value::Array(a)) => a.iter().map(|x| x.as_u64().map(|n| n as u32).ok_or_else(|| self.err(key, "token ids", x))).collect(),
            Some(v) => v.as_u64().map(|n| vec![n as u32]).ok_or_else(|| self.err(key, "a token id", v)),
        }
    }

    /// A nested object, required.
    pub fn object(&self, key: &'a str, scope: &'a str) -> Result<RawConfig<'a>> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        if !v.is_object() {
            return Err(self.err(key, "an object", v));
        }
        Ok(RawConfig { path: self.path, value: v, scope })
    }

    /// A nested object if present.
    pub fn opt_object(&self, key: &str, scope: &'a str) -> Option<RawConfig<'a>> {
        self.get(key).filter(|v| v.is_object()).map(|v| RawConfig { path: self.path, value: v, scope })
    }
}
