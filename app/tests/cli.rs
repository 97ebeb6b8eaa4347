//! The command line, end to end on fixture models.

mod common;

use std::path::PathBuf;
use std::process::Command;

use routelab_model::hooks::{HookPoint, Quantity};
use routelab_probes::trace::Trace;

fn fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models").join(case)
}

fn routelab(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_routelab")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn run_streams_text_summarises_expert_load_and_writes_a_trace() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("run.safetensors");
    let model = fixture("mixtral");
    let (ok, out, err) = routelab(&[
        "run",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "fn main() {",
        "--max-new-tokens",
        "6",
        "--mask-expert",
        "0:2:drop",
        "--mask-head",
        "1:0:mean",
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.starts_with("<|endoftext|>fn main() {"), "the prompt is echoed with its BOS: {out}");
    assert!(out.contains("expert load over all") && out.contains("balance"), "{out}");
    assert!(err.contains("interventions: layers.0.experts.2:drop, layers.1.attn.head.0:mean"), "{err}");
    let t = Trace::read(&trace).unwrap();
    assert_eq!(t.meta.interventions.items.len(), 2);
    assert_eq!(t.len(), t.meta.generated_from + 6);
    // Dropped expert 2 still shows in routing (routing unchanged) with weight 0.
    let r = t.router(0).unwrap();
    for (e, w) in r.experts.iter().zip(r.weights) {
        if *e == 2 {
            assert_eq!(*w, 0.0);
        }
    }
}

#[test]
fn forward_with_capture_all_writes_full_attention_hidden_states_and_logits() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f.safetensors");
    let model = fixture("llama");
    let (ok, _, err) = routelab(&[
        "forward",
        "--model",
        model.to_str().unwrap(),
        "--tokens",
        "5,6,7,8",
        "--out",
        out.to_str().unwrap(),
        "--capture",
        "all",
    ]);
    assert!(ok, "{err}");
    let t = Trace::read(&out).unwrap();
    assert_eq!(t.tokens(), [5, 6, 7, 8]);
    assert_eq!(t.f32(&HookPoint::Logits).unwrap().len(), 4 * 320);
    assert!(t.num_layers() > 0);
    let has = |l, q| t.contains(&HookPoint::layer(l, q));
    assert!((0..t.num_layers()).all(|l| has(l, Quantity::AttnProbs) && has(l, Quantity::Hidden) && has(l, Quantity::AttnEntropy)));
}

/// The captured sink and span against sums of the full probabilities of the same forward
/// (a sliding-window model, so some queries cannot see key 0 or the whole span).
#[test]
fn captured_sink_and_span_are_the_attention_mass_on_those_keys() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f.safetensors");
    let model = fixture("mistral");
    let tokens = "5,6,7,8,9,10,11,12,13";
    let (ok, _, err) = routelab(&[
        "forward",
        "--model",
        model.to_str().unwrap(),
        "--tokens",
        tokens,
        "--out",
        out.to_str().unwrap(),
        "--capture",
        "all,span:2-4",
    ]);
    assert!(ok, "{err}");
    let tr = Trace::read(&out).unwrap();
    let t = tr.len();
    assert!(tr.num_layers() > 0);
    for l in 0..tr.num_layers() {
        let h = tr.heads(l);
        let probs = tr.probs(l).unwrap().to_dense();
        let (sink, span) = (tr.layer_f32(l, Quantity::AttnSink).unwrap(), tr.layer_f32(l, Quantity::AttnSpan).unwrap());
        for head in 0..h {
            for q in 0..t {
                let row = &probs[head * t * t + q * t..head * t * t + (q + 1) * t];
                let want_span: f32 = row[2..=4].iter().sum();
                assert!(
                    (sink[q * h + head] - row[0]).abs() < 1e-6,
                    "layer {l} head {head} query {q}: sink {} vs {}",
                    sink[q * h + head],
                    row[0]
                );
                assert!(
                    (span[q * h + head] - want_span).abs() < 1e-5,
                    "layer {l} head {head} query {q}: span {} vs {want_span}",
                    span[q * h + head]
                );
            }
        }
    }
    let (ok, _, err) = routelab(&[
        "forward",
        "--model",
        model.to_str().unwrap(),
        "--tokens",
        tokens,
        "--out",
        out.to_str().unwrap(),
        "--capture",
        "span:4-2",
    ]);
    assert!(!ok && err.contains("ends before it starts"), "{err}");
}

/// `--replay-routing` of a run's own trace gives the same run; with `--replay-layers` on
/// another prompt, those layers select the trace's experts; the trace records the replay.
#[test]
fn run_replays_routing_from_a_trace() {
    let dir = tempfile::tempdir().unwrap();
    let (x, again, y) = (dir.path().join("x.safetensors"), dir.path().join("again.safetensors"), dir.path().join("y.safetensors"));
    let model = fixture("mixtral");
    let m = model.to_str().unwrap();
    let base = ["run", "--model", m, "--max-new-tokens", "5", "--capture", "router"];
    let (ok, out_x, err) = routelab(&[&base[..], &["--prompt", "fn main() {", "--trace", x.to_str().unwrap()]].concat());
    assert!(ok, "{err}");
    let replay = ["--replay-routing", x.to_str().unwrap()];
    let (ok, out_again, err) =
        routelab(&[&base[..], &["--prompt", "fn main() {", "--trace", again.to_str().unwrap()], &replay[..]].concat());
    assert!(ok, "{err}");
    assert_eq!(out_again.lines().next(), out_x.lines().next());
    let (tx, ta) = (Trace::read(&x).unwrap(), Trace::read(&again).unwrap());
    assert_eq!(ta.store, tx.store);
    assert_eq!(ta.meta.replay.as_ref().map(|r| r.layers.clone()), Some(vec![0, 1]));
    let (ok, _, err) =
        routelab(&[&base[..], &["--prompt", "hello", "--trace", y.to_str().unwrap(), "--replay-layers", "1"], &replay[..]].concat());
    assert!(ok, "{err}");
    let ty = Trace::read(&y).unwrap();
    let n = ty.len().min(tx.len());
    let k = ty.router(1).unwrap().top_k;
    assert_eq!(ty.router(1).unwrap().experts[..n * k], tx.router(1).unwrap().experts[..n * k]);
    let (ok, _, err) = routelab(&[&base[..], &["--prompt", "x", "--replay-layers", "5"], &replay[..]].concat());
    assert!(!ok && err.contains("has no routing for layer 5"), "{err}");
}

#[test]
fn bad_arguments_fail_with_a_message_not_a_panic() {
    let (ok, _, err) = routelab(&["run", "--model", "/no/such/model", "--prompt", "x"]);
    assert!(!ok && err.contains("/no/such/model") && !err.contains("panicked"), "{err}");
    let model = fixture("mixtral");
    let (ok, _, err) = routelab(&["run", "--model", model.to_str().unwrap(), "--prompt", "x", "--mask-expert", "0:9"]);
    assert!(!ok && err.contains("4 experts"), "{err}");
    let (ok, _, err) = routelab(&["forward", "--model", model.to_str().unwrap(), "--tokens", "1,x", "--out", "/tmp/never.safetensors"]);
    assert!(!ok && err.contains("\"x\""), "{err}");
    // A damaged file: the error names it, and a `hint:` line says what to do.
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        if model.join(f).exists() {
            std::fs::copy(model.join(f), dir.path().join(f)).unwrap();
        }
    }
    let weights = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let (ok, _, err) = routelab(&["run", "--model", dir.path().to_str().unwrap(), "--prompt", "x"]);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ") || l.starts_with("hint: ")).collect();
    assert!(!ok && lines.len() == 2, "{err}");
    assert!(lines[0].contains("model.safetensors") && lines[0].contains("truncated"), "{err}");
    assert_eq!(lines[1], "hint: the weights are damaged, incomplete or not a checkpoint: download them again");
}

/// A GGUF repo in a local Hugging Face cache, offline: `info` on the bare id lists its quants
/// (the projector beside them is not one), `repo:quant` loads one, and an absent quant or a
/// bare id with several quants is refused naming those there are.
#[test]
fn info_lists_a_gguf_repos_quants_and_a_quant_loads_from_the_cache_offline() {
    let cache = tempfile::tempdir().unwrap();
    common::gguf_repo_cache(cache.path());
    let routelab = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_routelab"))
            .args(args)
            .env("HF_HUB_CACHE", cache.path())
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, out, err) = routelab(&["info", "-m", common::GGUF_REPO]);
    assert!(ok, "{err}");
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("  ")).map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(rows, ["Q4_K_M", "Q8_0", "F32"], "{out}");
    assert!(out.contains("3 shards") && out.contains("--model someone/OLMoE-GGUF:Q4_K_M") && !out.contains("mmproj"), "{out}");
    let (ok, json, err) = routelab(&["info", "-m", common::GGUF_REPO, "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["quants"][2]["files"].as_array().map(Vec::len), Some(3), "{json}");

    let (ok, out, err) = routelab(&["info", "-m", "someone/OLMoE-GGUF:q8_0"]);
    assert!(ok, "{err}");
    assert!(out.contains("model        someone/OLMoE-GGUF:Q8_0") && out.contains("olmoe"), "{out}");

    let (ok, _, err) = routelab(&["info", "-m", "someone/OLMoE-GGUF:IQ4_XS"]);
    assert!(!ok && err.contains("no IQ4_XS quant") && err.contains("Q4_K_M, Q8_0, F32"), "{err}");
    let (ok, _, err) = routelab(&["run", "-m", common::GGUF_REPO, "--prompt", "x", "--max-new-tokens", "1"]);
    assert!(!ok && err.contains("several quants (Q4_K_M, Q8_0, F32)"), "{err}");
}
