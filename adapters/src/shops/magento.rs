//! Magento (`sales_order_save_after`) through a webhook module: the sales
//! order JSON under `order`, the event in the body, signed as `X-IPAY-Signature`. This module
//! owns the platform's wire description, the mapping of its order JSON and a realistic sample
//! delivery; what happens to the mapped order is the last-mile crate's business.

use super::fields::{carrier, items, join, minor, order, qty, t, ts};
use super::{Defaults, Mapped, Platform, Sample, Scheme, ShopAddress, ShopCustomer};
use ipay_engine::clock::Timestamp;
use ipay_engine::error::EngineResult;
use serde_json::{Value, json};

/// How Magento delivers webhooks.
pub const PLATFORM: Platform = Platform {
    name: "magento",
    scheme: Scheme::HmacHexPrefixed("X-IPAY-Signature"),
    signature: "X-IPAY-Signature: sha256=hex(HMAC-SHA256(secret, raw body))",
    delivery_header: None,
    topic_header: None,
    body_topic: Some("/event"),
    topics: &["sales_order_save_after"],
};

/// Maps a Magento order (after its signature and topic were checked).
pub fn map_order(v: &Value, d: &Defaults<'_>) -> EngineResult<Mapped> {
    let o = v.get("order").unwrap_or(v);
    let cur = ts(o, "/order_currency_code");
    let a = if o
        .pointer("/extension_attributes/shipping_assignments/0/shipping/address")
        .is_some()
    {
        "/extension_attributes/shipping_assignments/0/shipping/address"
    } else {
        "/billing_address"
    };
    let customer = ShopCustomer {
        name: join(&[
            t(o, &format!("{a}/firstname")),
            t(o, &format!("{a}/lastname")),
        ]),
        email: t(o, "/customer_email").or_else(|| t(o, &format!("{a}/email"))),
        phone: t(o, &format!("{a}/telephone")),
        address: ShopAddress {
            line1: ts(o, &format!("{a}/street/0")),
            line2: t(o, &format!("{a}/street/1")),
            city: ts(o, &format!("{a}/city")),
            postal_code: ts(o, &format!("{a}/postcode")),
            region: t(o, &format!("{a}/region")),
            country: ts(o, &format!("{a}/country_id")),
        },
    };
    // Configurable products list a parent and a child line; keep the parents.
    let lines: Vec<Value> = o
        .get("items")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|it| it.get("parent_item_id").is_none_or(Value::is_null))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let lines = Value::Array(lines);
    let items = items(Some(&lines), &cur, &|it| {
        (
            ts(it, "/sku"),
            ts(it, "/name"),
            qty(it, "/qty_ordered"),
            "/price_incl_tax".into(),
        )
    })?;
    let value = minor(o, "/grand_total", &cur, "amount.value")?;
    let c = carrier(t(o, "/shipping_description"), d);
    Ok(order(t(o, "/increment_id"), customer, items, value, cur, c))
}

/// A realistic Magento delivery; `n` numbers the order.
pub fn sample(n: u32, _now: Timestamp) -> Sample {
    Sample {
        body: json!({"event": "sales_order_save_after", "order": {"entity_id": n, "increment_id": format!("0000{n}"), "order_currency_code": "EUR", "grand_total": 64.0, "customer_email": "marco.rossi@example.it", "shipping_description": "UPS - Standard",
        "items": [{"sku": "SHOE-41", "name": "Leather shoes 41", "qty_ordered": 1, "price_incl_tax": 59.0, "parent_item_id": null}],
        "extension_attributes": {"shipping_assignments": [{"shipping": {"address": {"firstname": "Marco", "lastname": "Rossi", "street": ["Via Roma 10"], "city": "Milano", "postcode": "20121", "country_id": "IT", "telephone": "+39 02 1234567"}}}]}}}),
        headers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shops::signature::testing;
    use crate::shops::{Provider, map_order as map};

    const BODY: &[u8] =
        include_bytes!("../../tests/fixtures/shops/magento_sales_order_save_after.json");
    /// `python3 sign.py sha256 <SECRET> magento_sales_order_save_after.json` (the independent signer).
    const SIGNATURE: &str =
        "sha256=55b3b9ad8db6082115a86008a959a1ca0c4762f245680e5e616dca07924f535b";

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
        let Ok(Mapped::Order(o)) = map(Provider::Magento, None, &v, &d) else {
            panic!("the vector did not map to an order");
        };
        assert_eq!(o.external_id.as_deref(), Some("000003081"));
        assert_eq!(o.amount.value, 6400);
        assert!(o.customer.address.country.eq_ignore_ascii_case("IT"));
        assert_eq!(o.carrier_code, "UPS");
    }
}
