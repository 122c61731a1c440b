//! PrestaShop (`actionValidateOrder`) through a webhook module: the order, customer, currency,
//! carrier, delivery address and products side by side, the hook name in the body, signed as
//! `X-IPAY-Signature`. This module owns the platform's wire description, the mapping of its
//! order JSON and a realistic sample delivery; what happens to the mapped order is the
//! last-mile crate's business.

use super::fields::{carrier, items, join, minor, order, qty, t, ts};
use super::{Defaults, Mapped, Platform, Sample, Scheme, ShopAddress, ShopCustomer};
use ipay_engine::clock::Timestamp;
use ipay_engine::error::EngineResult;
use serde_json::{Value, json};

/// How PrestaShop delivers webhooks.
pub const PLATFORM: Platform = Platform {
    name: "prestashop",
    scheme: Scheme::HmacHexPrefixed("X-IPAY-Signature"),
    signature: "X-IPAY-Signature: sha256=hex(HMAC-SHA256(secret, raw body))",
    delivery_header: None,
    topic_header: None,
    body_topic: Some("/hook"),
    topics: &["actionValidateOrder"],
};

/// Maps a PrestaShop order (after its signature and topic were checked).
pub fn map_order(v: &Value, d: &Defaults<'_>) -> EngineResult<Mapped> {
    let cur = ts(v, "/currency/iso_code");
    let a = "/address_delivery";
    let customer = ShopCustomer {
        name: join(&[
            t(v, &format!("{a}/firstname")),
            t(v, &format!("{a}/lastname")),
        ]),
        email: t(v, "/customer/email"),
        phone: t(v, &format!("{a}/phone_mobile")).or_else(|| t(v, &format!("{a}/phone"))),
        address: ShopAddress {
            line1: ts(v, &format!("{a}/address1")),
            line2: t(v, &format!("{a}/address2")),
            city: ts(v, &format!("{a}/city")),
            postal_code: ts(v, &format!("{a}/postcode")),
            region: None,
            country: ts(v, &format!("{a}/country_iso_code")),
        },
    };
    let items = items(v.get("products"), &cur, &|it| {
        (
            ts(it, "/product_reference"),
            ts(it, "/product_name"),
            qty(it, "/product_quantity"),
            "/unit_price_tax_incl".into(),
        )
    })?;
    let value = minor(v, "/order/total_paid_tax_incl", &cur, "amount.value")?;
    let c = carrier(t(v, "/carrier/name"), d);
    Ok(order(
        t(v, "/order/reference"),
        customer,
        items,
        value,
        cur,
        c,
    ))
}

/// A realistic PrestaShop delivery; `n` numbers the order.
pub fn sample(n: u32, _now: Timestamp) -> Sample {
    Sample {
        body: json!({"hook": "actionValidateOrder", "order": {"id": n, "reference": format!("PS{n}"), "total_paid_tax_incl": "18.40"},
        "customer": {"email": "ana.garcia@example.es"}, "currency": {"iso_code": "EUR"}, "carrier": {"name": "SEUR 24h"},
        "address_delivery": {"firstname": "Ana", "lastname": "García", "address1": "Calle Mayor 3", "address2": "", "postcode": "28013", "city": "Madrid", "phone_mobile": "+34 612 345 678", "country_iso_code": "ES"},
        "products": [{"product_reference": "SOAP-3", "product_name": "Olive soap (3)", "product_quantity": 1, "unit_price_tax_incl": "13.40"}]}),
        headers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shops::signature::testing;
    use crate::shops::{Provider, map_order as map};

    const BODY: &[u8] =
        include_bytes!("../../tests/fixtures/shops/prestashop_action_validate_order.json");
    /// `python3 sign.py sha256 <SECRET> prestashop_action_validate_order.json` (the independent signer).
    const SIGNATURE: &str =
        "sha256=75a2805c45a3c561f8db5f026c73d9b421030322c864d4db27c67a24001db1a7";

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
        let Ok(Mapped::Order(o)) = map(Provider::Prestashop, None, &v, &d) else {
            panic!("the vector did not map to an order");
        };
        assert_eq!(o.external_id.as_deref(), Some("XKBKNABJK"));
        assert_eq!(o.amount.value, 1840);
        assert!(o.customer.address.country.eq_ignore_ascii_case("ES"));
        assert_eq!(o.carrier_code, "SEUR");
    }
}
