//! Arguments several subcommands share: model and device, capture, interventions.

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use routelab_model::capture::{parse_layers, CaptureSpec};
use routelab_model::interventions::{parse_expert_mask, parse_head_mask, Interventions};
use routelab_model::replay::RoutingReplay;
use routelab_model::session::{LoadOptions, Session};
use routelab_model::source::{LoadProgress, ModelSource};
use routelab_probes::jobs::scan::NeedleSettings;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A model directory (Hugging Face layout), a .gguf file, a Hugging Face repo id
    /// (owner/name[@revision]), one quant of a GGUF repo (owner/name[@revision]:QUANT, e.g.
    /// Qwen/Qwen3-30B-A3B-GGUF:Q4_K_M; `routelab info -m owner/name` lists them) or a bundled
    /// model name.
    #[arg(long, short)]
    pub model: String,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// The weights' dtype: f32 or bf16 (default f32 on the CPU, bf16 on a GPU). On the CPU,
    /// activations stay f32 either way; bf16 halves the memory and the bytes read per token.
    #[arg(long, value_name = "f32|bf16")]
    pub dtype: Option<String>,
}

impl ModelArgs {
    /// Loads the model, showing progress bars on stderr when it is a terminal (downloads with
    /// their ETA, then the layers built); only the final "loaded" line otherwise.
    pub fn load(&self) -> anyhow::Result<Session> {
        let source = ModelSource::parse(&self.model)?;
        let options = LoadOptions::parse(&self.device, self.dtype.as_deref())?;
        let started = std::time::Instant::now();
        // One bar per phase (each downloaded file, then the layers), with indicatif's ETA; drawn
        // only when stderr is a terminal.
        let mut bar: Option<(String, ProgressBar)> = None;
        let loaded = Session::load(&source, &options, &mut |p| {
            let (phase, template, done, total) = match p {
                LoadProgress::Download { file, done, total } => {
                    (format!("downloading {file}"), "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}), ETA {eta}", done, total)
                }
                LoadProgress::Layers { done, total } => (
                    format!("loading {}", source.display_name()),
                    "{msg} [{bar:30}] layer {pos}/{len}, ETA {eta}",
                    done as u64,
                    total as u64,
                ),
            };
            match &bar {
                Some((current, b)) if *current == phase => {
                    b.set_length(total);
                    b.set_position(done);
                }
                _ => {
                    if let Some((_, old)) = bar.take() {
                        old.finish_and_clear();
                    }
                    let style =
                        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ");
                    let b = ProgressBar::new(total).with_style(style).with_message(phase.clone()).with_position(done);
                    b.tick();
                    bar = Some((phase, b));
                }
            }
        });
        if let Some((_, b)) = bar {
            b.finish_and_clear();
        }
        let session = loaded.with_context(|| format!("loading model {}", self.model))?;
        eprintln!("loaded {} in {:.1}s: {}", session.name, started.elapsed().as_secs_f64(), session.config().summary());
        Ok(session)
    }

    /// The model's info from its headers and config, without reading weights (see
    /// [`Session::inspect`]); with whether it has a chat template.
    pub fn inspect(&self) -> anyhow::Result<(routelab_model::session::ModelInfo, bool)> {
        let source = ModelSource::parse(&self.model)?;
        let options = LoadOptions::parse(&self.device, self.dtype.as_deref())?;
        Session::inspect(&source, &options).with_context(|| format!("reading model {}", self.model))
    }
}

/// Routing taken from a recorded trace (`routelab_model::replay`).
#[derive(Args, Debug, Clone, Default)]
pub struct ReplayArgs {
    /// Take the MoE layers' routing (expert ids) from this trace instead of the routers: the
    /// trace's own prompt reproduces its run; another prompt gets that prompt's routing.
    #[arg(long, value_name = "TRACE")]
    pub replay_routing: Option<PathBuf>,
    /// Layers to replay, e.g. 8-12 or 2+5 (default: every layer the trace routed).
    #[arg(long, value_name = "LAYERS", requires = "replay_routing")]
    pub replay_layers: Option<String>,
    /// Positions to replay, A-B inclusive (default: all the trace recorded).
    #[arg(long, value_name = "A-B", requires = "replay_routing")]
    pub replay_positions: Option<String>,
    /// Replay the recorded combine weights too (default: recomputed from this run's router
    /// scores for the replayed experts).
    #[arg(long, requires = "replay_routing")]
    pub replay_weights: bool,
}

impl ReplayArgs {
    pub fn build(&self) -> anyhow::Result<Option<std::sync::Arc<RoutingReplay>>> {
        let Some(path) = &self.replay_routing else { return Ok(None) };
        let layers = match &self.replay_layers {
            None => None,
            // The same layer lists as --capture's probs:LAYERS.
            Some(s) => {
                let v: Vec<usize> = parse_layers(s).map_err(|e| anyhow::anyhow!("--replay-layers {s:?}: {e}"))?.into_iter().collect();
                if v.is_empty() {
                    anyhow::bail!("--replay-layers {s:?}: names no layer");
                }
                Some(v)
            }
        };
        let positions = match &self.replay_positions {
            None => 0..usize::MAX,
            Some(s) => {
                let num =
                    |x: &str| x.trim().parse::<usize>().map_err(|_| anyhow::anyhow!("--replay-positions {s:?}: {x:?} is not a number"));
                let (a, b) = match s.split_once('-') {
                    Some((a, b)) => (num(a)?, num(b)?),
                    None => (num(s)?, num(s)?),
                };
                if b < a {
                    anyhow::bail!("--replay-positions {s:?}: the range ends before it starts");
                }
                a..b.saturating_add(1)
            }
        };
        let trace = routelab_probes::trace::Trace::read(path)?;
        let replay =
            RoutingReplay::from_store(&trace.store, &path.display().to_string(), layers.as_deref(), positions, self.replay_weights)
                .map_err(anyhow::Error::msg)?;
        Ok(Some(std::sync::Arc::new(replay)))
    }
}

#[derive(Args, Debug, Clone, Default)]
pub struct InterventionArgs {
    /// An intervention as HOOK:METHOD (repeatable): layers.L.experts.E:reroute|drop,
    /// layers.L.attn.head.H:zero|uniform|mean|scale=X, layers.L.shared_expert:mute,
    /// layers.L.dense_residual:mute. The options below are shorthands for the same.
    #[arg(long, value_name = "HOOK:METHOD")]
    pub intervene: Vec<String>,
    /// Mask an expert: LAYER:EXPERT[:reroute|drop] (repeatable).
    #[arg(long = "mask-expert", value_name = "L:E[:METHOD]")]
    pub mask_expert: Vec<String>,
    /// Mask an attention head: LAYER:HEAD[:zero|uniform|mean|scale=X] (repeatable).
    #[arg(long = "mask-head", value_name = "L:H[:METHOD]")]
    pub mask_head: Vec<String>,
    /// Mute a layer's shared expert(s) (repeatable).
    #[arg(long = "mute-shared", value_name = "LAYER")]
    pub mute_shared: Vec<usize>,
    /// Mute a layer's dense residual MLP (Arctic) (repeatable).
    #[arg(long = "mute-dense", value_name = "LAYER")]
    pub mute_dense: Vec<usize>,
}

impl InterventionArgs {
    /// The set; `mean` heads get their reference from a plain run over `reference_tokens`.
    pub fn build(&self, session: &Session, reference_tokens: &[u32]) -> anyhow::Result<Interventions> {
        let mut set = Interventions::default();
        for s in &self.intervene {
            set.push(s.parse().map_err(anyhow::Error::msg)?);
        }
        for s in &self.mask_expert {
            set.push(parse_expert_mask(s).map_err(anyhow::Error::msg)?);
        }
        for s in &self.mask_head {
            set.push(parse_head_mask(s).map_err(anyhow::Error::msg)?);
        }
        for &layer in &self.mute_shared {
            set.push(routelab_model::interventions::Intervention::SharedExpert { layer });
        }
        for &layer in &self.mute_dense {
            set.push(routelab_model::interventions::Intervention::DenseResidual { layer });
        }
        set.validate(session.config())?;
        session.fill_head_means(&mut set, reference_tokens)?;
        Ok(set)
    }
}

#[derive(Args, Debug, Clone)]
pub struct CaptureArgs {
    /// What to record: default (routing, head statistics, contribution norms), all (also the
    /// router margin, full attention, residual streams, logits), none, or items router, margin,
    /// stats, contributions, logits, probs[:LAYERS], hidden[:LAYERS], span:A-B (each head's
    /// attention on key positions A..=B), or hook names and patterns such as
    /// layers.*.router.margin (`*` matches one segment); comma-separated or repeated; LAYERS like
    /// 3, 0-5 or 1+4.
    #[arg(long, value_name = "WHAT")]
    pub capture: Vec<String>,
}

impl CaptureArgs {
    pub fn spec(&self, default: CaptureSpec) -> anyhow::Result<CaptureSpec> {
        if self.capture.is_empty() {
            return Ok(default);
        }
        CaptureSpec::parse_items(&self.capture).map_err(anyhow::Error::msg)
    }
}

/// Shows progress with ETA on stderr: a bar on a terminal, otherwise a plain line per tenth of
/// the work. The elapsed time and ETA are the analysis's own (a resumed scan's ETA counts only
/// the trials run now). A new `what`, or new work after a finished bar, starts a new bar; a
/// repeated final report is ignored.
pub fn print_progress(what: &str, p: routelab_probes::analysis::retrieval::Progress) {
    use std::io::IsTerminal;
    let eta = match p.eta_seconds {
        Some(s) if p.done < p.total => format!(", ETA {}", fmt_secs(s)),
        _ => String::new(),
    };
    let timing = format!("{} elapsed{eta}", fmt_secs(p.elapsed_seconds));
    if !std::io::stderr().is_terminal() {
        let tenth = (p.total / 10).max(1);
        if !p.done.is_multiple_of(tenth) && p.done < p.total {
            return;
        }
        let pct = if p.total > 0 { 100.0 * p.done as f64 / p.total as f64 } else { 100.0 };
        eprintln!("{what}: {}/{} ({pct:.0}%), {timing}", p.done, p.total);
        return;
    }
    // The work reported last, with its bar while it is in progress (a finished bar stays drawn;
    // indicatif pads its line to the terminal's width, so what follows starts on the next line).
    static CURRENT: std::sync::Mutex<Option<(String, Option<ProgressBar>)>> = std::sync::Mutex::new(None);
    let mut current = CURRENT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let finished = p.done >= p.total;
    let bar = match current.take() {
        Some((name, Some(bar))) if name == what => bar,
        Some((name, None)) if name == what && finished => {
            // A repeated final report.
            *current = Some((name, None));
            return;
        }
        _ => {
            let style = ProgressStyle::with_template("{prefix}: [{bar:30}] {pos}/{len} ({percent}%), {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            ProgressBar::new(p.total as u64).with_style(style).with_prefix(what.to_string()).with_message(timing.clone())
        }
    };
    bar.set_message(timing);
    bar.set_length(p.total as u64);
    bar.set_position(p.done as u64);
    if finished {
        bar.finish();
        *current = Some((what.to_string(), None));
    } else {
        *current = Some((what.to_string(), Some(bar)));
    }
}

/// Seconds as `42s`, `3m07s` or `2h05m`.
pub fn fmt_secs(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.0}s")
    } else if s < 3600.0 {
        format!("{}m{:02.0}s", (s / 60.0) as u64, s % 60.0)
    } else {
        format!("{}h{:02}m", (s / 3600.0) as u64, ((s % 3600.0) / 60.0) as u64)
    }
}

/// Needle-in-a-haystack trial settings shared by the scan and the ablation (defaults:
/// [`NeedleSettings::default`]).
#[derive(Args, Debug, Clone)]
pub struct NeedleArgs {
    /// Context lengths in tokens, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = NeedleSettings::default().lengths)]
    pub lengths: Vec<usize>,
    /// Needle depths (0 = start, 1 = end), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = NeedleSettings::default().depths)]
    pub depths: Vec<f64>,
    /// Trials per (length, depth).
    #[arg(long, default_value_t = NeedleSettings::default().per_cell)]
    pub per_cell: usize,
    #[arg(long, default_value_t = NeedleSettings::default().seed)]
    pub seed: u64,
    /// Filler text (default: assets/texts/haystack.txt, prose from the Rust book).
    #[arg(long)]
    pub haystack: Option<std::path::PathBuf>,
    /// Needle sentence with an {answer} placeholder.
    #[arg(long)]
    pub needle: Option<String>,
    /// The question appended after the haystack.
    #[arg(long)]
    pub question: Option<String>,
    /// Digits in each answer.
    #[arg(long, default_value_t = NeedleSettings::default().digits)]
    pub digits: usize,
}

impl NeedleArgs {
    pub fn settings(&self) -> NeedleSettings {
        NeedleSettings {
            lengths: self.lengths.clone(),
            depths: self.depths.clone(),
            per_cell: self.per_cell,
            seed: self.seed,
            haystack: self.haystack.clone(),
            needle: self.needle.clone(),
            question: self.question.clone(),
            digits: self.digits,
        }
    }
}
