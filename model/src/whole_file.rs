//! Files read whole into memory (config.json, tokenizer files, chat templates, shard indexes,
//! notebooks): their size is checked first, so a huge or endless file (a device, a FIFO, a
//! file made to hurt) is refused with its size instead of being read until memory runs out.

use std::io::Read;
use std::path::Path;

/// config.json: a few kilobytes in every published model.
pub const CONFIG_LIMIT: u64 = 16 << 20;
/// tokenizer.json (a 256k vocabulary with merges is tens of megabytes), tokenizer_config.json,
/// shard indexes, chat templates.
pub const TOKENIZER_LIMIT: u64 = 1 << 30;
/// Notebooks hold cells and settings; runs live in separate trace files.
pub const NOTEBOOK_LIMIT: u64 = 256 << 20;

/// Reads `path` as UTF-8 text if it is a regular file of at most `limit` bytes; the error
/// (an `io::Error` of kind `InvalidData` for the size) says how large it is and what the
/// limit is, for the caller to name the file.
pub fn read_to_string(path: &Path, limit: u64, what: &str) -> std::io::Result<String> {
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not a regular file (a {what} is one)")));
    }
    if meta.len() > limit {
        return Err(too_large(meta.len(), limit, what));
    }
    // The size can change while it is read: read at most one byte past the limit.
    let mut text = String::new();
    file.take(limit + 1).read_to_string(&mut text)?;
    if text.len() as u64 > limit {
        return Err(too_large(text.len() as u64, limit, what));
    }
    Ok(text)
}

fn too_large(len: u64, limit: u64, what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{len} bytes, larger than any {what} ({} MiB at most); the file is damaged or not a {what}", limit >> 20),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_past_the_limit_and_non_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        std::fs::write(&p, "x".repeat(100)).unwrap();
        assert_eq!(read_to_string(&p, 100, "config.json").unwrap().len(), 100);
        let e = read_to_string(&p, 99, "config.json").unwrap_err().to_string();
        assert!(e.starts_with("100 bytes, larger than any config.json"), "{e}");
        let e = read_to_string(dir.path(), 99, "config.json").unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        #[cfg(unix)]
        {
            let e = read_to_string(Path::new("/dev/zero"), 99, "config.json").unwrap_err().to_string();
            assert!(e.contains("not a regular file"), "{e}");
        }
    }
}
