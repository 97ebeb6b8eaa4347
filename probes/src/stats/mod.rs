//! Statistics over captured routing and attention, each a pure function over plain slices so
//! it can be checked against a case worked out by hand.
//!
//! - [`routing`]: expert load, router entropy, top-k margin, co-activation, layer-to-layer
//!   transitions, consecutive-token agreement, contribution norms;
//! - [`specialization`]: vocabulary and domain specialization, Jensen–Shannon divergence,
//!   router saturation, mutual information between token class and expert;
//! - [`heads`]: per-head entropy, attention sink, previous-token and induction scores;
//! - [`proportions`]: the two-proportion z test and its normal p-value.

pub mod heads;
pub mod proportions;
pub mod routing;
pub mod specialization;

/// Shannon entropy (nats) of a distribution given as non-negative weights (normalised here).
pub fn entropy_nats(weights: &[f64]) -> f64 {
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    weights
        .iter()
        .filter(|&&w| w > 0.0)
        .map(|&w| {
            let p = w / total;
            -p * p.ln()
        })
        .sum()
}
