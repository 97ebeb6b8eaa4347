//! `routelab run`: generate from a prompt, streaming the text, then summarise expert load.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use routelab_model::capture::CaptureSpec;
use routelab_model::sampling::SamplingSettings;
use routelab_model::session::{Prompt, RunEvent};
use routelab_probes::jobs::run::{GenerationSettings, RunJob};
use routelab_probes::jobs::{Cancel, Job};
use routelab_probes::summary::{expert_load, format_load_table};

use super::args::{CaptureArgs, InterventionArgs, ModelArgs, ReplayArgs};

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt text.
    #[arg(long, short)]
    pub prompt: String,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// System message (implies --chat).
    #[arg(long)]
    pub system: Option<String>,
    #[arg(long, default_value_t = GenerationSettings::default().max_new_tokens)]
    pub max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = SamplingSettings::default().temperature)]
    pub temperature: f32,
    #[arg(long, default_value_t = SamplingSettings::default().top_p)]
    pub top_p: f32,
    /// 0 = no limit.
    #[arg(long, default_value_t = SamplingSettings::default().top_k)]
    pub top_k: usize,
    #[arg(long, default_value_t = SamplingSettings::default().seed)]
    pub seed: u64,
    /// Keep generating past end-of-sequence tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    #[command(flatten)]
    pub interventions: InterventionArgs,
    #[command(flatten)]
    pub capture: CaptureArgs,
    #[command(flatten)]
    pub replay: ReplayArgs,
    /// Write the run as a trace (routelab-trace/2 safetensors file).
    #[arg(long)]
    pub trace: Option<PathBuf>,
}

pub fn run(a: RunArgs) -> anyhow::Result<()> {
    // Arguments are checked before the model loads, so a typo fails in seconds.
    let capture = a.capture.spec(CaptureSpec::default())?;
    let replay = a.replay.build()?;
    let session = a.model.load()?;
    let prompt = Prompt::of(&a.prompt, a.chat, a.system.as_deref());
    let tokens = session.encode(&prompt)?;
    let job = RunJob {
        interventions: a.interventions.build(&session, &tokens)?,
        prompt,
        settings: GenerationSettings {
            max_new_tokens: a.max_new_tokens,
            sampling: SamplingSettings { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p, seed: a.seed },
            stop_at_eos: !a.ignore_eos,
        },
        capture,
        replay,
    };
    if !job.interventions.is_empty() {
        let labels: Vec<String> = job.interventions.items.iter().map(|i| i.label()).collect();
        eprintln!("interventions: {}", labels.join(", "));
    }
    let mut out = std::io::stdout().lock();
    write!(out, "{}", session.tokenizer.decode(&tokens, false)?)?;
    out.flush()?;
    let run = job.execute(
        &session,
        &mut |ev| {
            if let RunEvent::Token { text, .. } = ev {
                let _ = write!(out, "{text}");
                let _ = out.flush();
            }
        },
        &Cancel::new(),
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "\n[{} prompt tokens in {:.2}s ({:.1} tok/s); {} generated in {:.2}s ({:.1} tok/s); stopped: {}]",
        run.prompt_tokens,
        run.prefill_seconds,
        run.prompt_tokens as f64 / run.prefill_seconds.max(1e-9),
        run.generated_tokens,
        run.decode_seconds,
        run.generated_tokens as f64 / run.decode_seconds.max(1e-9),
        run.stop.describe(),
    )?;
    let trace = &run.trace;
    if (0..trace.num_layers()).any(|l| trace.router(l).is_some()) {
        writeln!(out, "\nexpert load over all {} positions:", trace.len())?;
        write!(out, "{}", format_load_table(&expert_load(trace, 0..trace.len()), 4))?;
    }
    if let Some(path) = &a.trace {
        trace.write(path).with_context(|| format!("writing trace {}", path.display()))?;
        eprintln!("trace written to {}", path.display());
    }
    Ok(())
}
