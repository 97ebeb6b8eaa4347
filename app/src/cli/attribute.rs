//! `routelab attribute`: direct logit attribution over heads and experts, the logit lens, and
//! what each selected expert promotes.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use routelab_model::session::Prompt;
use routelab_probes::analysis::attribution::AttributionSettings;
use routelab_probes::atomic::write_atomic;
use routelab_probes::export::csv::{num, Table};
use routelab_probes::export::views;
use routelab_probes::jobs::attribute::AttributeJob;
use routelab_probes::jobs::{Cancel, Job};

use super::args::ModelArgs;

#[derive(Args, Debug)]
pub struct AttributeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, short)]
    pub prompt: String,
    /// Position attributed (default: the last).
    #[arg(long)]
    pub position: Option<usize>,
    /// Token attributed, as text with its leading space (default: the model's prediction).
    #[arg(long)]
    pub target: Option<String>,
    /// Components in the plot; tokens per lens row and per expert.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Output directory (created): attribution, logit_lens (.csv/.png/.svg), experts.csv,
    /// attribution.json.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: AttributeArgs) -> anyhow::Result<()> {
    let session = a.model.load()?;
    let settings = AttributionSettings { position: a.position, target: a.target.clone(), top: a.top.min(10) };
    let job = AttributeJob { prompt: Prompt::text(&a.prompt), settings };
    let r = job.execute(&session, &mut |_| {}, &Cancel::new())?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    views::attribution(&r, &session.name, a.top).write_all(&a.out, "attribution")?;
    views::logit_lens(&r, &session.name).write_all(&a.out, "logit_lens")?;
    let mut experts = Table::new(&["layer", "expert", "weight", "rank", "token", "logit_contribution"]);
    for p in &r.promotions {
        for (i, (tok, v)) in p.top.iter().enumerate() {
            experts.push(vec![p.layer.to_string(), p.expert.to_string(), num(p.weight as f64), i.to_string(), tok.clone(), num(*v as f64)]);
        }
    }
    experts.write(&a.out.join("experts.csv"))?;
    write_atomic(&a.out.join("attribution.json"), serde_json::to_string_pretty(&r)?.as_bytes())?;

    println!("target {:?} (id {}) at position {}: logit {:.4}", r.target_text, r.target, r.position, r.logit);
    println!("norm linearised: {}", r.norm);
    let sum: f32 = r.components.iter().map(|c| c.value).sum();
    println!("sum of {} contributions {:.4} (float rounding {:.2e})", r.components.len(), sum, r.residual);
    let mut ranked: Vec<_> = r.components.iter().collect();
    ranked.sort_by(|x, y| y.value.abs().total_cmp(&x.value.abs()));
    println!("largest contributions:");
    for c in ranked.iter().take(a.top) {
        println!("  {:<32} {:>+9.4}", c.label, c.value);
    }
    println!("logit lens at position {} (target rank and probability; top tokens):", r.position);
    for row in &r.lens {
        let top: Vec<String> = row.top.iter().map(|(t, p)| format!("{t:?} {p:.3}")).collect();
        println!("  layer {:>3}: rank {:>6}  p {:.4}   {}", row.layer, row.target_rank, row.target_prob, top.join(", "));
    }
    if !r.promotions.is_empty() {
        println!("what the selected experts promote:");
        for p in &r.promotions {
            let top: Vec<String> = p.top.iter().take(5).map(|(t, v)| format!("{t:?} {v:+.3}")).collect();
            println!("  layer {:>3} expert {:>3} (weight {:.3}): {}", p.layer, p.expert, p.weight, top.join(", "));
        }
    }
    println!("wrote {}", a.out.display());
    Ok(())
}
