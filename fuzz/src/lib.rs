//! Helpers the fuzz targets share: a scratch directory in memory for readers that take a path,
//! and small fixed inputs (a config, messages) for readers that need a second file.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use routelab_model::chat::Message;

/// One scratch directory per fuzzing process, in /dev/shm (a RAM disk) where it exists: the
/// readers that take a path read the fuzz input from a file written there on every run.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
        // libFuzzer ends a process with exit(), which runs no destructors, so each process
        // removes the directories of processes that have ended (Linux: no /proc/<pid>).
        for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let pid = name.to_str().and_then(|n| n.strip_prefix(PREFIX)).and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = base.join(format!("{PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory for the fuzz inputs");
        dir
    })
}

/// The scratch directories' names: this, then the process id.
const PREFIX: &str = "routelab-fuzz-";

/// A subdirectory of the scratch directory, emptied, for one target's files.
pub fn fresh_dir(name: &str) -> PathBuf {
    let dir = scratch().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a scratch subdirectory");
    dir
}

/// Writes `bytes` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("writing a fuzz input to the scratch directory");
    path
}

/// The bundled tiny MoE model's config.json: a real config for the readers that need one
/// next to the input (weights, interventions checked against a model).
pub const TINY_MOE_CONFIG: &str = include_str!("../../assets/models/tiny-moe/config.json");

/// The tiny MoE model's parsed config.
pub fn tiny_moe_config() -> &'static routelab_model::config::ModelConfig {
    static CONFIG: OnceLock<routelab_model::config::ModelConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let value: serde_json::Value = serde_json::from_str(TINY_MOE_CONFIG).expect("the bundled config is JSON");
        routelab_model::families::parse_config(Path::new("config.json"), &value).expect("the bundled config parses")
    })
}

/// A short conversation of every role, as the CLI's `--chat` and the GUI build it.
pub fn conversation() -> Vec<Message> {
    vec![
        Message::new("system", "You are a helpful assistant."),
        Message::new("user", "What is a mixture of experts?"),
        Message::new("assistant", "A layer whose router sends each token to a few of many MLPs."),
        Message::new("user", "Why?"),
    ]
}

/// `data` with its safetensors header length (the first 8 bytes) set to where its JSON header
/// ends, when it says otherwise: mutations that insert or remove bytes in the header (a longer
/// tensor name, a larger number) would otherwise always fail at the length check and never
/// reach the header's reader. `None` when the length is right, or no JSON object closes.
pub fn with_header_length_repaired(data: &[u8]) -> Option<Vec<u8>> {
    let declared = u64::from_le_bytes(data.get(..8)?.try_into().ok()?);
    // The end of the JSON object that starts at byte 8: braces outside strings, balanced.
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &b) in data.iter().enumerate().skip(8) {
        match (in_string, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, false, _) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'{' | b'[') => depth += 1,
            (false, _, b'}' | b']') => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    let length = (i + 1 - 8) as u64;
                    if length == declared {
                        return None;
                    }
                    let mut out = data.to_vec();
                    out[..8].copy_from_slice(&length.to_le_bytes());
                    return Some(out);
                }
            }
            _ => {}
        }
    }
    None
}
