//! Reading config.json fields with errors that name the file and the field.

use std::path::Path;

use serde_json::Value;

use crate::error::{ModelError, Result};
use crate::hooks::MAX_LAYERS;

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
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) => Ok(Some(n as usize)),
                // Some configs write integers as floats (4096.0).
                None => match v.as_f64() {
                    Some(f) if f >= 0.0 && f.fract() == 0.0 => Ok(Some(f as usize)),
                    _ => Err(self.err(key, "a non-negative integer", v)),
                },
            },
        }
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
