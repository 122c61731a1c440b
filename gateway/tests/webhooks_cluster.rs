//! Webhook dispatch across two `ipay serve` nodes in cluster mode sharing one Redis (shard
//! leases) and one Cassandra (outbox, deliveries, logs): events committed on either node are
//! delivered once per acknowledged attempt, never by both nodes; after `kill -9` of the node
//! holding the shard leases the other takes them over, delivers new events, re-sends the one
//! that was cut off mid-send, and does not re-send anything already acknowledged.
//!
//! The servers come from `IPAY_TEST_CQL_ADDR` / `IPAY_TEST_REDIS_URL`; when unset, the test
//! starts them with `scripts/services/*.sh`. Helpers are copied from `cluster.rs` on purpose
//! (each test file is its own crate).

mod common;

use common::PyReceiver;
use common::procs::{BIN, Node, service, spawn_node};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

const ADMIN: &str = "adm_webhooks_cluster_test";

struct Services {
    cql: String,
    redis: String,
    keyspace: String,
}

fn cluster_env(cmd: &mut Command, s: &Services) {
    cmd.env("IPAY_STORAGE__MODE", "cluster")
        .env(
            "IPAY_CLUSTER__NODE_TOKEN",
            "node_token_for_tests_0123456789",
        )
        .env("IPAY_CLUSTER__SESSION_LEASE_MS", "2000")
        .env(
            "IPAY_CLUSTER__CQL_CONTACT_POINTS",
            format!("[\"{}\"]", s.cql),
        )
        .env("IPAY_CLUSTER__KEYSPACE", &s.keyspace)
        .env("IPAY_CLUSTER__REDIS_URL", &s.redis)
        .env("IPAY_ADMIN__TOKEN", ADMIN)
        .env("IPAY_WEBHOOKS__ALLOW_INSECURE_LOOPBACK", "true")
        // Events committed on the other node are found by polling (wake-ups are per process).
        .env("IPAY_WEBHOOKS__POLL_INTERVAL_MS", "100")
        // Long enough that the hanging attempt is still in flight at the kill (if it timed out
        // first it would be retried 10 s later instead: still re-sent, just not "cut off").
        .env("IPAY_WEBHOOKS__TIMEOUT_MS", "4000")
        .env("IPAY_WEBHOOKS__INFLIGHT_LEASE_MS", "5000")
        .env("IPAY_WEBHOOKS__LEASE_TTL_MS", "3000")
        .env("RUST_LOG", "warn");
}

fn start_node(s: &Services, dir: &std::path::Path) -> Node {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .stderr(std::process::Stdio::inherit());
    cluster_env(&mut cmd, s);
    spawn_node(cmd)
}

/// A fresh keyspace on the shared servers, and a Redis database of its own. Redis keys are
/// namespaced by keyspace already; the separate database keeps this test's shard leases apart
/// from other tests' even if that ever changes.
fn services() -> Services {
    let cql = service("IPAY_TEST_CQL_ADDR", "cassandra.sh");
    let redis = service("IPAY_TEST_REDIS_URL", "redis.sh");
    let db = 1 + std::process::id() % 15;
    let redis = format!("{}/{db}", redis.trim_end_matches('/'));
    let s = Services {
        cql,
        redis,
        keyspace: format!("ipay_test_gw_whc_{}", std::process::id()),
    };
    let mut migrate = Command::new(BIN);
    migrate.arg("migrate");
    cluster_env(&mut migrate, &s);
    let out = migrate.output().unwrap();
    assert!(
        out.status.success(),
        "migrate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    s
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

/// Creates a sandbox intent on `node` and settles it there (`succeed` or `fail`); the node
/// that creates an intent owns its session. Returns the intent id.
async fn settled_intent(
    http: &reqwest::Client,
    node: &Node,
    key: &str,
    sid: &str,
    value: i64,
    how: &str,
) -> String {
    let (st, pi) = post(
        http,
        format!("{}/v1/payment-intents", node.base),
        key,
        json!({"service_id": sid, "amount": {"value": value, "currency": "EUR"}, "channel": "sandbox"}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{pi}");
    let id = pi["id"].as_str().unwrap().to_string();
    let (st, v) = post(
        http,
        format!("{}/v1/sandbox/payment-intents/{id}/{how}", node.base),
        key,
        json!({}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    id
}

/// One received webhook: (event id, type, intent id).
fn parse(r: &Value) -> (String, String, String) {
    let e: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    (
        e["id"].as_str().unwrap().to_string(),
        e["type"].as_str().unwrap().to_string(),
        e["data"]["id"].as_str().unwrap_or("").to_string(),
    )
}

/// How often each event id was received.
fn counts(received: &[Value]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in received {
        *m.entry(parse(r).0).or_insert(0) += 1;
    }
    m
}

/// Event ids received for `intents` with `type`.
fn events_of(received: &[Value], intents: &[String], ty: &str) -> Vec<String> {
    let mut v: Vec<String> = received
        .iter()
        .map(parse)
        .filter(|(_, t, pi)| t == ty && intents.contains(pi))
        .map(|(id, _, _)| id)
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Waits until every one of `events` has a `succeeded` attempt in the logs (the receiver's
/// acknowledgement is durably recorded), reading through `node`.
async fn wait_acknowledged(http: &reqwest::Client, node: &Node, key: &str, events: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in events {
        loop {
            let r = http
                .get(format!(
                    "{}/v1/webhooks/logs?event_id={id}&status=succeeded",
                    node.base
                ))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let v: Value = r.json().await.unwrap();
            if !v["data"].as_array().unwrap().is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the acknowledgement of {id} was never recorded"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn assert_signed(received: &[Value], secret: &str) {
    for r in received {
        let v = &r["verified"][secret];
        assert_eq!(v["spec"], true, "spec signature: {r}");
        assert_eq!(v["standard"], true, "standard signature: {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_deliver_each_acknowledged_event_once_and_survive_kill_9_of_the_dispatcher() {
    let s = services();
    let dir = tempfile::tempdir().unwrap();
    let rx = PyReceiver::start();
    let http = reqwest::Client::new();

    // A starts alone, so it takes every shard lease.
    let a = start_node(&s, &dir.path().join("a"));
    let creds: Value = http
        .post(format!("{}/v1/admin/merchants", a.base))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "Webhooks cluster"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = creds["test_secret_key"].as_str().unwrap().to_string();
    let (st, ep) = post(
        &http,
        format!("{}/v1/webhook-endpoints", a.base),
        &key,
        json!({"url": format!("{}/hook", rx.base)}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{ep}");
    let secret = ep["secret"].as_str().unwrap().to_string();
    // The first attempt of a `payment_intent.failed` hangs far past the kill below.
    rx.configure(json!({"secrets": [secret], "rules": [
        {"type": "payment_intent.failed", "first_only": true, "delay_ms": 60000, "status": 200}
    ]}))
    .await;
    let (st, svc) = post(
        &http,
        format!("{}/v1/services", a.base),
        &key,
        json!({"name": "webhooks-cluster", "accepted_channels": ["sandbox"]}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{svc}");
    let sid = svc["id"].as_str().unwrap().to_string();
    let r = http
        .patch(format!("{}/v1/services/{sid}/activate", a.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let warm = settled_intent(&http, &a, &key, &sid, 100, "succeed").await;
    rx.wait("the warm-up event", |r| {
        !events_of(r, std::slice::from_ref(&warm), "payment_intent.succeeded").is_empty()
    })
    .await;

    let b = start_node(&s, &dir.path().join("b"));

    // Both nodes running: events committed on either node.
    let mut phase1 = vec![warm];
    for i in 0..16 {
        let node = if i % 2 == 0 { &a } else { &b };
        phase1.push(settled_intent(&http, node, &key, &sid, 200 + i, "succeed").await);
    }
    // Committed on B, so B can still settle nothing more about it after A dies.
    let hanging = settled_intent(&http, &b, &key, &sid, 999, "fail").await;
    let received = rx
        .wait("every phase-1 event", |r| {
            events_of(r, &phase1, "payment_intent.created").len() == phase1.len()
                && events_of(r, &phase1, "payment_intent.succeeded").len() == phase1.len()
                && !events_of(r, std::slice::from_ref(&hanging), "payment_intent.failed").is_empty()
        })
        .await;
    let mut acked = events_of(&received, &phase1, "payment_intent.created");
    acked.extend(events_of(&received, &phase1, "payment_intent.succeeded"));
    wait_acknowledged(&http, &b, &key, &acked).await;
    let received = rx.received().await;
    let seen = counts(&received);
    for id in &acked {
        assert_eq!(
            seen[id], 1,
            "{id} was delivered more than once while both nodes ran"
        );
    }
    let failed = events_of(
        &received,
        std::slice::from_ref(&hanging),
        "payment_intent.failed",
    );
    assert_eq!(
        seen[&failed[0]], 1,
        "the hanging delivery is still in flight"
    );

    // kill -9 the node that dispatched (A, unless B took shards over meanwhile).
    let sent_a = metric(&http, &a, "ipay_webhook_attempts_total").await;
    let sent_b = metric(&http, &b, "ipay_webhook_attempts_total").await;
    assert!(sent_a + sent_b >= acked.len() as f64, "{sent_a} + {sent_b}");
    let (mut dead, survivor, before) = if sent_a >= sent_b {
        (a, b, sent_b)
    } else {
        (b, a, sent_a)
    };
    dead.child.kill().unwrap();
    dead.child.wait().unwrap();
    drop(dead);

    let mut phase2 = Vec::new();
    for i in 0..8 {
        phase2.push(settled_intent(&http, &survivor, &key, &sid, 300 + i, "succeed").await);
    }
    let failed_id = failed[0].clone();
    let received = rx
        .wait("phase-2 events and the re-sent cut-off delivery", |r| {
            events_of(r, &phase2, "payment_intent.created").len() == phase2.len()
                && events_of(r, &phase2, "payment_intent.succeeded").len() == phase2.len()
                && counts(r).get(&failed_id).copied().unwrap_or(0) >= 2
        })
        .await;
    let mut acked2 = events_of(&received, &phase2, "payment_intent.created");
    acked2.extend(events_of(&received, &phase2, "payment_intent.succeeded"));
    acked2.push(failed_id.clone());
    wait_acknowledged(&http, &survivor, &key, &acked2).await;

    let received = rx.received().await;
    assert_signed(&received, &secret);
    let seen = counts(&received);
    for id in &acked {
        assert_eq!(
            seen[id], 1,
            "{id} was acknowledged before the kill and sent again"
        );
    }
    for id in acked2.iter().filter(|id| **id != failed_id) {
        assert_eq!(seen[id], 1, "{id} delivered more than once by the survivor");
    }
    // Every copy of the cut-off delivery carries the same event id (receivers dedupe on it).
    for r in received.iter().filter(|r| parse(r).0 == failed_id) {
        assert_eq!(r["headers"]["webhook-id"], failed_id.as_str());
    }
    let after = metric(&http, &survivor, "ipay_webhook_attempts_total").await;
    assert!(
        after >= before + acked2.len() as f64,
        "the survivor took the shards over and sent phase 2 ({before} -> {after})"
    );
}
