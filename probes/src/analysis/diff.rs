//! Run diff: what changed between two traces of the same prompt (typically a plain run and
//! one with interventions).
//!
//! - the first position whose token differs;
//! - per MoE layer and position, whether the top-k set of experts changed (a routing flip);
//! - per position (when both traces have logits), KL(a ‖ b) of the next-token distributions,
//!   and whether the top-1 prediction changed.
//!
//! Positions are compared up to the shorter trace; routing and logits after the first
//! diverging token compare different contexts and are reported as such.

use serde::Serialize;

use super::ablation::kl_from_logits;
use crate::error::{ProbeError, Result};
use crate::trace::Trace;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunDiff {
    pub positions: usize,
    /// First position whose token differs (None if one is a prefix of the other).
    pub first_divergence: Option<usize>,
    /// (layer, one flag per position: top-k set differs).
    pub routing_flips: Vec<(usize, Vec<bool>)>,
    /// KL(a ‖ b) of next-token distributions per position, when both have logits.
    pub kl: Option<Vec<f64>>,
    /// Top-1 prediction differs, per position, when both have logits.
    pub top1_changed: Option<Vec<bool>>,
}

impl RunDiff {
    /// Share of positions with a routing flip, per layer.
    pub fn flip_rates(&self) -> Vec<(usize, f64)> {
        self.routing_flips.iter().map(|(l, f)| (*l, f.iter().filter(|&&x| x).count() as f64 / f.len().max(1) as f64)).collect()
    }
}

pub fn diff(a: &Trace, b: &Trace) -> Result<RunDiff> {
    if a.layers.len() != b.layers.len() {
        return Err(ProbeError::Invalid(format!("traces come from different models ({} vs {} layers)", a.layers.len(), b.layers.len())));
    }
    let t = a.len().min(b.len());
    let first_divergence = (0..t).find(|&i| a.tokens[i] != b.tokens[i]);
    let mut routing_flips = vec![];
    for (l, (la, lb)) in a.layers.iter().zip(&b.layers).enumerate() {
        if let (Some(ra), Some(rb)) = (&la.router, &lb.router) {
            let flips = (0..t)
                .map(|p| {
                    let (mut x, mut y) = (ra.experts_at(p).to_vec(), rb.experts_at(p).to_vec());
                    x.sort();
                    y.sort();
                    x != y
                })
                .collect();
            routing_flips.push((l, flips));
        }
    }
    let (kl, top1_changed) = match (&a.logits, &b.logits) {
        (Some((va, la)), Some((vb, lb))) if va == vb => {
            let v = *va;
            let rows = |x: &[f32], p: usize| -> Vec<f32> { x[p * v..(p + 1) * v].to_vec() };
            let kl = (0..t).map(|p| kl_from_logits(&rows(la, p), &rows(lb, p))).collect();
            let top =
                (0..t).map(|p| routelab_model::sampling::argmax(&rows(la, p)) != routelab_model::sampling::argmax(&rows(lb, p))).collect();
            (Some(kl), Some(top))
        }
        _ => (None, None),
    };
    Ok(RunDiff { positions: t, first_divergence, routing_flips, kl, top1_changed })
}
