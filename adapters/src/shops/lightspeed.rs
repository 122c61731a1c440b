//! Lightspeed eCom order webhooks (`orders/created`): the order under `order`, signed with MD5
//! of the body followed by the secret. This module owns the platform's wire description, the
//! mapping of its order JSON and a realistic sample delivery; what happens to the mapped order
//! is the last-mile crate's business.

use super::fields::{carrier, items, join, minor, order, qty, t, ts};
use super::{Defaults, Mapped, Platform, Sample, Scheme, ShopAddress, ShopCustomer};
use ipay_engine::clock::Timestamp;
use ipay_engine::error::EngineResult;
use serde_json::{Value, json};

/// How Lightspeed eCom delivers webhooks.
pub const PLATFORM: Platform = Platform {
    name: "lightspeed",
    scheme: Scheme::Md5BodySecret("X-Signature"),
    signature: "X-Signature: hex(MD5(raw body + secret))",
    delivery_header: None,
    topic_header: None,
    body_topic: None,
    topics: &["orders/created"],
};

/// Maps a Lightspeed eCom order (after its signature and topic were checked).
pub fn map_order(v: &Value, d: &Defaults<'_>) -> EngineResult<Mapped> {
    let o = v.get("order").unwrap_or(v);
    let cur = t(o, "/currency/shortcode")
        .map(|c| c.to_ascii_uppercase())
        .unwrap_or_else(|| d.currency.to_string());
    let customer = ShopCustomer {
        name: t(o, "/addressShippingName")
            .unwrap_or_else(|| join(&[t(o, "/firstname"), t(o, "/lastname")])),
        email: t(o, "/email"),
        phone: t(o, "/phone"),
        address: ShopAddress {
            line1: join(&[
                t(o, "/addressShippingStreet"),
                t(o, "/addressShippingNumber"),
                t(o, "/addressShippingExtension"),
            ]),
            line2: None,
            city: ts(o, "/addressShippingCity"),
            postal_code: ts(o, "/addressShippingZipcode"),
            region: t(o, "/addressShippingRegion"),
            country: ts(o, "/addressShippingCountry/code"),
        },
    };
    let items = items(o.get("products"), &cur, &|it| {
        (
            ts(it, "/articleCode"),
            ts(it, "/productTitle"),
            qty(it, "/quantityOrdered"),
            "/priceIncl".into(),
        )
    })?;
    let value = minor(o, "/priceIncl", &cur, "amount.value")?;
    let c = carrier(t(o, "/shipmentTitle"), d);
    Ok(order(
        t(o, "/number").or_else(|| t(o, "/id")),
        customer,
        items,
        value,
        cur,
        c,
    ))
}

/// A realistic Lightspeed eCom delivery; `n` numbers the order.
pub fn sample(n: u32, _now: Timestamp) -> Sample {
    let mut headers = Vec::new();
    let body = {
        let mut put = |k: &'static str, v: String| headers.push((k, v));
        put("X-Lightspeed-Shop", "123456".into());
        json!({"order": {"id": n, "number": format!("ORD{n}"), "priceIncl": 29.95, "email": "eva.devos@example.nl", "firstname": "Eva", "lastname": "de Vos", "phone": "+31 30 123 4567",
            "addressShippingName": "Eva de Vos", "addressShippingStreet": "Oudegracht", "addressShippingNumber": "12", "addressShippingExtension": "A", "addressShippingZipcode": "3511 AP", "addressShippingCity": "Utrecht", "addressShippingCountry": {"code": "nl", "title": "Netherlands"},
            "shipmentTitle": "PostNL - Standard", "products": [{"articleCode": "PLANT-S", "productTitle": "Small plant", "quantityOrdered": 1, "priceIncl": 29.95}]}})
    };
    Sample { body, headers }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shops::signature::testing;
    use crate::shops::{Provider, map_order as map};

    const BODY: &[u8] = include_bytes!("../../tests/fixtures/shops/lightspeed_orders_created.json");
    /// `python3 sign.py md5 <SECRET> lightspeed_orders_created.json` (the independent signer).
    const SIGNATURE: &str = "2c1571f9543d626c9d9256d1476236a2";

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
        let Ok(Mapped::Order(o)) = map(Provider::Lightspeed, None, &v, &d) else {
            panic!("the vector did not map to an order");
        };
        assert_eq!(o.external_id.as_deref(), Some("ORD00421"));
        assert_eq!(o.amount.value, 2995);
        assert!(o.customer.address.country.eq_ignore_ascii_case("NL"));
        assert_eq!(o.carrier_code, "POSTNL");
    }
}
