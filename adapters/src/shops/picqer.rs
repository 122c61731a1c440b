//! Picqer webhooks (`orders.completed`): the order under `data`, the event in the body. A
//! Picqer order carries neither a currency (the connection's default applies) nor a total (the
//! sum of its lines is collected). This module owns the platform's wire description, the
//! mapping of its order JSON and a realistic sample delivery; what happens to the mapped order
//! is the last-mile crate's business.

use super::fields::{carrier, items, order, qty, t, ts};
use super::{Defaults, Mapped, Platform, Sample, Scheme, ShopAddress, ShopCustomer};
use ipay_engine::clock::Timestamp;
use ipay_engine::error::EngineResult;
use serde_json::{Value, json};

/// How Picqer delivers webhooks.
pub const PLATFORM: Platform = Platform {
    name: "picqer",
    scheme: Scheme::HmacBase64("X-Picqer-Signature"),
    signature: "X-Picqer-Signature: base64(HMAC-SHA256(secret, raw body))",
    delivery_header: None,
    topic_header: None,
    body_topic: Some("/event"),
    topics: &["orders.completed"],
};

/// Maps a Picqer order (after its signature and topic were checked).
pub fn map_order(v: &Value, d: &Defaults<'_>) -> EngineResult<Mapped> {
    let o = v.get("data").unwrap_or(v);
    let cur = d.currency.to_string();
    let customer = ShopCustomer {
        name: ts(o, "/deliveryname"),
        email: t(o, "/emailaddress"),
        phone: t(o, "/telephone"),
        address: ShopAddress {
            line1: ts(o, "/deliveryaddress"),
            line2: t(o, "/deliveryaddress2"),
            city: ts(o, "/deliverycity"),
            postal_code: ts(o, "/deliveryzipcode"),
            region: t(o, "/deliveryregion"),
            country: ts(o, "/deliverycountry"),
        },
    };
    let items = items(o.get("products"), &cur, &|it| {
        (
            ts(it, "/productcode"),
            ts(it, "/name"),
            qty(it, "/amount"),
            "/price".into(),
        )
    })?;
    // A Picqer order has no total: the sum of its lines is what is collected.
    let value = items
        .iter()
        .try_fold(0i64, |acc, i| {
            acc.checked_add(i.unit_price.checked_mul(i64::from(i.qty))?)
        })
        .unwrap_or(-1);
    let c = carrier(
        t(o, "/shippingprovider_name").or_else(|| t(o, "/preferred_delivery_carrier")),
        d,
    );
    Ok(order(
        t(o, "/orderid").or_else(|| t(o, "/idorder")),
        customer,
        items,
        value,
        cur,
        c,
    ))
}

/// A realistic Picqer delivery; `n` numbers the order.
pub fn sample(n: u32, now: Timestamp) -> Sample {
    Sample {
        body: json!({"idhook": 1234, "name": "IPAY orders", "event": "orders.completed", "event_triggered_at": now.to_string(),
        "data": {"idorder": n, "orderid": format!("20250{n}"), "reference": format!("SHOP-{n}"), "deliveryname": "Daan Bakker", "deliveryaddress": "Grote Markt 1", "deliveryzipcode": "9711 LV", "deliverycity": "Groningen", "deliverycountry": "NL", "emailaddress": "daan.bakker@example.nl", "telephone": "+31 50 123 4567", "preferred_delivery_carrier": "DHL",
            "products": [{"productcode": "BOOK-42", "name": "Novel", "amount": 2, "price": 14.5}]}}),
        headers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shops::signature::testing;
    use crate::shops::{Provider, map_order as map};

    const BODY: &[u8] = include_bytes!("../../tests/fixtures/shops/picqer_orders_completed.json");
    /// `python3 sign.py b64 <SECRET> picqer_orders_completed.json` (the independent signer).
    const SIGNATURE: &str = "sjeIwENRI39BgULvIpInccexiP2Z9ysZN0Ik6Ii72+4=";

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
        let Ok(Mapped::Order(o)) = map(Provider::Picqer, None, &v, &d) else {
            panic!("the vector did not map to an order");
        };
        assert_eq!(o.external_id.as_deref(), Some("20250412"));
        assert_eq!(o.amount.value, 2900);
        assert!(o.customer.address.country.eq_ignore_ascii_case("NL"));
        assert_eq!(o.carrier_code, "DHL");
    }
}
