//! Temu open platform (EU router `POST /openapi/router`, JSON body): every call carries
//! `type` (the API name), `app_key`, `access_token`, `timestamp` (seconds), `data_type=JSON`,
//! and `sign` = upper-case hex of MD5 over `app_secret` + the parameters sorted by name and
//! written as `name` + `value` + `app_secret` (object and array values are written as compact
//! JSON). Orders come from `bg.order.list.v2.get` (`pageNumber`, `pageSize`,
//! `createAfter` in seconds). Answers carry `success`, `errorCode`, `errorMsg`, `result`.

use super::{
    Credentials, MarketClient, MarketError, MarketItem, MarketOrder, OrderPage, json_body, minor,
    opt_text, sorted_concat, text, transport,
};
use md5::{Digest, Md5};

/// The order-list API.
pub const ORDER_LIST: &str = "bg.order.list.v2.get";
const NAME: &str = "Temu";
/// `errorCode`s that mean the credentials are wrong (app key, access token, signature).
pub const REFUSALS: &[i64] = &[7_000_002, 7_000_015, 7_000_016];

/// A parameter value as it enters the signature: strings as they are, other JSON as compact
/// JSON text.
pub fn sign_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The signature of a request body (its `sign` member is left out).
pub fn sign(app_secret: &str, body: &serde_json::Map<String, serde_json::Value>) -> String {
    let params: Vec<(String, String)> = body
        .iter()
        .map(|(k, v)| (k.clone(), sign_value(v)))
        .collect();
    let mut h = Md5::new();
    h.update(app_secret.as_bytes());
    h.update(sorted_concat(&params).as_bytes());
    h.update(app_secret.as_bytes());
    hex::encode_upper(h.finalize())
}

/// The signed body of one order-list call.
pub fn list_body(
    creds: &Credentials,
    now_ms: i64,
    since_ms: i64,
    page: u32,
    size: usize,
) -> serde_json::Map<String, serde_json::Value> {
    let mut body = serde_json::Map::new();
    body.insert("type".into(), ORDER_LIST.into());
    body.insert("app_key".into(), creds.key.clone().into());
    body.insert("access_token".into(), creds.token().into());
    body.insert("timestamp".into(), (now_ms / 1000).into());
    body.insert("data_type".into(), "JSON".into());
    body.insert("pageNumber".into(), page.into());
    body.insert("pageSize".into(), size.into());
    body.insert("createAfter".into(), since_ms.div_euclid(1000).into());
    let s = sign(creds.secret.expose(), &body);
    body.insert("sign".into(), s.into());
    body
}

/// One page of orders created at or after `since_ms` (Temu counts in seconds).
pub async fn page(
    c: &MarketClient,
    creds: &Credentials,
    now_ms: i64,
    since_ms: i64,
    page: u32,
    size: usize,
) -> Result<OrderPage, MarketError> {
    let body = serde_json::Value::Object(list_body(creds, now_ms, since_ms, page, size));
    let r = c
        .http()
        .post(
            NAME,
            &c.urls().temu_url,
            &[("Content-Type", "application/json")],
            body.to_string().into_bytes(),
        )
        .await
        .map_err(|e| transport(NAME, e))?;
    let v = json_body(NAME, &r)?;
    if v["success"].as_bool() != Some(true) {
        let code = v["errorCode"].as_i64().unwrap_or(0);
        let msg = format!("Temu answered errorCode {code}: {}", text(&v, "/errorMsg"));
        return Err(if REFUSALS.contains(&code) {
            MarketError::Refused(msg)
        } else {
            MarketError::Unavailable(msg)
        });
    }
    let items = v
        .pointer("/result/pageItems")
        .and_then(|p| p.as_array())
        .map(|a| a.as_slice())
        .unwrap_or_default();
    let orders: Vec<MarketOrder> = items.iter().map(map_order).collect();
    let total = v.pointer("/result/totalItemNum").and_then(|t| t.as_u64());
    let more = u64::from(page) * (size as u64) < total.unwrap_or(0);
    Ok(OrderPage { orders, more })
}

/// A `pageItems` entry (parent order with its sub-orders and receipt) as a [`MarketOrder`].
pub fn map_order(o: &serde_json::Value) -> MarketOrder {
    let p = &o["parentOrderMap"];
    let currency = text(p, "/currency");
    let r = |f: &str| text(p, &format!("/receiptAddress/{f}"));
    let items = o["orderList"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|i| MarketItem {
            sku: text(i, "/skuId"),
            name: text(i, "/goodsName"),
            qty: i["quantity"].as_u64().unwrap_or(0).min(u32::MAX as u64) as u32,
            unit_price: minor(i, "/unitRetailPrice", &currency),
        })
        .collect();
    MarketOrder {
        id: text(p, "/parentOrderSn"),
        placed_at_ms: p["parentOrderTime"]
            .as_i64()
            .unwrap_or(0)
            .saturating_mul(1000),
        name: r("receiptName"),
        email: opt_text(p, "/receiptAddress/mail"),
        phone: opt_text(p, "/receiptAddress/mobile"),
        line1: r("addressLine1"),
        line2: opt_text(p, "/receiptAddress/addressLine2"),
        city: r("regionName3"),
        postal_code: r("postCode"),
        country: r("regionName1"),
        items,
        amount: minor(p, "/orderAmount", &currency),
        currency,
        carrier: opt_text(p, "/shippingCarrier"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_values_are_signed_as_compact_json() {
        let mut body = serde_json::Map::new();
        body.insert("type".into(), "bg.order.list.v2.get".into());
        body.insert("app_key".into(), "k1".into());
        body.insert("timestamp".into(), 1_700_000_000.into());
        body.insert("filter".into(), serde_json::json!({"a": [1, 2]}));
        // Computed with Python's hashlib (`adapters/tests/marketplace_signing.py`):
        // md5("s3cr3t" + 'app_keyk1filter{"a":[1,2]}timestamp1700000000typebg.order.list.v2.get' + "s3cr3t").
        assert_eq!(sign("s3cr3t", &body), "9E74F5459C4EDE38575B49F4F03C85E5");
    }
}
