//! The per-layer expert-load summary `routelab run` ends with: how many of the run's
//! positions each expert was selected for, and how evenly load spreads.

use std::fmt::Write;

use crate::stats::routing::{load, Load};
use crate::trace::Trace;

/// Expert load per MoE layer over `positions`: (layer, load).
pub fn expert_load(trace: &Trace, positions: std::ops::Range<usize>) -> Vec<(usize, Load)> {
    (0..trace.num_layers())
        .filter_map(|layer| {
            let r = trace.router(layer)?;
            let k = r.top_k;
            let (a, b) = (positions.start * k, positions.end * k);
            Some((layer, load(&r.experts[a..b], &r.weights[a..b], r.num_experts)))
        })
        .collect()
}

/// A plain-text table: one line per MoE layer with its balance and busiest experts.
pub fn format_load_table(loads: &[(usize, Load)], top: usize) -> String {
    if loads.is_empty() {
        return "dense model: no expert routing\n".into();
    }
    let mut s = String::new();
    let _ = writeln!(s, "{:>5}  {:>7}  busiest experts (share of selections)", "layer", "balance");
    for (layer, l) in loads {
        let shares = l.shares();
        let mut order: Vec<usize> = (0..shares.len()).collect();
        order.sort_by(|&a, &b| l.counts[b].cmp(&l.counts[a]).then(a.cmp(&b)));
        let busiest: Vec<String> =
            order.into_iter().take(top).filter(|&e| l.counts[e] > 0).map(|e| format!("e{e} {:.0}%", 100.0 * shares[e])).collect();
        let _ = writeln!(s, "{layer:>5}  {:>7.3}  {}", l.balance(), busiest.join("  "));
    }
    s
}
