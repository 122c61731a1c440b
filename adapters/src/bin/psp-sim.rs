//! `psp-sim`: the PSP simulator as a process. Serves every channel's API and the `/_sim/`
//! control API on one port until Ctrl-C; see `docs/psp-simulator.md`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ipay_adapters::sim::{SimOptions, Simulator, keys};

/// PSP simulator for IPAY: Alipay, WeChat Pay v3, Stripe, MultiSafepay and a PromptPay bank.
#[derive(Debug, Parser)]
#[command(name = "psp-sim", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, env = "PSP_SIM_BIND", default_value = "127.0.0.1:7911")]
    bind: SocketAddr,
    /// Seconds allowed to deliver one callback.
    #[arg(long, default_value_t = 10)]
    callback_timeout_secs: u64,
    /// Also serve the marketplace simulator (bol.com, AliExpress, Temu) on this address.
    #[arg(long, env = "PSP_SIM_MARKETPLACES_BIND")]
    marketplaces_bind: Option<SocketAddr>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve (the default).
    Serve,
    /// Print the simulated merchant's credential JSON for a channel and exit.
    Credentials {
        /// alipay, wechat, promptpay, stripe or multisafepay.
        channel: String,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Credentials { channel } => match keys::credentials(&channel) {
            Some(v) => {
                println!("{v:#}");
                std::process::ExitCode::SUCCESS
            }
            None => {
                eprintln!(
                    "psp-sim: unknown channel `{channel}` (expected alipay, wechat, promptpay, stripe or multisafepay)"
                );
                std::process::ExitCode::from(2)
            }
        },
        Command::Serve => {
            let opts = SimOptions {
                bind: cli.bind,
                callback_timeout: Duration::from_secs(cli.callback_timeout_secs.max(1)),
            };
            let sim = match Simulator::start(opts).await {
                Ok(sim) => sim,
                Err(e) => {
                    eprintln!("psp-sim: cannot listen on {}: {e}", cli.bind);
                    return std::process::ExitCode::from(1);
                }
            };
            println!("psp-sim listening on {}", sim.base_url());
            for (channel, url) in sim.channels_config().endpoints {
                println!("  {channel:<13} {url}");
            }
            println!("  control       {}/_sim/", sim.base_url());
            let market = match cli.marketplaces_bind {
                Some(bind) => match ipay_adapters::marketsim::MarketSim::start(bind).await {
                    Ok(m) => {
                        println!(
                            "  marketplaces  http://{} (see docs/integrations.md)",
                            m.addr()
                        );
                        Some(m)
                    }
                    Err(e) => {
                        eprintln!("psp-sim: cannot listen on {bind} for the marketplaces: {e}");
                        return std::process::ExitCode::from(1);
                    }
                },
                None => None,
            };
            let _ = tokio::signal::ctrl_c().await;
            if let Some(m) = market {
                m.stop();
            }
            sim.stop().await;
            std::process::ExitCode::SUCCESS
        }
    }
}
