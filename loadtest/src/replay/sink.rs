//! The merchants' webhook receiver: a loopback HTTP server run by the load tool. It verifies
//! both signatures of every delivery (`X-ItPay-Signature` and Standard Webhooks), remembers the
//! first arrival of each event and counts re-deliveries, so the accounting can prove that no
//! webhook was lost and that duplicates only ever repeat an event id. It does not interpret
//! events beyond the object they concern.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{Error, Result};

type HmacSha256 = Hmac<Sha256>;

/// Most distinct signature failures kept as samples.
const MAX_SAMPLES: usize = 5;

/// What the sink saw, for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SinkCounts {
    /// Deliveries received (every attempt).
    pub received: u64,
    /// Distinct event ids.
    pub unique_events: u64,
    /// Re-deliveries of an event id already received (allowed: at least once).
    pub duplicates_same_id: u64,
    /// A second event id for the same object and type (never allowed).
    pub conflicting_events: u64,
    /// Deliveries refused because a signature did not verify (answered 401).
    pub bad_signatures: u64,
    /// Deliveries to an endpoint index the sink does not know.
    pub unknown_endpoint: u64,
    /// A few reasons for refused deliveries.
    pub samples: Vec<String>,
}

#[derive(Debug, Default)]
struct Seen {
    counts: SinkCounts,
    events: HashMap<String, usize>,
    /// (object key, event type) → (event id, first arrival).
    first: HashMap<(String, String), (String, Instant)>,
}

#[derive(Debug)]
struct Shared {
    secrets: RwLock<Vec<String>>,
    seen: Mutex<Seen>,
}

/// A running sink; stopped by [`Sink::stop`] or when dropped.
#[derive(Debug)]
pub struct Sink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Sink {
    /// Binds a free loopback port and starts serving.
    pub async fn start() -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| Error::new(format!("cannot bind the webhook sink: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::new(format!("cannot read the sink's address: {e}")))?;
        let shared = Arc::new(Shared {
            secrets: RwLock::new(Vec::new()),
            seen: Mutex::new(Seen::default()),
        });
        let app = Router::new()
            .route("/hook/{idx}", post(receive))
            .with_state(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            // A serve error ends the sink; lost deliveries then show in the accounting.
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await;
        });
        Ok(Self {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The URL of endpoint number `idx` (one per merchant).
    pub fn url(&self, idx: usize) -> String {
        format!("http://{}/hook/{idx}", self.addr)
    }

    /// Registers the signing secret (`whsec_…`) of the next endpoint; returns its index.
    pub fn add_secret(&self, secret: String) -> usize {
        let mut s = self.shared.secrets.write();
        s.push(secret);
        s.len() - 1
    }

    /// Sets the secret of endpoint `idx` (created before the secret was known).
    pub fn set_secret(&self, idx: usize, secret: String) {
        let mut s = self.shared.secrets.write();
        while s.len() <= idx {
            s.push(String::new());
        }
        s[idx] = secret;
    }

    /// First arrival of the event of `kind` about `object` (an order id), if it came.
    pub fn arrival(&self, object: &str, kind: &str) -> Option<Instant> {
        self.shared
            .seen
            .lock()
            .first
            .get(&(object.to_string(), kind.to_string()))
            .map(|(_, at)| *at)
    }

    /// How many of `expected` (object, type) pairs have not arrived.
    pub fn missing<'a>(
        &self,
        expected: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> Vec<(String, String)> {
        let seen = self.shared.seen.lock();
        expected
            .filter(|(o, k)| !seen.first.contains_key(&(o.to_string(), k.to_string())))
            .map(|(o, k)| (o.to_string(), k.to_string()))
            .collect()
    }

    /// The counters so far.
    pub fn counts(&self) -> SinkCounts {
        self.shared.seen.lock().counts.clone()
    }

    /// Stops serving and waits for the server task.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn refuse(shared: &Shared, why: String) -> StatusCode {
    let mut seen = shared.seen.lock();
    seen.counts.bad_signatures += 1;
    if seen.counts.samples.len() < MAX_SAMPLES && !seen.counts.samples.contains(&why) {
        seen.counts.samples.push(why);
    }
    StatusCode::UNAUTHORIZED
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    Path(idx): Path<usize>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let received = Instant::now();
    let secret = shared
        .secrets
        .read()
        .get(idx)
        .cloned()
        .filter(|s| !s.is_empty());
    let Some(secret) = secret else {
        let mut seen = shared.seen.lock();
        seen.counts.received += 1;
        seen.counts.unknown_endpoint += 1;
        return StatusCode::NOT_FOUND;
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    if let Err(why) = verify_itpay(&secret, header("x-itpay-signature"), &body) {
        shared.seen.lock().counts.received += 1;
        return refuse(&shared, format!("X-ItPay-Signature: {why}"));
    }
    let id = header("webhook-id").to_string();
    if let Err(why) = verify_standard(
        &secret,
        &id,
        header("webhook-timestamp"),
        header("webhook-signature"),
        &body,
    ) {
        shared.seen.lock().counts.received += 1;
        return refuse(&shared, format!("webhook-signature: {why}"));
    }
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(&body) else {
        shared.seen.lock().counts.received += 1;
        return refuse(&shared, "body is not JSON".into());
    };
    let event_id = event["id"].as_str().unwrap_or_default().to_string();
    if event_id != id {
        shared.seen.lock().counts.received += 1;
        return refuse(&shared, "webhook-id differs from the body's id".into());
    }
    let kind = event["type"].as_str().unwrap_or_default().to_string();
    let object = object_of(&kind, &event["data"]);

    let mut seen = shared.seen.lock();
    seen.counts.received += 1;
    let n = seen.events.entry(event_id.clone()).or_insert(0);
    *n += 1;
    if *n > 1 {
        seen.counts.duplicates_same_id += 1;
        return StatusCode::OK;
    }
    seen.counts.unique_events += 1;
    let key = (object, kind);
    match seen.first.get(&key) {
        Some((other, _)) if *other != event_id => seen.counts.conflicting_events += 1,
        Some(_) => {}
        None => {
            seen.first.insert(key, (event_id, received));
        }
    }
    StatusCode::OK
}

/// The object an event is about, as the lifecycle knows it: the order id for order, session
/// and parcel events, the object's own id otherwise.
fn object_of(kind: &str, data: &serde_json::Value) -> String {
    let field = if kind.starts_with("order.") {
        &data["id"]
    } else if kind.starts_with("session.") || kind.starts_with("parcel.") {
        &data["order_id"]
    } else {
        &data["id"]
    };
    field.as_str().unwrap_or_default().to_string()
}

/// `t=<unix>,v1=<hex>[,v1=<hex>]`: HMAC-SHA256 of `"{t}.{body}"` keyed with the whole secret
/// string; any `v1` may match (two during a rotation).
fn verify_itpay(secret: &str, header: &str, body: &[u8]) -> std::result::Result<(), String> {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v),
            Some(("v1", v)) => sigs.push(v),
            _ => {}
        }
    }
    let t = t.ok_or("no t=")?;
    if sigs.is_empty() {
        return Err("no v1=".into());
    }
    for sig in sigs {
        let Ok(expected) = hex::decode(sig) else {
            continue;
        };
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).map_err(|e| e.to_string())?;
        mac.update(t.as_bytes());
        mac.update(b".");
        mac.update(body);
        if mac.verify_slice(&expected).is_ok() {
            return Ok(());
        }
    }
    Err("no v1 matches".into())
}

/// Standard Webhooks: base64 HMAC-SHA256 of `"{id}.{timestamp}.{body}"` keyed with the
/// base64-decoded part of the secret after `whsec_`; any `v1,` entry may match.
fn verify_standard(
    secret: &str,
    id: &str,
    timestamp: &str,
    header: &str,
    body: &[u8],
) -> std::result::Result<(), String> {
    if id.is_empty() || timestamp.is_empty() {
        return Err("webhook-id or webhook-timestamp missing".into());
    }
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|e| format!("secret is not base64: {e}"))?;
    for entry in header.split_whitespace() {
        let Some(sig) = entry.strip_prefix("v1,") else {
            continue;
        };
        let Ok(expected) = STANDARD.decode(sig) else {
            continue;
        };
        let mut mac = HmacSha256::new_from_slice(&key).map_err(|e| e.to_string())?;
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        if mac.verify_slice(&expected).is_ok() {
            return Ok(());
        }
    }
    Err("no v1 matches".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign_itpay(secret: &str, t: &str, body: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn itpay_signature_checks_body_and_secret() {
        let body = br#"{"id":"evt_1"}"#;
        let h = sign_itpay("whsec_abc", "1700000000", body);
        assert!(verify_itpay("whsec_abc", &h, body).is_ok());
        assert!(verify_itpay("whsec_abd", &h, body).is_err());
        assert!(verify_itpay("whsec_abc", &h, b"{}").is_err());
        // During a rotation the old signature comes first: any v1 may match.
        let two = format!("{},v1=00{}", h, "");
        assert!(verify_itpay("whsec_abc", &two, body).is_ok());
    }

    #[test]
    fn standard_webhooks_test_vector_verifies() {
        // The published Standard Webhooks example.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let ts = "1614265330";
        let body = br#"{"test": 2432232314}"#;
        let sig = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert!(verify_standard(secret, id, ts, sig, body).is_ok());
        assert!(verify_standard(secret, id, "1614265331", sig, body).is_err());
    }
}
