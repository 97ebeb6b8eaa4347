//! tokenizer.json (the fuzz input) in a model directory: `Tokenizer::from_dir` builds the
//! tokenizer as a session does, then it encodes and decodes a short text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use routelab_fuzz::{fresh_dir, write};
use routelab_model::tokenizer::{TextStream, Tokenizer};

fuzz_target!(|data: &[u8]| {
    let dir = fresh_dir("tokenizer");
    write(&dir, "tokenizer.json", data);
    let Ok(tok) = Tokenizer::from_dir(&dir) else { return };
    let Ok(ids) = tok.encode("Hello, world! <|im_start|> 123 héllo 世界", true) else { return };
    let _ = tok.decode(&ids, true);
    let mut stream = TextStream::new(&tok, true);
    for &id in ids.iter().take(64) {
        let _ = tok.piece(id);
        let _ = stream.push(id);
    }
    let _ = stream.finish();
    let _ = tok.eos_ids(&[0]);
});
