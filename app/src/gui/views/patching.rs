//! An activation-patching cell: a clean and a corrupted prompt (with their token counts, which
//! must match), the site and metric of the sweep, and, once run, the layers × columns heat map
//! of the share of the clean − corrupted gap each patch recovers.

use egui::{Color32, RichText, Ui};
use routelab_model::tokenizer::Tokenizer;
use routelab_probes::analysis::patching::{Metric, PatchSettings, SweepSite};

use super::cells::CellContext;
use super::export_buttons;
use super::heatmap::{heatmap, HeatmapSpec};
use super::index_list;
use crate::gui::state::{Action, CellUi, ExportKind};
use crate::notebook::PatchSummary;

pub(super) const WARN: Color32 = Color32::from_rgb(235, 90, 70);

/// What the sweep's columns are, as the axis says it.
fn column_title(site: SweepSite, positions: usize) -> String {
    match site {
        SweepSite::Head => format!("head (patched at {positions} positions together)"),
        SweepSite::Expert => format!("expert (patched at {positions} positions together)"),
        _ => "position (corrupted → clean token)".into(),
    }
}

fn site_help(site: SweepSite) -> &'static str {
    match site {
        SweepSite::Resid => "the residual stream after the layer, one position at a time",
        SweepSite::Attn => "the attention block's output, one position at a time",
        SweepSite::Mlp => "the MLP / MoE block's output, one position at a time",
        SweepSite::Head => "one head's output, at every chosen position together",
        SweepSite::Expert => "one expert's weighted output, at every chosen position together",
        SweepSite::Shared => "the shared experts' output, one position at a time",
        SweepSite::Dense => "Arctic's parallel dense MLP's output, one position at a time",
    }
}

/// The two prompts' token counts, and where they differ; a clear warning when the counts do,
/// since the job refuses such a pair.
fn token_counts(ui: &mut Ui, tokenizer: Option<&Tokenizer>, clean: &str, corrupt: &str) {
    let Some(tok) = tokenizer else {
        ui.label(RichText::new("load a model to count the prompts' tokens").weak());
        return;
    };
    // Encoding two short prompts per frame costs microseconds; no cache to keep in step.
    let (Ok(a), Ok(b)) = (tok.encode(clean, true), tok.encode(corrupt, true)) else {
        ui.colored_label(WARN, "the prompts could not be tokenized");
        return;
    };
    ui.horizontal_wrapped(|ui| {
        ui.label(format!("clean: {} tokens · corrupted: {} tokens", a.len(), b.len()));
        if a.len() != b.len() {
            ui.label(
                RichText::new(format!(
                    "⚠ the token counts differ ({} ≠ {}): patching copies position by position, so the sweep will refuse to run; \
                     make the corrupted prompt {} tokens long",
                    a.len(),
                    b.len(),
                    a.len()
                ))
                .color(WARN)
                .strong(),
            );
            return;
        }
        let text = |id: u32| tok.decode(&[id], false).unwrap_or_default();
        let differ: Vec<String> = a
            .iter()
            .zip(&b)
            .enumerate()
            .filter(|(_, (x, y))| x != y)
            .map(|(p, (x, y))| format!("{p} ({:?} → {:?})", text(*y), text(*x)))
            .collect();
        ui.label(RichText::new(match differ.len() {
            0 => "the prompts are the same: there is nothing to recover".to_string(),
            n => format!("{n} position{} differ{}: {}", if n == 1 { "" } else { "s" }, if n == 1 { "s" } else { "" }, differ.join(", ")),
        }));
    });
}

/// Single-token check of a metric's answer text.
fn one_token_note(ui: &mut Ui, tokenizer: Option<&Tokenizer>, text: &str) {
    if let Some(n) = tokenizer.and_then(|t| t.encode(text, false).ok()).map(|ids| ids.len()).filter(|&n| n != 1) {
        ui.colored_label(WARN, format!("{text:?} is {n} tokens; give one (mind the leading space)"));
    }
}

fn metric_editor(ui: &mut Ui, id: u64, metric: &mut Metric, tokenizer: Option<&Tokenizer>) -> bool {
    let mut changed = false;
    let kind = |m: &Metric| match m {
        Metric::Kl => "kl",
        Metric::Prob { .. } => "prob",
        Metric::LogitDiff { .. } => "logit-diff",
    };
    let answer = match metric {
        Metric::LogitDiff { answer, .. } | Metric::Prob { answer } => answer.clone(),
        Metric::Kl => String::new(),
    };
    let l = ui.label("metric");
    let mut chosen = kind(metric);
    egui::ComboBox::from_id_salt(("patch-metric", id))
        .selected_text(chosen)
        .show_ui(ui, |ui| {
            for (k, help) in [
                ("kl", "KL(clean ‖ patched) of the next-token distributions"),
                ("prob", "p(answer) at the last position"),
                ("logit-diff", "logit(answer) − logit(other) at the last position"),
            ] {
                ui.selectable_value(&mut chosen, k, k).on_hover_text(help);
            }
        })
        .response
        .labelled_by(l.id);
    if chosen != kind(metric) {
        *metric = match chosen {
            "prob" => Metric::Prob { answer },
            "logit-diff" => Metric::LogitDiff { answer, other: String::new() },
            _ => Metric::Kl,
        };
        changed = true;
    }
    let field = |ui: &mut Ui, name: &str, text: &mut String| -> bool {
        let l = ui.label(name);
        let r = ui.add(egui::TextEdit::singleline(text).desired_width(80.0).hint_text("token text")).labelled_by(l.id);
        one_token_note(ui, tokenizer, text);
        r.changed()
    };
    match metric {
        Metric::Prob { answer } => changed |= field(ui, "answer", answer),
        Metric::LogitDiff { answer, other } => {
            changed |= field(ui, "answer", answer);
            changed |= field(ui, "other", other);
        }
        Metric::Kl => {}
    }
    changed
}

/// An optional index list; the text as typed lives in the cell's UI state so that a half-typed
/// range (`0-`) is not thrown away each frame.
pub fn settings_ui(
    ui: &mut Ui,
    clean: &mut String,
    corrupt: &mut String,
    s: &mut PatchSettings,
    ctx: &CellContext,
    cell_ui: &mut CellUi,
    actions: &mut Vec<Action>,
) {
    let (id, tokenizer) = (ctx.id, ctx.tokenizer);
    let mut changed = false;
    egui::Grid::new(("patch-prompts", id)).num_columns(2).show(ui, |ui| {
        for (name, text) in [("clean prompt", &mut *clean), ("corrupted prompt", &mut *corrupt)] {
            let l = ui.label(name);
            let r =
                ui.add(egui::TextEdit::singleline(text).desired_width(ui.available_width().min(720.0)).font(egui::TextStyle::Monospace));
            r.widget_info(|| egui::WidgetInfo::labeled(egui::Role::TextInput, true, format!("{name} {id}")));
            changed |= r.labelled_by(l.id).changed();
            ui.end_row();
        }
    });
    token_counts(ui, tokenizer, clean, corrupt);
    ui.horizontal_wrapped(|ui| {
        let l = ui.label("site");
        let mut site = s.site;
        egui::ComboBox::from_id_salt(("patch-site", id))
            .selected_text(site.name())
            .show_ui(ui, |ui| {
                for x in SweepSite::ALL {
                    ui.selectable_value(&mut site, x, x.name()).on_hover_text(site_help(x));
                }
            })
            .response
            .on_hover_text(site_help(s.site))
            .labelled_by(l.id);
        if site != s.site {
            s.site = site;
            changed = true;
        }
        changed |= metric_editor(ui, id, &mut s.metric, tokenizer);
        changed |= index_list::field(ui, "layers", &mut cell_ui.layers_text, &mut s.layers);
        changed |= index_list::field(ui, "positions", &mut cell_ui.positions_text, &mut s.positions);
    });
    if changed {
        actions.push(Action::Edited);
    }
}

/// A metric value: small KLs (a tiny model's often are) keep their digits.
pub fn metric_text(v: f64) -> String {
    if v != 0.0 && v.abs() < 0.01 {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

/// The colour scale's ends: always 0 (nothing recovered) to 1 (all of it), widened to what the
/// sweep reached beyond them.
pub fn recovered_range(r: &[Vec<f64>]) -> (f64, f64) {
    r.iter().flatten().filter(|v| v.is_finite()).fold((0.0, 1.0), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

pub fn result_ui(ui: &mut Ui, id: u64, summary: &PatchSummary, cell_ui: &mut CellUi, actions: &mut Vec<Action>) {
    let r = &summary.result;
    let metric = r.metric.describe();
    let swept = r.recovered.iter().flatten().filter(|v| !v.is_nan()).count();
    ui.horizontal_wrapped(|ui| {
        ui.label(
            RichText::new(format!("{metric}: clean {} · corrupted {}", metric_text(r.clean_metric), metric_text(r.corrupt_metric)))
                .strong(),
        );
        ui.label(RichText::new(format!("· patching {} · {} layers × {} columns", r.site.name(), r.layers.len(), r.columns.len())).weak());
        if r.incomplete {
            ui.colored_label(WARN, format!("cancelled: {swept} cells swept, the rest shown empty"));
        }
        export_buttons(ui, id, ExportKind::Patching, actions);
    });
    let col_title = column_title(r.site, r.positions.len());
    let rows: Vec<String> = r.layers.iter().map(|l| l.to_string()).collect();
    let tooltip = |row: usize, col: usize| {
        let v = r.values.get(row).and_then(|x| x.get(col)).copied().unwrap_or(f64::NAN);
        let rec = r.recovered.get(row).and_then(|x| x.get(col)).copied().unwrap_or(f64::NAN);
        let what = match r.site {
            SweepSite::Head | SweepSite::Expert => "",
            _ => "position ",
        };
        if v.is_nan() {
            return format!(
                "layer {} · {what}{}\nnot swept (no such site in this layer, or cancelled)",
                r.layers[row], r.column_labels[col]
            );
        }
        format!(
            "layer {} · {what}{}\n{metric} = {} (clean {}, corrupted {})\nrecovered {:.1}% of the clean − corrupted gap",
            r.layers[row],
            r.column_labels[col],
            metric_text(v),
            metric_text(r.clean_metric),
            metric_text(r.corrupt_metric),
            100.0 * rec
        )
    };
    let geometry = heatmap(
        ui,
        &HeatmapSpec {
            label: format!("patching heat map {id}"),
            row_title: "layer",
            col_title: &col_title,
            row_labels: &rows,
            col_labels: &r.column_labels,
            values: &r.recovered,
            range: recovered_range(&r.recovered),
            scale_caption: "share of the gap recovered",
            tooltip: &tooltip,
        },
    );
    cell_ui.patch_grid = Some(geometry);
    let mut best: Vec<(usize, usize, f64)> = r
        .recovered
        .iter()
        .enumerate()
        .flat_map(|(row, x)| x.iter().enumerate().filter(|(_, v)| v.is_finite()).map(move |(col, &v)| (row, col, v)))
        .collect();
    best.sort_by(|a, b| b.2.total_cmp(&a.2));
    if !best.is_empty() {
        let text: Vec<String> =
            best.iter().take(5).map(|&(row, col, v)| format!("L{} {} {:.2}", r.layers[row], r.column_labels[col], v)).collect();
        ui.label(RichText::new(format!("most recovered: {}", text.join(" · "))).monospace());
    }
}

/// A patching cell: its prompts and settings and, once run, the sweep's heat map.
pub struct PatchingCell<'a> {
    pub clean: &'a mut String,
    pub corrupt: &'a mut String,
    pub settings: &'a mut PatchSettings,
    pub result: Option<&'a PatchSummary>,
}

impl PatchingCell<'_> {
    pub fn ui(self, ui: &mut Ui, ctx: &CellContext, cell_ui: &mut CellUi, actions: &mut Vec<Action>) {
        ui.add_enabled_ui(!ctx.running, |ui| settings_ui(ui, self.clean, self.corrupt, self.settings, ctx, cell_ui, actions));
        if let Some(r) = self.result {
            result_ui(ui, ctx.id, r, cell_ui, actions);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_metric_values_keep_their_digits() {
        assert_eq!(metric_text(0.0), "0.0000");
        assert_eq!(metric_text(0.000712), "7.120e-4");
        assert_eq!(metric_text(-2.5), "-2.5000");
    }

    #[test]
    fn the_scale_spans_zero_to_one_and_what_the_sweep_reached() {
        assert_eq!(recovered_range(&[vec![0.2, f64::NAN], vec![0.9, 0.5]]), (0.0, 1.0));
        assert_eq!(recovered_range(&[vec![-0.3, 1.4], vec![f64::NAN, f64::INFINITY]]), (-0.3, 1.4));
        assert_eq!(recovered_range(&[]), (0.0, 1.0));
    }
}
