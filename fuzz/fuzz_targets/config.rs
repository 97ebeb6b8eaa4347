//! config.json (the fuzz input) read as a model directory's: `checkpoint::read_config`, which
//! parses it into the `ModelConfig` the decoder is built from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use routelab_fuzz::{fresh_dir, write};
use routelab_model::checkpoint;

fuzz_target!(|data: &[u8]| {
    let dir = fresh_dir("config");
    let path = write(&dir, "config.json", data);
    let _ = checkpoint::read_config(&path);
});
