//! Fencing between cluster nodes, with real `ipay serve` processes on the shared Redis and
//! Cassandra: node A decides a command on a session it owns and is frozen with `SIGSTOP`
//! before committing it; its lease lapses, node B takes the session over and settles it the
//! other way; A is resumed with `SIGCONT` and its stale decision is refused by the ledger (its
//! caller gets 503 `session_unavailable`). The intent ends in B's state with B's event only.
//!
//! A is frozen at exactly that moment by the engine's test hook
//! (`IPAY_TEST_STOP_BEFORE_COMMIT=succeed`, see `engine/src/session/mod.rs`): the process stops
//! itself after deciding the first `succeed` and before handing its batch to the ledger. The
//! test waits on observable state only: the process state in `/proc`, the lease key in Redis
//! (`redis-cli`), HTTP answers.

mod common;

use common::procs::{BIN, MerchantSpec, Node, sandbox_merchant, service, spawn_node};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, Instant};

const LEASE_MS: u64 = 1500;

fn cluster_env(cmd: &mut Command, cql: &str, redis: &str, keyspace: &str) {
    cmd.env("IPAY_STORAGE__MODE", "cluster")
        .env(
            "IPAY_CLUSTER__NODE_TOKEN",
            "node_token_for_tests_0123456789",
        )
        .env("IPAY_CLUSTER__SESSION_LEASE_MS", LEASE_MS.to_string())
        .env("IPAY_CLUSTER__CQL_CONTACT_POINTS", format!("[\"{cql}\"]"))
        .env("IPAY_CLUSTER__KEYSPACE", keyspace)
        .env("IPAY_CLUSTER__REDIS_URL", redis)
        // A resumed owner's conditional batch contends with the new owner's Paxos round on
        // the same partition; on a busy test box that can outlast the 1 s default, which would
        // answer `store_unavailable` before the fence refuses the stale epoch. This test is
        // about the fence, not the client time-out.
        .env("IPAY_CLUSTER__CQL_REQUEST_TIMEOUT_MS", "10000")
        .env("IPAY_ADMIN__TOKEN", "adm_fencing_test")
        .env("RUST_LOG", "warn");
}

fn start_node(cql: &str, redis: &str, keyspace: &str, dir: &std::path::Path, hook: bool) -> Node {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .stderr(std::process::Stdio::inherit());
    cluster_env(&mut cmd, cql, redis, keyspace);
    if hook {
        cmd.env("IPAY_TEST_STOP_BEFORE_COMMIT", "succeed");
    }
    spawn_node(cmd)
}

/// Sends a signal (`STOP`, `CONT`) to a process.
fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid} failed");
}

/// The process state letter from `/proc/<pid>/stat` (`T`: stopped).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Polls `check` every 20 ms until it holds, failing after `limit`.
async fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let t = Instant::now();
    while !check() {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether `key` exists in Redis (through `redis-cli`).
fn redis_has(url: &str, key: &str) -> bool {
    let out = Command::new("redis-cli")
        .args(["-u", url, "EXISTS", key])
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim() == "1"
}

async fn call(http: &reqwest::Client, method: &str, url: String, key: &str) -> (StatusCode, Value) {
    let req = match method {
        "POST" => http.post(url),
        "PATCH" => http.patch(url),
        _ => http.get(url),
    };
    let r = req.bearer_auth(key).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A merchant with an active sandbox manifest: (test key, service id).
async fn merchant(http: &reqwest::Client, a: &Node) -> (String, String) {
    let spec = MerchantSpec {
        admin_token: "adm_fencing_test",
        merchant: "Fencing",
        service: "fenced",
    };
    sandbox_merchant(http, &a.base, &a.base, spec).await
}

/// Event types recorded for one intent, oldest first.
async fn event_types(http: &reqwest::Client, node: &Node, key: &str, id: &str) -> Vec<String> {
    let url = format!("{}/v1/events?object_id={id}&limit=100", node.base);
    let (status, v) = call(http, "GET", url, key).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let mut types: Vec<(String, String)> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].to_string(), e["type"].as_str().unwrap().to_string()))
        .collect();
    types.sort();
    types.into_iter().map(|(_, t)| t).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_owner_resumed_after_a_take_over_cannot_commit_its_decision() {
    let cql = service("IPAY_TEST_CQL_ADDR", "cassandra.sh");
    let redis = service("IPAY_TEST_REDIS_URL", "redis.sh");
    let keyspace = format!("ipay_test_fence_{}", std::process::id());
    let mut migrate = Command::new(BIN);
    migrate.arg("migrate");
    cluster_env(&mut migrate, &cql, &redis, &keyspace);
    let out = migrate.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let a = start_node(&cql, &redis, &keyspace, &dir.path().join("a"), true);
    let b = start_node(&cql, &redis, &keyspace, &dir.path().join("b"), false);
    let pid_a = a.child.id();
    let http = reqwest::Client::new();
    let (key, sid) = merchant(&http, &a).await;

    // Created on A: A owns the session.
    let r = http
        .post(format!("{}/v1/payment-intents", a.base))
        .bearer_auth(&key)
        .json(&json!({"service_id": sid, "amount": {"value": 4200, "currency": "EUR"}, "channel": "sandbox"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // A decides `succeed` and stops itself before committing.
    let stalled = {
        let (http, key, url) = (
            http.clone(),
            key.clone(),
            format!("{}/v1/sandbox/payment-intents/{id}/succeed", a.base),
        );
        tokio::spawn(async move { call(&http, "POST", url, &key).await })
    };
    wait_until(
        "node A stopped by the hook",
        Duration::from_secs(20),
        || proc_state(pid_a) == Some('T'),
    )
    .await;

    // Its lease lapses (nobody renews it while A is frozen) ...
    let lease = format!("ipay:{keyspace}:lease:session:{id}");
    wait_until(
        "A's lease to lapse",
        Duration::from_millis(LEASE_MS * 5),
        || !redis_has(&redis, &lease),
    )
    .await;
    // ... B takes the session over and fails it.
    let url = format!("{}/v1/sandbox/payment-intents/{id}/fail", b.base);
    let (status, failed) = call(&http, "POST", url, &key).await;
    assert_eq!(status, StatusCode::OK, "{failed}");
    assert_eq!(failed["status"], "failed");

    // A resumes: its stale `succeed` reaches the ledger and is refused.
    signal(pid_a, "CONT");
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), stalled)
        .await
        .expect("the stalled request is answered after SIGCONT")
        .unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "session_unavailable", "{body}");

    // One transition: the intent reads `failed` on both nodes, with B's event only.
    for node in [&a, &b] {
        let url = format!("{}/v1/payment-intents/{id}", node.base);
        let (status, pi) = call(&http, "GET", url, &key).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(pi["status"], "failed", "{pi}");
        assert_eq!(
            event_types(&http, node, &key, &id).await,
            ["payment_intent.created", "payment_intent.failed"]
        );
    }
    // A retried `succeed` (through A) is decided against the real state: refused.
    let url = format!("{}/v1/sandbox/payment-intents/{id}/succeed", a.base);
    let (status, again) = call(&http, "POST", url, &key).await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    let metrics = http
        .get(format!("{}/metrics", a.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("ipay_session_fenced_total 1"),
        "A counts its refused decision"
    );
}
