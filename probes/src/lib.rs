//! RouteLab's analyses over captures, trace files and export.
//!
//! - [`trace`]: trace files, `routelab-trace/2` (write, read, validate; `/1` read too);
//! - [`jobs`]: the typed jobs the CLI, the GUI and Python run;
//! - [`summary`]: per-layer expert load of a run, as printed by `routelab run`;
//! - [`atomic`]: atomic writes for everything a user keeps.
// Data from outside the process (model files, notebooks, traces, specs, the network) is never
// unwrapped: a failure is an error naming the file. Tests may (clippy.toml); the few internal
// invariants that expect carry an `allow` with the reason.
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod analysis;
pub mod atomic;
pub mod error;
pub mod export;
pub mod jobs;
pub mod json_float;
pub mod stats;
pub mod summary;
pub mod trace;

pub use error::{ProbeError, Result};
