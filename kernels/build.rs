//! With the `cuda` feature, compiles every `src/cuda/*.cu` to PTX with nvcc (for
//! `CUDA_COMPUTE_CAP`, default 90: H100/H200) into OUT_DIR; `src/cuda.rs` embeds them. Without
//! the feature nothing is compiled and no CUDA toolkit is needed. Each PTX is also assembled
//! with ptxas (and the result dropped), so what the GPU's driver would reject fails the build.
// A build script: a missing toolkit or a failing compiler is a failed build.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=src/cuda");
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo::rerun-if-env-changed=NVCC");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let cap = cap.trim().trim_start_matches("sm_").replace('.', "");
    let nvcc = std::env::var("NVCC").ok().or_else(|| {
        ["CUDA_ROOT", "CUDA_PATH"]
            .iter()
            .filter_map(|v| std::env::var(v).ok())
            .map(|r| format!("{r}/bin/nvcc"))
            .find(|p| std::path::Path::new(p).exists())
    });
    let nvcc = nvcc.unwrap_or_else(|| "nvcc".into());
    let mut sources: Vec<PathBuf> = std::fs::read_dir("src/cuda")
        .expect("kernels/src/cuda is missing")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    sources.sort();
    for src in sources {
        let stem = src.file_stem().unwrap().to_string_lossy().to_string();
        let ptx = out.join(format!("{stem}.ptx"));
        let status = Command::new(&nvcc)
            .args(["--ptx", &format!("-arch=sm_{cap}"), "-O3", "-std=c++17", "-o"])
            .arg(&ptx)
            .arg(&src)
            .status()
            .unwrap_or_else(|e| panic!("running {nvcc} for {}: {e} (source .ci/cuda-env.sh first)", src.display()));
        assert!(status.success(), "nvcc failed on {}", src.display());
        // The driver assembles PTX only when a kernel is first loaded, on the GPU. Assembling
        // it here too makes an instruction or resource the target lacks (shared memory,
        // registers, stack) a build error on machines without a GPU.
        let ptxas = std::path::Path::new(&nvcc).with_file_name("ptxas");
        let ptxas = if ptxas.exists() { ptxas } else { PathBuf::from("ptxas") };
        let cubin = out.join(format!("{stem}.cubin"));
        let o = Command::new(&ptxas)
            .args([&format!("-arch=sm_{cap}"), "-o"])
            .arg(&cubin)
            .arg(&ptx)
            .output()
            .unwrap_or_else(|e| panic!("running {} for {}: {e}", ptxas.display(), ptx.display()));
        assert!(o.status.success(), "ptxas rejected {}:\n{}", ptx.display(), String::from_utf8_lossy(&o.stderr));
    }
}
