//! The per-layer expert-load summary `routelab run` ends with: how many of the run's
//! positions each expert was selected for, and how evenly load spreads.

use std::fmt::Write;

use crate::trace::Trace;

/// Load of one MoE layer.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerLoad {
    pub layer: usize,
    /// Selections per expert (each position selects top-k experts).
    pub counts: Vec<usize>,
    /// Sum of combine weights per expert.
    pub weight_mass: Vec<f32>,
}

impl LayerLoad {
    pub fn total(&self) -> usize {
        self.counts.iter().sum()
    }

    /// Normalised entropy of the load distribution: 1 = perfectly even, 0 = one expert.
    pub fn balance(&self) -> f32 {
        let total = self.total() as f32;
        let n = self.counts.len();
        if total == 0.0 || n < 2 {
            return 0.0;
        }
        let h: f32 = self.counts.iter().filter(|&&c| c > 0).map(|&c| {
            let p = c as f32 / total;
            -p * p.ln()
        }).sum();
        h / (n as f32).ln()
    }

    /// Experts sorted by load, busiest first.
    pub fn busiest(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.counts.len()).collect();
        order.sort_by(|&a, &b| self.counts[b].cmp(&self.counts[a]).then(a.cmp(&b)));
        order
    }
}

/// Expert load per MoE layer over `positions` (all by default).
pub fn expert_load(trace: &Trace, positions: std::ops::Range<usize>) -> Vec<LayerLoad> {
    trace
        .layers
        .iter()
        .enumerate()
        .filter_map(|(layer, lt)| {
            let r = lt.router.as_ref()?;
            let mut counts = vec![0usize; r.num_experts];
            let mut weight_mass = vec![0f32; r.num_experts];
            for t in positions.clone() {
                for (&e, &w) in r.experts_at(t).iter().zip(r.weights_at(t)) {
                    counts[e as usize] += 1;
                    weight_mass[e as usize] += w;
                }
            }
            Some(LayerLoad { layer, counts, weight_mass })
        })
        .collect()
}

/// A plain-text table: one line per MoE layer with its busiest experts and balance.
pub fn format_load_table(loads: &[LayerLoad], top: usize) -> String {
    let mut s = String::new();
    if loads.is_empty() {
        return "dense model: no expert routing\n".into();
    }
    let _ = writeln!(s, "{:>5}  {:>7}  busiest experts (share of selections)", "layer", "balance");
    for l in loads {
        let total = l.total().max(1) as f32;
        let busiest: Vec<String> = l
            .busiest()
            .into_iter()
            .take(top)
            .filter(|&e| l.counts[e] > 0)
            .map(|e| format!("e{e} {:.0}%", 100.0 * l.counts[e] as f32 / total))
            .collect();
        let _ = writeln!(s, "{:>5}  {:>7.3}  {}", l.layer, l.balance(), busiest.join("  "));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balance_is_one_when_even_and_zero_for_a_single_expert() {
        let even = LayerLoad { layer: 0, counts: vec![3, 3, 3, 3], weight_mass: vec![0.0; 4] };
        assert!((even.balance() - 1.0).abs() < 1e-6);
        let one = LayerLoad { layer: 0, counts: vec![0, 6, 0, 0], weight_mass: vec![0.0; 4] };
        assert_eq!(one.balance(), 0.0);
        // counts 2, 1, 1 of 4 experts: H = -(.5 ln .5 + 2·.25 ln .25) = 1.0397, / ln 4.
        let some = LayerLoad { layer: 0, counts: vec![2, 1, 1, 0], weight_mass: vec![0.0; 4] };
        assert!((some.balance() - 1.039_720_8 / 4f32.ln()).abs() < 1e-5);
        assert_eq!(some.busiest()[0], 0);
    }
}
