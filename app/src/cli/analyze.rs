//! `routelab analyze specialization | ablation`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use routelab_model::interventions::HeadMethod;
use routelab_probes::analysis::retrieval::HeadScores;
use routelab_probes::export::csv::Table;
use routelab_probes::export::views;
use routelab_probes::jobs::ablation::{AblationJob, AblationSettings};
use routelab_probes::jobs::specialization::{Export, SpecializationJob, SpecializationOutput, SpecializationSettings};
use routelab_probes::jobs::{Cancel, Job};

use super::args::{print_progress, ModelArgs, NeedleArgs};

#[derive(Subcommand, Debug)]
pub enum AnalyzeCommand {
    /// Expert specialization over a labelled corpus (one subdirectory per domain).
    Specialization(SpecializationArgs),
    /// Needle accuracy with the top-N retrieval heads masked vs N random other heads.
    Ablation(AblationArgs),
}

#[derive(Args, Debug)]
pub struct SpecializationArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Corpus directory: one subdirectory of text files per domain.
    #[arg(long)]
    pub corpus: PathBuf,
    /// Output directory (created).
    #[arg(long)]
    pub out: PathBuf,
    /// Tokens per context chunk.
    #[arg(long, default_value_t = SpecializationSettings::default().chunk_tokens)]
    pub chunk_tokens: usize,
    /// Stop after this many tokens.
    #[arg(long, default_value_t = SpecializationSettings::default().max_tokens)]
    pub max_tokens: usize,
    /// Domains whose word tokens count as `code` (others: `prose`).
    #[arg(long, value_delimiter = ',', default_values_t = SpecializationSettings::default().code_domains)]
    pub code_domains: Vec<String>,
}

#[derive(Args, Debug)]
pub struct AblationArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Per-head retrieval scores from `routelab scan retrieval`.
    #[arg(long)]
    pub heads: PathBuf,
    /// How many heads to mask.
    #[arg(long, default_value_t = AblationSettings::default().top)]
    pub top: usize,
    /// Random draws of non-retrieval heads.
    #[arg(long, default_value_t = AblationSettings::default().draws)]
    pub draws: usize,
    /// Head mask method: uniform (as in the paper) or zero.
    #[arg(long, default_value = "uniform")]
    pub method: String,
    #[command(flatten)]
    pub needle: NeedleArgs,
    /// Output directory (created).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(cmd: AnalyzeCommand) -> anyhow::Result<()> {
    match cmd {
        AnalyzeCommand::Specialization(a) => run_specialization(a),
        AnalyzeCommand::Ablation(a) => run_ablation(a),
    }
}

fn run_specialization(a: SpecializationArgs) -> anyhow::Result<()> {
    let session = a.model.load()?;
    let settings = SpecializationSettings {
        corpus: a.corpus.clone(),
        chunk_tokens: a.chunk_tokens,
        max_tokens: a.max_tokens,
        code_domains: a.code_domains.clone(),
    };
    let output = SpecializationJob { settings }.execute(&session, &mut |p| print_progress("routing corpus", p), &Cancel::new())?;
    for s in &output.skipped {
        eprintln!("skipped {} (not UTF-8 text or empty)", s.display());
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let model = session.name.clone();
    for (stem, export) in output.exports(&model, &|t| session.tokenizer.piece(t)) {
        match export {
            Export::View(v) => v.write_all(&a.out, &stem)?,
            Export::Table(t) => t.write(&a.out.join(format!("{stem}.csv")))?,
        }
    }
    let json = output.report_json(&model);
    routelab_probes::atomic::write_atomic(&a.out.join("report.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
    let SpecializationOutput { routing, report, .. } = &output;
    println!("{} tokens in {} domains ({}); per MoE layer:", routing.tokens.len(), routing.domains.len(), routing.domains.join(", "));
    println!("{:>5} {:>8} {:>10} {:>10} {:>9} {:>8}", "layer", "balance", "MI class", "MI domain", "vocab sp", "top1 agr");
    for l in report {
        println!(
            "{:>5} {:>8.3} {:>10.3} {:>10.3} {:>9.3} {:>8.3}",
            l.layer, l.balance, l.mi_class_bits, l.mi_domain_bits, l.vocabulary_specialization, l.agreement.top1
        );
    }
    println!("written to {}", a.out.display());
    Ok(())
}

fn run_ablation(a: AblationArgs) -> anyhow::Result<()> {
    let method = match a.method.as_str() {
        "uniform" => HeadMethod::Uniform,
        "zero" => HeadMethod::Zero,
        other => anyhow::bail!("--method {other:?}: expected uniform or zero"),
    };
    let table = Table::read(&a.heads)?;
    let scores = HeadScores::from_table(&table, &a.heads)?;
    let session = a.model.load()?;
    let settings = AblationSettings { top: a.top, draws: a.draws, method, needle: a.needle.settings() };
    let job = AblationJob { scores, settings };
    job.check(&session).with_context(|| format!("head scores {}", a.heads.display()))?;
    let r = job.execute(&session, &mut |p| print_progress("ablation", p), &Cancel::new())?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    views::retrieval_ablation(&r, &session.name).write_all(&a.out, "retrieval_ablation")?;
    routelab_probes::atomic::write_atomic(&a.out.join("retrieval_ablation.json"), serde_json::to_string_pretty(&r)?.as_bytes())?;
    let (drop_r, drop_rand) = r.drops();
    println!("needle accuracy: baseline {:.0}%", 100.0 * r.baseline);
    println!("  top-{} retrieval heads masked: {:.0}% (drop of {drop_r:.0} points)", a.top, 100.0 * r.masked_retrieval);
    for (i, (_, acc)) in r.random_draws.iter().enumerate() {
        println!("  random draw {}: {:.0}%", i + 1, 100.0 * acc);
    }
    println!(
        "  {} random heads masked (mean of {}): {:.0}% (drop of {drop_rand:.0} points)",
        a.top,
        r.random_draws.len(),
        100.0 * r.random_mean()
    );
    println!("written to {}", a.out.display());
    Ok(())
}
