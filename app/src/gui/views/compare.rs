//! A compare cell: two runs side by side — texts aligned with the first divergence marked,
//! routing flips per layer, next-token KL along the sequence.

use egui::{Color32, RichText, Ui};
use egui_plot::{Bar, BarChart, Line, Plot, PlotPoints};

use super::cells::CellContext;
use super::export_buttons;
use super::tokens::display_piece;
use crate::gui::run_view::RunView;
use crate::gui::state::{Action, ExportKind};
use crate::notebook::CompareSummary;

fn text_with_divergence(ui: &mut Ui, run: &RunView, from: Option<usize>) {
    let mut job = egui::text::LayoutJob::default();
    job.wrap.max_width = ui.available_width();
    let font = egui::FontId::monospace(13.0);
    let normal = ui.visuals().text_color();
    let weak = ui.visuals().weak_text_color();
    for (i, p) in run.pieces().iter().enumerate() {
        let diverged = from.is_some_and(|d| i >= d);
        let fmt = egui::TextFormat {
            font_id: font.clone(),
            color: if i < run.prompt_len { weak } else { normal },
            background: if diverged { Color32::from_rgba_unmultiplied(220, 60, 60, 90) } else { Color32::TRANSPARENT },
            underline: if Some(i) == from { egui::Stroke::new(2.0, Color32::from_rgb(220, 60, 60)) } else { egui::Stroke::NONE },
            ..Default::default()
        };
        job.append(&display_piece(p), 0.0, fmt);
    }
    ui.label(job);
}

pub fn compare(
    ui: &mut Ui,
    id: u64,
    a: Option<(&str, &RunView)>,
    b: Option<(&str, &RunView)>,
    result: Option<&CompareSummary>,
    actions: &mut Vec<Action>,
) {
    let (Some((ta, ra)), Some((tb, rb))) = (a, b) else {
        ui.label(RichText::new("Run both prompt cells, then run this cell.").weak());
        return;
    };
    let div = result.and_then(|r| r.first_divergence);
    ui.horizontal(|ui| {
        ui.label(match div {
            Some(d) => RichText::new(format!("first different token at position {d} (red from there)")).strong(),
            None => RichText::new("same tokens throughout").strong(),
        });
        export_buttons(ui, id, ExportKind::Compare, actions);
    });
    ui.columns(2, |cols| {
        cols[0].strong(ta);
        egui::ScrollArea::vertical().id_salt(("cmp-a", id)).max_height(160.0).show(&mut cols[0], |ui| text_with_divergence(ui, ra, div));
        cols[1].strong(tb);
        egui::ScrollArea::vertical().id_salt(("cmp-b", id)).max_height(160.0).show(&mut cols[1], |ui| text_with_divergence(ui, rb, div));
    });
    let Some(r) = result else { return };
    ui.columns(2, |cols| {
        cols[0].strong("Routing changes per layer");
        cols[0].label(RichText::new("share of A's positions whose top-k experts differ, B's interventions teacher-forced").weak().small());
        let bars: Vec<Bar> = r.flip_rates.iter().map(|(l, f)| Bar::new(*l as f64, *f).width(0.8)).collect();
        Plot::new(("flips", id))
            .height(150.0)
            .x_axis_label("layer")
            .x_axis_formatter(|mark, _| if mark.value.fract() == 0.0 { format!("{}", mark.value) } else { String::new() })
            .y_axis_label("share")
            .include_y(0.0)
            .include_y(1.0)
            .allow_drag(false)
            .allow_zoom(false)
            .allow_scroll(false)
            .show(&mut cols[0], |p| {
                p.bar_chart(BarChart::new("routing flips", bars));
            });
        cols[1].strong("Next-token KL(A ‖ B) along A's sequence");
        cols[1].label(RichText::new("B's interventions teacher-forced on A's tokens (nats)").weak().small());
        let pts: Vec<[f64; 2]> = r.kl.iter().enumerate().map(|(i, &k)| [i as f64, k]).collect();
        let prompt_end = ra.prompt_len as f64 - 0.5;
        Plot::new(("kl", id))
            .height(150.0)
            .x_axis_label("position")
            .y_axis_label("nats")
            .include_y(0.0)
            .allow_drag(false)
            .allow_zoom(false)
            .allow_scroll(false)
            .show(&mut cols[1], |p| {
                p.line(Line::new("KL", PlotPoints::from(pts)).width(2.0));
                p.vline(egui_plot::VLine::new("end of prompt", prompt_end).style(egui_plot::LineStyle::dashed_dense()));
            });
    });
}

/// A compare cell: two prompt cells' runs side by side, and what changed.
pub struct CompareCell<'a> {
    pub a: u64,
    pub b: u64,
    pub result: Option<&'a CompareSummary>,
}

impl CompareCell<'_> {
    pub fn ui(self, ui: &mut Ui, ctx: &CellContext, actions: &mut Vec<Action>) {
        let name = |x: u64| {
            let side = if x == self.a { "A" } else { "B" };
            format!("{side}: {}", ctx.titles.get(&x).cloned().unwrap_or_else(|| format!("cell {x} (deleted)")))
        };
        let (ta, tb) = (name(self.a), name(self.b));
        let runs = &ctx.results.runs;
        let (ra, rb) = (runs.get(&self.a), runs.get(&self.b));
        compare(ui, ctx.id, ra.map(|r| (ta.as_str(), r)), rb.map(|r| (tb.as_str(), r)), self.result, actions);
    }
}
