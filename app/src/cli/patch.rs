//! `routelab patch`: an activation-patching sweep (causal tracing) between a clean and a
//! corrupted prompt.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use routelab_model::capture::parse_layers;
use routelab_model::session::Prompt;
use routelab_probes::analysis::patching::{Metric, PatchSettings, SweepSite};
use routelab_probes::atomic::write_atomic;
use routelab_probes::export::views;
use routelab_probes::jobs::patch::PatchJob;
use routelab_probes::jobs::{Cancel, Job};

use super::args::{print_progress, ModelArgs};

#[derive(Args, Debug)]
pub struct PatchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt whose activations are copied in.
    #[arg(long)]
    pub clean: String,
    /// The prompt they are copied into; it must tokenize to as many tokens as --clean.
    #[arg(long)]
    pub corrupt: String,
    /// What each cell patches: resid, attn, mlp (per layer × position), head, expert (per
    /// layer × head or expert, at --positions together), shared, dense.
    #[arg(long, default_value = "resid")]
    pub site: String,
    /// logit-diff:ANSWER,OTHER, prob:ANSWER or kl, on the last position's next-token logits
    /// (tokens as text, leading space included: "logit-diff: Paris, Rome").
    #[arg(long, default_value = "kl")]
    pub metric: String,
    /// Layers swept: 3, 0-5 or 1+4 (default: every layer with the site).
    #[arg(long)]
    pub layers: Option<String>,
    /// Positions: 3, 0-5 or 1+4 (default: all).
    #[arg(long)]
    pub positions: Option<String>,
    /// Output directory (created): patching.csv/.png/.svg and patching.json.
    #[arg(long)]
    pub out: PathBuf,
}

/// `3`, `0-5`, `1+4+7` as positions (bounded: no list longer than a context).
fn parse_positions(s: &str) -> anyhow::Result<Vec<usize>> {
    const MAX: usize = 1 << 20;
    let mut out = vec![];
    for part in s.split('+') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let num = |x: &str| x.trim().parse::<usize>().with_context(|| format!("--positions {s:?}: {x:?} is not a position"));
        let (a, b) = (num(a)?, num(b)?);
        if b < a || b >= MAX {
            anyhow::bail!("--positions {s:?}: {part:?} is not a range of positions below {MAX}");
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

pub fn run(a: PatchArgs) -> anyhow::Result<()> {
    let settings = PatchSettings {
        site: SweepSite::parse(&a.site)?,
        metric: Metric::parse(&a.metric)?,
        layers: a.layers.as_deref().map(parse_layers).transpose().map_err(anyhow::Error::msg)?.map(|l| l.into_iter().collect()),
        positions: a.positions.as_deref().map(parse_positions).transpose()?,
    };
    let session = a.model.load()?;
    let job = PatchJob { clean: Prompt::text(&a.clean), corrupt: Prompt::text(&a.corrupt), settings };
    let r = job.execute(&session, &mut |p| print_progress("cells", p), &Cancel::new())?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    views::patching(&r, &session.name).write_all(&a.out, "patching")?;
    write_atomic(&a.out.join("patching.json"), serde_json::to_string_pretty(&r)?.as_bytes())?;
    println!("metric {}: clean {:.4}, corrupted {:.4}", r.metric.describe(), r.clean_metric, r.corrupt_metric);
    let mut cells: Vec<(usize, usize, f64)> = r
        .recovered
        .iter()
        .enumerate()
        .flat_map(|(i, row)| row.iter().enumerate().map(move |(j, &v)| (i, j, v)))
        .filter(|c| c.2.is_finite())
        .collect();
    cells.sort_by(|x, y| y.2.total_cmp(&x.2));
    println!("cells recovering most of the gap:");
    for (i, j, v) in cells.iter().take(10) {
        println!("  layer {:>3}  {:<28} recovered {:>7.3}  metric {:.4}", r.layers[*i], r.column_labels[*j], v, r.values[*i][*j]);
    }
    if r.incomplete {
        println!("(cancelled: the cells not run are empty)");
    }
    println!("wrote {}", a.out.join("patching.{csv,png,svg,json}").display());
    Ok(())
}
