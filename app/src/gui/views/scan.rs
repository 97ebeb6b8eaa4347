//! Analysis cells: the retrieval-head scan and corpus specialization, with progress, ETA and
//! cancel while they run.

use egui::{RichText, Ui};
use routelab_probes::analysis::retrieval::{Progress, RETRIEVAL_THRESHOLD};

use super::cells::CellContext;
use super::export_buttons;
use super::grid::{grid, GridSpec};
use crate::gui::state::{Action, ExportKind};
use crate::notebook::{ScanSettings, ScanSummary, SpecializationSettings, SpecializationSummary};

pub fn progress_bar(ui: &mut Ui, p: Option<&Progress>, actions: &mut Vec<Action>) {
    ui.horizontal(|ui| {
        let (frac, text) = match p {
            Some(p) if p.total > 0 => {
                let eta = p.eta_seconds.map(|s| format!(", about {:.0}s left", s)).unwrap_or_default();
                (p.done as f32 / p.total as f32, format!("{}/{}{eta}", p.done, p.total))
            }
            _ => (0.0, "starting…".into()),
        };
        ui.add(egui::ProgressBar::new(frac).text(text).desired_width(320.0));
        if ui.button("Cancel").clicked() {
            actions.push(Action::Cancel);
        }
    });
}

pub fn scan_settings(ui: &mut Ui, s: &mut ScanSettings, actions: &mut Vec<Action>) {
    let mut changed = false;
    ui.horizontal_wrapped(|ui| {
        let l = ui.label("context lengths");
        let needle = &mut s.needle;
        let mut lens = needle.lengths.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
        if ui.add(egui::TextEdit::singleline(&mut lens).desired_width(90.0)).labelled_by(l.id).changed() {
            needle.lengths = lens.split(',').filter_map(|x| x.trim().parse().ok()).collect();
            changed = true;
        }
        let l = ui.label("depths");
        let mut depths = needle.depths.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
        if ui.add(egui::TextEdit::singleline(&mut depths).desired_width(140.0)).labelled_by(l.id).changed() {
            needle.depths = depths.split(',').filter_map(|x| x.trim().parse().ok()).collect();
            changed = true;
        }
        let l = ui.label("trials per cell");
        changed |= ui.add(egui::DragValue::new(&mut needle.per_cell).range(1..=20)).labelled_by(l.id).changed();
        changed |= ui.checkbox(&mut s.teacher_forced, "teacher-forced (one prefill per trial)").changed();
    });
    if changed {
        actions.push(Action::Edited);
    }
}

pub fn scan_result(ui: &mut Ui, id: u64, r: &ScanSummary, actions: &mut Vec<Action>) {
    let ranked = r.scores.ranked(RETRIEVAL_THRESHOLD);
    ui.horizontal_wrapped(|ui| {
        ui.label(RichText::new(format!(
            "{} trials · needle accuracy {:.0}% · {} of {} heads ({:.1}%) score above {RETRIEVAL_THRESHOLD}",
            r.trials,
            100.0 * r.accuracy,
            ranked.len(),
            r.scores.layers * r.scores.heads,
            100.0 * r.scores.share_above(RETRIEVAL_THRESHOLD)
        )));
        export_buttons(ui, id, ExportKind::HeadScores, actions);
    });
    let max = r.scores.scores.iter().cloned().fold(0.1, f64::max) as f32;
    let value = |l: usize, h: usize| Some(r.scores.get(l, h) as f32 / max);
    let tooltip = |l: usize, h: usize| format!("layer {l}, head {h}: retrieval score {:.3}", r.scores.get(l, h));
    let yes = |_l: usize| true;
    let marked = |l: usize, h: usize| r.scores.get(l, h) > RETRIEVAL_THRESHOLD;
    grid(
        ui,
        &GridSpec {
            label: format!("retrieval scores {id}"),
            rows: r.scores.layers,
            cols: r.scores.heads,
            row_label: "layer",
            col_label: "head",
            value: &value,
            tooltip: &tooltip,
            row_enabled: &yes,
            marked: &marked,
            scale_caption: "score",
            max_cell: 28.0,
        },
    );
    if !ranked.is_empty() {
        ui.label(
            RichText::new(format!(
                "strongest: {}",
                ranked.iter().take(8).map(|(l, h, s)| format!("L{l}H{h} {s:.2}")).collect::<Vec<_>>().join(" · ")
            ))
            .monospace(),
        );
    }
}

pub fn specialization_settings(ui: &mut Ui, s: &mut SpecializationSettings, actions: &mut Vec<Action>) {
    let mut changed = false;
    ui.horizontal_wrapped(|ui| {
        let l = ui.label("corpus directory");
        let mut corpus = s.corpus.display().to_string();
        if ui
            .add(egui::TextEdit::singleline(&mut corpus).desired_width(320.0).hint_text("one subdirectory per domain"))
            .labelled_by(l.id)
            .changed()
        {
            s.corpus = corpus.into();
            changed = true;
        }
        let l = ui.label("tokens per chunk");
        changed |= ui.add(egui::DragValue::new(&mut s.chunk_tokens).range(16..=4096)).labelled_by(l.id).changed();
        let l = ui.label("max tokens");
        changed |= ui.add(egui::DragValue::new(&mut s.max_tokens).range(100..=1_000_000)).labelled_by(l.id).changed();
    });
    if changed {
        actions.push(Action::Edited);
    }
}

pub fn specialization_result(ui: &mut Ui, r: &SpecializationSummary) {
    ui.label(format!("{} tokens in {} domains: {}", r.tokens, r.domains.len(), r.domains.join(", ")));
    egui::Grid::new("spec-table").striped(true).show(ui, |ui| {
        for h in ["layer", "load balance", "MI class (bits)", "MI domain (bits)", "vocabulary specialization"] {
            ui.strong(h);
        }
        ui.end_row();
        for (l, b, mc, md, vs) in &r.layers {
            ui.label(l.to_string());
            ui.label(format!("{b:.3}"));
            ui.label(format!("{mc:.3}"));
            ui.label(format!("{md:.3}"));
            ui.label(format!("{vs:.3}"));
            ui.end_row();
        }
    });
}

/// A retrieval-scan cell: its settings and, once run, the per-head scores.
pub struct ScanCell<'a> {
    pub settings: &'a mut ScanSettings,
    pub result: Option<&'a ScanSummary>,
}

impl ScanCell<'_> {
    pub fn ui(self, ui: &mut Ui, ctx: &CellContext, actions: &mut Vec<Action>) {
        ui.add_enabled_ui(!ctx.running, |ui| scan_settings(ui, self.settings, actions));
        if let Some(r) = self.result {
            scan_result(ui, ctx.id, r, actions);
        }
    }
}

/// An expert-specialization cell: the corpus settings and, once run, the per-layer table.
pub struct SpecializationCell<'a> {
    pub settings: &'a mut SpecializationSettings,
    pub result: Option<&'a SpecializationSummary>,
}

impl SpecializationCell<'_> {
    pub fn ui(self, ui: &mut Ui, ctx: &CellContext, actions: &mut Vec<Action>) {
        ui.add_enabled_ui(!ctx.running, |ui| specialization_settings(ui, self.settings, actions));
        if let Some(r) = self.result {
            specialization_result(ui, r);
        }
    }
}
