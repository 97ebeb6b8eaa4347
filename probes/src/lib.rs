//! RouteLab's analyses over captures, trace files and export.
//!
//! - [`trace`]: the `routelab-trace/1` file format (write, read, validate);
//! - [`summary`]: per-layer expert load of a run, as printed by `routelab run`;
//! - [`atomic`]: atomic writes for everything a user keeps.

pub mod analysis;
pub mod atomic;
pub mod error;
pub mod export;
pub mod jobs;
pub mod stats;
pub mod summary;
pub mod trace;

pub use error::{ProbeError, Result};
