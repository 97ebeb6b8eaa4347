//! Command-line interface: `gui` (the default), `run`, `forward`, `bench`, `info`, `scan`,
//! `analyze`, `patch`, `attribute`, `export`, `selftest`.

mod analyze;
mod args;
mod attribute;
mod bench;
mod export;
mod forward;
mod generate;
mod info;
mod patch;
mod scan;
mod selftest;

use clap::{Parser, Subcommand};

pub use args::{CaptureArgs, InterventionArgs, ModelArgs};

#[derive(Parser, Debug)]
#[command(name = "routelab", version, about = "A workbench for looking inside dense and mixture-of-experts language models")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Open the workbench (the default with no command).
    Gui(GuiArgs),
    /// Generate from a prompt, streaming the text, and print per-layer expert load.
    Run(generate::RunArgs),
    /// One forward pass over a prompt or token ids, written as a trace.
    Forward(forward::ForwardArgs),
    /// Prefill and decode speed with and without full capture.
    Bench(bench::BenchArgs),
    /// Architecture summary of a model.
    Info(info::InfoArgs),
    /// Scans over many prompts (retrieval heads).
    #[command(subcommand)]
    Scan(scan::ScanCommand),
    /// Analyses: expert specialization over a corpus, head ablations.
    #[command(subcommand)]
    Analyze(analyze::AnalyzeCommand),
    /// Activation patching: a clean prompt's activations copied into a corrupted one's run,
    /// cell by cell (layer × position, head or expert), scored on the next-token logits.
    Patch(patch::PatchArgs),
    /// Direct logit attribution over heads and experts, the logit lens, and what each
    /// selected expert promotes.
    Attribute(attribute::AttributeArgs),
    /// Export a view of a trace as PNG, SVG or CSV.
    Export(export::ExportArgs),
    /// Check a device (CUDA) against the CPU reference on the fixture models.
    Selftest(selftest::SelftestArgs),
}

#[derive(clap::Args, Debug, Default)]
pub struct GuiArgs {
    /// Notebook directory (default: the last one, in RouteLab's data directory).
    pub notebook: Option<std::path::PathBuf>,
    /// Model to load instead of the notebook's.
    #[arg(long, short)]
    pub model: Option<String>,
    /// Run every cell once the model is loaded.
    #[arg(long)]
    pub run_all: bool,
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Gui(a)) => crate::gui::run(a.notebook, a.model, a.run_all),
        Some(Command::Run(a)) => generate::run(a),
        Some(Command::Forward(a)) => forward::run(a),
        Some(Command::Bench(a)) => bench::run(a),
        Some(Command::Info(a)) => info::run(a),
        Some(Command::Scan(c)) => scan::run(c),
        Some(Command::Analyze(c)) => analyze::run(c),
        Some(Command::Patch(a)) => patch::run(a),
        Some(Command::Attribute(a)) => attribute::run(a),
        Some(Command::Export(a)) => export::run(a),
        Some(Command::Selftest(a)) => selftest::run(a),
        None => crate::gui::run(None, None, false),
    }
}
