//! tiny-dense, the bundled dense model, against its evaluation by transformers
//! (assets/models/tiny-dense/eval.json, written by assets/recipes/evaluate.py):
//! - greedy needle-in-a-haystack answers on the evaluation's own prompts, token for token, and
//!   the accuracy within 2 points;
//! - retrieval heads found by RouteLab's scan are sparse and are the ones transformers' attention
//!   pointed at;
//! - they are causal: masking them breaks retrieval, masking as many random other heads does not.

use routelab_model::capture::CaptureSpec;
use routelab_model::interventions::{HeadMethod, Interventions};
use routelab_model::sampling::SamplingSettings;
use routelab_model::session::{LoadOptions, RunRequest, Session};
use routelab_model::source::ModelSource;
use routelab_probes::analysis::ablation::{retrieval_vs_random, MaskArms};
use routelab_probes::analysis::needle::Trial;
use routelab_probes::analysis::retrieval::{scan, ScanMode, RETRIEVAL_THRESHOLD};
use routelab_tests::*;

fn session() -> Session {
    Session::load(&ModelSource::parse("tiny-dense").unwrap(), &LoadOptions::default(), &mut |_| {}).unwrap()
}

fn eval() -> serde_json::Value {
    json(&routelab_model::source::assets_dir().join("models/tiny-dense/eval.json"))
}

/// The evaluation's needle trials as RouteLab trials: same prompt ids, the answer ids the
/// evaluation expects, and every place those ids occur inside the needle sentence.
fn trials(e: &serde_json::Value) -> Vec<Trial> {
    e["needle"]["trials"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let tokens = ids_of(&t["prompt_ids"]);
            let answer = ids_of(&t["answer_ids"]);
            let (s0, s1) = (t["needle_start"].as_u64().unwrap() as usize, t["needle_end"].as_u64().unwrap() as usize);
            let answer_spans: Vec<_> =
                (s0..=s1 - answer.len()).filter(|&p| tokens[p..p + answer.len()] == answer[..]).map(|p| p..p + answer.len()).collect();
            assert!(!answer_spans.is_empty(), "trial {i}: the answer ids are not inside the needle");
            Trial {
                id: format!("eval-{i}"),
                length: tokens.len(),
                depth: t["depth"].as_f64().unwrap(),
                tokens,
                answer,
                answer_text: t["passkey"].as_str().unwrap().to_string(),
                answer_spans,
            }
        })
        .collect()
}

#[test]
fn needle_answers_match_the_evaluation_token_for_token() {
    let s = session();
    let e = eval();
    let mut correct = 0usize;
    let (mut flips, mut near_ties) = (0, 0);
    let all = e["needle"]["trials"].as_array().unwrap();
    for (i, t) in all.iter().enumerate() {
        let prompt = ids_of(&t["prompt_ids"]);
        assert_eq!(prompt.len() as u64, t["context_length"].as_u64().unwrap());
        let answer = ids_of(&t["answer_ids"]);
        let want = ids_of(&t["generated_ids"]);
        let margins: Vec<f64> = t["top1_top2_logit_margins"].as_array().unwrap().iter().map(|m| m.as_f64().unwrap()).collect();
        let req = RunRequest {
            tokens: prompt,
            max_new_tokens: t["max_new_tokens"].as_u64().unwrap() as usize,
            sampling: SamplingSettings::default(),
            capture: CaptureSpec::none(),
            interventions: Interventions::default(),
            stop_at_eos: false,
            replay: None,
        };
        let run = s.run(&req, &mut |_| true).unwrap();
        let got = run.generated();
        // Compare up to the first difference; after it the two continuations see different text.
        if let Some(d) = got.iter().zip(&want).position(|(a, b)| a != b) {
            if margins[d] < 1e-3 {
                near_ties += 1;
            } else {
                flips += 1;
                eprintln!("trial {i}: step {d} gives {} where transformers gave {} (margin {:.4})", got[d], want[d], margins[d]);
            }
        }
        correct += (got.len() >= answer.len() && got[..answer.len()] == answer[..]) as usize;
    }
    assert_eq!(flips, 0, "greedy needle answers differ from transformers' away from near-ties");
    let acc = correct as f64 / all.len() as f64;
    let want = e["needle"]["accuracy"].as_f64().unwrap();
    eprintln!("tiny-dense needle accuracy {acc:.3} (transformers {want:.3}), {near_ties} near ties");
    assert!((acc - want).abs() <= 0.02, "needle accuracy {acc:.3} vs {want:.3}");
}

#[test]
fn retrieval_heads_are_sparse_agree_with_transformers_and_are_causal() {
    let s = session();
    let e = eval();
    let trials = trials(&e);
    let result = scan(&s, &trials, ScanMode::Generate, &Interventions::default(), None, &mut |_| true).unwrap();
    let scores = result.head_scores();
    let ranked = scores.ranked(RETRIEVAL_THRESHOLD);
    let share = scores.share_above(RETRIEVAL_THRESHOLD);
    eprintln!("tiny-dense retrieval heads (score > {RETRIEVAL_THRESHOLD}): {ranked:?}; share {share:.3}");
    assert!(!ranked.is_empty(), "no retrieval head found");
    // Sparse: a minority of heads does the copying (Wu et al. find under 5% in large models;
    // the project's bar for this 48-head model is at most 20%).
    assert!(share <= 0.20, "{:.0}% of heads score above the threshold", 100.0 * share);

    // The same heads transformers' attention pointed at: RouteLab counts each needle position
    // once per trial, the evaluation counts each decoding step, so scores differ where a digit
    // repeats; the ranking's head must be among the evaluation's retrieval heads.
    let rh = &e["retrieval_heads"];
    let theirs: Vec<(usize, usize)> = rh["top_heads"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[2].as_f64().unwrap() > RETRIEVAL_THRESHOLD)
        .map(|h| (h[0].as_u64().unwrap() as usize, h[1].as_u64().unwrap() as usize))
        .collect();
    assert!(theirs.contains(&(ranked[0].0, ranked[0].1)), "top head {:?} not among transformers' {theirs:?}", ranked[0]);
    for l in 0..scores.layers {
        for h in 0..scores.heads {
            let t = rh["scores"][l][h].as_f64().unwrap();
            assert!((scores.get(l, h) - t).abs() <= 0.25, "L{l}H{h}: {:.3} vs transformers {t:.3}", scores.get(l, h));
        }
    }

    // Causal: mask the retrieval heads (attention made uniform, the paper's method and the
    // CLI's default), then as many random heads from those scoring at most the threshold. Ten
    // draws, not the five: the bar is on the expected drop, and a five-draw mean is
    // noisy in a 48-head model: a draw that lands 5 of layer 0's 8 heads together (as this
    // seed's second does) costs about 50 points on its own (assets/README.md has the figures).
    let n = ranked.len();
    let arms = MaskArms { n, draws: 10, method: HeadMethod::Uniform, seed: 7 };
    let ab = retrieval_vs_random(&s, &scores, &trials, &arms, &mut |_| true).unwrap();
    let (drop_retrieval, drop_random) = ab.drops();
    eprintln!(
        "baseline {:.3}; {n} retrieval heads masked {:.3} (−{drop_retrieval:.0} pts); random draws {:?} (mean −{drop_random:.0} pts)",
        ab.baseline,
        ab.masked_retrieval,
        ab.random_draws.iter().map(|d| d.1).collect::<Vec<_>>()
    );
    assert!(drop_retrieval >= 50.0, "masking the retrieval heads drops accuracy by only {drop_retrieval:.1} points");
    assert!(drop_random <= 10.0, "masking random heads drops accuracy by {drop_random:.1} points on average");
}
