//! Whether a model fits before it is loaded: what its weights will take (matrices in the run
//! dtype, GGUF blocks kept as stored) against the memory available, so a model that does not
//! fit is refused with the numbers and the options instead of being killed by the OOM killer
//! half-way through a load.

use std::path::Path;

use candle_core::Device;

use crate::error::{ModelError, Result};
use crate::weights::Weights;

/// Overrides the memory available (bytes, or with a K/M/G/T suffix, powers of 1024), e.g. to
/// keep a load within a budget, or to test the refusal.
pub const LIMIT_ENV: &str = "ROUTELAB_MEMORY_LIMIT";

/// Room beyond the weights: activations, the KV cache of a long prompt, the tokenizer.
const HEADROOM: u64 = 256 << 20;

/// Memory a load may use, and where the figure comes from.
#[derive(Clone, Debug, PartialEq)]
pub struct Available {
    pub bytes: u64,
    pub source: String,
}

/// `2G`, `512M`, `1048576`.
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, shift) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 10),
        (i, 'm' | 'M') => (&s[..i], 20),
        (i, 'g' | 'G') => (&s[..i], 30),
        (i, 't' | 'T') => (&s[..i], 40),
        _ => (s, 0),
    };
    let v: f64 = digits.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then(|| (v * (1u64 << shift) as f64) as u64)
}

/// A byte limit set in the environment variable `name` (`None` when unset), refused with the
/// accepted forms when it does not parse.
pub fn env_bytes(name: &str) -> Result<Option<u64>> {
    match std::env::var(name) {
        Ok(v) => parse_bytes(&v).map(Some).ok_or_else(|| ModelError::Invalid(format!("{name}={v:?}: expected bytes, e.g. 512M or 16G"))),
        Err(_) => Ok(None),
    }
}

/// The memory available for a load on `device`: [`LIMIT_ENV`] if set, else on the CPU the
/// smaller of the kernel's `MemAvailable` and what the cgroup still allows. `None` where it
/// cannot be told (systems without `/proc`, builds without CUDA): then no check is made. On
/// a GPU, the free memory the driver reports.
pub fn available(device: &Device) -> Result<Option<Available>> {
    if let Some(bytes) = env_bytes(LIMIT_ENV)? {
        return Ok(Some(Available { bytes, source: format!("the {LIMIT_ENV} limit") }));
    }
    if !device.is_cpu() {
        return Ok(gpu_free(device).map(|bytes| Available { bytes, source: "free GPU memory".into() }));
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    });
    let cgroup = (|| {
        let max: u64 = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok()?.trim().parse().ok()?;
        let current: u64 = std::fs::read_to_string("/sys/fs/cgroup/memory.current").ok()?.trim().parse().ok()?;
        Some(max.saturating_sub(current))
    })();
    Ok(match (meminfo, cgroup) {
        (Some(m), Some(c)) if c < m => Some(Available { bytes: c, source: "memory the cgroup allows".into() }),
        (Some(m), _) => Some(Available { bytes: m, source: "RAM available".into() }),
        (None, Some(c)) => Some(Available { bytes: c, source: "memory the cgroup allows".into() }),
        (None, None) => None,
    })
}

/// Free memory on a CUDA device, as the driver reports it.
#[cfg(feature = "cuda")]
fn gpu_free(device: &Device) -> Option<u64> {
    let cuda = device.as_cuda_device().ok()?;
    cuda.cuda_stream().context().mem_get_info().ok().map(|(free, _)| free as u64)
}

#[cfg(not(feature = "cuda"))]
fn gpu_free(_: &Device) -> Option<u64> {
    None
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Refuses a load of `weights` that would not fit in `available`, naming the numbers and the
/// options that would.
pub fn check(location: &Path, weights: &Weights, available: Option<&Available>) -> Result<()> {
    let Some(available) = available else { return Ok(()) };
    let (resident, kept) = weights.resident_bytes();
    let (resident, kept) = (resident as u64, kept as u64);
    let need = resident + HEADROOM;
    if need <= available.bytes {
        return Ok(());
    }
    // Parameters of the matrices, for what other forms would take.
    let params: u64 =
        weights.names().iter().filter_map(|n| weights.shape(n)).filter(|s| s.len() >= 2).map(|s| s.iter().product::<usize>() as u64).sum();
    let mut options = Vec::new();
    let fits = |bytes: u64| bytes + HEADROOM <= available.bytes;
    // Q4_K_M averages about 4.85 bits per weight, Q8_0 8.5.
    for (what, bytes) in [("--dtype bf16", params * 2), ("a Q8_0 GGUF file", params * 17 / 16), ("a Q4_K_M GGUF file", params * 485 / 800)]
    {
        if bytes < resident {
            options.push(format!("{what} (about {}{})", gib(bytes + HEADROOM), if fits(bytes) { "" } else { ", still too much here" }));
        }
    }
    options.push("another device (--device cuda:N)".into());
    Err(ModelError::Memory {
        path: location.to_path_buf(),
        message: format!(
            "loading this model needs about {} ({} of weights in {:?}{} and {} of working room) but {} is {}; options: {}",
            gib(need),
            gib(resident),
            weights.dtype(),
            if kept > 0 { format!(", {} of them GGUF blocks kept as stored", gib(kept)) } else { String::new() },
            gib(HEADROOM),
            available.source,
            gib(available.bytes),
            options.join(", "),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse() {
        assert_eq!(parse_bytes("1048576"), Some(1 << 20));
        assert_eq!(parse_bytes("512M"), Some(512 << 20));
        assert_eq!(parse_bytes("1.5g"), Some(3 << 29));
        assert_eq!(parse_bytes(" 2T "), Some(2 << 40));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("-1G"), None);
        assert_eq!(parse_bytes(""), None);
    }
}
