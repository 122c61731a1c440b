//! The real `ipay` binary killed with `kill -9` at random moments, ten times in a row, under
//! 16 concurrent writers: after every restart each acknowledged create is there, and a retry of
//! every create that got no answer, with its `Idempotency-Key`, yields exactly one intent.
//!
//! The kill moments come from a seeded generator. The seed is printed; set
//! `IPAY_KILL9_SEED=<n>` to run the same schedule again.

mod common;

use common::procs::{BIN, Node, spawn_node};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Kill/restart cycles.
const CYCLES: usize = 10;
/// Concurrent writers.
const WORKERS: usize = 16;
/// Longest wait after the cycle's first acknowledgement before the kill, ms.
const MAX_KILL_DELAY_MS: u64 = 600;

/// splitmix64: a small seeded generator, so a failing schedule can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn seed() -> u64 {
    std::env::var("IPAY_KILL9_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

fn start_server(dir: &Path) -> Node {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "error")
        .stderr(Stdio::null());
    spawn_node(cmd)
}

/// One create as a client sends it: its key and body.
#[derive(Clone)]
struct Create {
    key: String,
    amount: i64,
}

impl Create {
    fn body(&self, service: &str) -> Value {
        json!({"service_id": service, "amount": {"value": self.amount, "currency": "EUR"}, "channel": "sandbox"})
    }
}

/// What the clients saw in one cycle.
#[derive(Default)]
struct Seen {
    /// Idempotency key → (intent id, amount) of every 201.
    acked: HashMap<String, (String, i64)>,
    /// Creates sent without a 201 coming back (cut by the kill, or refused while it happened).
    unanswered: Vec<Create>,
}

struct Client {
    http: reqwest::Client,
    key: String,
    service: String,
}

impl Client {
    async fn create(&self, base: &str, c: &Create) -> reqwest::Result<reqwest::Response> {
        self.http
            .post(format!("{base}/v1/payment-intents"))
            .bearer_auth(&self.key)
            .header("Idempotency-Key", &c.key)
            .json(&c.body(&self.service))
            .send()
            .await
    }

    async fn get(&self, base: &str, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(format!("{base}{path}"))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("the restarted server answers");
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }
}

/// Runs the writers against `base` until the server dies; a writer stops at its first create
/// without a 201 and reports it as unanswered.
async fn write_until_killed(
    client: Arc<Client>,
    base: String,
    cycle: usize,
    first_ack: Arc<tokio::sync::Notify>,
) -> Seen {
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..WORKERS {
        let (client, base, seen, first_ack) = (
            client.clone(),
            base.clone(),
            seen.clone(),
            first_ack.clone(),
        );
        writers.push(tokio::spawn(async move {
            for n in 0.. {
                let c = Create {
                    key: format!("c{cycle}-w{w}-n{n}"),
                    amount: 100 + (cycle * 100_000 + w * 1_000) as i64 + n,
                };
                let answered = match client.create(&base, &c).await {
                    Ok(r) if r.status() == StatusCode::CREATED => r.json::<Value>().await.ok(),
                    _ => None,
                };
                let mut s = seen.lock().unwrap();
                match answered.as_ref().and_then(|v| v["id"].as_str()) {
                    Some(id) => {
                        s.acked.insert(c.key.clone(), (id.to_string(), c.amount));
                        first_ack.notify_one();
                    }
                    None => {
                        s.unanswered.push(c);
                        return;
                    }
                }
            }
        }));
    }
    for w in writers {
        w.await.expect("writer task");
    }
    std::mem::take(&mut *seen.lock().unwrap())
}

/// Every acknowledged intent of the cycle is there with the amount it was created with.
async fn check_acked(
    client: &Client,
    base: &str,
    acked: &HashMap<String, (String, i64)>,
    seed: u64,
) {
    let lost: Vec<String> = futures::stream::iter(acked.values())
        .map(|(id, amount)| async move {
            let (st, pi) = client.get(base, &format!("/v1/payment-intents/{id}")).await;
            if st == StatusCode::OK && pi["amount"]["value"] == *amount {
                None
            } else {
                Some(format!("{id} ({st})"))
            }
        })
        .buffer_unordered(WORKERS)
        .filter_map(|x| async move { x })
        .collect()
        .await;
    assert!(
        lost.is_empty(),
        "seed {seed}: acknowledged intents lost or changed: {lost:?}"
    );
}

/// Retries each unanswered create with its key: one intent each, the same on a second retry.
async fn retry_unanswered(client: &Client, base: &str, unanswered: &[Create], seed: u64) {
    for c in unanswered {
        let first = client.create(base, c).await.expect("retry answered");
        assert_eq!(
            first.status(),
            StatusCode::CREATED,
            "seed {seed}: retry of {}",
            c.key
        );
        let first: Value = first.json().await.unwrap();
        let again = client.create(base, c).await.expect("second retry answered");
        assert_eq!(again.status(), StatusCode::CREATED);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        let again: Value = again.json().await.unwrap();
        assert_eq!(
            first["id"], again["id"],
            "seed {seed}: key {} gave two intents",
            c.key
        );
        assert_eq!(first["amount"]["value"], c.amount);
    }
}

fn create_merchant(dir: &Path) -> String {
    let out = Command::new(BIN)
        .args([
            "merchants",
            "create",
            "--name",
            "Looping",
            "--json",
            "--data-dir",
        ])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let creds: Value = serde_json::from_slice(&out.stdout).unwrap();
    creds["test_secret_key"].as_str().unwrap().to_string()
}

async fn active_service(http: &reqwest::Client, base: &str, key: &str) -> String {
    let r = http
        .post(format!("{base}/v1/services"))
        .bearer_auth(key)
        .json(&json!({"name": "looping", "accepted_channels": ["sandbox"], "tags": ["x"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let sid = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = http
        .patch(format!("{base}/v1/services/{sid}/activate"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    sid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_kill_9_at_random_moments_lose_no_acknowledged_create_and_duplicate_none() {
    let seed = seed();
    println!("kill -9 schedule seed: {seed} (IPAY_KILL9_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let key = create_merchant(dir.path());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut server = start_server(dir.path());
    let service = active_service(&http, &server.base, &key).await;
    let client = Arc::new(Client { http, key, service });
    // Distinct idempotency keys that must each have exactly one intent.
    let mut keys = 0usize;
    let mut total_acked = 0usize;
    for cycle in 0..CYCLES {
        let first_ack = Arc::new(tokio::sync::Notify::new());
        let writing = tokio::spawn(write_until_killed(
            client.clone(),
            server.base.clone(),
            cycle,
            first_ack.clone(),
        ));
        tokio::time::timeout(Duration::from_secs(30), first_ack.notified())
            .await
            .unwrap_or_else(|_| panic!("seed {seed}: no create acknowledged in cycle {cycle}"));
        tokio::time::sleep(Duration::from_millis(rng.below(MAX_KILL_DELAY_MS))).await;
        server.kill9();
        let seen = writing.await.unwrap();
        assert!(!seen.acked.is_empty());
        server = start_server(dir.path());
        let base = server.base.clone();
        check_acked(&client, &base, &seen.acked, seed).await;
        retry_unanswered(&client, &base, &seen.unanswered, seed).await;
        keys += seen.acked.len() + seen.unanswered.len();
        total_acked += seen.acked.len();
        // Each key has exactly one intent: none lost from earlier cycles, none doubled.
        let (st, list) = client.get(&base, "/v1/payment-intents?limit=1").await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(
            list["pagination"]["total"].as_u64(),
            Some(keys as u64),
            "seed {seed}, cycle {cycle}: intents ≠ idempotency keys used"
        );
    }
    println!("{CYCLES} kills, {total_acked} acknowledged creates, {keys} keys, 0 lost, 0 doubled");
}
