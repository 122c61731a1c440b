//! `ipay`: the IPAY Engine binary.

use clap::Parser;
use std::process::ExitCode;

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
