//! Markdown cells: a small renderer for what notes need (headings, bullets, **bold**,
//! `code`, paragraphs); double-click or ✎ to edit.

use egui::{RichText, Ui};

use super::cells::CellContext;
use crate::gui::state::{Action, CellUi};

fn inline(ui: &mut Ui, line: &str, size: Option<f32>) {
    // **bold** and `code` spans.
    let mut job = egui::text::LayoutJob::default();
    let style = ui.style().clone();
    let base = size.map(egui::FontId::proportional).unwrap_or_else(|| egui::TextStyle::Body.resolve(&style));
    let color = ui.visuals().text_color();
    let strong = ui.visuals().strong_text_color();
    let mut rest = line;
    while !rest.is_empty() {
        let next_bold = rest.find("**");
        let next_code = rest.find('`');
        let (pos, bold) = match (next_bold, next_code) {
            (Some(b), Some(c)) if c < b => (c, false),
            (Some(b), _) => (b, true),
            (None, Some(c)) => (c, false),
            (None, None) => {
                job.append(rest, 0.0, egui::TextFormat::simple(base.clone(), color));
                break;
            }
        };
        job.append(&rest[..pos], 0.0, egui::TextFormat::simple(base.clone(), color));
        let marker = if bold { "**" } else { "`" };
        let after = &rest[pos + marker.len()..];
        match after.find(marker) {
            Some(end) => {
                let span = &after[..end];
                let fmt = if bold {
                    egui::TextFormat::simple(base.clone(), strong)
                } else {
                    egui::TextFormat {
                        font_id: egui::FontId::monospace(base.size * 0.95),
                        color,
                        background: ui.visuals().code_bg_color,
                        ..Default::default()
                    }
                };
                job.append(span, 0.0, fmt);
                rest = &after[end + marker.len()..];
            }
            None => {
                job.append(&rest[pos..], 0.0, egui::TextFormat::simple(base.clone(), color));
                break;
            }
        }
    }
    job.wrap.max_width = ui.available_width();
    ui.label(job);
}

pub fn render(ui: &mut Ui, text: &str) {
    for line in text.lines() {
        let t = line.trim_end();
        if let Some(h) = t.strip_prefix("# ") {
            ui.label(RichText::new(h).heading().strong());
        } else if let Some(h) = t.strip_prefix("## ") {
            ui.label(RichText::new(h).size(17.0).strong());
        } else if let Some(b) = t.strip_prefix("- ").or_else(|| t.strip_prefix("* ")) {
            ui.horizontal_wrapped(|ui| {
                ui.label("•");
                inline(ui, b, None);
            });
        } else if t.is_empty() {
            ui.add_space(4.0);
        } else {
            inline(ui, t, None);
        }
    }
}

/// A markdown cell: rendered, or edited after a double click.
pub struct MarkdownCell<'a> {
    pub text: &'a mut String,
}

impl MarkdownCell<'_> {
    pub fn ui(self, ui: &mut Ui, ctx: &CellContext, cell_ui: &mut CellUi, actions: &mut Vec<Action>) {
        let id = ctx.id;
        if cell_ui.editing {
            let r = ui.add(egui::TextEdit::multiline(self.text).desired_width(f32::INFINITY).desired_rows(4));
            r.widget_info(|| egui::WidgetInfo::labeled(egui::Role::MultilineTextInput, true, format!("markdown of cell {id}")));
            if r.changed() {
                actions.push(Action::Edited);
            }
            if ui.button("Done").clicked() {
                cell_ui.editing = false;
            }
        } else {
            let r = ui.scope(|ui| render(ui, self.text)).response.interact(egui::Sense::click());
            if r.double_clicked() {
                cell_ui.editing = true;
            }
        }
    }
}
