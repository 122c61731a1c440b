//! The command line: argument definitions (clap derive) and the code that
//! turns a parsed command into a run, a report on stdout and an exit status.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, value_parser};

use crate::callbacks::{Precreate, STRIPE_CALLBACK_PATH, StripeCallbacks, precreate};
use crate::ceiling;
use crate::driver::{self, MAX_RATE, Plan, Scenario};
use crate::duration::parse_duration;
use crate::error::{Error, Result};
use crate::replay::lifecycle::CsvBatching;
use crate::replay::mix::{Outcome, Source, Weighted, parse_weights};
use crate::replay::schedule::{DEFAULT_CURVE, Shape};
use crate::replay::setup::{Provisioning, Setup, SetupSource};
use crate::replay::{self as replay_mod, ReplayConfig, ReplayReport};
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
    /// Pre-create intents, then post one verified PSP callback per intent (applied = 2xx).
    Callbacks(CallbacksArgs),
    /// Replay a China→EU parcel day: full lifecycles, from order to delivery.
    Replay(Box<ReplayArgs>),
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

/// Channels whose callbacks the `callbacks` scenario can sign.
const CALLBACK_CHANNELS: [&str; 1] = ["stripe"];

/// Arguments of `callbacks`.
#[derive(Debug, Args)]
pub struct CallbacksArgs {
    /// Run settings.
    #[command(flatten)]
    pub load: LoadArgs,
    /// The channel whose signed callbacks are sent.
    #[arg(long, default_value = "stripe", value_parser = CALLBACK_CHANNELS)]
    pub channel: String,
    /// Secret API key of the merchant whose intents are paid (sk_test_… for the simulator).
    #[arg(long)]
    pub key: String,
    /// An active service accepting the channel (svc_…).
    #[arg(long)]
    pub service_id: String,
    /// Currency of the intents.
    #[arg(long, default_value = "EUR")]
    pub currency: String,
    /// The endpoint secret the merchant's Stripe channel is configured with (whsec_…).
    #[arg(long)]
    pub webhook_secret: String,
    /// Intents to pre-create; each is paid once, so this must cover warmup plus the run.
    #[arg(long, default_value_t = 100_000)]
    pub intents: usize,
    /// Concurrent create requests while pre-creating.
    #[arg(long, default_value_t = 32)]
    pub setup_concurrency: usize,
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

/// Runs the `callbacks` scenario: pre-creates the intents (not measured), then loads the
/// callback route. Fails when the run outlasted the intents, since repeats are not applied.
pub async fn callbacks(args: &CallbacksArgs) -> Result<Report> {
    let plan = args.load.plan()?;
    let setup = Precreate {
        key: args.key.clone(),
        service_id: args.service_id.clone(),
        currency: args.currency.clone(),
        count: args.intents,
        concurrency: args.setup_concurrency,
        timeout: args.load.timeout,
    };
    let started = std::time::Instant::now();
    let intents = precreate(&plan.target, &setup).await?;
    eprintln!(
        "pre-created {} {} intents in {:.1} s",
        intents.len(),
        args.channel,
        started.elapsed().as_secs_f64()
    );
    let scenario = Arc::new(StripeCallbacks::new(
        &plan.target,
        STRIPE_CALLBACK_PATH,
        &args.webhook_secret,
        intents,
    )?);
    let report = run_scenario("callbacks", plan, scenario.clone()).await?;
    if scenario.repeats() > 0 {
        return Err(Error::new(format!(
            "the run needed more than the {} pre-created intents ({} callbacks repeated an \
             earlier one); raise --intents",
            args.intents,
            scenario.repeats()
        )));
    }
    eprintln!("callbacks sent for {} intents", scenario.sent());
    Ok(report)
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
        Command::Callbacks(args) => finish(callbacks(&args).await?, &args.load),
        Command::Replay(args) => finish_replay(replay(&args).await?, &args),
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

/// Arguments of `replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Base URL of the engine, e.g. http://127.0.0.1:8080 (loopback only); for a cluster the
    /// nodes' URLs separated by commas (requests are spread over them round-robin).
    #[arg(long)]
    pub target: String,
    /// Base URL of the PSP simulator (`psp-sim`), e.g. http://127.0.0.1:7911.
    #[arg(long)]
    pub sim: String,
    /// Setup file: `{"merchants":[{"merchant_id","token","secret_key"}],"drivers":[jwt,…]}`.
    #[arg(long, value_name = "PATH", required_unless_present = "provision")]
    pub setup: Option<PathBuf>,
    /// Instead of a setup file, create MERCHANTS merchant users and DRIVERS drivers over HTTP
    /// first (needs --admin-token for the drivers), e.g. `8,16`.
    #[arg(
        long,
        value_name = "MERCHANTS,DRIVERS",
        conflicts_with = "setup",
        requires = "admin_token"
    )]
    pub provision: Option<String>,
    /// The engine's admin token (`admin.token`), for --provision.
    #[arg(long, value_name = "TOKEN")]
    pub admin_token: Option<String>,
    /// With --provision: save the created accounts as a setup file here.
    #[arg(long, value_name = "PATH", requires = "provision")]
    pub setup_out: Option<PathBuf>,
    /// Parcels in an average replayed day (the 2024 EU figure is about 12,600,000).
    #[arg(long, default_value_t = 12_600_000)]
    pub parcels_per_day: u64,
    /// Wall-clock time one replayed day is compressed into (e.g. 60m, 10m, 24h).
    #[arg(long, default_value = "60m", value_parser = parse_day_duration)]
    pub compress: Duration,
    /// Multiplier of the day's volume (peak days are 1.5 to 3.5 × the average).
    #[arg(long, default_value_t = 1.0)]
    pub peak_factor: f64,
    /// Hour of the replayed day to start at (0-23).
    #[arg(long, default_value_t = 0)]
    pub start_hour: u32,
    /// Wall-clock length of the run; default: the whole compressed day.
    #[arg(long, value_parser = parse_day_duration)]
    pub duration: Option<Duration>,
    /// Relative arrivals per hour of the day, 24 comma-separated weights.
    #[arg(long)]
    pub curve: Option<String>,
    /// Order sources and weights (api, shopify, woocommerce, csv).
    #[arg(long, default_value = "api=55,shopify=15,woocommerce=10,csv=20")]
    pub sources: String,
    /// Payment channels and weights (each must be in the engine's `lastmile.sessions.channels`).
    #[arg(long, default_value = "stripe=50,multisafepay=50")]
    pub channels: String,
    /// Lifecycle outcomes and weights (paid, expired, failed, refused).
    #[arg(long, default_value = "paid=85,expired=5,failed=5,refused=5")]
    pub outcomes: String,
    /// Lifecycles in flight at most; later arrivals are counted as not sent.
    #[arg(long, default_value_t = 50_000)]
    pub max_in_flight: usize,
    /// Limit of one HTTP exchange.
    #[arg(long, default_value = "30s", value_parser = parse_positive_duration)]
    pub timeout: Duration,
    /// How long to wait after the last lifecycle for outstanding webhooks.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Rows per bulk CSV upload at most.
    #[arg(long, default_value_t = 200, value_parser = value_parser!(u16).range(1..=5000))]
    pub csv_batch_rows: u16,
    /// Longest a CSV row waits for its upload.
    #[arg(long, default_value = "1s", value_parser = parse_positive_duration)]
    pub csv_batch_wait: Duration,
    /// Skip reading every order back at the end.
    #[arg(long)]
    pub no_verify_states: bool,
    /// Directory to write the SVG/PNG plots into.
    #[arg(long, value_name = "DIR")]
    pub plots: Option<PathBuf>,
    /// File name prefix of the plots.
    #[arg(long, default_value = "replay")]
    pub plots_prefix: String,
    /// Print the JSON report instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "PATH")]
    pub json_out: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Longest replayed day: real time.
const MAX_DAY: Duration = Duration::from_secs(86_400);

/// A duration of up to a day: a number with `s`, `m` or `h` (`90s`, `1200m`, `24h`), or
/// anything [`parse_duration`] takes.
fn parse_day_duration(input: &str) -> std::result::Result<Duration, String> {
    let text = input.trim();
    let scaled = [("h", 3600.0), ("m", 60.0), ("s", 1.0)]
        .into_iter()
        .find_map(|(unit, secs)| {
            let number = text.strip_suffix(unit)?;
            // `ms` and `us` are left to `parse_duration`.
            if number.ends_with(['m', 'u', 'µ']) {
                return None;
            }
            Some(number.parse::<f64>().map(|n| n * secs))
        });
    let value = match scaled {
        Some(Ok(secs)) if secs.is_finite() && secs > 0.0 && secs <= MAX_DAY.as_secs_f64() => {
            Duration::from_secs_f64(secs)
        }
        Some(_) => return Err(format!("`{text}` must be longer than 0 and at most 24h")),
        None => parse_duration(text)?,
    };
    if value.is_zero() || value > MAX_DAY {
        return Err(format!("`{text}` must be longer than 0 and at most 24h"));
    }
    Ok(value)
}

fn parse_curve(text: &str) -> Result<[f64; 24]> {
    let values: Vec<f64> = text
        .split(',')
        .map(|v| v.trim().parse::<f64>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::new("--curve must be 24 comma-separated numbers"))?;
    values
        .try_into()
        .map_err(|_| Error::new("--curve must have exactly 24 weights, one per hour"))
}

impl ReplayArgs {
    /// The run these arguments describe.
    pub fn config(&self) -> Result<ReplayConfig> {
        let day_wall = self.compress;
        let shape = Shape {
            parcels_per_day: self.parcels_per_day,
            day_wall,
            peak_factor: self.peak_factor,
            start_hour: self.start_hour,
            run_wall: self.duration.unwrap_or(day_wall),
            curve: match &self.curve {
                Some(c) => parse_curve(c)?,
                None => DEFAULT_CURVE,
            },
        };
        shape.validate()?;
        let channel_weights = parse_weights(&self.channels, |name| {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase()) {
                return Err(Error::new(format!("`{name}` is not a channel name")));
            }
            Ok(name.to_string())
        })?;
        let channel_names: Vec<String> = channel_weights.iter().map(|(n, _)| n.clone()).collect();
        let channels = Weighted::new(
            channel_weights
                .iter()
                .enumerate()
                .map(|(i, (_, w))| (i, *w))
                .collect(),
        )?;
        let targets = self
            .target
            .split(',')
            .map(|t| Target::parse(t.trim()))
            .collect::<Result<Vec<_>>>()?;
        Ok(ReplayConfig {
            targets,
            sim: Target::parse(&self.sim)?,
            setup: self.setup_source()?,
            shape,
            sources: Weighted::new(parse_weights(&self.sources, str::parse::<Source>)?)?,
            channels,
            channel_names,
            outcomes: Weighted::new(parse_weights(&self.outcomes, str::parse::<Outcome>)?)?,
            max_in_flight: self.max_in_flight,
            request_timeout: self.timeout,
            drain: self.drain,
            csv: CsvBatching {
                max_rows: usize::from(self.csv_batch_rows),
                max_wait: self.csv_batch_wait,
            },
            verify_states: !self.no_verify_states,
            progress: !self.quiet && !self.json,
        })
    }
}

impl ReplayArgs {
    /// The setup file, or what to provision instead.
    fn setup_source(&self) -> Result<SetupSource> {
        if let Some(path) = &self.setup {
            return Ok(SetupSource::File(Setup::load(path)?));
        }
        let spec = self.provision.as_deref().unwrap_or_default();
        let (m, d) = spec
            .split_once(',')
            .and_then(|(m, d)| Some((m.trim().parse().ok()?, d.trim().parse().ok()?)))
            .ok_or_else(|| {
                Error::new(format!(
                    "--provision takes MERCHANTS,DRIVERS (e.g. 8,16), not `{spec}`"
                ))
            })?;
        Ok(SetupSource::Provision(Provisioning {
            merchants: m,
            drivers: d,
            admin_token: self.admin_token.clone().unwrap_or_default(),
            save_to: self.setup_out.clone(),
        }))
    }
}

/// Runs the `replay` scenario and returns its report.
pub async fn replay(args: &ReplayArgs) -> Result<ReplayReport> {
    replay_mod::run(args.config()?).await
}

fn finish_replay(report: ReplayReport, args: &ReplayArgs) -> Result<()> {
    if let Some(path) = &args.json_out {
        write_file(path, &format!("{}\n", report.to_json()))?;
    }
    if let Some(dir) = &args.plots {
        let files = replay_mod::plot::write_all(dir, &args.plots_prefix, &report.timeline)?;
        if !args.json {
            let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
            eprintln!("plots: {}", names.join(", "));
        }
    }
    if args.json {
        print_stdout(&format!("{}\n", report.to_json()))?;
    } else {
        print_stdout(&report.to_string())?;
    }
    if !report.accounting.ok {
        return Err(Error::new(
            "the accounting failed: see lost lifecycles, webhooks, money and 5xx above",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod replay_arg_tests {
    use super::*;

    #[test]
    fn a_day_may_be_compressed_into_up_to_24_hours() {
        assert_eq!(parse_day_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_day_duration("1200m"), Ok(Duration::from_secs(72_000)));
        assert_eq!(parse_day_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_day_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_day_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_day_duration("25h").is_err());
        assert!(parse_day_duration("0m").is_err());
        assert!(parse_day_duration("abc").is_err());
    }

    fn replay_args(extra: &[&str]) -> std::result::Result<ReplayArgs, clap::Error> {
        let mut argv = vec![
            "ipay-loadtest",
            "replay",
            "--target",
            "http://127.0.0.1:1,http://127.0.0.1:2",
            "--sim",
            "http://127.0.0.1:3",
        ];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv)?.command {
            Command::Replay(a) => Ok(*a),
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn accounts_come_from_a_setup_file_or_are_provisioned() {
        let args = replay_args(&["--provision", "3,5", "--admin-token", "t"]).expect("parses");
        let cfg = args.config().expect("valid");
        assert_eq!(cfg.targets.len(), 2, "two cluster nodes");
        match cfg.setup {
            SetupSource::Provision(p) => {
                assert_eq!((p.merchants, p.drivers), (3, 5));
                assert_eq!(p.admin_token, "t");
            }
            SetupSource::File(_) => panic!("expected provisioning"),
        }
        let bad = replay_args(&["--provision", "3", "--admin-token", "t"]).expect("parses");
        assert!(bad.config().is_err(), "MERCHANTS,DRIVERS is required");
        assert!(replay_args(&[]).is_err(), "neither --setup nor --provision");
        assert!(
            replay_args(&["--provision", "3,5"]).is_err(),
            "no admin token"
        );
        assert!(
            replay_args(&[
                "--provision",
                "3,5",
                "--admin-token",
                "t",
                "--setup",
                "x.json"
            ])
            .is_err(),
            "both"
        );
    }
}
