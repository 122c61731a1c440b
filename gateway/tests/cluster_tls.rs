//! Cluster mode against backends that demand TLS and a login: a node connects to a Cassandra
//! node (client_encryption_options, PasswordAuthenticator) and a TLS-only Redis with a
//! password, creates and reads an intent; a wrong password or an untrusted CA, on either
//! backend, stops `ipay serve` at start-up with an error naming the cause and the setting, never
//! a panic and never the password.
//!
//! The servers are the `tls` variants of `scripts/services/{redis,cassandra}.sh`, found through
//! `IPAY_TEST_REDIS_TLS_URL`, `IPAY_TEST_CQL_TLS_ADDR`, `IPAY_TEST_CQL_TLS_USER`,
//! `IPAY_TEST_CQL_TLS_PASSWORD` and `IPAY_TEST_TLS_DIR` (set by `scripts/test.sh`), or started
//! by the test when those are unset.

mod common;

use common::procs::{BIN, MerchantSpec, sandbox_merchant, spawn_node};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The variables a `tls` service prints with `env tls`, from the environment when all are set,
/// else after starting the service.
fn tls_service(script: &str, vars: &[&str]) -> HashMap<String, String> {
    let from_env: HashMap<String, String> = vars
        .iter()
        .filter_map(|v| {
            let val = std::env::var(v).ok()?;
            (!val.trim().is_empty()).then(|| (v.to_string(), val.trim().to_string()))
        })
        .collect();
    if from_env.len() == vars.len() {
        return from_env;
    }
    let path = format!(
        "{}/../scripts/services/{script}",
        env!("CARGO_MANIFEST_DIR")
    );
    let status = Command::new(&path)
        .args(["start", "tls"])
        .status()
        .unwrap_or_else(|e| panic!("cannot run {path}: {e}"));
    assert!(status.success(), "{path} start tls failed");
    let out = Command::new(&path).args(["env", "tls"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let found: HashMap<String, String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("export ")?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches(['"', '\'']).to_string()))
        .collect();
    for v in vars {
        assert!(
            found.contains_key(*v),
            "{path} env tls printed no {v}: {text}"
        );
    }
    found
}

/// Where and how to reach the TLS backends.
struct Backends {
    cql: String,
    cql_user: String,
    cql_password: String,
    redis_url: String,
    certs: PathBuf,
}

impl Backends {
    fn get() -> Backends {
        let r = tls_service(
            "redis.sh",
            &["IPAY_TEST_REDIS_TLS_URL", "IPAY_TEST_TLS_DIR"],
        );
        let c = tls_service(
            "cassandra.sh",
            &[
                "IPAY_TEST_CQL_TLS_ADDR",
                "IPAY_TEST_CQL_TLS_USER",
                "IPAY_TEST_CQL_TLS_PASSWORD",
            ],
        );
        Backends {
            cql: c["IPAY_TEST_CQL_TLS_ADDR"].clone(),
            cql_user: c["IPAY_TEST_CQL_TLS_USER"].clone(),
            cql_password: c["IPAY_TEST_CQL_TLS_PASSWORD"].clone(),
            redis_url: r["IPAY_TEST_REDIS_TLS_URL"].clone(),
            certs: PathBuf::from(&r["IPAY_TEST_TLS_DIR"]),
        }
    }

    fn cert(&self, name: &str) -> String {
        self.certs.join(name).display().to_string()
    }

    /// An `ipay` command in cluster mode with every TLS and login setting right; tests then
    /// spoil one of them.
    fn command(&self, keyspace: &str) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env("IPAY_STORAGE__MODE", "cluster")
            .env(
                "IPAY_CLUSTER__CQL_CONTACT_POINTS",
                format!("[\"{}\"]", self.cql),
            )
            .env("IPAY_CLUSTER__KEYSPACE", keyspace)
            .env("IPAY_CLUSTER__CQL_USERNAME", &self.cql_user)
            .env("IPAY_CLUSTER__CQL_PASSWORD", &self.cql_password)
            .env("IPAY_CLUSTER__CQL_TLS", "true")
            .env("IPAY_CLUSTER__CQL_TLS_CA_FILE", self.cert("ca.pem"))
            .env("IPAY_CLUSTER__REDIS_URL", &self.redis_url)
            .env("IPAY_CLUSTER__REDIS_TLS_CA_FILE", self.cert("ca.pem"))
            .env("IPAY_ADMIN__TOKEN", "adm_tls_test")
            .env("RUST_LOG", "warn");
        cmd
    }

    fn migrate(&self, keyspace: &str) {
        let mut cmd = self.command(keyspace);
        let out = cmd.arg("migrate").output().unwrap();
        assert!(
            out.status.success(),
            "migrate over TLS failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn keyspace(tag: &str) -> String {
    format!("ipay_test_tls_{tag}_{}", std::process::id())
}

/// Runs `ipay serve` expecting it to stop by itself; returns its stderr.
fn start_fails(mut cmd: Command, dir: &std::path::Path) -> String {
    let mut child = cmd
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ipay serve still running 60 s after a start that must fail");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!status.success(), "the start succeeded: {stderr}");
    assert_eq!(status.code(), Some(1), "not a clean error exit: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_creates_and_reads_an_intent_over_tls_with_logins() {
    let b = Backends::get();
    let ks = keyspace("ok");
    b.migrate(&ks);
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = b.command(&ks);
    // Redis asks for client certificates optionally: present one, so that path is used too.
    cmd.env("IPAY_CLUSTER__REDIS_TLS_CERT_FILE", b.cert("client.pem"))
        .env("IPAY_CLUSTER__REDIS_TLS_KEY_FILE", b.cert("client.key"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .stderr(Stdio::inherit());
    let node = spawn_node(cmd);
    let http = reqwest::Client::new();
    let spec = MerchantSpec {
        admin_token: "adm_tls_test",
        merchant: "Tls",
        service: "tls",
    };
    let (key, sid) = sandbox_merchant(&http, &node.base, &node.base, spec).await;
    // An idempotency key goes through Redis (the reservation) and the ledger (the record).
    let created = http
        .post(format!("{}/v1/payment-intents", node.base))
        .bearer_auth(&key)
        .header("Idempotency-Key", "tls-create-1")
        .json(&json!({"service_id": sid, "amount": {"value": 1234, "currency": "EUR"}, "channel": "sandbox"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    let read = http
        .get(format!("{}/v1/payment-intents/{id}", node.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    let read: Value = read.json().await.unwrap();
    assert_eq!(read["amount"]["value"], 1234);
    assert_eq!(read["status"], created["status"]);
}

#[test]
fn a_wrong_cql_password_stops_the_start_with_a_clear_error() {
    let b = Backends::get();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = b.command(&keyspace("badpw"));
    cmd.env("IPAY_CLUSTER__CQL_PASSWORD", "not-the-password-x9");
    let err = start_fails(cmd, dir.path());
    assert!(err.contains("cql_password"), "{err}");
    assert!(err.to_lowercase().contains("authenticat"), "{err}");
    assert!(!err.contains("not-the-password-x9"), "{err}");
}

#[test]
fn an_untrusted_cql_ca_stops_the_start_with_a_clear_error() {
    let b = Backends::get();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = b.command(&keyspace("badca"));
    cmd.env("IPAY_CLUSTER__CQL_TLS_CA_FILE", b.cert("other-ca.pem"));
    let err = start_fails(cmd, dir.path());
    assert!(err.contains("cql_tls_ca_file"), "{err}");
    assert!(err.contains("certificate"), "{err}");
}

#[test]
fn a_wrong_redis_password_or_ca_stops_the_start_with_a_clear_error() {
    let b = Backends::get();
    let ks = keyspace("redis");
    b.migrate(&ks);
    let dir = tempfile::tempdir().unwrap();
    let (head, rest) = b.redis_url.split_once("://").unwrap();
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let wrong = format!("{head}://:not-the-password-y7@{host}");
    let mut cmd = b.command(&ks);
    cmd.env("IPAY_CLUSTER__REDIS_URL", &wrong);
    let err = start_fails(cmd, &dir.path().join("a"));
    assert!(err.contains("redis_url"), "{err}");
    assert!(!err.contains("not-the-password-y7"), "{err}");

    let mut cmd = b.command(&ks);
    cmd.env("IPAY_CLUSTER__REDIS_TLS_CA_FILE", b.cert("other-ca.pem"));
    let err = start_fails(cmd, &dir.path().join("b"));
    assert!(err.contains("redis_tls_ca_file"), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}
