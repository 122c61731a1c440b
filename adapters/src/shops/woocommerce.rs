//! WooCommerce order webhooks (`order.created`, `order.updated`): the order JSON,
//! signed with the webhook's secret; the topic and a delivery id come in headers. This module
//! owns the platform's wire description, the mapping of its order JSON, what its update
//! deliveries say and a realistic sample delivery; what happens to the mapped order is the
//! last-mile crate's business.

use super::UpdateInfo;
use super::fields::{carrier, items, join, minor, order, qty, t, ts};
use super::{Defaults, Mapped, Platform, Sample, Scheme, ShopAddress, ShopCustomer};
use ipay_engine::clock::Timestamp;
use ipay_engine::error::EngineResult;
use serde_json::{Value, json};

/// How WooCommerce delivers webhooks.
pub const PLATFORM: Platform = Platform {
    name: "woocommerce",
    scheme: Scheme::HmacBase64("X-WC-Webhook-Signature"),
    signature: "X-WC-Webhook-Signature: base64(HMAC-SHA256(secret, raw body))",
    delivery_header: Some("X-WC-Webhook-Delivery-ID"),
    topic_header: Some("X-WC-Webhook-Topic"),
    body_topic: None,
    topics: &["order.created", "order.updated"],
};

/// `Some` for `order.updated`, saying whether the shop cancelled the order.
pub fn update_info(topic: &str, v: &Value) -> Option<UpdateInfo> {
    (topic == "order.updated").then(|| UpdateInfo {
        cancelled: t(v, "/status").is_some_and(|s| s.eq_ignore_ascii_case("cancelled")),
    })
}

/// Maps a WooCommerce order (after its signature and topic were checked).
pub fn map_order(v: &Value, d: &Defaults<'_>) -> EngineResult<Mapped> {
    let cur = ts(v, "/currency");
    let customer = ShopCustomer {
        name: join(&[t(v, "/shipping/first_name"), t(v, "/shipping/last_name")]),
        email: t(v, "/billing/email"),
        phone: t(v, "/shipping/phone").or_else(|| t(v, "/billing/phone")),
        address: ShopAddress {
            line1: ts(v, "/shipping/address_1"),
            line2: t(v, "/shipping/address_2"),
            city: ts(v, "/shipping/city"),
            postal_code: ts(v, "/shipping/postcode"),
            region: t(v, "/shipping/state"),
            country: ts(v, "/shipping/country"),
        },
    };
    let items = items(v.get("line_items"), &cur, &|it| {
        (
            ts(it, "/sku"),
            ts(it, "/name"),
            qty(it, "/quantity"),
            "/price".into(),
        )
    })?;
    let value = minor(v, "/total", &cur, "amount.value")?;
    let c = carrier(t(v, "/shipping_lines/0/method_title"), d);
    Ok(order(t(v, "/id"), customer, items, value, cur, c))
}

/// A realistic WooCommerce delivery; `n` numbers the order.
pub fn sample(n: u32, _now: Timestamp) -> Sample {
    let mut headers = Vec::new();
    let body = {
        let mut put = |k: &'static str, v: String| headers.push((k, v));
        put("X-WC-Webhook-Topic", "order.created".into());
        put("X-WC-Webhook-Delivery-ID", format!("{n}"));
        json!({"id": n, "number": n.to_string(), "status": "processing", "currency": "EUR", "total": "27.50",
            "billing": {"email": "tom.peeters@example.be", "phone": "+32 470 12 34 56"},
            "shipping": {"first_name": "Tom", "last_name": "Peeters", "address_1": "Meir 50", "address_2": "", "city": "Antwerpen", "postcode": "2000", "country": "BE", "state": ""},
            "line_items": [{"sku": "TEA-GREEN", "name": "Green tea 250g", "quantity": 1, "price": 22.5}],
            "shipping_lines": [{"method_title": "bpost", "total": "5.00"}]})
    };
    Sample { body, headers }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shops::signature::testing;
    use crate::shops::{Provider, map_order as map};

    const BODY: &[u8] = include_bytes!("../../tests/fixtures/shops/woocommerce_order_created.json");
    /// `python3 sign.py b64 <SECRET> woocommerce_order_created.json` (the independent signer).
    const SIGNATURE: &str = "A7gZ1ePlOsKRcWsmWv0MEtFn1tZaSTDjB+tGF3qRpjA=";

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
        let Ok(Mapped::Order(o)) = map(Provider::Woocommerce, Some("order.created"), &v, &d) else {
            panic!("the vector did not map to an order");
        };
        assert_eq!(o.external_id.as_deref(), Some("727"));
        assert_eq!(o.amount.value, 2750);
        assert!(o.customer.address.country.eq_ignore_ascii_case("BE"));
        assert_eq!(o.carrier_code, "BPOST");
    }
}
