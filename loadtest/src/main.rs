//! Entry point of the `ipay-loadtest` binary: parses the command line and
//! maps the outcome to an exit status.

use std::process::ExitCode;

use clap::Parser;
use ipay_loadtest::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipay-loadtest: error: {e}");
            ExitCode::FAILURE
        }
    }
}
