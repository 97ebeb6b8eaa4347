//! Rendering a plot to PNG or SVG bytes and writing them atomically.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::Format;
use crate::atomic::write_atomic;
use crate::error::{ProbeError, Result};

/// The family name plots use; registered from the embedded DejaVu Sans.
pub const FONT: &str = "DejaVu Sans";

static REGISTER: Once = Once::new();

pub fn register_fonts() {
    REGISTER.call_once(|| {
        let regular: &'static [u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");
        let bold: &'static [u8] = include_bytes!("../../../assets/fonts/DejaVuSans-Bold.ttf");
        // The bytes are valid fonts (checked by tests); a failure would only lose text.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, regular);
        let _ = plotters::style::register_font(FONT, FontStyle::Bold, bold);
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, regular);
    });
}

/// Something that can be drawn on any plotters backend.
pub trait Plot {
    /// Pixel size.
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> std::result::Result<(), String>;
}

pub fn to_png<P: Plot>(plot: &P) -> Result<Vec<u8>> {
    register_fonts();
    let (w, h) = plot.size();
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    {
        let area = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        plot.draw(&area).map_err(|e| ProbeError::Invalid(format!("drawing: {e}")))?;
        area.present().map_err(|e| ProbeError::Invalid(format!("drawing: {e}")))?;
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&rgb, w, h, image::ColorType::Rgb8)
        .map_err(|e| ProbeError::Invalid(format!("PNG encoding: {e}")))?;
    Ok(png)
}

pub fn to_svg<P: Plot>(plot: &P) -> Result<String> {
    register_fonts();
    let mut svg = String::new();
    {
        let area = SVGBackend::with_string(&mut svg, plot.size()).into_drawing_area();
        plot.draw(&area).map_err(|e| ProbeError::Invalid(format!("drawing: {e}")))?;
        area.present().map_err(|e| ProbeError::Invalid(format!("drawing: {e}")))?;
    }
    Ok(svg)
}

/// Writes a plot as PNG or SVG, chosen by the file extension.
pub fn write_plot<P: Plot>(plot: &P, path: &Path) -> Result<()> {
    match Format::of(path)? {
        Format::Png => write_atomic(path, &to_png(plot)?),
        Format::Svg => write_atomic(path, to_svg(plot)?.as_bytes()),
        Format::Csv => Err(ProbeError::Invalid(format!("{}: a plot is written as .png or .svg", path.display()))),
    }
}

use image::ImageEncoder;
