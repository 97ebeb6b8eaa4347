//! Tokenizer, chat template and streaming detokenisation against transformers' outputs
//! (tests/fixtures/tokenizer/reference.json, written by generate.py).

use routelab_model::chat::{ChatTemplate, Message};
use routelab_model::tokenizer::{read_tokenizer_config, TextStream, Tokenizer};
use routelab_tests::*;

fn tokenizer() -> Tokenizer {
    Tokenizer::from_dir(&fixtures().join("tokenizer")).unwrap()
}

fn messages(v: &serde_json::Value) -> Vec<Message> {
    v.as_array().unwrap().iter().map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap())).collect()
}

#[test]
fn encoding_matches_transformers_with_and_without_special_tokens() {
    let tok = tokenizer();
    let r = json(&fixtures().join("tokenizer/reference.json"));
    for case in r["encode"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(tok.encode(text, false).unwrap(), ids_of(&case["ids"]), "{text:?}");
        assert_eq!(tok.encode(text, true).unwrap(), ids_of(&case["ids_with_special"]), "{text:?} with special tokens");
    }
}

#[test]
fn decoding_matches_transformers() {
    let tok = tokenizer();
    let r = json(&fixtures().join("tokenizer/reference.json"));
    for case in r["decode"].as_array().unwrap() {
        let ids = ids_of(&case["ids"]);
        let skip = case["skip_special_tokens"].as_bool().unwrap();
        assert_eq!(tok.decode(&ids, skip).unwrap(), case["text"].as_str().unwrap(), "{ids:?}");
    }
}

#[test]
fn chat_template_renders_and_tokenizes_like_apply_chat_template() {
    let dir = fixtures().join("tokenizer");
    let tok = tokenizer();
    let cfg = read_tokenizer_config(&dir).unwrap().unwrap();
    let t = ChatTemplate::from_tokenizer_config(&cfg, &dir.join("tokenizer_config.json"), tok.bos_token.clone(), tok.eos_token.clone())
        .unwrap()
        .expect("template");
    let r = json(&dir.join("reference.json"));
    for case in r["chat"].as_array().unwrap() {
        let rendered = t.render(&messages(&case["messages"]), case["add_generation_prompt"].as_bool().unwrap()).unwrap();
        assert_eq!(rendered, case["rendered"].as_str().unwrap());
        assert_eq!(tok.encode(&rendered, false).unwrap(), ids_of(&case["ids"]));
    }
}

#[test]
fn streaming_never_emits_half_a_character_and_adds_up_to_the_full_decode() {
    let tok = tokenizer();
    // Byte-level BPE splits these characters over several tokens.
    for text in ["naïve café — 東京 🚀 done", "👨\u{200d}👩\u{200d}👧 family", "plain ascii text"] {
        let ids = tok.encode(text, false).unwrap();
        let mut stream = TextStream::new(&tok, false);
        let mut out = String::new();
        let mut held_back = 0;
        for &id in &ids {
            let piece = stream.push(id).unwrap();
            assert!(!piece.contains('\u{FFFD}'), "{text:?}: emitted a replacement character in {piece:?}");
            if piece.is_empty() {
                held_back += 1;
            }
            out.push_str(&piece);
        }
        out.push_str(&stream.finish().unwrap());
        assert_eq!(out, tok.decode(&ids, false).unwrap());
        assert_eq!(out, text);
        if !text.is_ascii() {
            assert!(held_back > 0, "{text:?}: expected some tokens to end inside a character");
        }
    }
}

#[test]
fn a_broken_chat_template_is_reported_with_its_file() {
    let err = ChatTemplate::new("{% for m in messages %}".into(), std::path::Path::new("x/tokenizer_config.json"), None, None).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("x/tokenizer_config.json") && msg.contains("chat template"), "{msg}");
}
