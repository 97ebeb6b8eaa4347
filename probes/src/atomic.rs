//! Atomic file writes for everything a user keeps (traces, exports, notebooks): write a
//! temporary file beside the target, fsync it, rename it over the target, fsync the directory.
//! A failed write leaves the previous file as it was, and no temporary file behind; a killed
//! process leaves the previous file as it was and, at worst, a temporary file
//! ([`temp_target`] recognises one).
//!
//! The fsyncs are for power loss and OS crashes (a killed process loses nothing the kernel
//! already has): the file's before the rename, so the name never points at unwritten data; the
//! directory's after it, so the rename itself is durable. Where a directory cannot be opened
//! for syncing (Windows), that step is skipped.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::error::{ProbeError, Result};

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// Copies `from` to `to` atomically (streamed, so a large trace is never held in memory).
pub fn copy_atomic(from: &Path, to: &Path) -> Result<()> {
    let mut src = File::open(from).map_err(|e| ProbeError::io(from, e))?;
    write_atomic_with(to, |f| std::io::copy(&mut src, f).map(|_| ()))
}

/// Creates `dir` and its missing ancestors, syncing the parent of each one created, so that a
/// file later written inside cannot outlive (after a power loss) the directory holding it.
pub fn create_dir_durable(dir: &Path) -> Result<()> {
    let mut missing = vec![];
    let mut d = dir;
    while !d.as_os_str().is_empty() && !d.exists() {
        missing.push(d);
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| ProbeError::io(dir, e))?;
    for d in missing.iter().rev() {
        sync_dir(d.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")));
    }
    Ok(())
}

/// The name of the file a temporary file of [`write_atomic`] was meant to become
/// (`.{name}.{random}.tmp`), or `None` if `file_name` is not one.
pub fn temp_target(file_name: &str) -> Option<&str> {
    let inner = file_name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (name, random) = inner.rsplit_once('.')?;
    (!name.is_empty() && !random.is_empty() && random.chars().all(|c| c.is_ascii_alphanumeric())).then_some(name)
}

/// Makes a directory's entries (a rename, a new file) durable; best effort, as some platforms
/// cannot open a directory to sync it.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
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
        sync_dir(dir);
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

    #[test]
    fn temporary_files_are_recognised_by_their_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("notebook.json");
        // A temporary file as a killed write leaves it.
        let tmp = tempfile::Builder::new().prefix(".notebook.json.").suffix(".tmp").tempfile_in(dir.path()).unwrap();
        let name = tmp.path().file_name().unwrap().to_str().unwrap().to_string();
        assert_eq!(temp_target(&name), Some("notebook.json"));
        write_atomic(&target, b"x").unwrap();
        for other in ["notebook.json", ".notebook.json", "notebook.json.tmp", ".notebook.json..tmp", ".x.a-b.tmp"] {
            assert_eq!(temp_target(other), None, "{other}");
        }
    }

    #[test]
    fn copies_are_atomic_and_name_a_missing_source() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.bin"), dir.path().join("b.bin"));
        write_atomic(&a, b"trace bytes").unwrap();
        write_atomic(&b, b"old").unwrap();
        copy_atomic(&a, &b).unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), b"trace bytes");
        let err = copy_atomic(&dir.path().join("gone.bin"), &b).unwrap_err().to_string();
        assert!(err.contains("gone.bin"), "{err}");
        assert_eq!(std::fs::read(&b).unwrap(), b"trace bytes");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "no temporary file left behind");
    }

    #[test]
    fn durable_directories_are_created_with_their_ancestors() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/b/c");
        create_dir_durable(&d).unwrap();
        assert!(d.is_dir());
        create_dir_durable(&d).unwrap();
        // A file where a directory should be.
        write_atomic(&d.join("file"), b"x").unwrap();
        let err = create_dir_durable(&d.join("file/x")).unwrap_err().to_string();
        assert!(err.contains("file/x"), "{err}");
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
