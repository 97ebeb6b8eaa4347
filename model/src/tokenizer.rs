//! Tokenizer (Hugging Face `tokenizers`) with the special tokens of tokenizer_config.json, and
//! streaming detokenisation that never splits a UTF-8 character.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{ModelError, Result};

#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Where it was loaded from, for messages.
    pub source: PathBuf,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
}

// By where it came from: the vocabulary would fill a page.
impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("source", &self.source).finish_non_exhaustive()
    }
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
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::tokenizer(&path, format!("not valid JSON: {e}")))?;
        let inner = build(&value, &path, "cannot load")?;
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
        let inner = build(value, source, "cannot build the tokenizer from its vocabulary")?;
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

/// The `tokenizers` tokenizer of a tokenizer.json value (read from `source`; `failed` starts
/// the message of an error).
///
/// The value is parsed JSON: `tokenizers` panics on some malformed files instead of returning
/// an error, on a syntax error inside `decoder` among them. The padding and truncation the
/// file may declare are turned off, as transformers encodes a prompt (it turns both off unless
/// asked): a fixed padding length would otherwise make every encoding that long, however large
/// the number.
fn build(value: &serde_json::Value, source: &Path, failed: &str) -> Result<tokenizers::Tokenizer> {
    if let Some(normalizer) = value.get("normalizer") {
        refuse_precompiled(normalizer, source)?;
    }
    if let Some(processor) = value.get("post_processor") {
        check_templates(processor, source)?;
    }
    let mut inner = tokenizers::Tokenizer::deserialize(value).map_err(|e| ModelError::tokenizer(source, format!("{failed}: {e}")))?;
    inner.with_padding(None);
    inner.with_truncation(None).map_err(|e| ModelError::tokenizer(source, format!("cannot turn truncation off: {e}")))?;
    Ok(inner)
}

/// Refuses a `Precompiled` normalizer (SentencePiece's compiled character map, which none of
/// the supported families' tokenizers use) anywhere in `normalizer`: `tokenizers` reads its map
/// without bounds checks, allocating by the sizes it declares and indexing by its contents.
fn refuse_precompiled(normalizer: &serde_json::Value, source: &Path) -> Result<()> {
    match normalizer.get("type").and_then(|t| t.as_str()) {
        Some("Precompiled") => Err(ModelError::tokenizer(
            source,
            "the normalizer is `Precompiled` (a compiled SentencePiece character map), which RouteLab does not read",
        )),
        Some("Sequence") => normalizer
            .get("normalizers")
            .and_then(|n| n.as_array())
            .map_or(Ok(()), |list| list.iter().try_for_each(|n| refuse_precompiled(n, source))),
        _ => Ok(()),
    }
}

/// Checks a `TemplateProcessing` post-processor (also inside a `Sequence`) the way building one
/// does, which reading one from a file skips: `tokenizers` panics while encoding when a template
/// names a special token its table lacks, a sequence a single text does not have, or a special
/// token's ids and tokens differ in number.
fn check_templates(processor: &serde_json::Value, source: &Path) -> Result<()> {
    let bad = |m: String| Err(ModelError::tokenizer(source, format!("post_processor: {m}")));
    match processor.get("type").and_then(|t| t.as_str()) {
        Some("TemplateProcessing") => {
            let specials = processor.get("special_tokens").and_then(|s| s.as_object());
            for (template, sequences) in [("single", &["A"][..]), ("pair", &["A", "B"][..])] {
                for piece in processor.get(template).and_then(|t| t.as_array()).into_iter().flatten() {
                    if let Some(id) = piece.get("SpecialToken").and_then(|t| t.get("id")).and_then(|i| i.as_str()) {
                        let Some(token) = specials.and_then(|s| s.get(id)) else {
                            return bad(format!("the {template} template names special token {id:?}, which `special_tokens` lacks"));
                        };
                        let count = |key: &str| token.get(key).and_then(|v| v.as_array()).map(Vec::len);
                        if count("ids") != count("tokens") {
                            return bad(format!("special token {id:?} has different numbers of ids and tokens"));
                        }
                    }
                    if let Some(id) = piece.get("Sequence").and_then(|t| t.get("id")).and_then(|i| i.as_str()) {
                        if !sequences.contains(&id) {
                            return bad(format!("the {template} template names sequence {id:?}, which it does not have"));
                        }
                    }
                }
            }
            Ok(())
        }
        Some("Sequence") => processor
            .get("processors")
            .and_then(|p| p.as_array())
            .map_or(Ok(()), |list| list.iter().try_for_each(|p| check_templates(p, source))),
        _ => Ok(()),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A word-level tokenizer.json whose padding and truncation say `padding` and `truncation`.
    fn tokenizer_json(padding: &str, truncation: &str) -> String {
        format!(
            r#"{{"version": "1.0", "added_tokens": [], "normalizer": null, "pre_tokenizer": {{"type": "Whitespace"}},
               "post_processor": null, "decoder": null, "truncation": {truncation}, "padding": {padding},
               "model": {{"type": "WordLevel", "vocab": {{"[UNK]": 0, "[PAD]": 1, "hello": 2, "world": 3}}, "unk_token": "[UNK]"}}}}"#
        )
    }

    #[test]
    fn malformed_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let load = |json: &str| {
            std::fs::write(dir.path().join("tokenizer.json"), json).unwrap();
            match Tokenizer::from_dir(dir.path()) {
                Ok(_) => panic!("loaded {json}"),
                Err(e) => e.to_string(),
            }
        };
        // A syntax error inside `decoder` made `tokenizers` panic ("Helper").
        let json = tokenizer_json("null", "null").replace(r#""decoder": null"#, r#""decoder": {"type": "ByteLevel", "add_prefix_"}"#);
        let e = load(&json);
        assert!(e.contains("tokenizer.json") && e.contains("not valid JSON"), "{e}");
        // A Precompiled normalizer, here inside a sequence, panicked or allocated by its map's sizes.
        for charsmap in ["", "AAAAAA==", "/////w=="] {
            let normalizer =
                format!(r#"{{"type": "Sequence", "normalizers": [{{"type": "Precompiled", "precompiled_charsmap": "{charsmap}"}}]}}"#);
            let e = load(&tokenizer_json("null", "null").replace(r#""normalizer": null"#, &format!(r#""normalizer": {normalizer}"#)));
            assert!(e.contains("`Precompiled`"), "{e}");
        }
    }

    #[test]
    fn templates_naming_what_is_not_there_are_errors_not_panics() {
        // Each made encoding panic in `tokenizers` (a missing key, an index out of bounds).
        let dir = tempfile::tempdir().unwrap();
        let sequence = r#"{"Sequence": {"id": "A", "type_id": 0}}"#;
        for (single, specials, what) in [
            (format!(r#"[{{"SpecialToken": {{"id": "<s>", "type_id": 0}}}}, {sequence}]"#), "{}", "lacks"),
            (r#"[{"Sequence": {"id": "B", "type_id": 0}}]"#.to_string(), "{}", "does not have"),
            (
                format!(r#"[{{"SpecialToken": {{"id": "<s>", "type_id": 0}}}}, {sequence}]"#),
                r#"{"<s>": {"id": "<s>", "ids": [1, 2], "tokens": ["<s>"]}}"#,
                "numbers of ids and tokens",
            ),
        ] {
            let processor = format!(
                r#"{{"type": "Sequence", "processors": [{{"type": "TemplateProcessing", "single": {single}, "pair": [{sequence}], "special_tokens": {specials}}}]}}"#
            );
            let json = tokenizer_json("null", "null").replace(r#""post_processor": null"#, &format!(r#""post_processor": {processor}"#));
            std::fs::write(dir.path().join("tokenizer.json"), json).unwrap();
            match Tokenizer::from_dir(dir.path()) {
                Ok(t) => panic!("loaded; encoding gives {:?}", t.encode("hello", true)),
                Err(e) => assert!(e.to_string().contains(what), "{e}"),
            }
        }
    }

    #[test]
    fn a_files_padding_and_truncation_are_not_applied() {
        // A fixed padding length made every encoding that long: a trillion ids from two words.
        let padding = r#"{"strategy": {"Fixed": 1000000000000}, "direction": "Right", "pad_to_multiple_of": null,
                          "pad_id": 1, "pad_type_id": 0, "pad_token": "[PAD]"}"#;
        let truncation = r#"{"direction": "Right", "max_length": 1, "strategy": "LongestFirst", "stride": 0}"#;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), tokenizer_json(padding, truncation)).unwrap();
        let tok = Tokenizer::from_dir(dir.path()).unwrap();
        assert_eq!(tok.encode("hello world", true).unwrap(), vec![2, 3]);
        let value: serde_json::Value = serde_json::from_str(&tokenizer_json(padding, truncation)).unwrap();
        let tok = Tokenizer::from_json(&value, dir.path(), None, None).unwrap();
        assert_eq!(tok.encode("hello world", true).unwrap(), vec![2, 3]);
    }
}
