//! The simulated channel APIs: each checks the merchant's credentials or request signature as
//! the real PSP does, refuses bad ones with that PSP's error shape, records the order and
//! answers what the PSP answers (signed where the PSP signs). Faults injected through the
//! control API apply here first.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::FaultKind;
use super::keys::{self, keys};
use super::state::{OrderInfo, OrderStatus, SimState, now_secs};
use crate::alipay;
use crate::wechat;

type St = State<Arc<SimState>>;

/// Largest request body the simulated APIs accept.
const MAX_BODY: usize = 64 * 1024;

pub(crate) fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/alipay/gateway.do", post(alipay_gateway))
        .route("/wechat/v3/pay/transactions/native", post(wechat_native))
        .route("/stripe/v1/payment_intents", post(stripe_create))
        .route("/multisafepay/v1/json/orders", post(msp_create))
        .route(
            "/wechat/v3/refund/domestic/refunds",
            post(super::refunds::wechat_create),
        )
        .route(
            "/wechat/v3/refund/domestic/refunds/{no}",
            get(super::refunds::wechat_query),
        )
        .route(
            "/stripe/v1/refunds",
            post(super::refunds::stripe_create).get(super::refunds::stripe_list),
        )
        .route(
            "/multisafepay/v1/json/orders/{id}",
            get(super::refunds::msp_order),
        )
        .route(
            "/multisafepay/v1/json/orders/{id}/refunds",
            post(super::refunds::msp_create),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

pub(crate) fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (status, [("content-type", content_type)], body).into_response()
}

pub(crate) fn json_response(status: StatusCode, body: Value) -> Response {
    respond(status, "application/json", body.to_string())
}

/// Applies an injected fault: `Some(response)` to answer instead of the real handler.
pub(crate) async fn fault(state: &SimState, channel: &str) -> Option<Response> {
    match state.take_fault(channel)? {
        FaultKind::Unavailable => Some(match channel {
            "wechat" => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"code": "SYSTEM_ERROR", "message": "系统繁忙，请稍后重试"}),
            ),
            "stripe" => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": {"type": "api_error", "message": "Stripe is temporarily unavailable."}}),
            ),
            "multisafepay" => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"success": false, "data": {}, "error_code": 503, "error_info": "Service Unavailable"}),
            ),
            _ => respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/html",
                "<html><body>503 Service Temporarily Unavailable</body></html>".into(),
            ),
        }),
        FaultKind::Hang => {
            state.hang().await;
            Some(respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "released".into(),
            ))
        }
        FaultKind::Slow { delay_ms } => {
            tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
            None
        }
        FaultKind::Malformed => Some(respond(
            StatusCode::OK,
            "application/json",
            "{\"truncated\": [1, 2, ".into(),
        )),
    }
}

fn text(body: &Bytes) -> Option<&str> {
    std::str::from_utf8(body).ok()
}

// --- Alipay ----------------------------------------------------------------------------------

fn alipay_error(code: &str, msg: &str, sub_code: &str, sub_msg: &str) -> Response {
    // Gateway-level errors come back unsigned.
    json_response(
        StatusCode::OK,
        json!({"alipay_trade_precreate_response": {
            "code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg
        }}),
    )
}

#[derive(Deserialize)]
struct AlipayBiz {
    out_trade_no: String,
    total_amount: String,
    #[allow(dead_code)]
    subject: String,
}

async fn alipay_gateway(State(state): St, body: Bytes) -> Response {
    if let Some(r) = fault(&state, "alipay").await {
        return r;
    }
    let Some(params) = text(&body).and_then(|b| alipay::parse_form(b).ok()) else {
        return alipay_error(
            "40002",
            "Invalid Arguments",
            "isv.invalid-parameter",
            "参数无效",
        );
    };
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if get("app_id") != Some(keys::ALIPAY_APP_ID) {
        return alipay_error(
            "40002",
            "Invalid Arguments",
            "isv.invalid-app-id",
            "无效的AppID参数",
        );
    }
    let method = get("method").unwrap_or("");
    if (method == alipay::REFUND_METHOD || method == alipay::REFUND_QUERY_METHOD)
        && get("sign_type") == Some("RSA2")
        && alipay::verify_request(&params, &keys().alipay_merchant_public).is_ok()
    {
        return super::refunds::alipay(&state, method, get("biz_content"));
    }
    if method != alipay::PRECREATE_METHOD {
        return alipay_error(
            "40002",
            "Invalid Arguments",
            "isv.invalid-method",
            "不存在的方法名",
        );
    }
    if get("sign_type") != Some("RSA2") {
        return alipay_error(
            "40002",
            "Invalid Arguments",
            "isv.invalid-signature-type",
            "无效的签名类型",
        );
    }
    if alipay::verify_request(&params, &keys().alipay_merchant_public).is_err() {
        return alipay_error(
            "40002",
            "Invalid Arguments",
            "isv.invalid-signature",
            "验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配",
        );
    }
    let biz: Option<AlipayBiz> = get("biz_content").and_then(|b| serde_json::from_str(b).ok());
    let Some(biz) = biz else {
        return alipay_error(
            "40002",
            "Invalid Arguments",
            "isv.missing-biz-content",
            "缺少业务参数",
        );
    };
    let Some(fen) = crate::common::parse_decimal_2(&biz.total_amount).filter(|f| *f > 0) else {
        return alipay_error(
            "40004",
            "Business Failed",
            "ACQ.TOTAL_FEE_EXCEED",
            "订单金额无效",
        );
    };
    let seq = state.next_seq();
    let order = state.upsert_order(OrderInfo {
        channel: "alipay".into(),
        intent_id: biz.out_trade_no.clone(),
        amount: fen,
        currency: "CNY".into(),
        notify_url: get("notify_url").map(str::to_owned),
        psp_reference: format!("2026{:012}{seq:012}", now_secs()),
        qr_code: format!(
            "https://qr.alipay.com/bax0{seq:08}sim{:06}",
            now_secs() % 1_000_000
        ),
        status: OrderStatus::Pending,
        created_at: now_secs(),
    });
    let node = json!({
        "code": alipay::SUCCESS_CODE,
        "msg": "Success",
        "out_trade_no": order.intent_id,
        "qr_code": order.qr_code,
    })
    .to_string()
    // Alipay escapes `/` in its answers; the signature covers the escaped text.
    .replace('/', "\\/");
    let Ok(sign) = alipay::sign_response_node(&node, &keys().alipay_platform) else {
        return alipay_error(
            "20000",
            "Service Currently Unavailable",
            "isp.unknow-error",
            "系统繁忙",
        );
    };
    respond(
        StatusCode::OK,
        "application/json;charset=utf-8",
        format!("{{\"alipay_trade_precreate_response\":{node},\"sign\":\"{sign}\"}}"),
    )
}

// --- WeChat Pay ------------------------------------------------------------------------------

fn wechat_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(status, json!({"code": code, "message": message}))
}

#[derive(Deserialize)]
struct WechatOrder {
    appid: String,
    mchid: String,
    #[allow(dead_code)]
    description: String,
    out_trade_no: String,
    notify_url: String,
    amount: WechatAmount,
}

#[derive(Deserialize)]
struct WechatAmount {
    total: i64,
    #[serde(default)]
    currency: Option<String>,
}

async fn wechat_native(State(state): St, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = fault(&state, "wechat").await {
        return r;
    }
    let sign_error = || wechat_error(StatusCode::UNAUTHORIZED, "SIGN_ERROR", "签名错误");
    let Some(auth) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(wechat::parse_authorization)
    else {
        return sign_error();
    };
    let Some(body_text) = text(&body) else {
        return wechat_error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "请求体不是UTF-8");
    };
    let item = |k: &str| auth.get(k).copied().unwrap_or("");
    let fresh = item("timestamp")
        .parse::<i64>()
        .is_ok_and(|t| now_secs().abs_diff(t) <= 300);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    if item("mchid") != keys::WECHAT_MCHID
        || item("serial_no") != keys::WECHAT_MERCHANT_SERIAL
        || !fresh
        || wechat::verify_request_signature(
            &keys().wechat_merchant_public,
            "POST",
            path,
            item("timestamp"),
            item("nonce_str"),
            body_text,
            item("signature"),
        )
        .is_err()
    {
        return sign_error();
    }
    let Ok(order) = serde_json::from_str::<WechatOrder>(body_text) else {
        return wechat_error(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "输入源“/body”映射到字段失败",
        );
    };
    if order.mchid != keys::WECHAT_MCHID || order.appid != keys::WECHAT_APPID {
        return wechat_error(
            StatusCode::BAD_REQUEST,
            "APPID_MCHID_NOT_MATCH",
            "appid和mch_id不匹配",
        );
    }
    if order.amount.total <= 0 || order.amount.currency.as_deref().is_some_and(|c| c != "CNY") {
        return wechat_error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "订单金额无效");
    }
    let seq = state.next_seq();
    let order = state.upsert_order(OrderInfo {
        channel: "wechat".into(),
        intent_id: order.out_trade_no,
        amount: order.amount.total,
        currency: "CNY".into(),
        notify_url: Some(order.notify_url),
        psp_reference: format!("4200{:010}{seq:014}", now_secs()),
        qr_code: format!("weixin://wxpay/bizpayurl?pr=Sim{seq:07}"),
        status: OrderStatus::Pending,
        created_at: now_secs(),
    });
    let answer = json!({"code_url": order.qr_code}).to_string();
    let at = now_secs();
    let nonce = wechat::generate_nonce();
    let Ok(signature) = keys()
        .wechat_platform
        .sign_notification(at, &nonce, answer.as_bytes())
    else {
        return wechat_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SYSTEM_ERROR",
            "系统错误",
        );
    };
    (
        StatusCode::OK,
        [
            ("content-type", "application/json".to_owned()),
            ("request-id", format!("08{seq:020}")),
            ("wechatpay-timestamp", at.to_string()),
            ("wechatpay-nonce", nonce),
            ("wechatpay-signature", signature),
            ("wechatpay-serial", keys::WECHAT_PLATFORM_SERIAL.to_owned()),
        ],
        answer,
    )
        .into_response()
}

// --- Stripe ----------------------------------------------------------------------------------

fn stripe_error(status: StatusCode, kind: &str, code: Option<&str>, message: &str) -> Response {
    let mut error = json!({"type": kind, "message": message});
    if let Some(code) = code {
        error["code"] = json!(code);
    }
    json_response(status, json!({ "error": error }))
}

fn stripe_key_ok(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|k| k == keys::STRIPE_SECRET_KEY)
}

async fn stripe_create(State(state): St, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = fault(&state, "stripe").await {
        return r;
    }
    if !stripe_key_ok(&headers) {
        return stripe_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            None,
            "Invalid API Key provided: sk_test_****",
        );
    }
    let Some(params) = text(&body).and_then(|b| alipay::parse_form(b).ok()) else {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            "Invalid form body.",
        );
    };
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let Some(amount) = get("amount")
        .and_then(|a| a.parse::<i64>().ok())
        .filter(|a| *a > 0)
    else {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("parameter_invalid_integer"),
            "Invalid integer: amount",
        );
    };
    let Some(currency) = get("currency").filter(|c| c.len() == 3) else {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("parameter_missing"),
            "Missing required param: currency.",
        );
    };
    let Some(intent) = get("metadata[ipay_intent_id]") else {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("parameter_missing"),
            "The simulator needs metadata[ipay_intent_id] to route events.",
        );
    };
    let seq = state.next_seq();
    let pi_id = format!("pi_3Sim{seq:019}");
    let order = state.upsert_order(OrderInfo {
        channel: "stripe".into(),
        intent_id: intent.to_owned(),
        amount,
        currency: currency.to_ascii_uppercase(),
        notify_url: None,
        psp_reference: pi_id.clone(),
        qr_code: format!("{pi_id}_secret_Sim{seq:020}"),
        status: OrderStatus::Pending,
        created_at: now_secs(),
    });
    json_response(
        StatusCode::OK,
        json!({
            "id": order.psp_reference,
            "object": "payment_intent",
            "amount": order.amount,
            "amount_received": 0,
            "currency": order.currency.to_ascii_lowercase(),
            "status": "requires_payment_method",
            "client_secret": order.qr_code,
            "created": order.created_at,
            "livemode": false,
            "metadata": {"ipay_intent_id": order.intent_id},
            "next_action": null,
            "automatic_payment_methods": {"enabled": true},
        }),
    )
}

// --- MultiSafepay ----------------------------------------------------------------------------

#[derive(Deserialize)]
struct MspQuery {
    api_key: Option<String>,
}

#[derive(Deserialize)]
struct MspOrder {
    order_id: String,
    currency: String,
    amount: i64,
    #[serde(default)]
    payment_options: Option<MspOptions>,
}

#[derive(Deserialize)]
struct MspOptions {
    notification_url: Option<String>,
}

fn msp_error(status: StatusCode, code: i64, info: &str) -> Response {
    json_response(
        status,
        json!({"success": false, "data": {}, "error_code": code, "error_info": info}),
    )
}

async fn msp_create(
    State(state): St,
    Query(q): Query<MspQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = fault(&state, "multisafepay").await {
        return r;
    }
    let key = q.api_key.or_else(|| {
        headers
            .get("api_key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    if key.as_deref() != Some(keys::MULTISAFEPAY_API_KEY) {
        return msp_error(StatusCode::UNAUTHORIZED, 1032, "Invalid API key");
    }
    let Ok(order) = serde_json::from_slice::<MspOrder>(&body) else {
        return msp_error(StatusCode::BAD_REQUEST, 1000, "Invalid request body");
    };
    if order.amount <= 0 || order.currency.len() != 3 {
        return msp_error(StatusCode::BAD_REQUEST, 1001, "Invalid amount");
    }
    let seq = state.next_seq();
    let order = state.upsert_order(OrderInfo {
        channel: "multisafepay".into(),
        intent_id: order.order_id,
        amount: order.amount,
        currency: order.currency.to_ascii_uppercase(),
        notify_url: order.payment_options.and_then(|o| o.notification_url),
        psp_reference: format!("{}{seq:06}", now_secs()),
        qr_code: format!("https://payv2.multisafepay.com/connect/sim{seq:010}"),
        status: OrderStatus::Pending,
        created_at: now_secs(),
    });
    json_response(
        StatusCode::OK,
        json!({"success": true, "data": {"order_id": order.intent_id, "payment_url": order.qr_code}}),
    )
}
