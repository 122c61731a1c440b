//! Crash safety of the real `ipay` binary: everything acknowledged before a `kill -9` is there
//! after a restart, including writes acknowledged while a load was running.

mod common;

use common::procs::{BIN, Node, spawn_node};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

/// Starts `ipay serve` on a free loopback port and waits for its "listening" line.
fn start_server(dir: &Path, checkpoint_ms: u64) -> Node {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .env(
            "IPAY_STORAGE__CHECKPOINT_INTERVAL_MS",
            checkpoint_ms.to_string(),
        )
        .stderr(Stdio::null());
    spawn_node(cmd)
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    key: &str,
    body: Option<Value>,
    idem: Option<&str>,
) -> (StatusCode, Value) {
    let mut rb = http.request(method, url).bearer_auth(key);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    if let Some(k) = idem {
        rb = rb.header("Idempotency-Key", k);
    }
    let r = rb.send().await.unwrap();
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

/// With checkpoints effectively off, recovery rests on replaying the write-ahead log alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_acknowledged_survives_kill_9_from_the_wal_alone() {
    crash_and_recover(3_600_000).await;
}

/// With frequent checkpoints, a crash lands between or during them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_acknowledged_survives_kill_9_across_checkpoints() {
    crash_and_recover(20).await;
}

async fn crash_and_recover(checkpoint_ms: u64) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "merchants",
            "create",
            "--name",
            "Durable",
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

    let server = start_server(dir.path(), checkpoint_ms);
    let http = reqwest::Client::new();
    let b = server.base.clone();
    use reqwest::Method as M;

    // While the server runs, the data dir is locked and the CLI says what to do instead.
    let busy = Command::new(BIN)
        .args(["merchants", "create", "--name", "X", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!busy.status.success());
    assert!(String::from_utf8_lossy(&busy.stderr).contains("/v1/admin/merchants"));

    let (st, svc) = call(
        &http,
        M::POST,
        format!("{b}/v1/services"),
        &key,
        Some(json!({"name": "durable", "accepted_channels": ["sandbox"], "tags": ["x"]})),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    let sid = svc["id"].as_str().unwrap().to_string();
    let (_, svc) = call(
        &http,
        M::PATCH,
        format!("{b}/v1/services/{sid}/activate"),
        &key,
        None,
        None,
    )
    .await;
    let (st, new_key) = call(
        &http,
        M::POST,
        format!("{b}/v1/api-keys"),
        &key,
        Some(json!({"label": "reader", "permissions": ["payment_intents:read"]})),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);

    // A known set of objects in every state.
    let mut acked: Vec<Value> = Vec::new();
    let mut refunds: Vec<Value> = Vec::new();
    for i in 0..12 {
        let body = json!({"service_id": sid, "amount": {"value": 1000 + i, "currency": "EUR"}, "channel": "sandbox"});
        let (st, pi) = call(
            &http,
            M::POST,
            format!("{b}/v1/payment-intents"),
            &key,
            Some(body),
            Some(&format!("fixed-{i}")),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED);
        let id = pi["id"].as_str().unwrap().to_string();
        let pi = match i % 4 {
            0 => {
                call(
                    &http,
                    M::POST,
                    format!("{b}/v1/sandbox/payment-intents/{id}/succeed"),
                    &key,
                    None,
                    None,
                )
                .await
                .1
            }
            1 => {
                call(
                    &http,
                    M::POST,
                    format!("{b}/v1/sandbox/payment-intents/{id}/succeed"),
                    &key,
                    None,
                    None,
                )
                .await;
                let (st, r) = call(
                    &http,
                    M::POST,
                    format!("{b}/v1/refunds"),
                    &key,
                    Some(
                        json!({"payment_intent": id, "amount": {"value": 300, "currency": "EUR"}}),
                    ),
                    None,
                )
                .await;
                assert_eq!(st, StatusCode::CREATED);
                refunds.push(r);
                call(
                    &http,
                    M::GET,
                    format!("{b}/v1/payment-intents/{id}"),
                    &key,
                    None,
                    None,
                )
                .await
                .1
            }
            2 => {
                call(
                    &http,
                    M::POST,
                    format!("{b}/v1/payment-intents/{id}/cancel"),
                    &key,
                    None,
                    None,
                )
                .await
                .1
            }
            _ => pi,
        };
        acked.push(pi);
    }
    let (_, events_before) = call(
        &http,
        M::GET,
        format!("{b}/v1/events?limit=100"),
        &key,
        None,
        None,
    )
    .await;

    // Load from 8 concurrent clients; kill -9 while it runs. Only 201s count as acknowledged.
    let stream_acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let enough = Arc::new(tokio::sync::Notify::new());
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (http, b, key, sid, acked, enough) = (
            http.clone(),
            b.clone(),
            key.clone(),
            sid.clone(),
            stream_acked.clone(),
            enough.clone(),
        );
        workers.push(tokio::spawn(async move {
            for n in 0.. {
                let body = json!({"service_id": sid, "amount": {"value": 1 + n, "currency": "EUR"}, "channel": "sandbox"});
                let sent = http.post(format!("{b}/v1/payment-intents")).bearer_auth(&key).json(&body).send().await;
                match sent {
                    Ok(r) if r.status() == StatusCode::CREATED => match r.json::<Value>().await {
                        Ok(v) => {
                            let mut a = acked.lock().unwrap();
                            a.push(v["id"].as_str().unwrap().to_string());
                            if a.len() == 300 {
                                enough.notify_one();
                            }
                        }
                        Err(_) => return,
                    },
                    _ => return,
                }
            }
        }));
    }
    // Kill once a good number of writes has been acknowledged under load.
    tokio::time::timeout(std::time::Duration::from_secs(120), enough.notified())
        .await
        .expect("300 creates acknowledged");
    server.kill9();
    for w in workers {
        let _ = w.await;
    }
    let stream_acked = stream_acked.lock().unwrap().clone();
    assert!(stream_acked.len() >= 300);

    let server = start_server(dir.path(), checkpoint_ms);
    let b = server.base.clone();
    for pi in &acked {
        let id = pi["id"].as_str().unwrap();
        let (st, now) = call(
            &http,
            M::GET,
            format!("{b}/v1/payment-intents/{id}"),
            &key,
            None,
            None,
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{id} lost");
        assert_eq!(&now, pi, "{id} changed across the crash");
    }
    for r in &refunds {
        let (st, now) = call(
            &http,
            M::GET,
            format!("{b}/v1/refunds/{}", r["id"].as_str().unwrap()),
            &key,
            None,
            None,
        )
        .await;
        assert_eq!((st, &now), (StatusCode::OK, r));
    }
    for id in &stream_acked {
        let (st, _) = call(
            &http,
            M::GET,
            format!("{b}/v1/payment-intents/{id}"),
            &key,
            None,
            None,
        )
        .await;
        assert_eq!(
            st,
            StatusCode::OK,
            "acknowledged intent {id} lost in the crash"
        );
    }
    // Every event seen before the crash is still there, unchanged.
    for ev in events_before["data"].as_array().unwrap() {
        let (st, now) = call(
            &http,
            M::GET,
            format!("{b}/v1/events/{}", ev["id"].as_str().unwrap()),
            &key,
            None,
            None,
        )
        .await;
        assert_eq!((st, &now), (StatusCode::OK, ev));
    }
    // Every acknowledged intent has its creation event.
    let (_, created) = call(
        &http,
        M::GET,
        format!("{b}/v1/events?type=payment_intent.created&limit=1"),
        &key,
        None,
        None,
    )
    .await;
    assert!(
        created["pagination"]["total"].as_u64().unwrap()
            >= (acked.len() + stream_acked.len()) as u64
    );
    // Manifest, keys and idempotency records too.
    let (_, svc_now) = call(
        &http,
        M::GET,
        format!("{b}/v1/services/{sid}"),
        &key,
        None,
        None,
    )
    .await;
    assert_eq!(svc_now, svc);
    let (st, _) = call(
        &http,
        M::GET,
        format!("{b}/v1/payment-intents?limit=1"),
        new_key["secret"].as_str().unwrap(),
        None,
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let replay = http
        .post(format!("{b}/v1/payment-intents"))
        .bearer_auth(&key)
        .header("Idempotency-Key", "fixed-3")
        .json(&json!({"service_id": sid, "amount": {"value": 1003, "currency": "EUR"}, "channel": "sandbox"}))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replayed: Value = replay.json().await.unwrap();
    assert_eq!(replayed["id"], acked[3]["id"]);
    // The restarted engine still takes new work on recovered sessions.
    let pending = acked[3]["id"].as_str().unwrap();
    let (st, paid) = call(
        &http,
        M::POST,
        format!("{b}/v1/sandbox/payment-intents/{pending}/succeed"),
        &key,
        None,
        None,
    )
    .await;
    assert_eq!(
        (st, paid["status"].as_str()),
        (StatusCode::OK, Some("succeeded"))
    );
}
