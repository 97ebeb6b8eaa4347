//! A model directory's `model.safetensors` (the fuzz input) next to a real config.json:
//! `checkpoint::open_dir` parses the header and tensor table, then every tensor is read as
//! the decoder reads it (`Weights::get` with the shape the file declares). An input whose
//! header length is wrong is opened a second time with the length set to where its JSON ends,
//! so mutations of the header reach its reader.
#![no_main]

use candle_core::{DType, Device};
use libfuzzer_sys::fuzz_target;
use routelab_fuzz::{fresh_dir, with_header_length_repaired, write, TINY_MOE_CONFIG};
use routelab_model::checkpoint;

fuzz_target!(|data: &[u8]| {
    open(data);
    if let Some(repaired) = with_header_length_repaired(data) {
        open(&repaired);
    }
});

fn open(data: &[u8]) {
    let dir = fresh_dir("safetensors");
    write(&dir, "config.json", TINY_MOE_CONFIG.as_bytes());
    write(&dir, "model.safetensors", data);
    let Ok(ck) = checkpoint::open_dir(&dir, DType::F32, &Device::Cpu) else { return };
    let w = &ck.weights;
    let _ = (w.parameter_count(), w.resident_bytes(), w.stored_bytes(), w.storage(), w.stored_matrix_dtype());
    for name in w.names() {
        if let Some(shape) = w.shape(&name) {
            let _ = w.get(&name, &shape);
        }
    }
}
