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

use routelab_model::hooks::HookPoint;

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
    if a.num_layers() != b.num_layers() {
        return Err(ProbeError::Invalid(format!("traces come from different models ({} vs {} layers)", a.num_layers(), b.num_layers())));
    }
    let t = a.len().min(b.len());
    let first_divergence = (0..t).find(|&i| a.tokens()[i] != b.tokens()[i]);
    let mut routing_flips = vec![];
    for l in 0..a.num_layers() {
        if let (Some(ra), Some(rb)) = (a.router(l), b.router(l)) {
            let flips = (0..t).map(|p| crate::stats::routing::selection_changed(ra.experts_at(p), rb.experts_at(p))).collect();
            routing_flips.push((l, flips));
        }
    }
    let logits = HookPoint::Logits;
    let (kl, top1_changed) = match (a.width(&logits), b.width(&logits)) {
        (Some(va), Some(vb)) if va == vb => {
            fn rows(x: &Trace, p: usize) -> &[f32] {
                x.row_f32(&HookPoint::Logits, p).unwrap_or(&[])
            }
            let kl = (0..t).map(|p| kl_from_logits(rows(a, p), rows(b, p))).collect();
            let top =
                (0..t).map(|p| routelab_model::sampling::argmax(rows(a, p)) != routelab_model::sampling::argmax(rows(b, p))).collect();
            (Some(kl), Some(top))
        }
        _ => (None, None),
    };
    Ok(RunDiff { positions: t, first_divergence, routing_flips, kl, top1_changed })
}
