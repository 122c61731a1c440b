//! MultiSafepay as a `ChannelAdapter`: a redirect order created with
//! `POST /v1/json/orders?api_key=…` (`order_id` = our intent id, POST notifications to the
//! `notify_url`), `payment_url` back as the QR payload; POST notifications verified from the
//! `Auth` header (HMAC-SHA512 under the API key) with a 600 s tolerance, answered `OK`.

use async_trait::async_trait;
use ipay_engine::channel::{
    CallbackAck, CallbackError, CallbackNotice, CallbackOutcome, ChannelAdapter, ChannelError,
    ChannelPayment, ChannelPaymentRequest, ChannelRefund, ChannelRefundRequest, ChannelRefundState,
    InboundCallback, RefundReport,
};
use ipay_engine::clock::Timestamp;
use ipay_engine::model::Secret;
use ipay_engine::money::Currency;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::wire;
use crate::common::{Fields, intent_id, money};
use crate::http::HttpClient;

/// Channel name.
pub const NAME: &str = "multisafepay";
/// Production base URL (`https://testapi.multisafepay.com` is the test environment).
pub const DEFAULT_BASE_URL: &str = "https://api.multisafepay.com";
/// Path of order creation.
pub const ORDERS_PATH: &str = "/v1/json/orders";
/// Header carrying the notification signature.
pub const AUTH_HEADER: &str = "auth";
const FIELDS: &[&str] = &["api_key"];
/// Currencies MultiSafepay settles.
const CURRENCIES: &[&str] = &[
    "AUD", "CAD", "CHF", "CZK", "DKK", "EUR", "GBP", "HKD", "HUF", "JPY", "NOK", "NZD", "PLN",
    "RON", "SEK", "SGD", "USD",
];

/// A merchant's MultiSafepay credentials: `api_key` (the website API key; it also keys the
/// notification HMAC).
#[derive(Clone, Debug)]
pub struct MultiSafepayCredentials {
    api_key: Secret,
}

impl MultiSafepayCredentials {
    /// Parses and checks the credential object.
    pub fn from_json(value: &Value) -> Result<Self, String> {
        let f = Fields::new(NAME, value, FIELDS)?;
        let api_key = f.req("api_key")?.trim();
        if api_key.len() < 16
            || api_key.len() > 128
            || !api_key.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(f.bad("api_key", "must be 16 to 128 letters and digits"));
        }
        Ok(MultiSafepayCredentials {
            api_key: Secret::new(api_key.to_owned()),
        })
    }
}

/// The MultiSafepay adapter for one merchant.
pub struct MultiSafepayAdapter {
    creds: MultiSafepayCredentials,
    url: String,
    /// `{base}/v1/json/orders`, for per-order paths.
    orders_base: String,
    notify_url: String,
    client: HttpClient,
}

impl MultiSafepayAdapter {
    /// An adapter calling `{base_url}/v1/json/orders`; notifications go to `notify_url`.
    pub fn new(
        creds: MultiSafepayCredentials,
        base_url: &str,
        notify_url: &str,
        client: HttpClient,
    ) -> Self {
        MultiSafepayAdapter {
            url: format!(
                "{}{ORDERS_PATH}?api_key={}",
                base_url.trim_end_matches('/'),
                creds.api_key.expose()
            ),
            orders_base: format!("{}{ORDERS_PATH}", base_url.trim_end_matches('/')),
            creds,
            notify_url: notify_url.to_owned(),
            client,
        }
    }
}

#[derive(Serialize)]
struct OrderRequest<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    order_id: &'a str,
    currency: &'a str,
    amount: i64,
    description: &'a str,
    seconds_active: i64,
    payment_options: PaymentOptions<'a>,
}

#[derive(Serialize)]
struct PaymentOptions<'a> {
    notification_url: &'a str,
    notification_method: &'static str,
}

#[derive(Deserialize)]
struct OrderAnswer {
    success: bool,
    #[serde(default)]
    data: Option<OrderData>,
    #[serde(default)]
    error_code: Option<i64>,
    #[serde(default)]
    error_info: Option<String>,
}

#[derive(Deserialize)]
struct OrderData {
    order_id: Option<String>,
    payment_url: Option<String>,
}

#[derive(Deserialize)]
struct Notification<'a> {
    #[serde(borrow)]
    order_id: std::borrow::Cow<'a, str>,
    #[serde(default)]
    transaction_id: Option<Value>,
    #[serde(borrow)]
    status: std::borrow::Cow<'a, str>,
    #[serde(default)]
    amount: i64,
    #[serde(default, borrow)]
    currency: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    reason: std::borrow::Cow<'a, str>,
    #[serde(default)]
    amount_refunded: i64,
}

#[derive(Serialize)]
struct RefundBody<'a> {
    currency: &'a str,
    amount: i64,
    description: &'a str,
}

#[derive(Deserialize)]
struct RefundAnswer {
    success: bool,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    error_code: Option<i64>,
    #[serde(default)]
    error_info: Option<String>,
}

/// A JSON id (MultiSafepay sends numbers or strings) as text.
fn id_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl MultiSafepayAdapter {
    /// `{base}/v1/json/orders/{order}{tail}?api_key=…`.
    fn order_url(&self, order: &str, tail: &str) -> String {
        format!(
            "{}/{order}{tail}?api_key={}",
            self.orders_base,
            self.creds.api_key.expose()
        )
    }
}

#[async_trait]
impl ChannelAdapter for MultiSafepayAdapter {
    fn name(&self) -> &'static str {
        NAME
    }

    fn supports_currency(&self, currency: Currency) -> bool {
        CURRENCIES.contains(&currency.code())
    }

    fn allows_livemode(&self) -> bool {
        true
    }

    async fn create_payment(
        &self,
        req: &ChannelPaymentRequest,
    ) -> Result<ChannelPayment, ChannelError> {
        let order_id = req.intent_id.to_string();
        let description = format!("Payment {order_id}");
        let seconds_active = (req.expires_at.ms().div_euclid(1000)
            - req.intent_id.timestamp_ms().div_euclid(1000))
        .max(60);
        let body = serde_json::to_vec(&OrderRequest {
            kind: "redirect",
            order_id: &order_id,
            currency: req.amount.currency.code(),
            amount: req.amount.value,
            description: &description,
            seconds_active,
            payment_options: PaymentOptions {
                notification_url: &self.notify_url,
                notification_method: "POST",
            },
        })
        .map_err(|e| ChannelError::Rejected(format!("multisafepay order: {e}")))?;
        let answer = self
            .client
            .post(
                NAME,
                &self.url,
                &[
                    ("content-type", "application/json"),
                    ("accept", "application/json"),
                ],
                body,
            )
            .await?;
        let parsed: Option<OrderAnswer> = serde_json::from_slice(&answer.body).ok();
        match parsed {
            Some(OrderAnswer {
                success: true,
                data:
                    Some(OrderData {
                        order_id: Some(echoed),
                        payment_url: Some(url),
                    }),
                ..
            }) if (200..300).contains(&answer.status) && echoed == order_id && !url.is_empty() => {
                Ok(ChannelPayment {
                    qr_code: url,
                    channel_reference: None,
                })
            }
            Some(OrderAnswer {
                success: false,
                error_code,
                error_info,
                ..
            }) => {
                let text = format!(
                    "multisafepay answered HTTP {}: error {} {}",
                    answer.status,
                    error_code.unwrap_or_default(),
                    error_info.unwrap_or_default()
                );
                Err(if answer.status == 429 {
                    ChannelError::Unavailable(text)
                } else {
                    ChannelError::Rejected(text)
                })
            }
            _ if !(200..300).contains(&answer.status) => Err(ChannelError::Rejected(format!(
                "multisafepay answered HTTP {}",
                answer.status
            ))),
            _ => Err(ChannelError::Unavailable(
                "multisafepay answer is malformed".into(),
            )),
        }
    }

    async fn refund(&self, req: &ChannelRefundRequest) -> Result<ChannelRefund, ChannelError> {
        let order = req.intent_id.to_string();
        // The description carries our refund id: the status query finds the refund by it.
        let description = format!("Refund {}", req.refund_id);
        let body = serde_json::to_vec(&RefundBody {
            currency: req.amount.currency.code(),
            amount: req.amount.value,
            description: &description,
        })
        .map_err(|e| ChannelError::Rejected(format!("multisafepay refund: {e}")))?;
        let answer = self
            .client
            .post(
                NAME,
                &self.order_url(&order, "/refunds"),
                &[
                    ("content-type", "application/json"),
                    ("accept", "application/json"),
                ],
                body,
            )
            .await?;
        let parsed: Option<RefundAnswer> = serde_json::from_slice(&answer.body).ok();
        match parsed {
            // A refund MultiSafepay accepted is booked from the merchant balance at once.
            Some(RefundAnswer {
                success: true,
                data,
                ..
            }) if (200..300).contains(&answer.status) => Ok(ChannelRefund {
                state: ChannelRefundState::Succeeded,
                psp_reference: id_text(data.as_ref().and_then(|d| d.get("refund_id"))),
            }),
            Some(RefundAnswer {
                success: false,
                error_code,
                error_info,
                ..
            }) if answer.status != 429 => Ok(ChannelRefund {
                state: ChannelRefundState::Failed {
                    reason: format!(
                        "multisafepay refused the refund: error {} {}",
                        error_code.unwrap_or_default(),
                        error_info.unwrap_or_default()
                    ),
                },
                psp_reference: None,
            }),
            _ => Err(ChannelError::Unavailable(format!(
                "multisafepay refund answer is malformed (HTTP {})",
                answer.status
            ))),
        }
    }

    async fn refund_status(
        &self,
        req: &ChannelRefundRequest,
    ) -> Result<ChannelRefund, ChannelError> {
        let order = req.intent_id.to_string();
        let answer = self
            .client
            .get(
                NAME,
                &self.order_url(&order, ""),
                &[("accept", "application/json")],
            )
            .await?;
        let parsed: Value = serde_json::from_slice(&answer.body).map_err(|_| {
            ChannelError::Unavailable("multisafepay order answer is malformed".into())
        })?;
        let ours = format!("Refund {}", req.refund_id);
        let found = parsed
            .pointer("/data/related_transactions")
            .and_then(Value::as_array)
            .and_then(|list| {
                list.iter()
                    .find(|t| t.get("description").and_then(Value::as_str) == Some(ours.as_str()))
            });
        let Some(t) = found else {
            return Ok(ChannelRefund {
                state: ChannelRefundState::NotFound,
                psp_reference: None,
            });
        };
        let state = match t.get("status").and_then(Value::as_str).unwrap_or("") {
            "completed" => ChannelRefundState::Succeeded,
            s @ ("declined" | "void" | "cancelled" | "expired") => ChannelRefundState::Failed {
                reason: format!("multisafepay refund {s}"),
            },
            _ => ChannelRefundState::Pending,
        };
        Ok(ChannelRefund {
            state,
            psp_reference: id_text(t.get("transaction_id")),
        })
    }

    fn verify_callback(
        &self,
        cb: &InboundCallback,
        now: Timestamp,
    ) -> Result<CallbackNotice, CallbackError> {
        let body = &cb.body[..];
        let auth = cb
            .header(AUTH_HEADER)
            .ok_or_else(|| CallbackError::Malformed("missing Auth header".into()))?;
        wire::verify(
            auth,
            body,
            self.creds.api_key.expose(),
            now.ms().div_euclid(1000),
            wire::DEFAULT_TOLERANCE_SECS,
        )
        .map_err(|e| match e {
            wire::MultiSafepayAuthError::MalformedHeader(_) => {
                CallbackError::Malformed(e.to_string())
            }
            wire::MultiSafepayAuthError::TimestampOutsideTolerance { .. } => {
                CallbackError::Stale(e.to_string())
            }
            _ => CallbackError::SignatureMismatch(e.to_string()),
        })?;
        let n: Notification<'_> = serde_json::from_slice(body)
            .map_err(|e| CallbackError::Malformed(format!("multisafepay notification: {e}")))?;
        let intent = intent_id("order_id", &n.order_id)?;
        let transaction = match &n.transaction_id {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(v)) => v.to_string(),
            _ => String::new(),
        };
        let outcome = match n.status.as_ref() {
            "completed" => CallbackOutcome::Paid {
                amount: money(n.amount, &n.currency)?,
                channel_reference: (!transaction.is_empty()).then(|| transaction.clone()),
                payer: None,
            },
            // Refunds, ours or made in MultiSafepay Control, with the order's running total. A
            // `refunded` order without `amount_refunded` (older notification formats) was
            // refunded in full.
            "refunded" | "partial_refunded" => CallbackOutcome::Refund(RefundReport::Total {
                refunded: money(refunded_total(&n), &n.currency)?,
                psp_reference: (!transaction.is_empty()).then(|| transaction.clone()),
            }),
            "declined" | "cancelled" | "canceled" | "void" | "expired" => CallbackOutcome::Failed {
                reason: if n.reason.is_empty() {
                    format!("multisafepay order {}", n.status)
                } else {
                    format!("multisafepay order {}: {}", n.status, n.reason)
                },
            },
            _ => CallbackOutcome::Ignored,
        };
        Ok(CallbackNotice {
            notification_id: notification_id(&n, &transaction, &outcome),
            intent_id: intent,
            outcome,
        })
    }

    fn callback_ack(&self) -> CallbackAck {
        CallbackAck {
            status: 200,
            content_type: "text/plain; charset=utf-8",
            body: "OK".into(),
        }
    }
}

/// The order's refunded total: `amount_refunded`, or the whole amount for a `refunded` order
/// that does not say.
fn refunded_total(n: &Notification<'_>) -> i64 {
    if n.amount_refunded == 0 && n.status == "refunded" {
        n.amount
    } else {
        n.amount_refunded
    }
}

/// MultiSafepay has no notification id: one notification per order status (and per refunded
/// total, since an order can be refunded several times).
fn notification_id(n: &Notification<'_>, transaction: &str, outcome: &CallbackOutcome) -> String {
    if matches!(outcome, CallbackOutcome::Refund(_)) {
        format!(
            "{}:{transaction}:{}:{}",
            n.order_id, n.status, n.amount_refunded
        )
    } else {
        format!("{}:{transaction}:{}", n.order_id, n.status)
    }
}

/// The intent a MultiSafepay notification names (`order_id`), read without verifying.
pub fn peek_intent(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Peek {
        order_id: String,
    }
    serde_json::from_slice::<Peek>(body)
        .ok()
        .map(|p| p.order_id)
}

/// What the order statuses of notifications become (the `Auth` scheme is in `tests.rs`).
#[cfg(test)]
mod status_tests {
    use super::*;
    use crate::http::HttpTimeouts;
    use serde_json::json;

    const KEY: &str = "0123456789abcdef0123";
    const INTENT: &str = "pi_01JWQ8Z6Q0V3R2K9M5N7P4T1XB";

    fn deliver(body: &Value) -> CallbackNotice {
        let creds = MultiSafepayCredentials::from_json(&json!({ "api_key": KEY })).unwrap();
        let client = HttpClient::new(HttpTimeouts::default()).unwrap();
        let adapter = MultiSafepayAdapter::new(creds, "http://127.0.0.1:9", "http://x/cb", client);
        let body = serde_json::to_vec(body).unwrap();
        let cb = InboundCallback {
            headers: vec![("auth".into(), wire::sign(&body, KEY, 1_700_000_000))],
            body: body.into(),
            ..InboundCallback::default()
        };
        adapter
            .verify_callback(&cb, Timestamp(1_700_000_000_000))
            .unwrap()
    }

    fn refunded_total_of(n: &CallbackNotice) -> i64 {
        match &n.outcome {
            CallbackOutcome::Refund(RefundReport::Total { refunded, .. }) => refunded.value,
            other => panic!("not a refund report: {other:?}"),
        }
    }

    #[test]
    fn a_refunded_order_records_its_refunded_total() {
        let n = deliver(
            &json!({"order_id": INTENT, "transaction_id": 8009375, "status": "refunded",
            "amount": 2599, "amount_refunded": 2599, "currency": "EUR"}),
        );
        assert_eq!(n.intent_id.to_string(), INTENT);
        assert_eq!(refunded_total_of(&n), 2599);
        let partial = deliver(&json!({"order_id": INTENT, "status": "partial_refunded",
            "amount": 2599, "amount_refunded": 1000, "currency": "EUR"}));
        assert_eq!(refunded_total_of(&partial), 1000);
    }

    #[test]
    fn a_refunded_order_without_its_refunded_amount_was_refunded_in_full() {
        let n = deliver(&json!({"order_id": INTENT, "transaction_id": "8009375",
            "status": "refunded", "amount": 2599, "currency": "EUR"}));
        assert_eq!(refunded_total_of(&n), 2599);
    }
}
