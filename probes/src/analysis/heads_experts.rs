//! Heads × experts: at the decoding steps where chosen heads copy the needle (the retrieval
//! scan's copy rule, [`copied_position`]), which experts does each MoE layer's router select,
//! against every other decoding step of the same trials?
//!
//! Per (MoE layer, expert): the steps that selected it among the copy steps and among the
//! others, each as a share of its steps (a share is "this expert among the top-k at a step", so
//! a layer's shares sum to k), the enrichment `share at copy / share elsewhere`, and the pooled
//! two-proportion z with its two-sided normal p-value ([`crate::stats::proportions`]).

use std::ops::Range;
use std::time::Instant;

use routelab_model::capture::CaptureSpec;
use routelab_model::hooks::{HookPoint, Quantity};
use routelab_model::interventions::Interventions;
use routelab_model::session::Session;
use routelab_model::store::CaptureStore;
use serde::{Deserialize, Serialize};

use super::needle::Trial;
use super::retrieval::{copied_position, run_steps, trial_result, HeadScores, Progress, ScanMode, ScanResult};
use crate::error::{ProbeError, Result};
use crate::stats::proportions::{log_odds_ratio, normal_two_sided_p, two_proportion_z};

/// One MoE layer's selections at a trial's decoding steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerSelections {
    pub layer: usize,
    /// Experts per step.
    pub k: usize,
    /// Each step's `router.experts` row, `[steps × k]`.
    pub ids: Vec<u32>,
}

/// What the analysis keeps of one trial: its tokens, where the answer lies, and the captured rows
/// of its decoding steps only (rows indexed by step, not by position).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialCapture {
    /// Prompt then answer, generated or teacher-forced.
    pub tokens: Vec<u32>,
    pub answer_spans: Vec<Range<usize>>,
    /// Decoding steps: (query position, token produced from it).
    pub steps: Vec<(usize, u32)>,
    pub heads: usize,
    /// Per layer, each step's `attn.argmax` row, `[steps × heads]`.
    pub argmax: Vec<Vec<u32>>,
    /// Per MoE layer.
    pub experts: Vec<LayerSelections>,
}

impl TrialCapture {
    /// The decoding steps' rows of a run that recorded `attn.argmax` in every layer and
    /// `router.experts` in the MoE layers.
    pub fn from_store(store: &CaptureStore, answer_spans: &[Range<usize>], steps: &[(usize, u32)]) -> Result<TrialCapture> {
        let rows = |hook: &HookPoint| -> Result<(usize, Vec<u32>)> {
            let width = store.width(hook).ok_or_else(|| ProbeError::Invalid(format!("the run did not record {hook}")))?;
            let mut out = Vec::with_capacity(steps.len() * width);
            for &(q, _) in steps {
                let row = store.row_u32(hook, q).ok_or_else(|| ProbeError::Invalid(format!("{hook} has no row {q}")))?;
                out.extend_from_slice(row);
            }
            Ok((width, out))
        };
        let mut heads = 0;
        let mut argmax = vec![];
        for l in 0..store.num_layers() {
            let (h, rows) = rows(&HookPoint::layer(l, Quantity::AttnArgmax))?;
            heads = h;
            argmax.push(rows);
        }
        let mut experts = vec![];
        for l in 0..store.num_layers() {
            let hook = HookPoint::layer(l, Quantity::RouterExperts);
            if store.contains(&hook) {
                let (k, ids) = rows(&hook)?;
                experts.push(LayerSelections { layer: l, k, ids });
            }
        }
        Ok(TrialCapture {
            tokens: store.tokens().to_vec(),
            answer_spans: answer_spans.to_vec(),
            steps: steps.to_vec(),
            heads,
            argmax,
            experts,
        })
    }

    fn in_answer(&self, pos: usize) -> bool {
        self.answer_spans.iter().any(|s| s.contains(&pos))
    }
}

/// One expert of one MoE layer at copy steps against the other steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExpertEnrichment {
    pub expert: usize,
    /// Copy steps at which the router selected this expert.
    pub at_copy: usize,
    /// Other decoding steps at which it did.
    pub elsewhere: usize,
    /// `at_copy / copy steps`; NaN without copy steps (JSON: null).
    pub share_copy: f64,
    /// `elsewhere / other steps`.
    pub share_elsewhere: f64,
    /// `share_copy / share_elsewhere`: above 1, selected more at copy steps; inf when only there.
    pub enrichment: f64,
    /// Pooled two-proportion z of `share_copy` against `share_elsewhere`.
    pub z: f64,
    /// Two-sided p-value of `z` (normal approximation).
    pub p_value: f64,
    /// Natural log of the odds ratio, copy steps against the others, 0.5 added per cell.
    pub log_odds: f64,
    /// Its standard error.
    pub log_odds_se: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerEnrichment {
    pub layer: usize,
    pub experts: Vec<ExpertEnrichment>,
}

/// The analysis's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadsExperts {
    /// The heads whose copies define the copy steps, as (layer, head).
    pub heads: Vec<(usize, usize)>,
    pub trials: usize,
    /// Decoding steps over all trials.
    pub positions: usize,
    /// Steps at which at least one of the heads copied.
    pub copy_positions: usize,
    /// (step, head) pairs that copied: a step where two heads copy counts twice.
    pub copy_events: usize,
    pub num_experts: usize,
    /// Per MoE layer, every expert.
    pub layers: Vec<LayerEnrichment>,
}

impl HeadsExperts {
    pub fn other_positions(&self) -> usize {
        self.positions - self.copy_positions
    }
}

/// Counts, over `trials`, the experts selected at the steps where any of `heads` copies against
/// the other steps. Errors name a head or expert the captures do not have.
pub fn heads_experts(trials: &[TrialCapture], heads: &[(usize, usize)], num_experts: usize) -> Result<HeadsExperts> {
    let mut positions = 0;
    let mut copy_positions = 0;
    let mut copy_events = 0;
    // Per MoE layer: (layer, selections at copy steps, selections elsewhere), per expert.
    let mut counts: Vec<(usize, Vec<usize>, Vec<usize>)> = vec![];
    for (i, t) in trials.iter().enumerate() {
        for &(l, h) in heads {
            if l >= t.argmax.len() || h >= t.heads {
                return Err(ProbeError::Invalid(format!(
                    "head {l}:{h} is not in trial {i}'s capture ({} layers × {} heads)",
                    t.argmax.len(),
                    t.heads
                )));
            }
        }
        for (s, &(_, w)) in t.steps.iter().enumerate() {
            let copying = heads
                .iter()
                .filter(|&&(l, h)| {
                    t.argmax[l].get(s * t.heads + h).is_some_and(|&j| copied_position(&t.tokens, &|p| t.in_answer(p), w, j).is_some())
                })
                .count();
            positions += 1;
            copy_events += copying;
            copy_positions += usize::from(copying > 0);
            for sel in &t.experts {
                let c = match counts.iter().position(|c| c.0 == sel.layer) {
                    Some(c) => c,
                    None => {
                        counts.push((sel.layer, vec![0; num_experts], vec![0; num_experts]));
                        counts.len() - 1
                    }
                };
                let row = sel
                    .ids
                    .get(s * sel.k..(s + 1) * sel.k)
                    .ok_or_else(|| ProbeError::Invalid(format!("trial {i}: layer {}'s selections have no row for step {s}", sel.layer)))?;
                let tally = if copying > 0 { &mut counts[c].1 } else { &mut counts[c].2 };
                let mut seen = vec![];
                for &e in row {
                    let e = e as usize;
                    if e >= num_experts {
                        return Err(ProbeError::Invalid(format!("trial {i}: layer {} selected expert {e} of {num_experts}", sel.layer)));
                    }
                    // A step counts an expert once, so a share is a proportion of steps.
                    if !seen.contains(&e) {
                        seen.push(e);
                        tally[e] += 1;
                    }
                }
            }
        }
    }
    counts.sort_by_key(|c| c.0);
    let other = positions - copy_positions;
    let share = |x: usize, n: usize| if n == 0 { f64::NAN } else { x as f64 / n as f64 };
    let layers = counts
        .into_iter()
        .map(|(layer, at_copy, elsewhere)| LayerEnrichment {
            layer,
            experts: (0..num_experts)
                .map(|e| {
                    let (a, b) = (at_copy[e], elsewhere[e]);
                    let (sc, se) = (share(a, copy_positions), share(b, other));
                    let z = two_proportion_z(a, copy_positions, b, other);
                    let (log_odds, log_odds_se) = log_odds_ratio(a, copy_positions, b, other);
                    ExpertEnrichment {
                        expert: e,
                        at_copy: a,
                        elsewhere: b,
                        share_copy: sc,
                        share_elsewhere: se,
                        enrichment: sc / se,
                        z,
                        p_value: normal_two_sided_p(z),
                        log_odds,
                        log_odds_se,
                    }
                })
                .collect(),
        })
        .collect();
    Ok(HeadsExperts { heads: heads.to_vec(), trials: trials.len(), positions, copy_positions, copy_events, num_experts, layers })
}

/// Which heads define the copy steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadChoice {
    /// These (layer, head).
    Heads(Vec<(usize, usize)>),
    /// The heads above the threshold in a retrieval scan's scores.
    Scores(HeadScores),
    /// The heads above the threshold in a scan of these same trials.
    Scan,
}

/// What [`run_heads_experts`] returns: the counts, and the scan of the same trials (its copy hits
/// and answers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadsExpertsRun {
    pub report: HeadsExperts,
    pub scan: ScanResult,
}

/// Runs every trial once, recording `attn.argmax` and `router.experts`, then counts. Heads above
/// `threshold` are taken from the scores or, for [`HeadChoice::Scan`], from the scan these same
/// runs make. `progress` returning false stops after the current trial: the counts then cover
/// the trials run, and the scan is marked incomplete.
pub fn run_heads_experts(
    session: &Session,
    trials: &[Trial],
    mode: ScanMode,
    heads: &HeadChoice,
    threshold: f64,
    progress: &mut dyn FnMut(Progress) -> bool,
) -> Result<HeadsExpertsRun> {
    let c = session.config();
    let (layers, num_heads) = (c.num_layers, c.attention.num_heads);
    if !c.is_moe() {
        return Err(ProbeError::Invalid(format!("{} has no MoE layer: there are no experts to count", session.name)));
    }
    if let HeadChoice::Scores(s) = heads {
        if s.layers != layers || s.heads != num_heads {
            return Err(ProbeError::Invalid(format!(
                "the head scores cover {} layers × {} heads; the model has {layers} × {num_heads}",
                s.layers, s.heads
            )));
        }
    }
    let capture = CaptureSpec::items(&["layers.*.attn.argmax", "layers.*.router.experts"]);
    let started = Instant::now();
    let mut kept = vec![];
    let mut results = vec![];
    let mut incomplete = false;
    for (done, trial) in trials.iter().enumerate() {
        let elapsed = started.elapsed().as_secs_f64();
        let eta = (done > 0).then(|| elapsed / done as f64 * (trials.len() - done) as f64);
        if !progress(Progress { done, total: trials.len(), elapsed_seconds: elapsed, eta_seconds: eta }) {
            incomplete = true;
            break;
        }
        let run = run_steps(session, trial, mode, capture.clone(), &Interventions::default())?;
        results.push(trial_result(session, trial, mode, &run)?);
        kept.push(TrialCapture::from_store(&run.record.store, &trial.answer_spans, &run.steps)?);
    }
    if !incomplete {
        let elapsed_seconds = started.elapsed().as_secs_f64();
        progress(Progress { done: trials.len(), total: trials.len(), elapsed_seconds, eta_seconds: Some(0.0) });
    }
    let scan = ScanResult { layers, heads: num_heads, mode, trials: results, incomplete };
    let chosen: Vec<(usize, usize)> = match heads {
        HeadChoice::Heads(h) => h.clone(),
        HeadChoice::Scores(s) => s.ranked(threshold).into_iter().map(|(l, h, _)| (l, h)).collect(),
        HeadChoice::Scan => scan.ranked_heads(threshold).into_iter().map(|(l, h, _)| (l, h)).collect(),
    };
    if let Some(&(l, h)) = chosen.iter().find(|&&(l, h)| l >= layers || h >= num_heads) {
        return Err(ProbeError::Invalid(format!("head {l}:{h} is not in the model ({layers} layers × {num_heads} heads)")));
    }
    let report = heads_experts(&kept, &chosen, c.max_experts())?;
    Ok(HeadsExpertsRun { report, scan })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two trials, 2 layers × 2 heads, one MoE layer (layer 1) of 4 experts, top-2.
    fn trials() -> Vec<TrialCapture> {
        // Trial A: tokens 0..8 with the answer 50, 51 at positions 2..4; three steps from
        // queries 7, 8, 9 producing 50, 51, 7 (positions 8, 9, 10).
        let mut a_tokens: Vec<u32> = (0..8).collect();
        a_tokens[2] = 50;
        a_tokens[3] = 51;
        a_tokens.extend([50, 51, 7]);
        let a = TrialCapture {
            tokens: a_tokens,
            answer_spans: vec![Range { start: 2, end: 4 }],
            steps: vec![(7, 50), (8, 51), (9, 7)],
            heads: 2,
            // Layer 0 head 1 looks at 2 (holds 50) at step 0: a copy. Layer 1 head 0 looks at 3
            // (holds 51) at step 1: a copy; layer 0 head 1 also looks at 3 there: a second copy at
            // the same step. At step 2 head 0:1 looks at 7, which holds 7 but is outside the answer:
            // no copy. Head 0:0 looks at 2 at step 1 (holds 50, produced 51): no copy.
            argmax: vec![vec![0, 2, 2, 3, 0, 7], vec![1, 1, 3, 0, 5, 5]],
            experts: vec![LayerSelections { layer: 1, k: 2, ids: vec![0, 1, 0, 2, 3, 1] }],
        };
        // Trial B: one step from query 5 producing 60; the answer 60 lies at position 1; no head
        // looks there (4 and 0): no copy.
        let b = TrialCapture {
            tokens: vec![9, 60, 9, 9, 9, 9, 60],
            answer_spans: vec![Range { start: 1, end: 2 }],
            steps: vec![(5, 60)],
            heads: 2,
            argmax: vec![vec![4, 0], vec![0, 4]],
            experts: vec![LayerSelections { layer: 1, k: 2, ids: vec![2, 3] }],
        };
        vec![a, b]
    }

    #[test]
    fn experts_at_copy_steps_are_counted_against_the_other_steps() {
        let heads = [(0, 0), (0, 1), (1, 0)];
        let r = heads_experts(&trials(), &heads, 4).unwrap();
        // Copy steps: A's steps 0 and 1 (copies: 0:1 at step 0; 0:1 and 1:0 at step 1, so 3 events).
        // Other steps: A's step 2, B's step 0.
        assert_eq!((r.trials, r.positions, r.copy_positions, r.other_positions(), r.copy_events), (2, 4, 2, 2, 3));
        assert_eq!(r.layers.len(), 1);
        let l = &r.layers[0];
        assert_eq!(l.layer, 1);
        // Copy steps selected {0,1} and {0,2}: expert 0 twice, 1 once, 2 once, 3 never.
        // Other steps selected {3,1} and {2,3}: expert 1 once, 2 once, 3 twice, 0 never.
        let got: Vec<(usize, usize)> = l.experts.iter().map(|e| (e.at_copy, e.elsewhere)).collect();
        assert_eq!(got, vec![(2, 0), (1, 1), (1, 1), (0, 2)]);
        // Expert 1: shares 1/2 and 1/2, enrichment 1, z 0, p 1.
        let e1 = &l.experts[1];
        assert_eq!((e1.share_copy, e1.share_elsewhere, e1.enrichment, e1.z), (0.5, 0.5, 1.0, 0.0));
        assert!((e1.p_value - 1.0).abs() < 1e-6);
        // Expert 0: shares 1 and 0, enrichment inf; pooled p = 2/4, se = sqrt(1/4 · (1/2 + 1/2)) =
        // 1/2, z = (1 − 0) / (1/2) = 2; p = P(|Z| ≥ 2) = 0.0455003.
        let e0 = &l.experts[0];
        assert_eq!((e0.share_copy, e0.share_elsewhere), (1.0, 0.0));
        assert!(e0.enrichment.is_infinite() && e0.enrichment > 0.0);
        assert!((e0.z - 2.0).abs() < 1e-12, "{}", e0.z);
        assert!((e0.p_value - 0.045_500_3).abs() < 1e-6, "{}", e0.p_value);
        // Its 2 × 2 table, 0.5 added per cell: 2.5, 0.5 | 0.5, 2.5; ln(2.5 · 2.5 / 0.25) = ln 25,
        // se = sqrt(2/2.5 + 2/0.5) = sqrt(4.8).
        assert!((e0.log_odds - 25f64.ln()).abs() < 1e-12 && (e0.log_odds_se - 4.8f64.sqrt()).abs() < 1e-12);
        // Expert 3 mirrors it: enrichment 0, z −2.
        let e3 = &l.experts[3];
        assert_eq!(e3.enrichment, 0.0);
        assert!((e3.z + 2.0).abs() < 1e-12);
    }

    #[test]
    fn only_the_chosen_heads_define_copy_steps() {
        // Head 1:0 alone copies at A's step 1 only: one copy step, one event.
        let r = heads_experts(&trials(), &[(1, 0)], 4).unwrap();
        assert_eq!((r.positions, r.copy_positions, r.copy_events), (4, 1, 1));
        // That step selected {0, 2}; the other three {0,1}, {3,1}, {2,3}.
        let got: Vec<(usize, usize)> = r.layers[0].experts.iter().map(|e| (e.at_copy, e.elsewhere)).collect();
        assert_eq!(got, vec![(1, 1), (0, 2), (1, 1), (0, 2)]);
        // Head 1:1 never copies: every share at copy steps is undefined.
        let none = heads_experts(&trials(), &[(1, 1)], 4).unwrap();
        assert_eq!(none.copy_positions, 0);
        assert!(none.layers[0].experts.iter().all(|e| e.share_copy.is_nan() && e.z.is_nan()));
    }

    #[test]
    fn heads_and_experts_outside_the_capture_are_named() {
        let e = heads_experts(&trials(), &[(2, 0)], 4).unwrap_err().to_string();
        assert!(e.contains("head 2:0"), "{e}");
        let e = heads_experts(&trials(), &[(0, 1)], 3).unwrap_err().to_string();
        assert!(e.contains("expert 3 of 3"), "{e}");
    }
}
