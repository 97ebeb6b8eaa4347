//! `routelab export`: a view of a trace as a plot (PNG/SVG) or data (CSV).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use routelab_probes::export::views;
use routelab_probes::trace::Trace;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A trace written by `routelab run --trace` or `routelab forward`.
    pub trace: PathBuf,
    /// expert-load, routing, margin (needs --capture margin), heads, coactivation,
    /// router-entropy, contributions, diff-routing or diff-kl (the last two need --against).
    #[arg(long)]
    pub view: String,
    /// Layer, for per-layer views (coactivation; default: the first MoE layer).
    #[arg(long)]
    pub layer: Option<usize>,
    /// Second trace, for the diff views.
    #[arg(long)]
    pub against: Option<PathBuf>,
    /// Output file: .png, .svg or .csv.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: ExportArgs) -> anyhow::Result<()> {
    let trace = Trace::read(&a.trace)?;
    let against = a.against.as_ref().map(|p| Trace::read(p)).transpose()?;
    let view = views::trace_view(&a.view, &trace, a.layer, against.as_ref()).context("--view")?;
    view.write(&a.out).with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!("{} written", a.out.display());
    Ok(())
}
