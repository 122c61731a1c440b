//! Cluster nodes (real `ipay serve` processes) on a PRIVATE `redis-server` started here, so it
//! can be frozen without disturbing anyone, and the shared Cassandra in a keyspace of their
//! own:
//!
//! - while Redis is frozen (`SIGSTOP`), a create with an `Idempotency-Key` answers 503
//!   `store_unavailable` within the 1 s bound and `/readyz` answers 503 naming the hot state;
//!   once Redis is resumed, the retry with the same key runs at once (201), and the next one
//!   replays it: the reservation taken as Redis froze does not keep the key busy;
//! - `/readyz` reports the storage really used, per backend;
//! - two nodes enforce one rate-limit budget per API key between them.

mod common;

use common::procs::{BIN, MerchantSpec, Node, sandbox_merchant, service, spawn_node};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A `redis-server` child on a free loopback port, killed when dropped (also when stopped).
struct PrivateRedis {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl PrivateRedis {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found: run scripts/services/redis.sh start once");
        let r = PrivateRedis {
            port,
            child,
            _dir: dir,
        };
        let t = Instant::now();
        while !r.answers() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "private redis-server silent"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} redis failed");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Nodes sharing the private Redis and a fresh keyspace of the shared Cassandra.
struct Cluster {
    nodes: Vec<Node>,
    redis: PrivateRedis,
    keyspace: String,
    _dir: tempfile::TempDir,
}

fn cluster(tag: &str, count: usize, extra: &[(&str, &str)]) -> Cluster {
    let cql = service("IPAY_TEST_CQL_ADDR", "cassandra.sh");
    let redis = PrivateRedis::start();
    let keyspace = format!("ipay_test_recov_{tag}_{}", std::process::id());
    let env = |cmd: &mut Command| {
        cmd.env("IPAY_STORAGE__MODE", "cluster")
            .env(
                "IPAY_CLUSTER__NODE_TOKEN",
                "node_token_for_tests_0123456789",
            )
            .env("IPAY_CLUSTER__CQL_CONTACT_POINTS", format!("[\"{cql}\"]"))
            .env("IPAY_CLUSTER__KEYSPACE", &keyspace)
            .env("IPAY_CLUSTER__REDIS_URL", redis.url())
            .env("IPAY_ADMIN__TOKEN", "adm_recovery_test")
            .env("RUST_LOG", "error");
        for (k, v) in extra {
            cmd.env(k, v);
        }
    };
    let mut migrate = Command::new(BIN);
    migrate.arg("migrate");
    env(&mut migrate);
    let out = migrate.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let nodes = (0..count)
        .map(|i| {
            let mut cmd = Command::new(BIN);
            cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
                .arg(dir.path().join(i.to_string()))
                .stderr(Stdio::inherit());
            env(&mut cmd);
            spawn_node(cmd)
        })
        .collect();
    Cluster {
        nodes,
        redis,
        keyspace,
        _dir: dir,
    }
}

/// A merchant with an active sandbox manifest: (test key, service id).
async fn merchant(http: &reqwest::Client, node: &Node) -> (String, String) {
    let spec = MerchantSpec {
        admin_token: "adm_recovery_test",
        merchant: "Recovery",
        service: "recovery",
    };
    sandbox_merchant(http, &node.base, &node.base, spec).await
}

/// A create with `Idempotency-Key: idem`: status, body, whether replayed, how long it took.
async fn create(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    sid: &str,
    idem: &str,
) -> (StatusCode, Value, bool, Duration) {
    let t = Instant::now();
    let r = http
        .post(format!("{base}/v1/payment-intents"))
        .bearer_auth(key)
        .header("Idempotency-Key", idem)
        .json(&json!({"service_id": sid, "amount": {"value": 1500, "currency": "EUR"}, "channel": "sandbox"}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let replayed = r
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let body = r.json().await.unwrap_or(Value::Null);
    (status, body, replayed, t.elapsed())
}

async fn readyz(http: &reqwest::Client, node: &Node) -> (StatusCode, Value, Duration) {
    let t = Instant::now();
    let r = http
        .get(format!("{}/readyz", node.base))
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null), t.elapsed())
}

/// Four clients creating intents with fresh `Idempotency-Key`s until `stop`; returns every
/// (key, status) they got.
fn traffic(
    http: &reqwest::Client,
    node: &Node,
    key: &str,
    sid: &str,
    done: &Arc<AtomicUsize>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<(String, StatusCode)>>> {
    (0..4)
        .map(|client| {
            let (http, base, key, sid) = (
                http.clone(),
                node.base.clone(),
                key.to_string(),
                sid.to_string(),
            );
            let (done, stop) = (done.clone(), stop.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for n in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let idem = format!("traffic-{client}-{n}");
                    let (status, body, _, took) = create(&http, &base, &key, &sid, &idem).await;
                    assert!(
                        status == StatusCode::CREATED || status == StatusCode::SERVICE_UNAVAILABLE,
                        "{status} {body}"
                    );
                    if status == StatusCode::SERVICE_UNAVAILABLE {
                        assert!(
                            took < Duration::from_millis(1600),
                            "503 after {took:?}: {body}"
                        );
                    }
                    seen.push((idem, status));
                    done.fetch_add(1, Ordering::SeqCst);
                }
                seen
            })
        })
        .collect()
}

/// Reservation keys currently in Redis (`redis-cli`).
fn reservations(url: &str, keyspace: &str) -> Vec<String> {
    let out = Command::new("redis-cli")
        .args([
            "-u",
            url,
            "--scan",
            "--pattern",
            &format!("ipay:{keyspace}:res:*"),
        ])
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_redis_freeze_a_retried_key_runs_at_once_and_readyz_tells_the_truth() {
    let c = cluster("freeze", 1, &[]);
    let node = &c.nodes[0];
    let http = reqwest::Client::new();
    let (key, sid) = merchant(&http, node).await;

    let (status, ready, _) = readyz(&http, node).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["storage"], "cluster");
    assert_eq!(
        ready["ledger"],
        json!({"backend": "cql", "readable": true, "writable": true})
    );
    assert_eq!(
        ready["hot_state"],
        json!({"backend": "redis", "reachable": true})
    );

    // Redis freezes under traffic, so some requests hold a reservation when it does.
    let (done, stop) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let clients = traffic(&http, node, &key, &sid, &done, &stop);
    while done.load(Ordering::SeqCst) < 8 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c.redis.signal("STOP");
    let (status, body, _, took) = create(&http, &node.base, &key, &sid, "frozen-key").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
    assert!(took < Duration::from_millis(1600), "503 after {took:?}");
    let (status, not_ready, took) = readyz(&http, node).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{not_ready}");
    assert_eq!(not_ready["status"], "not_ready");
    assert_eq!(not_ready["hot_state"]["reachable"], false, "{not_ready}");
    assert_eq!(not_ready["ledger"]["writable"], true, "{not_ready}");
    assert!(not_ready["reason"].as_str().unwrap().contains("hot state"));
    assert!(took < Duration::from_millis(1600), "readyz took {took:?}");

    c.redis.signal("CONT");
    stop.store(true, Ordering::SeqCst);
    let mut seen = Vec::new();
    for t in clients {
        seen.extend(t.await.unwrap());
    }
    // Ready again as soon as Redis answers (polled: the first pooled connection may be stale).
    let t = Instant::now();
    while readyz(&http, node).await.0 != StatusCode::OK {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "not ready 5 s after SIGCONT"
        );
    }
    // No reservation outlives its request: those taken or left as Redis froze are removed
    // once it answers, not at their 30 s TTL.
    let t = Instant::now();
    loop {
        let left = reservations(&c.redis.url(), &c.keyspace);
        if left.is_empty() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "reservations left: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // So every key that got 503 runs at once when retried (not 409 `idempotency_key_in_use`) ...
    let failed: Vec<_> = seen
        .iter()
        .filter(|(_, s)| *s != StatusCode::CREATED)
        .collect();
    eprintln!(
        "{} creates during the freeze window, {} answered 503",
        seen.len(),
        failed.len()
    );
    for (idem, _) in failed {
        let (status, body, _, took) = create(&http, &node.base, &key, &sid, idem).await;
        assert_eq!(status, StatusCode::CREATED, "{idem}: {body}");
        assert!(
            took < Duration::from_millis(1500),
            "{idem}: retry took {took:?}"
        );
    }
    let (status, first, replayed, took) = create(&http, &node.base, &key, &sid, "frozen-key").await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert!(!replayed);
    assert!(took < Duration::from_millis(1500), "retry took {took:?}");
    // ... and the next one replays it.
    let (status, again, replayed, _) = create(&http, &node.base, &key, &sid, "frozen-key").await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert!(replayed);
    assert_eq!(again["id"], first["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_enforce_one_rate_limit_budget_per_key() {
    // 10 requests per 10 s window per key, counted in Redis by both nodes together.
    let limits = [
        ("IPAY_LIMITS__RATE_PER_KEY_PER_SEC", "1"),
        ("IPAY_LIMITS__RATE_PER_KEY_BURST", "10"),
    ];
    let c = cluster("rate", 2, &limits);
    let http = reqwest::Client::new();
    let (key, _) = merchant(&http, &c.nodes[0]).await;
    // The merchant set-up spent 2 of this key's 10 (create service, activate).
    let mut answers = Vec::new();
    for i in 0..12 {
        let node = &c.nodes[i % 2];
        let r = http
            .get(format!("{}/v1/payment-intents", node.base))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        let limited = r.status() == StatusCode::TOO_MANY_REQUESTS;
        if limited {
            assert!(r.headers().contains_key("retry-after"));
            assert_eq!(r.headers()["x-ratelimit-limit"], "10");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["code"], "rate_limited");
        } else {
            assert_eq!(r.status(), StatusCode::OK);
        }
        answers.push(limited);
    }
    // Each node alone saw 6 requests (+ set-up), under a per-node budget of 10: only a shared
    // budget refuses the last ones.
    let refused = answers.iter().filter(|l| **l).count();
    assert_eq!(refused, 4, "{answers:?}");
    assert!(answers[..8].iter().all(|l| !l) && answers[8..].iter().all(|l| *l));
}
