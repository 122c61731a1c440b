//! Faults under traffic in cluster mode: an `ipay serve` node keeps answering while its Redis or
//! its Cassandra goes away, and recovers on its own when the server returns.
//!
//! Each test starts the servers it breaks as PRIVATE instances (a `redis-server` child on a free
//! port; a Cassandra node through `scripts/services/cassandra.sh` with its own
//! `IPAY_SERVICES_DIR`), so the shared ones from `scripts/services/` are never disturbed. Guards
//! kill whatever a test started, also when it fails.
//!
//! While a fault lasts, a few clients keep creating intents (with `Idempotency-Key`s) and settling
//! them through the sandbox. Every answer must be a success or a 503 `store_unavailable` with
//! `Retry-After`, given within [`FAULT_ANSWER_BOUND`] (the stores' bound is 1 s); after the server
//! returns, service resumes without restarting the node, and every intent the node acknowledged
//! (201, then 200 for a settle) reads back with the acknowledged state.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ipay");
const ADMIN_TOKEN: &str = "adm_faults_test";
/// Longest any answer may take while a store is away: the stores bound each call by 1 s, and a
/// request makes at most a couple of calls in a row; the rest is slack for a loaded 2-core box.
const FAULT_ANSWER_BOUND: Duration = Duration::from_millis(2_500);
/// Concurrent clients creating and settling intents.
const CLIENTS: usize = 4;

/// The tests of this file run one at a time: they check time bounds, and a Cassandra starting
/// on the same two cores would slow the other test's stores past them.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ------------------------------------------------------------------ private servers

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// True once `kill -0 pid` fails (the process is gone) — works for processes that are not our
/// children (the Cassandra JVM is started in its own session by its script).
fn pid_gone(pid: u32) -> bool {
    !Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        || std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true)
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid} failed");
}

/// Polls `ready` every 50 ms until it holds; panics with `what` after `limit`.
fn wait_until(limit: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `redis-server` child process on a fixed loopback port, without persistence (like the
/// shared one): a restart comes back empty, which cluster mode must tolerate.
struct PrivateRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Mutex<Option<Child>>,
}

impl PrivateRedis {
    fn start() -> Self {
        let r = PrivateRedis {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: Mutex::new(None),
        };
        r.restart();
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

    /// Starts (again) on the same port and waits for `PONG`.
    fn restart(&self) {
        let mut slot = self.child.lock().unwrap();
        assert!(slot.is_none(), "redis is already running");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server not found: run scripts/services/redis.sh start once to install it",
            );
        *slot = Some(child);
        drop(slot);
        wait_until(
            Duration::from_secs(20),
            "the private redis-server to answer PING",
            || self.answers(),
        );
    }

    fn pid(&self) -> u32 {
        self.child
            .lock()
            .unwrap()
            .as_ref()
            .expect("redis is not running")
            .id()
    }

    /// `kill -9`, and waits until it is gone.
    fn kill(&self) {
        let child = self.child.lock().map(|mut c| c.take());
        if let Ok(Some(mut c)) = child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn services_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../scripts/services/{name}"))
}

/// A single-node Cassandra in a private state directory, started by `cassandra.sh`. Its data
/// survives a restart (same directory, same port).
struct PrivateCassandra {
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivateCassandra {
    fn start() -> Self {
        let c = PrivateCassandra {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
        };
        c.run_script("start");
        c
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn run_script(&self, action: &str) {
        let script = services_script("cassandra.sh");
        let out = Command::new(&script)
            .arg(action)
            .env("IPAY_SERVICES_DIR", self.dir.path())
            .env("IPAY_CASSANDRA_PORT", self.port.to_string())
            .env("IPAY_CASSANDRA_HEAP", "512M")
            // Acknowledged writes and the schema must survive kill -9 of this single node:
            // sync the commit log before acknowledging, and keep the schema in it too.
            .env("IPAY_CASSANDRA_COMMITLOG_SYNC", "batch")
            .env("IPAY_CASSANDRA_UNSAFE_SYSTEM", "0")
            .env("IPAY_CASSANDRA_START_TIMEOUT", "90")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "cassandra.sh {action} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The JVM's pid while the script's pidfile names one.
    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join("cassandra/cassandra.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn signal(&self, sig: &str) {
        signal(self.pid().expect("cassandra is not running"), sig);
    }

    /// `kill -9` (a throwaway node needs no drain) and waits until the JVM is gone.
    fn kill(&self) {
        if let Some(pid) = self.pid()
            && !pid_gone(pid)
        {
            signal(pid, "KILL");
            wait_until(Duration::from_secs(20), "the Cassandra JVM to exit", || {
                pid_gone(pid)
            });
        }
    }
}

impl Drop for PrivateCassandra {
    fn drop(&mut self) {
        if let Some(pid) = self.pid()
            && !pid_gone(pid)
        {
            // KILL also ends a stopped (SIGSTOP) process. No assert: we may be unwinding.
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while !pid_gone(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// The shared Cassandra's address from `IPAY_TEST_CQL_ADDR` (set by `scripts/test.sh`), else
/// from `cassandra.sh` after starting it. Only a private keyspace is created on it.
fn shared_cassandra() -> String {
    if let Ok(v) = std::env::var("IPAY_TEST_CQL_ADDR")
        && !v.trim().is_empty()
    {
        return v.trim().to_string();
    }
    let script = services_script("cassandra.sh");
    let ok = Command::new(&script)
        .arg("start")
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{} start failed", script.display());
    let out = Command::new(&script).arg("env").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("export IPAY_TEST_CQL_ADDR="))
        .map(|v| v.trim_matches(['"', '\'']).to_string())
        .unwrap_or_else(|| panic!("cassandra.sh env printed no address: {text}"))
}

// ------------------------------------------------------------------ the node

fn cluster_env(cmd: &mut Command, cql: &str, redis: &str, keyspace: &str) {
    cmd.env("IPAY_STORAGE__MODE", "cluster")
        .env("IPAY_CLUSTER__CQL_CONTACT_POINTS", format!("[\"{cql}\"]"))
        .env("IPAY_CLUSTER__KEYSPACE", keyspace)
        .env("IPAY_CLUSTER__REDIS_URL", redis)
        .env("IPAY_ADMIN__TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "warn");
}

fn migrate(cql: &str, redis: &str, keyspace: &str) {
    let mut cmd = Command::new(BIN);
    cmd.arg("migrate");
    cluster_env(&mut cmd, cql, redis, keyspace);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "ipay migrate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One `ipay serve` process in cluster mode; its log goes to a file (faults make it chatty).
struct Node {
    child: Child,
    base: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start(cql: &str, redis: &str, keyspace: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("ipay.log");
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"));
        cluster_env(&mut cmd, cql, redis, keyspace);
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn ipay serve");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = match lines.next() {
            Some(Ok(l)) => l,
            _ => panic!(
                "ipay serve printed nothing; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        };
        let base = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("{first}"))
            .to_string();
        std::thread::spawn(move || for _ in lines {});
        Node {
            child,
            base,
            log,
            _dir: dir,
        }
    }

    /// Panics (with the log's tail) unless the process is still running.
    fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "ipay serve exited ({status}); last log lines:\n{}",
                self.log_tail()
            );
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Panics if the log shows a panic.
    fn assert_no_panic(&self) {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(
            !log.contains("panicked"),
            "ipay serve panicked; its log:\n{log}"
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("last lines of the node's log:\n{}", self.log_tail());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------ traffic

/// What the node acknowledged about one intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Acked {
    /// 201 on create; no settle answered yet.
    Pending,
    /// 201, then a settle that failed with 503: it may or may not have landed.
    PendingOrSucceeded,
    /// 200 on settle.
    Succeeded,
}

/// One answer seen by a client.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    took: Duration,
    status: u16,
    code: String,
    retry_after: bool,
}

#[derive(Default)]
struct Log {
    answers: Vec<Seen>,
    /// Transport errors (no HTTP answer at all): always a failure.
    transport_errors: Vec<String>,
    acked: HashMap<String, Acked>,
}

impl Log {
    fn count(&self, since: Instant, f: impl Fn(&Seen) -> bool) -> usize {
        self.answers
            .iter()
            .filter(|s| s.at >= since && f(s))
            .count()
    }
}

struct Traffic {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Log>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

async fn send(log: &Mutex<Log>, req: reqwest::RequestBuilder) -> Option<(StatusCode, Value)> {
    let started = Instant::now();
    let r = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            log.lock().unwrap().transport_errors.push(format!("{e:?}"));
            return None;
        }
    };
    let status = r.status();
    let retry_after = r.headers().contains_key("retry-after");
    let body: Value = r.json().await.unwrap_or(Value::Null);
    let took = started.elapsed();
    let code = body["error"]["code"].as_str().unwrap_or("").to_string();
    log.lock().unwrap().answers.push(Seen {
        at: started,
        took,
        status: status.as_u16(),
        code,
        retry_after,
    });
    Some((status, body))
}

impl Traffic {
    /// `CLIENTS` loops, each: create an intent with a fresh Idempotency-Key (retrying the same
    /// key after a 503, as a client should), then settle it once.
    fn start(base: &str, key: &str, service: &str) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Log::default()));
        // No answer within 10 s counts as a hang (a transport error).
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let workers = (0..CLIENTS)
            .map(|w| {
                let (stop, log, http) = (stop.clone(), log.clone(), http.clone());
                let (base, key) = (base.to_string(), key.to_string());
                let body = json!({"service_id": service, "amount": {"value": 1500, "currency": "EUR"}, "channel": "sandbox"});
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let idem = format!("faults-{w}-{n}");
                        let req = http
                            .post(format!("{base}/v1/payment-intents"))
                            .bearer_auth(&key)
                            .header("Idempotency-Key", &idem)
                            .json(&body);
                        let Some((status, v)) = send(&log, req).await else {
                            continue;
                        };
                        if status != StatusCode::CREATED {
                            // Same key again next round; pause a little as Retry-After asks
                            // (shortened: the test wants many samples).
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                        n += 1;
                        let id = v["id"].as_str().unwrap().to_string();
                        log.lock().unwrap().acked.entry(id.clone()).or_insert(Acked::Pending);
                        let req = http
                            .post(format!("{base}/v1/sandbox/payment-intents/{id}/succeed"))
                            .bearer_auth(&key);
                        let settled = send(&log, req).await;
                        let mut l = log.lock().unwrap();
                        let state = l.acked.get_mut(&id).unwrap();
                        match settled {
                            Some((StatusCode::OK, _)) => *state = Acked::Succeeded,
                            _ if *state == Acked::Pending => *state = Acked::PendingOrSucceeded,
                            _ => {}
                        }
                    }
                })
            })
            .collect();
        Traffic { stop, log, workers }
    }

    /// Waits (bounded) until `n` answers matching `f` have been seen since `since`.
    async fn wait_for(
        &self,
        n: usize,
        since: Instant,
        limit: Duration,
        what: &str,
        f: impl Fn(&Seen) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        loop {
            let (seen, last) = {
                let log = self.log.lock().unwrap();
                let last: Vec<Seen> = log.answers.iter().rev().take(5).cloned().collect();
                (log.count(since, &f), last)
            };
            if seen >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {seen} of {n} {what} within {limit:?}; last answers: {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn finish(self) -> Log {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.unwrap();
        }
        Arc::try_unwrap(self.log)
            .ok()
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

fn is_success(s: &Seen) -> bool {
    s.status == 200 || s.status == 201
}

/// The fault window's verdict: every answer was a success or a 503 `store_unavailable` with `Retry-After`, within the bound. Returns the
/// slowest 503 (for the report).
fn check_answers(log: &Log, from: Instant) -> Duration {
    assert!(
        log.transport_errors.is_empty(),
        "requests got no HTTP answer (hang or dropped connection): {:?}",
        log.transport_errors
    );
    let mut slowest = Duration::ZERO;
    for s in log.answers.iter().filter(|s| s.at >= from) {
        match s.status {
            200 | 201 => {}
            503 => {
                assert_eq!(s.code, "store_unavailable", "503 with another code: {s:?}");
                assert!(s.retry_after, "503 without Retry-After: {s:?}");
                slowest = slowest.max(s.took);
            }
            _ => panic!("unexpected answer during a store fault: {s:?}"),
        }
        assert!(
            s.took <= FAULT_ANSWER_BOUND,
            "an answer took {:?} (bound {FAULT_ANSWER_BOUND:?}): {s:?}",
            s.took
        );
    }
    slowest
}

/// Every intent the node acknowledged reads back with the acknowledged state.
async fn check_acknowledged(base: &str, key: &str, log: &Log) {
    let http = reqwest::Client::new();
    assert!(!log.acked.is_empty());
    for (id, acked) in &log.acked {
        let r = http
            .get(format!("{base}/v1/payment-intents/{id}"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let code = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(
            code,
            StatusCode::OK,
            "acknowledged intent {id} ({acked:?}) is not readable: {v}"
        );
        let status = v["status"].as_str().unwrap();
        let ok = match acked {
            Acked::Pending => status == "pending",
            Acked::PendingOrSucceeded => status == "pending" || status == "succeeded",
            Acked::Succeeded => status == "succeeded",
        };
        assert!(
            ok,
            "intent {id} was acknowledged as {acked:?} but reads {status}"
        );
    }
}

/// A merchant with an active sandbox service, made through the node: (secret key, service id).
async fn merchant_and_service(base: &str) -> (String, String) {
    let creds = setup_call(
        reqwest::Method::POST,
        &format!("{base}/v1/admin/merchants"),
        ADMIN_TOKEN,
        Some(json!({"name": "Faults"})),
    )
    .await;
    let key = creds["test_secret_key"].as_str().unwrap().to_string();
    let svc = setup_call(
        reqwest::Method::POST,
        &format!("{base}/v1/services"),
        &key,
        Some(json!({"name": "faults", "accepted_channels": ["sandbox"]})),
    )
    .await;
    let sid = svc["id"].as_str().unwrap().to_string();
    let url = format!("{base}/v1/services/{sid}/activate");
    setup_call(reqwest::Method::PATCH, &url, &key, None).await;
    (key, sid)
}

/// A set-up request that must succeed; 503s (a store slow to answer while the other test's
/// Cassandra starts on the same two cores) are retried for up to 30 s.
async fn setup_call(
    method: reqwest::Method,
    url: &str,
    bearer: &str,
    body: Option<Value>,
) -> Value {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut req = http.request(method.clone(), url).bearer_auth(bearer);
        if let Some(b) = &body {
            req = req.json(b);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return v;
        }
        assert!(
            status == StatusCode::SERVICE_UNAVAILABLE && Instant::now() < deadline,
            "{method} {url}: {status} {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs one fault against running traffic: `break_it`, wait for 503s, `repair`, wait until
/// service is back. Returns (slowest 503, time from repair to the first success).
async fn fault(
    name: &str,
    traffic: &Traffic,
    node: &mut Node,
    break_it: impl FnOnce(),
    repair: impl FnOnce(),
) -> (Duration, Duration) {
    traffic
        .wait_for(
            10,
            Instant::now(),
            Duration::from_secs(30),
            "successes before the fault",
            is_success,
        )
        .await;
    let broken = Instant::now();
    break_it();
    // Answers that started after the break and are store failures.
    traffic
        .wait_for(
            8,
            broken,
            Duration::from_secs(20),
            "503s during the fault",
            |s| s.status == 503,
        )
        .await;
    node.assert_alive();
    let repairing = Instant::now();
    repair();
    let repaired = Instant::now();
    // Recovery without touching the node: creates and settles succeed again.
    traffic
        .wait_for(
            20,
            repaired,
            Duration::from_secs(60),
            "successes after the repair",
            is_success,
        )
        .await;
    node.assert_alive();
    let log = traffic.log.lock().unwrap();
    let slowest = check_answers(&log, broken);
    let first_ok = log
        .answers
        .iter()
        .filter(|s| s.at >= repaired && is_success(s))
        .map(|s| s.at + s.took)
        .min()
        .unwrap();
    let back = first_ok.duration_since(repaired);
    let n503 = log.count(broken, |s| s.status == 503);
    println!(
        "{name}: {n503} answers 503 store_unavailable, slowest {slowest:?}; repair took {:?}; \
         first success {back:?} after it",
        repaired - repairing
    );
    (slowest, back)
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_hung_or_killed_under_traffic_gives_503_and_recovers_without_losing_acknowledged_intents()
 {
    let _serial = ONE_AT_A_TIME.lock().await;
    let redis = PrivateRedis::start();
    let cql = shared_cassandra();
    let keyspace = format!("ipay_faults_redis_{}", std::process::id());
    migrate(&cql, &redis.url(), &keyspace);
    let mut node = Node::start(&cql, &redis.url(), &keyspace);
    let (key, service) = merchant_and_service(&node.base).await;

    let traffic = Traffic::start(&node.base, &key, &service);
    // A hang: connections stay open, nothing answers.
    let pid = redis.pid();
    fault(
        "redis SIGSTOP",
        &traffic,
        &mut node,
        || signal(pid, "STOP"),
        || signal(pid, "CONT"),
    )
    .await;
    // A crash: connections are refused until it is back, empty, on the same port.
    fault(
        "redis kill -9",
        &traffic,
        &mut node,
        || redis.kill(),
        || redis.restart(),
    )
    .await;
    let log = traffic.finish().await;
    node.assert_alive();
    node.assert_no_panic();
    check_acknowledged(&node.base, &key, &log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cassandra_hung_or_killed_under_traffic_gives_503_and_recovers_without_losing_acknowledged_intents()
 {
    let _serial = ONE_AT_A_TIME.lock().await;
    let redis = PrivateRedis::start();
    let cassandra = PrivateCassandra::start();
    let keyspace = "ipay_faults";
    migrate(&cassandra.addr(), &redis.url(), keyspace);
    let mut node = Node::start(&cassandra.addr(), &redis.url(), keyspace);
    let (key, service) = merchant_and_service(&node.base).await;

    let traffic = Traffic::start(&node.base, &key, &service);
    // A hang: the JVM is frozen, connections stay open, nothing answers.
    fault(
        "cassandra SIGSTOP",
        &traffic,
        &mut node,
        || cassandra.signal("STOP"),
        || cassandra.signal("CONT"),
    )
    .await;
    // A crash: connections are refused until the node is back (same port, same data).
    fault(
        "cassandra kill -9",
        &traffic,
        &mut node,
        || cassandra.kill(),
        || cassandra.run_script("start"),
    )
    .await;
    let log = traffic.finish().await;
    node.assert_alive();
    node.assert_no_panic();
    check_acknowledged(&node.base, &key, &log).await;
}
