//! The command line: argument definitions (clap derive) and the code that
//! turns a parsed command into a run, a report on stdout and an exit status.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, value_parser};

use crate::ceiling;
use crate::driver::{self, MAX_RATE, Plan, Scenario};
use crate::duration::parse_duration;
use crate::error::{Error, Result};
use crate::report::Report;
use crate::scenarios::{CreateIntents, CreateIntentsConfig, GetPath};
use crate::target::Target;

/// Above this many requests/s per connection the tokio timer's 1 ms
/// resolution starts to shape the open-loop schedule.
const TIMER_FRIENDLY_RATE_PER_CONNECTION: u64 = 1000;

/// Open-loop HTTP/1.1 load generator for IPAY Engine (loopback targets only).
#[derive(Debug, Parser)]
#[command(name = "ipay-loadtest", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a trivial `POST /v1/payment-intents` as a throughput ceiling.
    CeilingServer(CeilingArgs),
    /// Load `POST /v1/payment-intents`.
    CreateIntents(CreateIntentsArgs),
    /// Load `GET` of one path.
    Get(GetArgs),
}

/// Arguments of `ceiling-server`.
#[derive(Debug, Args)]
pub struct CeilingArgs {
    /// Loopback address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
}

/// Arguments shared by every load scenario.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Base URL of the server, e.g. http://127.0.0.1:8080 (loopback only).
    #[arg(long)]
    pub target: String,
    /// Total requests per second (open loop); 0 = closed loop, as fast as
    /// each connection's answers allow.
    #[arg(long, default_value_t = 0, value_parser = value_parser!(u64).range(0..=MAX_RATE))]
    pub rate: u64,
    /// Number of persistent keep-alive connections.
    #[arg(long, default_value_t = 64, value_parser = value_parser!(u16).range(1..=driver::MAX_CONNECTIONS as i64))]
    pub connections: u16,
    /// Measured phase, e.g. 10s, 500ms, 1m (at most 1h).
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration)]
    pub duration: Duration,
    /// Phase before the measured one whose results are discarded.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Limit for connecting and for each request/response exchange.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration)]
    pub timeout: Duration,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file (e.g. for scripts that print
    /// the text report and compare numbers).
    #[arg(long, value_name = "PATH")]
    pub json_out: Option<PathBuf>,
}

/// Arguments of `create-intents`.
#[derive(Debug, Args)]
pub struct CreateIntentsArgs {
    /// Run settings.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Secret API key (sk_test_… or sk_live_…).
    #[arg(long)]
    pub key: String,
    /// Service the intents are created for (svc_…).
    #[arg(long)]
    pub service_id: String,
    /// Currency of the amounts.
    #[arg(long, default_value = "EUR")]
    pub currency: String,
    /// Payment channel.
    #[arg(long, default_value = "sandbox")]
    pub channel: String,
    /// Send a unique Idempotency-Key with every request.
    #[arg(long)]
    pub idempotency: bool,
}

/// Arguments of `get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Run settings.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Path to fetch.
    #[arg(long, default_value = "/healthz")]
    pub path: String,
}

fn parse_positive_duration(input: &str) -> std::result::Result<Duration, String> {
    let value = parse_duration(input)?;
    if value.is_zero() {
        return Err("must be longer than 0".to_string());
    }
    Ok(value)
}

impl LoadArgs {
    /// The run plan these arguments describe.
    pub fn plan(&self) -> Result<Plan> {
        let plan = Plan {
            target: Target::parse(&self.target)?,
            connections: usize::from(self.connections),
            rate: self.rate,
            warmup: self.warmup,
            duration: self.duration,
            request_timeout: self.timeout,
        };
        plan.validate()?;
        Ok(plan)
    }
}

/// Runs the `create-intents` scenario and returns its report.
pub async fn create_intents(args: &CreateIntentsArgs) -> Result<Report> {
    let plan = args.load.plan()?;
    let scenario = CreateIntents::new(
        &plan.target,
        &CreateIntentsConfig {
            key: args.key.clone(),
            service_id: args.service_id.clone(),
            currency: args.currency.clone(),
            channel: args.channel.clone(),
            idempotency: args.idempotency,
        },
    )?;
    run_scenario("create-intents", plan, Arc::new(scenario)).await
}

/// Runs the `get` scenario and returns its report.
pub async fn get(args: &GetArgs) -> Result<Report> {
    let plan = args.load.plan()?;
    let scenario = GetPath::new(&plan.target, &args.path)?;
    run_scenario("get", plan, Arc::new(scenario)).await
}

async fn run_scenario(name: &str, plan: Plan, scenario: Arc<dyn Scenario>) -> Result<Report> {
    if plan.rate / plan.connections as u64 > TIMER_FRIENDLY_RATE_PER_CONNECTION {
        eprintln!(
            "note: more than {TIMER_FRIENDLY_RATE_PER_CONNECTION} req/s per connection; \
             the 1 ms timer resolution may add latency — consider more --connections"
        );
    }
    let outcome = driver::run(plan.clone(), scenario).await?;
    Ok(Report::new(name, &plan, &outcome))
}

/// Executes a parsed command. Load runs print their report and fail only
/// when no request succeeded.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::CeilingServer(args) => serve_ceiling(&args).await,
        Command::CreateIntents(args) => finish(create_intents(&args).await?, &args.load),
        Command::Get(args) => finish(get(&args).await?, &args.load),
    }
}

async fn serve_ceiling(args: &CeilingArgs) -> Result<()> {
    let listener = ceiling::bind(args.listen).await?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::new(format!("cannot read the bound address: {e}")))?;
    print_stdout(&format!("ceiling listening on http://{addr}\n"))?;
    ceiling::serve(listener, ceiling::shutdown_signal()).await
}

fn finish(report: Report, args: &LoadArgs) -> Result<()> {
    if let Some(path) = &args.json_out {
        write_file(path, &format!("{}\n", report.to_json()))?;
    }
    if args.json {
        print_stdout(&format!("{}\n", report.to_json()))?;
    } else {
        print_stdout(&report.to_string())?;
    }
    if report.ok == 0 {
        return Err(Error::new(format!(
            "no request succeeded ({} requests, {} transport errors, statuses {:?})",
            report.requests, report.errors, report.status_counts
        )));
    }
    Ok(())
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text)
        .map_err(|e| Error::new(format!("cannot write {}: {e}", path.display())))
}

fn print_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::new(format!("cannot write to stdout: {e}")))
}
