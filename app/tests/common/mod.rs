//! What several of the app's test binaries share: a fake Hugging Face cache holding a GGUF
//! repo made of the GGUF fixtures that llama.cpp's converter wrote.

use std::path::{Path, PathBuf};

/// The GGUF repo's id in [`gguf_repo_cache`].
pub const GGUF_REPO: &str = "someone/OLMoE-GGUF";

/// A Hugging Face cache at `cache` as hf-hub and the Python libraries lay it out (blobs,
/// `refs/main`, a snapshot of links), holding [`GGUF_REPO`]: Q4_K_M and Q8_0 in one file each,
/// F32 in three shards in a folder, and a vision projector that is not a quant.
pub fn gguf_repo_cache(cache: &Path) {
    let gguf = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/gguf");
    let shard = |n: usize| gguf.join("sharded").join(format!("olmoe.f32-0000{n}-of-00003.gguf"));
    let files = [
        ("OLMoE-Q8_0.gguf", gguf.join("olmoe.q8_0.gguf")),
        ("OLMoE-Q4_K_M.gguf", gguf.join("olmoe.q4_k_m.gguf")),
        ("F32/OLMoE-F32-00001-of-00003.gguf", shard(1)),
        ("F32/OLMoE-F32-00002-of-00003.gguf", shard(2)),
        ("F32/OLMoE-F32-00003-of-00003.gguf", shard(3)),
        ("mmproj-OLMoE-F16.gguf", gguf.join("olmoe.f16.gguf")),
    ];
    let root = cache.join(format!("models--{}", GGUF_REPO.replace('/', "--")));
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
}
