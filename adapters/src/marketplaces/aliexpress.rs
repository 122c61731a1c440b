//! AliExpress open platform (IOP): every call carries `app_key`, `timestamp` (ms),
//! `sign_method=sha256`, the seller's `access_token` and `sign` = upper-case hex of
//! HMAC-SHA256 keyed with the app secret over the parameters sorted by name and written as
//! `name` + `value` with nothing between (the REST form puts the API path in front; the system
//! form, `/sync?method=…`, used here, does not). Orders come from
//! `aliexpress.solution.order.get` (its `param0` is a JSON query: `create_date_start`,
//! `page_size`, `current_page`). Errors come back as `error_response` with a `code`.

use super::{
    Credentials, MarketClient, MarketError, MarketItem, MarketOrder, OrderPage, json_body, minor,
    opt_text, sorted_concat, text, transport,
};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The order-list method.
pub const ORDER_LIST: &str = "aliexpress.solution.order.get";
const NAME: &str = "AliExpress";
/// `error_response` codes that mean the credentials are wrong (not worth retrying).
const REFUSALS: &[&str] = &[
    "IncompleteSignature",
    "IllegalAccessToken",
    "InvalidAppKey",
    "MissingAppKey",
    "MissingAccessToken",
];

/// The signature of `params` (the `sign` entry itself is left out): `api_path` is the REST
/// path (`/auth/token/create`) or `None` for the system form.
pub fn sign(app_secret: &str, api_path: Option<&str>, params: &[(String, String)]) -> String {
    let mut msg = api_path.unwrap_or("").to_string();
    msg.push_str(&sorted_concat(params));
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(msg.as_bytes());
    hex::encode_upper(mac.finalize().into_bytes())
}

/// `ms` as AliExpress writes dates (`yyyy-MM-dd HH:mm:ss`, here in UTC).
pub fn date(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn parse_date(s: &str) -> i64 {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .map(|d| d.and_utc().timestamp_millis())
        .unwrap_or(0)
}

/// The signed parameters of one order-list call.
pub fn list_params(
    creds: &Credentials,
    now_ms: i64,
    since_ms: i64,
    page: u32,
    size: usize,
) -> Vec<(String, String)> {
    let query = serde_json::json!({
        "create_date_start": date(since_ms),
        "page_size": size,
        "current_page": page,
    });
    let mut p: Vec<(String, String)> = vec![
        ("method".into(), ORDER_LIST.into()),
        ("app_key".into(), creds.key.clone()),
        ("access_token".into(), creds.token().to_string()),
        ("timestamp".into(), now_ms.to_string()),
        ("sign_method".into(), "sha256".into()),
        ("param0".into(), query.to_string()),
    ];
    let s = sign(creds.secret.expose(), None, &p);
    p.push(("sign".into(), s));
    p
}

/// One page of orders created at or after `since_ms`.
pub async fn page(
    c: &MarketClient,
    creds: &Credentials,
    now_ms: i64,
    since_ms: i64,
    page: u32,
    size: usize,
) -> Result<OrderPage, MarketError> {
    let params = list_params(creds, now_ms, since_ms, page, size);
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .finish();
    let url = format!("{}?{query}", c.urls().aliexpress_url);
    let r = c
        .http()
        .get(NAME, &url, &[("Accept", "application/json")])
        .await
        .map_err(|e| transport(NAME, e))?;
    let v = json_body(NAME, &r)?;
    if let Some(err) = v.get("error_response") {
        let code = text(err, "/code");
        let msg = format!("AliExpress answered {code}: {}", text(err, "/msg"));
        return Err(if REFUSALS.contains(&code.as_str()) {
            MarketError::Refused(msg)
        } else {
            MarketError::Unavailable(msg)
        });
    }
    let result = &v["aliexpress_solution_order_get_response"]["result"];
    let Some(list) = result.pointer("/target_list/order_dto") else {
        return if result.is_object() {
            Ok(OrderPage::default())
        } else {
            Err(MarketError::Unavailable(
                "AliExpress answered without a result".into(),
            ))
        };
    };
    let orders: Vec<MarketOrder> = list
        .as_array()
        .map(|a| a.iter().map(map_order).collect())
        .unwrap_or_default();
    let total = result["total_count"].as_u64().unwrap_or(0);
    let more = u64::from(page) * (size as u64) < total;
    Ok(OrderPage { orders, more })
}

/// An `order_dto` as a [`MarketOrder`].
pub fn map_order(o: &serde_json::Value) -> MarketOrder {
    let currency = text(o, "/order_amount/currency_code");
    let a = |f: &str| text(o, &format!("/receipt_address/{f}"));
    let items = o
        .pointer("/product_list/order_product_dto")
        .and_then(|p| p.as_array())
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|p| MarketItem {
            sku: text(p, "/product_id"),
            name: text(p, "/product_name"),
            qty: p["product_count"]
                .as_u64()
                .unwrap_or(0)
                .min(u32::MAX as u64) as u32,
            unit_price: minor(p, "/product_unit_price/amount", &currency),
        })
        .collect();
    let phone = [a("phone_country"), a("mobile_no")].concat();
    MarketOrder {
        id: text(o, "/order_id"),
        placed_at_ms: parse_date(&text(o, "/gmt_create")),
        name: a("contact_person"),
        email: opt_text(o, "/buyer_email"),
        phone: Some(phone).filter(|p| !p.is_empty()),
        line1: a("detail_address"),
        line2: opt_text(o, "/receipt_address/address2"),
        city: a("city"),
        postal_code: a("zip"),
        country: a("country"),
        items,
        amount: minor(o, "/order_amount/amount", &currency),
        currency,
        carrier: opt_text(
            o,
            "/product_list/order_product_dto/0/logistics_service_name",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_documented_sort_and_concatenation_order_is_kept() {
        // The platform's documentation example: foo=1, bar=2, foo_bar=3, foobar=4 sorts to
        // bar2foo1foo_bar3foobar4, and the REST form puts the API path in front.
        let params = p(&[
            ("foo", "1"),
            ("bar", "2"),
            ("foo_bar", "3"),
            ("foobar", "4"),
        ]);
        assert_eq!(sorted_concat(&params), "bar2foo1foo_bar3foobar4");
        // Value computed with Python's hmac/hashlib (`adapters/tests/marketplace_signing.py`).
        assert_eq!(
            sign("helloworld", Some("/test/api"), &params),
            "BD011266EC150C787B2201495AA2D6F326BB6910DE77E84EA28F5215DCD7FA5E"
        );
    }
}
