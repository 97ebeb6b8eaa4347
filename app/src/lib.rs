//! The `routelab` application: the workbench GUI and the command line (headless, same engine).
// Data from outside the process (model files, notebooks, traces, specs, the network) is never
// unwrapped: a failure is an error naming the file. Tests may (clippy.toml); the few internal
// invariants that expect carry an `allow` with the reason.
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod cli;
pub mod gui;
pub mod notebook;
pub mod units;
