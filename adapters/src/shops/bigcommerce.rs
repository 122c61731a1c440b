//! BigCommerce order webhooks (`store/order/created`, `store/order/updated`): the scope in the
//! body and the V2 order under `data.order` (a bare notification carries only the id and is
//! ignored). This module owns the platform's wire description, the mapping of its order JSON,
//! what its update deliveries say and a realistic sample delivery; what happens to the mapped
//! order is the last-mile crate's business.

use super::UpdateInfo;
use super::fields::{carrier, items, join, minor, order, qty, t, ts};
use super::{Defaults, Mapped, Platform, Sample, Scheme, ShopAddress, ShopCustomer};
use ipay_engine::clock::Timestamp;
use ipay_engine::error::EngineResult;
use serde_json::{Value, json};

/// How BigCommerce delivers webhooks.
pub const PLATFORM: Platform = Platform {
    name: "bigcommerce",
    scheme: Scheme::HmacHexPrefixed("X-Hub-Signature"),
    signature: "X-Hub-Signature: sha256=hex(HMAC-SHA256(secret, raw body))",
    delivery_header: None,
    topic_header: None,
    body_topic: Some("/scope"),
    topics: &["store/order/created", "store/order/updated"],
};

/// `Some` for `store/order/updated`, saying whether the shop cancelled the order.
pub fn update_info(topic: &str, v: &Value) -> Option<UpdateInfo> {
    if topic != "store/order/updated" {
        return None;
    }
    let o = v.pointer("/data/order").unwrap_or(v);
    Some(UpdateInfo {
        cancelled: t(o, "/status_id").as_deref() == Some("5")
            || t(o, "/status").is_some_and(|s| s.eq_ignore_ascii_case("cancelled")),
    })
}

/// Maps a BigCommerce order (after its signature and topic were checked).
pub fn map_order(v: &Value, d: &Defaults<'_>) -> EngineResult<Mapped> {
    let o = v.pointer("/data/order").unwrap_or(v);
    if o.get("billing_address").is_none() {
        return Ok(Mapped::Ignored(
            "notification carries only the order id; send the V2 order as data.order".into(),
        ));
    }
    let cur = ts(o, "/currency_code");
    let a = if o.pointer("/shipping_addresses/0").is_some() {
        "/shipping_addresses/0"
    } else {
        "/billing_address"
    };
    let customer = ShopCustomer {
        name: join(&[
            t(o, &format!("{a}/first_name")),
            t(o, &format!("{a}/last_name")),
        ]),
        email: t(o, &format!("{a}/email")).or_else(|| t(o, "/billing_address/email")),
        phone: t(o, &format!("{a}/phone")),
        address: ShopAddress {
            line1: ts(o, &format!("{a}/street_1")),
            line2: t(o, &format!("{a}/street_2")),
            city: ts(o, &format!("{a}/city")),
            postal_code: ts(o, &format!("{a}/zip")),
            region: t(o, &format!("{a}/state")),
            country: ts(o, &format!("{a}/country_iso2")),
        },
    };
    let items = items(o.get("products"), &cur, &|it| {
        (
            ts(it, "/sku"),
            ts(it, "/name"),
            qty(it, "/quantity"),
            "/price_inc_tax".into(),
        )
    })?;
    let value = minor(o, "/total_inc_tax", &cur, "amount.value")?;
    let c = carrier(t(o, "/shipping_addresses/0/shipping_method"), d);
    Ok(order(t(o, "/id"), customer, items, value, cur, c))
}

/// A realistic BigCommerce delivery; `n` numbers the order.
pub fn sample(n: u32, _now: Timestamp) -> Sample {
    Sample {
        body: json!({"scope": "store/order/created", "store_id": "1025646", "data": {"type": "order", "id": n, "order": {"id": n, "currency_code": "EUR", "total_inc_tax": "19.9500",
        "billing_address": {"first_name": "Sophie", "last_name": "Martin", "street_1": "12 Rue de la Paix", "street_2": "", "city": "Paris", "state": "", "zip": "75002", "country_iso2": "FR", "email": "sophie.martin@example.fr", "phone": "+33 1 23 45 67 89"},
        "products": [{"sku": "SCARF-RED", "name": "Red scarf", "quantity": 1, "price_inc_tax": "19.9500"}],
        "shipping_addresses": [{"first_name": "Sophie", "last_name": "Martin", "street_1": "12 Rue de la Paix", "city": "Paris", "zip": "75002", "country_iso2": "FR", "email": "sophie.martin@example.fr", "phone": "+33 1 23 45 67 89", "shipping_method": "Colissimo"}]}}}),
        headers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shops::signature::testing;
    use crate::shops::{Provider, map_order as map};

    const BODY: &[u8] = include_bytes!("../../tests/fixtures/shops/bigcommerce_order_created.json");
    /// `python3 sign.py sha256 <SECRET> bigcommerce_order_created.json` (the independent signer).
    const SIGNATURE: &str =
        "sha256=17800d809deda764dcb47ded7711de8c30a8074b14bb6145163228e2413c0e1b";

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
        let Ok(Mapped::Order(o)) = map(Provider::Bigcommerce, None, &v, &d) else {
            panic!("the vector did not map to an order");
        };
        assert_eq!(o.external_id.as_deref(), Some("250"));
        assert_eq!(o.amount.value, 2495);
        assert!(o.customer.address.country.eq_ignore_ascii_case("FR"));
        assert_eq!(o.carrier_code, "COLISSIMO");
    }
}
