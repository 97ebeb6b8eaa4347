//! Errors of the model core. Every error caused by bad input names the file, tensor or field at
//! fault and what was expected, so a researcher can fix the checkpoint or the command line
//! without reading RouteLab's source.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read at all.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    /// config.json (or GGUF metadata standing in for it) is missing a field or has a bad value.
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },

    /// `model_type` names a family RouteLab does not implement.
    #[error(
        "{}: unknown model_type {found:?}; supported model types: {}",
        path.display(),
        supported.join(", ")
    )]
    UnknownArchitecture { path: PathBuf, found: String, supported: Vec<&'static str> },

    /// A weight file is unreadable: truncated, corrupt header, unsupported dtype.
    #[error("{}: {message}", path.display())]
    Weights { path: PathBuf, message: String },

    /// The model would not fit in the memory available (see [`crate::memory`]).
    #[error("{}: {message}", path.display())]
    Memory { path: PathBuf, message: String },

    /// A tensor the architecture needs is not in any weight file.
    #[error("{}: missing tensor {name:?}{}", location, hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default())]
    MissingTensor { location: String, name: String, hint: Option<String> },

    /// A tensor exists but its shape disagrees with config.json.
    #[error("{}: tensor {name:?} has shape {found:?}, expected {expected:?} from the model's config", path.display())]
    TensorShape { path: PathBuf, name: String, expected: Vec<usize>, found: Vec<usize> },

    /// Tokenizer or chat template could not be loaded or applied.
    #[error("{}: {message}", path.display())]
    Tokenizer { path: PathBuf, message: String },

    /// The model source string did not resolve to anything loadable.
    #[error("{0}")]
    Source(String),

    /// The prompt (plus what is asked to be generated) does not fit the context window.
    #[error("the prompt has {tokens} tokens but {model} has a context window of {max} positions")]
    ContextOverflow { tokens: usize, max: usize, model: String },

    /// An intervention or capture request does not fit the model (layer out of range, expert
    /// intervention on a dense layer, …).
    #[error("{0}")]
    Invalid(String),

    /// The caller asked to stop.
    #[error("cancelled")]
    Cancelled,

    /// A tensor operation failed: a bug or a device problem, not bad input.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

impl ModelError {
    /// What the user can do about it, where the message itself does not already say (the CLI
    /// prints it as `hint:`, the GUI under the message, Python as the exception's `hint`).
    pub fn next_step(&self) -> Option<&'static str> {
        Some(match self {
            ModelError::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => {
                    "check the path: --model takes a model directory, a .gguf file, a bundled model's name or owner/name[:QUANT] on the hub"
                }
                std::io::ErrorKind::PermissionDenied => "check the file's permissions",
                std::io::ErrorKind::InvalidData => {
                    "the file is damaged or not what its name says: take it again from the model's repository"
                }
                _ => return None,
            },
            ModelError::Config { .. } => "fix that field, or take config.json again from the model's repository",
            ModelError::UnknownArchitecture { .. } => return None,
            ModelError::Weights { .. } => "the weights are damaged, incomplete or not a checkpoint: download them again",
            ModelError::Memory { .. } => return None,
            ModelError::MissingTensor { .. } | ModelError::TensorShape { .. } => {
                "config.json and the weights are of different models: use the ones from the same repository"
            }
            ModelError::Tokenizer { .. } => "take tokenizer.json and tokenizer_config.json again from the model's repository",
            ModelError::Source(_) | ModelError::Invalid(_) | ModelError::Cancelled => return None,
            ModelError::ContextOverflow { .. } => "shorten the prompt or lower --max-new-tokens",
            ModelError::Candle(_) => "this is a bug or a device failure, not your input: please report it with the command that gave it",
        })
    }

    pub fn config(path: &Path, message: impl Into<String>) -> Self {
        ModelError::Config { path: path.to_path_buf(), message: message.into() }
    }
    pub fn weights(path: &Path, message: impl Into<String>) -> Self {
        ModelError::Weights { path: path.to_path_buf(), message: message.into() }
    }
    pub fn tokenizer(path: &Path, message: impl Into<String>) -> Self {
        ModelError::Tokenizer { path: path.to_path_buf(), message: message.into() }
    }
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        ModelError::Io { path: path.to_path_buf(), source }
    }
}
