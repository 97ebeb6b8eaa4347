//! Causal tools against transformers with PyTorch hooks (`tests/fixtures/causal.py`, format in
//! `tests/fixtures/FORMAT.md`): every block's output (per head, per expert), activation patching
//! at every kind of site, the logit lens, and direct logit attribution over heads and experts.

use routelab_model::capture::CaptureSpec;
use routelab_model::hooks::{HookPoint, Quantity};
use routelab_model::interventions::Interventions;
use routelab_model::patch::{Patch, Patches};
use routelab_model::session::{LoadOptions, RunRecord, RunRequest, Session};
use routelab_model::source::ModelSource;
use routelab_probes::analysis::attribution::{attribute_run, capture, AttributionSettings, Component};
use routelab_tests::*;

/// f32 activations and logits agree to 1e-4 (as the families' logits do).
const TOL: f32 = 1e-4;

fn fixture(case: &str) -> Session {
    Session::load(&ModelSource::Dir(case_dir(case)), &LoadOptions::default(), &mut |_| {}).unwrap()
}

fn causal(case: &str) -> Reference {
    Reference::load_file(&case_dir(case).join("causal.safetensors"))
}

fn forward(s: &Session, tokens: Vec<u32>, capture: CaptureSpec, patches: Option<&Patches>) -> RunRecord {
    s.run_patched(&RunRequest::forward(tokens, capture, Interventions::default()), patches, &mut |_| true).unwrap()
}

fn check_close(case: &str, what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{case}: {what}: length");
    let (d, i) = max_abs_diff(got, want);
    assert!(d <= tol, "{case}: {what}: max |Δ| = {d:e} at {i} (got {}, want {}), tolerance {tol:e}", got[i], want[i]);
}

/// Every block's output as transformers' hooks see it: heads before o_proj, attention and
/// feed-forward outputs, each selected expert's weighted output, shared experts, Arctic's
/// dense residual; and the token embeddings.
#[test]
fn block_outputs_match_transformers_hooks() {
    for case in cases() {
        let s = fixture(&case);
        let r = causal(&case);
        let run = forward(&s, r.ids("input_ids"), CaptureSpec::none().with("outputs"), None);
        let mut checked = 0;
        for (name, want) in &r.tensors {
            let Ok(hook) = name.parse::<HookPoint>() else { continue };
            let got = run.store.f32(&hook).unwrap_or_else(|| panic!("{case}: {name} not captured"));
            check_close(&case, name, got, &want.f32, TOL);
            checked += 1;
        }
        let l = s.config().num_layers;
        assert!(checked >= 3 * l, "{case}: only {checked} output tensors compared");
        let embed = s.model.embed(&r.ids("input_ids")).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        check_close(&case, "embed", &embed, &r.get("embed").f32, 0.0);
    }
}

/// One clean activation copied into the corrupted run at one (site, position), at every kind
/// of site (residual stream, attention output, a head, the MLP / MoE output, one expert
/// selected in the clean run only or in both, the shared expert, Arctic's dense residual):
/// the logits transformers gives with the same patch made by hooks.
#[test]
fn patched_runs_match_transformers_hooks() {
    for case in cases() {
        let s = fixture(&case);
        let r = causal(&case);
        let clean = forward(&s, r.ids("input_ids"), CaptureSpec::all(), None);
        let corrupt_ids = r.ids("corrupt_ids");
        let plain = forward(&s, corrupt_ids.clone(), CaptureSpec::none().with("logits"), None);
        check_close(&case, "corrupt.logits", plain.store.f32(&HookPoint::Logits).unwrap(), &r.get("corrupt.logits").f32, TOL);
        let patches: serde_json::Value = serde_json::from_str(&r.metadata["patches"]).unwrap();
        let patches = patches.as_object().unwrap();
        assert!(patches.len() >= 6, "{case}: {} patches", patches.len());
        for (name, spec) in patches {
            let site: HookPoint = spec["site"].as_str().unwrap().parse().unwrap();
            let position = spec["position"].as_u64().unwrap() as usize;
            let patch = Patch::from_store(&clean.store, site, position).unwrap();
            let patches = Patches::new(vec![patch], s.config()).unwrap();
            let run = forward(&s, corrupt_ids.clone(), CaptureSpec::none().with("logits"), Some(&patches));
            let got = run.store.f32(&HookPoint::Logits).unwrap();
            let want = &r.get(&format!("patch.{name}.logits")).f32;
            check_close(&case, &format!("patch {name} ({site}@{position})"), got, want, TOL);
            // The patch reached the logits: they moved from the corrupted run's by more than the
            // tolerance (causal.py keeps only patches that move them by > 1e-3).
            let (moved, _) = max_abs_diff(got, plain.store.f32(&HookPoint::Logits).unwrap());
            assert!(moved > 1e-3, "{case}: patch {name} changed nothing");
        }
    }
}

/// The logit lens: the final norm and LM head on the residual stream after each layer.
#[test]
fn the_logit_lens_matches_transformers() {
    for case in cases() {
        let s = fixture(&case);
        let r = causal(&case);
        let run = forward(&s, r.ids("input_ids"), CaptureSpec::none().with("hidden"), None);
        let c = s.config();
        for l in 0..c.num_layers {
            let hidden = run.store.layer_f32(l, Quantity::Hidden).unwrap();
            let t = hidden.len() / c.hidden_size;
            let x = candle_core::Tensor::from_slice(hidden, (t, c.hidden_size), &candle_core::Device::Cpu).unwrap();
            let got = s.model.unembed(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            check_close(&case, &format!("lens.{l}.logits"), &got, &r.get(&format!("lens.{l}.logits")).f32, TOL);
        }
    }
}

/// Direct logit attribution at the last position: each head, each selected expert, the shared
/// expert, the dense residual, dense MLPs, biases and the embedding, through the final norm
/// with its scale frozen, as computed independently in PyTorch; and the parts sum to the logit.
#[test]
fn logit_attribution_matches_transformers_and_sums_to_the_logit() {
    for case in cases() {
        let s = fixture(&case);
        let r = causal(&case);
        let run = forward(&s, r.ids("input_ids"), capture(), None);
        let target = r.get("dla.target").i64[0] as u32;
        let text = s.tokenizer.decode(&[target], false).unwrap();
        // The fixture's target is the model's top token, attribute's default.
        let a = attribute_run(&s, &run, &AttributionSettings::default()).unwrap();
        assert_eq!(a.target, target, "{case}: target {text:?}");
        let c = s.config();
        let (l_n, h_n) = (c.num_layers, c.attention.num_heads);
        let e_n = r.get("dla.experts").shape[1];
        let mut heads = vec![0f32; l_n * h_n];
        let mut experts = vec![0f32; l_n * e_n];
        let (mut attn_bias, mut mlp, mut shared, mut dense) = (vec![0f32; l_n], vec![0f32; l_n], vec![0f32; l_n], vec![0f32; l_n]);
        let (mut embed, mut bias) = (0f32, 0f32);
        for contribution in &a.components {
            let v = &contribution.value;
            match contribution.component {
                Component::Embed => embed = *v,
                Component::Bias => bias = *v,
                Component::Head { layer, head } => heads[layer * h_n + head] = *v,
                Component::AttnBias { layer } => attn_bias[layer] = *v,
                Component::Mlp { layer } => mlp[layer] = *v,
                Component::Expert { layer, expert, .. } => experts[layer * e_n + expert] = *v,
                Component::Shared { layer } => shared[layer] = *v,
                Component::Dense { layer } => dense[layer] = *v,
            }
        }
        let tol = 1e-4;
        check_close(&case, "dla.scale", &[a.scale], &r.get("dla.scale").f32, 1e-4);
        check_close(&case, "dla.logit", &[a.logit], &r.get("dla.logit").f32, tol);
        check_close(&case, "dla.embed", &[embed], &r.get("dla.embed").f32, tol);
        check_close(&case, "dla.bias", &[bias], &r.get("dla.bias").f32, tol);
        check_close(&case, "dla.heads", &heads, &r.get("dla.heads").f32, tol);
        check_close(&case, "dla.attn_bias", &attn_bias, &r.get("dla.attn_bias").f32, tol);
        check_close(&case, "dla.mlp", &mlp, &r.get("dla.mlp").f32, tol);
        check_close(&case, "dla.experts", &experts, &r.get("dla.experts").f32, tol);
        check_close(&case, "dla.shared", &shared, &r.get("dla.shared").f32, tol);
        check_close(&case, "dla.dense", &dense, &r.get("dla.dense").f32, tol);
        assert!(a.residual.abs() <= 1e-4 * (1.0 + a.logit.abs()), "{case}: the parts miss the logit by {}", a.residual);
        // The lens's last layer is the model's own prediction.
        let last = a.lens.last().unwrap();
        assert_eq!(last.target_rank, 0, "{case}");
    }
}
