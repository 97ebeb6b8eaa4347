//! `routelab forward`: one forward pass over a prompt or token ids, written as a trace.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use routelab_model::capture::CaptureSpec;
use routelab_model::session::Prompt;
use routelab_probes::jobs::run::{GenerationSettings, RunJob};
use routelab_probes::jobs::{Cancel, Job};

use super::args::{CaptureArgs, InterventionArgs, ModelArgs, ReplayArgs};

#[derive(Args, Debug)]
pub struct ForwardArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Comma-separated token ids.
    #[arg(long, conflicts_with = "prompt")]
    pub tokens: Option<String>,
    /// Prompt text (tokenised with the model's special tokens).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Wrap the prompt in the chat template.
    #[arg(long)]
    pub chat: bool,
    #[command(flatten)]
    pub interventions: InterventionArgs,
    #[command(flatten)]
    pub capture: CaptureArgs,
    #[command(flatten)]
    pub replay: ReplayArgs,
    /// Output trace (safetensors).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn parse_tokens(s: &str) -> anyhow::Result<Vec<u32>> {
    s.split(',').map(|x| x.trim().parse::<u32>().with_context(|| format!("--tokens: {x:?} is not a token id"))).collect()
}

pub fn run(a: ForwardArgs) -> anyhow::Result<()> {
    // Arguments are checked before the model loads, so a typo fails in seconds.
    let capture = a.capture.spec(CaptureSpec::default())?.with("logits");
    let replay = a.replay.build()?;
    let session = a.model.load()?;
    let prompt = match (&a.tokens, &a.prompt) {
        (Some(t), None) => Prompt::Tokens { ids: parse_tokens(t)? },
        (None, Some(p)) => Prompt::of(p, a.chat, None),
        _ => bail!("give either --tokens or --prompt"),
    };
    let tokens = session.encode(&prompt)?;
    let job = RunJob {
        interventions: a.interventions.build(&session, &tokens)?,
        prompt,
        settings: GenerationSettings { max_new_tokens: 0, ..Default::default() },
        // Logits are what a forward pass is for: always recorded.
        capture,
        replay,
    };
    let run = job.execute(&session, &mut |_| {}, &Cancel::new())?;
    run.trace.write(&a.out).with_context(|| format!("writing trace {}", a.out.display()))?;
    eprintln!("{} positions in {:.2}s; trace written to {}", run.prompt_tokens, run.prefill_seconds, a.out.display());
    Ok(())
}
