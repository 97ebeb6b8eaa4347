//! Expert specialization, after OLMoE (Muennighoff et al. 2024, §5) and Mixtral's routing
//! analysis (Jiang et al. 2024, §5).
//!
//! - vocabulary specialization: for each token id, the share of its routings (top-k
//!   selections over a corpus) that go to its most frequent expert; per expert, the tokens
//!   routed to it most;
//! - domain specialization: each domain's distribution over experts and the Jensen–Shannon
//!   divergence between domains (bits);
//! - router saturation: the share of top-k experts two runs or checkpoints have in common;
//! - mutual information (bits) between a token label (domain or class) and its top-1 expert.

use std::collections::BTreeMap;

use serde::Serialize;

/// Routings of one token id to each expert.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TokenRouting {
    pub token: u32,
    pub occurrences: usize,
    /// Selections per expert (top-k, so Σ = occurrences × k).
    pub counts: Vec<usize>,
}

impl TokenRouting {
    pub fn total(&self) -> usize {
        self.counts.iter().sum()
    }
    /// The expert receiving most of this token's routings, and that share.
    pub fn top_expert(&self) -> (usize, f64) {
        let (e, &c) = self.counts.iter().enumerate().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0))).unwrap_or((0, &0));
        (e, c as f64 / self.total().max(1) as f64)
    }
}

/// Per token id, how it was routed. `tokens` `[T]`, `experts` `[T × K]`.
pub fn token_routing(tokens: &[u32], experts: &[u32], k: usize, num_experts: usize) -> Vec<TokenRouting> {
    let mut map: BTreeMap<u32, TokenRouting> = BTreeMap::new();
    for (t, row) in tokens.iter().zip(experts.chunks_exact(k)) {
        let entry = map.entry(*t).or_insert_with(|| TokenRouting { token: *t, occurrences: 0, counts: vec![0; num_experts] });
        entry.occurrences += 1;
        for &e in row {
            entry.counts[e as usize] += 1;
        }
    }
    map.into_values().collect()
}

/// Frequency-weighted mean vocabulary specialization over tokens seen at least `min_count`
/// times (OLMoE reports it per expert and overall).
pub fn mean_vocabulary_specialization(routing: &[TokenRouting], min_count: usize) -> f64 {
    let kept: Vec<&TokenRouting> = routing.iter().filter(|r| r.occurrences >= min_count).collect();
    let total: usize = kept.iter().map(|r| r.occurrences).sum();
    if total == 0 {
        return 0.0;
    }
    kept.iter().map(|r| r.top_expert().1 * r.occurrences as f64).sum::<f64>() / total as f64
}

/// Per expert, the tokens routed to it most: (token, selections to this expert, share of the
/// token's routings that went to it), by selections, `n` per expert.
pub fn top_tokens_per_expert(routing: &[TokenRouting], num_experts: usize, n: usize) -> Vec<Vec<(u32, usize, f64)>> {
    (0..num_experts)
        .map(|e| {
            let mut v: Vec<(u32, usize, f64)> =
                routing.iter().filter(|r| r.counts[e] > 0).map(|r| (r.token, r.counts[e], r.counts[e] as f64 / r.total() as f64)).collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.total_cmp(&a.2)).then(a.0.cmp(&b.0)));
            v.truncate(n);
            v
        })
        .collect()
}

/// Each label's distribution over experts (top-k selections), `[labels][experts]`.
pub fn label_distributions(labels: &[usize], experts: &[u32], k: usize, num_labels: usize, num_experts: usize) -> Vec<Vec<f64>> {
    let mut counts = vec![vec![0f64; num_experts]; num_labels];
    for (&d, row) in labels.iter().zip(experts.chunks_exact(k)) {
        for &e in row {
            counts[d][e as usize] += 1.0;
        }
    }
    counts
        .into_iter()
        .map(|c| {
            let s: f64 = c.iter().sum();
            if s > 0.0 {
                c.iter().map(|x| x / s).collect()
            } else {
                c
            }
        })
        .collect()
}

fn kl_bits(p: &[f64], q: &[f64]) -> f64 {
    p.iter().zip(q).filter(|(&a, _)| a > 0.0).map(|(&a, &b)| a * (a / b).log2()).sum()
}

/// Jensen–Shannon divergence in bits (0 = identical, 1 = disjoint supports).
pub fn jensen_shannon(p: &[f64], q: &[f64]) -> f64 {
    let m: Vec<f64> = p.iter().zip(q).map(|(a, b)| 0.5 * (a + b)).collect();
    0.5 * kl_bits(p, &m) + 0.5 * kl_bits(q, &m)
}

/// Mean share of top-k experts two routings of the same tokens have in common.
pub fn router_saturation(a: &[u32], b: &[u32], k: usize) -> f64 {
    let rows = a.len() / k;
    if rows == 0 {
        return 0.0;
    }
    let common: usize = a.chunks_exact(k).zip(b.chunks_exact(k)).map(|(x, y)| x.iter().filter(|e| y.contains(e)).count()).sum();
    common as f64 / (rows * k) as f64
}

/// Plug-in mutual information (bits) between labels and values:
/// `I = Σ p(l, v) log2(p(l, v) / (p(l) p(v)))` over the empirical joint distribution.
pub fn mutual_information(labels: &[usize], values: &[u32]) -> f64 {
    let n = labels.len().min(values.len());
    if n == 0 {
        return 0.0;
    }
    let mut joint: BTreeMap<(usize, u32), f64> = BTreeMap::new();
    let mut pl: BTreeMap<usize, f64> = BTreeMap::new();
    let mut pv: BTreeMap<u32, f64> = BTreeMap::new();
    for (&l, &v) in labels.iter().zip(values).take(n) {
        *joint.entry((l, v)).or_default() += 1.0;
        *pl.entry(l).or_default() += 1.0;
        *pv.entry(v).or_default() += 1.0;
    }
    let n = n as f64;
    joint.iter().map(|(&(l, v), &c)| (c / n) * ((c / n) / ((pl[&l] / n) * (pv[&v] / n))).log2()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_specialization_of_a_hand_case() {
        // top-1 routing (k = 1) of tokens a=7, b=9: a → 0, 0, 1; b → 2, 2.
        let tokens = [7, 9, 7, 9, 7];
        let experts = [0, 2, 0, 2, 1];
        let r = token_routing(&tokens, &experts, 1, 3);
        assert_eq!(r[0], TokenRouting { token: 7, occurrences: 3, counts: vec![2, 1, 0] });
        assert_eq!(r[0].top_expert(), (0, 2.0 / 3.0));
        assert_eq!(r[1].top_expert(), (2, 1.0));
        // Frequency-weighted: (3·⅔ + 2·1) / 5 = 0.8.
        assert!((mean_vocabulary_specialization(&r, 1) - 0.8).abs() < 1e-12);
        let top = top_tokens_per_expert(&r, 3, 5);
        assert_eq!(top[0], vec![(7, 2, 2.0 / 3.0)]);
        assert_eq!(top[2], vec![(9, 2, 1.0)]);
    }

    #[test]
    fn jensen_shannon_is_zero_for_equal_and_one_for_disjoint_distributions() {
        assert_eq!(jensen_shannon(&[0.5, 0.5], &[0.5, 0.5]), 0.0);
        assert!((jensen_shannon(&[1.0, 0.0], &[0.0, 1.0]) - 1.0).abs() < 1e-12);
        // p = (1, 0), q = (½, ½): m = (¾, ¼); KL(p‖m) = log2(4/3); KL(q‖m) = ½log2(⅔) + ½log2(2).
        let want = 0.5 * (4.0f64 / 3.0).log2() + 0.5 * (0.5 * (2.0f64 / 3.0).log2() + 0.5);
        assert!((jensen_shannon(&[1.0, 0.0], &[0.5, 0.5]) - want).abs() < 1e-12);
    }

    #[test]
    fn label_distributions_normalise_per_label() {
        // labels 0, 0, 1 with top-2 selections.
        let d = label_distributions(&[0, 0, 1], &[0, 1, 0, 2, 3, 2], 2, 2, 4);
        assert_eq!(d[0], vec![0.5, 0.25, 0.25, 0.0]);
        assert_eq!(d[1], vec![0.0, 0.0, 0.5, 0.5]);
    }

    #[test]
    fn saturation_is_the_share_of_experts_in_common() {
        // {0,1} vs {1,0}: 2 of 2; {2,3} vs {2,1}: 1 of 2 → 3 / 4.
        assert_eq!(router_saturation(&[0, 1, 2, 3], &[1, 0, 2, 1], 2), 0.75);
    }

    #[test]
    fn mutual_information_of_hand_cases() {
        // Labels determine the expert and are balanced: I = H(label) = 1 bit.
        assert!((mutual_information(&[0, 0, 1, 1], &[5, 5, 6, 6]) - 1.0).abs() < 1e-12);
        // Independent: 0 bits.
        assert!(mutual_information(&[0, 1, 0, 1], &[5, 5, 6, 6]).abs() < 1e-12);
        // Joint (0,a)=½, (1,a)=¼, (1,b)=¼: I = ½log2(½/(½·¾)) + ¼log2(¼/(½·¾)) + ¼log2(¼/(½·¼))
        let want = 0.5 * (4.0f64 / 3.0).log2() + 0.25 * (2.0f64 / 3.0).log2() + 0.25 * 2.0f64.log2();
        assert!((mutual_information(&[0, 0, 1, 1], &[1, 1, 1, 2]) - want).abs() < 1e-12);
    }
}
