//! Shop platforms' wire formats: how each platform signs its order webhooks, which headers carry
//! the delivery id and the topic, and how its order JSON maps onto a [`ShopOrder`]. One module
//! per platform ([`shopify`], [`woocommerce`], [`shopware`], [`bigcommerce`], [`magento`],
//! [`prestashop`], [`lightspeed`], [`picqer`], [`odoo`]), each with its vectors
//! (`adapters/tests/fixtures/shops/`, signed by an independent Python signer).
//!
//! This module owns the platform list ([`Provider`]), the mapped order value and the dispatch
//! to the platform modules; [`signature`] holds the signature schemes the platforms share and
//! [`fields`] the readers of platform JSON. It does not decide what happens to an order: the
//! last-mile crate validates it, de-duplicates deliveries and stores it. A mapping never
//! validates either: it copies what it finds (empty when absent) and lets the shared order
//! validation name the missing or wrong field. Field-by-field tables are in
//! `docs/lastmile-orders.md`.

pub mod bigcommerce;
pub mod fields;
pub mod lightspeed;
pub mod magento;
pub mod odoo;
pub mod picqer;
pub mod prestashop;
pub mod shopify;
pub mod shopware;
pub mod signature;
pub mod woocommerce;

pub use fields::{carrier_code, parse_major};
pub use signature::{Scheme, sign};

use ipay_engine::clock::Timestamp;
use ipay_engine::engine::AmountInput;
use ipay_engine::error::{EngineError, EngineResult};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The platforms that can push orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Shopify,
    Woocommerce,
    Shopware,
    Bigcommerce,
    Magento,
    Prestashop,
    Lightspeed,
    Picqer,
    Odoo,
}

/// What one platform's webhooks look like on the wire, apart from the order JSON itself.
#[derive(Debug, Clone, Copy)]
pub struct Platform {
    /// The URL segment and the order `source`.
    pub name: &'static str,
    /// How deliveries are signed.
    pub scheme: Scheme,
    /// How deliveries are signed, for humans (shown in the connection status).
    pub signature: &'static str,
    /// The header with a per-delivery id, where the platform sends one.
    pub delivery_header: Option<&'static str>,
    /// The header with the topic, where the platform sends it in a header.
    pub topic_header: Option<&'static str>,
    /// JSON pointer of the topic, where the platform sends it in the body.
    pub body_topic: Option<&'static str>,
    /// Topics that create orders; other topics are acknowledged and ignored.
    pub topics: &'static [&'static str],
}

impl Provider {
    /// Every provider, in status order.
    pub const ALL: &'static [Provider] = &[
        Provider::Shopify,
        Provider::Woocommerce,
        Provider::Shopware,
        Provider::Bigcommerce,
        Provider::Magento,
        Provider::Prestashop,
        Provider::Lightspeed,
        Provider::Picqer,
        Provider::Odoo,
    ];

    /// From the URL segment.
    pub fn parse(s: &str) -> EngineResult<Provider> {
        Provider::ALL
            .iter()
            .copied()
            .find(|p| p.as_str() == s.to_ascii_lowercase())
            .ok_or_else(|| EngineError::NotFound {
                resource: "integration provider",
                id: format!(
                    "{} (known: shopify, woocommerce, shopware, bigcommerce, magento, prestashop, lightspeed, picqer, odoo)",
                    s.chars().take(40).collect::<String>()
                ),
            })
    }

    /// The platform's wire description.
    pub fn platform(&self) -> &'static Platform {
        match self {
            Provider::Shopify => &shopify::PLATFORM,
            Provider::Woocommerce => &woocommerce::PLATFORM,
            Provider::Shopware => &shopware::PLATFORM,
            Provider::Bigcommerce => &bigcommerce::PLATFORM,
            Provider::Magento => &magento::PLATFORM,
            Provider::Prestashop => &prestashop::PLATFORM,
            Provider::Lightspeed => &lightspeed::PLATFORM,
            Provider::Picqer => &picqer::PLATFORM,
            Provider::Odoo => &odoo::PLATFORM,
        }
    }

    /// The URL segment and order `source`.
    pub fn as_str(&self) -> &'static str {
        self.platform().name
    }

    /// How deliveries are signed.
    pub fn scheme(&self) -> Scheme {
        self.platform().scheme
    }

    /// How deliveries are signed, for humans.
    pub fn signature(&self) -> &'static str {
        self.platform().signature
    }

    /// The header with a per-delivery id, where the platform sends one.
    pub fn delivery_header(&self) -> Option<&'static str> {
        self.platform().delivery_header
    }

    /// The header with the topic, where the platform sends it in a header.
    pub fn topic_header(&self) -> Option<&'static str> {
        self.platform().topic_header
    }

    /// Topics that create orders.
    pub fn topics(&self) -> &'static [&'static str] {
        self.platform().topics
    }

    /// The delivery's topic: from its header when the platform sends one there, else from the
    /// body.
    fn topic(&self, header_topic: Option<&str>, v: &Value) -> Option<String> {
        header_topic
            .map(str::to_string)
            .or_else(|| self.platform().body_topic.and_then(|ptr| fields::t(v, ptr)))
    }
}

/// Normalises a shop's address or id for look-ups: lower case, without scheme, `www.`,
/// path or trailing dot, so `https://Shop.example/` and `shop.example` are one shop.
pub fn normalize_shop(s: &str) -> String {
    let s = s.trim().to_ascii_lowercase();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(&s);
    let host = s.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.strip_prefix("www.").unwrap_or(host);
    host.trim_end_matches('.').chars().take(200).collect()
}

/// How the delivery names the shop it comes from, for finding its connection without
/// `?account=`: Shopify `X-Shopify-Shop-Domain`, WooCommerce `X-WC-Webhook-Source`, Shopware
/// `source.url` / `source.shopId`, BigCommerce `producer` (`stores/{hash}`), Lightspeed
/// `X-Lightspeed-Shop`, Picqer `X-Picqer-Subdomain`. Normalised ([`normalize_shop`]); empty for
/// platforms that do not say (Magento, PrestaShop, Odoo). Unverified: the caller still checks
/// the signature with the connection's secret.
pub fn shop_identities(p: Provider, headers: &http::HeaderMap, body: &Value) -> Vec<String> {
    let h = |name: &str| signature::header(headers, name).map(str::to_string);
    let b = |ptr: &str| {
        body.pointer(ptr)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let raw: Vec<Option<String>> = match p {
        Provider::Shopify => vec![h("X-Shopify-Shop-Domain")],
        Provider::Woocommerce => vec![h("X-WC-Webhook-Source")],
        Provider::Shopware => vec![b("/source/url"), b("/source/shopId")],
        Provider::Bigcommerce => {
            let hash = b("/producer").and_then(|p| p.strip_prefix("stores/").map(str::to_string));
            let host = hash
                .as_ref()
                .map(|h| format!("store-{h}.mybigcommerce.com"));
            vec![hash, host]
        }
        Provider::Lightspeed => vec![h("X-Lightspeed-Shop")],
        Provider::Picqer => {
            let sub = h("X-Picqer-Subdomain");
            let host = sub.as_ref().map(|s| format!("{s}.picqer.com"));
            vec![sub, host]
        }
        Provider::Magento | Provider::Prestashop | Provider::Odoo => vec![],
    };
    let mut out: Vec<String> = raw
        .into_iter()
        .flatten()
        .map(|s| normalize_shop(&s))
        .filter(|s| !s.is_empty())
        .collect();
    out.dedup();
    out
}

/// What an update delivery says about an order the shop sent before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateInfo {
    /// The shop cancelled the order.
    pub cancelled: bool,
}

/// `Some` when the delivery is an update of an existing order (Shopify `orders/updated`,
/// WooCommerce `order.updated`, BigCommerce `store/order/updated`); creation topics and
/// platforms without an update topic give `None`.
pub fn update_info(p: Provider, header_topic: Option<&str>, v: &Value) -> Option<UpdateInfo> {
    let topic = p.topic(header_topic, v)?;
    match p {
        Provider::Shopify => shopify::update_info(&topic, v),
        Provider::Woocommerce => woocommerce::update_info(&topic, v),
        Provider::Bigcommerce => bigcommerce::update_info(&topic, v),
        _ => None,
    }
}

/// Connection defaults for what a payload may lack.
pub struct Defaults<'a> {
    /// Carrier code for orders whose shipping method names none.
    pub carrier: Option<&'a str>,
    /// Currency for platforms whose order JSON has none.
    pub currency: &'a str,
}

/// A postal address as the platform sent it (not validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShopAddress {
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    pub region: Option<String>,
    pub country: String,
}

/// The person receiving the parcel, as the platform sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShopCustomer {
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub address: ShopAddress,
}

/// One order line; `unit_price` in minor units of the order's currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShopItem {
    pub sku: String,
    pub name: String,
    pub qty: u32,
    pub unit_price: i64,
}

/// A platform's order mapped onto our order fields, before validation.
#[derive(Debug, Clone)]
pub struct ShopOrder {
    /// The platform's own order number.
    pub external_id: Option<String>,
    pub customer: ShopCustomer,
    pub items: Vec<ShopItem>,
    /// What the consumer pays on delivery.
    pub amount: AmountInput,
    /// Carrier code, upper case, empty when neither the order nor the connection names one.
    pub carrier_code: String,
}

/// What a payload became.
pub enum Mapped {
    Order(Box<ShopOrder>),
    /// Acknowledged, nothing to create (the reason is returned to the platform).
    Ignored(String),
}

/// Maps a platform's order JSON (after its signature was checked). A topic the platform
/// sends that does not create orders is [`Mapped::Ignored`].
pub fn map_order(
    p: Provider,
    header_topic: Option<&str>,
    v: &Value,
    d: &Defaults<'_>,
) -> EngineResult<Mapped> {
    if let Some(topic) = p.topic(header_topic, v).as_deref()
        && !p.topics().contains(&topic)
    {
        return Ok(Mapped::Ignored(format!(
            "topic `{topic}` does not create orders (handled: {})",
            p.topics().join(", ")
        )));
    }
    match p {
        Provider::Shopify => shopify::map_order(v, d),
        Provider::Woocommerce => woocommerce::map_order(v, d),
        Provider::Shopware => shopware::map_order(v, d),
        Provider::Bigcommerce => bigcommerce::map_order(v, d),
        Provider::Magento => magento::map_order(v, d),
        Provider::Prestashop => prestashop::map_order(v, d),
        Provider::Lightspeed => lightspeed::map_order(v, d),
        Provider::Picqer => picqer::map_order(v, d),
        Provider::Odoo => odoo::map_order(v, d),
    }
}

/// A platform's realistic delivery: the body and the headers other than the signature.
pub struct Sample {
    pub body: Value,
    pub headers: Vec<(&'static str, String)>,
}

/// A realistic delivery for `simulate`: the body and the non-signature headers.
pub fn sample(p: Provider, now: Timestamp) -> (Vec<u8>, http::HeaderMap) {
    let n: u32 = rand::random::<u32>() % 90_000_000 + 10_000_000;
    let s = match p {
        Provider::Shopify => shopify::sample(n, now),
        Provider::Woocommerce => woocommerce::sample(n, now),
        Provider::Shopware => shopware::sample(n, now),
        Provider::Bigcommerce => bigcommerce::sample(n, now),
        Provider::Magento => magento::sample(n, now),
        Provider::Prestashop => prestashop::sample(n, now),
        Provider::Lightspeed => lightspeed::sample(n, now),
        Provider::Picqer => picqer::sample(n, now),
        Provider::Odoo => odoo::sample(n, now),
    };
    let mut h = http::HeaderMap::new();
    for (k, v) in s.headers {
        if let Ok(v) = http::HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    (serde_json::to_vec(&s.body).unwrap_or_default(), h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_parse_from_their_url_segment_in_any_case() {
        for p in Provider::ALL {
            assert_eq!(Provider::parse(&p.as_str().to_uppercase()).ok(), Some(*p));
        }
        assert!(Provider::parse("etsy").is_err());
    }

    #[test]
    fn shops_are_named_by_their_platform_headers_or_body() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "X-Shopify-Shop-Domain",
            "My-Shop.myshopify.com".parse().unwrap(),
        );
        h.insert(
            "X-WC-Webhook-Source",
            "https://www.Winkel.example/".parse().unwrap(),
        );
        h.insert("X-Picqer-Subdomain", "parcels".parse().unwrap());
        let none = serde_json::json!({});
        let ids = |p| shop_identities(p, &h, &none);
        assert_eq!(ids(Provider::Shopify), vec!["my-shop.myshopify.com"]);
        assert_eq!(ids(Provider::Woocommerce), vec!["winkel.example"]);
        assert_eq!(ids(Provider::Picqer), vec!["parcels", "parcels.picqer.com"]);
        assert!(ids(Provider::Magento).is_empty());
        let sw = serde_json::json!({"source": {"url": "http://shop.example:8000", "shopId": "dgrH7nLU6tlE"}});
        assert_eq!(
            shop_identities(Provider::Shopware, &h, &sw),
            vec!["shop.example:8000", "dgrh7nlu6tle"]
        );
        let bc = serde_json::json!({"producer": "stores/abc123"});
        assert_eq!(
            shop_identities(Provider::Bigcommerce, &h, &bc),
            vec!["abc123", "store-abc123.mybigcommerce.com"]
        );
    }

    #[test]
    fn topics_a_platform_does_not_handle_are_ignored() {
        let d = Defaults {
            carrier: None,
            currency: "EUR",
        };
        let v = serde_json::json!({"id": 1});
        let Ok(Mapped::Ignored(why)) = map_order(Provider::Shopify, Some("orders/delete"), &v, &d)
        else {
            panic!("orders/delete must be ignored");
        };
        assert!(why.contains("orders/create"), "{why}");
    }
}
