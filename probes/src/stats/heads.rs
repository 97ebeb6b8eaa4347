//! Per-head attention statistics from full attention probabilities `[H × T × T]` (row q holds
//! query q's distribution over keys 0..=q).
//!
//! - entropy: mean over queries of −Σ p ln p (nats);
//! - sink: mean attention from queries q ≥ 1 to position 0 (Xiao et al. 2023);
//! - previous token: mean attention from q ≥ 1 to q − 1;
//! - induction (Olsson et al. 2022): on a random sequence of n tokens repeated twice, mean
//!   attention from each position q of the second copy to q − n + 1, the position after the
//!   previous occurrence of q's token.

use serde::Serialize;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HeadScores {
    pub entropy: f64,
    pub sink: f64,
    pub previous_token: f64,
}

/// Sink score of every head from the captured per-query attention on key 0 (`[T × H]`,
/// `attn.{l}.sink`): the same mean over queries q ≥ 1 as [`head_scores`], without full
/// probabilities.
pub fn sink_scores(sink: &[f32], heads: usize, t: usize) -> Vec<f64> {
    (0..heads).map(|h| if t > 1 { (1..t).map(|q| sink[q * heads + h] as f64).sum::<f64>() / (t - 1) as f64 } else { 0.0 }).collect()
}

fn row(probs: &[f32], t: usize, h: usize, q: usize) -> &[f32] {
    &probs[h * t * t + q * t..h * t * t + (q + 1) * t]
}

/// Scores of every head of one layer.
pub fn head_scores(probs: &[f32], heads: usize, t: usize) -> Vec<HeadScores> {
    (0..heads)
        .map(|h| {
            let mut s = HeadScores::default();
            for q in 0..t {
                let r = row(probs, t, h, q);
                s.entropy += r[..=q].iter().filter(|&&p| p > 0.0).map(|&p| -(p as f64) * (p as f64).ln()).sum::<f64>();
                if q >= 1 {
                    s.sink += r[0] as f64;
                    s.previous_token += r[q - 1] as f64;
                }
            }
            s.entropy /= t as f64;
            if t > 1 {
                s.sink /= (t - 1) as f64;
                s.previous_token /= (t - 1) as f64;
            }
            s
        })
        .collect()
}

/// Induction score of every head, for a sequence whose positions `start..start + 2n` hold a
/// block of n tokens followed by the same block.
pub fn induction_scores(probs: &[f32], heads: usize, t: usize, start: usize, n: usize) -> Vec<f64> {
    (0..heads)
        .map(|h| {
            let qs = start + n + 1..(start + 2 * n).min(t);
            let count = qs.len().max(1) as f64;
            qs.map(|q| row(probs, t, h, q)[q - n + 1] as f64).sum::<f64>() / count
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[1, 3, 3]` probabilities of one head from rows.
    fn probs(rows: [[f32; 3]; 3]) -> Vec<f32> {
        rows.iter().flatten().cloned().collect()
    }

    #[test]
    fn sink_scores_from_captured_sink_match_full_probabilities() {
        // Two heads, three queries; the captured sink is column 0 of each row.
        let p = [[[1.0, 0.0, 0.0], [0.7, 0.3, 0.0], [0.2, 0.5, 0.3]], [[1.0, 0.0, 0.0], [0.1, 0.9, 0.0], [0.6, 0.2, 0.2]]];
        let flat: Vec<f32> = p.iter().flatten().flatten().copied().collect();
        let captured: Vec<f32> = (0..3).flat_map(|q| (0..2).map(move |h| p[h][q][0])).collect();
        let from_probs: Vec<f64> = head_scores(&flat, 2, 3).iter().map(|s| s.sink).collect();
        let from_sink = sink_scores(&captured, 2, 3);
        // Head 0: (0.7 + 0.2) / 2; head 1: (0.1 + 0.6) / 2.
        assert!((from_sink[0] - 0.45).abs() < 1e-7 && (from_sink[1] - 0.35).abs() < 1e-7, "{from_sink:?}");
        assert!(from_probs.iter().zip(&from_sink).all(|(a, b)| (a - b).abs() < 1e-7));
    }

    #[test]
    fn a_sink_head_and_a_previous_token_head() {
        let sink = probs([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.9, 0.1, 0.0]]);
        let s = &head_scores(&sink, 1, 3)[0];
        assert!((s.sink - 0.95).abs() < 1e-6);
        // q = 1's previous token is position 0 too: (1.0 + 0.1) / 2.
        assert!((s.previous_token - 0.55).abs() < 1e-6);
        // entropy: rows 0 and 1 are certain; row 2: −(.9 ln .9 + .1 ln .1) = 0.325083; / 3.
        assert!((s.entropy - 0.325_082_973_391_448 / 3.0).abs() < 1e-6);
        let prev = probs([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]);
        let p = &head_scores(&prev, 1, 3)[0];
        assert_eq!((p.sink, p.previous_token), (0.5, 1.0));
    }

    #[test]
    fn induction_head_attends_to_the_token_after_the_previous_occurrence() {
        // a b c a b c (n = 3): the second copy's queries 4, 5 should look at 2, 3 (q − n + 1).
        let t = 6;
        let mut induction = vec![0f32; t * t];
        let mut previous = vec![0f32; t * t];
        for q in 0..t {
            let target = if q > 3 { q - 2 } else { 0 };
            induction[q * t + target] = 1.0;
            previous[q * t + q.saturating_sub(1)] = 1.0;
        }
        assert_eq!(induction_scores(&induction, 1, t, 0, 3), vec![1.0]);
        assert_eq!(induction_scores(&previous, 1, t, 0, 3), vec![0.0]);
    }
}
