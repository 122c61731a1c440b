//! Sessions settle from the intent's committed event: a marker a crash left behind is applied
//! when last mile starts again, and on two cluster nodes (shared Cassandra + Redis) a session
//! is settled once even when both nodes apply its marker at the same moment.
//!
//! The cluster test takes its servers from `IPAY_TEST_CQL_ADDR` / `IPAY_TEST_REDIS_URL` (set by
//! `scripts/test.sh`; `scripts/services/*.sh` start them).

mod common;

use common::Resp;
use common::procs::service;
use ipay_engine::AuthContext;
use ipay_engine::Engine;
use ipay_engine::clock::{SystemClock, Timestamp};
use ipay_engine::ids::{ApiKeyId, MerchantId, PaymentIntentId, PaymentSessionId};
use ipay_engine::model::{ApiKey, Permission};
use ipay_engine::store::cql::CqlLedger;
use ipay_engine::store::redis_hot::{RedisHotState, RedisOptions};
use ipay_engine::store::{EntryRange, Ledger};
use ipay_gateway::config::{Config, StorageMode};
use ipay_lastmile::LastMile;
use ipay_lastmile::sessions::settle::Marker;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const ADMIN: &str = "admin-token-for-settle-0123456789";

fn ctx(merchant: &str) -> AuthContext {
    let m = MerchantId::parse(merchant).unwrap();
    AuthContext {
        merchant_id: m,
        livemode: false,
        key: ApiKey {
            id: ApiKeyId::new_at(0),
            label: "test".into(),
            redacted: "test".into(),
            permissions: Permission::ALL.to_vec(),
            ip_whitelist: vec![],
            livemode: false,
            merchant_id: m,
            created: Timestamp(0),
            expires_at: Timestamp(i64::MAX / 2),
            revoked_at: None,
        },
    }
}

/// A JSON client of one node.
struct Http {
    base: String,
    http: reqwest::Client,
}

impl Http {
    fn new(base: String) -> Http {
        Http {
            base,
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, m: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
        let mut rb = self.http.request(m, format!("{}{path}", self.base));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let body = r.json().await.unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
        }
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    async fn get(&self, path: &str, token: &str) -> Resp {
        self.call(Method::GET, path, Some(token), None).await
    }

    /// Registers a last-mile merchant: (JWT, merchant id).
    async fn merchant(&self, company: &str) -> (String, String) {
        let email = format!(
            "{}@example.test",
            PaymentIntentId::new_at(0).to_string().to_lowercase()
        );
        let body = json!({"role": "merchant", "company_name": company, "email": email,
            "password": "correct horse battery", "name": "Test User"});
        let r = self
            .call(Method::POST, "/api/auth/register", None, Some(body))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        (
            r.body["token"].as_str().unwrap().to_string(),
            r.body["user"]["merchant_id"].as_str().unwrap().to_string(),
        )
    }
}

/// A session awaiting a sandbox payment: (session id, intent id).
async fn pending_session(srv: &Http, token: &str) -> (String, String) {
    let order = json!({
        "customer": {"name": "Jan de Vries",
            "address": {"line1": "Damrak 1", "city": "Amsterdam", "postal_code": "1012 LG", "country": "NL"}},
        "items": [{"sku": "MUG", "name": "Mug", "qty": 1, "unit_price": 2599}],
        "amount": {"value": 2599, "currency": "EUR"}, "carrier_code": "DHL", "ipay_flag": true
    });
    let o = srv.post("/api/orders", token, order).await;
    assert_eq!(o.status, StatusCode::CREATED, "{:?}", o.body);
    let oid = o.body["id"].as_str().unwrap();
    let path = format!("/api/orders/{oid}/create-session");
    let s = srv.call(Method::POST, &path, Some(token), None).await;
    assert_eq!(s.status, StatusCode::CREATED, "{:?}", s.body);
    let pay = s.body["pay_url"]
        .as_str()
        .unwrap()
        .rsplit("/pay/")
        .next()
        .unwrap();
    let start = format!("/api/session/{pay}/start-payment");
    let r = srv
        .call(
            Method::POST,
            &start,
            None,
            Some(json!({"channel": "sandbox"})),
        )
        .await;
    assert_eq!(r.body["status"], "PAYMENT_PENDING", "{:?}", r.body);
    let id = s.body["id"].as_str().unwrap().to_string();
    let d = srv.get(&format!("/api/payment-sessions/{id}"), token).await;
    (id, d.body["payment_intent"].as_str().unwrap().to_string())
}

/// Every settle marker in the ledger.
async fn markers(ledger: &dyn Ledger) -> Vec<String> {
    let mut out = Vec::new();
    for p in 0..16 {
        let page = ledger
            .scan_entries("lm_settle", &p.to_string(), &EntryRange::all(1_000))
            .await
            .unwrap();
        out.extend(page.into_iter().map(|(s, _)| s));
    }
    out
}

/// The stored session, read from the ledger (a read through last mile would settle it).
async fn stored(ledger: &dyn Ledger, id: &str) -> Value {
    let raw = ledger.get_record("lm_session", id).await.unwrap().unwrap();
    serde_json::from_slice(&raw).unwrap()
}

/// How many `session.paid` entries the session's log holds.
async fn paid_entries(ledger: &dyn Ledger, id: &str) -> usize {
    let log = ledger
        .scan_entries("lm_session_log", id, &EntryRange::all(1_000))
        .await
        .unwrap();
    log.iter()
        .filter(|(_, v)| serde_json::from_slice::<Value>(v).unwrap()["type"] == "session.paid")
        .count()
}

/// Waits (on the consumer's signal, never a sleep) until `lm` has processed `n` markers.
async fn settled(lm: &LastMile, n: u64) {
    let mut rx = lm.settled_markers();
    tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|v| *v >= n))
        .await
        .expect("no marker settled within 20 s")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marker_left_by_a_crash_settles_the_session_when_last_mile_starts_again() {
    // This node commits markers but settles none: as if it died right after the intent's
    // success was committed and before the session's update.
    let srv = common::start_with(|c| {
        c.admin.token = ADMIN.into();
        c.lastmile.sessions.settle_concurrency = 0;
    })
    .await;
    let http = Http::new(srv.base.clone());
    let (token, m) = http.merchant("Crash Shop").await;
    let (id, intent) = pending_session(&http, &token).await;
    srv.engine
        .sandbox_settle(&ctx(&m), &intent, true)
        .await
        .unwrap();
    let ledger: &dyn Ledger = srv.ledger.as_ref();
    assert_eq!(markers(ledger).await, vec![format!("{id}:{intent}")]);
    assert_eq!(stored(ledger, &id).await["status"], "PAYMENT_PENDING");

    // Last mile starts again over the same ledger, with an empty queue: its start-up scan
    // finds the marker, and nobody reads the session.
    let lm = LastMile::start(&srv.engine, Default::default())
        .await
        .unwrap();
    settled(&lm, 1).await;
    let s = stored(ledger, &id).await;
    assert_eq!(s["status"], "PAID", "{s}");
    assert_eq!(s["paid_intent"], intent);
    assert!(markers(ledger).await.is_empty());
    assert_eq!(paid_entries(ledger, &id).await, 1);
    let order = http
        .get(
            &format!("/api/orders/{}", s["order_id"].as_str().unwrap()),
            &token,
        )
        .await;
    assert_eq!(order.body["status"], "PAID", "{:?}", order.body);
    srv.stop().await;
}

/// One cluster node: an engine on the shared keyspace and Redis.
async fn cluster_engine(cfg: &Config, redis: &str) -> (Engine, Arc<CqlLedger>) {
    let ledger = CqlLedger::connect(cfg.cql()).await.unwrap();
    let opts = RedisOptions {
        prefix: format!("ipay:{}:", cfg.cluster.keyspace),
        ..RedisOptions::default()
    };
    let hot = RedisHotState::connect(redis, opts).await.unwrap();
    let engine = Engine::start(ledger.clone(), hot, Arc::new(SystemClock), cfg.engine())
        .await
        .unwrap();
    (engine, ledger)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_two_cluster_nodes_a_session_is_settled_once() {
    let cql = service("IPAY_TEST_CQL_ADDR", "cassandra.sh");
    let redis = service("IPAY_TEST_REDIS_URL", "redis.sh");
    let mut cfg = Config::default();
    cfg.storage.mode = StorageMode::Cluster;
    cfg.cluster.cql_contact_points = vec![cql];
    cfg.cluster.keyspace = format!("ipay_test_settle_{}", std::process::id());
    cfg.cluster.redis_url = redis.clone();
    cfg.admin.token = ADMIN.into();
    cfg.server.listen = "127.0.0.1:0".parse().unwrap();
    cfg.lastmile.jwt_secret = Some("settle-test-jwt-secret-0123456789abcdef".into());
    CqlLedger::migrate(&cfg.cql()).await.unwrap();

    // Node A serves HTTP; node B only settles.
    let (ea, la) = cluster_engine(&cfg, &redis).await;
    let (eb, _lb) = cluster_engine(&cfg, &redis).await;
    let server = ipay_gateway::app::start(ea.clone(), &cfg).await.unwrap();
    let lm_b = LastMile::start(&eb, cfg.lastmile.clone()).await.unwrap();
    let lm_a = LastMile::start(&ea, cfg.lastmile.clone()).await.unwrap();
    let http = Http::new(format!("http://{}", server.addr));
    let (token, m) = http.merchant("Cluster Shop").await;
    let (id, intent) = pending_session(&http, &token).await;

    // The payment succeeds on node B: B commits the event and its marker, and B's consumer
    // settles it; node A applies the same marker at the same moment (as its sweep would).
    eb.sandbox_settle(&ctx(&m), &intent, true).await.unwrap();
    let marker = Marker {
        session: PaymentSessionId::parse(&id).unwrap(),
        intent: PaymentIntentId::parse(&intent).unwrap(),
        at_ms: 0,
    };
    lm_a.settle_marker(marker).await.unwrap();
    settled(&lm_b, 1).await;

    let ledger: &dyn Ledger = la.as_ref();
    let s = stored(ledger, &id).await;
    assert_eq!(s["status"], "PAID", "{s}");
    assert_eq!(paid_entries(ledger, &id).await, 1);
    assert!(markers(ledger).await.is_empty());
    server.stop().await;
    ea.shutdown().await;
    eb.shutdown().await;
}
