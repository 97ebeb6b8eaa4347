//! The plot kinds every RouteLab view exports through: labelled heatmaps with a colour scale,
//! grouped bars, categorical maps (token × layer routing) and line plots.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::figure::{Plot, FONT};

type R<T> = std::result::Result<T, String>;

fn e<E: std::fmt::Debug>(err: E) -> String {
    format!("{err:?}")
}

/// Sizes chosen so text stays legible when a 1600 px figure is printed one column wide.
const TITLE: u32 = 40;
const LABEL: u32 = 30;
const TICK: u32 = 24;

/// Distinguishable colours for categories (Tableau 10, then golden-angle hues).
pub fn category_color(i: usize) -> RGBColor {
    const T10: [(u8, u8, u8); 10] = [
        (78, 121, 167),
        (242, 142, 43),
        (225, 87, 89),
        (118, 183, 178),
        (89, 161, 79),
        (237, 201, 72),
        (176, 122, 161),
        (255, 157, 167),
        (156, 117, 95),
        (186, 176, 172),
    ];
    if i < T10.len() {
        let (r, g, b) = T10[i];
        return RGBColor(r, g, b);
    }
    let hue = ((i as f64) * 137.507_764) % 360.0 / 360.0;
    let light = if (i / 10).is_multiple_of(2) { 0.45 } else { 0.62 };
    let c = HSLColor(hue, 0.65, light).to_rgba();
    RGBColor(c.0, c.1, c.2)
}

fn viridis(v: f64, min: f64, max: f64) -> RGBColor {
    let t = if max > min { ((v - min) / (max - min)).clamp(0.0, 1.0) } else { 0.5 };
    scale_color(t as f32)
}

/// The colour scale of every heatmap (viridis), at `t` in 0..=1: exported plots and the live
/// views use this one function.
pub fn scale_color(t: f32) -> RGBColor {
    ViridisRGB::get_color(t.clamp(0.0, 1.0))
}

/// A matrix shown as coloured cells with a colour scale.
#[derive(Clone, Debug)]
pub struct Heatmap {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// One per row, top to bottom.
    pub row_labels: Vec<String>,
    /// One per column.
    pub col_labels: Vec<String>,
    /// `[rows][cols]`; NaN cells are drawn grey.
    pub values: Vec<Vec<f64>>,
    pub scale_label: String,
    /// Fixed colour range; default is the data's range.
    pub range: Option<(f64, f64)>,
    /// Write each value in its cell (small matrices).
    pub annotate: bool,
}

impl Heatmap {
    fn range(&self) -> (f64, f64) {
        if let Some(r) = self.range {
            return r;
        }
        let finite = self.values.iter().flatten().cloned().filter(|v| v.is_finite());
        let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
        if lo.is_finite() {
            (lo, if hi > lo { hi } else { lo + 1.0 })
        } else {
            (0.0, 1.0)
        }
    }
}

/// n cells: plotters' integer ranges include their end, so 0..n−1 makes n segments.
fn segments(n: usize) -> plotters::coord::ranged1d::SegmentedCoord<plotters::coord::types::RangedCoordusize> {
    (0..n.max(1) - 1).into_segmented()
}

fn every_nth_label(n: usize, max_labels: usize) -> usize {
    n.div_ceil(max_labels.max(1)).max(1)
}

impl Plot for Heatmap {
    fn size(&self) -> (u32, u32) {
        let cols = self.col_labels.len().max(1) as u32;
        let rows = self.row_labels.len().max(1) as u32;
        let w = 1600u32;
        // Keep cells roughly square, within sensible bounds.
        let cell = ((w - 480) / cols).clamp(6, 120);
        let h = (rows * cell + 360).clamp(600, 2400);
        (w, h)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> R<()> {
        area.fill(&WHITE).map_err(e)?;
        let (w, _) = self.size();
        let (main, bar) = area.split_horizontally(w - 220);
        let rows = self.row_labels.len();
        let cols = self.col_labels.len();
        let (lo, hi) = self.range();
        let max_col_label = self.col_labels.iter().map(|s| s.chars().count()).max().unwrap_or(1);
        let rotate = cols > 16 || max_col_label > 4;
        let col_step = every_nth_label(cols, 48);
        let row_step = every_nth_label(rows, 48);
        let mut chart = ChartBuilder::on(&main)
            .caption(visible(&self.title), (FONT, TITLE).into_font())
            .margin(24)
            .x_label_area_size(if rotate { 70 + 16 * max_col_label.min(16) as u32 } else { 80 })
            .y_label_area_size(60 + 14 * self.row_labels.iter().map(|s| s.chars().count()).max().unwrap_or(1).min(16) as u32)
            .build_cartesian_2d(segments(cols), segments(rows))
            .map_err(e)?;
        let col_labels = &self.col_labels;
        let row_labels = &self.row_labels;
        let y_fmt = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) if *i < rows && (rows - 1 - i).is_multiple_of(row_step) => visible(&row_labels[rows - 1 - i]),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(cols + 1)
            .y_labels(rows + 1)
            .x_label_formatter(&|_| String::new())
            .y_label_formatter(&y_fmt)
            .y_label_style((FONT, TICK).into_font())
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .axis_desc_style((FONT, LABEL).into_font())
            .draw()
            .map_err(e)?;
        let cells = self.values.iter().enumerate().flat_map(|(r, row)| {
            row.iter().enumerate().map(move |(c, &v)| {
                let y = rows - 1 - r;
                let color = if v.is_finite() { viridis(v, lo, hi) } else { RGBColor(200, 200, 200) };
                Rectangle::new(
                    [(SegmentValue::Exact(c), SegmentValue::Exact(y)), (SegmentValue::Exact(c + 1), SegmentValue::Exact(y + 1))],
                    color.filled(),
                )
            })
        });
        chart.draw_series(cells).map_err(e)?;
        let axis_y = pixel_x(&chart, &main, SegmentValue::Exact(0)).1;
        let labels: Vec<(i32, String)> =
            (0..cols).step_by(col_step).map(|c| (pixel_x(&chart, &main, SegmentValue::CenterOf(c)).0, col_labels[c].clone())).collect();
        draw_x_labels(&main, axis_y, &labels, rotate, TICK)?;
        if self.annotate && rows * cols <= 400 {
            let texts = self.values.iter().enumerate().flat_map(|(r, row)| {
                row.iter().enumerate().map(move |(c, &v)| {
                    let y = rows - 1 - r;
                    let t = if lo.is_finite() && (v - lo) / (hi - lo).max(1e-12) > 0.6 { BLACK } else { WHITE };
                    // Grey cells have no value; small values keep two significant digits.
                    let label = if v.is_nan() {
                        String::new()
                    } else if v.abs() >= 100.0 || v == v.trunc() {
                        format!("{v:.0}")
                    } else if v.abs() < 0.01 {
                        format!("{v:.1e}")
                    } else {
                        format!("{v:.2}")
                    };
                    Text::new(
                        label,
                        (SegmentValue::CenterOf(c), SegmentValue::CenterOf(y)),
                        (FONT, TICK).into_font().color(&t).pos(plotters::style::text_anchor::Pos::new(
                            plotters::style::text_anchor::HPos::Center,
                            plotters::style::text_anchor::VPos::Center,
                        )),
                    )
                })
            });
            chart.draw_series(texts).map_err(e)?;
        }
        draw_color_bar(&bar, lo, hi, &self.scale_label, self.title.is_empty())
    }
}

/// A vertical colour scale with value ticks and its label.
fn draw_color_bar<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, lo: f64, hi: f64, label: &str, no_title: bool) -> R<()> {
    let mut chart = ChartBuilder::on(area)
        .margin_top(if no_title { 24 } else { 90 })
        .margin_bottom(110)
        .margin_right(10)
        .y_label_area_size(0)
        .right_y_label_area_size(110)
        .build_cartesian_2d(0f64..1f64, lo..hi)
        .map_err(e)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(6)
        .y_label_style((FONT, TICK).into_font())
        .y_label_formatter(&|v| {
            if (hi - lo).abs() < 0.1 || v.abs() < 0.01 && *v != 0.0 {
                format!("{v:.3}")
            } else if (hi - lo).abs() < 10.0 {
                format!("{v:.2}")
            } else {
                format!("{v:.0}")
            }
        })
        .y_desc(label)
        .axis_desc_style((FONT, TICK).into_font())
        .draw()
        .map_err(e)?;
    let steps = 200;
    chart
        .draw_series((0..steps).map(|i| {
            let a = lo + (hi - lo) * i as f64 / steps as f64;
            let b = lo + (hi - lo) * (i + 1) as f64 / steps as f64;
            Rectangle::new([(0.0, a), (1.0, b)], viridis((a + b) / 2.0, lo, hi).filled())
        }))
        .map_err(e)?;
    Ok(())
}

/// Grouped bars: for each category one bar per series.
#[derive(Clone, Debug)]
pub struct Bars {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub categories: Vec<String>,
    /// (series name, one value per category).
    pub series: Vec<(String, Vec<f64>)>,
}

impl Plot for Bars {
    fn size(&self) -> (u32, u32) {
        (1600, 1000)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> R<()> {
        area.fill(&WHITE).map_err(e)?;
        let n_cat = self.categories.len().max(1);
        let n_ser = self.series.len().max(1);
        // Each category spans n_ser bars plus one gap slot.
        let slot = n_ser + 1;
        let values = self.series.iter().flat_map(|(_, v)| v.iter().cloned()).filter(|v| v.is_finite());
        let (lo, hi) = values.fold((0f64, 0f64), |(a, b), v| (a.min(v), b.max(v)));
        let hi = if hi > lo { hi + 0.08 * (hi - lo) } else { lo + 1.0 };
        let max_label = self.categories.iter().map(|s| s.chars().count()).max().unwrap_or(1);
        let rotate = n_cat > 12 || max_label * n_cat > 90;
        let mut chart = ChartBuilder::on(area)
            .caption(visible(&self.title), (FONT, TITLE).into_font())
            .margin(24)
            .x_label_area_size(if rotate { 40 + 13 * max_label.min(20) as u32 } else { 80 })
            .y_label_area_size(110)
            .build_cartesian_2d(segments(n_cat * slot), lo..hi)
            .map_err(e)?;
        let span = (hi - lo).abs();
        let y_fmt = |v: &f64| {
            if span >= 20.0 {
                format!("{v:.0}")
            } else if span >= 2.0 {
                format!("{v:.1}")
            } else {
                format!("{v:.2}")
            }
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(RGBColor(240, 240, 240))
            .x_labels(2)
            .x_label_formatter(&|_| String::new())
            .y_label_formatter(&y_fmt)
            .y_label_style((FONT, TICK).into_font())
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .axis_desc_style((FONT, LABEL).into_font())
            .draw()
            .map_err(e)?;
        for (s, (name, vals)) in self.series.iter().enumerate() {
            let color = category_color(s);
            chart
                .draw_series(vals.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(c, &v)| {
                    let x = c * slot + s;
                    Rectangle::new(
                        [(SegmentValue::Exact(x), 0f64.max(lo).min(v)), (SegmentValue::Exact(x + 1), v.max(0.0))],
                        color.filled(),
                    )
                }))
                .map_err(e)?
                .label(name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 10), (x + 24, y + 10)], color.filled()));
            // The value above each bar, so a bar of height zero still reads as a measured 0.
            let style = (FONT, TICK).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Bottom));
            chart
                .draw_series(
                    vals.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(c, &v)| {
                        Text::new(y_fmt(&v), (SegmentValue::CenterOf(c * slot + s), v.max(0.0) + 0.01 * span), style.clone())
                    }),
                )
                .map_err(e)?;
        }
        let axis_y = pixel_x(&chart, area, SegmentValue::Exact(0)).1;
        let labels: Vec<(i32, String)> = self
            .categories
            .iter()
            .enumerate()
            .map(|(c, name)| {
                let left = pixel_x(&chart, area, SegmentValue::Exact(c * slot)).0;
                let right = pixel_x(&chart, area, SegmentValue::Exact(c * slot + n_ser)).0;
                ((left + right) / 2, name.clone())
            })
            .collect();
        draw_x_labels(area, axis_y, &labels, rotate, TICK)?;
        if self.series.len() > 1 || !self.series.first().is_some_and(|s| s.0.is_empty()) {
            draw_legend(&mut chart)?;
        }
        Ok(())
    }
}

/// Categories over a grid: e.g. each (token, layer) cell coloured by its top-1 expert.
#[derive(Clone, Debug)]
pub struct CategoryMap {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Column labels (token texts).
    pub col_labels: Vec<String>,
    /// Row labels, top to bottom.
    pub row_labels: Vec<String>,
    /// `[rows][cols]` category index; `None` = no value (a dense layer).
    pub cells: Vec<Vec<Option<usize>>>,
    /// Names of the categories for the legend (`e0`, `e1`, …).
    pub category_names: Vec<String>,
}

impl Plot for CategoryMap {
    fn size(&self) -> (u32, u32) {
        let cols = self.col_labels.len().max(1) as u32;
        let rows = self.row_labels.len().max(1) as u32;
        let w = (cols * 34 + 560).clamp(1200, 4000);
        let h = (rows * 34 + 460).clamp(600, 2400);
        (w, h)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> R<()> {
        area.fill(&WHITE).map_err(e)?;
        let (w, _) = self.size();
        let n = self.category_names.len();
        let legend_cols = n.div_ceil(32).max(1) as u32;
        let (main, legend) = area.split_horizontally(w - 120 * legend_cols - 40);
        let rows = self.row_labels.len();
        let cols = self.col_labels.len();
        let max_label = self.col_labels.iter().map(|s| s.chars().count()).max().unwrap_or(1).min(14) as u32;
        let mut chart = ChartBuilder::on(&main)
            .caption(visible(&self.title), (FONT, TITLE).into_font())
            .margin(24)
            .x_label_area_size(50 + 14 * max_label)
            .y_label_area_size(130)
            .build_cartesian_2d(segments(cols), segments(rows))
            .map_err(e)?;
        let row_labels = &self.row_labels;
        let row_step = every_nth_label(rows, 48);
        let y_fmt = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) if *i < rows && (rows - 1 - i).is_multiple_of(row_step) => visible(&row_labels[rows - 1 - i]),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            // Column labels are drawn below (rotated); keep the ticks, blank their text.
            .x_labels(cols + 1)
            .x_label_formatter(&|_| String::new())
            .y_labels(rows + 1)
            .y_label_formatter(&y_fmt)
            .y_label_style((FONT, TICK).into_font())
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .axis_desc_style((FONT, LABEL).into_font())
            .draw()
            .map_err(e)?;
        let step = every_nth_label(cols, 160);
        let axis_y = pixel_x(&chart, &main, SegmentValue::Exact(0)).1;
        let labels: Vec<(i32, String)> =
            (0..cols).step_by(step).map(|c| (pixel_x(&chart, &main, SegmentValue::CenterOf(c)).0, self.col_labels[c].clone())).collect();
        draw_x_labels(&main, axis_y, &labels, true, 22)?;
        let cells = self.cells.iter().enumerate().flat_map(|(r, row)| {
            row.iter().enumerate().map(move |(c, v)| {
                let y = rows - 1 - r;
                let color = match v {
                    Some(k) => category_color(*k),
                    None => RGBColor(235, 235, 235),
                };
                Rectangle::new(
                    [(SegmentValue::Exact(c), SegmentValue::Exact(y)), (SegmentValue::Exact(c + 1), SegmentValue::Exact(y + 1))],
                    color.filled(),
                )
            })
        });
        chart.draw_series(cells).map_err(e)?;
        // Legend: a swatch and name per category, in columns of 32.
        let style = (FONT, 22).into_font();
        for (i, name) in self.category_names.iter().enumerate() {
            let col = (i / 32) as i32;
            let row = (i % 32) as i32;
            let (x, y) = (10 + col * 120, 100 + row * 30);
            legend.draw(&Rectangle::new([(x, y), (x + 22, y + 22)], category_color(i).filled())).map_err(e)?;
            legend.draw(&Text::new(name.clone(), (x + 30, y), style.clone())).map_err(e)?;
        }
        Ok(())
    }
}

/// Token text made drawable and XML-safe: control characters become their Unicode control
/// pictures (ESC → ␛), whitespace-only tokens show their whitespace.
pub fn visible(label: &str) -> String {
    let shown = if label.trim().is_empty() && !label.is_empty() {
        label.replace(' ', "␣").replace('\n', "↵").replace('\t', "⇥")
    } else {
        label.trim_end_matches('\n').to_string()
    };
    shown
        .chars()
        .map(|c| match c as u32 {
            0..=0x1F => char::from_u32(0x2400 + c as u32).unwrap_or('?'),
            0x7F => '␡',
            0xFFFE | 0xFFFF => '\u{FFFD}',
            _ => c,
        })
        .collect()
}

/// Labels under an x axis at given pixel centres (area coordinates), horizontal or written
/// downwards. (plotters centres rotated tick labels on the axis, which hides half of each
/// under the plot, and cannot centre a label on a group of bars.)
/// The series legend every multi-series plot draws, in its upper right corner.
fn draw_legend<'a, DB: DrawingBackend + 'a, X: Ranged, Y: Ranged>(chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>) -> R<()> {
    chart
        .configure_series_labels()
        .label_font((FONT, TICK).into_font())
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(e)?;
    Ok(())
}

fn draw_x_labels<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    axis_y: i32,
    labels: &[(i32, String)],
    rotate: bool,
    size: u32,
) -> R<()> {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let style = if rotate {
        (FONT, size).into_font().transform(FontTransform::Rotate90).into_text_style(area).pos(Pos::new(HPos::Left, VPos::Center))
    } else {
        (FONT, size).into_font().into_text_style(area).pos(Pos::new(HPos::Center, VPos::Top))
    };
    for (x, label) in labels {
        area.draw(&Text::new(visible(label), (*x, axis_y + 10), style.clone())).map_err(e)?;
    }
    Ok(())
}

/// Pixel x (relative to `area`) of a segmented coordinate, and the axis' pixel y.
fn pixel_x<DB: DrawingBackend, Y: Ranged>(
    chart: &ChartContext<DB, Cartesian2d<plotters::coord::ranged1d::SegmentedCoord<plotters::coord::types::RangedCoordusize>, Y>>,
    area: &DrawingArea<DB, Shift>,
    x: SegmentValue<usize>,
) -> (i32, i32)
where
    Y::ValueType: Clone,
{
    let y0 = chart.y_range().start;
    let (px, py) = chart.backend_coord(&(x, y0));
    let base = area.get_base_pixel();
    (px - base.0, py - base.1)
}

/// Line series over a shared x axis.
#[derive(Clone, Debug)]
pub struct Lines {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

impl Plot for Lines {
    fn size(&self) -> (u32, u32) {
        (1600, 1000)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> R<()> {
        area.fill(&WHITE).map_err(e)?;
        let pts = self.series.iter().flat_map(|(_, p)| p.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
        let (x0, x1, y0, y1) = pts.fold((f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY), |(a, b, c, d), &(x, y)| {
            (a.min(x), b.max(x), c.min(y), d.max(y))
        });
        let (x0, x1) = if x0.is_finite() && x1 > x0 { (x0, x1) } else { (0.0, 1.0) };
        let (y0, y1) = if y0.is_finite() && y1 > y0 { (y0.min(0.0), y1 + 0.05 * (y1 - y0)) } else { (0.0, 1.0) };
        let mut chart = ChartBuilder::on(area)
            .caption(visible(&self.title), (FONT, TITLE).into_font())
            .margin(24)
            .x_label_area_size(80)
            .y_label_area_size(110)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(e)?;
        chart
            .configure_mesh()
            .light_line_style(RGBColor(235, 235, 235))
            .x_label_style((FONT, TICK).into_font())
            .y_label_style((FONT, TICK).into_font())
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .axis_desc_style((FONT, LABEL).into_font())
            .draw()
            .map_err(e)?;
        for (i, (name, p)) in self.series.iter().enumerate() {
            let color = category_color(i);
            chart
                .draw_series(LineSeries::new(p.iter().cloned().filter(|(x, y)| x.is_finite() && y.is_finite()), color.stroke_width(3)))
                .map_err(e)?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 30, y)], color.stroke_width(3)));
            chart
                .draw_series(p.iter().filter(|(x, y)| x.is_finite() && y.is_finite()).map(|&(x, y)| Circle::new((x, y), 4, color.filled())))
                .map_err(e)?;
        }
        draw_legend(&mut chart)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::figure::{to_png, to_svg};
    use super::*;

    fn heatmap() -> Heatmap {
        Heatmap {
            title: "Expert load".into(),
            x_label: "expert".into(),
            y_label: "layer".into(),
            row_labels: (0..4).map(|l| l.to_string()).collect(),
            col_labels: (0..8).map(|e| format!("e{e}")).collect(),
            values: (0..4).map(|r| (0..8).map(|c| (r * 8 + c) as f64 / 31.0).collect()).collect(),
            scale_label: "share of tokens".into(),
            range: None,
            annotate: true,
        }
    }

    #[test]
    fn png_is_a_png_of_the_declared_size() {
        let png = to_png(&heatmap()).unwrap();
        let img = image::load_from_memory(&png).unwrap();
        assert_eq!((img.width(), img.height()), heatmap().size());
        // Not blank: more than a handful of distinct colours were drawn.
        let rgb = img.to_rgb8();
        let mut colours: Vec<[u8; 3]> = rgb.pixels().map(|p| p.0).collect();
        colours.sort();
        colours.dedup();
        assert!(colours.len() > 50, "{} colours", colours.len());
    }

    #[test]
    fn svg_is_well_formed_and_carries_title_and_labels() {
        let svg = to_svg(&heatmap()).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for needle in ["Expert load", "expert", "layer", "share of tokens", "e7"] {
            assert!(svg.contains(needle), "{needle} missing");
        }
        // Balanced tags: every opened element closes.
        let opens = svg.matches('<').count();
        let closes = svg.matches('>').count();
        assert_eq!(opens, closes);
    }

    #[test]
    fn every_plot_kind_renders() {
        let bars = Bars {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            categories: vec!["a".into(), "b".into()],
            series: vec![("s1".into(), vec![1.0, 2.0]), ("s2".into(), vec![0.5, -1.0])],
        };
        to_png(&bars).unwrap();
        let map = CategoryMap {
            title: "routing".into(),
            x_label: "token".into(),
            y_label: "layer".into(),
            col_labels: vec!["The".into(), " cat".into()],
            row_labels: vec!["0".into(), "1".into()],
            cells: vec![vec![Some(0), Some(3)], vec![None, Some(1)]],
            category_names: (0..4).map(|e| format!("e{e}")).collect(),
        };
        to_png(&map).unwrap();
        let lines = Lines {
            title: "KL".into(),
            x_label: "position".into(),
            y_label: "nats".into(),
            series: vec![("run".into(), vec![(0.0, 0.1), (1.0, 0.3)])],
        };
        to_svg(&lines).unwrap();
    }
}
