//! Test harness: a real server on a free loopback port, over a fresh embedded ledger, with a
//! manual clock; and a small JSON client.
#![allow(dead_code)]

pub mod procs;

use ipay_engine::Engine;
use ipay_engine::clock::ManualClock;
use ipay_engine::engine::{MerchantCredentials, create_merchant};
use ipay_engine::store::embedded::{EmbeddedLedger, EmbeddedOptions};
use ipay_engine::store::memory_hot::MemoryHotState;
use ipay_gateway::app::{self, RunningServer};
use ipay_gateway::config::Config;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;

pub struct TestServer {
    pub base: String,
    pub clock: ManualClock,
    pub ledger: Arc<EmbeddedLedger>,
    pub engine: Engine,
    pub http: reqwest::Client,
    server: Option<RunningServer>,
    _dir: tempfile::TempDir,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Resp {
    /// The error code of an error response.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("<none>")
    }
}

pub async fn start() -> TestServer {
    start_with(|_| {}).await
}

pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.server.listen = "127.0.0.1:0".parse().unwrap();
    cfg.storage.data_dir = dir.path().to_path_buf();
    tweak(&mut cfg);
    let ledger = EmbeddedLedger::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let clock = ManualClock::new(chrono::Utc::now().timestamp_millis());
    let engine = Engine::start(
        ledger.clone(),
        Arc::new(MemoryHotState::new()),
        Arc::new(clock.clone()),
        cfg.engine(),
    )
    .await
    .unwrap();
    let server = app::start(engine.clone(), &cfg).await.unwrap();
    TestServer {
        base: format!("http://{}", server.addr),
        clock,
        ledger,
        engine,
        http: reqwest::Client::new(),
        server: Some(server),
        _dir: dir,
    }
}

impl TestServer {
    pub async fn merchant(&self, name: &str) -> MerchantCredentials {
        create_merchant(self.ledger.as_ref(), &self.clock, name)
            .await
            .unwrap()
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        self.call_with(method, path, key, body, &[]).await
    }

    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut rb = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(k) = key {
            rb = rb.bearer_auth(k);
        }
        for (h, v) in headers {
            rb = rb.header(*h, *v);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, key: &str) -> Resp {
        self.call(Method::GET, path, Some(key), None).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(key), Some(body)).await
    }

    /// An active manifest accepting the sandbox channel.
    pub async fn active_service(&self, key: &str) -> String {
        self.active_service_for(key, &["sandbox"]).await
    }

    /// An active manifest accepting `channels`.
    pub async fn active_service_for(&self, key: &str, channels: &[&str]) -> String {
        let r = self
            .post(
                "/v1/services",
                key,
                json!({"name": format!("svc-{}", rand_suffix()), "accepted_channels": channels}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let id = r.body["id"].as_str().unwrap().to_string();
        let a = self
            .call(
                Method::PATCH,
                &format!("/v1/services/{id}/activate"),
                Some(key),
                None,
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
        id
    }

    pub async fn create_intent(&self, key: &str, service: &str, value: i64) -> Value {
        let r = self.post("/v1/payment-intents", key, json!({"service_id": service, "amount": {"value": value, "currency": "EUR"}, "channel": "sandbox"})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.body
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
        self.engine.shutdown().await;
    }
}

fn rand_suffix() -> String {
    ipay_engine::ids::EventId::new_at(0).to_string()[10..].to_string()
}

/// A last-mile account registered by a test: its JWT and ids.
#[derive(Debug, Clone)]
pub struct LastMileUser {
    pub token: String,
    pub user_id: String,
    pub merchant_id: Option<String>,
    pub email: String,
}

impl TestServer {
    /// Registers a last-mile merchant user with a new merchant named `company`; returns its JWT.
    pub async fn lastmile_merchant(&self, company: &str) -> LastMileUser {
        self.lastmile_register(json!({"role": "merchant", "company_name": company}), None)
            .await
    }

    /// Registers a last-mile user of `role` (`operator`, `driver`, `merchant`) on behalf of
    /// `registrar` (the admin token or an operator JWT), optionally attached to a merchant.
    pub async fn lastmile_user_by(
        &self,
        role: &str,
        registrar: &str,
        merchant_id: Option<&str>,
    ) -> LastMileUser {
        let mut body = json!({ "role": role });
        if let Some(m) = merchant_id {
            body["merchant_id"] = json!(m);
        }
        self.lastmile_register(body, Some(registrar)).await
    }

    async fn lastmile_register(&self, mut body: Value, registrar: Option<&str>) -> LastMileUser {
        let email = format!("u{}@example.test", rand_suffix().to_lowercase());
        body["email"] = json!(email);
        body["password"] = json!("correct horse battery");
        body["name"] = json!("Test User");
        let r = self
            .call(Method::POST, "/api/auth/register", registrar, Some(body))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        LastMileUser {
            token: r.body["token"].as_str().unwrap().to_string(),
            user_id: r.body["user"]["id"].as_str().unwrap().to_string(),
            merchant_id: r.body["user"]["merchant_id"].as_str().map(str::to_string),
            email,
        }
    }
}

// --- webhooks: the Python loopback receiver (gateway/tests/webhook_receiver.py) ---

/// The Python receiver (`webhook_receiver.py`), killed when dropped.
pub struct PyReceiver {
    child: std::process::Child,
    pub base: String,
    http: reqwest::Client,
}

impl PyReceiver {
    pub fn start() -> PyReceiver {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/webhook_receiver.py");
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("python3 is needed for the webhook receiver");
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("receiver printed nothing").unwrap();
        let port = first.strip_prefix("listening ").expect("listening line");
        PyReceiver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        }
    }

    pub async fn configure(&self, cfg: serde_json::Value) {
        let r = self
            .http
            .post(format!("{}/_config", self.base))
            .json(&cfg)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    pub async fn received(&self) -> Vec<serde_json::Value> {
        self.http
            .get(format!("{}/_received", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits (polling, bounded) until `f` holds for what was received.
    pub async fn wait(
        &self,
        what: &str,
        f: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let r = self.received().await;
            if f(&r) {
                return r;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}: {r:#?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl Drop for PyReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
