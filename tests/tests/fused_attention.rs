//! The GPU path's attention (the fused op: one pass over the keys that yields the output and the
//! head statistics; `attention.cu` on CUDA, its CPU reference here) run through every fixture
//! family on the CPU: logits against transformers' references for the full forward, the
//! KV-cache decode path and every head intervention, and the head statistics against the block
//! path's (the CPU reference). What this covers without a GPU: the dispatch and intervention
//! wrapper around the kernel, windows, grouped queries and MLA's d ≠ dv in real models; the
//! kernel itself is checked against the same reference under the emulator (routelab-kernels).

use routelab_model::capture::CaptureSpec;
use routelab_model::decoder::{ForwardOptions, ForwardOutput, Model};
use routelab_model::hooks::Quantity;
use routelab_model::interventions::{HeadMethod, Intervention, Interventions};
use routelab_tests::*;

const LOGITS_TOL: f32 = 1e-4;

fn forward(model: &Model, tokens: &[u32], capture: &CaptureSpec, iv: &Interventions, fused: bool) -> ForwardOutput {
    let edits = model.edits(iv).unwrap();
    let mut cache = model.new_cache();
    let plan = capture.plan(model.config.num_layers);
    model.forward(tokens, &mut cache, &ForwardOptions { edits: &edits, fused_attention: fused, ..ForwardOptions::new(&plan) }).unwrap()
}

fn f32s(t: &candle_core::Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn close(case: &str, what: &str, got: &[f32], want: &[f32], tol: f32) {
    let (d, i) = max_abs_diff(got, want);
    assert!(d <= tol, "{case}: {what}: max |Δ| = {d:e} at {i} (got {}, want {}), tolerance {tol:e}", got[i], want[i]);
}

#[test]
fn every_family_through_the_fused_attention_path() {
    for case in cases() {
        let model = load_model(&case);
        let r = Reference::load(&case);
        let ids = r.ids("input_ids");
        let (t, v) = (ids.len(), model.config.vocab_size);
        let ref_logits = &r.get("logits").f32;
        let capture = CaptureSpec::default().with("logits").with_span(1, 4);

        let block = forward(&model, &ids, &capture, &Interventions::default(), false);
        let fused = forward(&model, &ids, &capture, &Interventions::default(), true);
        close(&case, "logits", &f32s(&fused.logits), ref_logits, LOGITS_TOL);
        for (l, (b, f)) in block.layers.iter().zip(&fused.layers).enumerate() {
            let get = |x: &routelab_model::capture::LayerCapture, q| {
                x.get(q)
                    .unwrap()
                    .unwrap_or_else(|| panic!("{case}: layer {l}: {} missing", q.name()))
                    .to_dtype(candle_core::DType::F32)
                    .unwrap()
            };
            for q in [Quantity::AttnEntropy, Quantity::AttnSink, Quantity::AttnSpan] {
                close(&case, &format!("layer {l} {}", q.name()), &f32s(&get(f, q)), &f32s(&get(b, q)), 1e-4);
            }
            // Argmax: identical unless the block path's own attention is nearly flat there.
            let (ab, af) = (f32s(&get(b, Quantity::AttnArgmax)), f32s(&get(f, Quantity::AttnArgmax)));
            let ent = f32s(&get(b, Quantity::AttnEntropy));
            let h = model.config.attention.num_heads;
            for i in 0..ab.len() {
                let flat = ent[i] > 0.99 * ((i / h + 1) as f32).ln();
                assert!(
                    ab[i] == af[i] || flat,
                    "{case}: layer {l} query {} head {}: argmax {} (block) vs {} (fused)",
                    i / h,
                    i % h,
                    ab[i],
                    af[i]
                );
            }
        }

        // The KV-cache decode path: prefill half, then one token at a time.
        let none = CaptureSpec::none().plan(model.config.num_layers);
        let opts = ForwardOptions { fused_attention: true, ..ForwardOptions::new(&none) };
        let mut cache = model.new_cache();
        let prefill = match &model.config.rope.scaling {
            routelab_model::config::RopeScaling::LongRope { original_max_position_embeddings: o, .. } if *o < t => o + 1,
            _ => t / 2,
        };
        model.forward(&ids[..prefill], &mut cache, &opts).unwrap();
        for pos in prefill..t {
            let o = model.forward(&ids[pos..pos + 1], &mut cache, &opts).unwrap();
            close(&case, &format!("cached decode logits at {pos}"), &f32s(&o.logits), &ref_logits[pos * v..(pos + 1) * v], LOGITS_TOL);
        }

        // Head interventions, which the fused path splits between the kernel (uniform) and
        // its output (zero, scale).
        let specs: serde_json::Value = serde_json::from_str(r.metadata.get("interventions").unwrap()).unwrap();
        let logits_only = CaptureSpec::items(&["logits"]);
        for (name, spec) in specs.as_object().unwrap() {
            let field = |k: &str| spec[k].as_u64().unwrap() as usize;
            let method = match spec["kind"].as_str().unwrap() {
                "head_zero" => HeadMethod::Zero,
                "head_uniform" => HeadMethod::Uniform,
                "head_scale" => HeadMethod::Scale { factor: spec["scale"].as_f64().unwrap() as f32 },
                _ => continue, // expert interventions and the mean need nothing of attention
            };
            let iv = Interventions::new(vec![Intervention::Head { layer: field("layer"), head: field("head"), method }]);
            let out = forward(&model, &ids, &logits_only, &iv, true);
            close(&case, &format!("intervention {name}"), &f32s(&out.logits), &r.get(&format!("iv.{name}.logits")).f32, LOGITS_TOL);
        }
    }
}
