//! The `ipay` command line: `serve`, `migrate`, `merchants create`, `openapi`.

use crate::app;
use crate::config::{Config, StorageMode};
use clap::{Parser, Subcommand};
use ipay_engine::Engine;
use ipay_engine::clock::{Clock, SystemClock};
use ipay_engine::engine::create_merchant;
use ipay_engine::model::{ServiceAction, ServiceInput};
use ipay_engine::session::{Ownership, OwnershipOptions};
use ipay_engine::store::HotState;
use ipay_engine::store::Ledger;
use ipay_engine::store::cql::CqlLedger;
use ipay_engine::store::embedded::{EmbeddedLedger, EmbeddedOptions};
use ipay_engine::store::memory_hot::MemoryHotState;
use ipay_engine::store::redis_hot::{RedisHotState, RedisOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// IPAY Engine: an actor-based payment processing engine.
#[derive(Debug, Parser)]
#[command(name = "ipay", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API (embedded storage by default).
    Serve {
        /// Configuration file (TOML); see config/ipay.toml.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listen address, overriding the config (e.g. 127.0.0.1:8080; port 0 picks a free one).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Data directory of the embedded ledger, overriding the config.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Also create a sandbox merchant with an active service and print a ready-to-run curl.
        #[arg(long)]
        demo: bool,
    },
    /// Create the cluster-mode keyspace and apply the CQL schema migrations it lacks
    /// (idempotent: a second run applies nothing). Uses the `[cluster]` settings.
    Migrate {
        /// Configuration file (TOML); see config/cluster.toml.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Manage merchants.
    Merchants {
        #[command(subcommand)]
        command: MerchantsCommand,
    },
    /// Print the OpenAPI document.
    Openapi,
}

/// `ipay merchants …`
#[derive(Debug, Subcommand)]
pub enum MerchantsCommand {
    /// Create a merchant (embedded mode: on a stopped data directory); prints its keys once.
    Create {
        /// Display name.
        #[arg(long)]
        name: String,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn init_tracing(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // The storage engine narrates every table it opens at info; its warnings still show.
        EnvFilter::new(format!("fjall=warn,lsm_tree=warn,{}", cfg.log.level))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if cfg.log.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// The configured ledger and a one-line description of where it keeps its data.
async fn open_ledger(cfg: &Config) -> Result<(Arc<dyn Ledger>, String), String> {
    if cfg.storage.mode == StorageMode::Cluster {
        let cql = cfg.cql();
        let ledger = CqlLedger::connect(cql.clone())
            .await
            .map_err(|e| format!("cluster mode: cannot open the CQL ledger: {e}"))?;
        let place = format!(
            "cluster mode, ledger in keyspace {} on {}",
            cql.keyspace,
            cql.contact_points.join(", ")
        );
        return Ok((ledger as Arc<dyn Ledger>, place));
    }
    let opts = EmbeddedOptions {
        queue_capacity: cfg.storage.queue_capacity,
        max_batch: cfg.storage.max_group_commit,
        cache_bytes: cfg.storage.cache_mib.saturating_mul(1 << 20),
        checkpoint_interval: std::time::Duration::from_millis(
            cfg.storage.checkpoint_interval_ms.max(10),
        ),
        wal_segment_bytes: cfg.storage.wal_segment_mib.max(1).saturating_mul(1 << 20),
        checkpoint_bytes: cfg.storage.checkpoint_mib.max(1).saturating_mul(1 << 20),
    };
    let ledger = EmbeddedLedger::open(&cfg.storage.data_dir, opts).map_err(|e| e.to_string())?;
    let place = format!("embedded mode, data in {}", cfg.storage.data_dir.display());
    Ok((ledger as Arc<dyn Ledger>, place))
}

/// `ipay migrate`: applies the embedded CQL migrations and says what it did.
async fn migrate(cfg: &Config) -> Result<(), String> {
    let cql = cfg.cql();
    if cfg.storage.mode != StorageMode::Cluster {
        eprintln!(
            "note: storage.mode is \"embedded\"; this schema is used once storage.mode = \"cluster\""
        );
    }
    let report = CqlLedger::migrate(&cql)
        .await
        .map_err(|e| format!("migration failed: {e}"))?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    for (version, name) in &report.applied {
        println!("applied {version:03} {name}");
    }
    if report.applied.is_empty() {
        println!(
            "keyspace {} is up to date ({} migration(s) applied before); nothing to do",
            report.keyspace,
            report.already_applied.len()
        );
    } else {
        println!(
            "keyspace {} now at version {}",
            report.keyspace,
            report
                .applied
                .iter()
                .map(|(v, _)| *v)
                .chain(report.already_applied.iter().copied())
                .max()
                .unwrap_or(0)
        );
    }
    Ok(())
}

/// Runs the command line; returns the process exit code.
pub async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Serve {
            config,
            listen,
            data_dir,
            demo,
        } => {
            let mut cfg = Config::load(config.as_deref())?;
            if let Some(l) = listen {
                cfg.server.listen = l;
            }
            if let Some(d) = data_dir {
                cfg.storage.data_dir = d;
            }
            serve(cfg, demo).await
        }
        Command::Merchants {
            command:
                MerchantsCommand::Create {
                    name,
                    config,
                    data_dir,
                    json,
                },
        } => {
            let mut cfg = Config::load(config.as_deref())?;
            if let Some(d) = data_dir {
                cfg.storage.data_dir = d;
            }
            let (ledger, _) = open_ledger(&cfg).await.map_err(|e| match cfg.storage.mode {
                StorageMode::Embedded => format!(
                    "{e}\nIf `ipay serve` is running on this data dir, use POST /v1/admin/merchants instead."
                ),
                StorageMode::Cluster => e,
            })?;
            let creds = create_merchant(ledger.as_ref(), &SystemClock, &name)
                .await
                .map_err(|e| e.to_string())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&creds).map_err(|e| e.to_string())?
                );
            } else {
                println!("merchant        {}  ({})", creds.merchant_id, creds.name);
                println!("test key        {}", creds.test_secret_key);
                println!("live key        {}", creds.live_secret_key);
                println!("webhook secret  {}", creds.webhook_secret);
                println!(
                    "These secrets are shown once; only their hashes (keys) are kept. Store them now."
                );
            }
            Ok(())
        }
        Command::Migrate { config } => {
            let cfg = Config::load(config.as_deref())?;
            migrate(&cfg).await
        }
        Command::Openapi => {
            let doc = crate::openapi::document()
                .to_pretty_json()
                .map_err(|e| e.to_string())?;
            use std::io::Write;
            // A closed pipe (`ipay openapi | head`) is not an error worth a panic.
            let _ = writeln!(std::io::stdout().lock(), "{doc}");
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// The channel subsystem: the real adapters, `[channels]`, and the master key that encrypts
/// stored credentials (from config/env; in embedded mode generated once into the data dir).
fn channel_setup(cfg: &Config) -> Result<ipay_engine::channels::ChannelSetup, String> {
    use ipay_engine::channels::vault::MasterKey;
    let factory = ipay_adapters::factory::AdapterFactory::new(&cfg.channels)?;
    let master_key = match &cfg.channels.master_key {
        Some(k) => Some(MasterKey::from_base64(k.expose())?),
        None if cfg.storage.mode == StorageMode::Embedded => {
            let path = cfg.storage.data_dir.join("channels.key");
            let (key, created) = MasterKey::load_or_create(&path)?;
            if created {
                tracing::warn!(path = %path.display(), "generated the channels master key; back it up with the data directory (without it stored channel credentials cannot be read)");
            }
            Some(key)
        }
        None => {
            tracing::warn!(
                "no channels.master_key in cluster mode: POST /v1/channels is refused until IPAY_CHANNELS__MASTER_KEY is set"
            );
            None
        }
    };
    Ok(ipay_engine::channels::ChannelSetup {
        factory: Some(Arc::new(factory)),
        config: cfg.channels.clone(),
        master_key,
        sleeper: Arc::new(ipay_engine::channels::retry::TokioSleeper),
        psp_budget: ipay_engine::channels::ChannelSetup::psp_budget(cfg.server.request_timeout_ms),
    })
}

async fn serve(cfg: Config, demo: bool) -> Result<(), String> {
    init_tracing(&cfg);
    // The metrics recorder goes in before the engine starts: the engine seeds the
    // `ipay_intents` gauge from the ledger at start, and metrics set before a recorder exists
    // are dropped.
    let _ = app::metrics_handle();
    let (ledger, place) = open_ledger(&cfg).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // Cluster mode shares hot state (idempotency reservations) through Redis so that several
    // nodes agree; embedded mode keeps it in process.
    let hot: Arc<dyn HotState> = match cfg.storage.mode {
        StorageMode::Embedded => Arc::new(MemoryHotState::new()),
        StorageMode::Cluster => {
            // Keys are namespaced by keyspace, so several clusters can share one Redis
            // database without taking each other's leases.
            let opts = RedisOptions {
                prefix: format!("ipay:{}:", cfg.cluster.keyspace),
                tls: cfg.redis_tls(),
                ..RedisOptions::default()
            };
            let redis = RedisHotState::connect(&cfg.cluster.redis_url, opts)
                .await
                .map_err(|e| format!("cannot use Redis at cluster.redis_url: {e}"))?;
            // A wrong password or an untrusted certificate stops the start here, with the
            // reason, rather than failing every request later.
            redis
                .check()
                .await
                .map_err(|e| format!("cluster mode: {e}"))?;
            redis
        }
    };
    // The outbox hook goes on before anything can write an event (the engine's start-up may
    // expire overdue intents), so every event has its fan-out marker.
    ipay_engine::webhooks::Outbox::attach(ledger.as_ref()).map_err(|e| e.to_string())?;
    // Likewise last-mile's settle marker goes with every final event of a session's intent.
    ipay_lastmile::sessions::settle::SettleHook::attach(
        ledger.as_ref(),
        cfg.lastmile.sessions.settle_queue_max,
    )
    .map_err(|e| e.to_string())?;
    let engine = Engine::start(ledger.clone(), hot.clone(), clock.clone(), cfg.engine())
        .await
        .map_err(|e| e.to_string())?;
    engine
        .set_channels(channel_setup(&cfg)?)
        .map_err(|e| e.to_string())?;
    engine
        .configure_settlement(cfg.settlement.clone())
        .await
        .map_err(|e| e.to_string())?;
    let ownership = match cfg.storage.mode {
        StorageMode::Embedded => None,
        StorageMode::Cluster => {
            let opts = OwnershipOptions {
                lease_ttl: Duration::from_millis(cfg.cluster.session_lease_ms.max(500)),
                node_token: cfg.cluster.node_token.clone(),
            };
            let forwarder =
                crate::routes::internal::HttpForwarder::new(cfg.cluster.node_token.clone())?;
            let own = Arc::new(
                Ownership::new(hot.clone(), opts, cfg.cluster.advertise_url.clone())
                    .with_forwarder(Arc::new(forwarder)),
            );
            engine
                .sessions()
                .enable_ownership(own.clone())
                .map_err(|e| e.to_string())?;
            Some(own)
        }
    };
    let server = app::start(engine.clone(), &cfg)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.server.listen))?;
    let base = format!("http://{}", server.addr);
    if let Some(own) = &ownership {
        if cfg.cluster.advertise_url.is_empty() {
            own.set_advertise_url(base.clone());
        }
        tracing::info!(node = own.node_id(), "session ownership on (cluster mode)");
    }
    println!("ipay listening on {base} ({place})");
    println!("  API docs: {base}/docs   OpenAPI: {base}/openapi.json   metrics: {base}/metrics");
    if demo {
        print_demo(&engine, ledger.as_ref(), clock.as_ref(), &base).await?;
    }
    tracing::info!(addr = %server.addr, "serving");
    let shutdown = tokio::spawn(shutdown_signal());
    let _ = shutdown.await;
    tracing::info!("shutting down");
    server.stop().await;
    engine.shutdown().await;
    Ok(())
}

async fn print_demo(
    engine: &Engine,
    ledger: &dyn Ledger,
    clock: &dyn Clock,
    base: &str,
) -> Result<(), String> {
    let creds = create_merchant(ledger, clock, "Sandbox demo merchant")
        .await
        .map_err(|e| e.to_string())?;
    let ctx = engine
        .authenticate(&creds.test_secret_key, None)
        .await
        .map_err(|e| e.to_string())?;
    let input = ServiceInput {
        name: Some("Demo service".into()),
        accepted_channels: Some(vec!["sandbox".into()]),
        // Settles in USD through the built-in sample rates, so the demo shows FX and fees.
        settlement_currency: ipay_engine::money::Currency::parse("USD").ok(),
        ..Default::default()
    };
    let (svc, _) = engine
        .upsert_service(&ctx, input)
        .await
        .map_err(|e| e.to_string())?;
    engine
        .service_action(&ctx, &svc.id.to_string(), ServiceAction::Activate)
        .await
        .map_err(|e| e.to_string())?;
    let key = &creds.test_secret_key;
    println!();
    println!(
        "Sandbox merchant {} (secrets shown once)",
        creds.merchant_id
    );
    println!("  test key:       {key}");
    println!("  live key:       {}", creds.live_secret_key);
    println!("  webhook secret: {}", creds.webhook_secret);
    println!(
        "  service:        {} (active, accepts the sandbox channel)",
        svc.id
    );
    println!();
    println!("Create a payment intent:");
    println!(
        "  curl -s {base}/v1/payment-intents -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\\n    -H 'Idempotency-Key: demo-1' -d '{{\"service_id\":\"{}\",\"amount\":{{\"value\":699,\"currency\":\"CNY\"}},\"channel\":\"sandbox\"}}'",
        svc.id
    );
    println!("Pay it in the sandbox (use the id from the answer):");
    println!(
        "  curl -s -X POST {base}/v1/sandbox/payment-intents/pi_.../succeed -H 'Authorization: Bearer {key}'"
    );
    println!("Then list events:  curl -s {base}/v1/events -H 'Authorization: Bearer {key}'");
    println!(
        "Reconcile today:   curl -s '{base}/v1/reconciliation?date={}&format=csv' -H 'Authorization: Bearer {key}'",
        ipay_engine::settlement::day_of(clock.now())
    );
    Ok(())
}
