//! The replay harness shared by the smoke test (`tests/replay_smoke.rs`) and the measurement
//! (`benches/replay.rs`): a real gateway over a fresh embedded ledger in a temporary directory
//! (loopback, free port, system clock) and the PSP simulator, both in this process; merchants
//! and drivers registered over HTTP; the replay run through the command line's own code.
#![allow(dead_code)]

use std::sync::Arc;

use clap::Parser;
use ipay_adapters::factory::AdapterFactory;
use ipay_adapters::sim::{SimHandle, SimOptions, Simulator};
use ipay_engine::clock::SystemClock;
use ipay_engine::ids::{ApiKeyId, MerchantId};
use ipay_engine::model::merchant::{ApiKey, ApiKeyInput, Permission};
use ipay_engine::store::embedded::{EmbeddedLedger, EmbeddedOptions};
use ipay_engine::store::memory_hot::MemoryHotState;
use ipay_engine::{AuthContext, Engine};
use ipay_gateway::app::{self, RunningServer};
use ipay_gateway::config::Config;
use ipay_loadtest::cli::{self, Cli, Command};
use ipay_loadtest::replay::ReplayReport;
use ipay_loadtest::replay::setup::{MerchantSetup, Setup};
use serde_json::{Value, json};

pub const ADMIN: &str = "replay-admin-token-0123456789";

pub struct World {
    engine: Engine,
    server: RunningServer,
    sim: SimHandle,
    base: String,
    dir: tempfile::TempDir,
}

pub async fn start(channels: &[&str]) -> World {
    let sim = Simulator::start(SimOptions::default())
        .await
        .expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = Config::default();
    cfg.server.listen = "127.0.0.1:0".parse().expect("addr");
    cfg.storage.data_dir = dir.path().join("data");
    cfg.admin.token = ADMIN.to_string();
    cfg.webhooks.allow_insecure_loopback = true;
    cfg.lastmile.sessions.channels = channels.iter().map(|c| c.to_string()).collect();
    // One driver per few hundred parcels; the default 30/min is a per-person limit.
    cfg.lastmile.sessions.driver_attempts_per_minute = 100_000;
    cfg.channels = sim.channels_config();
    cfg.channels.callback_rate_per_provider = 1_000_000;
    cfg.channels.callback_rate_per_merchant = 1_000_000;
    std::fs::create_dir_all(&cfg.storage.data_dir).expect("data dir");
    let ledger =
        EmbeddedLedger::open(&cfg.storage.data_dir, EmbeddedOptions::default()).expect("ledger");
    let engine = Engine::start(
        ledger,
        Arc::new(MemoryHotState::new()),
        Arc::new(SystemClock),
        cfg.engine(),
    )
    .await
    .expect("engine");
    engine
        .set_channels(ipay_engine::channels::ChannelSetup {
            factory: Some(Arc::new(
                AdapterFactory::new(&cfg.channels).expect("adapters"),
            )),
            config: cfg.channels.clone(),
            master_key: Some(ipay_engine::channels::vault::MasterKey::generate()),
            sleeper: Arc::new(ipay_engine::channels::retry::TokioSleeper),
            psp_budget: ipay_engine::channels::ChannelSetup::psp_budget(
                cfg.server.request_timeout_ms,
            ),
        })
        .expect("channels");
    let server = app::start(engine.clone(), &cfg).await.expect("server");
    let base = format!("http://{}", server.addr);
    World {
        engine,
        server,
        sim,
        base,
        dir,
    }
}

pub async fn register(http: &reqwest::Client, base: &str, body: Value, by: Option<&str>) -> Value {
    let mut rb = http.post(format!("{base}/api/auth/register")).json(&body);
    if let Some(t) = by {
        rb = rb.bearer_auth(t);
    }
    let r = rb.send().await.expect("register");
    assert_eq!(r.status(), 201, "register {body}");
    r.json().await.expect("json")
}

/// Merchants registered over HTTP, each with a test-mode secret key. Last-mile accounts get
/// no API key over HTTP yet, so the key is minted through the engine, as an operator would.
pub async fn provision(w: &World, merchants: usize, drivers: usize) -> Setup {
    let http = reqwest::Client::new();
    let mut out = Setup {
        merchants: Vec::new(),
        drivers: Vec::new(),
    };
    for i in 0..merchants {
        let r = register(
            &http,
            &w.base,
            json!({"email": format!("shop{i}@replay.test"), "password": "correct horse battery",
                   "name": format!("Shop {i}"), "role": "merchant", "company_name": format!("Marketplace {i}")}),
            None,
        )
        .await;
        let merchant_id = r["user"]["merchant_id"]
            .as_str()
            .expect("merchant id")
            .to_string();
        let mid = MerchantId::parse(&merchant_id).expect("merchant id parses");
        let now = ipay_engine::clock::Clock::now(&SystemClock);
        let ctx = AuthContext {
            merchant_id: mid,
            livemode: false,
            key: ApiKey {
                id: ApiKeyId::from_u128(0),
                label: "provisioning".into(),
                redacted: "internal".into(),
                permissions: Permission::ALL.to_vec(),
                ip_whitelist: vec![],
                livemode: false,
                merchant_id: mid,
                created: now,
                expires_at: now.plus_secs(3600),
                revoked_at: None,
            },
        };
        let key = w
            .engine
            .create_api_key(
                &ctx,
                ApiKeyInput {
                    label: Some("replay".into()),
                    permissions: None,
                    ip_whitelist: None,
                    expires_in_days: None,
                },
            )
            .await
            .expect("api key");
        out.merchants.push(MerchantSetup {
            merchant_id,
            token: r["token"].as_str().expect("token").to_string(),
            secret_key: key.secret,
        });
    }
    for i in 0..drivers {
        let r = register(
            &http,
            &w.base,
            json!({"email": format!("driver{i}@replay.test"), "password": "correct horse battery",
                   "name": format!("Driver {i}"), "role": "driver"}),
            Some(ADMIN),
        )
        .await;
        out.drivers
            .push(r["token"].as_str().expect("token").to_string());
    }
    out
}

pub async fn replay(w: &World, setup: &Setup, extra: &[String]) -> ReplayReport {
    let path = w.dir.path().join("setup.json");
    std::fs::write(&path, serde_json::to_vec(setup).expect("setup json")).expect("write setup");
    let mut args: Vec<String> = [
        "ipay-loadtest",
        "replay",
        "--target",
        &w.base,
        "--sim",
        w.sim.base_url(),
        "--setup",
        path.to_str().expect("utf-8 path"),
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().cloned());
    let cli = Cli::try_parse_from(&args).expect("valid arguments");
    let Command::Replay(args) = cli.command else {
        panic!("parsed the wrong subcommand");
    };
    cli::replay(&args).await.expect("replay runs")
}

pub async fn stop(w: World) {
    w.server.stop().await;
    w.engine.shutdown().await;
    w.sim.stop().await;
}
