//! Shopify order webhooks (`orders/create`, `orders/paid`, `orders/updated`): the order
//! JSON, signed with the app's client secret; the topic and a delivery id come in
//! headers. This module owns the platform's wire description, the mapping of its order JSON,
//! what its update deliveries say and a realistic sample delivery; what happens to the mapped
//! order is the last-mile crate's business.

use super::UpdateInfo;
use super::fields::{carrier, items, join, minor, order, qty, t, ts};
use super::{Defaults, Mapped, Platform, Sample, Scheme, ShopAddress, ShopCustomer};
use ipay_engine::clock::Timestamp;
use ipay_engine::error::EngineResult;
use serde_json::{Value, json};

/// How Shopify delivers webhooks.
pub const PLATFORM: Platform = Platform {
    name: "shopify",
    scheme: Scheme::HmacBase64("X-Shopify-Hmac-Sha256"),
    signature: "X-Shopify-Hmac-Sha256: base64(HMAC-SHA256(secret, raw body))",
    delivery_header: Some("X-Shopify-Webhook-Id"),
    topic_header: Some("X-Shopify-Topic"),
    body_topic: None,
    topics: &["orders/create", "orders/paid", "orders/updated"],
};

/// `Some` for `orders/updated`, saying whether the shop cancelled the order.
pub fn update_info(topic: &str, v: &Value) -> Option<UpdateInfo> {
    (topic == "orders/updated").then(|| UpdateInfo {
        cancelled: t(v, "/cancelled_at").is_some(),
    })
}

/// Maps a Shopify order (after its signature and topic were checked).
pub fn map_order(v: &Value, d: &Defaults<'_>) -> EngineResult<Mapped> {
    let cur = ts(v, "/currency");
    let a = "/shipping_address";
    let customer = ShopCustomer {
        name: t(v, &format!("{a}/name"))
            .unwrap_or_else(|| join(&[t(v, "/customer/first_name"), t(v, "/customer/last_name")])),
        email: t(v, "/email").or_else(|| t(v, "/customer/email")),
        phone: t(v, &format!("{a}/phone")).or_else(|| t(v, "/phone")),
        address: ShopAddress {
            line1: ts(v, &format!("{a}/address1")),
            line2: t(v, &format!("{a}/address2")),
            city: ts(v, &format!("{a}/city")),
            postal_code: ts(v, &format!("{a}/zip")),
            region: t(v, &format!("{a}/province")),
            country: ts(v, &format!("{a}/country_code")),
        },
    };
    let items = items(v.get("line_items"), &cur, &|it| {
        (
            ts(it, "/sku"),
            t(it, "/title").unwrap_or_else(|| ts(it, "/name")),
            qty(it, "/quantity"),
            "/price".into(),
        )
    })?;
    let value = minor(v, "/total_price", &cur, "amount.value")?;
    let c = carrier(
        t(v, "/shipping_lines/0/title").or_else(|| t(v, "/shipping_lines/0/code")),
        d,
    );
    Ok(order(t(v, "/id"), customer, items, value, cur, c))
}

/// A realistic Shopify delivery; `n` numbers the order.
pub fn sample(n: u32, now: Timestamp) -> Sample {
    let mut headers = Vec::new();
    let body = {
        let mut put = |k: &'static str, v: String| headers.push((k, v));
        put("X-Shopify-Topic", "orders/create".into());
        put("X-Shopify-Webhook-Id", format!("sim-{n}-{}", now.ms()));
        put("X-Shopify-Shop-Domain", "ipay-demo.myshopify.com".into());
        json!({"id": 5_000_000_000u64 + u64::from(n), "name": format!("#{n}"), "email": "anna.jansen@example.nl", "currency": "EUR", "total_price": "34.90", "financial_status": "pending",
            "shipping_address": {"name": "Anna Jansen", "address1": "Prinsengracht 263", "address2": null, "city": "Amsterdam", "zip": "1016 GV", "province": null, "country_code": "NL", "phone": "+31 20 555 0101"},
            "line_items": [{"sku": "CANDLE-01", "title": "Soy candle", "quantity": 2, "price": "12.95"}],
            "shipping_lines": [{"title": "PostNL Standaard", "price": "4.95"}]})
    };
    Sample { body, headers }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shops::signature::testing;
    use crate::shops::{Provider, map_order as map};

    const BODY: &[u8] = include_bytes!("../../tests/fixtures/shops/shopify_orders_create.json");
    /// `python3 sign.py b64 <SECRET> shopify_orders_create.json` (the independent signer).
    const SIGNATURE: &str = "BiTT0s9FaOpJPwP3OwFQWPrU6x3mh9+1dabYoSUAefg=";

    #[test]
    fn the_vector_signature_verifies_and_an_altered_body_does_not() {
        assert!(testing::accepts(PLATFORM.scheme, BODY, SIGNATURE));
        assert!(!testing::accepts(PLATFORM.scheme, &BODY[1..], SIGNATURE));
    }

    #[test]
    fn the_vector_maps_to_its_order() {
        let v: Value = serde_json::from_slice(BODY).unwrap();
        let d = Defaults {
            carrier: None,
            currency: "EUR",
        };
        let Ok(Mapped::Order(o)) = map(Provider::Shopify, Some("orders/create"), &v, &d) else {
            panic!("the vector did not map to an order");
        };
        assert_eq!(o.external_id.as_deref(), Some("5678901234567"));
        assert_eq!(o.amount.value, 3490);
        assert!(o.customer.address.country.eq_ignore_ascii_case("NL"));
        assert_eq!(o.carrier_code, "POSTNL");
    }
}
