//! Routing statistics of one MoE layer over a run or a corpus.
//!
//! Inputs are row-major: `experts` `[T × K]` (selected experts, strongest first), `weights`
//! `[T × K]`, `logits` `[T × E]` (raw router outputs).

use serde::Serialize;

use super::entropy_nats;

/// Expert load: how many selections each expert received and the combine-weight mass.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Load {
    pub counts: Vec<usize>,
    pub weight_mass: Vec<f64>,
}

impl Load {
    pub fn total(&self) -> usize {
        self.counts.iter().sum()
    }

    /// Share of selections per expert.
    pub fn shares(&self) -> Vec<f64> {
        let t = self.total().max(1) as f64;
        self.counts.iter().map(|&c| c as f64 / t).collect()
    }

    /// Entropy of the load distribution divided by ln E: 1 when even, 0 when one expert
    /// takes everything.
    pub fn balance(&self) -> f64 {
        let n = self.counts.len();
        if n < 2 {
            return 0.0;
        }
        entropy_nats(&self.counts.iter().map(|&c| c as f64).collect::<Vec<_>>()) / (n as f64).ln()
    }

    /// max share × E: 1 when even; E when one expert takes all (the "load imbalance" of
    /// Switch-style analyses).
    pub fn max_over_mean(&self) -> f64 {
        let s = self.shares();
        s.iter().cloned().fold(0.0, f64::max) * s.len() as f64
    }
}

pub fn load(experts: &[u32], weights: &[f32], num_experts: usize) -> Load {
    let mut counts = vec![0usize; num_experts];
    let mut weight_mass = vec![0f64; num_experts];
    for (&e, &w) in experts.iter().zip(weights) {
        if (e as usize) < num_experts {
            counts[e as usize] += 1;
            weight_mass[e as usize] += w as f64;
        }
    }
    Load { counts, weight_mass }
}

/// Per token, the entropy (nats) of the softmax of its router logits: how undecided the
/// router is (ln E = uniform).
pub fn router_entropy(logits: &[f32], num_experts: usize) -> Vec<f64> {
    logits
        .chunks_exact(num_experts)
        .map(|row| {
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let w: Vec<f64> = row.iter().map(|&x| (x as f64 - max).exp()).collect();
            entropy_nats(&w)
        })
        .collect()
}

/// Per token, the gap between the k-th and (k+1)-th largest raw router logit: how close the
/// routing is to flipping (scoring-independent, as softmax and sigmoid are monotone).
pub fn top_k_margin(logits: &[f32], num_experts: usize, k: usize) -> Vec<f64> {
    logits
        .chunks_exact(num_experts)
        .map(|row| {
            let mut v: Vec<f32> = row.to_vec();
            v.sort_by(|a, b| b.total_cmp(a));
            if k < v.len() {
                (v[k - 1] - v[k]) as f64
            } else {
                f64::INFINITY
            }
        })
        .collect()
}

/// Co-activation: `m[i][j]` = number of tokens that selected both i and j (i ≠ j); the
/// diagonal holds each expert's selection count.
pub fn coactivation(experts: &[u32], k: usize, num_experts: usize) -> Vec<Vec<usize>> {
    let mut m = vec![vec![0usize; num_experts]; num_experts];
    for row in experts.chunks_exact(k) {
        for (a, &i) in row.iter().enumerate() {
            m[i as usize][i as usize] += 1;
            for &j in &row[a + 1..] {
                if i != j {
                    m[i as usize][j as usize] += 1;
                    m[j as usize][i as usize] += 1;
                }
            }
        }
    }
    m
}

/// Layer-to-layer transitions of the top-1 expert: `m[i][j]` = tokens whose top-1 expert is i
/// in the first layer and j in the second.
pub fn transitions(top1_from: &[u32], top1_to: &[u32], experts_from: usize, experts_to: usize) -> Vec<Vec<usize>> {
    let mut m = vec![vec![0usize; experts_to]; experts_from];
    for (&a, &b) in top1_from.iter().zip(top1_to) {
        m[a as usize][b as usize] += 1;
    }
    m
}

/// Whether two top-k selections of one token differ as sets (their order is the router's and
/// does not count).
pub fn selection_changed(a: &[u32], b: &[u32]) -> bool {
    let (mut x, mut y) = (a.to_vec(), b.to_vec());
    x.sort_unstable();
    y.sort_unstable();
    x != y
}

/// The first column of `[T × K]` selections.
pub fn top1(experts: &[u32], k: usize) -> Vec<u32> {
    experts.chunks_exact(k).map(|r| r[0]).collect()
}

/// Consecutive-token agreement (OLMoE): the share of positions t ≥ 1 whose top-1 expert equals
/// position t−1's, and the mean share of top-k experts in common with t−1.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Agreement {
    pub top1: f64,
    pub top_k: f64,
}

pub fn consecutive_agreement(experts: &[u32], k: usize) -> Agreement {
    let rows: Vec<&[u32]> = experts.chunks_exact(k).collect();
    if rows.len() < 2 {
        return Agreement { top1: 0.0, top_k: 0.0 };
    }
    let pairs = (rows.len() - 1) as f64;
    let same1 = rows.windows(2).filter(|w| w[0][0] == w[1][0]).count() as f64;
    let overlap: f64 = rows.windows(2).map(|w| w[1].iter().filter(|e| w[0].contains(e)).count() as f64 / k as f64).sum();
    Agreement { top1: same1 / pairs, top_k: overlap / pairs }
}

/// Mean of a per-token series (NaN-free; empty → 0).
pub fn mean(v: &[f64]) -> f64 {
    let finite: Vec<f64> = v.iter().cloned().filter(|x| x.is_finite()).collect();
    if finite.is_empty() {
        0.0
    } else {
        finite.iter().sum::<f64>() / finite.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The hand case: 3 tokens, 4 experts, top-2.
    //   token 0: experts 0, 1 (weights .6, .4)
    //   token 1: experts 1, 2 (.7, .3)
    //   token 2: experts 1, 0 (.5, .5)
    const E: [u32; 6] = [0, 1, 1, 2, 1, 0];
    const W: [f32; 6] = [0.6, 0.4, 0.7, 0.3, 0.5, 0.5];

    #[test]
    fn load_counts_selections_and_weight_mass() {
        let l = load(&E, &W, 4);
        assert_eq!(l.counts, vec![2, 3, 1, 0]);
        let m: Vec<f64> = l.weight_mass.iter().map(|x| (x * 1e6).round() / 1e6).collect();
        assert_eq!(m, vec![1.1, 1.6, 0.3, 0.0]);
        assert_eq!(l.shares(), vec![2.0 / 6.0, 0.5, 1.0 / 6.0, 0.0]);
        // max share .5 × 4 experts.
        assert!((l.max_over_mean() - 2.0).abs() < 1e-12);
    }

    #[test]
    fn coactivation_counts_pairs_selected_together() {
        let m = coactivation(&E, 2, 4);
        // pairs: {0,1} twice (tokens 0 and 2), {1,2} once.
        assert_eq!(m[0][1], 2);
        assert_eq!(m[1][0], 2);
        assert_eq!(m[1][2], 1);
        assert_eq!(m[0][2], 0);
        assert_eq!((m[0][0], m[1][1], m[2][2], m[3][3]), (2, 3, 1, 0));
    }

    #[test]
    fn consecutive_agreement_compares_neighbours() {
        // top-1: 0, 1, 1 → pairs (0,1) differ, (1,1) agree → 1/2.
        // top-k overlap: {0,1}∩{1,2} = 1 of 2; {1,2}∩{1,0} = 1 of 2 → mean 0.5.
        let a = consecutive_agreement(&E, 2);
        assert_eq!(a, Agreement { top1: 0.5, top_k: 0.5 });
    }

    #[test]
    fn transitions_count_top1_pairs_across_layers() {
        let m = transitions(&top1(&E, 2), &[2, 2, 3], 4, 4);
        assert_eq!(m[0][2], 1);
        assert_eq!(m[1][2], 1);
        assert_eq!(m[1][3], 1);
        assert_eq!(m.iter().flatten().sum::<usize>(), 3);
    }

    #[test]
    fn router_entropy_is_ln_e_for_equal_logits_and_margin_is_the_logit_gap() {
        let logits = [1.0f32, 1.0, 1.0, 1.0, /* token 2 */ 5.0, 3.0, 2.5, 0.0];
        let h = router_entropy(&logits, 4);
        assert!((h[0] - 4f64.ln()).abs() < 1e-12);
        assert!(h[1] < h[0]);
        let m = top_k_margin(&logits, 4, 2);
        assert_eq!(m, vec![0.0, 0.5]);
    }

    #[test]
    fn balance_of_counts() {
        let even = Load { counts: vec![3, 3, 3, 3], weight_mass: vec![0.0; 4] };
        assert!((even.balance() - 1.0).abs() < 1e-12);
        // 2, 1, 1, 0: H = −(½ ln ½ + 2·¼ ln ¼) = 1.03972… nats; / ln 4.
        let l = Load { counts: vec![2, 1, 1, 0], weight_mass: vec![0.0; 4] };
        assert!((l.balance() - 1.039_720_770_839_917_9 / 4f64.ln()).abs() < 1e-12);
    }
}
