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

/// Log-probabilities of a logit row (in f64, stable for any logit scale).
pub fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = logits.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln() + max;
    logits.iter().map(|&x| x as f64 - lse).collect()
}
