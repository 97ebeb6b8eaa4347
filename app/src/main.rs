//! `routelab`: see `routelab --help`.
// Data from outside the process (model files, notebooks, traces, specs, the network) is never
// unwrapped: a failure is an error naming the file. Tests may (clippy.toml); the few internal
// invariants that expect carry an `allow` with the reason.
#![deny(clippy::unwrap_used, clippy::expect_used)]

use clap::Parser;

fn main() {
    // candle's element-wise ops have their own thread pool, whose idle workers spin for about a
    // millisecond before sleeping: that takes a core from the matmul pool after every large
    // element-wise op. Set before any other thread exists (set_var is not thread-safe).
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "200");
    }
    let cli = routelab::cli::Cli::parse();
    if let Err(e) = routelab::cli::run(cli) {
        eprintln!("error: {e:#}");
        let next = e.chain().find_map(|c| {
            c.downcast_ref::<routelab_probes::ProbeError>()
                .and_then(|p| p.next_step())
                .or_else(|| c.downcast_ref::<routelab_model::ModelError>().and_then(|m| m.next_step()))
        });
        if let Some(next) = next {
            eprintln!("hint: {next}");
        }
        std::process::exit(1);
    }
}
