//! The concrete request builders: creating payment intents the way a
//! merchant integration would, and plain `GET`s of one path.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http_body_util::Full;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Uri};

use crate::driver::{Body, Scenario};
use crate::error::{Error, Result};
use crate::target::Target;

/// Path of the create-intent endpoint.
pub const CREATE_INTENTS_PATH: &str = "/v1/payment-intents";

/// Smallest amount (minor units) a generated intent asks for.
const MIN_AMOUNT: u64 = 100;
/// Largest amount (minor units) a generated intent asks for.
const MAX_AMOUNT: u64 = 100_000;

/// Settings of the create-intents scenario.
#[derive(Debug, Clone)]
pub struct CreateIntentsConfig {
    /// Secret API key sent as `Authorization: Bearer <key>`.
    pub key: String,
    /// Service the intents are created for.
    pub service_id: String,
    /// ISO 4217 currency code (three upper-case letters).
    pub currency: String,
    /// Payment channel, e.g. `sandbox`.
    pub channel: String,
    /// Send a unique `Idempotency-Key` with every request.
    pub idempotency: bool,
}

/// `POST /v1/payment-intents` with a varying amount and order number.
///
/// The body is assembled from pre-rendered, pre-escaped fragments and the
/// two numbers, in the connection's reusable scratch buffer.
#[derive(Debug)]
pub struct CreateIntents {
    uri: Uri,
    authorization: HeaderValue,
    /// `{"service_id":…,"amount":{"value":`
    head: Bytes,
    /// `,"currency":…},"channel":…,"metadata":{"order":"lt-`
    middle: Bytes,
    /// `"},"expires_in":900}`
    tail: Bytes,
    /// `lt-<run id>-`, present when idempotency keys are sent.
    idempotency_prefix: Option<Bytes>,
}

impl CreateIntents {
    /// Validates `config` and pre-renders everything that does not change
    /// between requests.
    pub fn new(target: &Target, config: &CreateIntentsConfig) -> Result<Self> {
        if config.key.trim().is_empty() {
            return Err(Error::new("--key must not be empty"));
        }
        let authorization = HeaderValue::try_from(format!("Bearer {}", config.key))
            .map_err(|_| Error::new("--key contains characters not allowed in a header"))?;
        if config.service_id.trim().is_empty() {
            return Err(Error::new("--service-id must not be empty"));
        }
        if config.currency.len() != 3 || !config.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(Error::new(format!(
                "--currency must be three upper-case letters (e.g. EUR), got `{}`",
                config.currency
            )));
        }
        if config.channel.trim().is_empty() {
            return Err(Error::new("--channel must not be empty"));
        }
        let head = format!(
            r#"{{"service_id":{},"amount":{{"value":"#,
            json_string(&config.service_id)?
        );
        let middle = format!(
            r#","currency":{}}},"channel":{},"metadata":{{"order":"lt-"#,
            json_string(&config.currency)?,
            json_string(&config.channel)?
        );
        let tail = r#""},"expires_in":900}"#;
        let idempotency_prefix = config
            .idempotency
            .then(|| Bytes::from(format!("lt-{:016x}-", run_id())));
        Ok(Self {
            uri: target.join(CREATE_INTENTS_PATH)?,
            authorization,
            head: Bytes::from(head),
            middle: Bytes::from(middle),
            tail: Bytes::from_static(tail.as_bytes()),
            idempotency_prefix,
        })
    }
}

impl Scenario for CreateIntents {
    fn build(&self, seq: u64, scratch: &mut BytesMut) -> Result<Request<Body>> {
        let idempotency_key = match &self.idempotency_prefix {
            Some(prefix) => {
                scratch.reserve(prefix.len() + 20);
                scratch.extend_from_slice(prefix);
                write_u64(scratch, seq)?;
                let key = HeaderValue::from_maybe_shared(scratch.split().freeze())
                    .map_err(|e| Error::new(format!("invalid idempotency key: {e}")))?;
                Some(key)
            }
            None => None,
        };

        scratch.reserve(self.head.len() + self.middle.len() + self.tail.len() + 40);
        scratch.extend_from_slice(&self.head);
        write_u64(scratch, amount_for(seq))?;
        scratch.extend_from_slice(&self.middle);
        write_u64(scratch, seq)?;
        scratch.extend_from_slice(&self.tail);
        let body = scratch.split().freeze();

        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        headers.insert(AUTHORIZATION, self.authorization.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(key) = idempotency_key {
            headers.insert("idempotency-key", key);
        }
        Ok(request)
    }
}

/// `GET` of one fixed path, e.g. `/healthz`.
#[derive(Debug)]
pub struct GetPath {
    uri: Uri,
}

impl GetPath {
    /// A scenario fetching `path` (which must start with `/`) on `target`.
    pub fn new(target: &Target, path: &str) -> Result<Self> {
        Ok(Self {
            uri: target.join(path)?,
        })
    }
}

impl Scenario for GetPath {
    fn build(&self, _seq: u64, _scratch: &mut BytesMut) -> Result<Request<Body>> {
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = self.uri.clone();
        Ok(request)
    }
}

/// Amount for request `seq`: spread over `MIN_AMOUNT..=MAX_AMOUNT` by a
/// multiplicative hash so that neighbouring requests differ.
fn amount_for(seq: u64) -> u64 {
    let mixed = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 17;
    MIN_AMOUNT + mixed % (MAX_AMOUNT - MIN_AMOUNT + 1)
}

fn write_u64(buf: &mut BytesMut, n: u64) -> Result<()> {
    write!(buf, "{n}").map_err(|_| Error::new("cannot format request"))
}

fn json_string(value: &str) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::new(format!("cannot encode `{value}`: {e}")))
}

/// A value that differs between runs, so idempotency keys of one run never
/// collide with those of an earlier run against the same server.
fn run_id() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 40)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn config(idempotency: bool) -> CreateIntentsConfig {
        CreateIntentsConfig {
            key: "sk_test_abc".to_string(),
            service_id: "svc_1\"x".to_string(),
            currency: "EUR".to_string(),
            channel: "sandbox".to_string(),
            idempotency,
        }
    }

    fn target() -> Target {
        Target::parse("http://127.0.0.1:9").expect("target")
    }

    #[tokio::test]
    async fn builds_a_valid_create_intent_request() {
        let scenario = CreateIntents::new(&target(), &config(true)).expect("scenario");
        let mut scratch = BytesMut::new();
        let first = scenario.build(7, &mut scratch).expect("request");
        let second = scenario.build(8, &mut scratch).expect("request");
        assert_eq!(first.method(), Method::POST);
        assert_eq!(first.uri(), "/v1/payment-intents");
        assert_eq!(first.headers()[AUTHORIZATION], "Bearer sk_test_abc");
        assert_eq!(first.headers()[CONTENT_TYPE], "application/json");
        assert_ne!(
            first.headers()["idempotency-key"],
            second.headers()["idempotency-key"]
        );

        let bytes = match first.into_body().collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(never) => match never {},
        };
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("valid JSON");
        assert_eq!(json["service_id"], "svc_1\"x");
        assert_eq!(json["amount"]["currency"], "EUR");
        assert_eq!(json["amount"]["value"], amount_for(7));
        assert_eq!(json["channel"], "sandbox");
        assert_eq!(json["metadata"]["order"], "lt-7");
        assert_eq!(json["expires_in"], 900);
    }

    #[test]
    fn no_idempotency_key_unless_asked() {
        let scenario = CreateIntents::new(&target(), &config(false)).expect("scenario");
        let request = scenario.build(1, &mut BytesMut::new()).expect("request");
        assert!(request.headers().get("idempotency-key").is_none());
    }

    #[test]
    fn amounts_stay_in_range() {
        for seq in 0..100_000 {
            let a = amount_for(seq);
            assert!((MIN_AMOUNT..=MAX_AMOUNT).contains(&a), "{a}");
        }
        assert_ne!(amount_for(1), amount_for(2));
    }

    #[test]
    fn refuses_bad_settings() {
        let mut c = config(false);
        c.currency = "eur".to_string();
        assert!(CreateIntents::new(&target(), &c).is_err());
        let mut c = config(false);
        c.key = "bad\nkey".to_string();
        assert!(CreateIntents::new(&target(), &c).is_err());
        let mut c = config(false);
        c.service_id = String::new();
        assert!(CreateIntents::new(&target(), &c).is_err());
    }
}
