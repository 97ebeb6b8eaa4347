//! A logit-attribution cell: a prompt, the position and token attributed, and, once run, the
//! components that move the token's logit most (signed bars), how their sum meets the logit,
//! the logit lens at the position, and what each selected expert promotes.

use egui::{RichText, Ui};
use routelab_model::tokenizer::Tokenizer;
use routelab_probes::analysis::attribution::Attribution;

use super::cells::CellContext;
use super::export_menu;
use super::signed_bars::{signed_bars, NEGATIVE, POSITIVE};
use crate::gui::state::{Action, ExportKind};
use crate::notebook::{AttributionSettings, AttributionSummary};

/// Components drawn as bars (and in the exported plot); the CSV has every one.
pub const BARS: usize = 16;

/// The `n` components that move the logit most, either way, largest first.
pub fn largest(a: &Attribution, n: usize) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = a.components.iter().map(|c| (c.label.clone(), c.value as f64)).collect();
    v.sort_by(|x, y| y.1.abs().total_cmp(&x.1.abs()));
    v.truncate(n);
    v
}

fn settings_ui(ui: &mut Ui, prompt: &mut String, s: &mut AttributionSettings, ctx: &CellContext, actions: &mut Vec<Action>) {
    let id = ctx.id;
    let mut changed = false;
    ui.horizontal(|ui| {
        let l = ui.label("prompt");
        let r = ui.add(egui::TextEdit::singleline(prompt).desired_width(ui.available_width().min(720.0)).font(egui::TextStyle::Monospace));
        r.widget_info(|| egui::WidgetInfo::labeled(egui::Role::TextInput, true, format!("attribution prompt {id}")));
        changed |= r.labelled_by(l.id).changed();
    });
    let tokens = ctx.tokenizer.and_then(|t| t.encode(prompt, true).ok());
    ui.horizontal_wrapped(|ui| {
        let l = ui.label("position");
        let mut pos = s.position.map(|p| p.to_string()).unwrap_or_default();
        let r = ui.add(egui::TextEdit::singleline(&mut pos).desired_width(50.0).hint_text("last")).labelled_by(l.id);
        if r.changed() {
            s.position = pos.trim().parse().ok();
            changed = true;
        }
        if let Some(t) = &tokens {
            let p = s.position.unwrap_or(t.len().saturating_sub(1));
            match (ctx.tokenizer, t.get(p)) {
                (Some(tok), Some(&id)) => {
                    ui.label(RichText::new(format!("of {} tokens: {:?}", t.len(), tok.decode(&[id], false).unwrap_or_default())).weak())
                }
                _ => ui.colored_label(NEGATIVE, format!("the prompt has {} tokens", t.len())),
            };
        }
        let l = ui.label("target token");
        let mut target = s.target.clone().unwrap_or_default();
        let r = ui.add(egui::TextEdit::singleline(&mut target).desired_width(110.0).hint_text("the prediction")).labelled_by(l.id);
        if r.changed() {
            s.target = (!target.is_empty()).then_some(target.clone());
            changed = true;
        }
        one_token(ui, ctx.tokenizer, &target);
        let l = ui.label("top tokens");
        changed |=
            ui.add(egui::DragValue::new(&mut s.top).range(1..=20)).on_hover_text("per lens row and per expert").labelled_by(l.id).changed();
    });
    if changed {
        actions.push(Action::Edited);
    }
}

fn one_token(ui: &mut Ui, tokenizer: Option<&Tokenizer>, text: &str) {
    if text.is_empty() {
        return;
    }
    if let Some(n) = tokenizer.and_then(|t| t.encode(text, false).ok()).map(|ids| ids.len()).filter(|&n| n != 1) {
        ui.colored_label(NEGATIVE, format!("{text:?} is {n} tokens; give one (mind the leading space)"));
    }
}

fn tokens_text(top: impl Iterator<Item = String>) -> String {
    top.collect::<Vec<_>>().join("  ")
}

fn result_ui(ui: &mut Ui, id: u64, s: &AttributionSummary, actions: &mut Vec<Action>) {
    let a = &s.result;
    let sum: f64 = a.components.iter().map(|c| c.value as f64).sum();
    ui.horizontal_wrapped(|ui| {
        ui.label(
            RichText::new(format!(
                "{:?} at position {} ({:?}): logit {:.4}",
                a.target_text,
                a.position,
                a.tokens.get(a.position).cloned().unwrap_or_default(),
                a.logit
            ))
            .strong(),
        );
        ui.label(format!("· sum of {} contributions {sum:.4} · residual {:.2e} (float rounding)", a.components.len(), a.residual));
        ui.label(RichText::new(format!("· {}", a.norm)).weak());
    });
    ui.horizontal(|ui| {
        ui.strong(format!("Largest {} contributions", BARS.min(a.components.len())));
        ui.label(RichText::new("■ raises the logit").color(POSITIVE));
        ui.label(RichText::new("■ lowers it").color(NEGATIVE));
        export_menu(ui, "Export bars ▾", id, ExportKind::Attribution, actions);
    });
    signed_bars(ui, format!("attribution bars {id}"), &largest(a, BARS));
    ui.add_space(6.0);
    ui.horizontal(|ui| {
        ui.strong(format!("Logit lens at position {}", a.position));
        ui.label(RichText::new("the final norm and LM head applied after each layer").weak());
        export_menu(ui, "Export lens ▾", id, ExportKind::LogitLens, actions);
    });
    egui::Grid::new(("lens", id)).striped(true).num_columns(4).show(ui, |ui| {
        for h in ["layer", "target rank", "p(target)", "top tokens"] {
            ui.strong(h);
        }
        ui.end_row();
        for row in &a.lens {
            ui.label(row.layer.to_string());
            let rank = RichText::new(row.target_rank.to_string()).monospace();
            ui.label(if row.target_rank == 0 { rank.strong().color(POSITIVE) } else { rank });
            ui.label(RichText::new(format!("{:.4}", row.target_prob)).monospace());
            ui.label(RichText::new(tokens_text(row.top.iter().map(|(t, p)| format!("{t:?} {p:.3}")))).monospace());
            ui.end_row();
        }
    });
    if !a.promotions.is_empty() {
        ui.add_space(6.0);
        ui.strong(format!("What the experts selected at position {} promote", a.position));
        egui::Grid::new(("promotions", id)).striped(true).num_columns(4).show(ui, |ui| {
            for h in ["layer", "expert", "weight", "tokens pushed up most (logit contribution)"] {
                ui.strong(h);
            }
            ui.end_row();
            for p in &a.promotions {
                ui.label(p.layer.to_string());
                ui.label(p.expert.to_string());
                ui.label(RichText::new(format!("{:.3}", p.weight)).monospace());
                ui.label(RichText::new(tokens_text(p.top.iter().map(|(t, v)| format!("{t:?} {v:+.2}")))).monospace());
                ui.end_row();
            }
        });
    }
}

/// An attribution cell: its prompt and settings and, once run, what made the logit.
pub struct AttributionCell<'a> {
    pub prompt: &'a mut String,
    pub settings: &'a mut AttributionSettings,
    pub result: Option<&'a AttributionSummary>,
}

impl AttributionCell<'_> {
    pub fn ui(self, ui: &mut Ui, ctx: &CellContext, actions: &mut Vec<Action>) {
        ui.add_enabled_ui(!ctx.running, |ui| settings_ui(ui, self.prompt, self.settings, ctx, actions));
        if let Some(r) = self.result {
            result_ui(ui, ctx.id, r, actions);
        }
    }
}
