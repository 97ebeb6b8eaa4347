//! `routelab info`: what a model is, or which quants a GGUF repo on the hub offers.

use clap::Args;
use routelab_model::hub::{Hub, Origin, QuantListing};
use routelab_model::source::ModelSource;

use super::args::ModelArgs;
use crate::units;

#[derive(Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Reads headers and config only (no weights), so a 100 GB checkpoint answers in seconds. A
/// bare repo id of a GGUF repo lists its quants instead (nothing is downloaded).
pub fn run(a: InfoArgs) -> anyhow::Result<()> {
    if let ModelSource::HfRepo { repo, revision } = ModelSource::parse(&a.model.model)? {
        let listing = Hub::from_env().quants(&repo, revision.as_deref())?;
        if listing.is_gguf() {
            return print_quants(&listing, a.json);
        }
    }
    let (info, chat) = a.model.inspect()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    println!("model        {}", info.name);
    println!("architecture {}", info.summary);
    println!("parameters   {:.1} M ({:.1} MB in memory as {})", info.parameters as f64 / 1e6, info.weight_bytes as f64 / 1e6, info.dtype);
    println!("storage      {}", info.storage);
    println!("context      {} positions", info.context);
    if info.moe_layers > 0 {
        println!(
            "experts      {} MoE layers × {} routed (top-{}), {} shared{}",
            info.moe_layers,
            info.experts,
            info.top_k,
            info.shared_experts,
            if info.dense_residual { ", dense residual MLP in parallel" } else { "" }
        );
    }
    println!("chat         {}", if chat { "template available" } else { "no chat template" });
    Ok(())
}

fn print_quants(l: &QuantListing, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(l)?);
        return Ok(());
    }
    println!("repo         {} (GGUF)", l.repo_id());
    match &l.origin {
        Origin::Hub => println!("quants       {} on the hub", l.quants.len()),
        Origin::Cache { why } => println!("quants       {} in the local cache (the hub's list is unknown: {why})", l.quants.len()),
    }
    let rows: Vec<[String; 3]> = l.quants.iter().map(|q| [q.name.clone(), units::quant_size(q), units::quant_files(q)]).collect();
    let width = |c: usize| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0);
    let (w0, w1) = (width(0), width(1));
    for [name, size, files] in &rows {
        println!("  {name:w0$}  {size:>w1$}  {files}");
    }
    println!("load one as  --model {}", l.spec(&l.quants[0].name));
    Ok(())
}
