//! A `kill -9` of the real `ipay` binary during settlement runs neither pays a transaction out
//! twice nor skips a merchant: every run's lines, markers and payouts commit in one batch.

mod common;

use common::procs::{BIN, Node, spawn_node};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MERCHANTS: usize = 6;
const PAYMENTS: usize = 25;
const ADMIN: &str = "crash-test-admin-token";

/// `ipay serve` with scheduled runs every `interval` seconds (0: none), small run batches.
fn start(dir: &Path, interval: u64) -> Node {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .env("IPAY_ADMIN__TOKEN", ADMIN)
        .env("IPAY_SETTLEMENT__RUN_INTERVAL_SECS", interval.to_string())
        .env("IPAY_SETTLEMENT__MAX_LINES_PER_RUN", "2")
        .stderr(Stdio::null());
    spawn_node(cmd)
}

async fn call(
    http: &reqwest::Client,
    m: reqwest::Method,
    url: String,
    key: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut rb = http.request(m, url).bearer_auth(key);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

/// A merchant with an active sandbox manifest and `PAYMENTS` paid intents; returns its key
/// and the intent ids.
async fn merchant(http: &reqwest::Client, b: &str, i: usize) -> (String, HashSet<String>) {
    use reqwest::Method as M;
    let (st, creds) = call(
        http,
        M::POST,
        format!("{b}/v1/admin/merchants"),
        ADMIN,
        Some(json!({"name": format!("crash-{i}")})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{creds:?}");
    let key = creds["test_secret_key"].as_str().unwrap().to_string();
    let (_, svc) = call(http, M::POST, format!("{b}/v1/services"), &key, Some(json!({"name": "crash", "accepted_channels": ["sandbox"], "settlement_currency": "USD"}))).await;
    let sid = svc["id"].as_str().unwrap().to_string();
    call(
        http,
        M::PATCH,
        format!("{b}/v1/services/{sid}/activate"),
        &key,
        None,
    )
    .await;
    let mut ids = HashSet::new();
    for n in 0..PAYMENTS {
        let body = json!({"service_id": sid, "amount": {"value": 500 + n as i64, "currency": "CNY"}, "channel": "sandbox"});
        let (st, pi) = call(
            http,
            M::POST,
            format!("{b}/v1/payment-intents"),
            &key,
            Some(body),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED, "{pi:?}");
        let id = pi["id"].as_str().unwrap().to_string();
        let (st, _) = call(
            http,
            M::POST,
            format!("{b}/v1/sandbox/payment-intents/{id}/succeed"),
            &key,
            None,
        )
        .await;
        assert_eq!(st, StatusCode::OK);
        ids.insert(id);
    }
    (key, ids)
}

/// Transactions the merchant's payouts cover.
async fn paid_out(http: &reqwest::Client, b: &str, key: &str) -> u64 {
    let (st, p) = call(
        http,
        reqwest::Method::GET,
        format!("{b}/v1/payouts?limit=100"),
        key,
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{p:?}");
    p["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["transactions"].as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_settlement_runs_neither_pays_twice_nor_skips_a_merchant() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    // Payments first, with no runs.
    let node = start(dir.path(), 0);
    let mut merchants = Vec::new();
    for i in 0..MERCHANTS {
        merchants.push(merchant(&http, &node.base, i).await);
    }
    node.kill9();

    // Runs start a second after each start; kill at different points of them.
    let mut progress = Vec::new();
    for wait_ms in [1_100u64, 1_250, 1_400, 1_600] {
        let node = start(dir.path(), 1);
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        node.kill9();
        let node = start(dir.path(), 0);
        let mut done = 0;
        for (key, _) in &merchants {
            done += paid_out(&http, &node.base, key).await;
        }
        progress.push(done);
        node.kill9();
    }
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");

    // A last start: the scheduled run must reach every merchant on its own.
    let node = start(dir.path(), 1);
    let b = node.base.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    for (key, _) in &merchants {
        while paid_out(&http, &b, key).await < PAYMENTS as u64 {
            assert!(
                Instant::now() < deadline,
                "a merchant was skipped (progress {progress:?})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let today = chrono::Utc::now().format("%Y-%m-%d");
    for (key, ids) in &merchants {
        assert_eq!(
            paid_out(&http, &b, key).await,
            PAYMENTS as u64,
            "paid out twice"
        );
        let (st, p) = call(
            &http,
            reqwest::Method::GET,
            format!("{b}/v1/reconciliation/export?start={today}&end={today}"),
            key,
            None,
        )
        .await;
        assert_eq!(st, StatusCode::OK);
        let lines = p["transactions"].as_array().unwrap();
        let seen: HashSet<String> = lines
            .iter()
            .map(|l| l["payment_intent_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(lines.len(), PAYMENTS, "one line per payment");
        assert_eq!(&seen, ids);
    }
    eprintln!("transactions paid out after each kill: {progress:?}");
    node.kill9();
}
