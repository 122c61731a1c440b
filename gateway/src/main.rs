//! `ipay`: the IPAY Engine binary.

use clap::Parser;
use std::process::ExitCode;

// The request path allocates many small short-lived objects; mimalloc handles that pattern
// with far less contention than the system allocator (measured in docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = ipay_gateway::cli::Cli::parse();
    match ipay_gateway::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipay: {e}");
            ExitCode::FAILURE
        }
    }
}
