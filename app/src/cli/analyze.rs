//! `routelab analyze specialization | ablation | routing-fidelity | heads-experts`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use routelab_model::interventions::HeadMethod;
use routelab_model::session::Prompt;
use routelab_probes::analysis::fidelity::{routing_fidelity, FidelitySettings};
use routelab_probes::analysis::heads_experts::{ExpertEnrichment, HeadChoice};
use routelab_probes::analysis::retrieval::HeadScores;
use routelab_probes::export::csv::Table;
use routelab_probes::export::views;
use routelab_probes::jobs::ablation::{AblationJob, AblationSettings};
use routelab_probes::jobs::heads_experts::{HeadsExpertsJob, HeadsExpertsSettings};
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
    /// At the needle trials' decoding steps where chosen heads copy the answer (the retrieval
    /// scan's copy rule), which experts each MoE layer selects, against the other steps.
    HeadsExperts(HeadsExpertsArgs),
}

#[derive(Args, Debug)]
pub struct HeadsExpertsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The heads whose copies count, `L:H` comma-separated, or `all`. Without it (and without
    /// --scores): the heads above --threshold in a retrieval scan of the same trials.
    #[arg(long, value_delimiter = ',', conflicts_with = "scores")]
    pub heads: Vec<String>,
    /// Per-head retrieval scores from `routelab scan retrieval` (its CSV): the heads above
    /// --threshold count.
    #[arg(long)]
    pub scores: Option<PathBuf>,
    /// Retrieval-score threshold for heads taken from --scores or the scan.
    #[arg(long, default_value_t = HeadsExpertsSettings::default().threshold)]
    pub threshold: f64,
    /// generate (the model answers greedily) or teacher-forced (the answer in one prefill).
    #[arg(long, default_value = "generate")]
    pub mode: String,
    #[command(flatten)]
    pub needle: NeedleArgs,
    /// Output directory (created).
    #[arg(long)]
    pub out: PathBuf,
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
        AnalyzeCommand::HeadsExperts(a) => run_heads_experts(a),
    }
}

/// `--heads`: `all`, or `L:H` items within the model's layers and heads.
fn parse_heads(items: &[String], layers: usize, heads: usize) -> anyhow::Result<Vec<(usize, usize)>> {
    if items.len() == 1 && items[0] == "all" {
        return Ok((0..layers).flat_map(|l| (0..heads).map(move |h| (l, h))).collect());
    }
    items
        .iter()
        .map(|item| {
            let parsed = item.split_once(':').and_then(|(l, h)| Some((l.trim().parse().ok()?, h.trim().parse().ok()?)));
            match parsed {
                Some((l, h)) if l < layers && h < heads => Ok((l, h)),
                Some(_) => anyhow::bail!("--heads {item:?}: the model has {layers} layers × {heads} heads"),
                None => anyhow::bail!("--heads {item:?}: expected LAYER:HEAD (e.g. 3:5) or all"),
            }
        })
        .collect()
}

fn run_heads_experts(a: HeadsExpertsArgs) -> anyhow::Result<()> {
    let teacher_forced = match a.mode.as_str() {
        "generate" => false,
        "teacher-forced" | "teacher_forced" => true,
        other => anyhow::bail!("--mode {other:?}: expected generate or teacher-forced"),
    };
    let scores = match &a.scores {
        Some(p) => Some(HeadScores::from_table(&Table::read(p)?, p)?),
        None => None,
    };
    let session = a.model.load()?;
    let c = session.config();
    let heads = match scores {
        Some(s) => HeadChoice::Scores(s),
        None if a.heads.is_empty() => HeadChoice::Scan,
        None => HeadChoice::Heads(parse_heads(&a.heads, c.num_layers, c.attention.num_heads)?),
    };
    let scanned = matches!(heads, HeadChoice::Scan);
    let settings = HeadsExpertsSettings { needle: a.needle.settings(), teacher_forced, threshold: a.threshold };
    let job = HeadsExpertsJob { settings, heads };
    let run = job.execute(&session, &mut |p| print_progress("trials", p), &Cancel::new())?;
    let r = &run.report;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    views::heads_experts(r, &session.name).write_all(&a.out, "heads_experts")?;
    if scanned {
        views::head_scores(&run.scan.head_scores(), &session.name).write_all(&a.out, "head_scores")?;
    }
    routelab_probes::atomic::write_atomic(&a.out.join("heads_experts.json"), serde_json::to_string_pretty(&run)?.as_bytes())?;
    let source = match (&a.scores, scanned) {
        (Some(p), _) => format!(" above {} in {}", a.threshold, p.display()),
        (None, true) => format!(" above {} in a scan of these trials", a.threshold),
        (None, false) => String::new(),
    };
    let named = if r.heads.len() <= 8 {
        let list: Vec<String> = r.heads.iter().map(|(l, h)| format!("{l}:{h}")).collect();
        format!(" ({})", list.join(" "))
    } else {
        String::new()
    };
    let mode = if teacher_forced { "teacher-forced" } else { "generated" };
    println!(
        "{}: {} trials ({mode} answers), needle accuracy {:.0}%; {} head(s){named}{source}",
        session.name,
        r.trials,
        100.0 * run.scan.accuracy(),
        r.heads.len()
    );
    println!(
        "{} decoding steps: {} where a head copies ({} copy events), {} others",
        r.positions,
        r.copy_positions,
        r.copy_events,
        r.other_positions()
    );
    // Strongest evidence first: the (layer, expert) pairs by |z| (pooled two-proportion z).
    let mut rows: Vec<(usize, &ExpertEnrichment)> = r.layers.iter().flat_map(|l| l.experts.iter().map(move |e| (l.layer, e))).collect();
    rows.retain(|(_, e)| e.z.is_finite());
    rows.sort_by(|x, y| y.1.z.abs().total_cmp(&x.1.z.abs()).then((x.0, x.1.expert).cmp(&(y.0, y.1.expert))));
    if rows.is_empty() {
        println!("no expert to compare: {}", if r.copy_positions == 0 { "no head copied" } else { "every step is a copy step" });
    } else {
        println!("experts by |z| (share: of steps; z: pooled two-proportion z, p two-sided; log OR: +0.5 per cell, ± se):");
        println!(
            "{:>5} {:>6} {:>8} {:>9} {:>10} {:>10} {:>10} {:>7} {:>9} {:>14}",
            "layer", "expert", "at copy", "elsewhere", "share copy", "share else", "enrichment", "z", "p", "log OR"
        );
        for (layer, e) in rows.iter().take(12) {
            println!(
                "{layer:>5} {:>6} {:>8} {:>9} {:>10.3} {:>10.3} {:>10.2} {:>7.2} {:>9.2e} {:>6.2} ± {:>5.2}",
                e.expert, e.at_copy, e.elsewhere, e.share_copy, e.share_elsewhere, e.enrichment, e.z, e.p_value, e.log_odds, e.log_odds_se
            );
        }
        if rows.len() > 12 {
            println!("  ({} more with a defined z in heads_experts.csv)", rows.len() - 12);
        }
    }
    println!("written to {}", a.out.display());
    Ok(())
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
