//! Weight formats and model sources: sharded checkpoints, f16/bf16 weights, the local Hugging
//! Face cache, bundled names.

use std::collections::BTreeMap;
use std::path::Path;

use routelab_model::capture::CaptureSpec;
use routelab_model::decoder::ForwardOptions;
use routelab_model::hooks::{HookPoint, Quantity};
use routelab_model::hub::{Hub, Origin};
use routelab_model::session::{LoadOptions, Session};
use routelab_model::source::ModelSource;
use routelab_tests::*;
use safetensors::tensor::{Dtype, TensorView};

fn copy_case(case: &str, skip_weights: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(case_dir(case)).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if skip_weights && name.ends_with(".safetensors") {
            continue;
        }
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    dir
}

/// The fixture's weights as (name, shape, f32 values).
fn weights(case: &str) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(case_dir(case).join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.shape().to_vec(), t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn write_st(path: &Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView)> =
        tensors.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    std::fs::write(path, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn logits(dir: &Path) -> Vec<f32> {
    logits_with(dir, &LoadOptions::default())
}

fn logits_with(dir: &Path, opts: &LoadOptions) -> Vec<f32> {
    let s = Session::load(&ModelSource::Dir(dir.to_path_buf()), opts, &mut |_| {}).unwrap();
    let ids = Reference::load("llama").ids("input_ids");
    let spec = CaptureSpec::items(&["logits"]).plan(s.model.config.num_layers);
    let mut cache = s.model.new_cache();
    let out = s.model.forward(&ids, &mut cache, &ForwardOptions::new(&spec)).unwrap();
    out.logits.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn a_sharded_checkpoint_loads_like_the_single_file() {
    let dir = copy_case("llama", true);
    let w = weights("llama");
    let mut map = BTreeMap::new();
    let (mut a, mut b) = (vec![], vec![]);
    for (i, (n, s, v)) in w.iter().enumerate() {
        let shard = if i % 2 == 0 { "model-00001-of-00002.safetensors" } else { "model-00002-of-00002.safetensors" };
        map.insert(n.clone(), shard);
        let entry = (n.clone(), Dtype::F32, s.clone(), f32_bytes(v));
        if i % 2 == 0 {
            a.push(entry)
        } else {
            b.push(entry)
        }
    }
    write_st(&dir.path().join("model-00001-of-00002.safetensors"), &a);
    write_st(&dir.path().join("model-00002-of-00002.safetensors"), &b);
    std::fs::write(dir.path().join("model.safetensors.index.json"), serde_json::json!({"metadata": {}, "weight_map": map}).to_string())
        .unwrap();
    assert_eq!(logits(dir.path()), logits(&case_dir("llama")));
}

#[test]
fn half_precision_weights_are_widened_exactly() {
    // The same weights rounded to bf16 (or f16) must give bit-identical results whether the
    // file stores them as bf16 or as the f32 values they widen to.
    for (dtype, round) in [
        (Dtype::BF16, (|x: f32| half::bf16::from_f32(x).to_f32()) as fn(f32) -> f32),
        (Dtype::F16, |x: f32| half::f16::from_f32(x).to_f32()),
    ] {
        let w = weights("llama");
        let narrow = copy_case("llama", true);
        let widened = copy_case("llama", true);
        let narrow_t: Vec<_> = w
            .iter()
            .map(|(n, s, v)| {
                let bytes: Vec<u8> = match dtype {
                    Dtype::BF16 => v.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect(),
                    _ => v.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect(),
                };
                (n.clone(), dtype, s.clone(), bytes)
            })
            .collect();
        let wide_t: Vec<_> = w
            .iter()
            .map(|(n, s, v)| (n.clone(), Dtype::F32, s.clone(), f32_bytes(&v.iter().map(|&x| round(x)).collect::<Vec<_>>())))
            .collect();
        write_st(&narrow.path().join("model.safetensors"), &narrow_t);
        write_st(&widened.path().join("model.safetensors"), &wide_t);
        let (a, b) = (logits(narrow.path()), logits(widened.path()));
        assert_eq!(a, b, "{dtype:?}");
        if dtype == Dtype::BF16 {
            // Kept as bf16 on the CPU (`--dtype bf16`): the matrices stay bf16 in memory and are
            // widened in registers, activations stay f32, so the arithmetic is the f32 run's on
            // the widened weights, to the bit (at this length every product takes the same
            // kernel in both runs).
            let kept = LoadOptions::new(candle_core::Device::Cpu, candle_core::DType::BF16);
            let s = Session::load(&ModelSource::Dir(narrow.path().to_path_buf()), &kept, &mut |_| {}).unwrap();
            assert_eq!(s.info().dtype, "BF16");
            assert_eq!(logits_with(narrow.path(), &kept), b, "bf16 kept as bf16");
            // With no dtype asked for, a bf16 checkpoint stays bf16 (the stored precision)
            // and an f32 one f32; `--dtype f32` widens it.
            let default = LoadOptions::parse("cpu", None).unwrap();
            let dtype_of = |dir: &std::path::Path, o: &LoadOptions| {
                Session::load(&ModelSource::Dir(dir.to_path_buf()), o, &mut |_| {}).unwrap().info().dtype
            };
            assert_eq!(dtype_of(narrow.path(), &default), "BF16");
            assert_eq!(dtype_of(widened.path(), &default), "F32");
            assert_eq!(dtype_of(narrow.path(), &LoadOptions::parse("cpu", Some("f32")).unwrap()), "F32");
            assert_eq!(logits_with(narrow.path(), &default), b, "bf16 by default");
        } else {
            // f16 has no packed kernel: it loads as f32, which holds it exactly.
            let default = LoadOptions::parse("cpu", None).unwrap();
            let s = Session::load(&ModelSource::Dir(narrow.path().to_path_buf()), &default, &mut |_| {}).unwrap();
            assert_eq!(s.info().dtype, "F32");
        }
        // And rounding the weights really changed something.
        assert_ne!(a, logits(&case_dir("llama")));
    }
}

#[test]
fn hub_repo_ids_resolve_from_the_local_cache_offline() {
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("models--someone--tiny-llama");
    let snap = repo.join("snapshots").join("0123abcd");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), "0123abcd").unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(case_dir("llama").join(f), snap.join(f)).unwrap();
    }
    let hub = Hub::new(cache.path().to_path_buf(), true);
    assert_eq!(
        ModelSource::parse("someone/tiny-llama").unwrap(),
        ModelSource::HfRepo { repo: "someone/tiny-llama".into(), revision: None }
    );
    let dir = hub.fetch("someone/tiny-llama", None, &mut |_| {}).unwrap();
    assert_eq!(dir, snap);
    assert_eq!(logits(&dir), logits(&case_dir("llama")));
    let e = hub.fetch("someone/absent", None, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("someone/absent") && e.contains("HF_HUB_OFFLINE"), "{e}");
}

fn gguf_logits(path: &Path) -> Vec<f32> {
    let s = Session::load(&ModelSource::Gguf(path.to_path_buf()), &LoadOptions::default(), &mut |_| {}).unwrap();
    let ids = Reference::load("olmoe").ids("input_ids");
    let spec = CaptureSpec::items(&["logits"]).plan(s.model.config.num_layers);
    let out = s.model.forward(&ids, &mut s.model.new_cache(), &ForwardOptions::new(&spec)).unwrap();
    out.logits.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// A GGUF repo as llama.cpp's publishers lay one out (a quant per file, a big one in shards in
/// its own folder, a vision projector beside them), in a Hugging Face cache, offline: the
/// quants are listed from the snapshot, `repo:QUANT` finds every shard, a missing shard or
/// quant is named, and a bare repo id with several quants is refused listing them.
#[test]
fn a_gguf_quant_resolves_from_the_local_cache_offline_with_all_its_shards() {
    let cache = tempfile::tempdir().unwrap();
    let gguf = fixtures().join("gguf");
    let shard = |n: usize| gguf.join("sharded").join(format!("olmoe.f32-0000{n}-of-00003.gguf"));
    let repo = GGUF_REPO;
    let mut files = gguf_repo_files();
    files.push(("README.md", gguf.join("README.md")));
    let snap = hf_cache_repo(cache.path(), repo, &files);
    let hub = Hub::new(cache.path().to_path_buf(), true);

    let listing = hub.quants(repo, None).unwrap();
    assert!(listing.is_gguf() && matches!(&listing.origin, Origin::Cache { why } if why.contains("HF_HUB_OFFLINE")));
    let names: Vec<&str> = listing.quants.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["Q4_K_M", "Q8_0", "F32"]);
    let f32 = &listing.quants[2];
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert_eq!((f32.shards, f32.bytes), (3, Some((1..=3).map(|n| size(&shard(n))).sum())));
    assert_eq!(listing.spec("F32"), "someone/OLMoE-GGUF:F32");

    assert_eq!(
        ModelSource::parse("someone/OLMoE-GGUF:f32").unwrap(),
        ModelSource::HfGguf { repo: repo.into(), revision: None, quant: "F32".into() }
    );
    let first = hub.fetch_quant(repo, None, "f32", &mut |_| {}).unwrap();
    assert_eq!(first, snap.join("F32/OLMoE-F32-00001-of-00003.gguf"));
    // Opened from the snapshot's links, the shards give the single file's logits exactly.
    assert_eq!(gguf_logits(&first), gguf_logits(&gguf.join("olmoe.f32.gguf")));
    assert_eq!(hub.fetch_quant(repo, None, "Q8_0", &mut |_| {}).unwrap(), snap.join("OLMoE-Q8_0.gguf"));

    let e = hub.fetch(repo, None, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("several quants (Q4_K_M, Q8_0, F32)") && e.contains("someone/OLMoE-GGUF:Q4_K_M"), "{e}");
    let e = hub.fetch_quant(repo, None, "IQ4_XS", &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("no IQ4_XS quant") && e.contains("Q4_K_M, Q8_0, F32"), "{e}");
    std::fs::remove_file(snap.join("F32/OLMoE-F32-00002-of-00003.gguf")).unwrap();
    let e = hub.fetch_quant(repo, None, "F32", &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("lacks shard 2") && e.contains("HF_HUB_OFFLINE"), "{e}");

    // A repo with one quant: the bare id loads it.
    let single = hf_cache_repo(cache.path(), "someone/one-GGUF", &[("one.Q8_0.gguf", gguf.join("olmoe.q8_0.gguf"))]);
    assert_eq!(hub.fetch("someone/one-GGUF", None, &mut |_| {}).unwrap(), single.join("one.Q8_0.gguf"));
}

#[test]
fn bundled_names_resolve_under_assets() {
    let gguf = smollm2_gguf();
    match ModelSource::parse("smollm2-135m-instruct").unwrap() {
        ModelSource::Bundled { name, path } => {
            assert_eq!(name, "smollm2-135m-instruct");
            assert_eq!(path.canonicalize().unwrap(), gguf.canonicalize().unwrap());
        }
        other => panic!("{other:?}"),
    }
}

/// A benchmark model: the fixture's config and names/shapes in random_weights.json, no
/// safetensors. It loads, norms are 1 and biases 0, matrices are N(0, 0.02²)
/// and a forward pass routes through every layer (the seed only fixes the draw on CUDA:
/// candle cannot seed its CPU generator).
#[test]
fn a_random_weight_model_loads_from_its_manifest() {
    for case in ["llama", "deepseek_v3", "qwen2_moe"] {
        let dir = copy_case(case, true);
        let tensors: serde_json::Map<String, serde_json::Value> =
            weights(case).into_iter().map(|(n, s, _)| (n, serde_json::json!(s))).collect();
        let manifest = |seed: u64| serde_json::json!({"seed": seed, "tensors": tensors}).to_string();
        std::fs::write(dir.path().join("random_weights.json"), manifest(7)).unwrap();
        let load = || Session::load(&ModelSource::Dir(dir.path().to_path_buf()), &LoadOptions::default(), &mut |_| {}).unwrap();
        let run = |s: &Session| {
            let r = s
                .run(
                    &routelab_model::session::RunRequest::forward((1..9).collect(), CaptureSpec::default(), Default::default()),
                    &mut |_| true,
                )
                .unwrap();
            let experts = |l| r.store.row_u32(&HookPoint::layer(l, Quantity::RouterExperts), 3).map_or(0, |e| e.len());
            (r.store.len(), (0..r.store.num_layers()).map(experts).sum::<usize>())
        };
        let a = load();
        let (positions, routed) = run(&a);
        assert_eq!(positions, 8, "{case}");
        assert_eq!(routed > 0, a.config().layers.iter().enumerate().any(|(l, _)| a.config().moe(l).is_some()), "{case}");
        let w = routelab_model::weights::Weights::random(
            &dir.path().join("random_weights.json"),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let (name, shape, _) = weights(case).into_iter().find(|(n, s, _)| n.ends_with("o_proj.weight") && s.len() == 2).unwrap();
        let m = w.get(&name, &shape).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mean = m.iter().sum::<f32>() / m.len() as f32;
        let sd = (m.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / m.len() as f32).sqrt();
        assert!(mean.abs() < 0.005 && (sd - 0.02).abs() < 0.004, "{case} {name}: mean {mean}, sd {sd}");
        let (norm, nshape, _) = weights(case).into_iter().find(|(n, _, _)| n.ends_with("input_layernorm.weight")).unwrap();
        assert!(w.get(&norm, &nshape).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|&x| x == 1.0));
    }
}

#[test]
fn a_random_weight_manifest_that_is_not_json_names_the_file() {
    let dir = copy_case("llama", true);
    std::fs::write(dir.path().join("random_weights.json"), "{ not json").unwrap();
    let err = Session::load(&ModelSource::Dir(dir.path().to_path_buf()), &LoadOptions::default(), &mut |_| {}).err().unwrap().to_string();
    assert!(err.contains("random_weights.json") && err.contains("not JSON"), "{err}");
}
