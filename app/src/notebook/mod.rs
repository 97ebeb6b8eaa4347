//! Notebooks: the document a researcher works in, kept as plain data apart from the GUI that
//! shows it (the GUI's views read it; only commands change it).
//!
//! A notebook is a directory: `notebook.json` (cells, settings, small results) and `traces/`
//! (the trace file of each prompt cell's last run). Reopening restores every cell
//! with its results, without running anything. How saves stay consistent through a crash:
//! `store.rs`.

mod cell;
mod store;

pub use cell::*;
pub use store::*;
