//! Shop-platform webhooks: connections (a per-merchant, per-provider secret), signature checks,
//! delivery de-duplication, and turning each platform's order JSON into our order through the
//! same validation as every other order.
//!
//! A webhook finds its merchant through the URL: `/api/integrations/{provider}/webhook?account=
//! {merchant_id}` (Odoo also `&token={secret}`, as it cannot sign). Nothing is created unless the
//! signature checks out with that merchant's stored secret; a failure is 401 whatever the reason
//! (unknown account, no connection, bad or missing signature), so the endpoint tells an
//! outsider nothing. The same delivery twice (delivery id header, or the platform's order id)
//! yields one order. Wire formats live in [`providers`]; this file owns the flow.
//!
//! Stored: `lm_shop_conn/{merchant}:{provider}` (the connection, secret in clear because HMACs
//! need it, never returned), `lm_shop_delivery/{merchant}:{provider}:{delivery_id}`,
//! `lm_shop_last/{merchant}:{provider}` (time of the last accepted delivery).

pub mod providers;

use super::LastMile;
use super::orders::{Inserted, OrderId, UpdateResult, ext_scope, validate};
use crate::clock::Timestamp;
use crate::error::{EngineError, EngineResult};
use crate::ids::MerchantId;
use crate::model::merchant::Secret;
use crate::store::WriteOp;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use providers::{Provider, Scheme};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

const CONN: &str = "lm_shop_conn";
const DELIVERY: &str = "lm_shop_delivery";
const LAST: &str = "lm_shop_last";

/// A merchant's connection to one shop platform.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Connection {
    provider: Provider,
    secret: Secret,
    shop_domain: Option<String>,
    default_carrier: Option<String>,
    default_currency: Option<String>,
    connected_at: Timestamp,
}

/// `POST /api/integrations/{provider}/connect` body.
#[derive(Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectRequest {
    /// The webhook signing secret the platform uses (Shopify: the app's client secret;
    /// WooCommerce: the webhook's secret; …). Omit it to have one generated (shown once).
    #[serde(default)]
    pub secret: Option<String>,
    /// The shop's address, for display (`my-shop.myshopify.com`).
    #[serde(default)]
    pub shop_domain: Option<String>,
    /// Carrier code for orders whose shipping method names none.
    #[serde(default)]
    pub default_carrier: Option<String>,
    /// Currency for platforms whose order JSON has none (Picqer, Lightspeed); default EUR.
    #[serde(default)]
    pub default_currency: Option<String>,
}

impl std::fmt::Debug for ConnectRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectRequest")
            .field("shop_domain", &self.shop_domain)
            .finish_non_exhaustive()
    }
}

/// A connection as shown to its merchant.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConnectionView {
    pub provider: &'static str,
    pub connected: bool,
    /// The secret's first 4 and last 4 characters.
    pub secret_masked: Option<String>,
    /// Shown only in the answer to a `connect` that generated it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub shop_domain: Option<String>,
    pub default_carrier: Option<String>,
    /// Path (on this server) to configure in the platform as the webhook address.
    pub webhook_url: String,
    /// How deliveries are authenticated.
    pub signature: &'static str,
    /// Topics accepted; others are acknowledged and ignored.
    pub topics: &'static [&'static str],
    #[schema(value_type = Option<String>, format = DateTime)]
    pub connected_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_webhook_at: Option<Timestamp>,
}

/// What a webhook delivery did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WebhookOutcome {
    /// `created`, `updated`, `duplicate_delivery`, `duplicate_order` or `ignored`.
    pub result: &'static str,
    pub order_id: Option<String>,
    /// Why a delivery was ignored (topic not handled, notification without order data), or
    /// what an update left unchanged and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Fields an update changed (`customer`, `items`, `carrier_code`, `amount`, `ipay_flag`,
    /// `status`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<&'static str>,
}

/// The parts of an HTTP delivery the check needs.
pub struct Delivery<'a> {
    /// `account` query parameter: the merchant id.
    pub account: Option<&'a str>,
    /// `token` query parameter (Odoo).
    pub token: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    pub body: &'a [u8],
}

fn mask(s: &str) -> String {
    let n = s.chars().count();
    if n <= 8 {
        return "****".into();
    }
    let head: String = s.chars().take(4).collect();
    let tail: String = s.chars().skip(n - 4).collect();
    format!("{head}…{tail}")
}

fn unauthorized(why: &str) -> EngineError {
    EngineError::Unauthenticated {
        code: "webhook_signature_invalid",
        message: format!("webhook not accepted: {why}"),
    }
}

fn header<'a>(h: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn hmac_sha256(secret: &[u8], body: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length; this cannot fail.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    m.update(body);
    m.finalize().into_bytes().into()
}

/// Computes the signature header value a platform would send for `body` (used by simulate and
/// by tests of this module; checking goes through [`verify`]).
pub fn sign(scheme: Scheme, secret: &str, body: &[u8]) -> String {
    match scheme {
        Scheme::HmacBase64(_) => {
            base64::engine::general_purpose::STANDARD.encode(hmac_sha256(secret.as_bytes(), body))
        }
        Scheme::HmacHex(_) => hex::encode(hmac_sha256(secret.as_bytes(), body)),
        Scheme::HmacHexPrefixed(_) => {
            format!(
                "sha256={}",
                hex::encode(hmac_sha256(secret.as_bytes(), body))
            )
        }
        Scheme::Md5BodySecret(_) => {
            use md5::Digest as _;
            let mut h = md5::Md5::new();
            h.update(body);
            h.update(secret.as_bytes());
            hex::encode(h.finalize())
        }
        Scheme::UrlToken => secret.to_string(),
    }
}

/// Whether a delivery carries a valid signature (constant-time comparison).
fn verify(scheme: Scheme, secret: &str, d: &Delivery<'_>) -> bool {
    let given = match scheme {
        Scheme::UrlToken => d.token,
        Scheme::HmacBase64(h)
        | Scheme::HmacHex(h)
        | Scheme::HmacHexPrefixed(h)
        | Scheme::Md5BodySecret(h) => header(d.headers, h),
    };
    let Some(given) = given.filter(|g| !g.is_empty()) else {
        return false;
    };
    let expected = sign(scheme, secret, d.body);
    let (a, b) = match scheme {
        // Hex is case-insensitive.
        Scheme::HmacHex(_) | Scheme::HmacHexPrefixed(_) | Scheme::Md5BodySecret(_) => {
            (given.to_ascii_lowercase(), expected)
        }
        _ => (given.to_string(), expected),
    };
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

impl LastMile {
    /// Connects (or reconnects, replacing the secret) a merchant to a platform.
    pub async fn connect_shop(
        &self,
        merchant: MerchantId,
        provider: &str,
        req: ConnectRequest,
    ) -> EngineResult<ConnectionView> {
        let provider = Provider::parse(provider)?;
        let (secret, generated) = match req.secret.map(|s| s.trim().to_string()) {
            Some(s) if s.len() < 16 || s.len() > 512 => {
                return Err(EngineError::invalid(
                    "parameter_invalid",
                    "secret",
                    "secret must be 16 to 512 characters",
                ));
            }
            Some(s) => (s, false),
            None => {
                let raw: [u8; 24] = rand::random();
                (format!("shsec_{}", hex::encode(raw)), true)
            }
        };
        let default_carrier = match req.default_carrier.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(c) => Some(providers::carrier_code(c).ok_or_else(|| {
                EngineError::invalid(
                    "parameter_invalid",
                    "default_carrier",
                    "default_carrier must be a carrier code such as DHL or POSTNL",
                )
            })?),
        };
        let default_currency = match req.default_currency.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(c) => Some(
                crate::money::Currency::parse(&c.to_ascii_uppercase())
                    .map_err(|e| EngineError::money("default_currency", e))?
                    .code()
                    .to_string(),
            ),
        };
        let shop_domain = req
            .shop_domain
            .map(|s| s.trim().chars().take(200).collect::<String>())
            .filter(|s| !s.is_empty());
        let conn = Connection {
            provider,
            secret: Secret::new(secret.clone()),
            shop_domain,
            default_carrier,
            default_currency,
            connected_at: self.engine.clock().now(),
        };
        let mut b = crate::store::WriteBatch::new();
        b.push(WriteOp::PutRecord {
            kind: CONN,
            key: format!("{merchant}:{}", provider.as_str()),
            value: serde_json::to_vec(&conn).map_err(|e| EngineError::Internal(e.to_string()))?,
        });
        self.engine.ledger().submit(b).await?;
        let mut view = self.view(merchant, provider, Some(&conn)).await?;
        if generated {
            view.secret = Some(secret);
        }
        Ok(view)
    }

    /// Every platform with this merchant's connection state.
    pub async fn shop_status(&self, merchant: MerchantId) -> EngineResult<Vec<ConnectionView>> {
        let mut out = Vec::with_capacity(Provider::ALL.len());
        for p in Provider::ALL {
            let conn = self.connection(merchant, *p).await?;
            out.push(self.view(merchant, *p, conn.as_ref()).await?);
        }
        Ok(out)
    }

    async fn connection(
        &self,
        merchant: MerchantId,
        provider: Provider,
    ) -> EngineResult<Option<Connection>> {
        let raw = self
            .engine
            .ledger()
            .get_record(CONN, &format!("{merchant}:{}", provider.as_str()))
            .await?;
        raw.map(|r| serde_json::from_slice(&r).map_err(|e| EngineError::Internal(e.to_string())))
            .transpose()
    }

    async fn view(
        &self,
        merchant: MerchantId,
        p: Provider,
        conn: Option<&Connection>,
    ) -> EngineResult<ConnectionView> {
        let last = self
            .engine
            .ledger()
            .get_record(LAST, &format!("{merchant}:{}", p.as_str()))
            .await?
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|s| s.parse::<i64>().ok())
            .map(Timestamp);
        let mut url = format!(
            "/api/integrations/{}/webhook?account={merchant}",
            p.as_str()
        );
        if p.scheme() == Scheme::UrlToken {
            url.push_str("&token=<secret>");
        }
        Ok(ConnectionView {
            provider: p.as_str(),
            connected: conn.is_some(),
            secret_masked: conn.map(|c| mask(c.secret.expose())),
            secret: None,
            shop_domain: conn.and_then(|c| c.shop_domain.clone()),
            default_carrier: conn.and_then(|c| c.default_carrier.clone()),
            webhook_url: url,
            signature: p.scheme().describe(),
            topics: p.topics(),
            connected_at: conn.map(|c| c.connected_at),
            last_webhook_at: last,
        })
    }

    /// Handles one webhook delivery from a shop platform.
    pub async fn shop_webhook(
        &self,
        provider: &str,
        d: Delivery<'_>,
    ) -> EngineResult<WebhookOutcome> {
        let provider = Provider::parse(provider)?;
        let merchant = d
            .account
            .and_then(|a| MerchantId::parse(a).ok())
            .ok_or_else(|| {
                unauthorized("unknown account; use the webhook_url from /api/integrations/status")
            })?;
        let conn = self.connection(merchant, provider).await?.ok_or_else(|| {
            unauthorized("unknown account; use the webhook_url from /api/integrations/status")
        })?;
        let scheme = provider.scheme();
        if !verify(scheme, conn.secret.expose(), &d) {
            tracing::info!(provider = provider.as_str(), merchant = %merchant, "shop webhook with a missing or wrong signature refused");
            return Err(unauthorized(&format!(
                "missing or wrong signature ({})",
                scheme.describe()
            )));
        }
        let delivery = provider
            .delivery_header()
            .and_then(|h| header(d.headers, h))
            .filter(|id| !id.is_empty() && id.len() <= 200)
            .map(|id| format!("{merchant}:{}:{id}", provider.as_str()));
        // The delivery id is reserved (on every node) from its duplicate check until the order
        // and the delivery record are committed, so a redelivery racing the first copy yields
        // one order.
        let keys = match &delivery {
            Some(k) => Some(
                self.reserve_unique(vec![format!("lm:uniq:delivery:{k}")])
                    .await?,
            ),
            None => None,
        };
        let out = self
            .shop_accept(provider, merchant, &conn, delivery, &d)
            .await;
        if let Some(k) = keys {
            k.release(self).await;
        }
        out
    }

    /// The part of a verified delivery that runs while its delivery id is reserved.
    async fn shop_accept(
        &self,
        provider: Provider,
        merchant: MerchantId,
        conn: &Connection,
        delivery_key: Option<String>,
        d: &Delivery<'_>,
    ) -> EngineResult<WebhookOutcome> {
        let now = self.engine.clock().now();
        let last_key = format!("{merchant}:{}", provider.as_str());
        if let Some(key) = &delivery_key
            && let Some(order) = self.engine.ledger().get_record(DELIVERY, key).await?
        {
            return Ok(WebhookOutcome {
                result: "duplicate_delivery",
                order_id: Some(String::from_utf8_lossy(&order).into_owned())
                    .filter(|s| !s.is_empty()),
                reason: None,
                changed: vec![],
            });
        }
        let topic = provider.topic_header().and_then(|h| header(d.headers, h));
        let json: serde_json::Value = serde_json::from_slice(d.body).map_err(|e| {
            EngineError::invalid(
                "webhook_payload_invalid",
                "body",
                format!("the body is not JSON: {e}"),
            )
        })?;
        let ctx = providers::Defaults {
            carrier: conn.default_carrier.as_deref(),
            currency: conn.default_currency.as_deref().unwrap_or("EUR"),
        };
        let input = match providers::map_order(provider, topic, &json, &ctx)? {
            providers::Mapped::Order(input) => input,
            providers::Mapped::Ignored(reason) => {
                return Ok(WebhookOutcome {
                    result: "ignored",
                    order_id: None,
                    reason: Some(reason),
                    changed: vec![],
                });
            }
        };
        let valid = validate(*input).map_err(|e| {
            EngineError::invalid(
                "webhook_payload_invalid",
                e.field.clone(),
                format!("the order cannot be accepted: `{}` {}", e.field, e.reason),
            )
        })?;
        // The delivery record names the order, so a redelivery can answer with it.
        let extra = |order: Option<OrderId>| {
            let mut ops = vec![WriteOp::PutRecord {
                kind: LAST,
                key: last_key.clone(),
                value: now.ms().to_string().into_bytes(),
            }];
            if let Some(key) = &delivery_key {
                ops.push(WriteOp::PutRecord {
                    kind: DELIVERY,
                    key: key.clone(),
                    value: order
                        .map(|o| o.to_string())
                        .unwrap_or_default()
                        .into_bytes(),
                });
            }
            ops
        };
        // An update of an order the shop sent before changes it (under the external id's
        // reservation); an update of an unknown order creates it.
        if let Some(info) = providers::update_info(provider, topic, &json)
            && let Some(ext) = valid.external_id().map(str::to_string)
        {
            let keys = self
                .reserve_unique(vec![ext_scope(merchant, provider.as_str(), &ext)])
                .await?;
            match self
                .find_order_by_external_id(merchant, provider.as_str(), &ext)
                .await
            {
                Ok(Some(id)) => {
                    let out = self
                        .update_order_from_shop(
                            merchant,
                            id,
                            valid,
                            info.cancelled,
                            extra(Some(id)),
                        )
                        .await;
                    keys.release(self).await;
                    return out.map(|(o, r)| updated_outcome(o.id, r));
                }
                Ok(None) => keys.release(self).await,
                Err(e) => {
                    keys.release(self).await;
                    return Err(e);
                }
            }
        }
        let out = self
            .insert_orders(
                merchant,
                provider.as_str(),
                provider.as_str(),
                vec![valid],
                &extra,
            )
            .await?;
        Ok(match out.into_iter().next() {
            Some(Inserted::Created(o)) => WebhookOutcome {
                result: "created",
                order_id: Some(o.id.to_string()),
                reason: None,
                changed: vec![],
            },
            Some(Inserted::Duplicate { existing }) => WebhookOutcome {
                result: "duplicate_order",
                order_id: existing.map(|e| e.to_string()),
                reason: None,
                changed: vec![],
            },
            None => return Err(EngineError::Internal("no insert outcome".into())),
        })
    }

    /// Sends a realistic sample order through the webhook path, signed with the merchant's
    /// stored secret (needs a connection).
    pub async fn simulate_shop(
        &self,
        merchant: MerchantId,
        provider: &str,
    ) -> EngineResult<WebhookOutcome> {
        let p = Provider::parse(provider)?;
        let conn = self
            .connection(merchant, p)
            .await?
            .ok_or_else(|| EngineError::Conflict {
                code: "integration_not_connected",
                message: format!(
                    "connect {} first: POST /api/integrations/{}/connect",
                    p.as_str(),
                    p.as_str()
                ),
            })?;
        let (body, mut headers) = providers::sample(p, self.engine.clock().now());
        let sig = sign(p.scheme(), conn.secret.expose(), &body);
        let account = merchant.to_string();
        let token = (p.scheme() == Scheme::UrlToken).then(|| sig.clone());
        if let Some(h) = p.scheme().header()
            && let Ok(v) = http::HeaderValue::from_str(&sig)
        {
            headers.insert(h, v);
        }
        self.shop_webhook(
            p.as_str(),
            Delivery {
                account: Some(&account),
                token: token.as_deref(),
                headers: &headers,
                body: &body,
            },
        )
        .await
    }
}

/// The answer to an applied update: what changed, and what was kept and why.
fn updated_outcome(order: OrderId, r: UpdateResult) -> WebhookOutcome {
    let reason = (!r.kept.is_empty()).then(|| {
        format!(
            "kept: {} (the order's payment session fixes them, or it is paid)",
            r.kept.join(", ")
        )
    });
    WebhookOutcome {
        result: "updated",
        order_id: Some(order.to_string()),
        reason,
        changed: r.changed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_only_the_ends() {
        assert_eq!(mask("shsec_0123456789abcdef"), "shse…cdef");
        assert_eq!(mask("short"), "****");
    }

    #[test]
    fn shopify_style_signature_matches_a_known_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let sig = sign(
            Scheme::HmacHex("x"),
            "Jefe",
            b"what do ya want for nothing?",
        );
        assert_eq!(
            sig,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
