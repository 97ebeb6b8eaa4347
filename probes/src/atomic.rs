//! Atomic file writes for everything a user keeps (traces, exports, notebooks): write a
//! temporary file beside the target, fsync it, rename it over the target. A failed write
//! leaves the previous file as it was.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::error::{ProbeError, Result};

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| ProbeError::Invalid(format!("{}: not a file path", path.display())))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(ProbeError::io(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_keeps_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keep.txt");
        write_atomic(&p, b"first").unwrap();
        // Block the temporary file's name with a directory so the write fails midway.
        let blocker = dir.path().join(format!(".keep.txt.tmp-{}", std::process::id()));
        std::fs::create_dir(&blocker).unwrap();
        let err = write_atomic(&p, b"second").unwrap_err().to_string();
        assert!(err.contains("keep.txt"), "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
        std::fs::remove_dir(&blocker).unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left behind");
    }
}
