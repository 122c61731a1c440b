//! Odoo (`sale.order.confirmed`) through its webhook action posting the confirmed
//! `sale.order`: many2one fields as `[id, name]`, the shipping partner under
//! `partner_shipping`. Odoo cannot sign, so the secret travels as the `token` query parameter.
//! This module owns the platform's wire description, the mapping of its order JSON and a
//! realistic sample delivery; what happens to the mapped order is the last-mile crate's
//! business.

use super::fields::{carrier, items, minor, name_of, order, qty, t, ts};
use super::{Defaults, Mapped, Platform, Sample, Scheme, ShopAddress, ShopCustomer};
use ipay_engine::clock::Timestamp;
use ipay_engine::error::EngineResult;
use serde_json::{Value, json};

/// How Odoo delivers webhooks.
pub const PLATFORM: Platform = Platform {
    name: "odoo",
    scheme: Scheme::UrlToken,
    signature: "token=<secret> in the webhook URL (the platform cannot sign)",
    delivery_header: None,
    topic_header: None,
    body_topic: None,
    topics: &["sale.order.confirmed"],
};

/// Maps a Odoo order (after its signature and topic were checked).
pub fn map_order(v: &Value, d: &Defaults<'_>) -> EngineResult<Mapped> {
    if let Some(state) = t(v, "/state")
        && state != "sale"
        && state != "done"
    {
        return Ok(Mapped::Ignored(format!(
            "sale.order in state `{state}` is not confirmed"
        )));
    }
    let cur = name_of(v, "/currency_id")
        .or_else(|| t(v, "/currency"))
        .unwrap_or_else(|| d.currency.to_string());
    let a = "/partner_shipping";
    let customer = ShopCustomer {
        name: ts(v, &format!("{a}/name")),
        email: t(v, &format!("{a}/email")),
        phone: t(v, &format!("{a}/phone")).or_else(|| t(v, &format!("{a}/mobile"))),
        address: ShopAddress {
            line1: ts(v, &format!("{a}/street")),
            line2: t(v, &format!("{a}/street2")),
            city: ts(v, &format!("{a}/city")),
            postal_code: ts(v, &format!("{a}/zip")),
            region: name_of(v, &format!("{a}/state_id")),
            country: t(v, &format!("{a}/country_code")).unwrap_or_default(),
        },
    };
    let items = items(v.get("order_line"), &cur, &|it| {
        (
            ts(it, "/default_code"),
            ts(it, "/name"),
            qty(it, "/product_uom_qty"),
            "/price_unit".into(),
        )
    })?;
    let value = minor(v, "/amount_total", &cur, "amount.value")?;
    let c = carrier(name_of(v, "/carrier_id"), d);
    Ok(order(t(v, "/name"), customer, items, value, cur, c))
}

/// A realistic Odoo delivery; `n` numbers the order.
pub fn sample(n: u32, _now: Timestamp) -> Sample {
    Sample {
        body: json!({"_model": "sale.order", "_id": n, "name": format!("S{n}"), "state": "sale", "amount_total": 99.0, "currency_id": [1, "EUR"], "carrier_id": [3, "GLS Business"],
        "partner_shipping": {"name": "Jonas Weber", "street": "Bahnhofstrasse 1", "zip": "8001", "city": "Zürich", "country_code": "CH", "email": "jonas.weber@example.ch", "phone": "+41 44 123 45 67"},
        "order_line": [{"default_code": "WATCH-1", "name": "Wrist watch", "product_uom_qty": 1, "price_unit": 99.0}]}),
        headers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shops::signature::testing;
    use crate::shops::{Provider, map_order as map};

    const BODY: &[u8] = include_bytes!("../../tests/fixtures/shops/odoo_sale_order_confirmed.json");

    #[test]
    fn only_the_secret_itself_is_accepted_as_token() {
        assert!(testing::accepts(PLATFORM.scheme, BODY, testing::SECRET));
        assert!(!testing::accepts(
            PLATFORM.scheme,
            BODY,
            "shop-secret-0123456789abcdeF"
        ));
    }

    #[test]
    fn the_vector_maps_to_its_order() {
        let v: Value = serde_json::from_slice(BODY).unwrap();
        let d = Defaults {
            carrier: None,
            currency: "EUR",
        };
        let Ok(Mapped::Order(o)) = map(Provider::Odoo, None, &v, &d) else {
            panic!("the vector did not map to an order");
        };
        assert_eq!(o.external_id.as_deref(), Some("S00042"));
        assert_eq!(o.amount.value, 9900);
        assert!(o.customer.address.country.eq_ignore_ascii_case("CH"));
        assert_eq!(o.carrier_code, "GLS");
    }
}
