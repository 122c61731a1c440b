//! The callbacks scenario: PSP notifications that the engine verifies and applies, the way a
//! channel sends them after a payer paid. Today one channel: Stripe's signed
//! `payment_intent.succeeded` events (`Stripe-Signature: t=…,v1=HMAC-SHA256`).
//!
//! A run has two phases. [`precreate`] opens pending intents on the `stripe` channel over the
//! public API (the engine asks its Stripe endpoint, normally the PSP simulator, for each
//! payment), outside the measurement. [`StripeCallbacks`] then sends one correctly signed
//! success event per intent, each intent once, so every 2xx answer is one payment applied.
//! Not here: the load machinery ([`crate::driver`]) and the engine-side verification.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Uri};
use serde::Deserialize;
use sha2::Sha256;

use crate::driver::{Body, Scenario};
use crate::error::{Error, Result};
use crate::scenarios::CREATE_INTENTS_PATH;
use crate::target::Target;

/// Where the engine takes Stripe's events (the account-wide webhook endpoint).
pub const STRIPE_CALLBACK_PATH: &str = "/api/payments/webhook";
/// Most intents one run may pre-create (bounds the setup time and the memory it holds).
pub const MAX_INTENTS: usize = 5_000_000;
/// Most concurrent create requests of the setup phase.
pub const MAX_SETUP_CONCURRENCY: usize = 256;

/// A pending intent the setup phase created, as its callback needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingIntent {
    /// The engine's id (`pi_…`), sent back in `metadata.ipay_intent_id`.
    pub id: String,
    /// Amount in minor units.
    pub amount: i64,
    /// ISO 4217 code, lower case as Stripe writes it.
    pub currency: String,
    /// The channel's reference (Stripe's `pi_…`), when the engine returned one.
    pub reference: Option<String>,
}

/// What the setup phase needs to create intents.
#[derive(Debug, Clone)]
pub struct Precreate {
    /// Secret API key of the merchant (test mode for the simulator's Stripe credentials).
    pub key: String,
    /// An active service accepting the `stripe` channel.
    pub service_id: String,
    /// ISO 4217 currency of the intents.
    pub currency: String,
    /// How many intents to create.
    pub count: usize,
    /// Concurrent create requests.
    pub concurrency: usize,
    /// Limit of one create request.
    pub timeout: Duration,
}

#[derive(Deserialize)]
struct CreatedIntent {
    id: String,
    amount: CreatedAmount,
    channel_reference: Option<String>,
}

#[derive(Deserialize)]
struct CreatedAmount {
    value: i64,
    currency: String,
}

/// Creates `p.count` pending `stripe` intents on `target`; fails on the first refusal, with
/// the engine's answer, since a run on a partial set would measure something else.
pub async fn precreate(target: &Target, p: &Precreate) -> Result<Vec<PendingIntent>> {
    if p.count == 0 || p.count > MAX_INTENTS {
        return Err(Error::new(format!(
            "--intents must be between 1 and {MAX_INTENTS}"
        )));
    }
    let client = reqwest::Client::builder()
        .timeout(p.timeout)
        .build()
        .map_err(|e| Error::new(format!("cannot build the HTTP client: {e}")))?;
    let url = format!(
        "{}{CREATE_INTENTS_PATH}",
        target.url().trim_end_matches('/')
    );
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..p.concurrency.clamp(1, MAX_SETUP_CONCURRENCY) {
        let (client, url, next, p) = (client.clone(), url.clone(), next.clone(), p.clone());
        workers.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= p.count {
                    return Ok(mine);
                }
                mine.push((i, create_one(&client, &url, &p, i).await?));
            }
        });
    }
    let mut all = Vec::with_capacity(p.count);
    while let Some(joined) = workers.join_next().await {
        let mine = joined.map_err(|e| Error::new(format!("setup task failed: {e}")))??;
        all.extend(mine);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, intent)| intent).collect())
}

async fn create_one(
    client: &reqwest::Client,
    url: &str,
    p: &Precreate,
    i: usize,
) -> Result<PendingIntent> {
    let body = serde_json::json!({
        "service_id": p.service_id,
        "amount": {"value": 100 + (i % 100_000) as i64, "currency": p.currency},
        "channel": "stripe",
        "metadata": {"order": format!("cb-{i}")},
        "expires_in": 3600,
    });
    let resp = client
        .post(url)
        .bearer_auth(&p.key)
        .json(&body)
        .send()
        .await
        .map_err(|e| Error::new(format!("creating intent {i}: {e}")))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| Error::new(format!("reading the answer to intent {i}: {e}")))?;
    if status.as_u16() != 201 {
        return Err(Error::new(format!(
            "creating intent {i} answered {status}: {text}"
        )));
    }
    let created: CreatedIntent = serde_json::from_str(&text)
        .map_err(|e| Error::new(format!("the answer to intent {i} is not an intent: {e}")))?;
    Ok(PendingIntent {
        id: created.id,
        amount: created.amount.value,
        currency: created.amount.currency.to_ascii_lowercase(),
        reference: created.channel_reference,
    })
}

/// Signed `payment_intent.succeeded` events, one per pre-created intent, in order.
#[derive(Debug)]
pub struct StripeCallbacks {
    uri: Uri,
    secret: String,
    intents: Vec<PendingIntent>,
    /// Index of the next intent to pay (shared by every connection, so each is paid once).
    next: AtomicU64,
    /// Requests built after every intent had been paid (each repeats an earlier event).
    repeats: AtomicU64,
}

impl StripeCallbacks {
    /// Events for `intents`, signed with the endpoint secret `secret` (`whsec_…`), posted to
    /// `path` on `target`.
    pub fn new(
        target: &Target,
        path: &str,
        secret: &str,
        intents: Vec<PendingIntent>,
    ) -> Result<Self> {
        if !secret.starts_with("whsec_") {
            return Err(Error::new(
                "--webhook-secret must be the endpoint secret (whsec_…) the engine's Stripe \
                 channel is configured with",
            ));
        }
        if intents.is_empty() {
            return Err(Error::new("no intents to send callbacks for"));
        }
        Ok(Self {
            uri: target.join(path)?,
            secret: secret.to_string(),
            intents,
            next: AtomicU64::new(0),
            repeats: AtomicU64::new(0),
        })
    }

    /// Requests that had no unpaid intent left and repeated an earlier event; a valid
    /// measurement has none (pre-create more intents).
    pub fn repeats(&self) -> u64 {
        self.repeats.load(Ordering::Relaxed)
    }

    /// Intents whose event was sent (at most all of them).
    pub fn sent(&self) -> u64 {
        self.next
            .load(Ordering::Relaxed)
            .min(self.intents.len() as u64)
    }
}

impl Scenario for StripeCallbacks {
    fn build(&self, seq: u64, scratch: &mut BytesMut) -> Result<Request<Body>> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let len = self.intents.len() as u64;
        if n >= len {
            self.repeats.fetch_add(1, Ordering::Relaxed);
        }
        let intent = &self.intents[(n % len) as usize];
        let now = unix_now();
        write_event(scratch, intent, seq, now)?;
        let body = scratch.split().freeze();
        let signature = sign(&self.secret, now, &body)?;
        let signature = HeaderValue::try_from(signature)
            .map_err(|e| Error::new(format!("invalid signature header: {e}")))?;
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert("stripe-signature", signature);
        Ok(request)
    }
}

/// Writes a `payment_intent.succeeded` event for `intent` into `buf`. Ids and currency
/// come from the engine's own answers (`pi_…`, three letters), so they need no escaping.
fn write_event(buf: &mut BytesMut, intent: &PendingIntent, seq: u64, now: i64) -> Result<()> {
    let reference = intent.reference.as_deref().unwrap_or(&intent.id);
    buf.reserve(512);
    write!(
        buf,
        r#"{{"id":"evt_lt{now}_{seq}","object":"event","api_version":"2024-06-20","created":{now},"livemode":false,"pending_webhooks":1,"type":"payment_intent.succeeded","data":{{"object":{{"id":"{reference}","object":"payment_intent","amount":{a},"amount_received":{a},"currency":"{c}","status":"succeeded","livemode":false,"metadata":{{"ipay_intent_id":"{id}"}},"receipt_email":"payer@example.com"}}}}}}"#,
        a = intent.amount,
        c = intent.currency,
        id = intent.id,
    )
    .map_err(|_| Error::new("cannot format the event"))
}

/// `t={now},v1={hex HMAC-SHA256(secret, "{now}.{body}")}`: Stripe's signature scheme, with
/// the whole `whsec_…` string as the key.
pub fn sign(secret: &str, now: i64, body: &[u8]) -> Result<String> {
    let t = now.to_string();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .map_err(|e| Error::new(format!("cannot key the HMAC: {e}")))?;
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "t={t},v1={}",
        hex::encode(mac.finalize().into_bytes())
    ))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn intents(n: usize) -> Vec<PendingIntent> {
        (0..n)
            .map(|i| PendingIntent {
                id: format!("pi_{i:026}"),
                amount: 1000 + i as i64,
                currency: "eur".into(),
                reference: Some(format!("pi_sim{i}")),
            })
            .collect()
    }

    fn target() -> Target {
        Target::parse("http://127.0.0.1:9").expect("target")
    }

    #[test]
    fn signature_matches_an_independent_hmac() {
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"whsec_test_secret",
        //   b"1700000000.{\"a\":1}", hashlib.sha256).hexdigest())'
        let header = sign("whsec_test_secret", 1_700_000_000, br#"{"a":1}"#).expect("signed");
        assert_eq!(
            header,
            "t=1700000000,v1=aecbc681fe3d2604c08ff8e880a0988d997a12367fcf9545e6a3b90c1dfc04b7"
        );
    }

    #[tokio::test]
    async fn each_event_is_signed_valid_json_for_the_next_intent() {
        let s = StripeCallbacks::new(
            &target(),
            STRIPE_CALLBACK_PATH,
            "whsec_abcdefghijkl",
            intents(3),
        )
        .expect("scenario");
        let mut scratch = BytesMut::new();
        for (seq, want) in intents(3).iter().enumerate() {
            let req = s.build(seq as u64 + 40, &mut scratch).expect("request");
            assert_eq!(req.uri(), STRIPE_CALLBACK_PATH);
            let header = req.headers()["stripe-signature"]
                .to_str()
                .expect("ascii")
                .to_string();
            let body = match req.into_body().collect().await {
                Ok(c) => c.to_bytes(),
                Err(never) => match never {},
            };
            let t: i64 = header[2..header.find(',').expect("comma")]
                .parse()
                .expect("t");
            // `sign` itself is checked against Python's hmac above.
            let want_header = sign("whsec_abcdefghijkl", t, &body).expect("signed");
            assert_eq!(header, want_header);
            let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            assert_eq!(v["type"], "payment_intent.succeeded");
            let object = &v["data"]["object"];
            assert_eq!(object["metadata"]["ipay_intent_id"], want.id.as_str());
            assert_eq!(object["amount_received"], want.amount);
            assert_eq!(object["currency"], "eur");
            assert_eq!(object["id"], want.reference.as_deref().expect("reference"));
        }
        assert_eq!((s.sent(), s.repeats()), (3, 0));
        s.build(99, &mut scratch).expect("a fourth request repeats");
        assert_eq!((s.sent(), s.repeats()), (3, 1));
    }

    #[test]
    fn refuses_a_secret_that_is_not_an_endpoint_secret() {
        assert!(
            StripeCallbacks::new(&target(), STRIPE_CALLBACK_PATH, "sk_test_x", intents(1)).is_err()
        );
        assert!(
            StripeCallbacks::new(&target(), STRIPE_CALLBACK_PATH, "whsec_x", Vec::new()).is_err()
        );
    }
}
