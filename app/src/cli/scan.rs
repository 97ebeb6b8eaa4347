//! `routelab scan retrieval`: find the retrieval heads of a model.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use routelab_probes::analysis::needle::accuracy_by_cell;
use routelab_probes::analysis::retrieval::RETRIEVAL_THRESHOLD;
use routelab_probes::export::views;
use routelab_probes::jobs::scan::{ScanJob, ScanSettings};
use routelab_probes::jobs::{Cancel, Job};

use super::args::{print_progress, ModelArgs, NeedleArgs};

#[derive(Subcommand, Debug)]
pub enum ScanCommand {
    /// The retrieval-head scan (Wu et al. 2024): which heads copy the needle into the answer.
    Retrieval(RetrievalArgs),
}

#[derive(Args, Debug)]
pub struct RetrievalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub needle: NeedleArgs,
    /// generate (the paper's protocol) or teacher-forced (one prefill per trial).
    #[arg(long, default_value = "generate")]
    pub mode: String,
    /// Per-head scores (CSV: layer, head, retrieval_score, retrieval_head).
    #[arg(long)]
    pub out: PathBuf,
    /// Resume from / record progress in this file (default: OUT with .state appended).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Also write the layer × head plot (.png or .svg).
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

pub fn run(cmd: ScanCommand) -> anyhow::Result<()> {
    let ScanCommand::Retrieval(a) = cmd;
    let teacher_forced = match a.mode.as_str() {
        "generate" => false,
        "teacher-forced" | "teacher_forced" => true,
        other => anyhow::bail!("--mode {other:?}: expected generate or teacher-forced"),
    };
    let session = a.model.load()?;
    let state = a.state.clone().unwrap_or_else(|| PathBuf::from(format!("{}.state", a.out.display())));
    let job = ScanJob {
        settings: ScanSettings { needle: a.needle.settings(), teacher_forced },
        state: Some(state.clone()),
        ..Default::default()
    };
    let trials = job.settings.needle.trials(&session)?;
    eprintln!(
        "{} trials ({} lengths × {} depths × {}), {:?}; progress kept in {}",
        trials.len(),
        a.needle.lengths.len(),
        a.needle.depths.len(),
        a.needle.per_cell,
        job.settings.mode(),
        state.display()
    );
    let result = job.execute(&session, &mut |p| print_progress("scan", p), &Cancel::new())?;
    let scores = result.head_scores();
    let view = views::head_scores(&scores, &session.name);
    view.write(&a.out).with_context(|| format!("writing {}", a.out.display()))?;
    if let Some(p) = &a.plot {
        view.write(p).with_context(|| format!("writing {}", p.display()))?;
    }
    let ranked = scores.ranked(RETRIEVAL_THRESHOLD);
    println!(
        "{}: {} of {} heads ({:.1}%) score above {RETRIEVAL_THRESHOLD}; needle accuracy {:.0}%",
        session.name,
        ranked.len(),
        scores.layers * scores.heads,
        100.0 * scores.share_above(RETRIEVAL_THRESHOLD),
        100.0 * result.accuracy()
    );
    for (l, h, s) in ranked.iter().take(20) {
        println!("  layer {l:>3} head {h:>3}  {s:.3}");
    }
    let correct: Vec<bool> = result.trials.iter().map(|t| t.correct).collect();
    println!("needle accuracy by length and depth:");
    for (len, depth, acc) in accuracy_by_cell(&trials[..correct.len()], &correct) {
        println!("  {len:>6} tokens  depth {depth:.2}  {:.0}%", 100.0 * acc);
    }
    Ok(())
}
