//! The model panel: choose and load a model, watch it load, see what it is.

use egui::{RichText, Ui};
use routelab_model::hub::{Origin, QuantListing};
use routelab_model::session::DTYPES;
use routelab_model::source::{LoadProgress, BUNDLED};

use crate::gui::state::{Action, AppState, QuantList};
use crate::units;

/// A GGUF repo's quants: name (click to load, when `enabled`), size, files.
fn quant_list(ui: &mut Ui, l: &QuantListing, requested: &str, enabled: bool) -> Option<String> {
    let mut chosen = None;
    ui.separator();
    ui.label(RichText::new(format!("{} · GGUF quants", l.repo_id())).strong());
    if let Origin::Cache { why } = &l.origin {
        ui.label(RichText::new(format!("Only what the local cache holds: {why}")).weak().small());
    }
    egui::Grid::new("quants").num_columns(3).spacing([12.0, 3.0]).striped(true).show(ui, |ui| {
        for q in &l.quants {
            let spec = l.spec(&q.name);
            // Shards missing from a cache listing cannot be fetched: the hub was not asked.
            let usable = enabled && (q.is_complete() || l.origin == Origin::Hub);
            if ui.add_enabled(usable, egui::Button::selectable(requested == spec, q.name.as_str())).clicked() {
                chosen = Some(spec);
            }
            ui.label(units::quant_size(q));
            ui.label(RichText::new(units::quant_files(q)).weak());
            ui.end_row();
        }
    });
    chosen
}

pub fn model_panel(ui: &mut Ui, state: &mut AppState, actions: &mut Vec<Action>) {
    ui.heading("Model");
    let hint = ui.label(RichText::new("directory, .gguf, hub repo id or bundled name").weak().small());
    let r = ui.add(egui::TextEdit::singleline(&mut state.model.requested).desired_width(f32::INFINITY)).labelled_by(hint.id);
    if r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)) {
        actions.push(Action::LoadModel);
    }
    ui.horizontal(|ui| {
        egui::ComboBox::from_id_salt("bundled")
            .selected_text("bundled ▾")
            .show_ui(ui, |ui| {
                for b in BUNDLED {
                    if ui.selectable_label(state.model.requested == b.name, b.name).on_hover_text(b.description).clicked() {
                        state.model.requested = b.name.to_string();
                        actions.push(Action::LoadModel);
                    }
                }
            })
            .response
            .widget_info(|| egui::WidgetInfo::labeled(egui::Role::ComboBox, true, "bundled models"));
        egui::ComboBox::from_id_salt("device")
            .selected_text(state.model.device.clone())
            .width(64.0)
            .show_ui(ui, |ui| {
                for d in ["cpu", "cuda", "cuda:1"] {
                    ui.selectable_value(&mut state.model.device, d.to_string(), d);
                }
            })
            .response
            .widget_info(|| egui::WidgetInfo::labeled(egui::Role::ComboBox, true, "device"));
        egui::ComboBox::from_id_salt("dtype")
            .selected_text(state.model.dtype.as_deref().unwrap_or("default dtype"))
            .width(96.0)
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut state.model.dtype, None, "default").on_hover_text("f32 on the CPU, bf16 on a GPU");
                for d in DTYPES {
                    ui.selectable_value(&mut state.model.dtype, Some(d.to_string()), d);
                }
            })
            .response
            .on_hover_text(
                "The weights' dtype. On the CPU the arithmetic is f32 either way; bf16 halves the memory and the bytes read per token",
            )
            .widget_info(|| egui::WidgetInfo::labeled(egui::Role::ComboBox, true, "dtype"));
        let loading = state.model.loading.is_some() || matches!(state.model.quants, Some(QuantList::Listing { .. }));
        if ui.add_enabled(!loading && !state.busy(), egui::Button::new("Load")).clicked() {
            actions.push(Action::LoadModel);
        }
    });
    if let Some(p) = &state.model.loading {
        let (frac, text) = match p {
            LoadProgress::Download { file, done, total } => {
                (*done as f32 / (*total).max(1) as f32, format!("{file}: {:.0}/{:.0} MB", *done as f64 / 1e6, *total as f64 / 1e6))
            }
            LoadProgress::Layers { done, total } if *total > 0 => (*done as f32 / *total as f32, format!("layer {done}/{total}")),
            LoadProgress::Layers { .. } => (0.0, "reading weights…".into()),
        };
        let eta = state.model.load_started.filter(|_| frac > 0.05).map(|t| {
            let el = t.elapsed().as_secs_f32();
            format!(", ~{:.0}s left", el / frac * (1.0 - frac))
        });
        ui.add(egui::ProgressBar::new(frac).text(format!("{text}{}", eta.unwrap_or_default())));
        if ui.button("Cancel").clicked() {
            actions.push(Action::Cancel);
        }
    }
    match &state.model.quants {
        Some(QuantList::Listing { repo }) => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(format!("listing the files of {repo}…"));
            });
        }
        Some(QuantList::Listed(l)) => {
            if let Some(spec) = quant_list(ui, l, &state.model.requested, !state.busy()) {
                state.model.requested = spec;
                actions.push(Action::LoadModel);
            }
        }
        None => {}
    }
    if let Some(e) = &state.model.error {
        ui.colored_label(ui.visuals().error_fg_color, e);
    }
    if let Some(info) = &state.model.info {
        ui.separator();
        egui::Grid::new("model-info").num_columns(2).spacing([8.0, 3.0]).show(ui, |ui| {
            let mut row = |k: &str, v: String| {
                ui.label(RichText::new(k).weak());
                ui.label(v);
                ui.end_row();
            };
            row("name", info.name.clone());
            row("architecture", info.model_type.clone());
            row("layers", format!("{} ({} MoE)", info.layers, info.moe_layers));
            row("heads", format!("{} query, {} key/value", info.heads, info.kv_heads));
            if info.moe_layers > 0 {
                row("experts", format!("{} routed, top-{}", info.experts, info.top_k));
                if info.shared_experts > 0 {
                    row("shared", format!("{} shared expert(s)", info.shared_experts));
                }
                if info.dense_residual {
                    row("residual", "dense MLP in parallel".into());
                }
            }
            row("parameters", format!("{:.1} M", info.parameters as f64 / 1e6));
            row("memory", format!("{} ({})", units::bytes(info.weight_bytes as u64), info.dtype));
            row("storage", info.storage.clone());
            row("context", format!("{} positions", info.context));
            row("vocabulary", info.vocab.to_string());
            row("device", info.device.clone());
        });
    }
}
