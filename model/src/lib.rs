//! RouteLab's model core.
//!
//! One generic decoder ([`decoder::Model`]) runs every supported family ([`families`]),
//! matching Hugging Face transformers numerically. A forward pass records what
//! [`capture::CaptureSpec`] asks for and applies [`interventions::Interventions`], both plain
//! data. [`session::Session`] ties model, tokenizer and chat template together and generates.
// Data from outside the process (model files, notebooks, traces, specs, the network) is never
// unwrapped: a failure is an error naming the file. Tests may (clippy.toml); the few internal
// invariants that expect carry an `allow` with the reason.
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod cache;
pub mod capture;
pub mod capture_size;
pub mod chat;
pub mod checkpoint;
pub mod config;
pub mod decoder;
pub mod error;
pub mod families;
pub mod gguf;
pub mod hooks;
pub mod hub;
pub mod interventions;
pub mod layers;
pub mod memory;
pub mod patch;
pub mod replay;
pub mod repo_path;
pub mod rope;
pub mod sampling;
pub mod session;
pub mod source;
pub mod store;
pub mod tokenizer;
pub mod weights;
pub mod whole_file;

pub use error::{ModelError, Result};
