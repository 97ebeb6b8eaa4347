//! `routelab`: see `routelab --help`.

use clap::Parser;

fn main() {
    let cli = routelab::cli::Cli::parse();
    if let Err(e) = routelab::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
