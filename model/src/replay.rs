//! Routing replay: a run whose MoE layers take their routing decisions (expert ids, and
//! optionally their combine weights) from a recorded run instead of their routers, in chosen
//! layers and over a range of positions. Replaying a run's own routing reproduces it;
//! replaying another prompt's routing in some layers separates what routing decides from what
//! the experts compute.
//!
//! The router still runs (its logits and margin are recorded as it computed them); only the
//! selection, and the weights when replayed, are replaced. Without recorded weights they are
//! recomputed from this run's router scores for the replayed experts
//! ([`routelab_kernels::routing::weights_for`]).

use std::collections::BTreeMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::hooks::{HookPoint, Quantity};
use crate::store::CaptureStore;

/// One layer's recorded routing, positions `start..start + n`.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerReplay {
    pub top_k: usize,
    pub start: usize,
    /// `[n, k]` row-major.
    pub experts: Vec<u32>,
    /// `[n, k]`, when the recorded weights are replayed too.
    pub weights: Option<Vec<f32>>,
}

impl LayerReplay {
    /// The replayed experts (and weights) at absolute position `pos`, if it is replayed.
    pub fn at(&self, pos: usize) -> Option<(&[u32], Option<&[f32]>)> {
        let k = self.top_k;
        let row = pos.checked_sub(self.start)?;
        let ex = self.experts.get(row * k..(row + 1) * k)?;
        Some((ex, self.weights.as_ref().and_then(|w| w.get(row * k..(row + 1) * k))))
    }
}

/// What a run replays, and from where.
#[derive(Clone, Debug, PartialEq)]
pub struct RoutingReplay {
    /// Where the routing came from (a trace's path), for the record.
    pub source: String,
    pub layers: BTreeMap<usize, LayerReplay>,
}

/// How a replay is recorded in a trace's metadata (the routing itself is in the source).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplaySummary {
    pub source: String,
    pub layers: Vec<usize>,
    pub positions: (usize, usize),
    pub weights: bool,
}

impl RoutingReplay {
    /// The routing `store` recorded in `layers` (None: every layer with routing) over
    /// `positions` (clipped to what it recorded), with its weights when `weights`.
    pub fn from_store(
        store: &CaptureStore,
        source: &str,
        layers: Option<&[usize]>,
        positions: Range<usize>,
        weights: bool,
    ) -> std::result::Result<Self, String> {
        let recorded: Vec<usize> =
            (0..store.num_layers()).filter(|&l| store.contains(&HookPoint::layer(l, Quantity::RouterExperts))).collect();
        if recorded.is_empty() {
            return Err(format!("{source} recorded no routing (capture router when recording)"));
        }
        let wanted: Vec<usize> = match layers {
            Some(ls) => {
                if let Some(l) = ls.iter().find(|l| !recorded.contains(l)) {
                    return Err(format!("{source} has no routing for layer {l} (it has layers {recorded:?})"));
                }
                ls.to_vec()
            }
            None => recorded,
        };
        let end = positions.end.min(store.len());
        if positions.start >= end {
            return Err(format!("{source} recorded {} positions: none in {}..{}", store.len(), positions.start, positions.end));
        }
        let mut out = BTreeMap::new();
        for l in wanted {
            let Some(router) = store.router(l) else { return Err(format!("{source} has no routing for layer {l}")) };
            let k = router.top_k;
            let experts = router.experts.get(positions.start * k..end * k).unwrap_or_default().to_vec();
            let w = if weights {
                if router.weights.len() != router.experts.len() {
                    return Err(format!("{source} recorded no combine weights for layer {l}"));
                }
                Some(router.weights.get(positions.start * k..end * k).unwrap_or_default().to_vec())
            } else {
                None
            };
            out.insert(l, LayerReplay { top_k: k, start: positions.start, experts, weights: w });
        }
        Ok(RoutingReplay { source: source.to_string(), layers: out })
    }

    /// The replay fits `config`: replayed layers are MoE layers with the same top-k, and the
    /// ids name their experts.
    pub fn check(&self, config: &ModelConfig) -> Result<()> {
        for (&l, r) in &self.layers {
            let Some(m) = config.moe(l) else {
                return Err(ModelError::Invalid(format!("routing replay from {}: layer {l} of this model has no router", self.source)));
            };
            if m.routing.top_k != r.top_k {
                return Err(ModelError::Invalid(format!(
                    "routing replay from {}: layer {l} selects {} experts here but {} there",
                    self.source, m.routing.top_k, r.top_k
                )));
            }
            if let Some(e) = r.experts.iter().find(|&&e| e as usize >= m.routing.num_experts) {
                return Err(ModelError::Invalid(format!(
                    "routing replay from {}: expert {e} in layer {l}, which has {} experts",
                    self.source, m.routing.num_experts
                )));
            }
        }
        Ok(())
    }

    pub fn summary(&self) -> ReplaySummary {
        let first = self.layers.values().next();
        let (start, n) = first.map_or((0, 0), |r| (r.start, r.experts.len() / r.top_k.max(1)));
        ReplaySummary {
            source: self.source.clone(),
            layers: self.layers.keys().copied().collect(),
            positions: (start, start + n),
            weights: first.is_some_and(|r| r.weights.is_some()),
        }
    }
}
