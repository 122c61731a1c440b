//! The merchants' simulated webhook receivers, plugged into the real dispatcher as its
//! [`Transport`]: every attempt is answered as the seed decides (2xx, 4xx, 5xx with or without
//! `Retry-After`, connection refused, a hang past the attempt's time limit, a slow answer, or
//! a request processed whose answer is lost, so the same event arrives again), all on tokio's
//! paused clock. What a receiver processed is kept, with its verification, for the end-of-run
//! check ("every event delivered or dropped by the schedule", `delivery.rs`).
//!
//! Each request is verified on arrival twice: with the engine's own signing functions, and
//! independently with the `hmac` crate (HMAC-SHA256 of `{t}.{body}` keyed with the whole
//! secret; Standard Webhooks over `{id}.{t}.{body}` keyed with the base64 after `whsec_`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use ipay_engine::ids::MerchantId;
use ipay_engine::webhooks::sign::{itpay_signature, standard_signature};
use ipay_engine::webhooks::transport::{Answer, SignedRequest, Transport};
use parking_lot::Mutex;
use rand::Rng;
use rand::rngs::StdRng;
use sha2::Sha256;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// What a receiver does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Ok,
    Slow,
    ClientError,
    ServerError,
    Refused,
    Hang,
    /// Processes the request, then the answer is lost (reset, or no answer in time).
    AckLost,
}

/// How an endpoint behaves over the run: per mille of requests for each behaviour, in the
/// order of [`BEHAVIOURS`]; the rest are answered 2xx at once.
#[derive(Debug, Clone, Copy)]
pub struct Profile([u32; 6]);

const BEHAVIOURS: [Behaviour; 6] = [
    Behaviour::Slow,
    Behaviour::ClientError,
    Behaviour::ServerError,
    Behaviour::Refused,
    Behaviour::Hang,
    Behaviour::AckLost,
];

impl Profile {
    /// A profile drawn from `rng`: mostly healthy, flaky, or dead (never answers 2xx).
    pub fn draw(rng: &mut StdRng) -> Profile {
        match rng.random_range(0..10) {
            0..5 => Profile([100, 30, 60, 30, 30, 40]),
            5..9 => Profile([100, 150, 200, 100, 100, 100]),
            _ => Profile([0, 250, 250, 250, 250, 0]),
        }
    }
}

/// One endpoint as its receiver knows it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: String,
    pub merchant: MerchantId,
    pub secret: String,
    pub profile: Profile,
}

/// A request a receiver processed (answered 2xx, or lost the answer after processing).
#[derive(Debug, Clone)]
pub struct Got {
    pub url: String,
    pub event_id: String,
    pub body: Vec<u8>,
}

/// Every simulated receiver of one run (shared by its lives: receivers outlive crashes).
pub struct Receivers {
    rng: Mutex<StdRng>,
    /// The dispatcher's per-attempt limit (`webhooks.timeout_ms`), which this transport
    /// enforces as the real one does.
    timeout: Duration,
    /// URL → endpoint.
    pub endpoints: Mutex<BTreeMap<String, Endpoint>>,
    pub got: Mutex<Vec<Got>>,
    /// Requests that failed verification, described.
    pub bad: Mutex<Vec<String>>,
    /// Requests seen, per behaviour.
    pub seen: Mutex<BTreeMap<&'static str, u64>>,
}

impl Receivers {
    pub fn new(rng: StdRng, timeout: Duration) -> Arc<Receivers> {
        Arc::new(Receivers {
            rng: Mutex::new(rng),
            timeout,
            endpoints: Mutex::default(),
            got: Mutex::default(),
            bad: Mutex::default(),
            seen: Mutex::default(),
        })
    }

    /// A transport for one life's dispatcher.
    pub fn transport(self: &Arc<Self>) -> Arc<dyn Transport> {
        Arc::new(SimTransport(self.clone()))
    }

    fn pick(&self, url: &str) -> (Behaviour, u64) {
        let profile = self.endpoints.lock().get(url).map(|e| e.profile);
        let mut rng = self.rng.lock();
        let Some(p) = profile else {
            return (Behaviour::Refused, 0);
        };
        let mut roll = rng.random_range(0..1000u32);
        let mut b = Behaviour::Ok;
        for (i, share) in p.0.iter().enumerate() {
            if roll < *share {
                b = BEHAVIOURS[i];
                break;
            }
            roll -= share;
        }
        (b, rng.random_range(0..u64::MAX))
    }

    fn note(&self, b: Behaviour) {
        let name = match b {
            Behaviour::Ok => "ok",
            Behaviour::Slow => "slow",
            Behaviour::ClientError => "4xx",
            Behaviour::ServerError => "5xx",
            Behaviour::Refused => "refused",
            Behaviour::Hang => "hang",
            Behaviour::AckLost => "ack_lost",
        };
        *self.seen.lock().entry(name).or_default() += 1;
    }

    /// Verifies and records a request the receiver processes.
    fn receive(&self, req: &SignedRequest) {
        let ep = self.endpoints.lock().get(&req.url).cloned();
        let Some(ep) = ep else {
            self.bad
                .lock()
                .push(format!("a request to unknown {}", req.url));
            return;
        };
        match verify(req, &ep.secret) {
            Ok(event_id) => self.got.lock().push(Got {
                url: req.url.clone(),
                event_id,
                body: req.body.clone(),
            }),
            Err(e) => self.bad.lock().push(format!("to {}: {e}", req.url)),
        }
    }

    async fn serve(&self, req: SignedRequest, b: Behaviour, r: u64) -> Answer {
        let status = |code| Answer::Status {
            code,
            retry_after: None,
        };
        let within = Duration::from_millis(r % self.timeout.as_millis().max(1) as u64);
        match b {
            Behaviour::Ok => {
                self.receive(&req);
                status([200, 201, 202, 204][(r % 4) as usize])
            }
            Behaviour::Slow => {
                tokio::time::sleep(within).await;
                self.receive(&req);
                status(200)
            }
            Behaviour::ClientError => status([400, 401, 404, 409, 422, 429][(r % 6) as usize]),
            Behaviour::ServerError => Answer::Status {
                code: [500, 502, 503, 504][(r % 4) as usize],
                retry_after: r.is_multiple_of(3).then(|| ((r >> 8) % 120).to_string()),
            },
            Behaviour::Refused => Answer::ConnectFailed,
            Behaviour::Hang => std::future::pending().await,
            Behaviour::AckLost => {
                tokio::time::sleep(within).await;
                self.receive(&req);
                if r.is_multiple_of(2) {
                    std::future::pending().await
                } else {
                    Answer::Failed("connection reset".into())
                }
            }
        }
    }
}

/// The receivers as the dispatcher's transport.
struct SimTransport(Arc<Receivers>);

#[async_trait::async_trait]
impl Transport for SimTransport {
    async fn send(&self, req: SignedRequest) -> Answer {
        let (b, r) = self.0.pick(&req.url);
        self.0.note(b);
        match tokio::time::timeout(self.0.timeout, self.0.serve(req, b, r)).await {
            Ok(a) => a,
            Err(_) => Answer::Timeout,
        }
    }
}

/// Checks both signatures of `req` with `secret`; returns the event id it carries.
fn verify(req: &SignedRequest, secret: &str) -> Result<String, String> {
    let body: serde_json::Value =
        serde_json::from_slice(&req.body).map_err(|e| format!("body is not JSON: {e}"))?;
    let id = body["id"].as_str().ok_or("body has no id")?.to_string();
    if req.header("webhook-id") != Some(id.as_str()) {
        return Err(format!(
            "webhook-id {:?} is not {id}",
            req.header("webhook-id")
        ));
    }
    let ts: i64 = req
        .header("webhook-timestamp")
        .and_then(|t| t.parse().ok())
        .ok_or("no webhook-timestamp")?;
    let itpay = req
        .header("x-itpay-signature")
        .ok_or("no x-itpay-signature")?;
    let standard = req
        .header("webhook-signature")
        .ok_or("no webhook-signature")?;
    // The engine's own signing, recomputed.
    if itpay != itpay_signature(ts, &req.body, &[secret]) {
        return Err("x-itpay-signature does not match the engine's signing".into());
    }
    if standard != standard_signature(&id, ts, &req.body, &[secret]) {
        return Err("webhook-signature does not match the engine's signing".into());
    }
    // Independently, as a merchant's verifier would.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|e| e.to_string())?;
    mac.update(format!("{ts}.").as_bytes());
    mac.update(&req.body);
    let want = hex::encode(mac.finalize().into_bytes());
    let last_v1 = itpay.rsplit(",v1=").next().unwrap_or_default();
    if !itpay.starts_with(&format!("t={ts},")) || last_v1 != want {
        return Err("x-itpay-signature fails an independent HMAC check".into());
    }
    let key = B64
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|e| format!("secret is not whsec_ base64: {e}"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&req.body);
    let want = format!("v1,{}", B64.encode(mac.finalize().into_bytes()));
    if standard != want {
        return Err("webhook-signature fails an independent HMAC check".into());
    }
    Ok(id)
}
