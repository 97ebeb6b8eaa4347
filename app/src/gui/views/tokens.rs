//! The token strip: the run's text, each token on the colour of its top-1 expert in the chosen
//! layer, or of its routing margin there (grey for prompt tokens of dense models). Laid out as one galley, so thousands of
//! tokens cost one text layout; hovering a token shows its routing in every layer and its
//! head statistics, clicking pins it.

use egui::text::{LayoutJob, TextFormat};
use egui::{Color32, FontId, Sense, Stroke, Ui};

use super::{expert_color, scale_color, text_on};
use crate::gui::run_view::RunView;
use crate::gui::ui_state::StripColour;
use routelab_probes::analysis::fidelity::MARGIN_EDGES;

/// What the user did with the strip.
pub struct StripResponse {
    pub hovered: Option<usize>,
    pub clicked: Option<usize>,
}

/// How a token is shown: whitespace made visible, newlines kept.
pub fn display_piece(p: &str) -> String {
    if p.is_empty() {
        return "∅".into();
    }
    p.replace('\t', "⇥").replace("\n", "↵\n")
}

/// A margin's place on the colour scale: 0 at the first bin edge of `analyze routing-fidelity`
/// and below (near ties), 1 at its last edge and above, logarithmic between.
pub fn margin_scale(margin: f32) -> f32 {
    if margin.is_nan() {
        return 1.0;
    }
    let (lo, hi) = (MARGIN_EDGES[0].log10() as f32, MARGIN_EDGES[MARGIN_EDGES.len() - 1].log10() as f32);
    ((margin.max(1e-12).log10() - lo) / (hi - lo)).clamp(0.0, 1.0)
}

pub fn token_strip(
    ui: &mut Ui,
    run: &RunView,
    layer: usize,
    colour: StripColour,
    pinned: Option<usize>,
    max_height: f32,
    label: &str,
) -> StripResponse {
    let font = FontId::monospace(13.0);
    let mut job = LayoutJob::default();
    job.wrap.max_width = ui.available_width();
    let dark = ui.visuals().dark_mode;
    let prompt_fg = if dark { Color32::from_gray(170) } else { Color32::from_gray(90) };
    let mut starts = Vec::with_capacity(run.len());
    let mut chars = 0usize;
    for (i, piece) in run.pieces().iter().enumerate() {
        starts.push(chars);
        let text = display_piece(piece);
        chars += text.chars().count();
        let generated = i >= run.prompt_len;
        let shade = match colour {
            StripColour::TopExpert => run.top1(layer, i).map(|e| expert_color(e as usize)),
            StripColour::Margin => run.margin(layer, i).map(|m| scale_color(margin_scale(m))),
        };
        let bg = match shade {
            Some(c) => c,
            None if generated => {
                if dark {
                    Color32::from_gray(70)
                } else {
                    Color32::from_gray(215)
                }
            }
            None => Color32::TRANSPARENT,
        };
        let mut fmt = TextFormat { font_id: font.clone(), background: bg, ..Default::default() };
        fmt.color = if bg == Color32::TRANSPARENT { prompt_fg } else { text_on(bg) };
        if !generated && bg != Color32::TRANSPARENT {
            // Prompt tokens: same colours, faded towards the panel, so generation stands out.
            let panel = ui.visuals().panel_fill;
            let mix = |a: u8, b: u8| ((a as f32) * 0.45 + (b as f32) * 0.55) as u8;
            fmt.background = Color32::from_rgb(mix(panel.r(), bg.r()), mix(panel.g(), bg.g()), mix(panel.b(), bg.b()));
            fmt.color = text_on(fmt.background);
        }
        if Some(i) == pinned {
            fmt.underline = Stroke::new(2.0, ui.visuals().strong_text_color());
        }
        job.append(&text, 0.0, fmt);
    }
    let galley = ui.painter().layout_job(job);
    let mut out = StripResponse { hovered: None, clicked: None };
    egui::ScrollArea::vertical().max_height(max_height).id_salt(("token-strip", label)).auto_shrink([false, true]).show(ui, |ui| {
        let (rect, resp) = ui.allocate_exact_size(galley.size(), Sense::click());
        resp.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Canvas, true, label));
        ui.painter().galley(rect.min, galley.clone(), ui.visuals().text_color());
        let pick = |pos: egui::Pos2| -> Option<usize> {
            let c = galley.cursor_from_pos(pos - rect.min).index.0;
            match starts.binary_search(&c) {
                Ok(i) => Some(i),
                Err(i) => i.checked_sub(1),
            }
        };
        if let Some(pos) = resp.hover_pos() {
            out.hovered = pick(pos);
        }
        if resp.clicked() {
            out.clicked = resp.interact_pointer_pos().and_then(pick);
        }
    });
    out
}

/// The hover card: a token's routing in every MoE layer and its heads' entropy.
pub fn token_details(ui: &mut Ui, run: &RunView, pos: usize) {
    let piece = run.pieces().get(pos).cloned().unwrap_or_default();
    let kind = if pos >= run.prompt_len { "generated" } else { "prompt" };
    ui.strong(format!("position {pos} · token {} {:?} · {kind}", run.store.tokens().get(pos).copied().unwrap_or(0), piece));
    if run.is_moe() {
        egui::Grid::new(("routing-card", pos)).striped(true).spacing([10.0, 2.0]).show(ui, |ui| {
            ui.label("layer");
            ui.label("experts (weight)");
            ui.label("margin");
            ui.end_row();
            for l in 0..run.layers {
                let (ex, w) = run.experts_at(l, pos);
                if ex.is_empty() {
                    continue;
                }
                ui.label(l.to_string());
                ui.horizontal(|ui| {
                    for (e, w) in ex.iter().zip(w) {
                        let bg = expert_color(*e as usize);
                        ui.label(egui::RichText::new(format!(" e{e} {w:.2} ")).background_color(bg).color(text_on(bg)).monospace());
                    }
                });
                match run.margin(l, pos) {
                    Some(m) if m.is_finite() => ui.label(egui::RichText::new(format!("{m:.2e}")).monospace()),
                    _ => ui.label(""),
                };
                ui.end_row();
            }
        });
    }
    if run.heads > 0 {
        ui.separator();
        ui.label("attention entropy per head (nats; low = focused) and most-attended position:");
        egui::Grid::new(("heads-card", pos)).spacing([6.0, 1.0]).show(ui, |ui| {
            for l in 0..run.layers {
                let e = run.head_entropy_at(l, pos);
                let a = run.head_argmax_at(l, pos);
                let sink = run.head_sink_at(l, pos);
                if e.is_empty() {
                    continue;
                }
                ui.label(format!("L{l}"));
                let max = ((pos + 1) as f32).ln().max(1e-6);
                for (h, x) in e.iter().enumerate() {
                    let bg = super::scale_color(1.0 - x / max);
                    let mut tip = a
                        .get(h)
                        .map(|j| {
                            format!(
                                "head {h}: entropy {x:.2}, looks at {j} {:?}",
                                run.pieces().get(*j as usize).cloned().unwrap_or_default()
                            )
                        })
                        .unwrap_or_default();
                    if let Some(s) = sink.get(h) {
                        tip.push_str(&format!(", {:.0}% on the first token (sink)", 100.0 * s));
                    }
                    ui.label(egui::RichText::new(format!("{x:.1}")).background_color(bg).color(text_on(bg)).monospace().size(10.0))
                        .on_hover_text(tip);
                }
                ui.end_row();
            }
        });
    }
}
