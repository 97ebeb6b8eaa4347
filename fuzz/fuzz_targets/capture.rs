//! The CLI's `--capture` items (the fuzz input, one argument per line; each comma-separated):
//! `CaptureSpec::parse_items`, and the JSON form notebooks and traces save; each spec is then
//! planned for a real model's layers, as a run does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use routelab_fuzz::tiny_moe_config;
use routelab_model::capture::CaptureSpec;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let items: Vec<&str> = text.lines().collect();
    let specs = [CaptureSpec::parse_items(&items).ok(), serde_json::from_str::<CaptureSpec>(text).ok()];
    for spec in specs.into_iter().flatten() {
        let plan = spec.plan(tiny_moe_config().num_layers);
        for l in 0..tiny_moe_config().num_layers {
            let _ = plan.layer(l);
        }
        let _ = serde_json::to_string(&spec);
    }
});
