//! What several of the app's test binaries share: a fake Hugging Face cache holding the tests'
//! GGUF repo ([`routelab_tests::gguf_repo_files`]).

use std::path::Path;

pub use routelab_tests::GGUF_REPO;

/// A Hugging Face cache at `cache` holding [`GGUF_REPO`].
pub fn gguf_repo_cache(cache: &Path) {
    routelab_tests::hf_cache_repo(cache, GGUF_REPO, &routelab_tests::gguf_repo_files());
}
