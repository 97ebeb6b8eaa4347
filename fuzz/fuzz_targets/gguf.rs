//! A GGUF file: the fuzz input is its head (header, metadata, tensor infos and whatever tensor
//! data follows), and the file goes on with zeros, so a seed can be a real file's header alone
//! while its tensors still lie inside the file. `checkpoint::open_gguf` parses it into a
//! config, weights, the embedded tokenizer and chat template; then the tokenizer and template
//! are built as a session builds them and every tensor is read as the decoder reads it.
#![no_main]

use std::fs::OpenOptions;

use candle_core::{DType, Device};
use libfuzzer_sys::fuzz_target;
use routelab_fuzz::{fresh_dir, write};
use routelab_model::chat::ChatTemplate;
use routelab_model::checkpoint;
use routelab_model::tokenizer::Tokenizer;

/// Zeros after the input: room for the tensors of the fixture models' headers (the largest
/// quantized fixture's data is under this).
const ZERO_TAIL: u64 = 256 << 10;

/// Elements of the largest tensor dequantised per run.
const SMALL_TENSOR: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let dir = fresh_dir("gguf");
    let path = write(&dir, "model.gguf", data);
    let file = OpenOptions::new().write(true).open(&path).expect("the scratch file just written");
    // A hole, not written bytes: it reads as zeros and costs nothing.
    file.set_len(data.len() as u64 + ZERO_TAIL).expect("extending the scratch file");
    drop(file);
    let Ok(ck) = checkpoint::open_gguf(&path, DType::F32, &Device::Cpu) else { return };
    if let Some(g) = &ck.gguf {
        if let Some(json) = &g.tokenizer {
            if let Ok(tok) = Tokenizer::from_json(json, &g.path, g.bos_token.clone(), g.eos_token.clone()) {
                if let Ok(ids) = tok.encode("Hello, world! 123", true) {
                    let _ = tok.decode(&ids, false);
                }
            }
        }
        if let Some(src) = &g.chat_template {
            let _ = ChatTemplate::new(src.clone(), &g.path, g.bos_token.clone(), g.eos_token.clone());
        }
    }
    let w = ck.weights.keeping_quantized(true);
    let _ = (w.parameter_count(), w.resident_bytes(), w.stored_bytes(), w.storage(), w.stored_matrix_dtype());
    for name in w.names() {
        let Some(shape) = w.shape(&name) else { continue };
        // Every tensor is located and checked against the file; only small ones are also
        // dequantised, which is slow and the same code whatever the size.
        if shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).is_some_and(|n| n <= SMALL_TENSOR) {
            let _ = w.get(&name, &shape);
        }
        let _ = w.get_quantized(&name, &shape);
    }
});
