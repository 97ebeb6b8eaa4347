//! Every exportable view: a data table and the plot drawn from it. `routelab export`, the
//! analysis commands and the GUI's export buttons all go through these.

use std::path::Path;

use super::csv::{num, Table};
use super::figure::{to_png, to_svg};
use super::plots::{Bars, CategoryMap, Heatmap, Lines};
use super::Format;
use crate::analysis::ablation::{ArmResult, RetrievalAblation};
use crate::analysis::attribution::{Attribution, Contribution};
use crate::analysis::corpus::{LayerSpecialization, CLASSES};
use crate::analysis::diff::{diff, RunDiff};
use crate::analysis::fidelity::FidelityReport;
use crate::analysis::heads_experts::HeadsExperts;
use crate::analysis::patching::{PatchResult, SweepSite};
use crate::analysis::retrieval::HeadScores;
use crate::atomic::write_atomic;
use crate::error::{ProbeError, Result};
use crate::stats::{heads, routing};
use crate::trace::Trace;
use routelab_model::hooks::Quantity;

/// A view: its table and its plot.
pub enum View {
    Heatmap(Table, Heatmap),
    Bars(Table, Bars),
    Map(Table, CategoryMap),
    Lines(Table, Lines),
}

impl View {
    pub fn table(&self) -> &Table {
        match self {
            View::Heatmap(t, _) | View::Bars(t, _) | View::Map(t, _) | View::Lines(t, _) => t,
        }
    }

    /// The plot's title.
    pub fn title(&self) -> &str {
        match self {
            View::Heatmap(_, p) => &p.title,
            View::Bars(_, p) => &p.title,
            View::Map(_, p) => &p.title,
            View::Lines(_, p) => &p.title,
        }
    }

    /// The plot as PNG bytes.
    pub fn png(&self) -> Result<Vec<u8>> {
        match self {
            View::Heatmap(_, p) => to_png(p),
            View::Bars(_, p) => to_png(p),
            View::Map(_, p) => to_png(p),
            View::Lines(_, p) => to_png(p),
        }
    }

    /// The plot as an SVG document.
    pub fn svg(&self) -> Result<String> {
        match self {
            View::Heatmap(_, p) => to_svg(p),
            View::Bars(_, p) => to_svg(p),
            View::Map(_, p) => to_svg(p),
            View::Lines(_, p) => to_svg(p),
        }
    }

    /// Writes the table (.csv) or the plot (.png, .svg), by extension.
    pub fn write(&self, path: &Path) -> Result<()> {
        match Format::of(path)? {
            Format::Csv => self.table().write(path),
            Format::Png => write_atomic(path, &self.png()?),
            Format::Svg => write_atomic(path, self.svg()?.as_bytes()),
        }
    }

    /// Writes `{stem}.csv`, `{stem}.png` and `{stem}.svg` into `dir`.
    pub fn write_all(&self, dir: &Path, stem: &str) -> Result<()> {
        for ext in ["csv", "png", "svg"] {
            self.write(&dir.join(format!("{stem}.{ext}")))?;
        }
        Ok(())
    }
}

/// The views of one trace (or of two, for the `diff-` ones), by the name `routelab export
/// --view` and Python's `Trace.view` take.
pub const TRACE_VIEWS: &[&str] =
    &["expert-load", "routing", "margin", "heads", "coactivation", "router-entropy", "contributions", "diff-routing", "diff-kl"];

/// The view `name` of `trace`; `layer` for per-layer views (coactivation; default the first MoE
/// layer), `against` the second trace of the diff views.
pub fn trace_view(name: &str, trace: &Trace, layer: Option<usize>, against: Option<&Trace>) -> Result<View> {
    let against = || {
        against.ok_or_else(|| {
            ProbeError::Invalid(format!(
                "the {name} view compares two traces: give the second (`--against` on the command line, `against=` in Python)"
            ))
        })
    };
    match name {
        "expert-load" => expert_load(trace),
        "routing" => routing_map(trace),
        "margin" => routing_margin(trace),
        "heads" => heads_view(trace),
        "coactivation" => coactivation(trace, layer),
        "router-entropy" => router_entropy(trace),
        "contributions" => contributions(trace),
        "diff-routing" => diff_routing(&diff(trace, against()?)?, &trace.pieces),
        "diff-kl" => diff_kl(&diff(trace, against()?)?),
        other => Err(ProbeError::Invalid(format!("view {other:?}: expected {}", TRACE_VIEWS.join(", ")))),
    }
}

fn title_of(trace: &Trace, what: &str) -> String {
    let model = Path::new(&trace.meta.model).file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let ivs = if trace.meta.interventions.is_empty() {
        String::new()
    } else {
        format!(" · {} intervention(s)", trace.meta.interventions.items.len())
    };
    format!("{what} — {model}{ivs}")
}

fn moe_layers(trace: &Trace) -> Vec<usize> {
    (0..trace.num_layers()).filter(|&l| trace.router(l).is_some()).collect()
}

fn need_routing(trace: &Trace) -> Result<Vec<usize>> {
    let m = moe_layers(trace);
    if m.is_empty() {
        return Err(ProbeError::Invalid("this trace has no routing (a dense model, or router capture was off)".into()));
    }
    Ok(m)
}

/// Expert load: layer × expert share of top-k selections.
pub fn expert_load(trace: &Trace) -> Result<View> {
    let layers = need_routing(trace)?;
    let e = layers.iter().filter_map(|&l| trace.router(l)).map(|r| r.num_experts).max().unwrap_or(0);
    let mut t = Table::new(&["layer", "expert", "selections", "share", "weight_mass"]);
    let mut values = vec![];
    for (&l, r) in layers.iter().zip(layers.iter().filter_map(|&l| trace.router(l))) {
        let load = routing::load(r.experts, r.weights, r.num_experts);
        let shares = load.shares();
        for (x, ((count, share), mass)) in load.counts.iter().zip(&shares).zip(&load.weight_mass).enumerate() {
            t.push(vec![l.to_string(), x.to_string(), count.to_string(), num(*share), num(*mass)]);
        }
        let mut row = shares;
        row.resize(e, f64::NAN);
        values.push(row);
    }
    Ok(View::Heatmap(
        t,
        Heatmap {
            title: title_of(trace, &format!("Expert load over {} tokens", trace.len())),
            x_label: "expert".into(),
            y_label: "layer".into(),
            row_labels: layers.iter().map(|l| l.to_string()).collect(),
            col_labels: (0..e).map(|x| x.to_string()).collect(),
            annotate: e <= 16 && layers.len() <= 16,
            values,
            scale_label: "share of top-k selections".into(),
            range: None,
        },
    ))
}

/// Token × layer map of each token's top-1 expert, with the text.
pub fn routing_map(trace: &Trace) -> Result<View> {
    let layers = need_routing(trace)?;
    let e = layers.iter().filter_map(|&l| trace.router(l)).map(|r| r.num_experts).max().unwrap_or(0);
    let pieces: Vec<String> =
        if trace.pieces.len() == trace.len() { trace.pieces.clone() } else { trace.tokens().iter().map(|t| t.to_string()).collect() };
    let mut t = Table::new(&["position", "token", "text", "layer", "experts", "weights"]);
    let mut cells = vec![];
    for l in 0..trace.num_layers() {
        let Some(r) = trace.router(l) else {
            cells.push(vec![None; trace.len()]);
            continue;
        };
        let mut row = vec![];
        for (p, (token, piece)) in trace.tokens().iter().zip(&pieces).enumerate() {
            let ex = r.experts_at(p);
            row.push(Some(ex[0] as usize));
            t.push(vec![
                p.to_string(),
                token.to_string(),
                piece.clone(),
                l.to_string(),
                ex.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(" "),
                r.weights_at(p).iter().map(|&w| num(w as f64)).collect::<Vec<_>>().join(" "),
            ]);
        }
        cells.push(row);
    }
    Ok(View::Map(
        t,
        CategoryMap {
            title: title_of(trace, "Top-1 expert per token and layer"),
            x_label: "token".into(),
            y_label: "layer".into(),
            col_labels: pieces,
            row_labels: (0..trace.num_layers()).map(|l| format!("layer {l}")).collect(),
            cells,
            category_names: (0..e).map(|x| format!("e{x}")).collect(),
        },
    ))
}

/// Layer × token map of each token's routing margin (`router.margin`: the gap between the k-th
/// and (k+1)-th selection scores, in the router's own score space): near ties, where a small
/// change of the input or of the arithmetic flips the selection, show dark.
pub fn routing_margin(trace: &Trace) -> Result<View> {
    let layers: Vec<usize> = (0..trace.num_layers()).filter(|&l| trace.layer_f32(l, Quantity::RouterMargin).is_some()).collect();
    if layers.is_empty() {
        return Err(ProbeError::Invalid("this trace has no routing margins: run with --capture margin (or all)".into()));
    }
    let pieces: Vec<String> =
        if trace.pieces.len() == trace.len() { trace.pieces.clone() } else { trace.tokens().iter().map(|t| t.to_string()).collect() };
    let mut t = Table::new(&["position", "token", "text", "layer", "margin"]);
    let mut values = vec![];
    for &l in &layers {
        let m = trace.layer_f32(l, Quantity::RouterMargin).unwrap_or(&[]);
        for (p, (&v, (token, piece))) in m.iter().zip(trace.tokens().iter().zip(&pieces)).enumerate() {
            t.push(vec![p.to_string(), token.to_string(), piece.clone(), l.to_string(), num(v as f64)]);
        }
        // No margin where nothing was left out (top-k of all experts).
        values.push(m.iter().map(|&v| if v.is_finite() { v as f64 } else { f64::NAN }).collect::<Vec<f64>>());
    }
    // The colour scale stops at the 95th percentile so that a few wide margins do not wash
    // out the near ties.
    let mut finite: Vec<f64> = values.iter().flatten().copied().filter(|v| v.is_finite()).collect();
    finite.sort_by(f64::total_cmp);
    let high = finite.get(finite.len().saturating_sub(1) * 95 / 100).copied().unwrap_or(1.0).max(f64::MIN_POSITIVE);
    Ok(View::Heatmap(
        t,
        Heatmap {
            title: title_of(trace, "Routing margin per token and layer (dark: near ties)"),
            x_label: "token".into(),
            y_label: "layer".into(),
            row_labels: layers.iter().map(|l| l.to_string()).collect(),
            col_labels: pieces,
            values,
            scale_label: "gap between k-th and (k+1)-th router score".into(),
            range: Some((0.0, high)),
            annotate: false,
        },
    ))
}

/// Per layer and head: mean attention entropy and sink score (from the captured sink, or from
/// full attention); with full attention also the previous-token score (table).
pub fn heads_view(trace: &Trace) -> Result<View> {
    let t_len = trace.len();
    let h = (0..trace.num_layers()).map(|l| trace.heads(l)).max().unwrap_or(0);
    if h == 0 || (0..trace.num_layers()).all(|l| trace.layer_f32(l, Quantity::AttnEntropy).is_none()) {
        return Err(ProbeError::Invalid("this trace has no head statistics (capture stats was off)".into()));
    }
    let mut t = Table::new(&["layer", "head", "mean_entropy_nats", "sink", "previous_token"]);
    let mut values = vec![];
    for l in 0..trace.num_layers() {
        let mut row = vec![f64::NAN; h];
        let lh = trace.heads(l);
        let scores = trace.probs(l).map(|p| heads::head_scores(&p.to_dense(), lh, t_len));
        let sinks = trace.layer_f32(l, Quantity::AttnSink).map(|s| heads::sink_scores(s, lh, t_len));
        if let Some(e) = trace.layer_f32(l, Quantity::AttnEntropy) {
            for (head, x) in row.iter_mut().enumerate().take(lh) {
                *x = (0..t_len).map(|p| e[p * lh + head] as f64).sum::<f64>() / t_len.max(1) as f64;
                let prev = scores.as_ref().map(|s| num(s[head].previous_token)).unwrap_or_default();
                let sink = match (&scores, &sinks) {
                    (Some(s), _) => num(s[head].sink),
                    (None, Some(s)) => num(s[head]),
                    (None, None) => String::new(),
                };
                t.push(vec![l.to_string(), head.to_string(), num(*x), sink, prev]);
            }
        }
        values.push(row);
    }
    Ok(View::Heatmap(
        t,
        Heatmap {
            title: title_of(trace, "Mean attention entropy per head"),
            x_label: "head".into(),
            y_label: "layer".into(),
            row_labels: (0..trace.num_layers()).map(|l| l.to_string()).collect(),
            col_labels: (0..h).map(|x| x.to_string()).collect(),
            annotate: h <= 16 && trace.num_layers() <= 16,
            values,
            scale_label: "entropy (nats)".into(),
            range: None,
        },
    ))
}

/// Co-activation of experts in one layer (how often two experts are chosen together).
pub fn coactivation(trace: &Trace, layer: Option<usize>) -> Result<View> {
    let layers = need_routing(trace)?;
    let l = layer.unwrap_or(layers[0]);
    let r = trace.router(l).ok_or_else(|| ProbeError::Invalid(format!("layer {l} has no routing (MoE layers: {layers:?})")))?;
    let m = routing::coactivation(r.experts, r.top_k, r.num_experts);
    let mut t = Table::new(&["expert_a", "expert_b", "tokens_together"]);
    for (i, row) in m.iter().enumerate() {
        for (j, &c) in row.iter().enumerate() {
            t.push(vec![i.to_string(), j.to_string(), c.to_string()]);
        }
    }
    let values: Vec<Vec<f64>> = m
        .iter()
        .enumerate()
        .map(|(i, row)| row.iter().enumerate().map(|(j, &c)| if i == j { f64::NAN } else { c as f64 }).collect())
        .collect();
    Ok(View::Heatmap(
        t,
        Heatmap {
            title: title_of(trace, &format!("Expert co-activation, layer {l}")),
            x_label: "expert".into(),
            y_label: "expert".into(),
            row_labels: (0..r.num_experts).map(|x| x.to_string()).collect(),
            col_labels: (0..r.num_experts).map(|x| x.to_string()).collect(),
            annotate: r.num_experts <= 16,
            values,
            scale_label: "tokens selecting both".into(),
            range: None,
        },
    ))
}

/// Mean router entropy and top-k margin per MoE layer.
pub fn router_entropy(trace: &Trace) -> Result<View> {
    let layers = need_routing(trace)?;
    let mut t = Table::new(&["layer", "mean_router_entropy_nats", "max_entropy_nats", "mean_topk_logit_margin"]);
    let (mut ent, mut max) = (vec![], vec![]);
    for (&l, r) in layers.iter().zip(layers.iter().filter_map(|&l| trace.router(l))) {
        let h = routing::mean(&routing::router_entropy(r.logits, r.num_experts));
        let m = routing::mean(&routing::top_k_margin(r.logits, r.num_experts, r.top_k));
        let lne = (r.num_experts as f64).ln();
        t.push(vec![l.to_string(), num(h), num(lne), num(m)]);
        ent.push((l as f64, h));
        max.push((l as f64, lne));
    }
    Ok(View::Lines(
        t,
        Lines {
            title: title_of(trace, "Router entropy per layer"),
            x_label: "layer".into(),
            y_label: "entropy (nats)".into(),
            series: vec![("mean router entropy".into(), ent), ("uniform routing (ln E)".into(), max)],
        },
    ))
}

/// Mean L2 norm of routed, shared-expert and dense-residual contributions per MoE layer.
pub fn contributions(trace: &Trace) -> Result<View> {
    let mut t = Table::new(&["layer", "routed_norm", "shared_norm", "dense_norm"]);
    let (mut routed, mut shared, mut dense) = (vec![], vec![], vec![]);
    let mean = |l: usize, q: Quantity| trace.layer_f32(l, q).map(|v| v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64);
    for l in 0..trace.num_layers() {
        let Some(r) = mean(l, Quantity::RoutedNorm) else { continue };
        let (s, d) = (mean(l, Quantity::SharedNorm), mean(l, Quantity::DenseNorm));
        t.push(vec![l.to_string(), num(r), s.map(num).unwrap_or_default(), d.map(num).unwrap_or_default()]);
        routed.push((l as f64, r));
        if let Some(s) = s {
            shared.push((l as f64, s));
        }
        if let Some(d) = d {
            dense.push((l as f64, d));
        }
    }
    if routed.is_empty() {
        return Err(ProbeError::Invalid("this trace has no contribution norms (capture contributions was off, or a dense model)".into()));
    }
    let mut series = vec![("routed experts".to_string(), routed)];
    if !shared.is_empty() {
        series.push(("shared expert(s)".into(), shared));
    }
    if !dense.is_empty() {
        series.push(("dense residual MLP".into(), dense));
    }
    Ok(View::Lines(
        t,
        Lines {
            title: title_of(trace, "Contribution to the residual stream"),
            x_label: "layer".into(),
            y_label: "mean L2 norm".into(),
            series,
        },
    ))
}

/// Retrieval score per (layer, head).
pub fn head_scores(scores: &HeadScores, model: &str) -> View {
    let values: Vec<Vec<f64>> = (0..scores.layers).map(|l| (0..scores.heads).map(|h| scores.get(l, h)).collect()).collect();
    let share = 100.0 * scores.share_above(crate::analysis::retrieval::RETRIEVAL_THRESHOLD);
    View::Heatmap(
        scores.to_table(),
        Heatmap {
            title: format!("Retrieval score per head — {model} ({share:.0}% of heads > 0.1)"),
            x_label: "head".into(),
            y_label: "layer".into(),
            row_labels: (0..scores.layers).map(|l| l.to_string()).collect(),
            col_labels: (0..scores.heads).map(|h| h.to_string()).collect(),
            annotate: scores.heads <= 16 && scores.layers <= 16,
            values,
            scale_label: "retrieval score".into(),
            range: Some((0.0, scores.scores.iter().cloned().fold(0.1, f64::max))),
        },
    )
}

/// Heads × experts: per MoE layer and expert, the selections at the steps where the heads copy
/// against the other decoding steps; the plot is the layer × expert log odds ratio.
pub fn heads_experts(r: &HeadsExperts, model: &str) -> View {
    let mut t = Table::new(&[
        "layer",
        "expert",
        "at_copy",
        "copy_positions",
        "elsewhere",
        "other_positions",
        "share_copy",
        "share_elsewhere",
        "enrichment",
        "log2_enrichment",
        "z",
        "p_value",
        "log_odds",
        "log_odds_se",
    ]);
    let (copy, other) = (r.copy_positions.to_string(), r.other_positions().to_string());
    for l in &r.layers {
        for e in &l.experts {
            t.push(vec![
                l.layer.to_string(),
                e.expert.to_string(),
                e.at_copy.to_string(),
                copy.clone(),
                e.elsewhere.to_string(),
                other.clone(),
                num(e.share_copy),
                num(e.share_elsewhere),
                num(e.enrichment),
                num(e.enrichment.log2()),
                num(e.z),
                num(e.p_value),
                num(e.log_odds),
                num(e.log_odds_se),
            ]);
        }
    }
    // The log odds ratio stays finite where an expert never appears on one side (where the
    // enrichment is 0 or infinite); an expert never selected at these steps is drawn grey.
    let values: Vec<Vec<f64>> = r
        .layers
        .iter()
        .map(|l| l.experts.iter().map(|e| if e.at_copy + e.elsewhere > 0 { e.log_odds } else { f64::NAN }).collect())
        .collect();
    let reach = values.iter().flatten().filter(|v| v.is_finite()).fold(1.0f64, |m, v| m.max(v.abs()));
    View::Heatmap(
        t,
        Heatmap {
            title: format!(
                "Experts where {} head(s) copy — {model}: {} of {} decoding steps",
                r.heads.len(),
                r.copy_positions,
                r.positions
            ),
            x_label: "expert".into(),
            y_label: "layer".into(),
            row_labels: r.layers.iter().map(|l| l.layer.to_string()).collect(),
            col_labels: (0..r.num_experts).map(|e| e.to_string()).collect(),
            annotate: r.num_experts <= 16 && r.layers.len() <= 16,
            values,
            scale_label: "log odds ratio, copy steps vs others (+0.5 per cell; grey: never selected)".into(),
            range: Some((-reach, reach)),
        },
    )
}

/// Needle accuracy: baseline, top-N retrieval heads masked, N random heads masked.
pub fn retrieval_ablation(r: &RetrievalAblation, model: &str) -> View {
    let mut t = Table::new(&["arm", "heads", "needle_accuracy"]);
    let fmt_heads = |h: &[(usize, usize)]| h.iter().map(|(l, h)| format!("{l}:{h}")).collect::<Vec<_>>().join(" ");
    t.push(vec!["baseline".into(), String::new(), num(r.baseline)]);
    t.push(vec![format!("top-{} retrieval heads", r.n), fmt_heads(&r.retrieval_heads), num(r.masked_retrieval)]);
    for (i, (h, a)) in r.random_draws.iter().enumerate() {
        t.push(vec![format!("random draw {}", i + 1), fmt_heads(h), num(*a)]);
    }
    let mut cats = vec!["no masking".to_string(), format!("top-{} retrieval", r.n)];
    let mut vals = vec![100.0 * r.baseline, 100.0 * r.masked_retrieval];
    cats.push(format!("{} random (mean of {})", r.n, r.random_draws.len()));
    vals.push(100.0 * r.random_mean());
    View::Bars(
        t,
        Bars {
            title: format!("Needle accuracy with heads masked ({:?}) — {model}", r.method)
                .replace("Uniform", "uniform")
                .replace("Zero", "zero"),
            x_label: "heads masked".into(),
            y_label: "needle accuracy (%)".into(),
            categories: cats,
            series: vec![(String::new(), vals)],
        },
    )
}

/// Token agreement and KL per intervention arm.
pub fn arms(results: &[ArmResult], model: &str) -> View {
    let mut t = Table::new(&["arm", "token_agreement", "mean_kl_nats"]);
    for r in results {
        t.push(vec![r.name.clone(), num(r.token_agreement), num(r.mean_kl)]);
    }
    View::Bars(
        t,
        Bars {
            title: format!("Ablations — {model}"),
            x_label: "intervention set".into(),
            y_label: "value".into(),
            categories: results.iter().map(|r| r.name.clone()).collect(),
            series: vec![
                ("token agreement".into(), results.iter().map(|r| r.token_agreement).collect()),
                ("mean KL (nats)".into(), results.iter().map(|r| r.mean_kl).collect()),
            ],
        },
    )
}

/// Routing flips per layer and position.
pub fn diff_routing(d: &RunDiff, pieces: &[String]) -> Result<View> {
    if d.routing_flips.is_empty() {
        return Err(ProbeError::Invalid("neither trace has routing to compare".into()));
    }
    let mut t = Table::new(&["position", "layer", "routing_changed", "kl_nats", "top1_changed"]);
    for (l, flips) in &d.routing_flips {
        for (p, &f) in flips.iter().enumerate() {
            t.push(vec![
                p.to_string(),
                l.to_string(),
                f.to_string(),
                d.kl.as_ref().map(|k| num(k[p])).unwrap_or_default(),
                d.top1_changed.as_ref().map(|k| k[p].to_string()).unwrap_or_default(),
            ]);
        }
    }
    let cols: Vec<String> = (0..d.positions).map(|p| pieces.get(p).cloned().unwrap_or_else(|| p.to_string())).collect();
    let diverge = d.first_divergence.map(|p| format!(", first different token at {p}")).unwrap_or_default();
    Ok(View::Heatmap(
        t,
        Heatmap {
            title: format!("Routing changes between two runs{diverge}"),
            x_label: "position".into(),
            y_label: "layer".into(),
            row_labels: d.routing_flips.iter().map(|(l, _)| l.to_string()).collect(),
            values: d.routing_flips.iter().map(|(_, f)| f.iter().map(|&x| if x { 1.0 } else { 0.0 }).collect()).collect(),
            col_labels: cols,
            scale_label: "top-k set changed (1 = yes)".into(),
            range: Some((0.0, 1.0)),
            annotate: false,
        },
    ))
}

/// Next-token KL along the sequence between two runs.
pub fn diff_kl(d: &RunDiff) -> Result<View> {
    let kl = d.kl.as_ref().ok_or_else(|| ProbeError::Invalid("both traces need logits (capture logits) for the KL view".into()))?;
    let mut t = Table::new(&["position", "kl_nats", "top1_changed"]);
    for (p, &k) in kl.iter().enumerate() {
        t.push(vec![p.to_string(), num(k), d.top1_changed.as_ref().map(|x| x[p].to_string()).unwrap_or_default()]);
    }
    Ok(View::Lines(
        t,
        Lines {
            title: "Next-token KL between two runs".into(),
            x_label: "position".into(),
            y_label: "KL(a ‖ b) (nats)".into(),
            series: vec![("KL".into(), kl.iter().enumerate().map(|(p, &k)| (p as f64, k)).collect())],
        },
    ))
}

/// Routing fidelity: per MoE layer and bin of the first setting's routing margin, the share of
/// positions where the second setting selected other experts.
pub fn routing_fidelity(r: &FidelityReport) -> View {
    let mut t = Table::new(&["layer", "margin_from", "margin_to", "positions", "flips", "flip_rate"]);
    let bins = r.layers.first().map(|l| l.bins.len()).unwrap_or(0);
    let mut values = vec![];
    for l in &r.layers {
        let mut row = vec![];
        for b in &l.bins {
            let rate = if b.positions == 0 { f64::NAN } else { b.flips as f64 / b.positions as f64 };
            t.push(vec![l.layer.to_string(), num(b.from), num(b.to), b.positions.to_string(), b.flips.to_string(), num(rate)]);
            row.push(rate);
        }
        t.push(vec![l.layer.to_string(), "all".into(), "all".into(), l.positions.to_string(), l.flips.to_string(), num(l.flip_rate())]);
        row.push(l.flip_rate());
        values.push(row);
    }
    let mut cols: Vec<String> = r.layers.first().map(|l| l.bins.iter().map(|b| format!("< {}", num(b.to))).collect()).unwrap_or_default();
    if let Some(last) = cols.last_mut() {
        *last = format!("≥ {}", r.layers[0].bins[bins - 1].from);
    }
    cols.push("all".into());
    View::Heatmap(
        t,
        Heatmap {
            title: format!("{}: routing flips in {} against {}, by margin", r.model, r.b, r.a),
            x_label: format!("routing margin in {}", r.a),
            y_label: "layer".into(),
            row_labels: r.layers.iter().map(|l| l.layer.to_string()).collect(),
            col_labels: cols,
            values,
            scale_label: "share of positions whose top-k set differs".into(),
            range: Some((0.0, 1.0)),
            annotate: true,
        },
    )
}

/// A model named by a local path as its file or directory name, for a plot's title (hub ids
/// and bundled names stay as they are).
fn title_name(model: &str) -> &str {
    let p = Path::new(model);
    match p.file_name().and_then(|n| n.to_str()) {
        Some(name) if p.exists() => name,
        _ => model,
    }
}

/// An activation-patching sweep: the share of the clean-vs-corrupted gap each cell recovers.
pub fn patching(r: &PatchResult, model: &str) -> View {
    let model = title_name(model);
    let mut t = Table::new(&["layer", "column", "label", "metric", "recovered"]);
    for (row, &l) in r.layers.iter().enumerate() {
        for (col, (&c, label)) in r.columns.iter().zip(&r.column_labels).enumerate() {
            t.push(vec![l.to_string(), c.to_string(), label.clone(), num(r.values[row][col]), num(r.recovered[row][col])]);
        }
    }
    let (what, x_label) = match r.site {
        SweepSite::Resid => ("residual stream", "position (corrupted → clean token)".to_string()),
        SweepSite::Attn => ("attention output", "position (corrupted → clean token)".to_string()),
        SweepSite::Mlp => ("MLP / MoE output", "position (corrupted → clean token)".to_string()),
        SweepSite::Shared => ("shared-expert output", "position (corrupted → clean token)".to_string()),
        SweepSite::Dense => ("dense-residual output", "position (corrupted → clean token)".to_string()),
        SweepSite::Head => ("head outputs", format!("head (patched at {})", positions_text(&r.positions))),
        SweepSite::Expert => ("expert outputs", format!("expert (patched at {})", positions_text(&r.positions))),
    };
    let cells = r.columns.len() * r.layers.len();
    View::Heatmap(
        t,
        Heatmap {
            title: format!("{model}: patching {what}, {}{}", r.metric.describe(), if r.incomplete { " (cancelled, partial)" } else { "" }),
            x_label,
            y_label: "layer".into(),
            row_labels: r.layers.iter().map(|l| l.to_string()).collect(),
            col_labels: r.column_labels.clone(),
            values: r.recovered.clone(),
            scale_label: format!("share of the gap recovered (clean {:.3}, corrupted {:.3})", r.clean_metric, r.corrupt_metric),
            range: None,
            annotate: cells <= 400,
        },
    )
}

/// "position 7", "positions 3–9" or "12 positions".
fn positions_text(p: &[usize]) -> String {
    match p {
        [one] => format!("position {one}"),
        [a, .., b] if b - a + 1 == p.len() => format!("positions {a}–{b}"),
        _ => format!("{} positions", p.len()),
    }
}

/// Direct logit attribution: the components that move the target's logit most, both ways.
pub fn attribution(a: &Attribution, model: &str, top: usize) -> View {
    let model = title_name(model);
    let mut t = Table::new(&["component", "layer", "contribution"]);
    for c in &a.components {
        t.push(vec![c.label.clone(), c.component.layer().map(|l| l.to_string()).unwrap_or_default(), num(c.value as f64)]);
    }
    let mut ranked: Vec<&Contribution> = a.components.iter().collect();
    ranked.sort_by(|x, y| y.value.abs().total_cmp(&x.value.abs()));
    ranked.truncate(top);
    View::Bars(
        t,
        Bars {
            title: format!("{model}: logit attribution of {:?} at position {} (logit {:.3})", a.target_text, a.position, a.logit),
            x_label: format!("component ({})", a.norm),
            y_label: "contribution to the logit".into(),
            categories: ranked.iter().map(|c| c.label.clone()).collect(),
            series: vec![("contribution".into(), ranked.iter().map(|c| c.value as f64).collect())],
        },
    )
}

/// The logit lens: per layer and position, the probability the residual stream after the
/// layer gives the model's final top token.
pub fn logit_lens(a: &Attribution, model: &str) -> View {
    let tokens = &a.tokens;
    let model = title_name(model);
    let mut t = Table::new(&["layer", "position", "token", "final_top_token", "probability"]);
    for (l, row) in a.lens_map.iter().enumerate() {
        for (p, &v) in row.iter().enumerate() {
            let tok = tokens.get(p).cloned().unwrap_or_default();
            t.push(vec![l.to_string(), p.to_string(), tok, a.final_tokens.get(p).cloned().unwrap_or_default(), num(v)]);
        }
    }
    let n = a.final_tokens.len();
    View::Heatmap(
        t,
        Heatmap {
            title: format!("{model}: logit lens, probability of the final prediction after each layer"),
            x_label: "position: input token → final prediction".into(),
            y_label: "layer".into(),
            row_labels: (0..a.lens_map.len()).map(|l| l.to_string()).collect(),
            col_labels: (0..n).map(|p| format!("{:?}→{:?}", tokens.get(p).cloned().unwrap_or_default(), a.final_tokens[p])).collect(),
            values: a.lens_map.clone(),
            scale_label: "probability".into(),
            range: Some((0.0, 1.0)),
            annotate: n * a.lens_map.len() <= 400,
        },
    )
}

/// Specialization: per layer summary table and MI bars.
pub fn specialization_summary(layers: &[LayerSpecialization], model: &str) -> View {
    let mut t = Table::new(&[
        "layer",
        "balance",
        "mi_class_bits",
        "mi_domain_bits",
        "vocabulary_specialization",
        "top1_agreement",
        "topk_agreement",
        "mean_router_entropy_nats",
        "mean_topk_logit_margin",
    ]);
    for l in layers {
        t.push(vec![
            l.layer.to_string(),
            num(l.balance),
            num(l.mi_class_bits),
            num(l.mi_domain_bits),
            num(l.vocabulary_specialization),
            num(l.agreement.top1),
            num(l.agreement.top_k),
            num(l.mean_router_entropy),
            num(l.mean_margin),
        ]);
    }
    View::Bars(
        t,
        Bars {
            title: format!("Mutual information between token label and top-1 expert — {model}"),
            x_label: "layer".into(),
            y_label: "mutual information (bits)".into(),
            categories: layers.iter().map(|l| l.layer.to_string()).collect(),
            series: vec![
                (format!("token class ({})", CLASSES.join(", ")), layers.iter().map(|l| l.mi_class_bits).collect()),
                ("document domain".into(), layers.iter().map(|l| l.mi_domain_bits).collect()),
            ],
        },
    )
}

/// One layer's expert distribution per domain.
pub fn specialization_domains(l: &LayerSpecialization, domains: &[String], model: &str) -> View {
    let mut t = Table::new(&["domain", "expert", "share", "jsd_from_overall_bits"]);
    for (d, dist) in l.domain_distributions.iter().enumerate() {
        for (e, &p) in dist.iter().enumerate() {
            t.push(vec![domains[d].clone(), e.to_string(), num(p), num(l.jsd_from_overall[d])]);
        }
    }
    let e = l.load.counts.len();
    View::Heatmap(
        t,
        Heatmap {
            title: format!("Expert distribution per domain, layer {} — {model}", l.layer),
            x_label: "expert".into(),
            y_label: "domain".into(),
            row_labels: domains.iter().enumerate().map(|(d, n)| format!("{n} (JSD {:.2})", l.jsd_from_overall[d])).collect(),
            col_labels: (0..e).map(|x| x.to_string()).collect(),
            values: l.domain_distributions.clone(),
            scale_label: "share of the domain's selections".into(),
            range: None,
            annotate: e <= 16,
        },
    )
}
