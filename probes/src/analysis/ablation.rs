//! Ablations: the same prompts under several intervention sets, compared with the unmodified
//! model.
//!
//! - token agreement: share of greedy-generated tokens equal to the baseline's at the same
//!   position;
//! - KL: mean KL(baseline ‖ ablated) of the next-token distributions, teacher-forced on the
//!   baseline's sequence, over its generated positions (nats);
//! - needle accuracy on needle trials.
//!
//! [`retrieval_vs_random`] is the retrieval-heads paper's causal test: mask the top-N
//! retrieval heads, or N random non-retrieval heads (several draws), and measure needle
//! accuracy.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use routelab_model::capture::CaptureSpec;
use routelab_model::interventions::{HeadMethod, Intervention, Interventions};
use routelab_model::sampling::SamplingSettings;
use routelab_model::session::{RunRecord, RunRequest, Session};
use serde::{Deserialize, Serialize};

use super::needle::Trial;
use super::retrieval::{run_trial, HeadScores, Progress, ScanMode, RETRIEVAL_THRESHOLD};
use crate::error::{ProbeError, Result};
use crate::stats::log_softmax;

/// A named intervention set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Arm {
    pub name: String,
    pub interventions: Interventions,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArmResult {
    pub name: String,
    pub token_agreement: f64,
    pub mean_kl: f64,
    /// Per prompt, KL at each generated position.
    pub kl_by_position: Vec<Vec<f64>>,
}

/// KL(p ‖ q) in nats between the softmaxes of two logit rows.
pub fn kl_from_logits(p: &[f32], q: &[f32]) -> f64 {
    let (lp, lq) = (log_softmax(p), log_softmax(q));
    lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum::<f64>().max(0.0)
}

fn greedy(session: &Session, tokens: &[u32], n: usize, iv: &Interventions, logits: bool) -> Result<RunRecord> {
    let req = RunRequest {
        tokens: tokens.to_vec(),
        max_new_tokens: n,
        sampling: SamplingSettings::default(),
        capture: if logits { CaptureSpec::items(&["logits"]) } else { CaptureSpec::none() },
        interventions: iv.clone(),
        stop_at_eos: false,
        replay: None,
    };
    Ok(session.run(&req, &mut |_| true)?)
}

/// Compares each arm with the unmodified model on `prompts`, generating `n` tokens.
pub fn compare_arms(session: &Session, prompts: &[Vec<u32>], arms: &[Arm], n: usize) -> Result<Vec<ArmResult>> {
    let mut baselines = vec![];
    for p in prompts {
        // Baseline: generated tokens, and the logits along prompt + generation.
        let gen = greedy(session, p, n, &Interventions::default(), false)?;
        let forced = greedy(session, gen.tokens(), 0, &Interventions::default(), true)?;
        baselines.push((gen, forced));
    }
    let mut out = vec![];
    for arm in arms {
        let mut agree = 0usize;
        let mut total = 0usize;
        let mut kls = vec![];
        for (p, (gen, forced)) in prompts.iter().zip(&baselines) {
            let ab = greedy(session, p, n, &arm.interventions, false)?;
            let (a, b) = (gen.generated(), ab.generated());
            agree += a.iter().zip(b).filter(|(x, y)| x == y).count();
            total += a.len();
            let ab_forced = greedy(session, gen.tokens(), 0, &arm.interventions, true)?;
            // Positions whose next token is a generated one: prompt_len − 1 .. len − 1.
            let at = |r: &RunRecord, q: usize| r.logits_at(q).unwrap_or(&[]).to_vec();
            let kl: Vec<f64> = (p.len() - 1..gen.tokens().len() - 1).map(|q| kl_from_logits(&at(forced, q), &at(&ab_forced, q))).collect();
            kls.push(kl);
        }
        let all: Vec<f64> = kls.iter().flatten().cloned().collect();
        out.push(ArmResult {
            name: arm.name.clone(),
            token_agreement: if total > 0 { agree as f64 / total as f64 } else { 1.0 },
            mean_kl: if all.is_empty() { 0.0 } else { all.iter().sum::<f64>() / all.len() as f64 },
            kl_by_position: kls,
        });
    }
    Ok(out)
}

/// Needle accuracy (0–1) of `trials` under `interventions`, by generation.
pub fn needle_accuracy(session: &Session, trials: &[Trial], interventions: &Interventions) -> Result<(f64, Vec<bool>)> {
    let mut correct = vec![];
    for t in trials {
        correct.push(run_trial(session, t, ScanMode::Generate, interventions)?.correct);
    }
    let acc = if correct.is_empty() { 0.0 } else { correct.iter().filter(|&&c| c).count() as f64 / correct.len() as f64 };
    Ok((acc, correct))
}

/// Masks for a list of (layer, head).
pub fn head_masks(heads: &[(usize, usize)], method: &HeadMethod) -> Interventions {
    Interventions::new(heads.iter().map(|&(layer, head)| Intervention::Head { layer, head, method: method.clone() }).collect())
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetrievalAblation {
    pub n: usize,
    pub method: HeadMethod,
    pub baseline: f64,
    pub retrieval_heads: Vec<(usize, usize)>,
    pub masked_retrieval: f64,
    /// One (heads, accuracy) per random draw.
    pub random_draws: Vec<(Vec<(usize, usize)>, f64)>,
}

impl RetrievalAblation {
    pub fn random_mean(&self) -> f64 {
        if self.random_draws.is_empty() {
            return 0.0;
        }
        self.random_draws.iter().map(|d| d.1).sum::<f64>() / self.random_draws.len() as f64
    }
    /// Accuracy drops in points (percentage points).
    pub fn drops(&self) -> (f64, f64) {
        (100.0 * (self.baseline - self.masked_retrieval), 100.0 * (self.baseline - self.random_mean()))
    }
}

/// The arms of [`retrieval_vs_random`]: how many heads, how many random draws, how they are
/// masked, and the seed of the draws.
#[derive(Clone, Debug, PartialEq)]
pub struct MaskArms {
    pub n: usize,
    pub draws: usize,
    pub method: HeadMethod,
    pub seed: u64,
}

/// The paper's experiment: needle accuracy with the top-`n` retrieval heads masked, and with
/// `n` random heads scoring at most the retrieval threshold masked (`draws` draws).
pub fn retrieval_vs_random(
    session: &Session,
    scores: &HeadScores,
    trials: &[Trial],
    arms: &MaskArms,
    progress: &mut dyn FnMut(Progress) -> bool,
) -> Result<RetrievalAblation> {
    let MaskArms { n, draws, ref method, seed } = *arms;
    let ranked = scores.ranked(0.0);
    let top: Vec<(usize, usize)> = ranked.iter().take(n).map(|&(l, h, _)| (l, h)).collect();
    if top.len() < n {
        return Err(ProbeError::Invalid(format!("only {} heads have a positive retrieval score; asked to mask {n}", top.len())));
    }
    let pool: Vec<(usize, usize)> = (0..scores.layers * scores.heads)
        .filter(|&i| scores.scores[i] <= RETRIEVAL_THRESHOLD)
        .map(|i| (i / scores.heads, i % scores.heads))
        .filter(|lh| !top.contains(lh))
        .collect();
    if pool.len() < n {
        return Err(ProbeError::Invalid(format!("only {} non-retrieval heads to draw {n} from", pool.len())));
    }
    let total = 2 + draws;
    let started = std::time::Instant::now();
    let mut step = 0;
    let mut tick = |step: usize| -> Result<()> {
        let el = started.elapsed().as_secs_f64();
        let eta = (step > 0).then(|| el / step as f64 * (total - step) as f64);
        if progress(Progress { done: step, total, elapsed_seconds: el, eta_seconds: eta }) {
            Ok(())
        } else {
            Err(routelab_model::ModelError::Cancelled.into())
        }
    };
    tick(step)?;
    let (baseline, _) = needle_accuracy(session, trials, &Interventions::default())?;
    step += 1;
    tick(step)?;
    let (masked_retrieval, _) = needle_accuracy(session, trials, &head_masks(&top, method))?;
    step += 1;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut random_draws = vec![];
    for _ in 0..draws {
        tick(step)?;
        let mut pick = pool.clone();
        pick.shuffle(&mut rng);
        pick.truncate(n);
        pick.sort();
        let (acc, _) = needle_accuracy(session, trials, &head_masks(&pick, method))?;
        random_draws.push((pick, acc));
        step += 1;
    }
    tick(step)?;
    Ok(RetrievalAblation { n, method: method.clone(), baseline, retrieval_heads: top, masked_retrieval, random_draws })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_of_hand_cases() {
        assert_eq!(kl_from_logits(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        // p = softmax(0, 0) = (½, ½), q = softmax(0, ln 3) = (¼, ¾):
        // KL = ½ ln(½/¼) + ½ ln(½/¾) = ½ ln 2 + ½ ln ⅔.
        let want = 0.5 * 2f64.ln() + 0.5 * (2.0f64 / 3.0).ln();
        assert!((kl_from_logits(&[0.0, 0.0], &[0.0, 3f32.ln()]) - want).abs() < 1e-6);
    }
}
