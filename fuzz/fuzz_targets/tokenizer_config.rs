//! tokenizer_config.json (the fuzz input) in a model directory, read as a session reads it:
//! `read_tokenizer_config`, the special tokens, and the chat template it holds
//! (`ChatTemplate::from_tokenizer_config`), rendered once.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use routelab_fuzz::{conversation, fresh_dir, write};
use routelab_model::chat::ChatTemplate;
use routelab_model::tokenizer::{read_tokenizer_config, token_field};

fuzz_target!(|data: &[u8]| {
    let dir = fresh_dir("tokenizer_config");
    let path = write(&dir, "tokenizer_config.json", data);
    let Ok(Some(config)) = read_tokenizer_config(&dir) else { return };
    let bos = token_field(config.get("bos_token"));
    let eos = token_field(config.get("eos_token"));
    let Ok(Some(template)) = ChatTemplate::from_tokenizer_config(&config, Path::new(&path), bos, eos) else { return };
    let _ = template.render(&conversation(), true);
});
