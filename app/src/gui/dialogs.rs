//! File dialogs behind a trait, so tests (and machines without a desktop portal) can stand in
//! for the native ones.

use std::path::PathBuf;

pub trait FileDialogs {
    /// A file to save, with a suggested name (its extension sets the format).
    fn save_file(&mut self, title: &str, suggested: &str) -> Option<PathBuf>;
    /// A directory to pick (export folders, notebooks, corpora).
    fn pick_folder(&mut self, title: &str) -> Option<PathBuf>;
}

/// The platform's dialogs (rfd: XDG desktop portal on Linux).
pub struct NativeDialogs;

impl FileDialogs for NativeDialogs {
    fn save_file(&mut self, title: &str, suggested: &str) -> Option<PathBuf> {
        rfd::FileDialog::new().set_title(title).set_file_name(suggested).save_file()
    }
    fn pick_folder(&mut self, title: &str) -> Option<PathBuf> {
        rfd::FileDialog::new().set_title(title).pick_folder()
    }
}

/// Answers every dialog from a fixed directory (tests, scripted screenshots).
pub struct FixedDialogs {
    pub dir: PathBuf,
    /// Every path handed out, in order.
    pub given: std::sync::Arc<std::sync::Mutex<Vec<PathBuf>>>,
}

impl FileDialogs for FixedDialogs {
    fn save_file(&mut self, _title: &str, suggested: &str) -> Option<PathBuf> {
        let p = self.dir.join(suggested);
        self.given.lock().ok()?.push(p.clone());
        Some(p)
    }
    fn pick_folder(&mut self, _title: &str) -> Option<PathBuf> {
        let n = self.given.lock().ok()?.len();
        let p = self.dir.join(format!("folder-{n}"));
        std::fs::create_dir_all(&p).ok()?;
        self.given.lock().ok()?.push(p.clone());
        Some(p)
    }
}
