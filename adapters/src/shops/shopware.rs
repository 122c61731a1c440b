//! Shopware webhooks (`checkout.order.placed`): the order under
//! `data.payload.order`, the event name in the body. This module owns the platform's wire
//! description, the mapping of its order JSON and a realistic sample delivery; what happens to
//! the mapped order is the last-mile crate's business.

use super::fields::{carrier, items, join, minor, order, qty, t, ts};
use super::{Defaults, Mapped, Platform, Sample, Scheme, ShopAddress, ShopCustomer};
use ipay_engine::clock::Timestamp;
use ipay_engine::error::EngineResult;
use serde_json::{Value, json};

/// How Shopware delivers webhooks.
pub const PLATFORM: Platform = Platform {
    name: "shopware",
    scheme: Scheme::HmacHex("shopware-shop-signature"),
    signature: "shopware-shop-signature: hex(HMAC-SHA256(secret, raw body))",
    delivery_header: None,
    topic_header: None,
    body_topic: Some("/data/event"),
    topics: &["checkout.order.placed"],
};

/// Maps a Shopware order (after its signature and topic were checked).
pub fn map_order(v: &Value, d: &Defaults<'_>) -> EngineResult<Mapped> {
    let Some(o) = v.pointer("/data/payload/order") else {
        return Ok(Mapped::Ignored(
            "no order in data.payload.order; subscribe to checkout.order.placed".into(),
        ));
    };
    let cur = ts(o, "/currency/isoCode");
    let a = "/deliveries/0/shippingOrderAddress";
    let customer = ShopCustomer {
        name: join(&[
            t(o, &format!("{a}/firstName")),
            t(o, &format!("{a}/lastName")),
        ]),
        email: t(o, "/orderCustomer/email"),
        phone: t(o, &format!("{a}/phoneNumber")),
        address: ShopAddress {
            line1: ts(o, &format!("{a}/street")),
            line2: t(o, &format!("{a}/additionalAddressLine1")),
            city: ts(o, &format!("{a}/city")),
            postal_code: ts(o, &format!("{a}/zipcode")),
            region: None,
            country: ts(o, &format!("{a}/country/iso")),
        },
    };
    let items = items(o.get("lineItems"), &cur, &|it| {
        (
            ts(it, "/payload/productNumber"),
            ts(it, "/label"),
            qty(it, "/quantity"),
            "/unitPrice".into(),
        )
    })?;
    let value = minor(o, "/amountTotal", &cur, "amount.value")?;
    let c = carrier(t(o, "/deliveries/0/shippingMethod/name"), d);
    Ok(order(t(o, "/orderNumber"), customer, items, value, cur, c))
}

/// A realistic Shopware delivery; `n` numbers the order.
pub fn sample(n: u32, now: Timestamp) -> Sample {
    Sample {
        body: json!({"data": {"event": "checkout.order.placed", "payload": {"order": {"orderNumber": n.to_string(), "amountTotal": 49.99, "currency": {"isoCode": "EUR"},
        "orderCustomer": {"email": "lukas.schmidt@example.de", "firstName": "Lukas", "lastName": "Schmidt"},
        "deliveries": [{"shippingMethod": {"name": "DHL Paket"}, "shippingOrderAddress": {"firstName": "Lukas", "lastName": "Schmidt", "street": "Hauptstraße 5", "zipcode": "80331", "city": "München", "phoneNumber": "+49 89 1234567", "country": {"iso": "DE"}}}],
        "lineItems": [{"label": "Backpack", "quantity": 1, "unitPrice": 49.99, "payload": {"productNumber": "BP-001"}}]}}},
        "source": {"url": "https://shop.example.de", "shopId": "sim"}, "timestamp": now.ms() / 1000}),
        headers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shops::signature::testing;
    use crate::shops::{Provider, map_order as map};

    const BODY: &[u8] =
        include_bytes!("../../tests/fixtures/shops/shopware_checkout_order_placed.json");
    /// `python3 sign.py hex <SECRET> shopware_checkout_order_placed.json` (the independent signer).
    const SIGNATURE: &str = "c1e03507b0f5890c1219b297ef44788ec3381c4d77cb402643ed4124c2dc9720";

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
        let Ok(Mapped::Order(o)) = map(Provider::Shopware, None, &v, &d) else {
            panic!("the vector did not map to an order");
        };
        assert_eq!(o.external_id.as_deref(), Some("10073"));
        assert_eq!(o.amount.value, 4999);
        assert!(o.customer.address.country.eq_ignore_ascii_case("DE"));
        assert_eq!(o.carrier_code, "DHL");
    }
}
