//! Errors of the analyses and file formats; bad files are named with what was wrong.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// A trace (or other RouteLab file) is malformed.
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Model(#[from] routelab_model::ModelError),
}

pub type Result<T, E = ProbeError> = std::result::Result<T, E>;

/// Tensor work in analyses (attribution's host arithmetic) fails as the model's would.
impl From<candle_core::Error> for ProbeError {
    fn from(e: candle_core::Error) -> Self {
        ProbeError::Model(e.into())
    }
}

impl ProbeError {
    /// What the user can do about it (see [`routelab_model::ModelError::next_step`]).
    pub fn next_step(&self) -> Option<&'static str> {
        match self {
            ProbeError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => Some("check the path"),
            ProbeError::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => Some("check the file's permissions"),
            ProbeError::Io { .. } | ProbeError::Invalid(_) => None,
            ProbeError::Format { .. } => Some("the file is damaged or not one RouteLab wrote: run the prompt again to write it anew"),
            ProbeError::Model(m) => m.next_step(),
        }
    }

    /// The message and, on a line of its own, what to do (for the GUI).
    pub fn explained(&self) -> String {
        match self.next_step() {
            Some(h) => format!("{self}\n→ {h}"),
            None => self.to_string(),
        }
    }

    pub fn io(path: &Path, source: std::io::Error) -> Self {
        ProbeError::Io { path: path.to_path_buf(), source }
    }
    pub fn format(path: &Path, message: impl Into<String>) -> Self {
        ProbeError::Format { path: path.to_path_buf(), message: message.into() }
    }
}
