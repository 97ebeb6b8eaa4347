//! A trace file (`routelab-trace/1` or `/2`, the fuzz input): `Trace::from_bytes`, which
//! `Trace::read` calls on the file's bytes. An input whose header length is wrong is read a
//! second time with the length set to where its JSON ends, so mutations of the header reach
//! its reader.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use routelab_fuzz::with_header_length_repaired;
use routelab_probes::trace::Trace;

fn read(data: &[u8]) {
    let Ok(trace) = Trace::from_bytes(data, Path::new("trace.safetensors")) else { return };
    let _ = trace.hidden_size();
    // What a reader does with a trace it opened: write it back out.
    let _ = trace.to_bytes();
}

fuzz_target!(|data: &[u8]| {
    read(data);
    if let Some(repaired) = with_header_length_repaired(data) {
        read(&repaired);
    }
});
