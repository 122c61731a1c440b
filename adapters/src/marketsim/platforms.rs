//! The simulated platform APIs: authentication checks, paging and each platform's order JSON.

use super::{
    AE_ACCESS_TOKEN, AE_APP_KEY, AE_APP_SECRET, BOL_CLIENT_ID, BOL_CLIENT_SECRET, SimOrder, State,
    TEMU_ACCESS_TOKEN, TEMU_APP_KEY, TEMU_APP_SECRET,
};
use crate::marketplaces::{Marketplace, aliexpress, bol, temu};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::sync::Arc;
use subtle::ConstantTimeEq;

type St = Arc<State>;

pub(super) fn router(state: St) -> Router {
    Router::new()
        .route("/bol/token", post(bol_token))
        .route("/bol/retailer/orders", get(bol_orders))
        .route("/bol/retailer/orders/{id}", get(bol_order))
        .route("/aliexpress/sync", get(ae_sync).post(ae_sync))
        .route("/temu/openapi/router", post(temu_router))
        .with_state(state)
}

fn reply(status: StatusCode, body: Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn unavailable() -> Response {
    reply(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"status": 503, "title": "Service Unavailable"}),
    )
}

fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn param<'a>(p: &'a [(String, String)], k: &str) -> Option<&'a str> {
    p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

// ---------- bol.com ----------

async fn bol_token(AxState(st): AxState<St>, RawQuery(q): RawQuery, h: HeaderMap) -> Response {
    if st.enter(Marketplace::Bol).await {
        return unavailable();
    }
    let p = query_pairs(q.as_deref());
    let auth = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let expected = bol::basic_auth(BOL_CLIENT_ID, BOL_CLIENT_SECRET);
    if param(&p, "grant_type") != Some("client_credentials") {
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"error": "unsupported_grant_type"}),
        );
    }
    if !same(auth, &expected) {
        return reply(
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_client", "error_description": "Bad client credentials"}),
        );
    }
    let token = hex::encode(rand::random::<[u8; 16]>());
    st.bol_tokens.lock().insert(token.clone());
    reply(
        StatusCode::OK,
        json!({"access_token": token, "token_type": "Bearer", "expires_in": 299,
               "scope": "RETAILER"}),
    )
}

/// `None` when the request may proceed, else the answer.
fn bol_check(st: &State, h: &HeaderMap) -> Option<Response> {
    let auth = h.get("authorization").and_then(|v| v.to_str().ok());
    let ok = auth
        .and_then(|a| a.strip_prefix("Bearer "))
        .is_some_and(|t| st.bol_tokens.lock().contains(t));
    if !ok {
        return Some(reply(
            StatusCode::UNAUTHORIZED,
            json!({"type": "https://api.bol.com/problems", "title": "Unauthorized",
                   "status": 401, "detail": "Missing or invalid access token"}),
        ));
    }
    let accept = h.get("accept").and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept != bol::MEDIA_TYPE {
        return Some(reply(
            StatusCode::NOT_ACCEPTABLE,
            json!({"title": "Not Acceptable", "status": 406}),
        ));
    }
    None
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

async fn bol_orders(AxState(st): AxState<St>, RawQuery(q): RawQuery, h: HeaderMap) -> Response {
    if st.enter(Marketplace::Bol).await {
        return unavailable();
    }
    if let Some(r) = bol_check(&st, &h) {
        return r;
    }
    let p = query_pairs(q.as_deref());
    let page: usize = param(&p, "page")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let all = st.since(Marketplace::Bol, i64::MIN);
    let slice: Vec<Value> = all
        .iter()
        .skip((page - 1) * 50)
        .take(50)
        .map(|o| {
            json!({"orderId": o.id, "orderPlacedDateTime": iso(o.placed_ms),
                   "orderItems": [{"orderItemId": format!("{}01", o.seq), "ean": "8712345678906",
                                   "fulfilmentMethod": "FBR", "quantity": 1}]})
        })
        .collect();
    if slice.is_empty() {
        return reply(StatusCode::OK, json!({}));
    }
    reply(StatusCode::OK, json!({ "orders": slice }))
}

async fn bol_order(AxState(st): AxState<St>, Path(id): Path<String>, h: HeaderMap) -> Response {
    if st.enter(Marketplace::Bol).await {
        return unavailable();
    }
    if let Some(r) = bol_check(&st, &h) {
        return r;
    }
    let Some(o) = st
        .since(Marketplace::Bol, i64::MIN)
        .into_iter()
        .find(|o| o.id == id)
    else {
        return reply(
            StatusCode::NOT_FOUND,
            json!({"title": "Not Found", "status": 404}),
        );
    };
    reply(StatusCode::OK, bol_detail(&o))
}

fn bol_detail(o: &SimOrder) -> Value {
    json!({
        "orderId": o.id,
        "orderPlacedDateTime": iso(o.placed_ms),
        "shipmentDetails": {"salutation": "FEMALE", "firstName": "Sanne", "surname": format!("Bakker {}", o.seq),
            "streetName": "Kerkstraat", "houseNumber": (o.seq % 300 + 1).to_string(), "zipCode": "1017 GC",
            "city": "Amsterdam", "countryCode": "NL", "email": format!("sanne{}@example.nl", o.seq),
            "language": "nl"},
        "orderItems": [{"orderItemId": format!("{}01", o.seq), "quantity": 2, "unitPrice": 12.49,
            "product": {"ean": "8712345678906", "title": "Theeglas set"},
            "fulfilment": {"method": "FBR"}}]
    })
}

// ---------- AliExpress ----------

fn ae_error(code: &str, msg: &str) -> Response {
    reply(
        StatusCode::OK,
        json!({"error_response": {"type": "ISV", "code": code, "msg": msg,
               "request_id": hex::encode(rand::random::<[u8; 6]>())}}),
    )
}

async fn ae_sync(AxState(st): AxState<St>, RawQuery(q): RawQuery, body: Bytes) -> Response {
    if st.enter(Marketplace::Aliexpress).await {
        return unavailable();
    }
    let mut p = query_pairs(q.as_deref());
    p.extend(query_pairs(std::str::from_utf8(&body).ok()));
    if param(&p, "app_key") != Some(AE_APP_KEY) {
        return ae_error("InvalidAppKey", "Specified app key is invalid");
    }
    let sign = param(&p, "sign").unwrap_or("");
    if param(&p, "sign_method") != Some("sha256")
        || !same(sign, &aliexpress::sign(AE_APP_SECRET, None, &p))
    {
        return ae_error(
            "IncompleteSignature",
            "The request signature does not conform to platform standards",
        );
    }
    if !same(param(&p, "access_token").unwrap_or(""), AE_ACCESS_TOKEN) {
        return ae_error(
            "IllegalAccessToken",
            "The specified access token is invalid or expired",
        );
    }
    if param(&p, "method") != Some(aliexpress::ORDER_LIST) {
        return ae_error("InvalidApiPath", "The specified API is not found");
    }
    let query: Value = param(&p, "param0")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null);
    let since = chrono::NaiveDateTime::parse_from_str(
        query["create_date_start"]
            .as_str()
            .unwrap_or("1970-01-01 00:00:00"),
        "%Y-%m-%d %H:%M:%S",
    )
    .map(|d| d.and_utc().timestamp_millis())
    .unwrap_or(0);
    let size = query["page_size"].as_u64().unwrap_or(20).clamp(1, 50) as usize;
    let page = query["current_page"].as_u64().unwrap_or(1).max(1) as usize;
    let all = st.since(Marketplace::Aliexpress, since);
    let list: Vec<Value> = all
        .iter()
        .skip((page - 1) * size)
        .take(size)
        .map(ae_order)
        .collect();
    reply(
        StatusCode::OK,
        json!({"aliexpress_solution_order_get_response": {"result": {
            "success": true, "total_count": all.len(), "page_size": size, "current_page": page,
            "target_list": {"order_dto": list}}}}),
    )
}

fn ae_order(o: &SimOrder) -> Value {
    json!({
        "order_id": o.id,
        "gmt_create": aliexpress::date(o.placed_ms),
        "order_status": "WAIT_SELLER_SEND_GOODS",
        "buyer_email": format!("kunde{}@example.de", o.seq),
        "order_amount": {"amount": "31.90", "currency_code": "EUR"},
        "receipt_address": {"contact_person": format!("Jonas Weber {}", o.seq),
            "detail_address": format!("Hauptstrasse {}", o.seq % 200 + 1), "city": "Berlin",
            "zip": "10115", "country": "DE", "phone_country": "+49", "mobile_no": "15112345678"},
        "product_list": {"order_product_dto": [{"product_id": "1005006123456789",
            "product_name": "LED strip 5m", "product_count": 2,
            "product_unit_price": {"amount": "15.95", "currency_code": "EUR"},
            "logistics_service_name": "DHL"}]}
    })
}

// ---------- Temu ----------

fn temu_error(code: i64, msg: &str) -> Response {
    reply(
        StatusCode::OK,
        json!({"success": false, "errorCode": code, "errorMsg": msg, "result": null}),
    )
}

async fn temu_router(AxState(st): AxState<St>, body: Bytes) -> Response {
    if st.enter(Marketplace::Temu).await {
        return unavailable();
    }
    let Ok(Value::Object(mut b)) = serde_json::from_slice::<Value>(&body) else {
        return temu_error(7_000_001, "request body is not a JSON object");
    };
    let sign = b
        .remove("sign")
        .and_then(|s| s.as_str().map(str::to_string));
    if b.get("app_key").and_then(Value::as_str) != Some(TEMU_APP_KEY) {
        return temu_error(7_000_002, "app_key is invalid");
    }
    if !same(
        sign.as_deref().unwrap_or(""),
        &temu::sign(TEMU_APP_SECRET, &b),
    ) {
        return temu_error(7_000_015, "sign is invalid");
    }
    let token = b.get("access_token").and_then(Value::as_str).unwrap_or("");
    if !same(token, TEMU_ACCESS_TOKEN) {
        return temu_error(7_000_016, "access_token is invalid or expired");
    }
    if b.get("type").and_then(Value::as_str) != Some(temu::ORDER_LIST) {
        return temu_error(3_000_000, "type is not supported");
    }
    let since = b.get("createAfter").and_then(Value::as_i64).unwrap_or(0) * 1000;
    let size = b
        .get("pageSize")
        .and_then(Value::as_u64)
        .unwrap_or(20)
        .clamp(1, 100) as usize;
    let page = b
        .get("pageNumber")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .max(1) as usize;
    let all = st.since(Marketplace::Temu, since);
    let items: Vec<Value> = all
        .iter()
        .skip((page - 1) * size)
        .take(size)
        .map(temu_order)
        .collect();
    reply(
        StatusCode::OK,
        json!({"success": true, "errorCode": 1_000_000, "errorMsg": null,
               "result": {"totalItemNum": all.len(), "pageItems": items}}),
    )
}

fn temu_order(o: &SimOrder) -> Value {
    json!({
        "parentOrderMap": {"parentOrderSn": o.id, "parentOrderTime": o.placed_ms / 1000,
            "parentOrderStatus": 2, "currency": "EUR", "orderAmount": "19.98",
            "shippingCarrier": "COLISSIMO",
            "receiptAddress": {"receiptName": format!("Camille Martin {}", o.seq),
                "mail": format!("client{}@example.fr", o.seq), "mobile": "+33 6 12 34 56 78",
                "regionName1": "FR", "regionName3": "Lyon",
                "addressLine1": format!("{} rue de la République", o.seq % 150 + 1),
                "postCode": "69002"}},
        "orderList": [{"orderSn": format!("{}-1", o.id), "goodsName": "Phone case",
            "skuId": "SKU-77821", "quantity": 2, "unitRetailPrice": "9.99"}]
    })
}
