//! Every supported family against Hugging Face transformers (Snowflake's code for Arctic) on
//! tiny random-weight fixtures: logits, residual streams, attention probabilities, routing,
//! the KV-cache decode path, greedy generation and every intervention.
//!
//! The references were produced by tests/fixtures/generate.py; see tests/fixtures/FORMAT.md.

use candle_core::Tensor;
use routelab_kernels::routing::Selection;
use routelab_model::capture::{CaptureSpec, Layers};
use routelab_model::decoder::{ForwardOptions, ForwardOutput, Model};
use routelab_model::hooks::Quantity;
use routelab_model::interventions::{ExpertMethod, HeadMethod, Intervention, Interventions};
use routelab_tests::*;

/// f32 logits must agree to 1e-4; attention probabilities to 1e-5.
const LOGITS_TOL: f32 = 1e-4;
const PROBS_TOL: f32 = 1e-5;

fn run(model: &Model, tokens: &[u32], capture: &CaptureSpec, iv: &Interventions, head_outputs: &Layers) -> ForwardOutput {
    let edits = model.edits(iv).unwrap();
    let mut cache = model.new_cache();
    let plan = capture.plan(model.config.num_layers);
    model.forward(tokens, &mut cache, &ForwardOptions { edits: &edits, head_outputs, ..ForwardOptions::new(&plan) }).unwrap()
}

fn vec_f32(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn check_close(case: &str, what: &str, got: &[f32], want: &[f32], tol: f32) {
    let (d, i) = max_abs_diff(got, want);
    assert!(d <= tol, "{case}: {what}: max |Δ| = {d:e} at {i} (got {}, want {}), tolerance {tol:e}", got[i], want[i]);
}

fn check_case(case: &str) {
    let model = load_model(case);
    let r = Reference::load(case);
    let ids = r.ids("input_ids");
    let t = ids.len();
    let out = run(&model, &ids, &CaptureSpec::all(), &Interventions::default(), &Layers::None);

    check_close(case, "logits", &vec_f32(&out.logits), &r.get("logits").f32, LOGITS_TOL);

    for (l, lc) in out.layers.iter().enumerate() {
        let get = |q| lc.get(q).unwrap();
        let want = &r.get(&format!("hidden.{l}")).f32;
        let scale = want.iter().fold(1f32, |m, x| m.max(x.abs()));
        check_close(case, &format!("hidden.{l} (scale {scale:.1})"), &vec_f32(&get(Quantity::Hidden).unwrap()), want, LOGITS_TOL * scale);
        check_close(
            case,
            &format!("attn.{l}.probs"),
            &vec_f32(&get(Quantity::AttnProbs).unwrap()),
            &r.get(&format!("attn.{l}.probs")).f32,
            PROBS_TOL,
        );

        let router_ref = r.tensors.get(&format!("router.{l}.logits"));
        let router_logits = get(Quantity::RouterLogits);
        assert_eq!(router_logits.is_some(), router_ref.is_some(), "{case}: layer {l}: MoE-ness differs from the reference");
        if let Some(router_logits) = router_logits {
            check_close(case, &format!("router.{l}.logits"), &vec_f32(&router_logits), &router_ref.unwrap().f32, LOGITS_TOL);
            let experts = get(Quantity::RouterExperts).unwrap().flatten_all().unwrap().to_vec1::<u32>().unwrap();
            let weights = vec_f32(&get(Quantity::RouterWeights).unwrap());
            // The decision margin: transformers' gap between the k-th and (k+1)-th selection
            // score; RouteLab's is that gap, or the smaller of it and a second decision's gap
            // (group-limited routers' group choice, sparsemixer's first round), so never more.
            let margin = vec_f32(&get(Quantity::RouterMargin).unwrap());
            let want_margin = &r.get(&format!("router.{l}.margin")).f32;
            let plain_top_k = model.config.moe(l).is_some_and(|m| matches!(m.routing.selection, Selection::TopK));
            for (pos, (g, w)) in margin.iter().zip(want_margin).enumerate() {
                let tol = 1e-5 * (1.0 + w.abs());
                let ok = if plain_top_k { (g - w).abs() <= tol } else { *g <= w + tol };
                assert!(ok, "{case}: layer {l} position {pos}: router margin {g} vs transformers' {w}");
            }
            let want_e = &r.get(&format!("router.{l}.experts")).i64;
            let want_w = &r.get(&format!("router.{l}.weights")).f32;
            let k = r.get(&format!("router.{l}.experts")).shape[1];
            for pos in 0..t {
                for slot in 0..k {
                    let e = want_e[pos * k + slot] as u32;
                    let j = (0..k).find(|&j| experts[pos * k + j] == e).unwrap_or_else(|| {
                        panic!(
                            "{case}: layer {l} position {pos}: expert {e} selected by transformers but not by RouteLab ({:?})",
                            &experts[pos * k..pos * k + k]
                        )
                    });
                    let (g, w) = (weights[pos * k + j], want_w[pos * k + slot]);
                    assert!((g - w).abs() <= PROBS_TOL, "{case}: layer {l} position {pos} expert {e}: weight {g} vs {w}");
                }
            }
        }
        // Statistics are derived from the same probabilities the reference checks.
        let ent = get(Quantity::AttnEntropy).unwrap().dims().to_vec();
        assert_eq!(ent, vec![t, model.config.attention.num_heads], "{case}: entropy shape");
    }

    // KV-cache path: prefill half, then one token at a time, each step's logits against the
    // full forward's reference row.
    // (LongRoPE picks its factors per call from the last position, as transformers does, so
    // the prefill must already reach past the original length to match the full forward.)
    let prefill = match &model.config.rope.scaling {
        routelab_model::config::RopeScaling::LongRope { original_max_position_embeddings: o, .. } if *o < t => o + 1,
        _ => t / 2,
    };
    let mut cache = model.new_cache();
    let none = CaptureSpec::none().plan(model.config.num_layers);
    let opts = ForwardOptions::new(&none);
    let v = model.config.vocab_size;
    let ref_logits = &r.get("logits").f32;
    let o = model.forward(&ids[..prefill], &mut cache, &opts).unwrap();
    check_close(case, "prefill last logits", &vec_f32(&o.logits), &ref_logits[(prefill - 1) * v..prefill * v], LOGITS_TOL);
    for pos in prefill..t {
        let o = model.forward(&ids[pos..pos + 1], &mut cache, &opts).unwrap();
        check_close(case, &format!("cached decode logits at {pos}"), &vec_f32(&o.logits), &ref_logits[pos * v..(pos + 1) * v], LOGITS_TOL);
    }

    // Greedy generation matches model.generate().
    let prompt = r.ids("generate.prompt");
    let want = r.ids("generate.tokens");
    let mut cache = model.new_cache();
    let mut next = prompt.clone();
    let mut got = vec![];
    for _ in 0..want.len() {
        let o = model.forward(&next, &mut cache, &opts).unwrap();
        let tok = o.logits.flatten_all().unwrap().argmax(0).unwrap().to_scalar::<u32>().unwrap();
        got.push(tok);
        next = vec![tok];
    }
    assert_eq!(got, want, "{case}: greedy generation");

    check_interventions(case, &model, &r, &ids);
}

fn check_interventions(case: &str, model: &Model, r: &Reference, ids: &[u32]) {
    let specs: serde_json::Value = serde_json::from_str(r.metadata.get("interventions").expect("interventions metadata")).unwrap();
    let specs = specs.as_object().unwrap();
    assert!(!specs.is_empty(), "{case}: no intervention references");
    let logits_only = CaptureSpec::items(&["logits"]);
    for (name, spec) in specs {
        let field = |k: &str| spec[k].as_u64().unwrap_or_else(|| panic!("{case}: {name}: no {k}")) as usize;
        let layer = field("layer");
        let iv = match spec["kind"].as_str().unwrap() {
            "expert_reroute" => Intervention::Expert { layer, expert: field("expert"), method: ExpertMethod::Reroute },
            "expert_drop" => Intervention::Expert { layer, expert: field("expert"), method: ExpertMethod::Drop },
            "shared_expert_mute" => Intervention::SharedExpert { layer },
            "dense_residual_mute" => Intervention::DenseResidual { layer },
            "head_zero" => Intervention::Head { layer, head: field("head"), method: HeadMethod::Zero },
            "head_uniform" => Intervention::Head { layer, head: field("head"), method: HeadMethod::Uniform },
            "head_scale" => Intervention::Head {
                layer,
                head: field("head"),
                method: HeadMethod::Scale { factor: spec["scale"].as_f64().unwrap() as f32 },
            },
            "head_mean" => {
                let head = field("head");
                // The reference mean: this head's output averaged over the plain run's positions.
                let plain = run(model, ids, &CaptureSpec::none(), &Interventions::default(), &Layers::Only(vec![layer]));
                let per_head = plain.layers[layer].head_outputs.as_ref().unwrap(); // [T, H, dv]
                let mean = per_head.narrow(1, head, 1).unwrap().mean(0).unwrap();
                Intervention::Head { layer, head, method: HeadMethod::Mean { reference: vec_f32(&mean) } }
            }
            other => panic!("{case}: unknown intervention kind {other}"),
        };
        let out = run(model, ids, &logits_only, &Interventions::new(vec![iv.clone()]), &Layers::None);
        check_close(
            case,
            &format!("intervention {name} ({})", iv.label()),
            &vec_f32(&out.logits),
            &r.get(&format!("iv.{name}.logits")).f32,
            LOGITS_TOL,
        );
    }
}

macro_rules! family_tests {
    ($($case:ident),*) => {$(
        #[test]
        fn $case() {
            check_case(stringify!($case));
        }
    )*};
}

family_tests!(
    llama,
    mistral,
    qwen2,
    qwen3,
    phi3,
    phi3_longrope,
    mixtral,
    qwen2_moe,
    qwen3_moe,
    olmoe,
    phimoe,
    deepseek_v2,
    deepseek_v3,
    dbrx,
    arctic
);

#[test]
fn every_fixture_case_has_a_test() {
    let listed = [
        "llama",
        "mistral",
        "qwen2",
        "qwen3",
        "phi3",
        "phi3_longrope",
        "mixtral",
        "qwen2_moe",
        "qwen3_moe",
        "olmoe",
        "phimoe",
        "deepseek_v2",
        "deepseek_v3",
        "dbrx",
        "arctic",
    ];
    assert_eq!(cases(), {
        let mut v: Vec<String> = listed.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    });
}

#[test]
fn empty_interventions_are_bit_identical_to_the_plain_forward() {
    // Resolved per-layer edits of an empty set (every layer present, nothing to do) must take
    // the same arithmetic as passing no edits at all.
    for case in ["mixtral", "qwen2_moe", "deepseek_v3", "arctic", "llama"] {
        let model = load_model(case);
        let ids = Reference::load(case).ids("input_ids");
        let spec = CaptureSpec::all().plan(model.config.num_layers);
        let empty = Interventions::default();
        let resolved: Vec<_> = (0..model.config.num_layers).map(|l| empty.for_layer(l, &model.config)).collect();
        let mut c1 = model.new_cache();
        let mut c2 = model.new_cache();
        let plain = model.forward(&ids, &mut c1, &ForwardOptions::new(&spec)).unwrap();
        let with = model.forward(&ids, &mut c2, &ForwardOptions { edits: &resolved, ..ForwardOptions::new(&spec) }).unwrap();
        assert_eq!(vec_f32(&plain.logits), vec_f32(&with.logits), "{case}");
        for (a, b) in plain.layers.iter().zip(&with.layers) {
            let probs = |x: &routelab_model::capture::LayerCapture| vec_f32(&x.get(Quantity::AttnProbs).unwrap().unwrap());
            assert_eq!(probs(a), probs(b), "{case}");
        }
    }
}
