//! The `ipay_intents{status}` gauge is counted from the ledger when `ipay serve` starts (as
//! docs/operations.md says), not only moved by the transitions this process made: a restarted
//! node reports the intents already in its data directory before any new request.

mod common;

use common::procs::{BIN, Node, spawn_node};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::process::{Command, Stdio};

fn serve(dir: &std::path::Path) -> Node {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("IPAY_ADMIN__TOKEN", "adm_gauge_test")
        .env("RUST_LOG", "error")
        .stderr(Stdio::inherit());
    spawn_node(cmd)
}

/// The value of one series in a node's `/metrics`, if present.
async fn series(http: &reqwest::Client, node: &Node, name: &str) -> Option<f64> {
    let text = http
        .get(format!("{}/metrics", node.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

async fn post(http: &reqwest::Client, url: String, key: &str, body: Value) -> Value {
    let r = http
        .post(url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_counts_the_intents_in_its_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let node = serve(dir.path());
    let creds = post(
        &http,
        format!("{}/v1/admin/merchants", node.base),
        "adm_gauge_test",
        json!({"name": "Gauge"}),
    )
    .await;
    let key = creds["test_secret_key"].as_str().unwrap().to_string();
    let svc = post(
        &http,
        format!("{}/v1/services", node.base),
        &key,
        json!({"name": "gauge", "accepted_channels": ["sandbox"]}),
    )
    .await;
    let sid = svc["id"].as_str().unwrap();
    let act = http
        .patch(format!("{}/v1/services/{sid}/activate", node.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(act.status(), StatusCode::OK);
    let mut ids = Vec::new();
    for value in [100, 200, 300] {
        let body = json!({"service_id": sid, "amount": {"value": value, "currency": "EUR"}, "channel": "sandbox"});
        let pi = post(
            &http,
            format!("{}/v1/payment-intents", node.base),
            &key,
            body,
        )
        .await;
        ids.push(pi["id"].as_str().unwrap().to_string());
    }
    let url = format!(
        "{}/v1/sandbox/payment-intents/{}/succeed",
        node.base, ids[0]
    );
    post(&http, url, &key, json!({})).await;
    // kill -9: acknowledged writes are durable, and no shutdown hook can help the count.
    node.kill9();

    let node = serve(dir.path());
    assert_eq!(
        series(&http, &node, "ipay_intents{status=\"pending\"}").await,
        Some(2.0)
    );
    assert_eq!(
        series(&http, &node, "ipay_intents{status=\"succeeded\"}").await,
        Some(1.0)
    );
    assert_eq!(
        series(&http, &node, "ipay_intents{status=\"failed\"}").await,
        Some(0.0)
    );
}
