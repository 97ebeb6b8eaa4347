//! File names that come from inside a model repository (a safetensors index's `weight_map`,
//! the hub's file listing): they name files of that repository, so they must stay inside it.

use std::path::{Component, Path};

/// `name` as a path relative to the repository, or why it cannot be one: absolute paths,
/// `..`, drive prefixes, backslashes (a separator on Windows) and NUL are refused.
pub fn relative(name: &str) -> Result<&Path, String> {
    if name.is_empty() {
        return Err("an empty file name".into());
    }
    if name.contains('\\') || name.contains('\0') {
        return Err(format!("{name:?} is not a plain file name"));
    }
    let path = Path::new(name);
    for c in path.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err(format!("{name:?} points outside the model's directory")),
            Component::RootDir | Component::Prefix(_) => return Err(format!("{name:?} is an absolute path")),
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_inside_the_repository() {
        for ok in ["model-00001-of-00002.safetensors", "sub/dir/x.gguf", "./a.safetensors"] {
            assert!(relative(ok).is_ok(), "{ok}");
        }
        for bad in ["", "../x.safetensors", "a/../../x", "/etc/passwd", "..", "a\\..\\b", "a\0b"] {
            assert!(relative(bad).is_err(), "{bad:?}");
        }
    }
}
