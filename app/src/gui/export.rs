//! Exporting a cell's views (PNG, SVG, CSV) and its trace, as the GUI offers them.

use std::path::Path;

use routelab_probes::export::views::{self, View};

use super::document::Document;
use super::results::Results;
use super::ui_state::UiState;
use crate::notebook::CellKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportKind {
    ExpertLoad,
    Routing,
    Heads,
    RouterEntropy,
    Coactivation,
    HeadScores,
    Compare,
    Patching,
    Attribution,
    LogitLens,
}

impl ExportKind {
    pub fn stem(self) -> &'static str {
        match self {
            ExportKind::ExpertLoad => "expert-load",
            ExportKind::Routing => "routing",
            ExportKind::Heads => "heads",
            ExportKind::RouterEntropy => "router-entropy",
            ExportKind::Coactivation => "coactivation",
            ExportKind::HeadScores => "retrieval-heads",
            ExportKind::Compare => "routing-diff",
            ExportKind::Patching => "patching",
            ExportKind::Attribution => "attribution",
            ExportKind::LogitLens => "logit-lens",
        }
    }
}

/// The exportable view of a cell.
pub fn view_of(doc: &Document, results: &Results, ui: &UiState, cell: u64, kind: ExportKind) -> Result<View, String> {
    let c = doc.notebook.cell(cell).ok_or("no such cell")?;
    match (&c.kind, kind) {
        (CellKind::RetrievalScan { result: Some(r), .. }, _) => Ok(views::head_scores(&r.scores, &r.model)),
        (CellKind::Patching { result: Some(r), .. }, _) => Ok(views::patching(&r.result, &r.model)),
        (CellKind::Attribution { result: Some(r), .. }, ExportKind::LogitLens) => Ok(views::logit_lens(&r.result, &r.model)),
        // The plot shows as many components as the cell lists; the CSV has them all.
        (CellKind::Attribution { result: Some(r), .. }, _) => {
            Ok(views::attribution(&r.result, &r.model, crate::gui::views::attribution::BARS))
        }
        (CellKind::Compare { a, b, .. }, _) => {
            let (ta, tb) = (results.traces.get(a).ok_or("run cell A first")?, results.traces.get(b).ok_or("run cell B first")?);
            let d = routelab_probes::analysis::diff::diff(ta, tb).map_err(|e| e.to_string())?;
            views::diff_routing(&d, &ta.pieces).map_err(|e| e.to_string())
        }
        (CellKind::Prompt { .. }, k) => {
            let t = results.traces.get(&cell).ok_or("run the cell first")?;
            let layer = ui.cells.get(&cell).map(|u| u.layer);
            match k {
                ExportKind::ExpertLoad => views::expert_load(t),
                ExportKind::Routing => views::routing_map(t),
                ExportKind::Heads => views::heads_view(t),
                ExportKind::RouterEntropy => views::router_entropy(t),
                ExportKind::Coactivation => views::coactivation(t, layer.filter(|&l| t.router(l).is_some())),
                _ => return Err("not a view of a prompt cell".into()),
            }
            .map_err(|e| e.to_string())
        }
        _ => Err("this cell has no results to export yet".into()),
    }
}

/// Writes every view of a cell (CSV, PNG, SVG) into `dir`; returns the number of files.
pub fn export_cell(doc: &Document, results: &Results, ui: &UiState, cell: u64, dir: &Path) -> Result<usize, String> {
    let c = doc.notebook.cell(cell).ok_or("no such cell")?;
    let kinds: &[ExportKind] = match &c.kind {
        CellKind::Prompt { .. } => {
            &[ExportKind::ExpertLoad, ExportKind::Routing, ExportKind::Heads, ExportKind::RouterEntropy, ExportKind::Coactivation]
        }
        CellKind::Compare { .. } => &[ExportKind::Compare],
        CellKind::RetrievalScan { .. } => &[ExportKind::HeadScores],
        CellKind::Patching { .. } => &[ExportKind::Patching],
        CellKind::Attribution { .. } => &[ExportKind::Attribution, ExportKind::LogitLens],
        _ => &[],
    };
    let stem = slug(&c.title);
    let mut n = 0;
    for &k in kinds {
        // Dense models have no routing views; skip what does not apply.
        if let Ok(v) = view_of(doc, results, ui, cell, k) {
            v.write_all(dir, &format!("{stem}-{}", k.stem())).map_err(|e| e.to_string())?;
            n += 3;
        }
    }
    if let Some(t) = results.traces.get(&cell) {
        t.write(&dir.join(format!("{stem}.safetensors"))).map_err(|e| e.to_string())?;
        n += 1;
    }
    if n == 0 {
        return Err("this cell has no results to export yet".into());
    }
    Ok(n)
}

/// A file-name-safe version of a title.
pub fn slug(s: &str) -> String {
    let s: String = s.chars().map(|c| if c.is_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let s = s.split('-').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-");
    if s.is_empty() {
        "cell".into()
    } else {
        s.chars().take(60).collect()
    }
}
