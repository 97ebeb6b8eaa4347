//! Runs the CUDA kernels' own sources on the CPU (tests only), so the kernels are checked
//! against their CPU references on every machine, GPU or not.
//!
//! `emu/cuda_emu.h` supplies just enough of CUDA (thread and block indices, `__syncthreads` as a
//! real barrier among real threads, shared memory, bf16/f16 loads); `emu/driver.cpp` includes
//! `src/cuda/*.cu` unchanged and runs one [`Launch`] described in a file. The launch comes from
//! the same function the op's `cuda_fwd` uses, so grid, block and argument order are checked too.
//!
//! The driver is compiled once per test process with the system C++ compiler (`CXX`, else
//! `c++`, `g++`, `clang++`). Without one, tests print SKIPPED, unless
//! `ROUTELAB_REQUIRE_EMULATOR` is set (CI sets it), which turns the skip into a failure.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::launch::{Launch, Scalar};

/// A kernel buffer argument, in the kernel's order.
pub enum Buf<'a> {
    F32(&'a [f32]),
    /// bf16 or f16 bits.
    U16(&'a [u16]),
    U32(&'a [u32]),
    /// An f32 output of this many elements (starts as NaN).
    Out(usize),
    /// Rows of four u64 whose first field is the index of another buffer in this launch; the
    /// emulator replaces it with that buffer's address (a device pointer table on the GPU).
    Table(Vec<[u64; 4]>),
}

const SOURCES: [(&str, &str); 7] = [
    ("cuda_emu.h", include_str!("../emu/cuda_emu.h")),
    ("driver.cpp", include_str!("../emu/driver.cpp")),
    ("router_topk.cu", include_str!("cuda/router_topk.cu")),
    ("attn_stats.cu", include_str!("cuda/attn_stats.cu")),
    ("attention.cu", include_str!("cuda/attention.cu")),
    ("row_norm.cu", include_str!("cuda/row_norm.cu")),
    ("capture_pack.cu", include_str!("cuda/capture_pack.cu")),
];

/// The compiled driver, or why there is none.
fn driver() -> &'static Result<PathBuf, String> {
    static DRIVER: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DRIVER.get_or_init(|| {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        SOURCES.hash(&mut hasher);
        let dir = std::env::temp_dir().join(format!("routelab-emu-{:016x}-{}", hasher.finish(), std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for (name, text) in SOURCES {
            std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))?;
        }
        let candidates: Vec<String> = std::env::var("CXX").into_iter().chain(["c++", "g++", "clang++"].map(String::from)).collect();
        let exe = dir.join("driver");
        for cxx in &candidates {
            let out = Command::new(cxx)
                .args(["-std=c++20", "-O2", "-pthread", "-I"])
                .arg(&dir)
                .arg(dir.join("driver.cpp"))
                .arg("-o")
                .arg(&exe)
                .output();
            match out {
                Err(_) => continue, // not installed
                Ok(o) if o.status.success() => return Ok(exe),
                Ok(o) => return Err(format!("{cxx} failed on the emulator:\n{}", String::from_utf8_lossy(&o.stderr))),
            }
        }
        Err(format!("no C++ compiler found (tried {})", candidates.join(", ")))
    })
}

/// Runs `launch` with `bufs` on the emulator; returns the output buffers in order, or `None`
/// (after printing SKIPPED) when no compiler is available and none is required.
pub fn run(launch: &Launch, bufs: &[Buf]) -> Option<Vec<Vec<f32>>> {
    let exe = match driver() {
        Ok(p) => p,
        Err(why) if why.starts_with("no C++ compiler") && std::env::var_os("ROUTELAB_REQUIRE_EMULATOR").is_none() => {
            eprintln!("SKIPPED: CUDA emulator test ({why})");
            return None;
        }
        Err(why) => panic!("CUDA emulator: {why}"),
    };
    let mut file = b"RLEMU1".to_vec();
    let u32s = |f: &mut Vec<u8>, x: u32| f.extend_from_slice(&x.to_le_bytes());
    u32s(&mut file, launch.kernel.len() as u32);
    file.extend_from_slice(launch.kernel.as_bytes());
    for x in [launch.grid.0, launch.grid.1, launch.grid.2, launch.block.0, launch.block.1, launch.block.2] {
        u32s(&mut file, x);
    }
    u32s(&mut file, bufs.len() as u32);
    let mut outputs = Vec::new();
    for b in bufs {
        match b {
            Buf::F32(v) => {
                file.push(0);
                file.extend_from_slice(&(v.len() as u64).to_le_bytes());
                v.iter().for_each(|x| file.extend_from_slice(&x.to_le_bytes()));
            }
            Buf::U16(v) => {
                file.push(1);
                file.extend_from_slice(&(v.len() as u64).to_le_bytes());
                v.iter().for_each(|x| file.extend_from_slice(&x.to_le_bytes()));
            }
            Buf::Out(n) => {
                file.push(2);
                file.extend_from_slice(&(*n as u64).to_le_bytes());
                outputs.push(*n);
            }
            Buf::Table(rows) => {
                file.push(3);
                file.extend_from_slice(&(rows.len() as u64).to_le_bytes());
                rows.iter().flatten().for_each(|x| file.extend_from_slice(&x.to_le_bytes()));
            }
            Buf::U32(v) => {
                file.push(4);
                file.extend_from_slice(&(v.len() as u64).to_le_bytes());
                v.iter().for_each(|x| file.extend_from_slice(&x.to_le_bytes()));
            }
        }
    }
    u32s(&mut file, launch.scalars.len() as u32);
    for s in &launch.scalars {
        let (kind, bytes) = match *s {
            Scalar::I32(x) => (0u8, (x as i64 as u64).to_le_bytes()),
            Scalar::I64(x) => (1, x.to_le_bytes()),
            Scalar::F32(x) => (2, (x.to_bits() as u64).to_le_bytes()),
            Scalar::U64(x) => (3, x.to_le_bytes()),
        };
        file.push(kind);
        file.extend_from_slice(&bytes);
    }
    let dir = exe.parent().unwrap_or(Path::new("."));
    let tag = format!("{:?}-{}", std::thread::current().id(), launch.kernel).replace(|c: char| !c.is_ascii_alphanumeric(), "_");
    let (inp, outp) = (dir.join(format!("{tag}.in")), dir.join(format!("{tag}.out")));
    std::fs::write(&inp, &file).expect("writing the launch file");
    let o = Command::new(exe).arg(&inp).arg(&outp).output().expect("running the emulator");
    assert!(o.status.success(), "emulator failed on {}: {}", launch.kernel, String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(&outp).expect("reading the emulator's output");
    let all: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert_eq!(all.len(), outputs.iter().sum::<usize>(), "emulator output size");
    let mut at = 0;
    Some(
        outputs
            .into_iter()
            .map(|n| {
                at += n;
                all[at - n..at].to_vec()
            })
            .collect(),
    )
}
