//! The CLI's intervention strings (the fuzz input, one per line): `--intervene HOOK:METHOD`
//! (`Intervention::from_str`), `--mask-expert L:E[:M]` and `--mask-head L:H[:M]`, and the JSON
//! form notebooks and traces save (`Interventions`); each set is then checked against a real
//! model's config and resolved per layer, as a run does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use routelab_fuzz::tiny_moe_config;
use routelab_model::interventions::{parse_expert_mask, parse_head_mask, Intervention, Interventions};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let config = tiny_moe_config();
    let mut set = Interventions::default();
    for line in text.lines() {
        for i in [line.parse::<Intervention>(), parse_expert_mask(line), parse_head_mask(line)].into_iter().flatten() {
            let _ = i.label().parse::<Intervention>();
            set.push(i);
        }
    }
    let sets = [Some(set), serde_json::from_str::<Interventions>(text).ok()];
    for set in sets.into_iter().flatten() {
        if set.validate(config).is_ok() {
            for l in 0..config.num_layers {
                let edits = set.for_layer(l, config);
                let _ = (edits.routing_changed(), edits.any_dropped());
            }
        }
        let _ = set.has_pending_means();
    }
});
