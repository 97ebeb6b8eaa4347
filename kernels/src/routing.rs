//! MoE routing: from a token's raw router logits to the experts it is sent to and the weights
//! their outputs are combined with.
//!
//! Every family RouteLab supports is one point in this parameter space:
//!
//! | family | scoring | selection | normalisation | scaling |
//! |---|---|---|---|---|
//! | Mixtral, Qwen3-MoE, Arctic | softmax | top-k | sum | 1 |
//! | Qwen2-MoE, OLMoE | softmax | top-k | none (`norm_topk_prob` false) | 1 |
//! | DBRX | softmax | top-k | p-norm (`moe_normalize_expert_weights`) | 1 |
//! | DeepSeek-V2 | softmax | top-k, or group-limited (group score = max) | none | `routed_scaling_factor` |
//! | DeepSeek-V3 | sigmoid + correction bias for choice | group-limited (group score = sum of top 2) | sum | `routed_scaling_factor` |
//! | PhiMoE | sparsemixer (two masked softmaxes) | top-2 | none | 1 |
//!
//! The arithmetic follows Hugging Face transformers' implementations operation by operation
//! (f32 softmax as `exp(x - max) / sum`, weights gathered from the *uncorrected* scores for
//! DeepSeek-V3, `+ 1e-20` in its normaliser) so captured weights match theirs to float noise.
//!
//! Experts can be *excluded* (the `reroute` intervention): they are removed from the candidate
//! set as if the router had fewer experts. Softmax scoring then normalises over the remaining
//! experts; sigmoid scoring leaves the other scores unchanged.

use serde::{Deserialize, Serialize};

/// How raw router logits become per-expert scores.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scoring {
    Softmax,
    /// Independent sigmoid per expert (DeepSeek-V3); an optional per-expert correction bias is
    /// added for *choosing* experts but not to the combine weights.
    Sigmoid,
}

/// How a group's strength is measured in group-limited routing.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupScore {
    /// DeepSeek-V2 `group_limited_greedy`: the best expert score in the group.
    Max,
    /// DeepSeek-V3 `noaux_tc`: the sum of the two best choice scores in the group.
    TopTwoSum,
}

/// Which experts are selected from the scores.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Selection {
    /// The k best scores.
    TopK,
    /// Experts are split into `groups` equal groups; only the `top_groups` strongest groups are
    /// eligible; then the k best eligible scores.
    GroupLimited { groups: usize, top_groups: usize, group_score: GroupScore },
    /// PhiMoE's sparsemixer (inference path): two rounds; each takes the best remaining logit
    /// and weights it by a softmax over the logits within a relative distance of
    /// `2 * jitter_eps` of it.
    SparseMixer { jitter_eps: f32 },
}

/// How the k selected weights are normalised.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "p")]
pub enum Normalization {
    None,
    /// Divide by their sum.
    Sum,
    /// Divide by their p-norm (DBRX `moe_normalize_expert_weights`).
    PNorm(f32),
}

/// A router's full specification.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoutingParams {
    pub num_experts: usize,
    pub top_k: usize,
    pub scoring: Scoring,
    pub selection: Selection,
    pub normalization: Normalization,
    /// Multiplies the final weights (DeepSeek `routed_scaling_factor`; 1 elsewhere).
    pub routed_scaling: f32,
}

impl RoutingParams {
    /// Plain softmax → top-k routing, optionally renormalised (Mixtral, OLMoE, Qwen-MoE).
    pub fn softmax_top_k(num_experts: usize, top_k: usize, normalize: bool) -> Self {
        Self {
            num_experts,
            top_k,
            scoring: Scoring::Softmax,
            selection: Selection::TopK,
            normalization: if normalize { Normalization::Sum } else { Normalization::None },
            routed_scaling: 1.0,
        }
    }

    /// One routing of each kind the supported families use, at real sizes: Mixtral (8, top-2,
    /// renormalised), OLMoE (64, top-8), DBRX (16, top-4, p-norm 1), DeepSeek-V3 (256, sigmoid,
    /// 8 groups keep 4 by top-2 sums, ×2.5), DeepSeek-V2 (160, 8 groups keep 3 by max, ×16),
    /// PhiMoE (16, sparsemixer). What kernel checks run through (the emulator's tests,
    /// `routelab selftest`); the sigmoid scheme is the one with a correction bias.
    pub fn family_schemes() -> Vec<RoutingParams> {
        vec![
            RoutingParams::softmax_top_k(8, 2, true),
            RoutingParams::softmax_top_k(64, 8, false),
            RoutingParams { normalization: Normalization::PNorm(1.0), ..RoutingParams::softmax_top_k(16, 4, false) },
            RoutingParams {
                num_experts: 256,
                top_k: 8,
                scoring: Scoring::Sigmoid,
                selection: Selection::GroupLimited { groups: 8, top_groups: 4, group_score: GroupScore::TopTwoSum },
                normalization: Normalization::Sum,
                routed_scaling: 2.5,
            },
            RoutingParams {
                num_experts: 160,
                top_k: 6,
                scoring: Scoring::Softmax,
                selection: Selection::GroupLimited { groups: 8, top_groups: 3, group_score: GroupScore::Max },
                normalization: Normalization::None,
                routed_scaling: 16.0,
            },
            RoutingParams {
                num_experts: 16,
                top_k: 2,
                scoring: Scoring::Softmax,
                selection: Selection::SparseMixer { jitter_eps: 0.01 },
                normalization: Normalization::None,
                routed_scaling: 1.0,
            },
        ]
    }

    /// Checks the parameters are self-consistent; `excluded` experts are taken out of the
    /// candidate set, so at least `top_k` must remain (in the eligible groups, for group-limited
    /// routing this is checked per token at run time by falling back to fewer candidates).
    pub fn validate(&self, num_excluded: usize) -> Result<(), String> {
        if self.num_experts == 0 || self.top_k == 0 || self.top_k > self.num_experts {
            return Err(format!("top-k {} of {} experts is not a valid routing", self.top_k, self.num_experts));
        }
        if let Selection::GroupLimited { groups, top_groups, .. } = self.selection {
            if groups == 0 || !self.num_experts.is_multiple_of(groups) || top_groups == 0 || top_groups > groups {
                return Err(format!(
                    "group-limited routing needs experts ({}) divisible into groups ({}) and 1 ≤ top groups ({}) ≤ groups",
                    self.num_experts, groups, top_groups
                ));
            }
        }
        if let Selection::SparseMixer { .. } = self.selection {
            if self.top_k != 2 {
                return Err(format!("sparsemixer routing selects exactly 2 experts, not {}", self.top_k));
            }
        }
        if self.num_experts - num_excluded.min(self.num_experts) < self.top_k {
            return Err(format!(
                "excluding {num_excluded} of {} experts leaves fewer than top-k = {} to route to",
                self.num_experts, self.top_k
            ));
        }
        Ok(())
    }
}

/// The routing of a batch of tokens, row-major `[tokens, k]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Routes {
    pub top_k: usize,
    /// Selected experts per token, strongest first.
    pub experts: Vec<u32>,
    /// Combine weight of each selected expert, as applied to its output.
    pub weights: Vec<f32>,
    /// Per token, the gap between the k-th and the (k+1)-th selection score, and for
    /// group-limited routers also between the weakest kept and the strongest dropped group
    /// (the smaller of the two): how far the routing is from a tie (∞ when nothing was left out).
    pub margin: Vec<f32>,
}

impl Routes {
    pub fn num_tokens(&self) -> usize {
        self.experts.len().checked_div(self.top_k).unwrap_or(0)
    }

    pub fn token(&self, t: usize) -> (&[u32], &[f32]) {
        let k = self.top_k;
        (&self.experts[t * k..(t + 1) * k], &self.weights[t * k..(t + 1) * k])
    }
}

/// Routes `logits` (row-major `[tokens, num_experts]`).
///
/// `correction_bias` (length `num_experts`) is added to sigmoid scores for choosing (DeepSeek-V3
/// `e_score_correction_bias`). `excluded[e]` removes expert `e` from the candidates.
/// [`RoutingParams::validate`] must have accepted the parameters.
pub fn route(logits: &[f32], params: &RoutingParams, correction_bias: Option<&[f32]>, excluded: &[bool]) -> Routes {
    let e = params.num_experts;
    let k = params.top_k;
    let tokens = logits.len().checked_div(e).unwrap_or(0);
    let mut routes = Routes {
        top_k: k,
        experts: Vec::with_capacity(tokens * k),
        weights: Vec::with_capacity(tokens * k),
        margin: Vec::with_capacity(tokens),
    };
    let is_excluded = |i: usize| excluded.get(i).copied().unwrap_or(false);
    let mut scores = vec![0f32; e];
    let mut choice = vec![0f32; e];
    for row in logits.chunks_exact(e) {
        if let Selection::SparseMixer { jitter_eps } = params.selection {
            sparsemixer(row, jitter_eps, &is_excluded, &mut routes);
            continue;
        }
        score(row, params.scoring, &is_excluded, &mut scores);
        // Choice scores: what selection ranks (bias-corrected for sigmoid routers).
        for i in 0..e {
            let bias = match (params.scoring, correction_bias) {
                (Scoring::Sigmoid, Some(b)) => b[i],
                _ => 0.0,
            };
            choice[i] = if is_excluded(i) { f32::NEG_INFINITY } else { scores[i] + bias };
        }
        // A group-limited router decides twice (groups, then experts): its margin is the
        // smaller of the two gaps, since either flipping changes the selection.
        let group_margin = match params.selection {
            Selection::GroupLimited { groups, top_groups, group_score } => mask_weak_groups(&mut choice, groups, top_groups, group_score),
            _ => f32::INFINITY,
        };
        let order = ranked(&choice);
        let selected = &order[..k];
        let expert_margin = match order.get(k) {
            Some(&next) if choice[next] > f32::NEG_INFINITY => choice[selected[k - 1]] - choice[next],
            _ => f32::INFINITY,
        };
        routes.margin.push(expert_margin.min(group_margin));
        routes.weights.extend(combine_weights(&scores, selected, params));
        routes.experts.extend(selected.iter().map(|&i| i as u32));
    }
    routes
}

/// The combine weights of the `selected` experts from a token's scores: gathered, normalised
/// and scaled as the family does.
fn combine_weights(scores: &[f32], selected: &[usize], params: &RoutingParams) -> Vec<f32> {
    let mut w: Vec<f32> = selected.iter().map(|&i| scores[i]).collect();
    match params.normalization {
        Normalization::None => {}
        Normalization::Sum => {
            // DeepSeek-V3 adds 1e-20 to the denominator; for the others it is below f32
            // resolution of any non-degenerate sum, so one formula serves all.
            let denom: f32 = w.iter().sum::<f32>() + 1e-20;
            w.iter_mut().for_each(|x| *x /= denom);
        }
        Normalization::PNorm(p) => {
            let norm = w.iter().map(|x| x.abs().powf(p)).sum::<f32>().powf(1.0 / p);
            w.iter_mut().for_each(|x| *x /= norm);
        }
    }
    if params.routed_scaling != 1.0 {
        w.iter_mut().for_each(|x| *x *= params.routed_scaling);
    }
    w
}

/// The combine weights this token's router scores give to experts chosen elsewhere (routing
/// replay without recorded weights): the same scores, normalisation and scaling as [`route`],
/// for `selected` instead of the router's own choice. `None` for PhiMoE's sparsemixer, whose
/// weights depend on its own selection order (replay them instead).
pub fn weights_for(logits_row: &[f32], selected: &[u32], params: &RoutingParams, excluded: &[bool]) -> Option<Vec<f32>> {
    if matches!(params.selection, Selection::SparseMixer { .. }) {
        return None;
    }
    let is_excluded = |i: usize| excluded.get(i).copied().unwrap_or(false);
    let mut scores = vec![0f32; logits_row.len()];
    score(logits_row, params.scoring, &is_excluded, &mut scores);
    let selected: Vec<usize> = selected.iter().map(|&i| i as usize).filter(|&i| i < scores.len()).collect();
    Some(combine_weights(&scores, &selected, params))
}

/// A token's scores: what the combine weights are gathered from (softmax over the candidates,
/// or each logit's sigmoid).
fn score(row: &[f32], scoring: Scoring, excluded: &impl Fn(usize) -> bool, out: &mut [f32]) {
    match scoring {
        Scoring::Softmax => softmax_excluding(row, excluded, out),
        Scoring::Sigmoid => {
            for (s, &x) in out.iter_mut().zip(row) {
                *s = 1.0 / (1.0 + (-x).exp());
            }
        }
    }
}

/// Softmax over the non-excluded entries (excluded ones get probability 0), computed as
/// `exp(x - max) / sum` like torch.
fn softmax_excluding(row: &[f32], excluded: &impl Fn(usize) -> bool, out: &mut [f32]) {
    let max = row.iter().enumerate().filter(|(i, _)| !excluded(*i)).map(|(_, &x)| x).fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for (i, (o, &x)) in out.iter_mut().zip(row).enumerate() {
        *o = if excluded(i) { 0.0 } else { (x - max).exp() };
        sum += *o;
    }
    out.iter_mut().for_each(|o| *o /= sum);
}

/// Indices sorted by descending value; ties keep the lower index first. NaN sorts last.
fn ranked(values: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (values[a], values[b]);
        y.partial_cmp(&x).unwrap_or_else(|| x.is_nan().cmp(&y.is_nan())).then(a.cmp(&b))
    });
    order
}

/// Group-limited routing: keep only the experts of the `top_groups` strongest groups.
/// Returns the group selection's margin: the gap between the weakest kept group's strength and
/// the strongest dropped one's (infinite when every group is kept).
fn mask_weak_groups(choice: &mut [f32], groups: usize, top_groups: usize, how: GroupScore) -> f32 {
    let per_group = choice.len() / groups;
    let strength: Vec<f32> = choice
        .chunks_exact(per_group)
        .map(|g| {
            let order = ranked(g);
            match how {
                GroupScore::Max => g[order[0]],
                GroupScore::TopTwoSum => order.iter().take(2).map(|&i| g[i]).sum(),
            }
        })
        .collect();
    let keep = ranked(&strength);
    for (gi, group) in choice.chunks_exact_mut(per_group).enumerate() {
        if !keep[..top_groups].contains(&gi) {
            group.iter_mut().for_each(|c| *c = f32::NEG_INFINITY);
        }
    }
    match keep.get(top_groups) {
        Some(&next) => strength[keep[top_groups - 1]] - strength[next],
        None => f32::INFINITY,
    }
}

/// PhiMoE's sparsemixer at inference (`transformers.models.phimoe.sparsemixer`, training=False).
///
/// Round one picks the arg-max logit `m`; logits `s` with `(m - s) / max(|s|, m) > 2·eps` are
/// masked; the weight is the softmax of the unmasked logits at the pick. Round two repeats with
/// the first pick removed (its threshold factor still computed from the original logits).
fn sparsemixer(row: &[f32], eps: f32, excluded: &impl Fn(usize) -> bool, routes: &mut Routes) {
    let mut removed: Vec<bool> = (0..row.len()).map(excluded).collect();
    let mut picks = [0usize; 2];
    let mut best = [0f32; 2];
    for round in 0..2 {
        let order = ranked(&row.iter().enumerate().map(|(i, &x)| if removed[i] { f32::NEG_INFINITY } else { x }).collect::<Vec<_>>());
        let pick = order[0];
        let top = row[pick];
        // Softmax over the logits close enough to the pick.
        let kept: Vec<bool> = row
            .iter()
            .enumerate()
            // Written as !(ratio > 2ε) like torch's mask, so a 0/0 ratio keeps the logit.
            .map(|(i, &s)| !removed[i] && !((top - s) / s.abs().max(top) > 2.0 * eps))
            .collect();
        let max = row.iter().zip(&kept).filter(|(_, &k)| k).map(|(&x, _)| x).fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = row.iter().zip(&kept).filter(|(_, &k)| k).map(|(&x, _)| (x - max).exp()).sum();
        routes.weights.push((top - max).exp() / sum);
        routes.experts.push(pick as u32);
        picks[round] = pick;
        best[round] = top;
        removed[pick] = true;
    }
    // The routing flips if either pick ties with the next candidate.
    let third =
        row.iter().enumerate().filter(|(i, _)| !excluded(*i) && !picks.contains(i)).map(|(_, &x)| x).fold(f32::NEG_INFINITY, f32::max);
    routes.margin.push((best[0] - best[1]).min(best[1] - third));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approx(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn softmax_top2_renormalises_over_the_two_selected() {
        // logits ln(1), ln(2), ln(3), ln(4): softmax = 0.1, 0.2, 0.3, 0.4.
        // top-2 = experts 3 (0.4) and 2 (0.3); renormalised: 4/7, 3/7.
        let logits = [1f32.ln(), 2f32.ln(), 3f32.ln(), 4f32.ln()];
        let r = route(&logits, &RoutingParams::softmax_top_k(4, 2, true), None, &[]);
        assert_eq!(r.experts, vec![3, 2]);
        approx(&r.weights, &[4.0 / 7.0, 3.0 / 7.0]);
        approx(&r.margin, &[0.1]);
    }

    #[test]
    fn unnormalised_top_k_keeps_softmax_probabilities() {
        let logits = [1f32.ln(), 2f32.ln(), 3f32.ln(), 4f32.ln()];
        let r = route(&logits, &RoutingParams::softmax_top_k(4, 2, false), None, &[]);
        approx(&r.weights, &[0.4, 0.3]);
    }

    #[test]
    fn expert_reroute_renormalises_over_remaining_experts() {
        // Excluding expert 3 leaves probabilities 1/6, 2/6, 3/6 over experts 0..3.
        let logits = [1f32.ln(), 2f32.ln(), 3f32.ln(), 4f32.ln()];
        let p = RoutingParams::softmax_top_k(4, 2, false);
        let r = route(&logits, &p, None, &[false, false, false, true]);
        assert_eq!(r.experts, vec![2, 1]);
        approx(&r.weights, &[0.5, 2.0 / 6.0]);
    }

    #[test]
    fn p_norm_normalisation_divides_by_the_p_norm() {
        // softmax 0.1..0.4, top-2 = 0.4, 0.3; 2-norm = 0.5 → 0.8, 0.6.
        let logits = [1f32.ln(), 2f32.ln(), 3f32.ln(), 4f32.ln()];
        let mut p = RoutingParams::softmax_top_k(4, 2, false);
        p.normalization = Normalization::PNorm(2.0);
        let r = route(&logits, &p, None, &[]);
        approx(&r.weights, &[0.8, 0.6]);
    }

    #[test]
    fn several_tokens_are_routed_independently() {
        let logits = [0.0, 5.0, 0.0, 0.0, /* token 2 */ 9.0, 0.0, 0.0, 1.0];
        let r = route(&logits, &RoutingParams::softmax_top_k(4, 1, true), None, &[]);
        assert_eq!(r.experts, vec![1, 0]);
        approx(&r.weights, &[1.0, 1.0]);
        assert_eq!(r.num_tokens(), 2);
        assert_eq!(r.token(1).0, &[0]);
    }

    #[test]
    fn sigmoid_routing_chooses_with_bias_but_weights_without() {
        // logits 0 → sigmoid 0.5 everywhere; bias makes expert 2 then 0 the choices.
        // Weights are the uncorrected sigmoids 0.5, 0.5, normalised to 0.5 each, ×2.5.
        let p = RoutingParams {
            num_experts: 4,
            top_k: 2,
            scoring: Scoring::Sigmoid,
            selection: Selection::TopK,
            normalization: Normalization::Sum,
            routed_scaling: 2.5,
        };
        let r = route(&[0.0; 4], &p, Some(&[0.2, 0.0, 0.3, 0.1]), &[]);
        assert_eq!(r.experts, vec![2, 0]);
        approx(&r.weights, &[1.25, 1.25]);
        approx(&r.margin, &[0.1]);
    }

    /// Replaying a token's own selection without its weights recomputes exactly the weights
    /// the router gave it, for every scoring, selection and normalisation but sparsemixer.
    #[test]
    fn weights_for_the_routers_own_choice_are_its_weights() {
        let logits: Vec<f32> = (0..6 * 3).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.3).collect();
        let mut pnorm = RoutingParams::softmax_top_k(6, 2, false);
        pnorm.normalization = Normalization::PNorm(2.0);
        let grouped = RoutingParams {
            num_experts: 6,
            top_k: 2,
            scoring: Scoring::Sigmoid,
            selection: Selection::GroupLimited { groups: 2, top_groups: 1, group_score: GroupScore::TopTwoSum },
            normalization: Normalization::Sum,
            routed_scaling: 2.5,
        };
        let bias = [0.1, 0.0, -0.2, 0.3, 0.0, 0.05];
        for (p, b) in [
            (RoutingParams::softmax_top_k(6, 2, true), None),
            (RoutingParams::softmax_top_k(6, 3, false), None),
            (pnorm, None),
            (grouped, Some(&bias[..])),
        ] {
            for excluded in [vec![], vec![false, true, false, false, false, false]] {
                let r = route(&logits, &p, b, &excluded);
                for (t, row) in logits.chunks(6).enumerate() {
                    let (ex, w) = r.token(t);
                    assert_eq!(weights_for(row, ex, &p, &excluded).unwrap(), w, "{p:?} token {t}");
                }
            }
        }
        let mixer = RoutingParams { selection: Selection::SparseMixer { jitter_eps: 0.01 }, ..RoutingParams::softmax_top_k(6, 2, false) };
        assert!(weights_for(&logits[..6], &[0, 1], &mixer, &[]).is_none());
    }

    #[test]
    fn group_limited_top_two_sum_keeps_only_the_best_group() {
        // Two groups of 3. Sigmoid of these logits: group 0 = {0.9, 0.1, 0.1}-ish,
        // group 1 = {0.6, 0.6, 0.0}-ish. Top-2 sums: g0 ≈ 1.0, g1 ≈ 1.2 → only group 1 eligible,
        // so the single best expert overall (expert 0) is NOT selected.
        let logit = |p: f32| (p / (1.0 - p)).ln();
        let logits = [logit(0.9), logit(0.1), logit(0.1), logit(0.6), logit(0.6), logit(0.01)];
        let p = RoutingParams {
            num_experts: 6,
            top_k: 2,
            scoring: Scoring::Sigmoid,
            selection: Selection::GroupLimited { groups: 2, top_groups: 1, group_score: GroupScore::TopTwoSum },
            normalization: Normalization::Sum,
            routed_scaling: 1.0,
        };
        let r = route(&logits, &p, None, &[]);
        let mut chosen = r.experts.clone();
        chosen.sort();
        assert_eq!(chosen, vec![3, 4]);
        approx(&r.weights, &[0.5, 0.5]);
        // Experts: 0.6 vs 0.01 within the kept group (0.59); groups: 1.2 vs 1.0 (0.2). The
        // smaller gap is the margin.
        approx(&r.margin, &[0.2]);
    }

    #[test]
    fn group_limited_max_uses_the_best_expert_per_group() {
        // softmax scores ∝ 1, 1, 8, 1 | 4, 4, 4, 4 (groups of 4... here 2 groups of 4).
        // Max: g0 = 8, g1 = 4 → group 0; top-2 within it: expert 2 then 0 (tie with 1, 3: lower index).
        let logits = [0f32, 0.0, 8f32.ln(), 0.0, 4f32.ln(), 4f32.ln(), 4f32.ln(), 4f32.ln()];
        let p = RoutingParams {
            num_experts: 8,
            top_k: 2,
            scoring: Scoring::Softmax,
            selection: Selection::GroupLimited { groups: 2, top_groups: 1, group_score: GroupScore::Max },
            normalization: Normalization::None,
            routed_scaling: 1.0,
        };
        let r = route(&logits, &p, None, &[]);
        assert_eq!(r.experts, vec![2, 0]);
        let total = 1.0 + 1.0 + 8.0 + 1.0 + 16.0;
        approx(&r.weights, &[8.0 / total, 1.0 / total]);
    }

    #[test]
    fn sparsemixer_masks_far_logits_in_each_round() {
        // eps = 0.01 → threshold 0.02. logits [10, 9.9, 5, 9.85].
        // Round 1: pick 0 (10). (10-9.9)/10 = 0.01 ≤ 0.02 kept; (10-5)/10 masked; (10-9.85)/10 =
        // 0.015 kept → softmax over {10, 9.9, 9.85} at 10.
        // Round 2: pick 1 (9.9). kept: 9.9 and 9.85 ((9.9-9.85)/9.9 ≈ 0.005); 5 masked; expert 0
        // removed → softmax over {9.9, 9.85} at 9.9.
        let logits = [10.0f32, 9.9, 5.0, 9.85];
        let p = RoutingParams {
            num_experts: 4,
            top_k: 2,
            scoring: Scoring::Softmax,
            selection: Selection::SparseMixer { jitter_eps: 0.01 },
            normalization: Normalization::None,
            routed_scaling: 1.0,
        };
        let r = route(&logits, &p, None, &[]);
        assert_eq!(r.experts, vec![0, 1]);
        let w1 = 1.0 / (1.0 + (-0.1f32).exp() + (-0.15f32).exp());
        let w2 = 1.0 / (1.0 + (-0.05f32).exp());
        approx(&r.weights, &[w1, w2]);
        approx(&r.margin, &[0.05]);
    }

    #[test]
    fn sparsemixer_reroute_skips_the_excluded_expert() {
        let logits = [10.0f32, 9.9, 5.0, 9.85];
        let p = RoutingParams {
            num_experts: 4,
            top_k: 2,
            scoring: Scoring::Softmax,
            selection: Selection::SparseMixer { jitter_eps: 0.01 },
            normalization: Normalization::None,
            routed_scaling: 1.0,
        };
        let r = route(&logits, &p, None, &[true, false, false, false]);
        assert_eq!(r.experts, vec![1, 3]);
    }

    #[test]
    fn validation_rejects_impossible_routings() {
        let p = RoutingParams::softmax_top_k(4, 2, true);
        assert!(p.validate(2).is_ok());
        assert!(p.validate(3).is_err());
        assert!(RoutingParams::softmax_top_k(4, 5, true).validate(0).is_err());
        let mut g = p.clone();
        g.selection = Selection::GroupLimited { groups: 3, top_groups: 1, group_score: GroupScore::Max };
        assert!(g.validate(0).is_err());
    }
}
