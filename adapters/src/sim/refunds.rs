//! The simulated refund APIs and refund notifications: Alipay `alipay.trade.refund` and
//! `alipay.trade.fastpay.refund.query` (through the gateway), WeChat Pay
//! `POST/GET /v3/refund/domestic/refunds` with its encrypted `REFUND.*` notification, Stripe
//! `POST/GET /v1/refunds` with `refund.updated` and `charge.refunded` events, and MultiSafepay
//! `POST /v1/json/orders/{id}/refunds` (and the order read that lists its refunds) with
//! `refunded` / `partial_refunded` notifications.
//!
//! How a channel answers a refund is set per channel ([`SimRefundMode`]): at once, pending
//! until [`super::SimHandle::complete_refund`] (the "late callback"), or refused. Refunds made
//! in the PSP's dashboard are [`super::SimHandle::dashboard_refund`]. Injected faults (503,
//! hang, slow, malformed) apply to these endpoints as to the others. Each PSP de-duplicates on
//! the merchant's refund id, as the real ones do.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::keys::{self, keys};
use super::psp::{fault, json_response, respond};
use super::state::{
    DeliveredCallback, OrderInfo, OrderStatus, PreparedCallback, SimState, now_secs,
};
use super::{SimError, callbacks};
use crate::{alipay, wechat};

type St = State<Arc<SimState>>;

/// Largest number of refunds kept.
const MAX_REFUNDS: usize = 100_000;

/// How a channel answers refund requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimRefundMode {
    /// The money moves at once; the answer says so.
    Succeed,
    /// Accepted; the answer says pending until the test completes it (then the PSP notifies,
    /// where the channel has refund notifications, or answers its status query).
    Pending,
    /// Refused with the channel's business error (e.g. the merchant balance is too low).
    Refuse,
}

/// Where a simulated refund stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimRefundStatus {
    Pending,
    Succeeded,
    Failed,
}

/// A refund as the simulated PSP keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimRefund {
    /// Channel name.
    pub channel: String,
    /// The refunded order (our intent id).
    pub intent_id: String,
    /// The merchant's refund id (`out_request_no`, `out_refund_no`, metadata, description);
    /// empty for dashboard refunds.
    pub merchant_refund_id: String,
    /// The PSP's own refund id.
    pub psp_refund_id: String,
    /// Minor units.
    pub amount: i64,
    /// Currency code.
    pub currency: String,
    pub status: SimRefundStatus,
    /// Where WeChat Pay notifies this refund.
    pub notify_url: Option<String>,
}

/// The refunds of one simulator and each channel's refund mode.
#[derive(Default)]
pub(crate) struct RefundBook {
    refunds: Mutex<Vec<SimRefund>>,
    modes: Mutex<HashMap<String, SimRefundMode>>,
}

impl RefundBook {
    pub(crate) fn set_mode(&self, channel: &str, mode: SimRefundMode) {
        self.modes.lock().insert(channel.to_owned(), mode);
    }

    fn mode(&self, channel: &str) -> SimRefundMode {
        self.modes
            .lock()
            .get(channel)
            .copied()
            .unwrap_or(match channel {
                // WeChat Pay answers PROCESSING and notifies later; Stripe card refunds start
                // pending; Alipay and MultiSafepay book refunds at once.
                "wechat" | "stripe" => SimRefundMode::Pending,
                _ => SimRefundMode::Succeed,
            })
    }

    pub(crate) fn all(&self) -> Vec<SimRefund> {
        self.refunds.lock().clone()
    }

    fn find(&self, channel: &str, merchant_refund_id: &str) -> Option<SimRefund> {
        self.refunds
            .lock()
            .iter()
            .find(|r| r.channel == channel && r.merchant_refund_id == merchant_refund_id)
            .cloned()
    }

    /// Minor units refunded or being refunded on an order.
    fn committed(&self, channel: &str, intent: &str) -> i64 {
        self.refunds
            .lock()
            .iter()
            .filter(|r| r.channel == channel && r.intent_id == intent)
            .filter(|r| r.status != SimRefundStatus::Failed)
            .map(|r| r.amount)
            .sum()
    }

    /// Minor units refunded (succeeded) on an order.
    fn refunded(&self, channel: &str, intent: &str) -> i64 {
        self.refunds
            .lock()
            .iter()
            .filter(|r| r.channel == channel && r.intent_id == intent)
            .filter(|r| r.status == SimRefundStatus::Succeeded)
            .map(|r| r.amount)
            .sum()
    }

    fn push(&self, r: SimRefund) {
        let mut all = self.refunds.lock();
        if all.len() >= MAX_REFUNDS {
            all.remove(0);
        }
        all.push(r);
    }

    fn set_status(&self, channel: &str, psp_refund_id: &str, status: SimRefundStatus) {
        if let Some(r) = self
            .refunds
            .lock()
            .iter_mut()
            .find(|r| r.channel == channel && r.psp_refund_id == psp_refund_id)
        {
            r.status = status;
        }
    }
}

/// Why a refund request cannot be booked, in the simulator's words (mapped to each PSP's
/// error shape by the caller).
enum Refusal {
    UnknownOrder,
    NotPaid,
    Exceeds,
    Refused,
}

/// Books a new refund of `amount` on `order`, or returns the one booked before under the same
/// merchant refund id (the PSPs' de-duplication).
fn book(
    state: &SimState,
    order: Option<OrderInfo>,
    merchant_refund_id: &str,
    amount: i64,
    notify_url: Option<String>,
) -> Result<(SimRefund, bool), Refusal> {
    let order = order.ok_or(Refusal::UnknownOrder)?;
    if let Some(existing) = state.refunds.find(&order.channel, merchant_refund_id) {
        return Ok((existing, false));
    }
    if order.status != OrderStatus::Paid {
        return Err(Refusal::NotPaid);
    }
    let mode = state.refunds.mode(&order.channel);
    if mode == SimRefundMode::Refuse {
        return Err(Refusal::Refused);
    }
    if amount <= 0
        || state.refunds.committed(&order.channel, &order.intent_id) + amount > order.amount
    {
        return Err(Refusal::Exceeds);
    }
    let seq = state.next_seq();
    let psp_refund_id = match order.channel.as_str() {
        "stripe" => format!("re_3Sim{seq:019}"),
        "wechat" => format!("50300{seq:023}"),
        "alipay" => format!("2026{:012}{seq:012}", now_secs()),
        _ => format!("{}{seq:06}", now_secs()),
    };
    let refund = SimRefund {
        channel: order.channel.clone(),
        intent_id: order.intent_id.clone(),
        merchant_refund_id: merchant_refund_id.to_owned(),
        psp_refund_id,
        amount,
        currency: order.currency.clone(),
        status: if mode == SimRefundMode::Succeed {
            SimRefundStatus::Succeeded
        } else {
            SimRefundStatus::Pending
        },
        notify_url,
    };
    state.refunds.push(refund.clone());
    Ok((refund, true))
}

// --- Alipay ----------------------------------------------------------------------------------

/// A signed gateway answer for `method`.
fn alipay_answer(method: &str, node: Value) -> Response {
    let node_name = format!("{}_response", method.replace('.', "_"));
    let node = node.to_string().replace('/', "\\/");
    match alipay::sign_response_node(&node, &keys().alipay_platform) {
        Ok(sign) => respond(
            StatusCode::OK,
            "application/json;charset=utf-8",
            format!("{{\"{node_name}\":{node},\"sign\":\"{sign}\"}}"),
        ),
        Err(_) => json_response(
            StatusCode::OK,
            json!({ node_name: {"code": "20000", "msg": "Service Currently Unavailable", "sub_code": "isp.unknow-error"} }),
        ),
    }
}

fn alipay_business(method: &str, sub_code: &str, sub_msg: &str) -> Response {
    alipay_answer(
        method,
        json!({"code": "40004", "msg": "Business Failed", "sub_code": sub_code, "sub_msg": sub_msg}),
    )
}

#[derive(Deserialize)]
struct AlipayRefundBiz {
    out_trade_no: String,
    #[serde(default)]
    refund_amount: Option<String>,
    out_request_no: String,
}

/// `alipay.trade.refund` and `alipay.trade.fastpay.refund.query`, called by the gateway once
/// the request's app id and signature checked out.
pub(crate) fn alipay(state: &SimState, method: &str, biz: Option<&str>) -> Response {
    let Some(biz) = biz.and_then(|b| serde_json::from_str::<AlipayRefundBiz>(b).ok()) else {
        return alipay_business(method, "isv.missing-biz-content", "缺少业务参数");
    };
    let order = state.order(&biz.out_trade_no);
    if method == alipay::REFUND_QUERY_METHOD {
        return match state.refunds.find("alipay", &biz.out_request_no) {
            None => alipay_answer(method, json!({"code": "10000", "msg": "Success"})),
            Some(r) => {
                let mut node = json!({
                    "code": "10000", "msg": "Success",
                    "out_trade_no": r.intent_id, "out_request_no": r.merchant_refund_id,
                    "trade_no": order.map(|o| o.psp_reference).unwrap_or_default(),
                    "refund_amount": yuan(r.amount),
                });
                if r.status == SimRefundStatus::Succeeded {
                    node["refund_status"] = json!("REFUND_SUCCESS");
                }
                alipay_answer(method, node)
            }
        };
    }
    let amount = biz
        .refund_amount
        .as_deref()
        .and_then(crate::common::parse_decimal_2)
        .unwrap_or(0);
    let trade_no = order.as_ref().map(|o| o.psp_reference.clone());
    match book(state, order, &biz.out_request_no, amount, None) {
        Ok((r, fresh)) => alipay_answer(
            method,
            json!({
                "code": "10000", "msg": "Success",
                "trade_no": trade_no, "out_trade_no": r.intent_id,
                "buyer_user_id": "2088000000000002",
                "fund_change": if fresh && r.status == SimRefundStatus::Succeeded { "Y" } else { "N" },
                "refund_fee": yuan(state.refunds.refunded("alipay", &r.intent_id)),
            }),
        ),
        Err(Refusal::UnknownOrder) => alipay_business(method, "ACQ.TRADE_NOT_EXIST", "交易不存在"),
        Err(Refusal::NotPaid) => {
            alipay_business(method, "ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
        }
        Err(Refusal::Exceeds) => {
            alipay_business(method, "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限")
        }
        Err(Refusal::Refused) => {
            alipay_business(method, "ACQ.SELLER_BALANCE_NOT_ENOUGH", "卖家余额不足")
        }
    }
}

fn yuan(fen: i64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

// --- WeChat Pay ------------------------------------------------------------------------------

fn wechat_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(status, json!({"code": code, "message": message}))
}

/// Checks a merchant request's `Authorization` signature over method, path and body.
fn wechat_signed(headers: &HeaderMap, method: &str, uri: &Uri, body: &str) -> bool {
    let Some(auth) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(wechat::parse_authorization)
    else {
        return false;
    };
    let item = |k: &str| auth.get(k).copied().unwrap_or("");
    let fresh = item("timestamp")
        .parse::<i64>()
        .is_ok_and(|t| now_secs().abs_diff(t) <= 300);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    item("mchid") == keys::WECHAT_MCHID
        && item("serial_no") == keys::WECHAT_MERCHANT_SERIAL
        && fresh
        && wechat::verify_request_signature(
            &keys().wechat_merchant_public,
            method,
            path,
            item("timestamp"),
            item("nonce_str"),
            body,
            item("signature"),
        )
        .is_ok()
}

/// An answer signed with the platform key, as WeChat Pay signs every answer.
fn wechat_signed_answer(body: Value) -> Response {
    let answer = body.to_string();
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
            ("wechatpay-timestamp", at.to_string()),
            ("wechatpay-nonce", nonce),
            ("wechatpay-signature", signature),
            ("wechatpay-serial", keys::WECHAT_PLATFORM_SERIAL.to_owned()),
        ],
        answer,
    )
        .into_response()
}

fn wechat_refund_json(state: &SimState, r: &SimRefund) -> Value {
    let order = state.order(&r.intent_id);
    let total = order.as_ref().map_or(r.amount, |o| o.amount);
    json!({
        "refund_id": r.psp_refund_id,
        "out_refund_no": r.merchant_refund_id,
        "transaction_id": order.map(|o| o.psp_reference).unwrap_or_default(),
        "out_trade_no": r.intent_id,
        "channel": "ORIGINAL",
        "user_received_account": "支付用户零钱",
        "create_time": wechat::rfc3339_beijing(ipay_engine::clock::Timestamp(now_secs() * 1000)),
        "status": match r.status {
            SimRefundStatus::Succeeded => "SUCCESS",
            SimRefundStatus::Pending => "PROCESSING",
            SimRefundStatus::Failed => "ABNORMAL",
        },
        "amount": {"total": total, "refund": r.amount, "payer_total": total, "payer_refund": r.amount, "currency": "CNY"},
    })
}

#[derive(Deserialize)]
struct WechatRefundBody {
    out_trade_no: String,
    out_refund_no: String,
    #[serde(default)]
    notify_url: Option<String>,
    amount: WechatRefundAmount,
}

#[derive(Deserialize)]
struct WechatRefundAmount {
    refund: i64,
    total: i64,
}

/// `POST /wechat/v3/refund/domestic/refunds`.
pub(crate) async fn wechat_create(
    State(state): St,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = fault(&state, "wechat").await {
        return r;
    }
    let text = std::str::from_utf8(&body).unwrap_or("");
    if !wechat_signed(&headers, "POST", &uri, text) {
        return wechat_error(StatusCode::UNAUTHORIZED, "SIGN_ERROR", "签名错误");
    }
    let Ok(req) = serde_json::from_str::<WechatRefundBody>(text) else {
        return wechat_error(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "输入源“/body”映射到字段失败",
        );
    };
    let order = state.order(&req.out_trade_no);
    if order.as_ref().is_some_and(|o| o.amount != req.amount.total) {
        return wechat_error(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "订单金额或退款金额与之前请求不一致",
        );
    }
    match book(
        &state,
        order,
        &req.out_refund_no,
        req.amount.refund,
        req.notify_url,
    ) {
        Ok((r, _)) => wechat_signed_answer(wechat_refund_json(&state, &r)),
        Err(Refusal::UnknownOrder) => {
            wechat_error(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "订单不存在")
        }
        Err(Refusal::NotPaid) => {
            wechat_error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "订单未支付")
        }
        Err(Refusal::Exceeds) => wechat_error(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "申请退款金额超过订单可退金额",
        ),
        Err(Refusal::Refused) => wechat_error(
            StatusCode::FORBIDDEN,
            "NOT_ENOUGH",
            "基本账户余额不足，请充值后重新发起",
        ),
    }
}

/// `GET /wechat/v3/refund/domestic/refunds/{out_refund_no}`.
pub(crate) async fn wechat_query(
    State(state): St,
    Path(no): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = fault(&state, "wechat").await {
        return r;
    }
    if !wechat_signed(&headers, "GET", &uri, "") {
        return wechat_error(StatusCode::UNAUTHORIZED, "SIGN_ERROR", "签名错误");
    }
    match state.refunds.find("wechat", &no) {
        Some(r) => wechat_signed_answer(wechat_refund_json(&state, &r)),
        None => wechat_error(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "退款单不存在"),
    }
}

fn wechat_notification(
    state: &SimState,
    r: &SimRefund,
    url: &str,
) -> Result<PreparedCallback, SimError> {
    let at = now_secs();
    let seq = state.next_seq();
    let mut resource = wechat_refund_json(state, r);
    let success = r.status == SimRefundStatus::Succeeded;
    resource["mchid"] = json!(keys::WECHAT_MCHID);
    if let Some(obj) = resource.as_object_mut() {
        // Notifications name it `refund_status`; API answers `status`.
        let status = obj.remove("status").unwrap_or_default();
        obj.insert("refund_status".into(), status);
    }
    if success {
        resource["success_time"] = json!(wechat::rfc3339_beijing(ipay_engine::clock::Timestamp(
            at * 1000
        )));
    }
    let k = keys();
    let encrypted = k
        .wechat_apiv3
        .encrypt_resource(
            &resource.to_string(),
            &wechat::generate_resource_nonce(),
            "refund",
            "refund",
        )
        .map_err(|e| SimError::Build(e.to_string()))?;
    let id = format!("EV-{at}{seq:08}");
    let body = json!({
        "id": id,
        "create_time": wechat::rfc3339_beijing(ipay_engine::clock::Timestamp(at * 1000)),
        "resource_type": "encrypt-resource",
        "event_type": if success { "REFUND.SUCCESS" } else { "REFUND.ABNORMAL" },
        "summary": if success { "退款成功" } else { "退款异常" },
        "resource": encrypted,
    })
    .to_string();
    let nonce = wechat::generate_nonce();
    let signature = k
        .wechat_platform
        .sign_notification(at, &nonce, body.as_bytes())
        .map_err(|e| SimError::Build(e.to_string()))?;
    Ok(prepared(
        r,
        id,
        url,
        vec![
            ("content-type", "application/json".into()),
            ("wechatpay-timestamp", at.to_string()),
            ("wechatpay-nonce", nonce),
            ("wechatpay-signature", signature),
            ("wechatpay-serial", keys::WECHAT_PLATFORM_SERIAL.into()),
        ],
        body,
    ))
}

fn prepared(
    r: &SimRefund,
    id: String,
    url: &str,
    headers: Vec<(&str, String)>,
    body: String,
) -> PreparedCallback {
    PreparedCallback {
        channel: r.channel.clone(),
        intent_id: r.intent_id.clone(),
        notification_id: id,
        url: url.to_owned(),
        headers: headers
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        body,
    }
}

// --- Stripe ----------------------------------------------------------------------------------

fn stripe_refund_json(r: &SimRefund) -> Value {
    let order_psp = r.intent_id.clone();
    json!({
        "id": r.psp_refund_id,
        "object": "refund",
        "amount": r.amount,
        "currency": r.currency.to_ascii_lowercase(),
        "status": match r.status {
            SimRefundStatus::Succeeded => "succeeded",
            SimRefundStatus::Pending => "pending",
            SimRefundStatus::Failed => "failed",
        },
        "failure_reason": if r.status == SimRefundStatus::Failed { json!("declined") } else { Value::Null },
        "metadata": if r.merchant_refund_id.is_empty() {
            json!({})
        } else {
            json!({"ipay_intent_id": order_psp, "ipay_refund_id": r.merchant_refund_id})
        },
        "created": now_secs(),
    })
}

fn stripe_key_ok(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|k| k == keys::STRIPE_SECRET_KEY)
}

fn stripe_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(
        status,
        json!({"error": {"type": "invalid_request_error", "code": code, "message": message}}),
    )
}

/// The order a Stripe PaymentIntent id belongs to.
fn stripe_order(state: &SimState, pi: &str) -> Option<OrderInfo> {
    state
        .orders()
        .into_iter()
        .find(|o| o.channel == "stripe" && o.psp_reference == pi)
}

/// `POST /stripe/v1/refunds`.
pub(crate) async fn stripe_create(State(state): St, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = fault(&state, "stripe").await {
        return r;
    }
    if !stripe_key_ok(&headers) {
        return stripe_error(
            StatusCode::UNAUTHORIZED,
            "api_key_invalid",
            "Invalid API Key provided: sk_test_****",
        );
    }
    let params = std::str::from_utf8(&body)
        .ok()
        .and_then(|b| alipay::parse_form(b).ok())
        .unwrap_or_default();
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let Some(pi) = get("payment_intent") else {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "parameter_missing",
            "Missing required param: payment_intent.",
        );
    };
    // Stripe de-duplicates on the Idempotency-Key; the simulator keys refunds by it.
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .or(get("metadata[ipay_refund_id]"))
        .unwrap_or("")
        .to_owned();
    let order = stripe_order(&state, pi);
    let amount = get("amount")
        .and_then(|a| a.parse::<i64>().ok())
        .or(order
            .as_ref()
            .map(|o| o.amount - state.refunds.committed("stripe", &o.intent_id)))
        .unwrap_or(0);
    stripe_answer(book(&state, order, &key, amount, None))
}

/// Stripe's answer to a refund booking.
fn stripe_answer(booked: Result<(SimRefund, bool), Refusal>) -> Response {
    match booked {
        Ok((r, _)) => json_response(StatusCode::OK, stripe_refund_json(&r)),
        Err(Refusal::UnknownOrder) => stripe_error(
            StatusCode::NOT_FOUND,
            "resource_missing",
            "No such payment_intent",
        ),
        Err(Refusal::NotPaid) => stripe_error(
            StatusCode::BAD_REQUEST,
            "charge_not_refundable",
            "This PaymentIntent does not have a successful charge to refund.",
        ),
        Err(Refusal::Exceeds) => stripe_error(
            StatusCode::BAD_REQUEST,
            "amount_too_large",
            "Refund amount is greater than unrefunded amount on charge.",
        ),
        Err(Refusal::Refused) => stripe_error(
            StatusCode::BAD_REQUEST,
            "insufficient_funds",
            "Insufficient funds in Stripe account to refund.",
        ),
    }
}

#[derive(Deserialize)]
pub(crate) struct StripeListQuery {
    payment_intent: Option<String>,
}

/// `GET /stripe/v1/refunds?payment_intent=…`.
pub(crate) async fn stripe_list(
    State(state): St,
    headers: HeaderMap,
    Query(q): Query<StripeListQuery>,
) -> Response {
    if let Some(r) = fault(&state, "stripe").await {
        return r;
    }
    if !stripe_key_ok(&headers) {
        return stripe_error(
            StatusCode::UNAUTHORIZED,
            "api_key_invalid",
            "Invalid API Key provided: sk_test_****",
        );
    }
    let intent = q
        .payment_intent
        .and_then(|pi| stripe_order(&state, &pi))
        .map(|o| o.intent_id);
    let data: Vec<Value> = state
        .refunds
        .all()
        .iter()
        .filter(|r| r.channel == "stripe" && Some(&r.intent_id) == intent.as_ref())
        .map(stripe_refund_json)
        .collect();
    json_response(
        StatusCode::OK,
        json!({"object": "list", "data": data, "has_more": false, "url": "/v1/refunds"}),
    )
}

fn stripe_event(
    state: &SimState,
    r: &SimRefund,
    kind: &str,
    object: Value,
) -> Result<PreparedCallback, SimError> {
    let url = state.webhook_url("stripe").ok_or_else(|| {
        SimError::NoCallbackUrl(
            r.intent_id.clone(),
            "Stripe sends events to the account's webhook endpoint",
        )
    })?;
    let at = now_secs();
    let id = format!("evt_sim{at}{:08}", state.next_seq());
    let body = json!({
        "id": id, "object": "event", "api_version": "2024-06-20", "created": at,
        "livemode": false, "pending_webhooks": 1, "type": kind, "data": {"object": object},
    })
    .to_string();
    let signature = crate::stripe::sign(body.as_bytes(), keys::STRIPE_WEBHOOK_SECRET, at);
    Ok(prepared(
        r,
        id,
        &url,
        vec![
            ("content-type", "application/json; charset=utf-8".into()),
            ("stripe-signature", signature),
        ],
        body,
    ))
}

/// `charge.refunded`: the charge with its running `amount_refunded`.
fn stripe_charge_refunded(state: &SimState, r: &SimRefund) -> Result<PreparedCallback, SimError> {
    let order = state
        .order(&r.intent_id)
        .ok_or_else(|| SimError::UnknownOrder(r.intent_id.clone()))?;
    let refunded = state.refunds.refunded("stripe", &r.intent_id);
    let charge = json!({
        "id": format!("ch_3Sim{}", order.psp_reference.trim_start_matches("pi_3Sim")),
        "object": "charge",
        "amount": order.amount,
        "amount_refunded": refunded,
        "currency": order.currency.to_ascii_lowercase(),
        "payment_intent": order.psp_reference,
        "refunded": refunded >= order.amount,
        "metadata": {"ipay_intent_id": order.intent_id},
        "billing_details": {"email": "payer@example.com", "name": "Sim Payer"},
    });
    stripe_event(state, r, "charge.refunded", charge)
}

// --- MultiSafepay ----------------------------------------------------------------------------

#[derive(Deserialize)]
pub(crate) struct MspQuery {
    api_key: Option<String>,
}

#[derive(Deserialize)]
struct MspRefundBody {
    amount: i64,
    #[serde(default)]
    description: String,
}

fn msp_error(status: StatusCode, code: i64, info: &str) -> Response {
    json_response(
        status,
        json!({"success": false, "data": {}, "error_code": code, "error_info": info}),
    )
}

/// `POST /multisafepay/v1/json/orders/{id}/refunds`.
pub(crate) async fn msp_create(
    State(state): St,
    Path(order_id): Path<String>,
    Query(q): Query<MspQuery>,
    body: Bytes,
) -> Response {
    if let Some(r) = fault(&state, "multisafepay").await {
        return r;
    }
    if q.api_key.as_deref() != Some(keys::MULTISAFEPAY_API_KEY) {
        return msp_error(StatusCode::UNAUTHORIZED, 1032, "Invalid API key");
    }
    let Ok(req) = serde_json::from_slice::<MspRefundBody>(&body) else {
        return msp_error(StatusCode::BAD_REQUEST, 1000, "Invalid request body");
    };
    // MultiSafepay has no refund key of its own; the description carries the merchant's id.
    let key = req.description.clone();
    match book(&state, state.order(&order_id), &key, req.amount, None) {
        Ok((r, _)) => json_response(
            StatusCode::OK,
            json!({"success": true, "data": {"transaction_id": r.intent_id, "refund_id": r.psp_refund_id}}),
        ),
        Err(Refusal::UnknownOrder) => {
            msp_error(StatusCode::NOT_FOUND, 1006, "Invalid transaction ID")
        }
        Err(Refusal::NotPaid) => msp_error(
            StatusCode::BAD_REQUEST,
            1021,
            "Refund not possible: order is not completed",
        ),
        Err(Refusal::Exceeds) => msp_error(
            StatusCode::BAD_REQUEST,
            1023,
            "Refund amount exceeds the refundable amount",
        ),
        Err(Refusal::Refused) => msp_error(
            StatusCode::BAD_REQUEST,
            1024,
            "Not enough balance to refund",
        ),
    }
}

/// `GET /multisafepay/v1/json/orders/{id}`: the order with its refunds as related
/// transactions.
pub(crate) async fn msp_order(
    State(state): St,
    Path(order_id): Path<String>,
    Query(q): Query<MspQuery>,
) -> Response {
    if let Some(r) = fault(&state, "multisafepay").await {
        return r;
    }
    if q.api_key.as_deref() != Some(keys::MULTISAFEPAY_API_KEY) {
        return msp_error(StatusCode::UNAUTHORIZED, 1032, "Invalid API key");
    }
    let Some(order) = state.order(&order_id) else {
        return msp_error(StatusCode::NOT_FOUND, 1006, "Invalid transaction ID");
    };
    let related: Vec<Value> = state
        .refunds
        .all()
        .iter()
        .filter(|r| r.channel == "multisafepay" && r.intent_id == order_id)
        .map(|r| {
            json!({
                "transaction_id": r.psp_refund_id, "type": "REFUND", "amount": r.amount,
                "currency": r.currency, "description": r.merchant_refund_id,
                "status": match r.status {
                    SimRefundStatus::Succeeded => "completed",
                    SimRefundStatus::Pending => "initialized",
                    SimRefundStatus::Failed => "declined",
                },
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        json!({"success": true, "data": {
            "order_id": order.intent_id, "amount": order.amount, "currency": order.currency,
            "amount_refunded": state.refunds.refunded("multisafepay", &order_id),
            "status": "completed", "related_transactions": related,
        }}),
    )
}

/// The order notification MultiSafepay sends after a refund: `refunded` or
/// `partial_refunded`, with the running `amount_refunded`.
fn msp_refunded(state: &SimState, r: &SimRefund) -> Result<PreparedCallback, SimError> {
    let order = state
        .order(&r.intent_id)
        .ok_or_else(|| SimError::UnknownOrder(r.intent_id.clone()))?;
    let url = order.notify_url.clone().ok_or_else(|| {
        SimError::NoCallbackUrl(r.intent_id.clone(), "the order was created without one")
    })?;
    let refunded = state.refunds.refunded("multisafepay", &r.intent_id);
    let status = if refunded >= order.amount {
        "refunded"
    } else {
        "partial_refunded"
    };
    let at = now_secs();
    let body = json!({
        "amount": order.amount, "amount_refunded": refunded, "currency": order.currency,
        "description": format!("Payment {}", order.intent_id), "financial_status": status,
        "order_id": order.intent_id, "status": status, "transaction_id": order.psp_reference,
        "reason": "", "reason_code": "",
    })
    .to_string();
    let auth = crate::multisafepay::sign(body.as_bytes(), keys::MULTISAFEPAY_API_KEY, at);
    let sep = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{sep}transactionid={}&timestamp={at}", order.intent_id);
    Ok(prepared(
        r,
        format!(
            "{}:{}:{status}:{refunded}",
            order.intent_id, order.psp_reference
        ),
        &url,
        vec![("content-type", "application/json".into()), ("auth", auth)],
        body,
    ))
}

// --- the handle's refund operations ----------------------------------------------------------

/// Ends a pending refund (found by the merchant's refund id) and sends the channel's refund
/// notification where it has one (WeChat Pay `REFUND.*`, Stripe `refund.updated`);
/// Alipay and MultiSafepay answer the next status query instead.
pub(crate) async fn complete(
    state: &Arc<SimState>,
    merchant_refund_id: &str,
    succeed: bool,
) -> Result<Option<DeliveredCallback>, SimError> {
    let r = state
        .refunds
        .all()
        .into_iter()
        .find(|r| r.merchant_refund_id == merchant_refund_id)
        .ok_or_else(|| SimError::Invalid(format!("no refund `{merchant_refund_id}`")))?;
    if r.status != SimRefundStatus::Pending {
        return Err(SimError::Invalid(format!(
            "refund `{merchant_refund_id}` is not pending"
        )));
    }
    let status = if succeed {
        SimRefundStatus::Succeeded
    } else {
        SimRefundStatus::Failed
    };
    state
        .refunds
        .set_status(&r.channel, &r.psp_refund_id, status);
    let r = SimRefund { status, ..r };
    let callback = match r.channel.as_str() {
        "wechat" => {
            let url = r.notify_url.clone().ok_or_else(|| {
                SimError::NoCallbackUrl(r.intent_id.clone(), "the refund was requested without one")
            })?;
            Some(wechat_notification(state, &r, &url)?)
        }
        "stripe" => Some(stripe_event(
            state,
            &r,
            "refund.updated",
            stripe_refund_json(&r),
        )?),
        _ => None,
    };
    Ok(match callback {
        Some(cb) => Some(state.deliver(cb).await),
        None => None,
    })
}

/// A refund made in the PSP's dashboard (not through the merchant's API): booked, then
/// notified with the order's running refunded total (Stripe `charge.refunded`, MultiSafepay
/// `partial_refunded`/`refunded`, Alipay's trade notify with `refund_fee`).
pub(crate) async fn dashboard(
    state: &Arc<SimState>,
    intent_id: &str,
    amount: i64,
) -> Result<DeliveredCallback, SimError> {
    let order = state
        .order(intent_id)
        .ok_or_else(|| SimError::UnknownOrder(intent_id.to_owned()))?;
    let (r, _) = book(
        state,
        Some(order.clone()),
        &format!("dashboard-{}", state.next_seq()),
        amount,
        None,
    )
    .map_err(|_| SimError::Invalid(format!("order `{intent_id}` cannot be refunded {amount}")))?;
    state
        .refunds
        .set_status(&r.channel, &r.psp_refund_id, SimRefundStatus::Succeeded);
    let r = SimRefund {
        status: SimRefundStatus::Succeeded,
        merchant_refund_id: String::new(),
        ..r
    };
    let cb = match r.channel.as_str() {
        "stripe" => stripe_charge_refunded(state, &r)?,
        "multisafepay" => msp_refunded(state, &r)?,
        "alipay" => callbacks::alipay_refund_notify(
            &order,
            state.refunds.refunded("alipay", intent_id),
            now_secs(),
            state.next_seq(),
        )?,
        other => {
            return Err(SimError::Invalid(format!(
                "`{other}` reports no dashboard refunds"
            )));
        }
    };
    Ok(state.deliver(cb).await)
}
