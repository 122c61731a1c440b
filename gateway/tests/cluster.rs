//! Two `ipay serve` nodes in cluster mode sharing one Redis and one Cassandra: an idempotency
//! key sent to both at once still yields exactly one intent; an intent created on one node and
//! settled through the other changes state once and reads the same on both (the command is
//! forwarded to the session's owner); a node killed with `kill -9` while owning sessions has
//! them served by the other once its leases lapse, with no event lost or doubled; a node that
//! stops cleanly hands its sessions over at once through snapshots.
//!
//! The servers come from `IPAY_TEST_CQL_ADDR` / `IPAY_TEST_REDIS_URL` (set by
//! `scripts/test.sh`); when unset, the test starts them with `scripts/services/*.sh`.

mod common;

use common::procs::{BIN, MerchantSpec, Node, sandbox_merchant, service, spawn_node};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::process::Command;

fn cluster_env(cmd: &mut Command, cql: &str, redis: &str, keyspace: &str) {
    cmd.env("IPAY_STORAGE__MODE", "cluster")
        .env(
            "IPAY_CLUSTER__NODE_TOKEN",
            "node_token_for_tests_0123456789",
        )
        .env("IPAY_CLUSTER__SESSION_LEASE_MS", "2000")
        .env("IPAY_CLUSTER__CQL_CONTACT_POINTS", format!("[\"{cql}\"]"))
        .env("IPAY_CLUSTER__KEYSPACE", keyspace)
        .env("IPAY_CLUSTER__REDIS_URL", redis)
        .env("IPAY_ADMIN__TOKEN", "adm_cluster_test")
        .env("RUST_LOG", "warn");
}

fn start_node(cql: &str, redis: &str, keyspace: &str, dir: &std::path::Path) -> Node {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .stderr(std::process::Stdio::inherit());
    cluster_env(&mut cmd, cql, redis, keyspace);
    spawn_node(cmd)
}

/// Two nodes on a fresh keyspace of the shared servers.
struct Cluster {
    a: Node,
    b: Node,
    _dir: tempfile::TempDir,
}

fn two_nodes(tag: &str) -> Cluster {
    let cql = service("IPAY_TEST_CQL_ADDR", "cassandra.sh");
    let redis = service("IPAY_TEST_REDIS_URL", "redis.sh");
    let keyspace = format!("ipay_test_gw_{tag}_{}", std::process::id());
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
    Cluster { a, b, _dir: dir }
}

/// A merchant with an active sandbox manifest: (test key, service id).
async fn merchant(http: &reqwest::Client, a: &Node, b: &Node) -> (String, String) {
    // Activated through node B: both nodes read the manifest from the shared ledger.
    let spec = MerchantSpec {
        admin_token: "adm_cluster_test",
        merchant: "Cluster",
        service: "both-nodes",
    };
    sandbox_merchant(http, &a.base, &b.base, spec).await
}

async fn get_json(http: &reqwest::Client, url: String, key: &str) -> (StatusCode, Value) {
    let r = http.get(url).bearer_auth(key).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn create_intent(
    http: &reqwest::Client,
    node: &Node,
    key: &str,
    sid: &str,
    value: i64,
) -> Value {
    let r = http
        .post(format!("{}/v1/payment-intents", node.base))
        .bearer_auth(key)
        .json(&json!({"service_id": sid, "amount": {"value": value, "currency": "EUR"}, "channel": "sandbox"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json().await.unwrap()
}

async fn succeed(http: &reqwest::Client, node: &Node, key: &str, id: &str) -> (StatusCode, Value) {
    let r = http
        .post(format!(
            "{}/v1/sandbox/payment-intents/{id}/succeed",
            node.base
        ))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Event types recorded for one intent, oldest first.
async fn event_types(http: &reqwest::Client, node: &Node, key: &str, id: &str) -> Vec<String> {
    let (status, v) = get_json(
        http,
        format!("{}/v1/events?object_id={id}&limit=100", node.base),
        key,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let mut types: Vec<(String, String)> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_string(),
                e["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    types.sort();
    types.into_iter().map(|(_, t)| t).collect()
}

/// A counter's value in a node's `/metrics` (0 when absent).
async fn metric(http: &reqwest::Client, node: &Node, prefix: &str) -> f64 {
    let text = http
        .get(format!("{}/metrics", node.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intent_created_on_one_node_and_settled_through_the_other_changes_once() {
    let Cluster { a, b, .. } = two_nodes("settle");
    let http = reqwest::Client::new();
    let (key, sid) = merchant(&http, &a, &b).await;
    for round in 0..3 {
        let pi = create_intent(&http, &a, &key, &sid, 1000 + round).await;
        let id = pi["id"].as_str().unwrap().to_string();
        // Three settle attempts at once, two through B (forwarded to A, the owner) and one
        // on A: exactly one succeeds, the others see the intent already succeeded.
        let mut tasks = Vec::new();
        for node in [&b.base, &a.base, &b.base] {
            let (http, key, id, base) = (http.clone(), key.clone(), id.clone(), node.clone());
            tasks.push(tokio::spawn(async move {
                let r = http
                    .post(format!("{base}/v1/sandbox/payment-intents/{id}/succeed"))
                    .bearer_auth(&key)
                    .send()
                    .await
                    .unwrap();
                let status = r.status();
                (status, r.json::<Value>().await.unwrap())
            }));
        }
        let mut ok = 0;
        for t in tasks {
            let (status, v) = t.await.unwrap();
            match status {
                StatusCode::OK => {
                    ok += 1;
                    assert_eq!(v["status"], "succeeded");
                }
                StatusCode::CONFLICT => {
                    assert_eq!(v["error"]["code"], "invalid_state_transition", "{v}")
                }
                other => panic!("unexpected {other}: {v}"),
            }
        }
        assert_eq!(ok, 1, "exactly one settle wins");
        let (sa, va) = get_json(&http, format!("{}/v1/payment-intents/{id}", a.base), &key).await;
        let (sb, vb) = get_json(&http, format!("{}/v1/payment-intents/{id}", b.base), &key).await;
        assert_eq!((sa, sb), (StatusCode::OK, StatusCode::OK));
        assert_eq!(va, vb, "both nodes read the same intent");
        assert_eq!(va["status"], "succeeded");
        assert_eq!(
            event_types(&http, &b, &key, &id).await,
            ["payment_intent.created", "payment_intent.succeeded"]
        );
    }
    assert!(
        metric(&http, &b, "ipay_session_forwards_total").await >= 3.0,
        "B forwarded its settle commands to the owner"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_a_killed_node_are_served_by_the_other_after_the_lease() {
    let Cluster { mut a, b, .. } = two_nodes("failover");
    let http = reqwest::Client::new();
    let (key, sid) = merchant(&http, &a, &b).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let pi = create_intent(&http, &a, &key, &sid, 500 + i).await;
        ids.push((pi["id"].as_str().unwrap().to_string(), pi));
    }
    // A owns them all (it created them); settle half through B while A is alive.
    for (id, _) in ids.iter().take(10) {
        assert_eq!(succeed(&http, &b, &key, id).await.0, StatusCode::OK);
    }
    // kill -9: no clean hand-over, the leases must lapse.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut unavailable = 0;
    for (id, _) in ids.iter().skip(10) {
        loop {
            let (status, v) = succeed(&http, &b, &key, id).await;
            if status == StatusCode::OK {
                assert_eq!(v["status"], "succeeded");
                break;
            }
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
            assert_eq!(v["error"]["code"], "session_unavailable", "{v}");
            unavailable += 1;
            assert!(
                std::time::Instant::now() < deadline,
                "B never took over {id}"
            );
            // The answer says when to retry; honour a short version of it.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    assert!(
        unavailable > 0,
        "B waited for A's leases rather than ignoring them"
    );
    for (id, created) in &ids {
        let (status, v) =
            get_json(&http, format!("{}/v1/payment-intents/{id}", b.base), &key).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["status"], "succeeded");
        assert_eq!(v["amount"], created["amount"], "state intact");
        assert_eq!(
            event_types(&http, &b, &key, id).await,
            ["payment_intent.created", "payment_intent.succeeded"],
            "no event lost or doubled for {id}"
        );
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleanly_stopped_node_hands_its_sessions_over_at_once() {
    let Cluster { mut a, b, .. } = two_nodes("handover");
    let http = reqwest::Client::new();
    let (key, sid) = merchant(&http, &a, &b).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let pi = create_intent(&http, &a, &key, &sid, 700 + i).await;
        ids.push(pi["id"].as_str().unwrap().to_string());
    }
    // SIGTERM: A stops serving, snapshots its idle sessions into Redis, releases the leases.
    let pid = a.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = a.child.wait().unwrap();
    assert!(status.success(), "clean stop: {status:?}");
    for id in &ids {
        let (status, v) = succeed(&http, &b, &key, id).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "no wait for a lease after a clean stop: {v}"
        );
    }
    assert!(
        metric(&http, &b, "ipay_session_snapshots_total{outcome=\"used\"}").await >= 5.0,
        "B rehydrated from A's hand-over snapshots"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_idempotency_key_sent_to_two_nodes_at_once_makes_one_intent() {
    let Cluster { a, b, .. } = two_nodes("idem");
    let http = reqwest::Client::new();

    let (key, sid) = merchant(&http, &a, &b).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_on_one_node_stops_working_on_the_other_at_once() {
    let Cluster { a, b, .. } = two_nodes("revoke");
    let http = reqwest::Client::new();
    let (key, _) = merchant(&http, &a, &b).await;
    let made: Value = http
        .post(format!("{}/v1/api-keys", a.base))
        .bearer_auth(&key)
        .json(&json!({"label": "short-lived", "permissions": ["payment_intents:read"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = made["secret"]
        .as_str()
        .unwrap_or_else(|| panic!("{made}"))
        .to_string();
    let kid = made["id"].as_str().unwrap().to_string();
    // B caches the key by using it.
    let url = format!("{}/v1/payment-intents", b.base);
    assert_eq!(
        get_json(&http, url.clone(), &secret).await.0,
        StatusCode::OK
    );
    let r = http
        .delete(format!("{}/v1/api-keys/{kid}", a.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The key cache lives 30 s; the announcement must beat it by far.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (status, v) = get_json(&http, url.clone(), &secret).await;
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(v["error"]["code"], "auth_revoked", "{v}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "B still accepts the revoked key"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
