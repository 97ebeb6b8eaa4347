//! `routelab bench`: prefill and decode speed with and without capture, measured side by side
//! (interleaved repeats, medians) so the ratios are not skewed by drift.
//!
//! Configurations: `plain` (nothing captured), `router` (router logits, experts, weights),
//! `full` (router + per-head attention statistics + contribution norms: what the workbench
//! records on every run), and with `--everything` also full attention probabilities and residual
//! streams of every layer. `--json` writes the figures for bench/gpu_bench.py, which prints them
//! beside transformers'.

use clap::Args;
use routelab_kernels::matmul;
use routelab_model::capture::CaptureSpec;
use routelab_model::interventions::Interventions;
use routelab_model::sampling::SamplingSettings;
use routelab_model::session::{RunRequest, Session};

use super::args::ModelArgs;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 128)]
    pub prompt_tokens: usize,
    /// Tokens to decode per run.
    #[arg(long, default_value_t = 32)]
    pub new_tokens: usize,
    /// Measured runs per configuration (after one warm-up each).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Also measure capturing everything (full attention probabilities, residual streams).
    #[arg(long)]
    pub everything: bool,
    /// Write the medians as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Skip measuring the CPU's memory read bandwidth (and the share of its limit decode
    /// reaches).
    #[arg(long)]
    pub no_bandwidth: bool,
}

const TEXT: &str = "The history of the city begins with a small settlement on the river, where traders \
met to exchange grain, salt and cloth. Over the centuries the market grew into a town, the town into a \
city, and the city into the capital of a province whose records fill a library of their own. ";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Prefill and decode tokens/s of one run.
fn measure(session: &Session, tokens: &[u32], new_tokens: usize, capture: &CaptureSpec) -> anyhow::Result<(f64, f64)> {
    let req = RunRequest {
        tokens: tokens.to_vec(),
        max_new_tokens: new_tokens,
        sampling: SamplingSettings::default(),
        capture: capture.clone(),
        interventions: Interventions::default(),
        stop_at_eos: false,
        replay: None,
    };
    let r = session.run(&req, &mut |_| true)?;
    Ok((r.prompt_len as f64 / r.prefill_seconds, r.generated().len() as f64 / r.decode_seconds))
}

pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let session = a.model.load()?;
    let load_seconds = started.elapsed().as_secs_f64();
    let resident_after_load = resident_bytes("VmRSS:");
    let mut tokens = vec![];
    while tokens.len() < a.prompt_tokens {
        tokens.extend(session.tokenizer.encode(TEXT, false)?);
    }
    tokens.truncate(a.prompt_tokens);
    let max = session.config().max_position_embeddings;
    anyhow::ensure!(a.prompt_tokens + a.new_tokens <= max, "prompt + new tokens exceed the context window ({max})");
    let router = CaptureSpec::items(&["router"]);
    let mut configs = vec![("plain", CaptureSpec::none()), ("router", router), ("full", CaptureSpec::default())];
    if a.everything {
        configs.push(("everything", CaptureSpec::all()));
    }
    for (_, c) in &configs {
        measure(&session, &tokens, 2, c)?; // warm-up
    }
    let mut results: Vec<(Vec<f64>, Vec<f64>)> = vec![(vec![], vec![]); configs.len()];
    for _ in 0..a.repeats.max(1) {
        for (i, (_, c)) in configs.iter().enumerate() {
            let (p, d) = measure(&session, &tokens, a.new_tokens, c)?;
            results[i].0.push(p);
            results[i].1.push(d);
        }
    }
    let med: Vec<(f64, f64)> = results.into_iter().map(|(p, d)| (median(p), median(d))).collect();
    println!(
        "{} on {} ({}): {} prompt tokens, {} decoded, median of {}",
        session.name,
        session.info().device,
        session.info().dtype,
        a.prompt_tokens,
        a.new_tokens,
        a.repeats.max(1)
    );
    println!("{:<22} {:>14} {:>14}", "", "prefill tok/s", "decode tok/s");
    for ((name, _), (p, d)) in configs.iter().zip(&med) {
        println!("{name:<22} {p:>14.1} {d:>14.1}");
    }
    let (pp, pd) = med[0];
    for ((name, _), (p, d)) in configs.iter().zip(&med).skip(1) {
        println!("{:<22} {:>14.3} {:>14.3}", format!("{name} / plain"), p / pp, d / pd);
    }
    let (fp, fd) = med[2];
    println!(
        "full capture (router, head statistics, contributions) costs {:.1}% of decode speed, {:.1}% of prefill speed",
        100.0 * (1.0 - fd / pd),
        100.0 * (1.0 - fp / pp)
    );
    // The peak before the bandwidth measurement, whose 1 GiB buffer is not the model's.
    let peak = resident_bytes("VmHWM:");
    let active = session.model.active_weight_bytes();
    // The bandwidth limit: decode reads every active weight once per token.
    let bandwidth = (session.model.device().is_cpu() && !a.no_bandwidth).then(|| matmul::read_bandwidth(1 << 30));
    if let Some(bw) = bandwidth {
        let limit = bw / active as f64;
        println!(
            "memory read bandwidth (matrix-vector product over 1 GiB, {} threads): {:.1} GB/s; {:.1} MB of weights per token: \
             limit {limit:.1} tok/s, plain decode reaches {:.0}%",
            matmul::threads(),
            bw / 1e9,
            active as f64 / 1e6,
            100.0 * pd / limit
        );
    }
    let gb = |b: Option<u64>| b.map_or("?".to_string(), |b| format!("{:.2} GB", b as f64 / 1e9));
    println!("load {load_seconds:.2} s; resident after load {}, peak {}", gb(resident_after_load), gb(peak));
    if let Some(path) = &a.json {
        let info = session.info();
        let rows: serde_json::Map<String, serde_json::Value> = configs
            .iter()
            .zip(&med)
            .map(|((name, _), (p, d))| (name.to_string(), serde_json::json!({"prefill_tok_s": p, "decode_tok_s": d})))
            .collect();
        let doc = serde_json::json!({
            "model": session.name, "device": info.device, "dtype": info.dtype,
            "parameters": info.parameters, "weight_bytes": info.weight_bytes,
            "active_weight_bytes": active, "read_bandwidth": bandwidth,
            "prompt_tokens": a.prompt_tokens, "new_tokens": a.new_tokens, "repeats": a.repeats.max(1),
            "load_seconds": load_seconds, "resident_after_load_bytes": resident_after_load,
            "peak_resident_bytes": peak, "configs": rows,
        });
        routelab_probes::atomic::write_atomic(path, (serde_json::to_string_pretty(&doc)? + "\n").as_bytes())?;
    }
    Ok(())
}

/// A `/proc/self/status` memory field (`VmRSS:`, `VmHWM:`) in bytes; `None` off Linux.
fn resident_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = status.lines().find_map(|l| l.strip_prefix(field))?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()?;
    Some(kb * 1024)
}
