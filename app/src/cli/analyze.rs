//! `routelab analyze specialization | ablation | routing-fidelity`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use routelab_model::interventions::HeadMethod;
use routelab_model::session::Prompt;
use routelab_probes::analysis::fidelity::{routing_fidelity, FidelitySettings};
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
    /// The same prompts in two settings (dtype, device, a GGUF quant against the checkpoint):
    /// per MoE layer, how often the second selects other experts, by the first's routing
    /// margin, and where the two texts part.
    RoutingFidelity(FidelityArgs),
}

#[derive(Args, Debug)]
pub struct FidelityArgs {
    /// The first setting (the reference).
    #[command(flatten)]
    pub model: ModelArgs,
    /// The second setting's model (default: the same as --model), e.g. a GGUF quant of it.
    #[arg(long)]
    pub against_model: Option<String>,
    /// The second setting's device (default: --device).
    #[arg(long)]
    pub against_device: Option<String>,
    /// The second setting's weight dtype, f32 or bf16 (default: --dtype).
    #[arg(long, value_name = "f32|bf16")]
    pub against_dtype: Option<String>,
    /// A prompt (repeat for several).
    #[arg(long, short)]
    pub prompt: Vec<String>,
    /// A file of prompts, one per line (blank lines skipped).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Tokens each setting generates greedily after each prompt.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Output directory (created).
    #[arg(long)]
    pub out: PathBuf,
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
        AnalyzeCommand::RoutingFidelity(a) => run_fidelity(a),
    }
}

fn run_fidelity(a: FidelityArgs) -> anyhow::Result<()> {
    let mut prompts: Vec<Prompt> = a.prompt.iter().map(|p| Prompt::text(p)).collect();
    if let Some(file) = &a.prompts {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading prompts from {}", file.display()))?;
        prompts.extend(text.lines().filter(|l| !l.trim().is_empty()).map(Prompt::text));
    }
    if prompts.is_empty() {
        anyhow::bail!("no prompts: give --prompt (repeatable) or --prompts FILE");
    }
    let b_args = ModelArgs {
        model: a.against_model.clone().unwrap_or_else(|| a.model.model.clone()),
        device: a.against_device.clone().unwrap_or_else(|| a.model.device.clone()),
        dtype: a.against_dtype.clone().or_else(|| a.model.dtype.clone()),
    };
    // Each setting by what differs: device and weight dtype, and the model when it is another.
    let same_model = b_args.model == a.model.model;
    let describe = |m: &ModelArgs| -> anyhow::Result<String> {
        let dtype = routelab_model::session::LoadOptions::parse(&m.device, m.dtype.as_deref())?.dtype;
        let setting = format!("{} {}", m.device, format!("{dtype:?}").to_lowercase());
        Ok(if same_model { setting } else { format!("{} {setting}", m.model) })
    };
    let (name_a, name_b) = (describe(&a.model)?, describe(&b_args)?);
    let (sa, sb) = (a.model.load()?, b_args.load()?);
    let settings = FidelitySettings { prompts, max_new_tokens: a.max_new_tokens };
    let r = routing_fidelity(&sa, &sb, (&name_a, &name_b), &settings, &mut |p| print_progress("prompts", p), &Cancel::new())?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    views::routing_fidelity(&r).write_all(&a.out, "routing_fidelity")?;
    let mut t = Table::new(&["prompt", "prompt_tokens", "positions", "texts_part_at", "a_text", "b_text"]);
    for p in &r.prompts {
        let part = p.texts_part_at.map(|x| x.to_string()).unwrap_or_default();
        t.push(vec![p.prompt.clone(), p.prompt_tokens.to_string(), p.positions.to_string(), part, p.a_text.clone(), p.b_text.clone()]);
    }
    t.write(&a.out.join("prompts.csv"))?;
    routelab_probes::atomic::write_atomic(&a.out.join("report.json"), serde_json::to_string_pretty(&r)?.as_bytes())?;
    println!("{}: routing in {name_b} against {name_a}, teacher-forced on the first's tokens:", sa.name);
    let header: Vec<String> = r.layers.first().map(|l| l.bins.iter().map(|b| format!("<{}", b.to)).collect()).unwrap_or_default();
    println!("{:>5} {:>9}  flip rate by margin {}", "layer", "flips", header.join(" "));
    for l in &r.layers {
        let by: Vec<String> = l
            .bins
            .iter()
            .map(|b| if b.positions == 0 { "-".into() } else { format!("{:.3} ({})", b.flips as f64 / b.positions as f64, b.positions) })
            .collect();
        println!("{:>5} {:>9.4}  {}", l.layer, l.flip_rate(), by.join("  "));
    }
    for p in &r.prompts {
        match p.texts_part_at {
            Some(at) => println!("texts part at position {at} of {} (prompt {} tokens): {:?}", p.positions, p.prompt_tokens, p.prompt),
            None => println!("texts identical over {} positions: {:?}", p.positions, p.prompt),
        }
    }
    println!("written to {}", a.out.display());
    Ok(())
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
