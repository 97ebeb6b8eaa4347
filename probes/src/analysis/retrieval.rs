//! The retrieval-head scan of Wu, Wang, Xiao, Peng and Fu (2024), "Retrieval Head
//! Mechanistically Explains Long-Context Factuality".
//!
//! For every needle trial and every decoding step that produces a token w, a head *copies*
//! when its most-attended position j (top-1 attention of the current query) lies inside the
//! needle's answer and the token at j equals w. A head's retrieval score on a trial is the
//! number of distinct answer positions it copied divided by the answer length; its score is
//! the mean over trials. Heads scoring above 0.1 are retrieval heads.
//!
//! Two protocols:
//! - [`ScanMode::Generate`] (the paper's): the model answers greedily; steps are its own
//!   decoding steps;
//! - [`ScanMode::TeacherForced`]: prompt and reference answer in one prefill; each answer
//!   token is paired with the query that predicts it. One forward per trial, and independent
//!   of whether the model gets the answer right.
//!
//! The scan reports progress with an ETA, can be cancelled, and resumes from a state file
//! that records each finished trial.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use routelab_model::capture::CaptureSpec;
use routelab_model::hooks::{HookPoint, Quantity};
use routelab_model::interventions::Interventions;
use routelab_model::sampling::SamplingSettings;
use routelab_model::session::{RunRecord, RunRequest, Session};
use routelab_model::store::CaptureStore;
use serde::{Deserialize, Serialize};

use super::needle::Trial;
use crate::error::{ProbeError, Result};

pub const RETRIEVAL_THRESHOLD: f64 = 0.1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanMode {
    Generate,
    TeacherForced,
}

/// One finished trial.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialResult {
    pub id: String,
    /// Distinct answer positions each head copied, `[layers × heads]`.
    pub hits: Vec<u32>,
    pub answer_len: usize,
    /// Whether the model's answer contained the needle (generation mode; teacher-forced
    /// trials record whether the greedy prediction of every answer token was right).
    pub correct: bool,
    pub generated: String,
}

/// Progress of a long analysis.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
    pub elapsed_seconds: f64,
    /// Estimated seconds left (from the pace of the trials run in this session).
    pub eta_seconds: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScanResult {
    pub layers: usize,
    pub heads: usize,
    pub mode: ScanMode,
    pub trials: Vec<TrialResult>,
    /// True when the scan was cancelled before every trial ran.
    pub incomplete: bool,
}

impl ScanResult {
    /// Mean retrieval score per head, `[layers × heads]`.
    pub fn scores(&self) -> Vec<f64> {
        let mut s = vec![0f64; self.layers * self.heads];
        if self.trials.is_empty() {
            return s;
        }
        for t in &self.trials {
            for (x, &h) in s.iter_mut().zip(&t.hits) {
                *x += h as f64 / t.answer_len.max(1) as f64;
            }
        }
        s.iter_mut().for_each(|x| *x /= self.trials.len() as f64);
        s
    }

    pub fn head_scores(&self) -> HeadScores {
        HeadScores { layers: self.layers, heads: self.heads, scores: self.scores() }
    }

    /// Heads above `threshold`, strongest first, as (layer, head, score).
    pub fn ranked_heads(&self, threshold: f64) -> Vec<(usize, usize, f64)> {
        self.head_scores().ranked(threshold)
    }

    pub fn accuracy(&self) -> f64 {
        if self.trials.is_empty() {
            return 0.0;
        }
        self.trials.iter().filter(|t| t.correct).count() as f64 / self.trials.len() as f64
    }

    /// Share of heads scoring above the threshold.
    pub fn retrieval_share(&self, threshold: f64) -> f64 {
        self.head_scores().share_above(threshold)
    }
}

/// Per-head retrieval scores, `[layers × heads]` row-major: what a scan leaves behind and
/// what ablations read (from a scan or its CSV).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadScores {
    pub layers: usize,
    pub heads: usize,
    pub scores: Vec<f64>,
}

impl HeadScores {
    pub fn get(&self, layer: usize, head: usize) -> f64 {
        self.scores[layer * self.heads + head]
    }

    /// Heads above `threshold`, strongest first, as (layer, head, score).
    pub fn ranked(&self, threshold: f64) -> Vec<(usize, usize, f64)> {
        let mut v: Vec<(usize, usize, f64)> =
            self.scores.iter().enumerate().filter(|(_, s)| **s > threshold).map(|(i, &s)| (i / self.heads, i % self.heads, s)).collect();
        v.sort_by(|a, b| b.2.total_cmp(&a.2).then((a.0, a.1).cmp(&(b.0, b.1))));
        v
    }

    /// Share of heads scoring above the threshold.
    pub fn share_above(&self, threshold: f64) -> f64 {
        self.ranked(threshold).len() as f64 / (self.layers * self.heads).max(1) as f64
    }

    pub fn to_table(&self) -> crate::export::csv::Table {
        let mut t = crate::export::csv::Table::new(&["layer", "head", "retrieval_score", "retrieval_head"]);
        for (i, &s) in self.scores.iter().enumerate() {
            t.push(vec![
                (i / self.heads).to_string(),
                (i % self.heads).to_string(),
                crate::export::csv::num(s),
                (s > RETRIEVAL_THRESHOLD).to_string(),
            ]);
        }
        t
    }

    /// Reads the table [`HeadScores::to_table`] writes.
    pub fn from_table(t: &crate::export::csv::Table, path: &Path) -> Result<HeadScores> {
        let col = |n: &str| t.column(n).ok_or_else(|| ProbeError::format(path, format!("no column {n:?}")));
        let (cl, ch, cs) = (col("layer")?, col("head")?, col("retrieval_score")?);
        let mut cells = vec![];
        for (i, r) in t.rows.iter().enumerate() {
            let bad = |what: &str| ProbeError::format(path, format!("row {}: {what} is not a number", i + 2));
            cells.push((
                r[cl].parse::<usize>().map_err(|_| bad("layer"))?,
                r[ch].parse::<usize>().map_err(|_| bad("head"))?,
                r[cs].parse::<f64>().map_err(|_| bad("retrieval_score"))?,
            ));
        }
        let layers = cells.iter().map(|c| c.0 + 1).max().unwrap_or(0);
        let heads = cells.iter().map(|c| c.1 + 1).max().unwrap_or(0);
        if cells.len() != layers * heads {
            return Err(ProbeError::format(path, format!("{} rows do not cover {layers} layers × {heads} heads", cells.len())));
        }
        let mut scores = vec![0.0; layers * heads];
        for (l, h, s) in cells {
            scores[l * heads + h] = s;
        }
        Ok(HeadScores { layers, heads, scores })
    }
}

/// The copy rule: at a decoding step that produces `produced`, a head whose most-attended
/// position is `argmax` copies when that position lies inside the answer and holds `produced`.
/// Returns the copied position. The scan and the heads × experts analysis both count with it.
pub fn copied_position(tokens: &[u32], in_answer: &dyn Fn(usize) -> bool, produced: u32, argmax: u32) -> Option<usize> {
    let j = argmax as usize;
    (in_answer(j) && tokens.get(j) == Some(&produced)).then_some(j)
}

/// Counts copies: `pairs` are (query position, token produced from it); `argmax(q, layer, head)`
/// is the most-attended position of that query.
pub fn count_hits(
    tokens: &[u32],
    in_answer: impl Fn(usize) -> bool,
    pairs: &[(usize, u32)],
    layers: usize,
    heads: usize,
    argmax: impl Fn(usize, usize, usize) -> Option<u32>,
) -> Vec<u32> {
    let mut copied: Vec<std::collections::BTreeSet<usize>> = vec![Default::default(); layers * heads];
    for &(q, w) in pairs {
        for l in 0..layers {
            for h in 0..heads {
                if let Some(j) = argmax(q, l, h).and_then(|j| copied_position(tokens, &in_answer, w, j)) {
                    copied[l * heads + h].insert(j);
                }
            }
        }
    }
    copied.iter().map(|s| s.len() as u32).collect()
}

fn argmax_of(store: &CaptureStore, q: usize, l: usize, h: usize) -> Option<u32> {
    store.row_u32(&HookPoint::layer(l, Quantity::AttnArgmax), q)?.get(h).copied()
}

/// A trial as run: the record (prompt then answer, generated or teacher-forced) and its decoding
/// steps as (query position, token produced from it).
pub struct TrialRun {
    pub record: RunRecord,
    pub steps: Vec<(usize, u32)>,
}

/// Runs a trial in `mode`, recording `capture` (teacher-forced runs add the logits, which
/// [`trial_result`] needs to tell whether each answer token was predicted).
pub fn run_steps(
    session: &Session,
    trial: &Trial,
    mode: ScanMode,
    capture: CaptureSpec,
    interventions: &Interventions,
) -> Result<TrialRun> {
    let prompt_len = trial.tokens.len();
    match mode {
        ScanMode::Generate => {
            let req = RunRequest {
                tokens: trial.tokens.clone(),
                max_new_tokens: trial.answer.len() + 2,
                sampling: SamplingSettings::default(),
                capture,
                interventions: interventions.clone(),
                stop_at_eos: true,
                replay: None,
            };
            let record = session.run(&req, &mut |_| true)?;
            // Step s reads the query at prompt_len − 1 + s and produces token prompt_len + s.
            let tokens = record.tokens();
            let steps = (prompt_len..tokens.len()).map(|p| (p - 1, tokens[p])).collect();
            Ok(TrialRun { record, steps })
        }
        ScanMode::TeacherForced => {
            let mut tokens = trial.tokens.clone();
            tokens.extend_from_slice(&trial.answer);
            let req = RunRequest::forward(tokens, capture.with("logits"), interventions.clone());
            let record = session.run(&req, &mut |_| true)?;
            let steps = trial.answer.iter().enumerate().map(|(i, &w)| (prompt_len - 1 + i, w)).collect();
            Ok(TrialRun { record, steps })
        }
    }
}

/// A trial's result from its run (which recorded `attn.argmax`): the distinct answer positions
/// each head copied, and whether the answer was right.
pub fn trial_result(session: &Session, trial: &Trial, mode: ScanMode, run: &TrialRun) -> Result<TrialResult> {
    let c = session.config();
    let (layers, heads) = (c.num_layers, c.attention.num_heads);
    let store = &run.record.store;
    let hits = count_hits(store.tokens(), |j| trial.in_answer(j), &run.steps, layers, heads, |q, l, h| argmax_of(store, q, l, h));
    let n = trial.answer.len();
    let (generated, correct) = match mode {
        ScanMode::Generate => {
            let generated = session.tokenizer.decode(run.record.generated(), true)?;
            let correct = trial.is_correct(&generated);
            (generated, correct)
        }
        ScanMode::TeacherForced => {
            let predicted: Vec<u32> =
                run.steps.iter().map(|&(q, _)| routelab_model::sampling::argmax(run.record.logits_at(q).unwrap_or(&[]))).collect();
            (session.tokenizer.decode(&predicted, true)?, predicted == trial.answer)
        }
    };
    Ok(TrialResult { id: trial.id.clone(), hits, answer_len: n, correct, generated })
}

/// Runs one trial.
pub fn run_trial(session: &Session, trial: &Trial, mode: ScanMode, interventions: &Interventions) -> Result<TrialResult> {
    let run = run_steps(session, trial, mode, CaptureSpec::items(&["stats"]), interventions)?;
    trial_result(session, trial, mode, &run)
}

/// State file: a JSON header line, then one JSON line per finished trial.
#[derive(Serialize, Deserialize, PartialEq)]
struct StateHeader {
    format: String,
    model: String,
    mode: ScanMode,
    trial_ids: Vec<String>,
    layers: usize,
    heads: usize,
}

fn read_state(path: &Path, header: &StateHeader) -> Result<Vec<TrialResult>> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(vec![]) };
    let mut lines = text.lines();
    let Some(first) = lines.next() else { return Ok(vec![]) };
    let found: StateHeader = serde_json::from_str(first).map_err(|e| ProbeError::format(path, format!("not a scan state file: {e}")))?;
    if found != *header {
        return Err(ProbeError::format(
            path,
            "this state file belongs to a different scan (model, mode or trials differ); remove it or pick another",
        ));
    }
    // A line cut short by an interrupted write is dropped; that trial simply runs again.
    Ok(lines.filter_map(|l| serde_json::from_str::<TrialResult>(l).ok()).collect())
}

/// Opens the state file to append results: a new one (its header written) when `fresh`,
/// else the one read.
fn open_state(p: &Path, header: &StateHeader, fresh: bool) -> Result<std::fs::File> {
    let mut f =
        std::fs::OpenOptions::new().create(true).append(!fresh).write(true).truncate(fresh).open(p).map_err(|e| ProbeError::io(p, e))?;
    if fresh {
        writeln!(f, "{}", serde_json::to_string(header).unwrap_or_default()).map_err(|e| ProbeError::io(p, e))?;
    } else if std::fs::read(p).is_ok_and(|b| b.last() != Some(&b'\n')) {
        // End the line an interrupted write cut short, so the next result starts a line of its
        // own instead of joining it (and being dropped with it).
        writeln!(f).map_err(|e| ProbeError::io(p, e))?;
    }
    Ok(f)
}

/// Runs every trial not already in `state` (when given), appending each result to it.
/// `progress` returning false cancels after the current trial.
pub fn scan(
    session: &Session,
    trials: &[Trial],
    mode: ScanMode,
    interventions: &Interventions,
    state: Option<&Path>,
    progress: &mut dyn FnMut(Progress) -> bool,
) -> Result<ScanResult> {
    let c = session.config();
    let header = StateHeader {
        format: "routelab-retrieval-scan/1".into(),
        model: session.name.clone(),
        mode,
        trial_ids: trials.iter().map(|t| t.id.clone()).collect(),
        layers: c.num_layers,
        heads: c.attention.num_heads,
    };
    let mut done: Vec<TrialResult> = match state {
        Some(p) => read_state(p, &header)?,
        None => vec![],
    };
    let mut file = match state {
        Some(p) => Some((p, open_state(p, &header, done.is_empty())?)),
        None => None,
    };
    let started = Instant::now();
    let resumed = done.len();
    let mut incomplete = false;
    for trial in trials {
        if done.iter().any(|d| d.id == trial.id) {
            continue;
        }
        let ran = done.len() - resumed;
        let elapsed = started.elapsed().as_secs_f64();
        let eta = (ran > 0).then(|| elapsed / ran as f64 * (trials.len() - done.len()) as f64);
        if !progress(Progress { done: done.len(), total: trials.len(), elapsed_seconds: elapsed, eta_seconds: eta }) {
            incomplete = true;
            break;
        }
        let r = run_trial(session, trial, mode, interventions)?;
        if let Some((p, f)) = &mut file {
            writeln!(f, "{}", serde_json::to_string(&r).unwrap_or_default())
                .and_then(|_| f.sync_data())
                .map_err(|e| ProbeError::io(p, e))?;
        }
        done.push(r);
    }
    if !incomplete {
        progress(Progress {
            done: done.len(),
            total: trials.len(),
            elapsed_seconds: started.elapsed().as_secs_f64(),
            eta_seconds: Some(0.0),
        });
    }
    // Keep trial order.
    done.sort_by_key(|r| trials.iter().position(|t| t.id == r.id).unwrap_or(usize::MAX));
    Ok(ScanResult { layers: c.num_layers, heads: c.attention.num_heads, mode, trials: done, incomplete })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_count_distinct_answer_positions_copied_from_the_needle() {
        // Context: positions 0..10, answer span 4..7 holds tokens 40, 41, 42.
        let mut tokens: Vec<u32> = (0..10).collect();
        tokens[4] = 40;
        tokens[5] = 41;
        tokens[6] = 42;
        // Three decoding steps produce 40, 41, 42 from queries 9, 10, 11.
        let pairs = [(9, 40), (10, 41), (11, 42)];
        // 1 layer, 3 heads: head 0 copies all three; head 1 looks at the right positions for
        // steps 1 and 2 only; head 2 attends to the answer but to the wrong token each time.
        let argmax = |q: usize, _l: usize, h: usize| -> Option<u32> {
            Some(match (h, q) {
                (0, 9) => 4,
                (0, 10) => 5,
                (0, 11) => 6,
                (1, 9) => 4,
                (1, 10) => 5,
                (1, 11) => 0,
                (2, 9) => 6,
                (2, 10) => 4,
                _ => 5,
            })
        };
        let hits = count_hits(&tokens, |j| (4..7).contains(&j), &pairs, 1, 3, argmax);
        assert_eq!(hits, vec![3, 2, 0]);
        let r = ScanResult {
            layers: 1,
            heads: 3,
            mode: ScanMode::Generate,
            trials: vec![TrialResult { id: "t".into(), hits, answer_len: 3, correct: true, generated: String::new() }],
            incomplete: false,
        };
        let s = r.scores();
        assert!((s[0] - 1.0).abs() < 1e-12 && (s[1] - 2.0 / 3.0).abs() < 1e-12 && s[2] == 0.0);
        assert_eq!(r.ranked_heads(RETRIEVAL_THRESHOLD).iter().map(|x| x.1).collect::<Vec<_>>(), vec![0, 1]);
        assert!((r.retrieval_share(RETRIEVAL_THRESHOLD) - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn a_result_appended_after_a_torn_line_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("scan.state");
        let header = StateHeader {
            format: "routelab-retrieval-scan/1".into(),
            model: "m".into(),
            mode: ScanMode::Generate,
            trial_ids: vec!["a".into(), "b".into(), "c".into()],
            layers: 1,
            heads: 2,
        };
        let result = |id: &str| TrialResult { id: id.into(), hits: vec![1, 0], answer_len: 2, correct: true, generated: String::new() };
        let line = |id: &str| serde_json::to_string(&result(id)).unwrap();
        drop(open_state(&p, &header, true).unwrap());
        // "a" was written whole, "b" cut short by a kill.
        let mut text = std::fs::read_to_string(&p).unwrap() + &line("a") + "\n";
        text += &line("b")[..10];
        std::fs::write(&p, text).unwrap();
        assert_eq!(read_state(&p, &header).unwrap(), vec![result("a")]);
        let mut f = open_state(&p, &header, false).unwrap();
        writeln!(f, "{}", line("c")).unwrap();
        assert_eq!(read_state(&p, &header).unwrap(), vec![result("a"), result("c")]);
    }

    #[test]
    fn scores_average_over_trials() {
        let t = |hits: Vec<u32>, n| TrialResult { id: String::new(), hits, answer_len: n, correct: false, generated: String::new() };
        let r = ScanResult {
            layers: 1,
            heads: 2,
            mode: ScanMode::TeacherForced,
            trials: vec![t(vec![2, 0], 4), t(vec![1, 1], 2)],
            incomplete: false,
        };
        // head 0: (2/4 + 1/2) / 2 = 0.5; head 1: (0 + 1/2) / 2 = 0.25.
        assert_eq!(r.scores(), vec![0.5, 0.25]);
    }
}
