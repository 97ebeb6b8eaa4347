//! Weight formats and model sources: sharded checkpoints, f16/bf16 weights, the local Hugging
//! Face cache, bundled names.

use std::collections::BTreeMap;
use std::path::Path;

use routelab_model::capture::{CaptureSpec, Layers};
use routelab_model::decoder::ForwardOptions;
use routelab_model::session::{LoadOptions, Session};
use routelab_model::source::{fetch_hf_in, ModelSource};
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
    let views: Vec<(String, TensorView)> = tensors.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    std::fs::write(path, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn logits(dir: &Path) -> Vec<f32> {
    let s = Session::load(&ModelSource::Dir(dir.to_path_buf()), &LoadOptions::default(), &mut |_| {}).unwrap();
    let ids = Reference::load("llama").ids("input_ids");
    let spec = CaptureSpec { logits: true, ..CaptureSpec::none() };
    let mut cache = s.model.new_cache();
    let out = s.model.forward(&ids, &mut cache, &ForwardOptions { capture: &spec, edits: &[], head_outputs: &Layers::None }).unwrap();
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
        if i % 2 == 0 { a.push(entry) } else { b.push(entry) }
    }
    write_st(&dir.path().join("model-00001-of-00002.safetensors"), &a);
    write_st(&dir.path().join("model-00002-of-00002.safetensors"), &b);
    std::fs::write(dir.path().join("model.safetensors.index.json"), serde_json::json!({"metadata": {}, "weight_map": map}).to_string()).unwrap();
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
        let wide_t: Vec<_> = w.iter().map(|(n, s, v)| (n.clone(), Dtype::F32, s.clone(), f32_bytes(&v.iter().map(|&x| round(x)).collect::<Vec<_>>()))).collect();
        write_st(&narrow.path().join("model.safetensors"), &narrow_t);
        write_st(&widened.path().join("model.safetensors"), &wide_t);
        let (a, b) = (logits(narrow.path()), logits(widened.path()));
        assert_eq!(a, b, "{dtype:?}");
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
    let cache = hf_hub::Cache::new(cache.path().to_path_buf());
    assert_eq!(ModelSource::parse("someone/tiny-llama").unwrap(), ModelSource::HfRepo { repo: "someone/tiny-llama".into(), revision: None });
    let dir = fetch_hf_in(&cache, true, "someone/tiny-llama", None, &mut |_| {}).unwrap();
    assert_eq!(dir, snap);
    assert_eq!(logits(&dir), logits(&case_dir("llama")));
    let e = fetch_hf_in(&cache, true, "someone/absent", None, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("someone/absent") && e.contains("HF_HUB_OFFLINE"), "{e}");
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
