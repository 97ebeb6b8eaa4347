//! The `routelab` application: command line (headless, same engine as the GUI).

pub mod cli;
