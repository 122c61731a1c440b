//! Shop-platform webhooks: connections (a per-merchant, per-provider secret), delivery
//! de-duplication, and turning each platform's mapped order into our order through the same
//! validation as every other order.
//!
//! A webhook finds its merchant through the shop it names: the platform's own header or body
//! field (Shopify `X-Shopify-Shop-Domain`, WooCommerce `X-WC-Webhook-Source`, Shopware
//! `source.url`/`source.shopId`, BigCommerce `producer`, Lightspeed `X-Lightspeed-Shop`, Picqer
//! `X-Picqer-Subdomain`) matched against the `shop_domain` given at connect, so the spec's plain
//! `/api/integrations/{provider}/webhook` works. `?account={merchant_id}` is still accepted, and
//! is needed for Magento, PrestaShop and Odoo, whose deliveries do not name their shop (Odoo
//! also `&token={secret}`, as it cannot sign). Nothing is created unless the
//! signature checks out with that merchant's stored secret; a failure is 401 whatever the reason
//! (unknown account, no connection, bad or missing signature), so the endpoint tells an
//! outsider nothing. The same delivery twice (delivery id header, or the platform's order id)
//! yields one order. Each platform's wire format (signature scheme, headers, order JSON) lives
//! in `ipay_adapters::shops`, one module per platform; this file owns the flow.
//!
//! Stored: `lm_shop_conn/{merchant}:{provider}` (the connection, secret in clear because HMACs
//! need it, never returned), `lm_shop_id/{provider}:{shop}` (the merchant connected to that
//! shop; one merchant per shop), `lm_shop_delivery/{merchant}:{provider}:{delivery_id}`,
//! `lm_shop_last/{merchant}:{provider}` (time of the last accepted delivery).

use crate::LastMile;
use crate::orders::{
    Address, Customer, Inserted, OrderId, OrderInput, OrderItem, UpdateResult, ValidOrder,
    ext_scope, validate,
};
use ipay_adapters::shops::signature::{self, header};
use ipay_adapters::shops::{self as providers, Provider, Scheme, ShopOrder, sign};
use ipay_engine::clock::Timestamp;
use ipay_engine::error::{EngineError, EngineResult};
use ipay_engine::ids::MerchantId;
use ipay_engine::model::merchant::Secret;
use ipay_engine::store::WriteOp;
use serde::{Deserialize, Serialize};

const CONN: &str = "lm_shop_conn";
const DELIVERY: &str = "lm_shop_delivery";
const LAST: &str = "lm_shop_last";
const SHOP_ID: &str = "lm_shop_id";

/// Whether the platform's deliveries name their shop (see [`providers::shop_identities`]).
fn names_its_shop(p: Provider) -> bool {
    !matches!(p, Provider::Magento | Provider::Prestashop | Provider::Odoo)
}

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
    /// The shop's address or id as its platform names it in deliveries
    /// (`my-shop.myshopify.com`; WooCommerce/Shopware: the shop URL; BigCommerce: the store
    /// hash; Lightspeed: the shop id; Picqer: the subdomain). With it the webhook needs no
    /// `?account=`; one merchant per shop.
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

/// Whether a delivery carries a valid signature for `secret` (constant-time comparison).
fn verify(scheme: Scheme, secret: &str, d: &Delivery<'_>) -> bool {
    signature::verify(scheme, secret, d.headers, d.token, d.body)
}

/// A platform's mapped order as our order input. Shop orders are collected through IPAY: that
/// is why the merchant connected the shop.
fn order_input(o: ShopOrder) -> OrderInput {
    let a = o.customer.address;
    OrderInput {
        external_id: o.external_id,
        customer: Customer {
            name: o.customer.name,
            email: o.customer.email,
            phone: o.customer.phone,
            address: Address {
                line1: a.line1,
                line2: a.line2,
                city: a.city,
                postal_code: a.postal_code,
                region: a.region,
                country: a.country,
            },
        },
        items: o
            .items
            .into_iter()
            .map(|i| OrderItem {
                sku: i.sku,
                name: i.name,
                qty: i.qty,
                unit_price: i.unit_price,
            })
            .collect(),
        amount: o.amount,
        carrier_code: o.carrier_code,
        ipay_flag: Some(true),
    }
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
                ipay_engine::money::Currency::parse(&c.to_ascii_uppercase())
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
        let mut b = ipay_engine::store::WriteBatch::new();
        b.push(WriteOp::PutRecord {
            kind: CONN,
            key: format!("{merchant}:{}", provider.as_str()),
            value: serde_json::to_vec(&conn).map_err(|e| EngineError::Internal(e.to_string()))?,
        });
        self.commit_connection(merchant, provider, &conn, b).await?;
        let mut view = self.view(merchant, provider, Some(&conn)).await?;
        if generated {
            view.secret = Some(secret);
        }
        Ok(view)
    }

    /// Commits a connection with its shop's look-up record (claimed under a reservation, so two
    /// merchants cannot claim one shop at once), dropping the look-up of a shop it replaces.
    async fn commit_connection(
        &self,
        merchant: MerchantId,
        provider: Provider,
        conn: &Connection,
        mut b: ipay_engine::store::WriteBatch,
    ) -> EngineResult<()> {
        let shop = conn
            .shop_domain
            .as_deref()
            .map(providers::normalize_shop)
            .filter(|s| !s.is_empty());
        let key = |s: &str| format!("{}:{s}", provider.as_str());
        let old = self
            .connection(merchant, provider)
            .await?
            .and_then(|c| c.shop_domain)
            .map(|d| providers::normalize_shop(&d))
            .filter(|d| Some(d) != shop.as_ref());
        let Some(shop) = shop else {
            if let Some(d) = old {
                b.push(WriteOp::DeleteRecord {
                    kind: SHOP_ID,
                    key: key(&d),
                });
            }
            self.engine.ledger().submit(b).await?;
            return Ok(());
        };
        let keys = self
            .reserve_unique(vec![format!("lm:uniq:shop:{}", key(&shop))])
            .await?;
        let out = async {
            let holder = self.engine.ledger().get_record(SHOP_ID, &key(&shop)).await?;
            if let Some(h) = holder.filter(|h| h.as_slice() != merchant.to_string().as_bytes()) {
                tracing::info!(provider = provider.as_str(), other = %String::from_utf8_lossy(&h), "shop already connected to another merchant");
                return Err(EngineError::Conflict {
                    code: "shop_already_connected",
                    message: format!(
                        "this {} shop is connected to another merchant; disconnect it there first",
                        provider.as_str()
                    ),
                });
            }
            b.push(WriteOp::PutRecord {
                kind: SHOP_ID,
                key: key(&shop),
                value: merchant.to_string().into_bytes(),
            });
            if let Some(d) = old {
                b.push(WriteOp::DeleteRecord { kind: SHOP_ID, key: key(&d) });
            }
            self.engine.ledger().submit(b).await?;
            Ok(())
        }
        .await;
        keys.release(self).await;
        out
    }

    /// The merchant connected to the shop a delivery names, if any.
    async fn merchant_by_shop(
        &self,
        provider: Provider,
        d: &Delivery<'_>,
    ) -> EngineResult<Option<MerchantId>> {
        if !names_its_shop(provider) {
            return Ok(None);
        }
        let body: serde_json::Value = serde_json::from_slice(d.body).unwrap_or_default();
        for shop in providers::shop_identities(provider, d.headers, &body) {
            let key = format!("{}:{shop}", provider.as_str());
            if let Some(m) = self.engine.ledger().get_record(SHOP_ID, &key).await? {
                return Ok(MerchantId::parse(&String::from_utf8_lossy(&m)).ok());
            }
        }
        Ok(None)
    }

    /// Removes a merchant's connection to a platform (its orders stay); later deliveries are
    /// refused like those of an unknown account. 409 `integration_not_connected` when there
    /// is none.
    pub async fn disconnect_shop(
        &self,
        merchant: MerchantId,
        provider: &str,
    ) -> EngineResult<ConnectionView> {
        let provider = Provider::parse(provider)?;
        let Some(conn) = self.connection(merchant, provider).await? else {
            return Err(EngineError::Conflict {
                code: "integration_not_connected",
                message: format!("{} is not connected", provider.as_str()),
            });
        };
        let mut b = ipay_engine::store::WriteBatch::new();
        // The shop's look-up record goes with the connection, so another merchant may claim it.
        if let Some(shop) = conn
            .shop_domain
            .as_deref()
            .map(providers::normalize_shop)
            .filter(|s| !s.is_empty())
        {
            b.push(WriteOp::DeleteRecord {
                kind: SHOP_ID,
                key: format!("{}:{shop}", provider.as_str()),
            });
        }
        b.push(WriteOp::DeleteRecord {
            kind: CONN,
            key: format!("{merchant}:{}", provider.as_str()),
        });
        self.engine.ledger().submit(b).await?;
        self.view(merchant, provider, None).await
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
        // A shop that names itself is found without `?account=` (the spec's plain path).
        let named = names_its_shop(p) && conn.is_some_and(|c| c.shop_domain.is_some());
        let mut url = format!("/api/integrations/{}/webhook", p.as_str());
        if !named {
            url.push_str(&format!("?account={merchant}"));
        }
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
            signature: p.signature(),
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
        let merchant = match d.account {
            Some(a) => MerchantId::parse(a).ok(),
            None => self.merchant_by_shop(provider, &d).await?,
        }
        .ok_or_else(|| {
            unauthorized(
                "unknown shop or account; connect with shop_domain, or use the webhook_url \
                 from /api/integrations/status",
            )
        })?;
        let conn = self.connection(merchant, provider).await?.ok_or_else(|| {
            unauthorized("unknown account; use the webhook_url from /api/integrations/status")
        })?;
        let scheme = provider.scheme();
        if !verify(scheme, conn.secret.expose(), &d) {
            tracing::info!(provider = provider.as_str(), merchant = %merchant, "shop webhook with a missing or wrong signature refused");
            return Err(unauthorized(&format!(
                "missing or wrong signature ({})",
                provider.signature()
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
        let valid = match mapped_order(provider, conn, topic, &json)? {
            Ok(valid) => valid,
            Err(ignored) => return Ok(ignored),
        };
        let written = Written {
            last_key: format!("{merchant}:{}", provider.as_str()),
            at: now,
            delivery_key,
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
                            written.ops(Some(id)),
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
        self.shop_insert(provider, merchant, valid, &written).await
    }

    /// Stores a delivery's order as a new order (or finds the one with its external id).
    async fn shop_insert(
        &self,
        provider: Provider,
        merchant: MerchantId,
        valid: ValidOrder,
        written: &Written,
    ) -> EngineResult<WebhookOutcome> {
        let extra = |order: Option<OrderId>| written.ops(order);
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

/// A verified delivery's order, mapped by its platform's wire format and validated like every
/// other order; `Err` is the answer to a delivery that creates nothing (its topic, or a
/// notification without order data).
fn mapped_order(
    provider: Provider,
    conn: &Connection,
    topic: Option<&str>,
    json: &serde_json::Value,
) -> EngineResult<Result<ValidOrder, WebhookOutcome>> {
    let ctx = providers::Defaults {
        carrier: conn.default_carrier.as_deref(),
        currency: conn.default_currency.as_deref().unwrap_or("EUR"),
    };
    let input = match providers::map_order(provider, topic, json, &ctx)? {
        providers::Mapped::Order(input) => input,
        providers::Mapped::Ignored(reason) => {
            return Ok(Err(WebhookOutcome {
                result: "ignored",
                order_id: None,
                reason: Some(reason),
                changed: vec![],
            }));
        }
    };
    validate(order_input(*input)).map(Ok).map_err(|e| {
        EngineError::invalid(
            "webhook_payload_invalid",
            e.field.clone(),
            format!("the order cannot be accepted: `{}` {}", e.field, e.reason),
        )
    })
}

/// What an accepted delivery records beside its order: the connection's last delivery time
/// and, when the platform sends a delivery id, the delivery naming its order (so a
/// redelivery can answer with it).
struct Written {
    last_key: String,
    at: Timestamp,
    delivery_key: Option<String>,
}

impl Written {
    fn ops(&self, order: Option<OrderId>) -> Vec<WriteOp> {
        let mut ops = vec![WriteOp::PutRecord {
            kind: LAST,
            key: self.last_key.clone(),
            value: self.at.ms().to_string().into_bytes(),
        }];
        if let Some(key) = &self.delivery_key {
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
    fn every_sample_maps_to_a_valid_order() {
        let d = providers::Defaults {
            carrier: None,
            currency: "EUR",
        };
        for p in Provider::ALL {
            let (body, headers) = providers::sample(*p, Timestamp(1_700_000_000_000));
            let topic = p
                .topic_header()
                .and_then(|h| headers.get(h))
                .and_then(|v| v.to_str().ok());
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let Ok(providers::Mapped::Order(input)) = providers::map_order(*p, topic, &v, &d)
            else {
                panic!("{p:?} sample did not map to an order");
            };
            let valid = validate(order_input(*input));
            assert!(valid.is_ok(), "{p:?}: {valid:?}");
        }
    }
}
