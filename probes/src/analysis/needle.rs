//! Needle-in-a-haystack trials: a needle sentence holding an answer (a passkey) inserted at a
//! relative depth into filler text of a given token length, followed by a question whose
//! answer the model must copy from the needle.
//!
//! Trials are built from token ids, so the positions of the answer inside the context are
//! known exactly: the retrieval-head scan checks whether a head attends to them.

use std::ops::Range;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use routelab_model::session::Session;
use serde::{Deserialize, Serialize};

use crate::error::{ProbeError, Result};

/// How needle and question are phrased. `{answer}` marks where the answer goes (it may
/// appear more than once).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NeedleFormat {
    /// Inserted into the haystack, e.g. `" The passkey is {answer}. Remember it."`.
    pub needle: String,
    /// Appended after the haystack, e.g. `"\nWhat is the passkey? The passkey is"`.
    pub question: String,
    /// Digits in each random answer.
    pub answer_digits: usize,
    /// Start the prompt with the model's `bos_token_id` (for models trained that way);
    /// otherwise the tokenizer adds what it is configured to.
    #[serde(default)]
    pub prefix_bos: bool,
}

impl Default for NeedleFormat {
    fn default() -> Self {
        NeedleFormat {
            needle: " The special magic number is {answer}. Remember it. ".into(),
            question: "\n\nWhat is the special magic number mentioned in the text above? The special magic number is".into(),
            answer_digits: 5,
            prefix_bos: false,
        }
    }
}

impl NeedleFormat {
    /// The passkey format RouteLab's bundled tiny models were trained on
    /// (assets/recipes/common.py).
    pub fn passkey() -> Self {
        NeedleFormat {
            needle: " The passkey is {answer}. Remember it. {answer} is the passkey. ".into(),
            question: "\nWhat is the passkey? The passkey is".into(),
            answer_digits: 5,
            prefix_bos: true,
        }
    }

    /// The format a model is evaluated with: the passkey format for the bundled tiny
    /// models, the generic one otherwise.
    pub fn for_model(name: &str) -> Self {
        match name {
            "tiny-moe" | "tiny-dense" => Self::passkey(),
            _ => Self::default(),
        }
    }
}

/// Where trials are placed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NeedleGrid {
    /// Context lengths in tokens (whole prompt).
    pub lengths: Vec<usize>,
    /// Relative depths of the needle, 0 = start of the haystack, 1 = end.
    pub depths: Vec<f64>,
    /// Trials per (length, depth), each with its own answer and haystack offset.
    pub per_cell: usize,
    pub seed: u64,
}

impl Default for NeedleGrid {
    fn default() -> Self {
        NeedleGrid { lengths: vec![512, 1024], depths: vec![0.0, 0.25, 0.5, 0.75, 1.0], per_cell: 2, seed: 0 }
    }
}

/// One trial.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub id: String,
    pub length: usize,
    pub depth: f64,
    /// The prompt: haystack with needle, then the question.
    pub tokens: Vec<u32>,
    /// The answer's token ids as they appear in the needle.
    pub answer: Vec<u32>,
    /// The answer as text (what counts as correct).
    pub answer_text: String,
    /// Positions of every copy of `answer` inside `tokens`.
    pub answer_spans: Vec<Range<usize>>,
}

impl Trial {
    /// Correct when the generated text, leading whitespace aside, begins with the answer.
    pub fn is_correct(&self, generated_text: &str) -> bool {
        generated_text.trim_start().starts_with(&self.answer_text)
    }

    pub fn in_answer(&self, pos: usize) -> bool {
        self.answer_spans.iter().any(|s| s.contains(&pos))
    }
}

/// Builds the grid of trials from filler text.
pub fn build_trials(session: &Session, haystack: &str, format: &NeedleFormat, grid: &NeedleGrid) -> Result<Vec<Trial>> {
    let tok = &session.tokenizer;
    let filler = tok.encode(haystack, false)?;
    let with_special = tok.encode("x", true)?;
    let plain = tok.encode("x", false)?;
    // The BOS (if the tokenizer adds one) leads every prompt.
    let bos: Vec<u32> = if with_special.len() > plain.len() { with_special[..with_special.len() - plain.len()].to_vec() } else { vec![] };
    if !format.needle.contains("{answer}") {
        return Err(ProbeError::Invalid(format!("needle {:?} has no {{answer}} placeholder", format.needle)));
    }
    let bos: Vec<u32> = match (format.prefix_bos, session.config().bos_token_id) {
        (true, Some(b)) => vec![b],
        _ => bos,
    };
    let question = tok.encode(&format.question, false)?;
    let max_context = session.config().max_position_embeddings;
    let mut rng = ChaCha8Rng::seed_from_u64(grid.seed);
    let mut trials = vec![];
    for &length in &grid.lengths {
        if length > max_context {
            return Err(ProbeError::Invalid(format!("context length {length} exceeds the model's {max_context}")));
        }
        for &depth in &grid.depths {
            for i in 0..grid.per_cell {
                let value: String = (0..format.answer_digits)
                    .map(|d| char::from(b'0' + if d == 0 { rng.random_range(1..10) } else { rng.random_range(0..10) } as u8))
                    .collect();
                // Needle pieces around each {answer}. An answer after a space is tokenised with
                // that space, so its ids are the ones the model has to produce after the question.
                let pieces: Vec<&str> = format.needle.split("{answer}").collect();
                let mut needle: Vec<u32> = vec![];
                let mut spans_in_needle = vec![];
                let mut answer = vec![];
                for (j, piece) in pieces.iter().enumerate() {
                    let last = j + 1 == pieces.len();
                    let (text, spoken) =
                        if !last && piece.ends_with(' ') { (piece.trim_end(), format!(" {value}")) } else { (*piece, value.clone()) };
                    needle.extend(tok.encode(text, false)?);
                    if !last {
                        let ids = tok.encode(&spoken, false)?;
                        spans_in_needle.push(needle.len()..needle.len() + ids.len());
                        needle.extend_from_slice(&ids);
                        if answer.is_empty() {
                            answer = ids;
                        }
                    }
                }
                let fixed = bos.len() + needle.len() + question.len();
                if fixed >= length {
                    return Err(ProbeError::Invalid(format!(
                        "context length {length} is too short for the needle and question ({fixed} tokens)"
                    )));
                }
                let fill = length - fixed;
                if fill > filler.len() {
                    return Err(ProbeError::Invalid(format!("the haystack text has {} tokens, {fill} are needed", filler.len())));
                }
                let offset = rng.random_range(0..=filler.len() - fill);
                let window = &filler[offset..offset + fill];
                let at = ((depth.clamp(0.0, 1.0)) * fill as f64).round() as usize;
                let mut tokens = bos.clone();
                tokens.extend_from_slice(&window[..at]);
                let start = tokens.len();
                tokens.extend_from_slice(&needle);
                tokens.extend_from_slice(&window[at..]);
                tokens.extend_from_slice(&question);
                trials.push(Trial {
                    id: format!("L{length}-d{depth:.2}-{i}"),
                    length,
                    depth,
                    tokens,
                    answer,
                    answer_text: value,
                    answer_spans: spans_in_needle.into_iter().map(|s| start + s.start..start + s.end).collect(),
                });
            }
        }
    }
    Ok(trials)
}

/// Accuracy (0–1) by (length, depth) cell, in grid order.
pub fn accuracy_by_cell(trials: &[Trial], correct: &[bool]) -> Vec<(usize, f64, f64)> {
    let mut cells: Vec<(usize, f64, usize, usize)> = vec![];
    for (t, &ok) in trials.iter().zip(correct) {
        match cells.iter_mut().find(|c| c.0 == t.length && c.1 == t.depth) {
            Some(c) => {
                c.2 += ok as usize;
                c.3 += 1;
            }
            None => cells.push((t.length, t.depth, ok as usize, 1)),
        }
    }
    cells.into_iter().map(|(l, d, k, n)| (l, d, k as f64 / n as f64)).collect()
}
