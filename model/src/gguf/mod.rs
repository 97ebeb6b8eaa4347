//! GGUF files (llama.cpp's format) for the Llama architecture.
//!
//! A GGUF file carries config, tokenizer and weights in one. RouteLab turns it into the same
//! three things a Hugging Face directory gives, the way transformers' `gguf_file=` loader does:
//!
//! - a config.json equivalent synthesised from the `llama.*` metadata;
//! - weights dequantised to float (candle's quantised types: Q4_0…Q8_0, K-quants, F16, F32)
//!   under their Hugging Face names, with llama.cpp's q/k row permutation undone: llama.cpp
//!   stores each rotary pair in adjacent rows, transformers' `rotate_half` wants the two
//!   halves apart, so HF row `h·hd + j·hd/2 + i` is GGUF row `h·hd + 2i + j`;
//! - a tokenizer.json equivalent built like `GGUFLlamaConverter` for byte-level BPE vocabularies
//!   (`tokenizer.ggml.model = "gpt2"`), and the chat template from `tokenizer.chat_template`.
//!
//! Known difference kept for parity with transformers: `tokenizer.ggml.pre` is not consulted
//! (transformers ignores it too), so e.g. SmolLM2's digit pre-splitting is not applied; the two
//! only differ on whitespace runs directly before a digit.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};
use serde_json::json;

use crate::error::{ModelError, Result};

/// What a GGUF file yields besides its weights.
pub struct GgufModel {
    pub weights: GgufWeights,
    /// A config.json equivalent.
    pub config: serde_json::Value,
    /// A tokenizer.json equivalent, when the vocabulary type is supported.
    pub tokenizer: Option<serde_json::Value>,
    pub chat_template: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub add_bos_token: bool,
}

/// Weights inside a GGUF file, addressed by Hugging Face names.
pub struct GgufWeights {
    path: PathBuf,
    content: Content,
    file: Mutex<File>,
    /// HF name → GGUF name.
    names: HashMap<String, String>,
    num_heads: usize,
    num_kv_heads: usize,
}

fn meta_err(path: &Path, key: &str, what: &str) -> ModelError {
    ModelError::weights(path, format!("GGUF metadata `{key}` {what}"))
}

struct Meta<'a> {
    path: &'a Path,
    md: &'a HashMap<String, Value>,
}

impl<'a> Meta<'a> {
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.md.get(key)
    }
    fn u64(&self, key: &str) -> Result<u64> {
        let v = self.get(key).ok_or_else(|| meta_err(self.path, key, "is missing"))?;
        v.to_u64()
            .or_else(|_| v.to_u32().map(u64::from))
            .or_else(|_| v.to_i32().map(|x| x as u64))
            .map_err(|_| meta_err(self.path, key, "is not an integer"))
    }
    fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        if self.get(key).is_some() {
            self.u64(key).map(Some)
        } else {
            Ok(None)
        }
    }
    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.to_f32().map(f64::from).or_else(|_| v.to_f64()).map(Some).map_err(|_| meta_err(self.path, key, "is not a number")),
        }
    }
    fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.to_string().map(|s| Some(s.as_str())).map_err(|_| meta_err(self.path, key, "is not a string")),
        }
    }
    fn opt_bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(|v| v.to_bool().ok())
    }
    fn strings(&self, key: &str) -> Result<Vec<&'a str>> {
        let v = self.get(key).ok_or_else(|| meta_err(self.path, key, "is missing"))?;
        let list = v.to_vec().map_err(|_| meta_err(self.path, key, "is not an array"))?;
        list.iter().map(|x| x.to_string().map(|s| s.as_str()).map_err(|_| meta_err(self.path, key, "has a non-string entry"))).collect()
    }
    fn ints(&self, key: &str) -> Result<Option<Vec<i64>>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let list = v.to_vec().map_err(|_| meta_err(self.path, key, "is not an array"))?;
        list.iter()
            .map(|x| x.to_i32().map(i64::from).or_else(|_| x.to_u32().map(i64::from)).or_else(|_| x.to_i64()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(Some)
            .map_err(|_| meta_err(self.path, key, "has a non-integer entry"))
    }
}

/// HF tensor name for a GGUF tensor name of the llama architecture.
fn hf_name(gguf: &str) -> Option<String> {
    Some(match gguf {
        "token_embd.weight" => "model.embed_tokens.weight".into(),
        "output_norm.weight" => "model.norm.weight".into(),
        "output.weight" => "lm_head.weight".into(),
        _ => {
            let rest = gguf.strip_prefix("blk.")?;
            let (layer, part) = rest.split_once('.')?;
            let layer: usize = layer.parse().ok()?;
            let hf = match part {
                "attn_norm.weight" => "input_layernorm.weight",
                "attn_q.weight" => "self_attn.q_proj.weight",
                "attn_k.weight" => "self_attn.k_proj.weight",
                "attn_v.weight" => "self_attn.v_proj.weight",
                "attn_output.weight" => "self_attn.o_proj.weight",
                "ffn_norm.weight" => "post_attention_layernorm.weight",
                "ffn_gate.weight" => "mlp.gate_proj.weight",
                "ffn_up.weight" => "mlp.up_proj.weight",
                "ffn_down.weight" => "mlp.down_proj.weight",
                _ => return None,
            };
            format!("model.layers.{layer}.{hf}")
        }
    })
}

/// Opens and parses a GGUF file.
pub fn open(path: &Path) -> Result<GgufModel> {
    let mut file = File::open(path).map_err(|e| ModelError::io(path, e))?;
    let content = Content::read(&mut file).map_err(|e| ModelError::weights(path, format!("not a readable GGUF file: {e}")))?;
    let meta = Meta { path, md: &content.metadata };
    let arch = meta.opt_str("general.architecture")?.unwrap_or("");
    if arch != "llama" {
        return Err(ModelError::weights(
            path,
            format!("GGUF architecture {arch:?} is not supported (RouteLab reads GGUF files of the llama architecture; for other families use the Hugging Face safetensors checkpoint)"),
        ));
    }
    if content.tensor_infos.contains_key("rope_freqs.weight") {
        return Err(ModelError::weights(
            path,
            "this GGUF bakes Llama-3.1 rope scaling into a rope_freqs tensor, which RouteLab does not read; use the Hugging Face checkpoint",
        ));
    }
    let k = |s: &str| format!("llama.{s}");
    let num_layers = meta.u64(&k("block_count"))? as usize;
    let hidden = meta.u64(&k("embedding_length"))? as usize;
    let num_heads = meta.u64(&k("attention.head_count"))? as usize;
    let num_kv_heads = meta.opt_u64(&k("attention.head_count_kv"))?.map(|x| x as usize).unwrap_or(num_heads);
    if num_heads == 0 || !hidden.is_multiple_of(num_heads) {
        return Err(meta_err(path, &k("attention.head_count"), "does not divide the embedding length"));
    }
    let tokens = meta.strings("tokenizer.ggml.tokens")?;
    let vocab_size = match meta.opt_u64(&k("vocab_size"))? {
        Some(v) => v as usize,
        None => tokens.len(),
    };
    let head_dim = match meta.opt_u64(&k("rope.dimension_count"))? {
        Some(d) => d as usize,
        None => hidden / num_heads,
    };
    let bos = meta.opt_u64("tokenizer.ggml.bos_token_id")?;
    let eos = meta.opt_u64("tokenizer.ggml.eos_token_id")?;
    let tie = !content.tensor_infos.contains_key("output.weight");
    let config = json!({
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": meta.u64(&k("feed_forward_length"))?,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "head_dim": head_dim,
        "max_position_embeddings": meta.opt_u64(&k("context_length"))?.unwrap_or(2048),
        "rms_norm_eps": meta.opt_f64(&k("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5),
        "rope_theta": meta.opt_f64(&k("rope.freq_base"))?.unwrap_or(10_000.0),
        "tie_word_embeddings": tie,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "hidden_act": "silu",
        "routelab_source": "gguf",
    });
    let mut names = HashMap::new();
    for gguf_name in content.tensor_infos.keys() {
        if let Some(hf) = hf_name(gguf_name) {
            names.insert(hf, gguf_name.clone());
        }
    }
    let token = |id: Option<u64>| id.and_then(|i| tokens.get(i as usize)).map(|s| s.to_string());
    let add_bos_token = meta.opt_bool("tokenizer.ggml.add_bos_token").unwrap_or(false);
    let tokenizer = match meta.opt_str("tokenizer.ggml.model")? {
        Some("gpt2") => Some(byte_level_bpe(&meta, &tokens, add_bos_token.then(|| token(bos)).flatten())?),
        _ => None,
    };
    let chat_template = meta.opt_str("tokenizer.chat_template")?.map(str::to_string);
    let (bos_token, eos_token) = (token(bos), token(eos));
    Ok(GgufModel {
        weights: GgufWeights { path: path.to_path_buf(), content, file: Mutex::new(file), names, num_heads, num_kv_heads },
        config,
        tokenizer,
        chat_template,
        bos_token,
        eos_token,
        add_bos_token,
    })
}

/// tokenizer.json for a byte-level BPE vocabulary, as transformers' `GGUFLlamaConverter`
/// builds it: BPE with byte fallback, ByteLevel pre-tokenizer (GPT-2 regex, no prefix space),
/// ByteLevel decoder, control tokens (type 3) as special added tokens.
fn byte_level_bpe(meta: &Meta, tokens: &[&str], bos: Option<String>) -> Result<serde_json::Value> {
    let merges = meta.strings("tokenizer.ggml.merges")?;
    let types = meta.ints("tokenizer.ggml.token_type")?.unwrap_or_default();
    let vocab: serde_json::Map<String, serde_json::Value> = tokens.iter().enumerate().map(|(i, t)| (t.to_string(), json!(i))).collect();
    let added: Vec<serde_json::Value> = types
        .iter()
        .enumerate()
        .filter(|(_, &t)| t == 3 || t == 4)
        .map(|(i, &t)| {
            json!({"id": i, "content": tokens[i], "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": t == 4, "special": t == 3})
        })
        .collect();
    let unk = meta.opt_u64("tokenizer.ggml.unknown_token_id")?.and_then(|i| tokens.get(i as usize)).map(|s| s.to_string());
    let post_processor = match bos {
        Some(b) => json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": b, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {b.clone(): {"id": b, "ids": [tokens.iter().position(|t| *t == b).unwrap_or(0)], "tokens": [b]}}
        }),
        None => serde_json::Value::Null,
    };
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true},
        "post_processor": post_processor,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true}
        ]},
        "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    }))
}

impl GgufWeights {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn contains(&self, hf: &str) -> bool {
        self.names.contains_key(hf)
    }

    pub fn hf_names(&self) -> Vec<String> {
        self.names.keys().cloned().collect()
    }

    pub fn shape(&self, hf: &str) -> Option<Vec<usize>> {
        let g = self.names.get(hf)?;
        self.content.tensor_infos.get(g).map(|i| i.shape.dims().to_vec())
    }

    /// Reads and dequantises a tensor to f32 on the CPU, undoing llama.cpp's q/k permutation.
    pub fn load(&self, hf: &str) -> Result<Tensor> {
        let g = self.names.get(hf).ok_or_else(|| ModelError::MissingTensor {
            location: self.path.display().to_string(),
            name: hf.to_string(),
            hint: None,
        })?;
        let q = {
            let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
            self.content.tensor(&mut *file, g, &Device::Cpu).map_err(|e| ModelError::weights(&self.path, format!("tensor {g:?}: {e}")))?
        };
        let w = q.dequantize(&Device::Cpu).map_err(|e| ModelError::weights(&self.path, format!("tensor {g:?}: {e}")))?;
        let heads = if hf.ends_with("q_proj.weight") {
            self.num_heads
        } else if hf.ends_with("k_proj.weight") {
            self.num_kv_heads
        } else {
            return Ok(w);
        };
        unpermute_rotary_rows(&w, heads).map_err(|e| ModelError::weights(&self.path, format!("tensor {g:?}: {e}")))
    }
}

/// Undoes llama.cpp's interleaving of rotary pairs in q/k projection rows:
/// `W.reshape(n_head, hd/2, 2, in).swapaxes(1, 2).reshape(W.shape)` (transformers'
/// `reverse_permute_weights`).
pub fn unpermute_rotary_rows(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (out, inp) = w.dims2()?;
    if heads == 0 || out % (2 * heads) != 0 {
        candle_core::bail!("{out} rows cannot be split into {heads} heads of rotary pairs");
    }
    w.reshape((heads, out / heads / 2, 2, inp))?.transpose(1, 2)?.contiguous()?.reshape((out, inp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_moves_rotary_pairs_into_halves() {
        // One head of dim 4, input dim 1: GGUF rows [a0, b0, a1, b1] (pairs adjacent) become
        // HF rows [a0, a1, b0, b1] (halves).
        let w = Tensor::new(&[[0f32], [10.0], [1.0], [11.0]], &Device::Cpu).unwrap();
        let hf = unpermute_rotary_rows(&w, 1).unwrap();
        assert_eq!(hf.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![0.0, 1.0, 10.0, 11.0]);
    }

    #[test]
    fn gguf_names_map_to_hf_names() {
        assert_eq!(hf_name("blk.3.attn_q.weight").unwrap(), "model.layers.3.self_attn.q_proj.weight");
        assert_eq!(hf_name("token_embd.weight").unwrap(), "model.embed_tokens.weight");
        assert_eq!(hf_name("blk.x.attn_q.weight"), None);
    }
}
