//! A prompt cell: its prompt and settings, and, once run (or while running), the token strip,
//! the layer × expert load heatmap, the layer × head activity grid, the router-entropy plot,
//! and masking by pointing.

use egui::{RichText, Ui};
use egui_plot::{Line, Plot, PlotPoints};
use routelab_model::interventions::{ExpertMethod, HeadMethod, Interventions};
use routelab_model::session::Prompt;

use super::cells::CellContext;
use super::grid::{grid, GridSpec};
use super::tokens::{token_details, token_strip};
use super::{expert_color, export_buttons, scale_color, text_on};
use crate::gui::run_view::RunView;
use crate::gui::state::{expert_mask, head_mask, Action, CellUi, ExportKind, MaskTarget};
use crate::gui::ui_state::StripColour;
use crate::notebook::{GenerationSettings, ReplaySettings, RunSummary};
use routelab_model::hooks::HookPoint;

/// The editable parts of a prompt cell.
pub fn editor(ui: &mut Ui, id: u64, prompt: &mut Prompt, settings: &mut GenerationSettings, has_chat: bool, actions: &mut Vec<Action>) {
    let mut changed = false;
    let (text, mut chat) = match prompt {
        Prompt::Text { text } => (text.clone(), false),
        Prompt::Chat { messages } => (messages.last().map(|m| m.content.clone()).unwrap_or_default(), true),
        Prompt::Tokens { ids } => (ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(","), false),
    };
    let mut text = text;
    let edit_id = ui.make_persistent_id(("prompt-edit", id));
    // Shift+Enter runs the cell instead of adding a newline.
    if ui.memory(|m| m.has_focus(edit_id)) && ui.input_mut(|i| i.consume_key(egui::Modifiers::SHIFT, egui::Key::Enter)) {
        actions.push(Action::RunCell(id));
    }
    let r = ui.add(
        egui::TextEdit::multiline(&mut text)
            .id(edit_id)
            .desired_rows(2)
            .desired_width(f32::INFINITY)
            .font(egui::TextStyle::Monospace)
            .hint_text("Prompt… (Shift+Enter runs)"),
    );
    r.widget_info(|| egui::WidgetInfo::labeled(egui::Role::MultilineTextInput, true, format!("prompt {id}")));
    changed |= r.changed();
    ui.horizontal_wrapped(|ui| {
        if has_chat || chat {
            changed |= ui
                .checkbox(&mut chat, "chat template")
                .on_hover_text("Send the prompt as a user message through the model's chat template")
                .changed();
        }
        let l = ui.label("new tokens");
        changed |= ui.add(egui::DragValue::new(&mut settings.max_new_tokens).range(0..=4096)).labelled_by(l.id).changed();
        let l = ui.label("temperature");
        changed |=
            ui.add(egui::DragValue::new(&mut settings.sampling.temperature).range(0.0..=2.0).speed(0.02)).labelled_by(l.id).changed();
        if settings.sampling.temperature > 0.0 {
            let l = ui.label("top-p");
            changed |= ui.add(egui::DragValue::new(&mut settings.sampling.top_p).range(0.05..=1.0).speed(0.01)).labelled_by(l.id).changed();
            let l = ui.label("seed");
            changed |= ui.add(egui::DragValue::new(&mut settings.sampling.seed)).labelled_by(l.id).changed();
        }
        changed |= ui.checkbox(&mut settings.stop_at_eos, "stop at end of sequence").changed();
    });
    if changed {
        *prompt = if chat {
            Prompt::Chat { messages: vec![routelab_model::chat::Message::new("user", &text)] }
        } else if matches!(prompt, Prompt::Tokens { .. }) {
            Prompt::Tokens { ids: text.split(',').filter_map(|x| x.trim().parse().ok()).collect() }
        } else {
            Prompt::Text { text }
        };
        actions.push(Action::Edited);
    }
}

/// The cell's interventions as removable chips.
pub fn interventions(ui: &mut Ui, id: u64, iv: &routelab_model::interventions::Interventions, actions: &mut Vec<Action>) {
    if iv.is_empty() {
        return;
    }
    ui.horizontal_wrapped(|ui| {
        ui.label(RichText::new("interventions:").strong());
        for (i, x) in iv.items.iter().enumerate() {
            if ui.button(format!("{} ✕", x.label())).on_hover_text("Remove (the cell must be re-run)").clicked() {
                actions.push(Action::RemoveIntervention(id, i));
            }
        }
    });
}

/// Results of a prompt cell: live while it streams.
pub fn results(
    ui: &mut Ui,
    id: u64,
    run: &RunView,
    summary: Option<&RunSummary>,
    timings: bool,
    cell_ui: &mut CellUi,
    actions: &mut Vec<Action>,
) {
    if run.is_empty() {
        return;
    }
    ui.horizontal_wrapped(|ui| {
        if run.is_moe() {
            let moe: Vec<usize> = (0..run.layers).filter(|&l| run.experts[l] > 0).collect();
            let label = ui.label("colour by");
            let mut colour = cell_ui.colour;
            let name = |c: StripColour| match c {
                StripColour::TopExpert => "top-1 expert",
                StripColour::Margin => "routing margin (dark: near tie)",
            };
            egui::ComboBox::from_id_salt(("colour", id))
                .selected_text(name(colour))
                .show_ui(ui, |ui| {
                    for c in [StripColour::TopExpert, StripColour::Margin] {
                        ui.selectable_value(&mut colour, c, name(c));
                    }
                })
                .response
                .labelled_by(label.id);
            cell_ui.colour = colour;
            if colour == StripColour::Margin {
                // The scale: one swatch per decade of margin.
                for (i, m) in ["≤1e-4", "1e-3", "1e-2", "≥0.1"].iter().enumerate() {
                    let bg = scale_color(i as f32 / 3.0);
                    ui.label(RichText::new(format!(" {m} ")).small().monospace().background_color(bg).color(text_on(bg)));
                }
            }
            let label = ui.label("of layer");
            let mut layer = cell_ui.layer;
            egui::ComboBox::from_id_salt(("layer", id))
                .selected_text(layer.to_string())
                .show_ui(ui, |ui| {
                    for l in &moe {
                        ui.selectable_value(&mut layer, *l, l.to_string());
                    }
                })
                .response
                .labelled_by(label.id);
            cell_ui.layer = layer;
        }
        match summary {
            Some(s) if !timings => ui.label(
                RichText::new(format!("{} prompt + {} generated tokens · stopped: {}", s.prompt_tokens, s.generated_tokens, s.stop)).weak(),
            ),
            Some(s) => ui.label(
                RichText::new(format!(
                    "{} prompt + {} generated tokens · prefill {:.2}s · {:.1} tok/s · stopped: {}",
                    s.prompt_tokens,
                    s.generated_tokens,
                    s.prefill_seconds,
                    s.generated_tokens as f64 / s.decode_seconds.max(1e-9),
                    s.stop
                ))
                .weak(),
            ),
            None => ui.label(RichText::new(format!("{} tokens…", run.len())).weak()),
        };
    });
    let strip = token_strip(ui, run, cell_ui.layer, cell_ui.colour, cell_ui.pinned, 220.0, &format!("token strip {id}"));
    cell_ui.hovered = strip.hovered;
    if let Some(c) = strip.clicked {
        cell_ui.pinned = if cell_ui.pinned == Some(c) { None } else { Some(c) };
    }
    if let Some(p) = strip.hovered.or(cell_ui.pinned) {
        egui::Frame::group(ui.style()).show(ui, |ui| token_details(ui, run, p));
    }
    let focus = strip.hovered.or(cell_ui.pinned).unwrap_or(run.len() - 1);
    ui.columns(if run.is_moe() { 2 } else { 1 }, |cols| {
        let mut col = 0;
        if run.is_moe() {
            load_view(&mut cols[0], id, run, cell_ui, actions);
            col = 1;
        }
        heads_view(&mut cols[col], id, run, focus, cell_ui, actions);
    });
    if run.is_moe() {
        entropy_plot(ui, id, run, actions);
    }
    mask_bar(ui, id, cell_ui, run, actions);
}

fn load_view(ui: &mut Ui, id: u64, run: &RunView, cell_ui: &mut CellUi, actions: &mut Vec<Action>) {
    ui.horizontal(|ui| {
        ui.strong("Expert load");
        ui.label(RichText::new("(share of top-k selections; click a cell to mask the expert)").weak().small());
        export_buttons(ui, id, ExportKind::ExpertLoad, actions);
        export_buttons_more(ui, id, actions);
    });
    let max_share = (0..run.layers)
        .filter_map(|l| {
            let total: u32 = run.load[l].iter().sum();
            (total > 0).then(|| run.load[l].iter().cloned().max().unwrap_or(0) as f32 / total as f32)
        })
        .fold(0.0f32, f32::max)
        .max(1e-6);
    let value = |l: usize, e: usize| -> Option<f32> {
        let total: u32 = run.load[l].iter().sum();
        let c = *run.load[l].get(e)?;
        (total > 0).then(|| c as f32 / total as f32 / max_share)
    };
    let tooltip = |l: usize, e: usize| -> String {
        let total: u32 = run.load[l].iter().sum();
        let c = run.load[l].get(e).copied().unwrap_or(0);
        format!("layer {l}, expert {e}: {c} of {total} selections ({:.1}%)\nclick to mask", 100.0 * c as f32 / total.max(1) as f32)
    };
    let enabled = |l: usize| run.experts[l] > 0;
    let marked = |l: usize, e: usize| cell_ui.pending.items.iter().any(|i| i.hook() == HookPoint::Expert { layer: l, expert: e });
    let out = grid(
        ui,
        &GridSpec {
            label: format!("expert load {id}"),
            rows: run.layers,
            cols: run.max_experts(),
            row_label: "layer",
            col_label: "expert",
            value: &value,
            tooltip: &tooltip,
            row_enabled: &enabled,
            marked: &marked,
            scale_caption: "share",
            max_cell: 28.0,
        },
    );
    cell_ui.load_grid = Some(out.geometry);
    if let Some((l, e)) = out.clicked {
        actions.push(Action::SetMaskTarget(id, MaskTarget::Expert { layer: l, expert: e }));
    }
}

fn export_buttons_more(ui: &mut Ui, id: u64, actions: &mut Vec<Action>) {
    ui.menu_button("More ▾", |ui| {
        for (label, kind) in [
            ("routing map", ExportKind::Routing),
            ("co-activation", ExportKind::Coactivation),
            ("router entropy", ExportKind::RouterEntropy),
        ] {
            ui.menu_button(label, |ui| {
                for ext in ["png", "svg", "csv"] {
                    if ui.button(ext.to_uppercase()).clicked() {
                        actions.push(Action::ExportView { cell: id, view: kind, ext });
                        ui.close();
                    }
                }
            });
        }
    });
}

fn heads_view(ui: &mut Ui, id: u64, run: &RunView, pos: usize, cell_ui: &mut CellUi, actions: &mut Vec<Action>) {
    ui.horizontal(|ui| {
        ui.strong(format!("Head activity at position {pos}"));
        ui.label(RichText::new("(1 − entropy / ln(positions): bright = focused; click to mask)").weak().small());
        export_buttons(ui, id, ExportKind::Heads, actions);
    });
    let max = ((pos + 1) as f32).ln().max(1e-6);
    let value = |l: usize, h: usize| -> Option<f32> { run.head_entropy_at(l, pos).get(h).map(|e| 1.0 - e / max) };
    let tooltip = |l: usize, h: usize| -> String {
        let e = run.head_entropy_at(l, pos).get(h).copied().unwrap_or(f32::NAN);
        let a = run.head_argmax_at(l, pos).get(h).copied();
        let target =
            a.map(|j| format!(", looks most at {j} {:?}", run.pieces().get(j as usize).cloned().unwrap_or_default())).unwrap_or_default();
        format!("layer {l}, head {h}: entropy {e:.2} nats{target}\nclick to mask")
    };
    let enabled = |_l: usize| true;
    let marked = |l: usize, h: usize| cell_ui.pending.items.iter().any(|i| i.hook() == HookPoint::Head { layer: l, head: h });
    let out = grid(
        ui,
        &GridSpec {
            label: format!("head activity {id}"),
            rows: run.layers,
            cols: run.heads,
            row_label: "layer",
            col_label: "head",
            value: &value,
            tooltip: &tooltip,
            row_enabled: &enabled,
            marked: &marked,
            scale_caption: "focus",
            max_cell: 28.0,
        },
    );
    cell_ui.head_grid = Some(out.geometry);
    if let Some((l, h)) = out.clicked {
        actions.push(Action::SetMaskTarget(id, MaskTarget::Head { layer: l, head: h }));
    }
}

fn entropy_plot(ui: &mut Ui, id: u64, run: &RunView, actions: &mut Vec<Action>) {
    ui.horizontal(|ui| {
        ui.strong("Router entropy per layer");
        ui.label(RichText::new("(mean over positions so far, nats; dashed: uniform routing)").weak().small());
        export_buttons(ui, id, ExportKind::RouterEntropy, actions);
    });
    let pts: Vec<[f64; 2]> = (0..run.layers).filter_map(|l| run.mean_router_entropy(l).map(|h| [l as f64, h])).collect();
    let uniform: Vec<[f64; 2]> =
        (0..run.layers).filter(|&l| run.experts[l] > 0).map(|l| [l as f64, (run.experts[l] as f64).ln()]).collect();
    Plot::new(("router-entropy", id))
        .height(140.0)
        .x_axis_label("layer")
        .y_axis_label("nats")
        .x_axis_formatter(|mark, _| if mark.value.fract() == 0.0 { format!("{}", mark.value) } else { String::new() })
        .allow_scroll(false)
        .allow_drag(false)
        .allow_zoom(false)
        .legend(egui_plot::Legend::default())
        .show(ui, |p| {
            p.line(Line::new("mean router entropy", PlotPoints::from(pts)).width(2.0));
            p.line(Line::new("uniform (ln E)", PlotPoints::from(uniform)).style(egui_plot::LineStyle::dashed_loose()));
        });
}

/// The bar that appears after clicking an expert or head: pick the method.
fn mask_bar(ui: &mut Ui, id: u64, cell_ui: &mut CellUi, run: &RunView, actions: &mut Vec<Action>) {
    if let Some(t) = cell_ui.mask_target.clone() {
        egui::Frame::group(ui.style()).show(ui, |ui| {
            ui.horizontal_wrapped(|ui| match t {
                MaskTarget::Expert { layer, expert } => {
                    let bg = expert_color(expert);
                    ui.label(RichText::new(format!(" mask layer {layer} expert {expert} ")).background_color(bg).color(super::text_on(bg)));
                    if ui
                        .button("reroute")
                        .on_hover_text("Remove it from the router's choices; the router renormalises over the rest")
                        .clicked()
                    {
                        actions.push(Action::SetMask(id, expert_mask(layer, expert, ExpertMethod::Reroute)));
                    }
                    if ui.button("drop").on_hover_text("Keep the routing, zero this expert's output").clicked() {
                        actions.push(Action::SetMask(id, expert_mask(layer, expert, ExpertMethod::Drop)));
                    }
                    if ui.button("cancel").clicked() {
                        cell_ui.mask_target = None;
                    }
                }
                MaskTarget::Head { layer, head } => {
                    ui.label(RichText::new(format!("mask layer {layer} head {head}:")).strong());
                    for (label, m, tip) in [
                        ("zero", HeadMethod::Zero, "Zero the head's output"),
                        ("uniform", HeadMethod::Uniform, "Uniform attention over visible positions (retrieval-heads paper)"),
                        ("mean", HeadMethod::Mean { reference: vec![] }, "Replace its output by its mean over this prompt"),
                        ("scale ½", HeadMethod::Scale { factor: 0.5 }, "Halve its output"),
                    ] {
                        if ui.button(label).on_hover_text(tip).clicked() {
                            actions.push(Action::SetMask(id, head_mask(layer, head, m)));
                        }
                    }
                    if ui.button("cancel").clicked() {
                        cell_ui.mask_target = None;
                    }
                }
            });
        });
    }
    if !cell_ui.pending.is_empty() {
        ui.horizontal_wrapped(|ui| {
            ui.label(RichText::new("pending masks:").strong());
            let mut remove = None;
            for (i, x) in cell_ui.pending.items.iter().enumerate() {
                if ui.small_button(format!("{} ✕", x.label())).clicked() {
                    remove = Some(i);
                }
            }
            if let Some(i) = remove {
                cell_ui.pending.items.remove(i);
            }
            if ui
                .add_enabled(run.done, egui::Button::new(RichText::new("⟳ Re-run with masks").strong()))
                .on_hover_text("A new cell with these masks, then a comparison with this one")
                .clicked()
            {
                actions.push(Action::RerunWithMasks(id));
            }
        });
    }
}

/// A prompt cell: its prompt and settings, its interventions, and its run's views.
pub struct PromptCell<'a> {
    pub prompt: &'a mut Prompt,
    pub settings: &'a mut GenerationSettings,
    pub interventions: &'a Interventions,
    pub result: Option<&'a RunSummary>,
    pub replay: &'a mut Option<ReplaySettings>,
}

impl PromptCell<'_> {
    pub fn ui(self, ui: &mut Ui, ctx: &CellContext, cell_ui: &mut CellUi, actions: &mut Vec<Action>) {
        let id = ctx.id;
        ui.add_enabled_ui(!ctx.running, |ui| {
            editor(ui, id, self.prompt, self.settings, ctx.has_chat, actions);
            super::replay::editor(ui, ctx, self.replay, cell_ui, actions);
        });
        interventions(ui, id, self.interventions, actions);
        if let Some(run) = ctx.results.runs.get(&id) {
            // While it re-runs, the kept result is the previous run's, not the live one's.
            results(ui, id, run, self.result.filter(|_| !ctx.running), ctx.timings, cell_ui, actions);
        } else if !ctx.model_ready && !ctx.busy {
            ui.label(RichText::new("Load a model to run this cell.").weak());
        }
    }
}
