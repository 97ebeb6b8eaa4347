//! Horizontal bars of signed values with their labels (an attribution's contributions): one row
//! per item, bars from a shared zero line, coloured by sign, the value written at the bar's end.

use egui::{Align2, Color32, FontId, Rect, Sense, Stroke, Ui, Vec2};

/// Raises the value (blue) or lowers it (orange-red): apart for colour-blind readers too.
pub const POSITIVE: Color32 = Color32::from_rgb(66, 133, 222);
pub const NEGATIVE: Color32 = Color32::from_rgb(226, 96, 58);

/// Where zero sits in `[0, 1]` of the bar area, and the value one bar width spans: bars of one
/// sign start at the edge, mixed signs share the area by their largest magnitudes.
pub fn axis(values: &[f64]) -> (f32, f64) {
    let pos = values.iter().copied().filter(|v| v.is_finite()).fold(0.0, f64::max);
    let neg = values.iter().copied().filter(|v| v.is_finite()).fold(0.0, f64::min).abs();
    let span = pos + neg;
    if span == 0.0 {
        return (0.0, 1.0);
    }
    ((neg / span) as f32, span)
}

/// Draws the bars; `rows` are (label, value). Returns the hovered row.
pub fn signed_bars(ui: &mut Ui, label: String, rows: &[(String, f64)]) -> Option<usize> {
    let font = FontId::monospace(11.0);
    let text = ui.visuals().text_color();
    let label_w = rows.iter().map(|(l, _)| ui.painter().layout_no_wrap(l.clone(), font.clone(), text).size().x).fold(0.0, f32::max) + 10.0;
    let value_w = 64.0;
    let bar_w = (ui.available_width() - label_w - 2.0 * value_w).clamp(120.0, 460.0);
    let row_h = 17.0;
    let size = Vec2::new(label_w + bar_w + 2.0 * value_w, row_h * rows.len() as f32 + 4.0);
    let (rect, resp) = ui.allocate_exact_size(size, Sense::hover());
    resp.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Canvas, true, label.clone()));
    let painter = ui.painter_at(rect);
    let values: Vec<f64> = rows.iter().map(|r| r.1).collect();
    let (zero, span) = axis(&values);
    let area_x = rect.min.x + label_w + value_w;
    let zero_x = area_x + zero * bar_w;
    let hovered = resp.hover_pos().map(|p| ((p.y - rect.min.y) / row_h) as usize).filter(|&r| r < rows.len());
    for (i, (name, v)) in rows.iter().enumerate() {
        let y = rect.min.y + i as f32 * row_h;
        if hovered == Some(i) {
            painter.rect_filled(
                Rect::from_min_size(egui::pos2(rect.min.x, y), Vec2::new(rect.width(), row_h)),
                2.0,
                ui.visuals().faint_bg_color,
            );
        }
        let mid = y + row_h / 2.0;
        painter.text(egui::pos2(rect.min.x + label_w - 8.0, mid), Align2::RIGHT_CENTER, name, font.clone(), text);
        if !v.is_finite() {
            continue;
        }
        let end_x = zero_x + (*v / span) as f32 * bar_w;
        let (color, anchor, tx) =
            if *v >= 0.0 { (POSITIVE, Align2::LEFT_CENTER, end_x + 4.0) } else { (NEGATIVE, Align2::RIGHT_CENTER, end_x - 4.0) };
        painter.rect_filled(Rect::from_x_y_ranges(zero_x.min(end_x)..=zero_x.max(end_x), (y + 2.5)..=(y + row_h - 2.5)), 1.0, color);
        painter.text(egui::pos2(tx, mid), anchor, format!("{v:+.3}"), font.clone(), text);
    }
    painter
        .line_segment([egui::pos2(zero_x, rect.min.y), egui::pos2(zero_x, rect.max.y)], Stroke::new(1.0, ui.visuals().weak_text_color()));
    if let Some(i) = hovered {
        let (name, v) = &rows[i];
        resp.on_hover_text(format!("{name}: {v:+.4}"));
    }
    hovered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_sits_where_the_signs_divide_the_area() {
        // Worked by hand: +3 and −1 span 4; zero is a quarter in from the left.
        assert_eq!(axis(&[3.0, -1.0, 0.5]), (0.25, 4.0));
        assert_eq!(axis(&[2.0, 1.0]), (0.0, 2.0), "all positive: zero at the left edge");
        assert_eq!(axis(&[-2.0, -0.5]), (1.0, 2.0), "all negative: zero at the right edge");
        assert_eq!(axis(&[0.0, f64::NAN]), (0.0, 1.0), "nothing to draw: no division by zero");
    }
}
