//! Opening a checkpoint: a Hugging Face-layout directory or a GGUF file, to a config plus
//! weights. (Resolving names, repo ids and bundled models to these is [`crate::source`].)

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::families::parse_config;
use crate::gguf::{self, GgufModel};
use crate::weights::Weights;

/// A checkpoint's parts before the model is built.
pub struct Checkpoint {
    pub config: ModelConfig,
    pub weights: Weights,
    /// Where tokenizer files live (the directory), if any.
    pub dir: Option<PathBuf>,
    /// GGUF-embedded tokenizer and template.
    pub gguf: Option<GgufExtras>,
}

pub struct GgufExtras {
    pub path: PathBuf,
    pub tokenizer: Option<serde_json::Value>,
    pub chat_template: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
}

/// Reads and parses config.json.
pub fn read_config(path: &Path) -> Result<ModelConfig> {
    let text = crate::whole_file::read_to_string(path, crate::whole_file::CONFIG_LIMIT, "config.json").map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            ModelError::config(path, "config.json is missing: a model directory needs config.json next to its weights")
        }
        _ => ModelError::io(path, e),
    })?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::config(path, format!("not valid JSON: {e}")))?;
    parse_config(path, &value)
}

/// The safetensors files of a directory: the shards named by model.safetensors.index.json,
/// else model.safetensors, else every *.safetensors.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = crate::whole_file::read_to_string(&index, crate::whole_file::TOKENIZER_LIMIT, "shard index")
            .map_err(|e| ModelError::io(&index, e))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::weights(&index, format!("not valid JSON: {e}")))?;
        let map =
            v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| ModelError::weights(&index, "has no `weight_map` object"))?;
        let mut files: Vec<String> = map.values().filter_map(|f| f.as_str().map(str::to_string)).collect();
        files.sort();
        files.dedup();
        let paths = files
            .iter()
            .map(|f| crate::repo_path::relative(f).map(|rel| dir.join(rel)))
            .collect::<std::result::Result<Vec<PathBuf>, String>>()
            .map_err(|why| ModelError::weights(&index, format!("`weight_map` names {why}")))?;
        if let Some(missing) = paths.iter().find(|p| !p.exists()) {
            return Err(ModelError::weights(&index, format!("names shard {} which does not exist", missing.display())));
        }
        return Ok(paths);
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ModelError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    all.sort();
    if all.is_empty() {
        return Err(ModelError::weights(
            dir,
            "no weights found: expected model.safetensors, model.safetensors.index.json or *.safetensors",
        ));
    }
    Ok(all)
}

/// Opens a Hugging Face-layout directory.
pub fn open_dir(dir: &Path, dtype: DType, device: &Device) -> Result<Checkpoint> {
    if !dir.is_dir() {
        return Err(ModelError::Source(format!("{}: not a directory", dir.display())));
    }
    let config = read_config(&dir.join("config.json"))?;
    let manifest = dir.join(crate::weights::RANDOM_MANIFEST);
    let weights = match safetensors_files(dir) {
        Ok(files) => Weights::from_safetensors(&files, dir, dtype, device)?,
        // A benchmark model: a real config with random weights (Weights::random).
        Err(_) if manifest.exists() => Weights::random(&manifest, dtype, device)?,
        Err(e) => return Err(e),
    };
    Ok(Checkpoint { config, weights, dir: Some(dir.to_path_buf()), gguf: None })
}

/// Opens a GGUF file. A tokenizer.json next to it takes precedence over the embedded vocabulary.
pub fn open_gguf(path: &Path, dtype: DType, device: &Device) -> Result<Checkpoint> {
    let GgufModel { weights, config, tokenizer, chat_template, bos_token, eos_token, .. } = gguf::open(path)?;
    let config = parse_config(path, &config)?;
    let weights = Weights::from_gguf(weights, dtype, device);
    let dir = path.parent().filter(|d| d.join("tokenizer.json").exists()).map(Path::to_path_buf);
    Ok(Checkpoint {
        config,
        weights,
        dir,
        gguf: Some(GgufExtras { path: path.to_path_buf(), tokenizer, chat_template, bos_token, eos_token }),
    })
}
