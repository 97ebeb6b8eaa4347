//! What a download is checked against before RouteLab reads it: the file name the hub lists
//! must stay inside the repository, the cache paths the hub's headers name must be plain
//! names, and the downloaded file must have the size and (for LFS files) the SHA-256 the
//! hub's listing gives. hf-hub checks none of these.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{ModelError, Result};

/// What the hub's listing says of one file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    pub size: Option<u64>,
    /// Lower-case hex; LFS files only (the hub lists no hash of small git files).
    pub sha256: Option<String>,
}

/// A file name from the hub's listing, before it becomes a path in the cache.
pub fn file_name(repo: &str, name: &str) -> Result<()> {
    crate::repo_path::relative(name).map(|_| ()).map_err(|why| ModelError::Source(format!("{repo}: the hub lists {why}; not downloaded")))
}

/// hf-hub stores a download as `blobs/{etag}` and links it from `snapshots/{commit}/`: both
/// come from response headers, so they must be single plain path components.
pub fn cache_key(repo: &str, what: &str, key: &str) -> Result<()> {
    let plain = !key.is_empty() && key != "." && key != ".." && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if plain {
        Ok(())
    } else {
        Err(ModelError::Source(format!("{repo}: the hub answered with a {what} that is not a plain name ({key:?}); not downloaded")))
    }
}

/// Checks a downloaded file; a file that fails is removed from the cache (its snapshot link
/// and the blob behind it) so that the next load downloads it again.
pub fn downloaded(repo: &str, file: &str, path: &Path, expected: &Expected) -> Result<()> {
    let result = check(path, expected);
    if let Err(why) = &result {
        let blob = std::fs::canonicalize(path).ok();
        let _ = std::fs::remove_file(path);
        if let Some(blob) = blob {
            let _ = std::fs::remove_file(blob);
        }
        return Err(ModelError::Source(format!("{repo}: {file} did not download intact ({why}); the copy was removed, load it again")));
    }
    Ok(())
}

fn check(path: &Path, expected: &Expected) -> std::result::Result<(), String> {
    let len = std::fs::metadata(path).map_err(|e| format!("cannot read it back: {e}"))?.len();
    if let Some(size) = expected.size {
        if len != size {
            return Err(format!("{len} bytes where the hub lists {size}"));
        }
    }
    if let Some(want) = &expected.sha256 {
        let got = sha256(path).map_err(|e| format!("cannot read it back: {e}"))?;
        if !got.eq_ignore_ascii_case(want) {
            return Err(format!("SHA-256 {got} where the hub lists {want}"));
        }
    }
    Ok(())
}

pub fn sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_the_known_digest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(sha256(&p).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn a_damaged_download_is_removed_with_its_blob() {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("blob");
        std::fs::write(&blob, b"abd").unwrap();
        let link = dir.path().join("model.safetensors");
        std::os::unix::fs::symlink(&blob, &link).unwrap();
        let want = Expected { size: Some(3), sha256: Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into()) };
        let e = downloaded("o/r", "model.safetensors", &link, &want).unwrap_err().to_string();
        assert!(e.contains("o/r: model.safetensors did not download intact (SHA-256 ") && e.contains("load it again"), "{e}");
        assert!(!link.exists() && !blob.exists());
        std::fs::write(&blob, b"ab").unwrap();
        let e = downloaded("o/r", "model.safetensors", &blob, &want).unwrap_err().to_string();
        assert!(e.contains("2 bytes where the hub lists 3"), "{e}");
    }

    #[test]
    fn cache_keys_are_plain_names() {
        for ok in ["a1b2c3", "0123456789abcdef0123456789abcdef01234567", "e3b0-c442.x_y"] {
            assert!(cache_key("o/r", "etag", ok).is_ok(), "{ok}");
        }
        for bad in ["", "..", "../../etc/x", "a/b", "a b"] {
            assert!(cache_key("o/r", "etag", bad).is_err(), "{bad:?}");
        }
    }
}
