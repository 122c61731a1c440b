//! Webhook deliveries survive `kill -9` of the real `ipay` binary: a delivery cut off mid-send
//! is sent again after the restart (once its in-flight lease lapses), deliveries the receiver
//! already acknowledged are not sent again, and per-intent order holds across the crash.

mod common;

use common::PyReceiver;
use common::procs::{BIN, Node, spawn_node};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};

fn start_server(dir: &Path) -> Node {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .env("IPAY_WEBHOOKS__ALLOW_INSECURE_LOOPBACK", "true")
        .env("IPAY_WEBHOOKS__POLL_INTERVAL_MS", "50")
        .env("IPAY_WEBHOOKS__TIMEOUT_MS", "1000")
        .env("IPAY_WEBHOOKS__INFLIGHT_LEASE_MS", "2000")
        .stderr(Stdio::null());
    spawn_node(cmd)
}

async fn post(http: &reqwest::Client, url: String, key: &str, body: Value) -> (StatusCode, Value) {
    let r = http
        .post(url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

fn event_of(r: &Value) -> Value {
    serde_json::from_str(r["body"].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_cut_off_by_kill_9_is_resent_after_restart_and_acked_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "merchants",
            "create",
            "--name",
            "Crash",
            "--json",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let creds: Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = creds["test_secret_key"].as_str().unwrap().to_string();

    let rx = PyReceiver::start();
    // The first `payment_intent.succeeded` hangs far past the kill; everything else is 200.
    rx.configure(json!({"rules": [
        {"type": "payment_intent.succeeded", "first_only": true, "delay_ms": 60000, "status": 200}
    ]}))
    .await;

    let server = start_server(dir.path());
    let http = reqwest::Client::new();
    let b = server.base.clone();
    let (st, ep) = post(
        &http,
        format!("{b}/v1/webhook-endpoints"),
        &key,
        json!({"url": format!("{}/hook", rx.base)}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{ep:?}");
    let secret = ep["secret"].as_str().unwrap().to_string();
    rx.configure(json!({"secrets": [secret]})).await;
    let (st, svc) = post(
        &http,
        format!("{b}/v1/services"),
        &key,
        json!({"name": "crash", "accepted_channels": ["sandbox"]}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    let sid = svc["id"].as_str().unwrap().to_string();
    let r = http
        .patch(format!("{b}/v1/services/{sid}/activate"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (st, pi) = post(
        &http,
        format!("{b}/v1/payment-intents"),
        &key,
        json!({"service_id": sid, "amount": {"value": 700, "currency": "EUR"}, "channel": "sandbox"}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    let pid = pi["id"].as_str().unwrap().to_string();
    // The `created` event is delivered and acknowledged before the intent succeeds.
    rx.wait("payment_intent.created", |rs| rs.len() == 1).await;
    let (st, _) = post(
        &http,
        format!("{b}/v1/sandbox/payment-intents/{pid}/succeed"),
        &key,
        json!({}),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    rx.wait("the hanging delivery", |rs| rs.len() == 2).await;

    server.kill9();
    let server = start_server(dir.path());
    let rs = rx
        .wait("the resent delivery", |rs| {
            rs.len() >= 3 && event_of(&rs[2])["type"] == "payment_intent.succeeded"
        })
        .await;
    let types: Vec<String> = rs
        .iter()
        .map(|r| event_of(r)["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        types,
        [
            "payment_intent.created",
            "payment_intent.succeeded",
            "payment_intent.succeeded"
        ]
    );
    // Same event id both times (receivers dedupe on it), valid signatures after the restart.
    assert_eq!(event_of(&rs[1])["id"], event_of(&rs[2])["id"]);
    assert_eq!(rs[2]["verified"][secret.as_str()]["spec"], true);
    assert_eq!(rs[2]["verified"][secret.as_str()]["standard"], true);
    // The log after restart shows the success.
    let logs: Value = http
        .get(format!("{}/v1/webhooks/logs?status=succeeded", server.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(logs["data"].as_array().unwrap().len(), 2, "{logs:#}");
    // Nothing more arrives: the acknowledged `created` event is not sent again.
    let later = rx.received().await;
    assert_eq!(later.len(), 3);
}
