//! `routelab info`: what a model is.

use clap::Args;

use super::args::ModelArgs;

#[derive(Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Reads headers and config only (no weights), so a 100 GB checkpoint answers in seconds.
pub fn run(a: InfoArgs) -> anyhow::Result<()> {
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
