//! Crash safety of marketplace sync in the real `ipay` binary: `kill -9` while a sync of
//! many bol.com orders is fetching, restart on the same data directory, sync again until
//! nothing new comes, and every platform order is stored exactly once — none twice, none
//! skipped.

mod common;

use common::procs::{BIN, Node, spawn_node};
use ipay_adapters::marketplaces::Marketplace;
use ipay_adapters::marketsim::{MarketFault, MarketSim, MarketSimHandle};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ORDERS: usize = 130;

fn start_server(dir: &Path, sim: &MarketSimHandle) -> Node {
    let u = sim.urls();
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .env(
            "IPAY_LASTMILE__JWT_SECRET",
            "crash-test-jwt-secret-0123456789abcdef",
        )
        .env("IPAY_LASTMILE__SYNC__TICK_MS", "0")
        .env("IPAY_LASTMILE__SYNC__URLS__BOL_TOKEN_URL", &u.bol_token_url)
        .env("IPAY_LASTMILE__SYNC__URLS__BOL_API_URL", &u.bol_api_url)
        .stderr(Stdio::null());
    spawn_node(cmd)
}

async fn post(
    http: &reqwest::Client,
    url: String,
    token: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    let mut rb = http.post(url).json(&body);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let r = rb.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Every bol order of the merchant: external id → times stored.
async fn stored(http: &reqwest::Client, base: &str, token: &str) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/api/orders?limit=100&source=bol");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for o in page["data"].as_array().unwrap() {
            *out.entry(o["external_id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        match page["pagination"]["next_cursor"].as_str() {
            Some(c) if page["pagination"]["has_more"] == json!(true) => cursor = Some(c.into()),
            _ => break,
        }
    }
    out
}

/// Starts a sync in the background and kills the node once the simulator has served
/// `requests` more calls (the sync is then mid-way through its order details).
async fn kill_during_sync(
    node: Node,
    http: &reqwest::Client,
    token: &str,
    sim: &MarketSimHandle,
    requests: u64,
) {
    let before = sim.requests(Marketplace::Bol);
    let url = format!("{}/api/integrations/bol/sync", node.base);
    let (http2, token2) = (http.clone(), token.to_string());
    let call = tokio::spawn(async move { http2.post(url).bearer_auth(token2).send().await });
    let deadline = Instant::now() + Duration::from_secs(60);
    while sim.requests(Marketplace::Bol) < before + requests {
        assert!(
            Instant::now() < deadline,
            "the sync never reached the platform"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    node.kill9();
    let answered = call.await.unwrap();
    assert!(
        answered.is_err(),
        "the sync was cut by the kill, not answered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_sync_neither_duplicates_nor_skips_an_order() {
    let sim = MarketSim::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let ids: HashSet<String> = sim
        .add_orders(Marketplace::Bol, ORDERS, now - 3_600_000)
        .into_iter()
        .collect();
    // Slow answers so each sync (a token, the list pages, 50 order details) takes seconds.
    sim.inject(Marketplace::Bol, MarketFault::Slow { delay_ms: 20 });
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();

    let node = start_server(dir.path(), &sim);
    let (st, reg) = post(
        &http,
        format!("{}/api/auth/register", node.base),
        None,
        json!({
        "email": "crash@example.test", "password": "correct horse battery", "name": "Crash",
        "role": "merchant", "company_name": "Crash BV"}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{reg}");
    let token = reg["token"].as_str().unwrap().to_string();
    let (st, body) = post(
        &http,
        format!("{}/api/integrations/bol/connect", node.base),
        Some(&token),
        MarketSimHandle::credentials(Marketplace::Bol),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");

    // Crash in the first sync, and again in a later one after some orders are in.
    kill_during_sync(node, &http, &token, &sim, 30).await;
    let node = start_server(dir.path(), &sim);
    let (st, first) = post(
        &http,
        format!("{}/api/integrations/bol/sync", node.base),
        Some(&token),
        json!({}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{first}");
    assert_eq!(first["created"], json!(50), "{first}");
    kill_during_sync(node, &http, &token, &sim, 30).await;

    let node = start_server(dir.path(), &sim);
    let mut created = 50;
    for _ in 0..10 {
        let (st, out) = post(
            &http,
            format!("{}/api/integrations/bol/sync", node.base),
            Some(&token),
            json!({}),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{out}");
        created += out["created"].as_u64().unwrap() as usize;
        if out["created"] == json!(0) {
            break;
        }
    }
    let got = stored(&http, &node.base, &token).await;
    let twice: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "imported twice: {twice:?}");
    let keys: HashSet<String> = got.keys().cloned().collect();
    let missing: Vec<_> = ids.difference(&keys).collect();
    assert!(missing.is_empty(), "skipped: {missing:?}");
    assert_eq!(got.len(), ORDERS);
    assert_eq!(created, ORDERS);
    sim.stop();
}
