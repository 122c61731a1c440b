//! Builds the callbacks each simulated PSP sends, signed (and for WeChat Pay encrypted) with the
//! simulator's PSP-side keys, in each channel's real wire format.

use ipay_engine::clock::Timestamp;
use serde_json::json;

use super::keys::{self, keys};
use super::state::{OrderInfo, PreparedCallback};
use super::{Outcome, PayOverrides, SimError};
use crate::alipay;

fn build_err(e: impl std::fmt::Display) -> SimError {
    SimError::Build(e.to_string())
}

fn rfc3339_beijing(at: i64) -> String {
    crate::wechat::rfc3339_beijing(Timestamp(at * 1000))
}

/// The callback `outcome` produces for `order`, dated `at` (Unix seconds), sent to `url`.
pub(crate) fn build(
    order: &OrderInfo,
    outcome: Outcome,
    overrides: &PayOverrides,
    at: i64,
    seq: u64,
    url: &str,
) -> Result<PreparedCallback, SimError> {
    let amount = overrides.amount.unwrap_or(order.amount);
    let currency = overrides
        .currency
        .clone()
        .unwrap_or_else(|| order.currency.clone());
    let (notification_id, headers, body, url) = match order.channel.as_str() {
        "alipay" => alipay(order, outcome, amount, at, seq, url)?,
        "wechat" => wechat(order, outcome, amount, &currency, at, seq, url)?,
        "stripe" => stripe(order, outcome, amount, &currency, at, seq, url)?,
        "multisafepay" => multisafepay(order, outcome, amount, &currency, at, url)?,
        "promptpay" => promptpay(order, outcome, amount, &currency, at, seq, url)?,
        other => return Err(SimError::Invalid(format!("unknown channel `{other}`"))),
    };
    Ok(PreparedCallback {
        channel: order.channel.clone(),
        intent_id: order.intent_id.clone(),
        notification_id,
        url,
        headers,
        body,
    })
}

type Built = (String, Vec<(String, String)>, String, String);

fn h(name: &str, value: impl Into<String>) -> (String, String) {
    (name.to_owned(), value.into())
}

fn alipay(
    order: &OrderInfo,
    outcome: Outcome,
    amount: i64,
    at: i64,
    seq: u64,
    url: &str,
) -> Result<Built, SimError> {
    let notify_id = format!("{}{seq:010}", at);
    let total = format!("{}.{:02}", amount / 100, amount % 100);
    let now = alipay::beijing_time(Timestamp(at * 1000));
    let created = alipay::beijing_time(Timestamp(order.created_at * 1000));
    let status = match outcome {
        Outcome::Paid => "TRADE_SUCCESS",
        Outcome::Failed | Outcome::Expired => "TRADE_CLOSED",
    };
    let mut params: Vec<(&str, String)> = vec![
        ("notify_time", now.clone()),
        ("notify_type", "trade_status_sync".into()),
        ("notify_id", notify_id.clone()),
        ("charset", "utf-8".into()),
        ("version", "1.0".into()),
        ("sign_type", "RSA2".into()),
        ("app_id", keys::ALIPAY_APP_ID.into()),
        ("auth_app_id", keys::ALIPAY_APP_ID.into()),
        ("trade_no", order.psp_reference.clone()),
        ("out_trade_no", order.intent_id.clone()),
        ("trade_status", status.into()),
        ("total_amount", total.clone()),
        ("subject", format!("Payment {}", order.intent_id)),
        ("gmt_create", created),
        ("seller_id", "2088000000000001".into()),
    ];
    if outcome == Outcome::Paid {
        params.push(("gmt_payment", now));
        params.push(("receipt_amount", total.clone()));
        params.push(("buyer_pay_amount", total));
        params.push(("buyer_id", "2088000000000002".into()));
    }
    let sign = alipay::sign_notify(&params, &keys().alipay_platform).map_err(build_err)?;
    params.push(("sign", sign));
    Ok((
        notify_id,
        vec![h(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )],
        alipay::encode_form(&params),
        url.to_owned(),
    ))
}

/// Alipay's trade notify after a refund: the trade's running `refund_fee` (`TRADE_CLOSED` once
/// all is refunded, `TRADE_SUCCESS` before), dated `at`.
pub(crate) fn alipay_refund_notify(
    order: &OrderInfo,
    refunded: i64,
    at: i64,
    seq: u64,
) -> Result<PreparedCallback, SimError> {
    let url = order.notify_url.clone().ok_or_else(|| {
        SimError::NoCallbackUrl(order.intent_id.clone(), "the order was created without one")
    })?;
    let notify_id = format!("{at}{seq:010}");
    let yuan = |fen: i64| format!("{}.{:02}", fen / 100, fen % 100);
    let now = alipay::beijing_time(Timestamp(at * 1000));
    let mut params: Vec<(&str, String)> = vec![
        ("notify_time", now.clone()),
        ("notify_type", "trade_status_sync".into()),
        ("notify_id", notify_id.clone()),
        ("charset", "utf-8".into()),
        ("version", "1.0".into()),
        ("sign_type", "RSA2".into()),
        ("app_id", keys::ALIPAY_APP_ID.into()),
        ("trade_no", order.psp_reference.clone()),
        ("out_trade_no", order.intent_id.clone()),
        ("out_biz_no", format!("HZ{seq:010}")),
        (
            "trade_status",
            if refunded >= order.amount {
                "TRADE_CLOSED"
            } else {
                "TRADE_SUCCESS"
            }
            .into(),
        ),
        ("total_amount", yuan(order.amount)),
        ("refund_fee", yuan(refunded)),
        ("gmt_refund", now),
    ];
    let sign = alipay::sign_notify(&params, &keys().alipay_platform).map_err(build_err)?;
    params.push(("sign", sign));
    Ok(PreparedCallback {
        channel: order.channel.clone(),
        intent_id: order.intent_id.clone(),
        notification_id: notify_id,
        url,
        headers: vec![h(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )],
        body: alipay::encode_form(&params),
    })
}

fn wechat(
    order: &OrderInfo,
    outcome: Outcome,
    amount: i64,
    currency: &str,
    at: i64,
    seq: u64,
    url: &str,
) -> Result<Built, SimError> {
    let (event_type, trade_state, desc, summary) = match outcome {
        Outcome::Paid => ("TRANSACTION.SUCCESS", "SUCCESS", "支付成功", "支付成功"),
        Outcome::Failed => ("TRANSACTION.PAYERROR", "PAYERROR", "支付失败", "支付失败"),
        Outcome::Expired => ("TRANSACTION.CLOSED", "CLOSED", "已关闭", "订单已关闭"),
    };
    let mut transaction = json!({
        "mchid": keys::WECHAT_MCHID,
        "appid": keys::WECHAT_APPID,
        "out_trade_no": order.intent_id,
        "transaction_id": order.psp_reference,
        "trade_type": "NATIVE",
        "trade_state": trade_state,
        "trade_state_desc": desc,
        "bank_type": "OTHERS",
        "attach": "",
        "payer": {"openid": "oSimPayer0000000000000000001"},
        "amount": {"total": amount, "payer_total": amount, "currency": currency, "payer_currency": currency},
    });
    if outcome == Outcome::Paid {
        transaction["success_time"] = json!(rfc3339_beijing(at));
    }
    let k = keys();
    let resource = k
        .wechat_apiv3
        .encrypt_resource(
            &transaction.to_string(),
            &crate::wechat::generate_resource_nonce(),
            "transaction",
            "transaction",
        )
        .map_err(build_err)?;
    let id = format!("EV-{at}{seq:08}");
    let body = json!({
        "id": id,
        "create_time": rfc3339_beijing(at),
        "resource_type": "encrypt-resource",
        "event_type": event_type,
        "summary": summary,
        "resource": resource,
    })
    .to_string();
    let nonce = crate::wechat::generate_nonce();
    let signature = k
        .wechat_platform
        .sign_notification(at, &nonce, body.as_bytes())
        .map_err(build_err)?;
    Ok((
        id,
        vec![
            h("content-type", "application/json"),
            h("wechatpay-timestamp", at.to_string()),
            h("wechatpay-nonce", nonce),
            h("wechatpay-signature", signature),
            h("wechatpay-serial", keys::WECHAT_PLATFORM_SERIAL),
        ],
        body,
        url.to_owned(),
    ))
}

fn stripe(
    order: &OrderInfo,
    outcome: Outcome,
    amount: i64,
    currency: &str,
    at: i64,
    seq: u64,
    url: &str,
) -> Result<Built, SimError> {
    let (kind, status) = match outcome {
        Outcome::Paid => ("payment_intent.succeeded", "succeeded"),
        Outcome::Failed => ("payment_intent.payment_failed", "requires_payment_method"),
        Outcome::Expired => ("payment_intent.canceled", "canceled"),
    };
    let mut object = json!({
        "id": order.psp_reference,
        "object": "payment_intent",
        "amount": amount,
        "amount_received": if outcome == Outcome::Paid { amount } else { 0 },
        "currency": currency.to_ascii_lowercase(),
        "status": status,
        "livemode": false,
        "created": order.created_at,
        "metadata": {"ipay_intent_id": order.intent_id},
        "receipt_email": "payer@example.com",
    });
    if outcome == Outcome::Failed {
        object["last_payment_error"] = json!({
            "type": "card_error", "code": "card_declined",
            "message": "Your card was declined."
        });
    }
    if outcome == Outcome::Expired {
        object["cancellation_reason"] = json!("abandoned");
    }
    let id = format!("evt_sim{at}{seq:08}");
    let body = json!({
        "id": id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": at,
        "livemode": false,
        "pending_webhooks": 1,
        "type": kind,
        "data": {"object": object},
    })
    .to_string();
    let signature = crate::stripe::sign(body.as_bytes(), keys::STRIPE_WEBHOOK_SECRET, at);
    Ok((
        id,
        vec![
            h("content-type", "application/json; charset=utf-8"),
            h("stripe-signature", signature),
        ],
        body,
        url.to_owned(),
    ))
}

fn multisafepay(
    order: &OrderInfo,
    outcome: Outcome,
    amount: i64,
    currency: &str,
    at: i64,
    url: &str,
) -> Result<Built, SimError> {
    let status = match outcome {
        Outcome::Paid => "completed",
        Outcome::Failed => "declined",
        Outcome::Expired => "expired",
    };
    let when = chrono_like(at);
    let body = json!({
        "amount": amount,
        "amount_refunded": 0,
        "created": chrono_like(order.created_at),
        "currency": currency,
        "description": format!("Payment {}", order.intent_id),
        "financial_status": if outcome == Outcome::Paid { "completed" } else { "initialized" },
        "modified": when,
        "order_id": order.intent_id,
        "payment_details": {"type": "IDEAL", "external_transaction_id": order.psp_reference},
        "reason": "",
        "reason_code": "",
        "status": status,
        "transaction_id": order.psp_reference,
    })
    .to_string();
    let auth = crate::multisafepay::sign(body.as_bytes(), keys::MULTISAFEPAY_API_KEY, at);
    let sep = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{sep}transactionid={}&timestamp={at}", order.intent_id);
    Ok((
        format!("{}:{}:{status}", order.intent_id, order.psp_reference),
        vec![h("content-type", "application/json"), h("auth", auth)],
        body,
        url,
    ))
}

fn promptpay(
    order: &OrderInfo,
    outcome: Outcome,
    amount: i64,
    currency: &str,
    at: i64,
    seq: u64,
    url: &str,
) -> Result<Built, SimError> {
    let status = match outcome {
        Outcome::Paid => "paid",
        Outcome::Failed => "failed",
        Outcome::Expired => "expired",
    };
    let id = format!("bnk_evt_{at}{seq:08}");
    let body = json!({
        "id": id,
        "reference": order.intent_id,
        "status": status,
        "amount": amount,
        "currency": currency,
        "promptpay_id": "0066812345678",
        "bank_reference": order.psp_reference,
        "paid_at": chrono_like(at) + "Z",
    })
    .to_string();
    let signature =
        crate::promptpay::sign_bank_callback(body.as_bytes(), keys::PROMPTPAY_BANK_SECRET, at);
    Ok((
        id,
        vec![
            h("content-type", "application/json"),
            h("x-bank-signature", signature),
        ],
        body,
        url.to_owned(),
    ))
}

/// `YYYY-MM-DDTHH:MM:SS` in UTC.
fn chrono_like(at: i64) -> String {
    Timestamp(at * 1000)
        .to_datetime()
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}
