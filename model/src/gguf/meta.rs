//! Typed reads of a GGUF file's metadata, each failure naming the file and the key.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;

use crate::error::{ModelError, Result};

pub(crate) fn meta_err(path: &Path, key: &str, what: &str) -> ModelError {
    ModelError::weights(path, format!("GGUF metadata `{key}` {what}"))
}

pub(crate) struct Meta<'a> {
    pub path: &'a Path,
    pub md: &'a HashMap<String, Value>,
}

impl<'a> Meta<'a> {
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.md.get(key)
    }
    pub fn u64(&self, key: &str) -> Result<u64> {
        let v = self.get(key).ok_or_else(|| meta_err(self.path, key, "is missing"))?;
        v.to_u64()
            .or_else(|_| v.to_u32().map(u64::from))
            .or_else(|_| v.to_i32().map(|x| x as u64))
            .map_err(|_| meta_err(self.path, key, "is not an integer"))
    }
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        if self.get(key).is_some() {
            self.u64(key).map(Some)
        } else {
            Ok(None)
        }
    }
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.to_f32().map(f64::from).or_else(|_| v.to_f64()).map(Some).map_err(|_| meta_err(self.path, key, "is not a number")),
        }
    }
    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.to_string().map(|s| Some(s.as_str())).map_err(|_| meta_err(self.path, key, "is not a string")),
        }
    }
    pub fn opt_bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(|v| v.to_bool().ok())
    }
    pub fn strings(&self, key: &str) -> Result<Vec<&'a str>> {
        let v = self.get(key).ok_or_else(|| meta_err(self.path, key, "is missing"))?;
        let list = v.to_vec().map_err(|_| meta_err(self.path, key, "is not an array"))?;
        list.iter().map(|x| x.to_string().map(|s| s.as_str()).map_err(|_| meta_err(self.path, key, "has a non-string entry"))).collect()
    }
    pub fn ints(&self, key: &str) -> Result<Option<Vec<i64>>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let list = v.to_vec().map_err(|_| meta_err(self.path, key, "is not an array"))?;
        list.iter()
            .map(|x| x.to_i32().map(i64::from).or_else(|_| x.to_u32().map(i64::from)).or_else(|_| x.to_i64()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(Some)
            .map_err(|_| meta_err(self.path, key, "has a non-integer entry"))
    }
}
