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

impl ProbeError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        ProbeError::Io { path: path.to_path_buf(), source }
    }
    pub fn format(path: &Path, message: impl Into<String>) -> Self {
        ProbeError::Format { path: path.to_path_buf(), message: message.into() }
    }
}
