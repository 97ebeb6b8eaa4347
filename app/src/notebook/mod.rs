//! Notebooks: the document a researcher works in, kept as plain data apart from the GUI that
//! shows it (the GUI's views read it; only commands change it).
//!
//! A notebook is a directory: `notebook.json` (cells, settings, small results) and `traces/`
//! (one trace file per prompt cell that has run). Reopening restores every cell
//! with its results, without running anything.

mod cell;
mod store;

pub use cell::*;
pub use store::*;
