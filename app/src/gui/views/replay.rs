//! A prompt cell's routing replay setting: which other prompt cell's run its MoE layers take
//! their expert choices from, in which layers, and whether the combine weights come too.

use egui::{RichText, Ui};

use super::cells::CellContext;
use super::index_list;
use crate::gui::state::{Action, CellUi};
use crate::notebook::ReplaySettings;

/// A cell as the picker names it.
fn source_name(ctx: &CellContext, cell: u64) -> String {
    match ctx.titles.get(&cell) {
        Some(t) => format!("cell {cell} “{t}”"),
        None => format!("cell {cell} (deleted)"),
    }
}

/// What the setting does, in one line (shown whether or not the cell has run since).
pub fn describe(ctx: &CellContext, r: &ReplaySettings) -> String {
    let layers = match &r.layers {
        Some(l) => format!("layers {}", index_list::format(Some(l))),
        None => "all layers".into(),
    };
    let weights = if r.weights { "with its weights" } else { "weights recomputed here" };
    format!("routing replayed from {}, {layers}, {weights}", source_name(ctx, r.cell))
}

/// The picker (prompt cells with a finished run), the layers and the weights switch.
pub fn editor(ui: &mut Ui, ctx: &CellContext, replay: &mut Option<ReplaySettings>, cell_ui: &mut CellUi, actions: &mut Vec<Action>) {
    let id = ctx.id;
    let mut changed = false;
    // Only finished runs have a trace to replay; the cell itself is no source.
    let mut sources: Vec<u64> = ctx.results.traces.keys().copied().filter(|&c| c != id).collect();
    sources.sort_unstable();
    let name = |c: Option<u64>| c.map_or_else(|| "none (its own router)".to_string(), |c| source_name(ctx, c));
    ui.horizontal_wrapped(|ui| {
        let l = ui.label("replay routing from");
        let current = replay.as_ref().map(|r| r.cell);
        let mut source = current;
        egui::ComboBox::from_id_salt(("replay-source", id))
            .selected_text(name(source))
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut source, None, name(None));
                for c in sources {
                    ui.selectable_value(&mut source, Some(c), name(Some(c)));
                }
            })
            .response
            .on_hover_text("Take the MoE layers' expert choices from another prompt cell's run, position by position")
            .labelled_by(l.id);
        if source != current {
            let (layers, weights) = replay.take().map_or((None, false), |r| (r.layers, r.weights));
            *replay = source.map(|cell| ReplaySettings { cell, layers, weights });
            changed = true;
        }
        if let Some(r) = replay.as_mut() {
            changed |= index_list::field(ui, "replayed layers", &mut cell_ui.layers_text, &mut r.layers);
            changed |= ui
                .checkbox(&mut r.weights, "replay weights too")
                .on_hover_text("Off: the combine weights are recomputed from this run's router scores for the replayed experts")
                .changed();
        }
    });
    if let Some(r) = replay.as_ref() {
        ui.label(RichText::new(describe(ctx, r)).strong());
    }
    if changed {
        actions.push(Action::Edited);
    }
}
