//! Atomic file writes for everything a user keeps (traces, exports, notebooks): write a
//! temporary file beside the target, fsync it, rename it over the target, fsync the directory.
//! A failed write leaves the previous file as it was, and no temporary file behind.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::error::{ProbeError, Result};

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// The temporary file is `tempfile`'s (a fresh name, removed when anything fails); `write`
/// fills it. Errors name `path`.
fn write_atomic_with(path: &Path, write: impl FnOnce(&mut File) -> std::io::Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| ProbeError::Invalid(format!("{}: not a file path", path.display())))?;
    let prefix = format!(".{}.", name.to_string_lossy());
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // tempfile creates 0600 files; a kept file gets the usual 0666 less the umask, as
    // `File::create` would give it.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let result = (|| -> std::io::Result<()> {
        let mut tmp = builder.tempfile_in(dir)?;
        write(tmp.as_file_mut())?;
        tmp.as_file().sync_all()?;
        // On failure the temporary file comes back inside the error and is removed with it.
        tmp.persist(path).map_err(|e| e.error)?;
        // Make the rename itself durable.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| ProbeError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_keeps_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keep.txt");
        write_atomic(&p, b"first").unwrap();
        // The write fails midway, as on a full disk.
        let err = write_atomic_with(&p, |f| {
            f.write_all(b"sec")?;
            Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left"))
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("keep.txt"), "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
        write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left behind");
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("no/such/dir/out.csv");
        let err = write_atomic(&p, b"x").unwrap_err().to_string();
        assert!(err.contains("no/such/dir/out.csv"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn kept_files_get_the_permissions_of_a_plain_create() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain.txt");
        std::fs::write(&plain, b"x").unwrap();
        let atomic = dir.path().join("atomic.txt");
        write_atomic(&atomic, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&atomic), mode(&plain));
    }
}
