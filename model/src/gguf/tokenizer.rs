//! The tokenizer a GGUF file embeds, as a tokenizer.json equivalent.

use serde_json::json;

use super::meta::{meta_err, Meta};
use crate::error::Result;

/// tokenizer.json for a byte-level BPE vocabulary, as transformers' `GGUFLlamaConverter`
/// builds it: BPE with byte fallback, ByteLevel pre-tokenizer (GPT-2 regex, no prefix space),
/// ByteLevel decoder, control tokens (type 3) as special added tokens.
pub(crate) fn byte_level_bpe(meta: &Meta, tokens: &[&str], bos: Option<String>) -> Result<serde_json::Value> {
    let merges = meta.strings("tokenizer.ggml.merges")?;
    let types = meta.ints("tokenizer.ggml.token_type")?.unwrap_or_default();
    // One type per token: a longer list would name tokens that do not exist.
    if types.len() > tokens.len() {
        return Err(meta_err(
            meta.path,
            "tokenizer.ggml.token_type",
            &format!("has {} entries for {} tokens (`tokenizer.ggml.tokens`)", types.len(), tokens.len()),
        ));
    }
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
