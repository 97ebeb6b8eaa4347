//! The `routelab` application: the workbench GUI and the command line (headless, same engine).

pub mod cli;
pub mod gui;
pub mod notebook;
pub mod units;
