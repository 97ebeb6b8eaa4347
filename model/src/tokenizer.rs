//! Tokenizer (Hugging Face `tokenizers`) with the special tokens of tokenizer_config.json, and
//! streaming detokenisation that never splits a UTF-8 character.

use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};

#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Where it was loaded from, for messages.
    pub source: PathBuf,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
}

/// `"<s>"` or `{"content": "<s>", ...}` (both occur in tokenizer_config.json).
pub fn token_field(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(str::to_string),
        _ => None,
    }
}

impl Tokenizer {
    /// Loads tokenizer.json (and the special tokens of tokenizer_config.json if present).
    pub fn from_dir(dir: &Path) -> Result<Tokenizer> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(ModelError::tokenizer(&path, "tokenizer.json is missing (RouteLab needs the fast-tokenizer file of the model)"));
        }
        let text = crate::whole_file::read_to_string(&path, crate::whole_file::TOKENIZER_LIMIT, "tokenizer.json")
            .map_err(|e| ModelError::io(&path, e))?;
        let inner = text.parse::<tokenizers::Tokenizer>().map_err(|e| ModelError::tokenizer(&path, format!("cannot load: {e}")))?;
        let config = read_tokenizer_config(dir)?;
        Ok(Tokenizer {
            inner,
            source: path,
            bos_token: token_field(config.as_ref().and_then(|c| c.get("bos_token"))),
            eos_token: token_field(config.as_ref().and_then(|c| c.get("eos_token"))),
        })
    }

    /// Builds a tokenizer from a tokenizer.json value (GGUF-embedded vocabularies).
    pub fn from_json(value: &serde_json::Value, source: &Path, bos: Option<String>, eos: Option<String>) -> Result<Tokenizer> {
        let text = value.to_string();
        let inner: tokenizers::Tokenizer =
            text.parse().map_err(|e| ModelError::tokenizer(source, format!("cannot build the tokenizer from its vocabulary: {e}")))?;
        Ok(Tokenizer { inner, source: source.to_path_buf(), bos_token: bos, eos_token: eos })
    }

    /// Token ids of `text`; `add_special_tokens` applies the tokenizer's post-processor (BOS).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| ModelError::tokenizer(&self.source, format!("cannot encode text: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner.decode(ids, skip_special_tokens).map_err(|e| ModelError::tokenizer(&self.source, format!("cannot decode: {e}")))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// What one token looks like on its own: its decoded text, or, when it is only part of a
    /// UTF-8 character, its bytes as `<0xE6>`.
    pub fn piece(&self, id: u32) -> String {
        match self.decode(&[id], false) {
            Ok(s) if !s.contains('\u{FFFD}') => s,
            _ => match self.id_to_token(id) {
                Some(tok) => byte_level_bytes(&tok).map(|b| b.iter().map(|x| format!("<0x{x:02X}>")).collect()).unwrap_or(tok),
                None => format!("<{id}>"),
            },
        }
    }

    /// Ids of end-of-sequence tokens: tokenizer_config's eos plus the model config's.
    pub fn eos_ids(&self, config_eos: &[u32]) -> Vec<u32> {
        let mut ids: Vec<u32> = config_eos.to_vec();
        if let Some(id) = self.eos_token.as_deref().and_then(|t| self.token_to_id(t)) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }
}

/// The raw bytes of a GPT-2 byte-level token string, if it is one.
fn byte_level_bytes(token: &str) -> Option<Vec<u8>> {
    // GPT-2's byte-to-unicode table: printable Latin-1 maps to itself, the rest to U+0100….
    let mut table = std::collections::HashMap::new();
    let mut n = 0u32;
    for b in 0u32..256 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        let c = if printable {
            b
        } else {
            n += 1;
            255 + n
        };
        table.insert(char::from_u32(c)?, b as u8);
    }
    token.chars().map(|c| table.get(&c).copied()).collect()
}

pub fn read_tokenizer_config(dir: &Path) -> Result<Option<serde_json::Value>> {
    let path = dir.join("tokenizer_config.json");
    if !path.exists() {
        return Ok(None);
    }
    let text = crate::whole_file::read_to_string(&path, crate::whole_file::TOKENIZER_LIMIT, "tokenizer_config.json")
        .map_err(|e| ModelError::io(&path, e))?;
    serde_json::from_str(&text).map(Some).map_err(|e| ModelError::tokenizer(&path, format!("not valid JSON: {e}")))
}

/// Turns generated token ids into text as it becomes final: a token that ends inside a UTF-8
/// character (byte-level BPE splits them) is held back until the character is complete.
pub struct TextStream<'a> {
    tokenizer: &'a Tokenizer,
    ids: Vec<u32>,
    /// Tokens before this index are fully emitted.
    prefix: usize,
    /// Text of `ids[prefix..read]` already emitted.
    read: usize,
    skip_special: bool,
}

impl<'a> TextStream<'a> {
    pub fn new(tokenizer: &'a Tokenizer, skip_special: bool) -> Self {
        TextStream { tokenizer, ids: vec![], prefix: 0, read: 0, skip_special }
    }

    /// Adds a token; returns the text that became final with it (possibly empty).
    ///
    /// The previous token is decoded along with the new one, so tokenizers whose decoding
    /// of a token depends on its neighbour (leading-space rules) render it right.
    pub fn push(&mut self, id: u32) -> Result<String> {
        let before = self.tokenizer.decode(&self.ids[self.prefix..self.read], self.skip_special)?;
        self.ids.push(id);
        let now = self.tokenizer.decode(&self.ids[self.prefix..], self.skip_special)?;
        if now.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let fresh = match now.strip_prefix(before.as_str()) {
            Some(rest) => rest.to_string(),
            None => now.get(before.len()..).unwrap_or("").to_string(),
        };
        self.prefix = self.read;
        self.read = self.ids.len();
        Ok(fresh)
    }

    /// Whatever is still held back (an incomplete character at the very end).
    pub fn finish(&mut self) -> Result<String> {
        let before = self.tokenizer.decode(&self.ids[self.prefix..self.read], self.skip_special)?;
        let now = self.tokenizer.decode(&self.ids[self.prefix..], self.skip_special)?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        Ok(now.get(before.len()..).unwrap_or("").to_string())
    }
}
