//! Heatmap grids painted cell by cell (layer × expert load, layer × head activity), with a
//! colour scale, axis labels, hover tooltips and click-to-select. One painter call per cell,
//! no widgets, so 48 × 128 grids stay cheap every frame.

use egui::{Align2, Color32, FontId, Rect, Sense, Stroke, Ui, Vec2};

use super::scale_color;

pub struct GridSpec<'a> {
    pub rows: usize,
    pub cols: usize,
    pub row_label: &'a str,
    pub col_label: &'a str,
    /// Value in [0, 1] for the colour scale; None = no value (drawn as background).
    pub value: &'a dyn Fn(usize, usize) -> Option<f32>,
    /// Tooltip text of a cell.
    pub tooltip: &'a dyn Fn(usize, usize) -> String,
    /// Rows that have content (others are shown dimmed, e.g. dense layers).
    pub row_enabled: &'a dyn Fn(usize) -> bool,
    /// Highlighted cells (pending masks).
    pub marked: &'a dyn Fn(usize, usize) -> bool,
    /// Caption of the colour scale.
    pub scale_caption: &'a str,
    pub max_cell: f32,
    /// Accessibility label (what screen readers and UI tests find it by).
    pub label: String,
}

/// Where a grid's cells are on screen (for UI tests and pointing).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GridGeometry {
    pub origin: egui::Pos2,
    pub cell: Vec2,
}

impl GridGeometry {
    pub fn center(&self, row: usize, col: usize) -> egui::Pos2 {
        self.origin + Vec2::new((col as f32 + 0.5) * self.cell.x, (row as f32 + 0.5) * self.cell.y)
    }
}

pub struct GridOut {
    pub clicked: Option<(usize, usize)>,
    pub geometry: GridGeometry,
}

/// Draws the grid; returns the clicked cell and where cells are.
pub fn grid(ui: &mut Ui, spec: &GridSpec) -> GridOut {
    let label_w = 34.0;
    let avail = (ui.available_width() - label_w - 70.0).max(100.0);
    let cell_w = (avail / spec.cols.max(1) as f32).clamp(3.0, spec.max_cell);
    let cell_h = (cell_w * 0.8).clamp(3.0, 18.0).max(if spec.rows <= 16 { 12.0 } else { 4.0 });
    let size = Vec2::new(label_w + cell_w * spec.cols as f32 + 64.0, 16.0 + cell_h * spec.rows as f32 + 18.0);
    let (rect, resp) = ui.allocate_exact_size(size, Sense::click());
    let label = spec.label.clone();
    resp.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Canvas, true, label.clone()));
    let painter = ui.painter_at(rect);
    let text = ui.visuals().text_color();
    let weak = ui.visuals().weak_text_color();
    let grid_origin = rect.min + Vec2::new(label_w, 16.0);
    let font = FontId::proportional(10.0);
    painter.text(rect.min + Vec2::new(label_w, 0.0), Align2::LEFT_TOP, format!("{} →", spec.col_label), font.clone(), weak);
    painter.text(rect.min + Vec2::new(0.0, 0.0), Align2::LEFT_TOP, format!("{}↓", spec.row_label), font.clone(), weak);
    let bg = if ui.visuals().dark_mode { Color32::from_gray(45) } else { Color32::from_gray(225) };
    let cell_rect =
        |r: usize, c: usize| Rect::from_min_size(grid_origin + Vec2::new(c as f32 * cell_w, r as f32 * cell_h), Vec2::new(cell_w, cell_h));
    let row_step = if cell_h >= 10.0 { 1 } else { (10.0 / cell_h).ceil() as usize };
    for r in 0..spec.rows {
        let enabled = (spec.row_enabled)(r);
        if r % row_step == 0 {
            painter.text(
                grid_origin + Vec2::new(-4.0, r as f32 * cell_h + cell_h / 2.0),
                Align2::RIGHT_CENTER,
                r.to_string(),
                font.clone(),
                if enabled { text } else { weak },
            );
        }
        for c in 0..spec.cols {
            let color = if enabled { (spec.value)(r, c).map(scale_color).unwrap_or(bg) } else { bg };
            let cr = cell_rect(r, c);
            painter.rect_filled(if cell_w > 6.0 { cr.shrink(0.5) } else { cr }, 0.0, color);
            if (spec.marked)(r, c) {
                painter.rect_stroke(cr.shrink(1.0), 0.0, Stroke::new(2.0, Color32::from_rgb(255, 60, 60)), egui::StrokeKind::Inside);
            }
        }
    }
    let col_step = ((22.0 / cell_w).ceil() as usize).max(1);
    for c in (0..spec.cols).step_by(col_step) {
        painter.text(
            grid_origin + Vec2::new(c as f32 * cell_w + cell_w / 2.0, spec.rows as f32 * cell_h + 2.0),
            Align2::CENTER_TOP,
            c.to_string(),
            font.clone(),
            text,
        );
    }
    // Colour scale.
    let sx = grid_origin.x + cell_w * spec.cols as f32 + 14.0;
    let sh = (cell_h * spec.rows as f32).max(40.0);
    for i in 0..32 {
        let t = 1.0 - i as f32 / 31.0;
        let y = grid_origin.y + sh * i as f32 / 32.0;
        painter.rect_filled(Rect::from_min_size(egui::pos2(sx, y), Vec2::new(10.0, sh / 32.0 + 0.5)), 0.0, scale_color(t));
    }
    painter.text(egui::pos2(sx + 13.0, grid_origin.y), Align2::LEFT_TOP, "high", font.clone(), weak);
    painter.text(egui::pos2(sx + 13.0, grid_origin.y + sh), Align2::LEFT_BOTTOM, "low", font.clone(), weak);
    painter.text(egui::pos2(sx, grid_origin.y - 2.0), Align2::LEFT_BOTTOM, spec.scale_caption, font.clone(), weak);
    let at = |pos: egui::Pos2| -> Option<(usize, usize)> {
        let d = pos - grid_origin;
        if d.x < 0.0 || d.y < 0.0 {
            return None;
        }
        let (c, r) = ((d.x / cell_w) as usize, (d.y / cell_h) as usize);
        (r < spec.rows && c < spec.cols).then_some((r, c))
    };
    let hovered = resp.hover_pos().and_then(at);
    let clicked = if resp.clicked() { resp.interact_pointer_pos().and_then(at) } else { None };
    if let Some((r, c)) = hovered {
        painter.rect_stroke(cell_rect(r, c), 0.0, Stroke::new(1.5, ui.visuals().strong_text_color()), egui::StrokeKind::Outside);
        resp.on_hover_text((spec.tooltip)(r, c));
    }
    GridOut {
        clicked: clicked.filter(|&(r, _)| (spec.row_enabled)(r)),
        geometry: GridGeometry { origin: grid_origin, cell: Vec2::new(cell_w, cell_h) },
    }
}
