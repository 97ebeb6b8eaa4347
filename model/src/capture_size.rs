//! What a run's capture will take, checked before the run starts: full attention
//! probabilities grow with the square of the positions (`[H, T, T]` per layer), so a long
//! prompt with `probs` would otherwise fill the memory and be killed half-way, losing the run.

use crate::capture::CapturePlan;
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::hooks::Quantity;
use crate::memory::{available, env_bytes};

/// Overrides the largest capture a run may make (bytes, or K/M/G/T), e.g. `8G`.
pub const LIMIT_ENV: &str = "ROUTELAB_TRACE_LIMIT";

/// Bytes the trace file of a run over `positions` positions holds, per captured quantity
/// (`logits` under its own name), largest first. The store in memory holds about as much
/// (probabilities without their upper triangle), and writing the file needs its bytes once more.
pub fn estimate(plan: &CapturePlan, config: &ModelConfig, positions: usize) -> Vec<(&'static str, u64)> {
    let t = positions as u64;
    let mut by_name: Vec<(&'static str, u64)> = vec![];
    let mut add = |name: &'static str, values_per_position: u64| {
        let bytes = values_per_position.saturating_mul(t).saturating_mul(4);
        match by_name.iter_mut().find(|(n, _)| *n == name) {
            Some((_, b)) => *b = b.saturating_add(bytes),
            None => by_name.push((name, bytes)),
        }
    };
    if plan.logits {
        add("logits", config.vocab_size as u64);
    }
    let heads = config.attention.num_heads as u64;
    for l in 0..config.num_layers {
        let lp = plan.layer(l);
        let moe = config.moe(l);
        for info in crate::hooks::QUANTITIES {
            if !lp.wants(info.quantity) {
                continue;
            }
            let width = match info.quantity {
                Quantity::RouterLogits => moe.map_or(0, |m| m.routing.num_experts as u64),
                Quantity::RouterExperts | Quantity::RouterWeights => moe.map_or(0, |m| m.routing.top_k as u64),
                Quantity::RouterMargin | Quantity::RoutedNorm => moe.map_or(0, |_| 1),
                Quantity::SharedNorm => moe.and_then(|m| m.shared.as_ref()).map_or(0, |_| 1),
                Quantity::DenseNorm => moe.and_then(|m| m.dense_residual.as_ref()).map_or(0, |_| 1),
                Quantity::AttnEntropy | Quantity::AttnArgmax | Quantity::AttnSink | Quantity::AttnSpan => heads,
                Quantity::AttnProbs => heads.saturating_mul(t),
                Quantity::Hidden | Quantity::AttnOut | Quantity::MlpOut => config.hidden_size as u64,
                Quantity::AttnZ => heads.saturating_mul(config.attention.v_head_dim() as u64),
                Quantity::ExpertOut => moe.map_or(0, |m| (m.routing.top_k * config.hidden_size) as u64),
                Quantity::SharedOut => moe.and_then(|m| m.shared.as_ref()).map_or(0, |_| config.hidden_size as u64),
                Quantity::DenseOut => moe.and_then(|m| m.dense_residual.as_ref()).map_or(0, |_| config.hidden_size as u64),
            };
            add(info.name, width);
        }
    }
    by_name.retain(|(_, b)| *b > 0);
    by_name.sort_by_key(|b| std::cmp::Reverse(b.1));
    by_name
}

/// The largest capture allowed now: [`LIMIT_ENV`] if set, else a third of the memory
/// available (the store, the file's bytes as it is written, and what the GUI holds). `None`
/// where the memory cannot be told.
pub fn limit() -> Result<Option<(u64, String)>> {
    if let Some(bytes) = env_bytes(LIMIT_ENV)? {
        return Ok(Some((bytes, format!("the {LIMIT_ENV} limit"))));
    }
    Ok(available(&candle_core::Device::Cpu)?.map(|a| (a.bytes / 3, format!("a third of the {}", a.source))))
}

/// Refuses a run whose capture would pass the limit, saying what takes the room and what to do.
pub fn check(plan: &CapturePlan, config: &ModelConfig, positions: usize) -> Result<()> {
    check_within(plan, config, positions, limit()?)
}

/// [`check`] against a given limit and its source (`None`: no limit).
pub fn check_within(plan: &CapturePlan, config: &ModelConfig, positions: usize, limit: Option<(u64, String)>) -> Result<()> {
    let parts = estimate(plan, config, positions);
    let total = parts.iter().fold(0u64, |a, (_, b)| a.saturating_add(*b));
    let Some((limit, source)) = limit else { return Ok(()) };
    if total <= limit {
        return Ok(());
    }
    let largest: Vec<String> = parts.iter().take(3).map(|(n, b)| format!("{n} {}", gib(*b))).collect();
    Err(ModelError::Invalid(format!(
        "the capture of {positions} positions would take {} ({}), beyond {} ({source}); capture attention probabilities \
         or hidden states for fewer layers (probs:0-3, hidden:10), shorten the prompt or max_new_tokens, or raise {LIMIT_ENV}",
        gib(total),
        largest.join(", "),
        gib(limit),
    )))
}

fn gib(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}
