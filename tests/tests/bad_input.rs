//! Bad input gets a clear error naming the file, tensor or field, never a panic.

use std::path::Path;

use candle_core::{DType, Device};
use routelab_model::checkpoint;
use routelab_model::decoder::Model;
use routelab_model::interventions::{ExpertMethod, Intervention, Interventions};
use routelab_model::sampling::SamplingSettings;
use routelab_model::session::{LoadOptions, RunRequest, Session};
use routelab_model::source::ModelSource;
use routelab_tests::*;

fn load_err(dir: &Path) -> String {
    match checkpoint::open_dir(dir, DType::F32, &Device::Cpu).and_then(|ck| Model::load(ck.config, &ck.weights, &mut |_, _| true)) {
        Ok(_) => panic!("{} loaded although it is broken", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_config_names_config_json() {
    let d = copy_case("llama");
    std::fs::remove_file(d.path().join("config.json")).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("config.json") && e.contains("missing"), "{e}");
}

#[test]
fn missing_weights_say_what_was_looked_for() {
    let d = copy_case("llama");
    std::fs::remove_file(d.path().join("model.safetensors")).unwrap();
    std::fs::remove_file(d.path().join("reference.safetensors")).unwrap();
    std::fs::remove_file(d.path().join("causal.safetensors")).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("no weights found") && e.contains("model.safetensors"), "{e}");
}

#[test]
fn unknown_model_type_lists_the_supported_ones() {
    let d = copy_case("llama");
    edit_config(d.path(), |v| v["model_type"] = "gpt_neox_9000".into());
    let e = load_err(d.path());
    assert!(e.contains("config.json") && e.contains("gpt_neox_9000") && e.contains("mixtral") && e.contains("deepseek_v3"), "{e}");
}

#[test]
fn config_with_a_bad_field_names_the_field() {
    let d = copy_case("mixtral");
    edit_config(d.path(), |v| v["num_local_experts"] = "eight".into());
    let e = load_err(d.path());
    assert!(e.contains("num_local_experts") && e.contains("integer"), "{e}");
    let d = copy_case("mixtral");
    edit_config(d.path(), |v| {
        v.as_object_mut().unwrap().remove("num_experts_per_tok");
    });
    let e = load_err(d.path());
    assert!(e.contains("num_experts_per_tok") && e.contains("missing"), "{e}");
    let d = copy_case("llama");
    std::fs::write(d.path().join("config.json"), "{ not json").unwrap();
    let e = load_err(d.path());
    assert!(e.contains("config.json") && e.contains("JSON"), "{e}");
}

/// A config.json that declares a billion layers once aborted the process on a 16 GB
/// allocation for its per-layer table; it is refused before anything is allocated.
#[test]
fn absurd_sizes_in_config_are_refused_before_allocating() {
    let d = copy_case("mixtral");
    edit_config(d.path(), |v| v["num_hidden_layers"] = 1_000_000_000u64.into());
    let e = load_err(d.path());
    assert!(e.contains("config.json") && e.contains("num_hidden_layers is 1000000000") && e.contains("up to 4096 layers"), "{e}");
}

/// A config.json far larger than any real one is refused by its size before it is read.
#[test]
fn an_oversized_config_is_refused_by_its_size() {
    let d = copy_case("llama");
    let p = d.path().join("config.json");
    let mut text = std::fs::read_to_string(&p).unwrap();
    text.push_str(&" ".repeat(17 << 20));
    std::fs::write(&p, text).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("config.json") && e.contains("larger than any config.json"), "{e}");
}

/// Nothing in a model directory is executed: a config asking for the repository's own code
/// says so instead of "unknown model_type".
#[test]
fn a_config_that_needs_remote_code_says_it_is_not_run() {
    let d = copy_case("llama");
    edit_config(d.path(), |v| {
        v["model_type"] = "custom_moe".into();
        v["auto_map"] = serde_json::json!({ "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM" });
    });
    let e = load_err(d.path());
    assert!(e.contains("config.json") && e.contains("modeling_custom.CustomForCausalLM") && e.contains("runs no code"), "{e}");
}

/// A shard index cannot make RouteLab read files outside the model's directory.
#[test]
fn a_shard_index_cannot_point_outside_the_model_directory() {
    for shard in ["../outside.safetensors", "/etc/passwd"] {
        let d = copy_case("llama");
        let index = serde_json::json!({ "weight_map": { "model.embed_tokens.weight": shard } });
        std::fs::write(d.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
        let e = load_err(d.path());
        assert!(e.contains("model.safetensors.index.json") && e.contains(shard), "{e}");
    }
}

#[test]
fn a_tensor_with_the_wrong_shape_is_named_with_both_shapes() {
    let d = copy_case("llama");
    // The config claims a wider MLP than the weights have.
    edit_config(d.path(), |v| v["intermediate_size"] = 999.into());
    let e = load_err(d.path());
    assert!(e.contains("model.layers.0.mlp.gate_proj.weight") && e.contains("999") && e.contains("model.safetensors"), "{e}");
}

#[test]
fn a_missing_tensor_is_named() {
    let d = copy_case("mixtral");
    // Rewrite the checkpoint without one expert's down projection.
    let p = d.path().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let gone = "model.layers.1.block_sparse_moe.experts.3.w2.weight";
    let kept: Vec<(String, safetensors::tensor::TensorView)> = st.tensors().into_iter().filter(|(n, _)| n != gone).collect();
    std::fs::write(&p, safetensors::tensor::serialize(kept, None).unwrap()).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("missing tensor") && e.contains(gone), "{e}");
    // A router whose size disagrees with the config is a shape error naming both.
    let d = copy_case("mixtral");
    edit_config(d.path(), |v| v["num_local_experts"] = 5.into());
    let e = load_err(d.path());
    assert!(e.contains("block_sparse_moe.gate.weight") && e.contains("[4, 64]") && e.contains("[5, 64]"), "{e}");
}

#[test]
fn a_truncated_safetensors_file_is_reported_as_truncated() {
    let d = copy_case("llama");
    let p = d.path().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("model.safetensors") && e.contains("truncated"), "{e}");
    std::fs::write(&p, &bytes[..5]).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("model.safetensors") && e.contains("not a safetensors file"), "{e}");
}

#[test]
fn a_corrupt_gguf_names_the_file() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("broken.gguf");
    std::fs::write(&p, b"GGUF\x03\x00\x00\x00 this is not really a gguf file").unwrap();
    let e =
        Session::load(&ModelSource::Gguf(p.clone()), &LoadOptions::default(), &mut |_| {}).err().expect("corrupt GGUF loaded").to_string();
    assert!(e.contains("broken.gguf") && e.contains("GGUF"), "{e}");
    std::fs::write(&p, b"not even a magic number").unwrap();
    let e = Session::load(&ModelSource::Gguf(p), &LoadOptions::default(), &mut |_| {}).err().unwrap().to_string();
    assert!(e.contains("broken.gguf"), "{e}");
}

#[test]
fn a_truncated_gguf_names_the_file() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("cut.gguf");
    let bytes = std::fs::read(smollm2_gguf()).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 3]).unwrap();
    for opts in [LoadOptions::default(), LoadOptions::parse("cpu", None).unwrap()] {
        // Dequantised, and kept in blocks (mapped): either way the first tensor past the end
        // is named, before anything reads past the file.
        let e = Session::load(&ModelSource::Gguf(p.clone()), &opts, &mut |_| {}).err().expect("truncated GGUF loaded").to_string();
        assert!(e.contains("cut.gguf") && e.contains("tensor \"") && e.contains("truncated"), "{e}");
    }
}

#[test]
fn a_gguf_tensor_of_impossible_size_names_the_file_and_tensor() {
    // A converter-written file whose header then claims [2^40, 2^40] for one tensor: 2^80
    // elements, more than any address space. Refused at open (no product of the dims
    // overflows later, no allocation follows from them).
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("huge.gguf");
    let mut bytes = std::fs::read(fixtures().join("gguf").join("qwen2.f32.gguf")).unwrap();
    let name = b"blk.0.attn_q.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).expect("tensor name in the header") + name.len();
    assert_eq!(u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()), 2, "a matrix");
    for dim in 0..2 {
        let o = at + 4 + 8 * dim;
        bytes[o..o + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    }
    std::fs::write(&p, &bytes).unwrap();
    for opts in [LoadOptions::default(), LoadOptions::parse("cpu", None).unwrap()] {
        let e = Session::load(&ModelSource::Gguf(p.clone()), &opts, &mut |_| {}).err().expect("impossible tensor loaded").to_string();
        assert!(e.contains("huge.gguf") && e.contains("blk.0.attn_q.weight") && e.contains("no file can hold"), "{e}");
    }
    let Err(e) = Session::inspect(&ModelSource::Gguf(p), &LoadOptions::default()) else { panic!("impossible tensor inspected") };
    assert!(e.to_string().contains("blk.0.attn_q.weight"), "{e}");
}

fn fixture_session(case: &str) -> Session {
    Session::load(&ModelSource::Dir(case_dir(case)), &LoadOptions::default(), &mut |_| {}).unwrap()
}

/// The capture estimate a run is checked against is what the run then records, per
/// quantity, on dense, MoE, shared-expert and dense-residual families (probabilities counted
/// as the trace file holds them, `[H, T, T]`).
#[test]
fn capture_estimates_are_what_runs_record() {
    use routelab_model::capture::CaptureSpec;
    use routelab_model::capture_size;
    use routelab_model::hooks::HookPoint;
    for case in ["llama", "mixtral", "qwen2_moe", "arctic", "deepseek_v3"] {
        let s = fixture_session(case);
        let request =
            RunRequest { max_new_tokens: 3, ..RunRequest::forward(vec![5, 6, 7, 8, 9], CaptureSpec::all(), Interventions::default()) };
        let record = s.run(&request, &mut |_| true).unwrap();
        let t = record.store.len();
        assert_eq!(t, 8, "{case}");
        let mut recorded: std::collections::BTreeMap<&str, u64> = Default::default();
        for (hook, stored) in record.store.iter() {
            let (name, values) = match hook {
                HookPoint::Logits => ("logits", (t * s.config().vocab_size) as u64),
                HookPoint::Layer { quantity, layer } if quantity.name() == "attn.probs" => {
                    (quantity.name(), (record.store.heads(*layer) * t * t) as u64)
                }
                HookPoint::Layer { quantity, .. } => (quantity.name(), stored.row_shape.iter().product::<usize>().max(1) as u64 * t as u64),
                _ => continue,
            };
            *recorded.entry(name).or_default() += values * 4;
        }
        let plan = CaptureSpec::all().plan(s.config().num_layers);
        let estimated: std::collections::BTreeMap<&str, u64> = capture_size::estimate(&plan, s.config(), t).into_iter().collect();
        assert_eq!(estimated, recorded, "{case}");
        // Refused against a limit below it, with the largest parts named and the way out.
        let total: u64 = estimated.values().sum();
        let e = capture_size::check_within(&plan, s.config(), t, Some((total - 1, "a test limit".into()))).unwrap_err().to_string();
        assert!(
            e.contains("the capture of 8 positions would take") && e.contains("a test limit") && e.contains("ROUTELAB_TRACE_LIMIT"),
            "{e}"
        );
        capture_size::check_within(&plan, s.config(), t, Some((total, "a test limit".into()))).unwrap();
    }
}

/// Full attention probabilities over a long prompt are refused before the run starts.
#[test]
fn a_capture_that_would_not_fit_is_refused_before_running() {
    use routelab_model::capture::CaptureSpec;
    use routelab_model::capture_size;
    let s = fixture_session("llama");
    let plan = CaptureSpec::items(&["probs"]).plan(s.config().num_layers);
    let e = capture_size::check_within(&plan, s.config(), 1 << 20, Some((1 << 30, "the memory available".into()))).unwrap_err().to_string();
    assert!(e.contains("attn.probs") && e.contains("probs:0-3") && e.contains("GiB"), "{e}");
}

#[test]
fn a_prompt_longer_than_the_context_window_is_refused() {
    let s = fixture_session("llama");
    let max = s.config().max_position_embeddings;
    let req = RunRequest {
        tokens: vec![5; max + 1],
        max_new_tokens: 1,
        sampling: SamplingSettings::default(),
        capture: Default::default(),
        interventions: Interventions::default(),
        stop_at_eos: true,
        replay: None,
    };
    let e = s.run(&req, &mut |_| true).expect_err("overlong prompt ran").to_string();
    assert!(e.contains(&format!("{} tokens", max + 1)) && e.contains(&format!("context window of {max}")), "{e}");
}

#[test]
fn interventions_outside_the_model_are_refused_with_the_reason() {
    let s = fixture_session("qwen2_moe");
    let bad = |i: Intervention| Interventions::new(vec![i]).validate(s.config()).expect_err("accepted").to_string();
    assert!(bad(Intervention::Expert { layer: 9, expert: 0, method: ExpertMethod::Drop }).contains("3 layers"));
    assert!(bad(Intervention::Expert { layer: 0, expert: 99, method: ExpertMethod::Drop }).contains("8 experts"));
    // Layer 1 of this fixture is dense (mlp_only_layers).
    assert!(bad(Intervention::Expert { layer: 1, expert: 0, method: ExpertMethod::Drop }).contains("dense"));
    assert!(bad(Intervention::DenseResidual { layer: 0 }).contains("no dense residual"));
    // Rerouting away all but one expert of a top-2 router leaves nothing to route to.
    let all: Vec<Intervention> = (0..7).map(|e| Intervention::Expert { layer: 0, expert: e, method: ExpertMethod::Reroute }).collect();
    assert!(Interventions::new(all).validate(s.config()).is_err());
}

#[test]
fn token_ids_outside_the_vocabulary_are_refused() {
    let s = fixture_session("llama");
    let req = RunRequest::forward(vec![1, 100_000], Default::default(), Interventions::default());
    let e = s.run(&req, &mut |_| true).err().unwrap().to_string();
    assert!(e.contains("100000") && e.contains("vocabulary"), "{e}");
}

#[test]
fn an_unknown_model_name_explains_the_accepted_forms() {
    let e = ModelSource::parse("definitely-not-a-model").unwrap_err().to_string();
    assert!(e.contains("bundled") && e.contains("owner/name"), "{e}");
}

/// A model larger than the memory available is refused before any weight is read, with the
/// numbers and the options (the limit is passed in, as `ROUTELAB_MEMORY_LIMIT` would set it).
#[test]
fn a_model_larger_than_memory_is_refused_with_the_numbers() {
    use routelab_model::memory::{check, Available};
    let dir = case_dir("mixtral");
    let ck = checkpoint::open_dir(&dir, DType::F32, &Device::Cpu).unwrap();
    let (resident, _) = ck.weights.resident_bytes();
    let params: usize =
        ck.weights.names().iter().filter_map(|n| ck.weights.shape(n)).filter(|s| s.len() == 2).map(|s| s.iter().product::<usize>()).sum();
    // Every matrix in f32, vectors in f32 too.
    assert!(resident >= params * 4 && resident < params * 4 + 64 * 1024, "{resident} bytes for {params} matrix parameters");
    let small = Available { bytes: 1 << 20, source: "the test's limit".into() };
    let err = check(&dir, &ck.weights, Some(&small)).unwrap_err().to_string();
    assert!(
        err.contains(&dir.display().to_string()) && err.contains("needs about") && err.contains("the test's limit is 0.00 GiB"),
        "{err}"
    );
    assert!(err.contains("--dtype bf16") && err.contains("Q4_K_M") && err.contains("another device"), "{err}");
    let large = Available { bytes: 1 << 40, source: "plenty".into() };
    check(&dir, &ck.weights, Some(&large)).unwrap();
    check(&dir, &ck.weights, None).unwrap();
}
