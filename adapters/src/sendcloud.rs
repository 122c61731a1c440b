//! Sendcloud's wire format for return labels: creating a return parcel with its label through
//! API v2 (`POST /api/v2/parcels` with `is_return` and `request_label`, HTTP Basic auth with
//! the account's public key as user and secret key as password), downloading the label PDF,
//! and checking inbound webhooks (`Sendcloud-Signature` = lower-case hex HMAC-SHA256 of the raw
//! body keyed with the secret key).
//!
//! It owns the requests, the answers' parsing and the signature; it holds no return state and
//! decides nothing about a return (that is `ipay_lastmile::returns`). [`sim`] is the loopback
//! Sendcloud tests talk to.

pub mod sim;

use crate::http::{HttpClient, HttpTimeouts};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use ipay_engine::channel::ChannelError;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The header Sendcloud signs webhooks with.
pub const SIGNATURE_HEADER: &str = "Sendcloud-Signature";
/// Name used in transport error texts.
const NAME: &str = "sendcloud";
/// Largest label PDF accepted, bytes (a 4x6" label is a few tens of KiB).
pub const MAX_LABEL_BYTES: usize = crate::http::MAX_RESPONSE_BYTES;

/// An account's API credentials. `Debug` never shows the secret.
#[derive(Clone)]
pub struct SendcloudKeys {
    /// The public key (HTTP Basic user).
    pub public_key: String,
    /// The secret key (HTTP Basic password, webhook signing key).
    pub secret_key: String,
}

impl std::fmt::Debug for SendcloudKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendcloudKeys")
            .field("public_key", &self.public_key)
            .field("secret_key", &"***")
            .finish()
    }
}

impl SendcloudKeys {
    /// The `Authorization` header value.
    pub fn basic_auth(&self) -> String {
        let raw = format!("{}:{}", self.public_key, self.secret_key);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// The address a return parcel is collected from (the consumer) — v2's flat parcel fields.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReturnFrom {
    pub name: String,
    pub address: String,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// What a return parcel is created with.
#[derive(Debug, Clone)]
pub struct ReturnParcelRequest {
    /// The consumer's address.
    pub from: ReturnFrom,
    /// Our return id, sent as `order_number` and `external_reference` so webhooks can be
    /// matched even without the parcel id.
    pub reference: String,
    /// Grams.
    pub weight_grams: u32,
}

/// The parcel Sendcloud created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedParcel {
    pub id: u64,
    pub tracking_number: String,
    /// Where the label PDF is downloaded from (`label.label_printer`).
    pub label_url: String,
}

/// Why a Sendcloud call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendcloudError {
    /// Down, timing out or answering 5xx: retry later.
    #[error("sendcloud unavailable: {0}")]
    Unavailable(String),
    /// Sendcloud refused the credentials (401/403).
    #[error("sendcloud refused the API keys")]
    Unauthorized,
    /// Sendcloud refused the request (4xx) or answered something unreadable.
    #[error("sendcloud refused the request: {0}")]
    Rejected(String),
}

impl From<ChannelError> for SendcloudError {
    fn from(e: ChannelError) -> Self {
        match e {
            ChannelError::Unavailable(m) => SendcloudError::Unavailable(m),
            ChannelError::Rejected(m) => SendcloudError::Rejected(m),
        }
    }
}

/// A Sendcloud API client for one account.
#[derive(Debug, Clone)]
pub struct SendcloudClient {
    base_url: String,
    keys: SendcloudKeys,
    http: HttpClient,
}

impl SendcloudClient {
    /// A client for the API at `base_url` (`https://panel.sendcloud.sc`, or the simulator).
    pub fn new(base_url: &str, keys: SendcloudKeys) -> Result<Self, String> {
        Ok(SendcloudClient {
            base_url: base_url.trim_end_matches('/').to_string(),
            keys,
            http: HttpClient::new(HttpTimeouts::default())?,
        })
    }

    /// The account's keys (the webhook check needs the secret).
    pub fn keys(&self) -> &SendcloudKeys {
        &self.keys
    }

    /// Creates a return parcel and announces it, so its label exists at once.
    pub async fn create_return(
        &self,
        req: &ReturnParcelRequest,
    ) -> Result<CreatedParcel, SendcloudError> {
        let body = parcel_body(req);
        let auth = self.keys.basic_auth();
        let r = self
            .http
            .post(
                NAME,
                &format!("{}/api/v2/parcels", self.base_url),
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/json"),
                ],
                serde_json::to_vec(&body).unwrap_or_default(),
            )
            .await?;
        check_status(r.status, &r.body)?;
        parse_created(&r.body)
    }

    /// Downloads a label PDF from a URL Sendcloud gave (same credentials).
    pub async fn label_pdf(&self, url: &str) -> Result<Vec<u8>, SendcloudError> {
        if !url.starts_with(&self.base_url) {
            return Err(SendcloudError::Rejected(
                "label URL is not on the configured Sendcloud host".into(),
            ));
        }
        let auth = self.keys.basic_auth();
        let r = self
            .http
            .get(NAME, url, &[("Authorization", &auth)])
            .await?;
        check_status(r.status, &r.body)?;
        if !r.body.starts_with(b"%PDF-") {
            return Err(SendcloudError::Rejected("label is not a PDF".into()));
        }
        Ok(r.body.to_vec())
    }
}

/// The v2 parcel body: a return whose label is requested at creation.
fn parcel_body(req: &ReturnParcelRequest) -> serde_json::Value {
    let f = &req.from;
    let weight_kg = format!("{}.{:03}", req.weight_grams / 1000, req.weight_grams % 1000);
    serde_json::json!({"parcel": {
        "name": f.name,
        "address": f.address,
        "city": f.city,
        "postal_code": f.postal_code,
        "country": f.country,
        "email": f.email,
        "order_number": req.reference,
        "external_reference": req.reference,
        "weight": weight_kg,
        "is_return": true,
        "request_label": true,
    }})
}

fn check_status(status: u16, body: &[u8]) -> Result<(), SendcloudError> {
    match status {
        200..=299 => Ok(()),
        401 | 403 => Err(SendcloudError::Unauthorized),
        _ => {
            let msg = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| format!("HTTP {status}"));
            Err(SendcloudError::Rejected(msg))
        }
    }
}

fn parse_created(body: &[u8]) -> Result<CreatedParcel, SendcloudError> {
    let bad = || SendcloudError::Rejected("unreadable parcel answer".into());
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| bad())?;
    let p = &v["parcel"];
    Ok(CreatedParcel {
        id: p["id"].as_u64().ok_or_else(bad)?,
        tracking_number: p["tracking_number"].as_str().unwrap_or_default().into(),
        label_url: p["label"]["label_printer"]
            .as_str()
            .ok_or_else(bad)?
            .to_string(),
    })
}

/// The lower-case hex HMAC-SHA256 of `body` under `secret`: what `Sendcloud-Signature` carries.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `header` is the signature of `body` under `secret` (constant-time; hex in any case).
pub fn verify(secret: &str, body: &[u8], header: Option<&str>) -> bool {
    let Some(h) = header else { return false };
    let expected = sign(secret, body);
    let got = h.trim().to_ascii_lowercase();
    got.len() == expected.len() && bool::from(got.as_bytes().ct_eq(expected.as_bytes()))
}

/// A webhook's parcel status.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct WebhookStatus {
    pub id: i64,
    #[serde(default)]
    pub message: String,
}

/// The parcel of a webhook (only what returns need).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct WebhookParcel {
    pub id: u64,
    #[serde(default)]
    pub tracking_number: Option<String>,
    pub status: WebhookStatus,
    #[serde(default)]
    pub external_reference: Option<String>,
}

/// An inbound webhook: `action` plus, for `parcel_status_changed`, the parcel.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Webhook {
    pub action: String,
    #[serde(default)]
    pub timestamp: Option<i64>,
    #[serde(default)]
    pub parcel: Option<WebhookParcel>,
}

/// What a Sendcloud parcel status means for a return travelling back to the merchant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// Collected or moving through the carrier's network.
    InTransit,
    /// Delivered to the merchant.
    Delivered,
    /// The label was cancelled.
    Cancelled,
    /// Anything else (label announced, exceptions): noted, no move.
    Other,
}

/// Classifies Sendcloud's numeric parcel status ids (API v2 `parcel.status.id`).
pub fn classify(status_id: i64) -> StatusClass {
    match status_id {
        // Delivered; shipment collected by customer (at a service point).
        11 | 93 => StatusClass::Delivered,
        // En route to sorting centre, delivery delayed, sorted, not sorted, being sorted,
        // picked up by driver, parcel en route, driver en route.
        3 | 4 | 5 | 6 | 7 | 22 | 91 | 92 => StatusClass::InTransit,
        // Cancelled; cancellation requested.
        2000 | 1999 => StatusClass::Cancelled,
        _ => StatusClass::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hex_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let body = br#"{"action":"parcel_status_changed"}"#;
        let s = sign("secret", body);
        assert!(verify("secret", body, Some(&s)));
        assert!(verify("secret", body, Some(&s.to_ascii_uppercase())));
        assert!(!verify("other", body, Some(&s)));
        assert!(!verify("secret", b"{}", Some(&s)));
        assert!(!verify("secret", body, None));
        assert!(!verify("secret", body, Some("")));
    }

    #[test]
    fn basic_auth_is_public_colon_secret_in_base64() {
        let k = SendcloudKeys {
            public_key: "pub".into(),
            secret_key: "sec".into(),
        };
        assert_eq!(k.basic_auth(), "Basic cHViOnNlYw==");
        assert!(!format!("{k:?}").contains("sec\""));
    }

    #[test]
    fn parcel_body_asks_for_a_return_label() {
        let b = parcel_body(&ReturnParcelRequest {
            from: ReturnFrom {
                name: "A".into(),
                address: "Damrak 1".into(),
                city: "Amsterdam".into(),
                postal_code: "1012LG".into(),
                country: "NL".into(),
                email: None,
            },
            reference: "ret_1".into(),
            weight_grams: 1_250,
        });
        assert_eq!(b["parcel"]["is_return"], true);
        assert_eq!(b["parcel"]["request_label"], true);
        assert_eq!(b["parcel"]["weight"], "1.250");
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(classify(11), StatusClass::Delivered);
        assert_eq!(classify(3), StatusClass::InTransit);
        assert_eq!(classify(2000), StatusClass::Cancelled);
        assert_eq!(classify(1000), StatusClass::Other);
    }
}
