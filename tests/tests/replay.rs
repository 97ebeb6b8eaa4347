//! Routing replay: MoE layers taking their expert selection (and optionally weights) from a
//! recorded run. Replaying a run's own routing reproduces it bit for bit; replaying another
//! prompt's routing in some layers changes exactly those layers' routing.

use std::sync::Arc;

use routelab_model::capture::CaptureSpec;
use routelab_model::hooks::{HookPoint, Quantity};
use routelab_model::interventions::Interventions;
use routelab_model::replay::RoutingReplay;
use routelab_model::sampling::SamplingSettings;
use routelab_model::session::{LoadOptions, Prompt, RunRecord, RunRequest, Session};
use routelab_model::source::ModelSource;
use routelab_model::store::CaptureStore;
use routelab_tests::*;

fn fixture(case: &str) -> Session {
    Session::load(&ModelSource::Dir(case_dir(case)), &LoadOptions::default(), &mut |_| {}).unwrap()
}

fn run(s: &Session, tokens: Vec<u32>, new_tokens: usize, replay: Option<RoutingReplay>) -> RunRecord {
    let req = RunRequest {
        tokens,
        max_new_tokens: new_tokens,
        sampling: SamplingSettings::default(),
        capture: CaptureSpec::all(),
        interventions: Interventions::default(),
        stop_at_eos: false,
        replay: replay.map(Arc::new),
    };
    s.run(&req, &mut |_| true).unwrap()
}

fn experts(store: &CaptureStore, l: usize) -> &[u32] {
    store.layer_u32(l, Quantity::RouterExperts).unwrap()
}

/// Every family's routing scheme (softmax top-k, sigmoid with correction bias and groups,
/// shared experts, sparsemixer, a dense residual): replaying a generation's own routing gives
/// the same tokens and every captured tensor bit for bit, with the weights recomputed from the
/// router scores or taken from the record.
#[test]
fn replaying_a_runs_own_routing_reproduces_it_bit_for_bit() {
    for case in ["mixtral", "qwen2_moe", "olmoe", "deepseek_v3", "phimoe", "arctic", "dbrx"] {
        let s = fixture(case);
        let tokens = Reference::load(case).ids("input_ids");
        let plain = run(&s, tokens.clone(), 6, None);
        for weights in [false, true] {
            // PhiMoE's sparsemixer weights follow its own selection order: they must be replayed.
            if case == "phimoe" && !weights {
                let replay = RoutingReplay::from_store(&plain.store, case, None, 0..usize::MAX, false).unwrap();
                let req = RunRequest {
                    replay: Some(Arc::new(replay)),
                    ..RunRequest::forward(tokens.clone(), CaptureSpec::none(), Interventions::default())
                };
                let e = s.run(&req, &mut |_| true).unwrap_err().to_string();
                assert!(e.contains("replay the weights too"), "{e}");
                continue;
            }
            let replay = RoutingReplay::from_store(&plain.store, case, None, 0..usize::MAX, weights).unwrap();
            let again = run(&s, tokens.clone(), 6, Some(replay));
            assert_eq!(again.store.tokens(), plain.store.tokens(), "{case} (weights replayed: {weights})");
            for (hook, stored) in plain.store.iter() {
                assert_eq!(again.store.get(hook), Some(stored), "{case} {hook} (weights replayed: {weights})");
            }
        }
        // And the replay is in force: the routing of the same tokens reversed, replayed here,
        // is what every layer selects.
        let reversed: Vec<u32> = tokens.iter().rev().copied().collect();
        let other = run(&s, reversed, 0, None);
        let replay = RoutingReplay::from_store(&other.store, case, None, 0..usize::MAX, true).unwrap();
        let forced = run(&s, tokens.clone(), 0, Some(replay));
        let moe: Vec<usize> = (0..s.config().num_layers).filter(|&l| s.config().moe(l).is_some()).collect();
        for &l in &moe {
            assert_eq!(experts(&forced.store, l), experts(&other.store, l), "{case} layer {l}");
        }
        assert!(moe.iter().any(|&l| experts(&other.store, l) != &experts(&plain.store, l)[..experts(&other.store, l).len()]), "{case}");
    }
}

/// Prompt Y with prompt X's routing in layers 2-3 of tiny-moe: layers 0 and 1 route exactly as
/// Y alone does, layers 2 and 3 select exactly X's experts at every position X recorded, and
/// the run records where its routing came from.
#[test]
fn replaying_another_prompts_routing_changes_exactly_the_replayed_layers() {
    let s = Session::load(&ModelSource::parse("tiny-moe").unwrap(), &LoadOptions::default(), &mut |_| {}).unwrap();
    let x = run(&s, s.encode(&Prompt::text("The following example shows a value")).unwrap(), 12, None);
    let y_tokens = s.encode(&Prompt::text("fn main() {")).unwrap();
    let y = run(&s, y_tokens.clone(), 0, None);
    let replay = RoutingReplay::from_store(&x.store, "x", Some(&[2, 3]), 0..usize::MAX, false).unwrap();
    let swapped = run(&s, y_tokens.clone(), 0, Some(replay.clone()));
    let n = y_tokens.len();
    assert!(x.store.len() > n);
    for l in 0..2 {
        assert_eq!(experts(&swapped.store, l), experts(&y.store, l), "layer {l} is not replayed");
        let hidden = HookPoint::layer(l, Quantity::Hidden);
        assert_eq!(swapped.store.get(&hidden), y.store.get(&hidden), "layer {l}'s output is Y's");
    }
    for l in 2..4 {
        let k = s.config().moe(l).unwrap().routing.top_k;
        assert_eq!(experts(&swapped.store, l), &experts(&x.store, l)[..n * k], "layer {l} takes X's routing");
    }
    assert_ne!(experts(&swapped.store, 2), experts(&y.store, 2), "the prompts route differently, or the test means nothing");
    let summary = replay.summary();
    assert_eq!((summary.layers, summary.positions, summary.weights), (vec![2, 3], (0, x.store.len()), false));
    let trace = routelab_probes::trace::Trace::from_run(swapped, "tiny-moe", s.config(), "fn main() {");
    let back = routelab_probes::trace::Trace::from_bytes(&trace.to_bytes().unwrap(), std::path::Path::new("t")).unwrap();
    assert_eq!(back.meta.replay, Some(replay.summary()));
}

/// Routing recorded in another setting (f32 weights) replayed in bf16: the bf16 run selects the
/// f32 run's experts everywhere, and only the positions range asked for is replayed.
#[test]
fn routing_recorded_in_f32_replays_in_bf16_over_the_positions_asked() {
    let load = |dtype: &str| {
        Session::load(&ModelSource::parse("tiny-moe").unwrap(), &LoadOptions::parse("cpu", Some(dtype)).unwrap(), &mut |_| {}).unwrap()
    };
    let (f32s, bf16) = (load("f32"), load("bf16"));
    let tokens = f32s.encode(&Prompt::text("Once upon a time there was a little")).unwrap();
    let recorded = run(&f32s, tokens.clone(), 0, None);
    let all = RoutingReplay::from_store(&recorded.store, "f32", None, 0..usize::MAX, false).unwrap();
    let replayed = run(&bf16, tokens.clone(), 0, Some(all));
    for l in 0..6 {
        assert_eq!(experts(&replayed.store, l), experts(&recorded.store, l), "layer {l}");
    }
    // Positions 2..4 only: the rest routes as bf16 itself does.
    let own = run(&bf16, tokens.clone(), 0, None);
    let some = RoutingReplay::from_store(&recorded.store, "f32", Some(&[0]), 2..4, false).unwrap();
    let part = run(&bf16, tokens.clone(), 0, Some(some));
    let k = 2;
    let (got, rec, mine) = (experts(&part.store, 0), experts(&recorded.store, 0), experts(&own.store, 0));
    assert_eq!(&got[..2 * k], &mine[..2 * k]);
    assert_eq!(&got[2 * k..4 * k], &rec[2 * k..4 * k]);
}

/// A replay that does not fit the model is refused with the reason.
#[test]
fn replays_that_do_not_fit_are_refused() {
    let mixtral = fixture("mixtral");
    let tokens = Reference::load("mixtral").ids("input_ids");
    let plain = run(&mixtral, tokens.clone(), 0, None);
    let e = RoutingReplay::from_store(&plain.store, "t.safetensors", Some(&[7]), 0..usize::MAX, false).unwrap_err();
    assert!(e.contains("t.safetensors has no routing for layer 7"), "{e}");
    let e = RoutingReplay::from_store(&plain.store, "t.safetensors", None, 100..200, false).unwrap_err();
    assert!(e.contains("none in 100..200"), "{e}");
    // Another model's routing: olmoe's expert ids run past mixtral's four experts.
    let olmoe = fixture("olmoe");
    let other = run(&olmoe, Reference::load("olmoe").ids("input_ids"), 0, None);
    let replay = RoutingReplay::from_store(&other.store, "olmoe.safetensors", Some(&[0]), 0..usize::MAX, false).unwrap();
    let req = RunRequest { replay: Some(Arc::new(replay)), ..RunRequest::forward(tokens, CaptureSpec::none(), Interventions::default()) };
    let e = mixtral.run(&req, &mut |_| true).unwrap_err().to_string();
    assert!(e.contains("routing replay from olmoe.safetensors: expert") && e.contains("in layer 0, which has 4 experts"), "{e}");
    // A dense model has no router to replay into.
    let dense = fixture("llama");
    let req = RunRequest {
        replay: Some(Arc::new(RoutingReplay::from_store(&plain.store, "m", None, 0..usize::MAX, false).unwrap())),
        ..RunRequest::forward(Reference::load("llama").ids("input_ids"), CaptureSpec::none(), Interventions::default())
    };
    let e = dense.run(&req, &mut |_| true).unwrap_err().to_string();
    assert!(e.contains("has no router"), "{e}");
}
