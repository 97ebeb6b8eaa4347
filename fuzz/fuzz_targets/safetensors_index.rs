//! A sharded model directory's `model.safetensors.index.json` (the fuzz input) next to a real
//! config.json and two small shards: `checkpoint::open_dir` reads the index, finds the shards
//! it names and opens them.
#![no_main]

use candle_core::{DType, Device};
use libfuzzer_sys::fuzz_target;
use routelab_fuzz::{fresh_dir, write, TINY_MOE_CONFIG};
use routelab_model::checkpoint;

/// A valid safetensors file holding one f32 vector `name` of two values.
fn shard(name: &str) -> Vec<u8> {
    let header = format!(r#"{{"{name}":{{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}}}"#);
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&[0, 0, 128, 63, 0, 0, 0, 64]);
    out
}

fuzz_target!(|data: &[u8]| {
    let dir = fresh_dir("safetensors_index");
    write(&dir, "config.json", TINY_MOE_CONFIG.as_bytes());
    write(&dir, "model-00001-of-00002.safetensors", &shard("model.norm.weight"));
    write(&dir, "model-00002-of-00002.safetensors", &shard("lm_head.bias"));
    write(&dir, "model.safetensors.index.json", data);
    let _ = checkpoint::safetensors_files(&dir);
    let Ok(ck) = checkpoint::open_dir(&dir, DType::F32, &Device::Cpu) else { return };
    for name in ck.weights.names() {
        if let Some(shape) = ck.weights.shape(&name) {
            let _ = ck.weights.get(&name, &shape);
        }
    }
});
