//! Export of every analysis as data (CSV) and as a publication plot (PNG or SVG).
//!
//! Plots are drawn with plotters in DejaVu Sans (embedded in the binary, registered on first
//! use), at a size that stays readable when scaled to a paper column: 1600 px wide PNGs with
//! 28–40 px text, or SVG. Every plot has a title, labelled axes and a legend or colour scale.

pub mod csv;
pub mod figure;
pub mod plots;
pub mod views;

use std::path::Path;

use crate::error::{ProbeError, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Png,
    Svg,
    Csv,
}

impl Format {
    pub fn of(path: &Path) -> Result<Format> {
        match path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref() {
            Some("png") => Ok(Format::Png),
            Some("svg") => Ok(Format::Svg),
            Some("csv") => Ok(Format::Csv),
            _ => Err(ProbeError::Invalid(format!("{}: the file name must end in .png, .svg or .csv", path.display()))),
        }
    }
}
