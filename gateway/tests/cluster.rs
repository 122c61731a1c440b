//! Two `ipay serve` nodes in cluster mode sharing one Redis and one Cassandra: an idempotency
//! key sent to both at once still yields exactly one intent. (More multi-node behaviour —
//! session ownership, settling through the other node, failover — arrives with session leases.)
//!
//! The servers come from `IPAY_TEST_CQL_ADDR` / `IPAY_TEST_REDIS_URL` (set by
//! `scripts/test.sh`); when unset, the test starts them with `scripts/services/*.sh`.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_ipay");

/// A service's address from the environment, or from its script after starting it.
fn service(var: &str, script: &str) -> String {
    if let Ok(v) = std::env::var(var)
        && !v.trim().is_empty()
    {
        return v.trim().to_string();
    }
    let path = format!(
        "{}/../scripts/services/{script}",
        env!("CARGO_MANIFEST_DIR")
    );
    let status = Command::new(&path)
        .arg("start")
        .status()
        .unwrap_or_else(|e| panic!("cannot run {path}: {e}"));
    assert!(
        status.success(),
        "{path} start failed; set {var} or see its output"
    );
    let out = Command::new(&path)
        .arg("env")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {path} env: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix(&format!("export {var}="))
                .map(|v| v.trim_matches(['"', '\'']).to_string())
        })
        .unwrap_or_else(|| panic!("{path} env printed no {var}: {text}"))
}

struct Node {
    child: Child,
    base: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cluster_env(cmd: &mut Command, cql: &str, redis: &str, keyspace: &str) {
    cmd.env("IPAY_STORAGE__MODE", "cluster")
        .env("IPAY_CLUSTER__CQL_CONTACT_POINTS", format!("[\"{cql}\"]"))
        .env("IPAY_CLUSTER__KEYSPACE", keyspace)
        .env("IPAY_CLUSTER__REDIS_URL", redis)
        .env("IPAY_ADMIN__TOKEN", "adm_cluster_test")
        .env("RUST_LOG", "warn");
}

fn start_node(cql: &str, redis: &str, keyspace: &str, dir: &std::path::Path) -> Node {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir);
    cluster_env(&mut cmd, cql, redis, keyspace);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn ipay serve");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("ipay serve printed nothing").unwrap();
    let base = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("{first}"))
        .to_string();
    std::thread::spawn(move || for _ in lines {});
    Node { child, base }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_idempotency_key_sent_to_two_nodes_at_once_makes_one_intent() {
    let cql = service("IPAY_TEST_CQL_ADDR", "cassandra.sh");
    let redis = service("IPAY_TEST_REDIS_URL", "redis.sh");
    let keyspace = format!("ipay_test_gw_{}", std::process::id());
    let mut migrate = Command::new(BIN);
    migrate.arg("migrate");
    cluster_env(&mut migrate, &cql, &redis, &keyspace);
    let out = migrate.output().unwrap();
    assert!(
        out.status.success(),
        "migrate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let a = start_node(&cql, &redis, &keyspace, &dir.path().join("a"));
    let b = start_node(&cql, &redis, &keyspace, &dir.path().join("b"));
    let http = reqwest::Client::new();

    let creds: Value = http
        .post(format!("{}/v1/admin/merchants", a.base))
        .bearer_auth("adm_cluster_test")
        .json(&json!({"name": "Cluster"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = creds["test_secret_key"].as_str().unwrap().to_string();
    let svc: Value = http
        .post(format!("{}/v1/services", a.base))
        .bearer_auth(&key)
        .json(&json!({"name": "both-nodes", "accepted_channels": ["sandbox"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sid = svc["id"].as_str().unwrap().to_string();
    // Activated through node B: both nodes read the manifest from the shared ledger.
    let act = http
        .patch(format!("{}/v1/services/{sid}/activate", b.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(act.status(), StatusCode::OK);

    let body = json!({"service_id": sid, "amount": {"value": 4200, "currency": "EUR"}, "channel": "sandbox"});
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (http, key, body) = (http.clone(), key.clone(), body.clone());
        let base = if i % 2 == 0 {
            a.base.clone()
        } else {
            b.base.clone()
        };
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(format!("{base}/v1/payment-intents"))
                .bearer_auth(key)
                .header("Idempotency-Key", "two-nodes-1")
                .json(&body)
                .send()
                .await
                .unwrap();
            let replayed = r
                .headers()
                .get("idempotent-replayed")
                .is_some_and(|v| v == "true");
            (r.status(), replayed, r.json::<Value>().await.unwrap())
        }));
    }
    let mut ids = std::collections::HashSet::new();
    let mut fresh = 0;
    for t in tasks {
        let (status, replayed, v) = t.await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{v}");
        fresh += usize::from(!replayed);
        ids.insert(v["id"].as_str().unwrap().to_string());
    }
    assert_eq!((fresh, ids.len()), (1, 1), "exactly one intent was created");
    for node in [&a, &b] {
        let list: Value = http
            .get(format!("{}/v1/payment-intents", node.base))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(list["pagination"]["total"], 1, "node {}", node.base);
    }
}
