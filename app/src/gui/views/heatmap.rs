//! A heat map with named rows and columns and a numeric colour scale (a patching sweep's
//! layers × positions). Unlike `grid.rs`'s numbered grids its columns carry text (token pairs),
//! so their labels are drawn slanted under the columns, and the scale shows values, not just
//! "high" and "low". Painted cell by cell, no widgets.

use egui::epaint::TextShape;
use egui::{Align2, Color32, FontId, Rect, Sense, Stroke, Ui, Vec2};

use super::grid::GridGeometry;
use super::{scale_color, text_on};

pub struct HeatmapSpec<'a> {
    /// Accessibility label (what screen readers and UI tests find it by).
    pub label: String,
    pub row_title: &'a str,
    pub col_title: &'a str,
    pub row_labels: &'a [String],
    pub col_labels: &'a [String],
    /// `[rows][cols]`; NaN: no value (drawn as background).
    pub values: &'a [Vec<f64>],
    /// The values at the two ends of the colour scale.
    pub range: (f64, f64),
    pub scale_caption: &'a str,
    pub tooltip: &'a dyn Fn(usize, usize) -> String,
}

/// Longest column label drawn; the tooltip has the whole one.
const MAX_LABEL_CHARS: usize = 22;

fn shorten(s: &str) -> String {
    if s.chars().count() <= MAX_LABEL_CHARS {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(MAX_LABEL_CHARS - 1).collect::<String>())
    }
}

/// Where `v` falls on the scale, in [0, 1].
pub fn scale_position(v: f64, (lo, hi): (f64, f64)) -> f32 {
    if hi > lo {
        ((v - lo) / (hi - lo)).clamp(0.0, 1.0) as f32
    } else {
        0.5
    }
}

/// Draws the heat map; returns where its cells are.
pub fn heatmap(ui: &mut Ui, spec: &HeatmapSpec) -> GridGeometry {
    let (rows, cols) = (spec.row_labels.len(), spec.col_labels.len());
    let font = FontId::proportional(11.0);
    let text = ui.visuals().text_color();
    let weak = ui.visuals().weak_text_color();
    let galley = |ui: &Ui, s: String, c: Color32| ui.painter().layout_no_wrap(s, font.clone(), c);
    let row_title = format!("{} ↓", spec.row_title);
    let row_w =
        spec.row_labels.iter().map(|l| galley(ui, l.clone(), text).size().x).fold(galley(ui, row_title.clone(), weak).size().x, f32::max)
            + 8.0;
    let col_galleys: Vec<_> = spec.col_labels.iter().map(|l| galley(ui, shorten(l), text)).collect();
    let col_len = col_galleys.iter().map(|g| g.size().x).fold(0.0, f32::max);
    // Slanted 45°: a label reaches `len / √2` down and right of its column.
    let slant = std::f32::consts::FRAC_1_SQRT_2;
    let (label_h, label_w) = (col_len * slant + 14.0, col_len * slant + 8.0);
    let avail = (ui.available_width() - row_w - label_w).max(120.0);
    let cell_w = (avail / cols.max(1) as f32).clamp(12.0, 64.0);
    let cell_h = if rows <= 24 { 22.0 } else { (440.0 / rows as f32).max(6.0) };
    let legend_h = 46.0;
    let top = 18.0;
    let size = Vec2::new(row_w + cell_w * cols as f32 + label_w, top + cell_h * rows as f32 + label_h + legend_h);
    let (rect, resp) = ui.allocate_exact_size(size, Sense::hover());
    let label = spec.label.clone();
    resp.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Canvas, true, label.clone()));
    let painter = ui.painter_at(rect);
    let origin = rect.min + Vec2::new(row_w, top);
    let bg = if ui.visuals().dark_mode { Color32::from_gray(45) } else { Color32::from_gray(225) };
    let cell_rect =
        |r: usize, c: usize| Rect::from_min_size(origin + Vec2::new(c as f32 * cell_w, r as f32 * cell_h), Vec2::new(cell_w, cell_h));

    painter.text(egui::pos2(rect.min.x, origin.y - 2.0), Align2::LEFT_BOTTOM, row_title, font.clone(), weak);
    painter.text(origin + Vec2::new(0.0, -2.0), Align2::LEFT_BOTTOM, format!("{} →", spec.col_title), font.clone(), weak);
    let annotate = cell_w >= 34.0 && cell_h >= 16.0;
    let row_step = if cell_h >= 12.0 { 1 } else { (12.0 / cell_h).ceil() as usize };
    for (r, row_label) in spec.row_labels.iter().enumerate() {
        if r % row_step == 0 {
            painter.text(origin + Vec2::new(-5.0, (r as f32 + 0.5) * cell_h), Align2::RIGHT_CENTER, row_label, font.clone(), text);
        }
        for c in 0..cols {
            let v = spec.values.get(r).and_then(|row| row.get(c)).copied().unwrap_or(f64::NAN);
            let color = if v.is_finite() { scale_color(scale_position(v, spec.range)) } else { bg };
            let cr = cell_rect(r, c);
            painter.rect_filled(cr.shrink(0.5), 0.0, color);
            if annotate && v.is_finite() {
                painter.text(cr.center(), Align2::CENTER_CENTER, format!("{v:.2}"), FontId::proportional(10.0), text_on(color));
            }
        }
    }
    // Column labels, slanted, every one that fits.
    let col_step = ((13.0 / cell_w).ceil() as usize).max(1);
    let grid_bottom = origin.y + cell_h * rows as f32;
    for (c, g) in col_galleys.into_iter().enumerate().step_by(col_step) {
        let at = egui::pos2(origin.x + (c as f32 + 0.5) * cell_w - 3.0, grid_bottom + 4.0);
        painter.add(TextShape::new(at, g, text).with_angle(std::f32::consts::FRAC_PI_4));
    }

    // The colour scale, under the labels: a gradient with the range's ends (and 0 and 1 when
    // inside it) marked.
    let ly = grid_bottom + label_h;
    let caption = painter.text(egui::pos2(rect.min.x, ly + 4.0), Align2::LEFT_TOP, spec.scale_caption, font.clone(), weak);
    let (bar_x, bar_w, bar_h) = (caption.max.x + 10.0, 220.0, 12.0);
    let steps = 48;
    for i in 0..steps {
        let t = i as f32 / steps as f32;
        let x = bar_x + bar_w * t;
        painter.rect_filled(
            Rect::from_min_size(egui::pos2(x, ly + 4.0), Vec2::new(bar_w / steps as f32 + 0.5, bar_h)),
            0.0,
            scale_color(t),
        );
    }
    let (lo, hi) = spec.range;
    let mut ticks = vec![lo, hi];
    ticks.extend([0.0, 1.0].into_iter().filter(|&v| v > lo + 0.05 * (hi - lo) && v < hi - 0.05 * (hi - lo)));
    for v in ticks {
        let x = bar_x + bar_w * scale_position(v, spec.range);
        painter.line_segment([egui::pos2(x, ly + 4.0 + bar_h), egui::pos2(x, ly + 8.0 + bar_h)], Stroke::new(1.0, weak));
        painter.text(egui::pos2(x, ly + 9.0 + bar_h), Align2::CENTER_TOP, format!("{v:.2}"), font.clone(), text);
    }
    let nan_x = bar_x + bar_w + 16.0;
    painter.rect_filled(Rect::from_min_size(egui::pos2(nan_x, ly + 4.0), Vec2::splat(bar_h)), 0.0, bg);
    painter.text(egui::pos2(nan_x + bar_h + 4.0, ly + 4.0), Align2::LEFT_TOP, "no value", font.clone(), weak);

    let at = |pos: egui::Pos2| -> Option<(usize, usize)> {
        let d = pos - origin;
        if d.x < 0.0 || d.y < 0.0 {
            return None;
        }
        let (c, r) = ((d.x / cell_w) as usize, (d.y / cell_h) as usize);
        (r < rows && c < cols).then_some((r, c))
    };
    if let Some((r, c)) = resp.hover_pos().and_then(at) {
        painter.rect_stroke(cell_rect(r, c), 0.0, Stroke::new(1.5, ui.visuals().strong_text_color()), egui::StrokeKind::Outside);
        resp.on_hover_text((spec.tooltip)(r, c));
    }
    GridGeometry { origin, cell: Vec2::new(cell_w, cell_h) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_map_onto_the_scale_clamped_to_its_ends() {
        assert_eq!(scale_position(0.5, (0.0, 1.0)), 0.5);
        assert_eq!(scale_position(-0.2, (-0.2, 1.8)), 0.0);
        assert_eq!(scale_position(0.8, (-0.2, 1.8)), 0.5);
        assert_eq!(scale_position(3.0, (0.0, 1.0)), 1.0);
        assert_eq!(scale_position(7.0, (1.0, 1.0)), 0.5, "a flat range sits mid-scale");
    }

    #[test]
    fn long_column_labels_are_shortened_with_an_ellipsis() {
        assert_eq!(shorten("3 \" a\""), "3 \" a\"");
        let long = "12 \" France\"→\" Italy\" and more";
        let s = shorten(long);
        assert_eq!(s.chars().count(), MAX_LABEL_CHARS);
        assert!(s.ends_with('…') && long.starts_with(s.trim_end_matches('…')));
    }
}
