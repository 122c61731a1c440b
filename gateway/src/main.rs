//! `ipay`: the IPAY Engine binary.

use clap::Parser;
use std::process::ExitCode;

// The request path allocates many small short-lived objects; mimalloc handles that pattern
// with far less contention than the system allocator (measured in docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process. mimalloc backs its segments with
/// huge pages where the kernel allows them, and a freed-then-reused segment is refaulted
/// 2 MiB at a time, zeroed by the kernel: on the create path that cost a third of the
/// throughput and tripled p99 (docs/performance.md, "Transparent huge pages").
/// `IPAY_ALLOW_THP=1` keeps them.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("IPAY_ALLOW_THP").is_none_or(|v| v != "1") {
        // SAFETY: PR_SET_THP_DISABLE takes plain integer arguments and only sets a flag of
        // this process's memory map; it reads and writes no memory of ours.
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if rc != 0 {
            eprintln!("ipay: could not turn transparent huge pages off; continuing with them");
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    disable_transparent_huge_pages();
    let cli = ipay_gateway::cli::Cli::parse();
    match ipay_gateway::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipay: {e}");
            ExitCode::FAILURE
        }
    }
}
