//! Stripe as a `ChannelAdapter`: a PaymentIntent created over the form-encoded API with the
//! secret key (our intent id in `metadata[ipay_intent_id]` and as the `Idempotency-Key`, so a
//! retried creation returns the same PaymentIntent), and webhooks verified from
//! `Stripe-Signature` with a 300 s tolerance.
//!
//! A bare PaymentIntent has no scannable payload. The adapter uses, in order: a QR payload in
//! `next_action` (`*_display_qr_code.data`, e.g. PromptPay or WeChat Pay through Stripe), a
//! redirect URL in `next_action`, else the `client_secret` the pay page hands to Stripe.js.

use async_trait::async_trait;
use ipay_engine::channel::{
    CallbackError, CallbackNotice, CallbackOutcome, ChannelAdapter, ChannelError, ChannelPayment,
    ChannelPaymentRequest, ChannelRefund, ChannelRefundRequest, ChannelRefundState,
    InboundCallback, RefundReport,
};
use ipay_engine::clock::Timestamp;
use ipay_engine::ids::RefundId;
use ipay_engine::model::Secret;
use ipay_engine::money::Currency;
use serde::Deserialize;
use serde_json::Value;

use super::wire;
use crate::common::{Fields, intent_id, money};
use crate::http::HttpClient;

/// Channel name.
pub const NAME: &str = "stripe";
/// Production base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.stripe.com";
/// Path of PaymentIntent creation.
pub const PAYMENT_INTENTS_PATH: &str = "/v1/payment_intents";
/// Metadata key carrying our intent id.
pub const METADATA_KEY: &str = "ipay_intent_id";
/// Path of refunds.
pub const REFUNDS_PATH: &str = "/v1/refunds";
/// Metadata key carrying our refund id on a Stripe Refund.
pub const REFUND_METADATA_KEY: &str = "ipay_refund_id";
const FIELDS: &[&str] = &["secret_key", "webhook_secret"];

/// A merchant's Stripe credentials: `secret_key` (`sk_test_…`, `sk_live_…` or a restricted
/// `rk_…` key) and `webhook_secret` (the endpoint's `whsec_…`).
#[derive(Clone, Debug)]
pub struct StripeCredentials {
    secret_key: Secret,
    webhook_secret: Secret,
    live: bool,
}

impl StripeCredentials {
    /// Parses and checks the credential object.
    pub fn from_json(value: &Value) -> Result<Self, String> {
        let f = Fields::new(NAME, value, FIELDS)?;
        let secret_key = f.req("secret_key")?;
        let live = secret_key.starts_with("sk_live_") || secret_key.starts_with("rk_live_");
        let test = secret_key.starts_with("sk_test_") || secret_key.starts_with("rk_test_");
        if !(live || test)
            || secret_key.len() < 16
            || !secret_key.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(f.bad(
                "secret_key",
                "must be a Stripe secret or restricted key (sk_test_…, sk_live_…, rk_…)",
            ));
        }
        let webhook_secret = f.req("webhook_secret")?;
        if !webhook_secret.starts_with("whsec_") || webhook_secret.len() < 16 {
            return Err(f.bad("webhook_secret", "must be an endpoint secret (whsec_…)"));
        }
        Ok(StripeCredentials {
            secret_key: Secret::new(secret_key.to_owned()),
            webhook_secret: Secret::new(webhook_secret.to_owned()),
            live,
        })
    }
}

/// The Stripe adapter for one merchant.
pub struct StripeAdapter {
    creds: StripeCredentials,
    url: String,
    refunds_url: String,
    client: HttpClient,
}

impl StripeAdapter {
    /// An adapter calling `{base_url}/v1/payment_intents`. Stripe sends webhooks to the
    /// endpoints configured in the merchant's Stripe account, not to a per-payment URL.
    pub fn new(creds: StripeCredentials, base_url: &str, client: HttpClient) -> Self {
        StripeAdapter {
            creds,
            url: format!("{}{PAYMENT_INTENTS_PATH}", base_url.trim_end_matches('/')),
            refunds_url: format!("{}{REFUNDS_PATH}", base_url.trim_end_matches('/')),
            client,
        }
    }
}

#[derive(Deserialize)]
struct PaymentIntentAnswer {
    id: String,
    client_secret: Option<String>,
    #[serde(default)]
    next_action: Option<Value>,
}

/// A Stripe Refund object, as far as we read it.
#[derive(Deserialize)]
struct RefundObject {
    id: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    failure_reason: Option<String>,
    #[serde(default)]
    metadata: std::collections::HashMap<String, String>,
}

#[derive(Deserialize)]
struct RefundList {
    data: Vec<RefundObject>,
}

/// Stripe's refund `status` as the engine's refund state.
fn refund_state(status: &str, failure_reason: Option<String>) -> ChannelRefundState {
    match status {
        "succeeded" => ChannelRefundState::Succeeded,
        "failed" | "canceled" => ChannelRefundState::Failed {
            reason: format!(
                "stripe refund {status}: {}",
                failure_reason.unwrap_or_else(|| "no reason given".into())
            ),
        },
        // `pending`, `requires_action`.
        _ => ChannelRefundState::Pending,
    }
}

/// A non-2xx Stripe answer as a channel error: rate limits and `api_error` are worth retrying.
fn error_answer(answer: &crate::http::PspResponse) -> ChannelError {
    let detail = serde_json::from_slice::<ErrorAnswer>(&answer.body).ok();
    let text = match &detail {
        Some(ErrorAnswer { error }) => format!(
            "stripe answered HTTP {}: {} {} {}",
            answer.status,
            error.kind,
            error.code.as_deref().unwrap_or(""),
            error.message.as_deref().unwrap_or("")
        ),
        None => format!("stripe answered HTTP {}", answer.status),
    };
    let transient = answer.status == 429 || detail.is_some_and(|d| d.error.kind == "api_error");
    if transient {
        ChannelError::Unavailable(text)
    } else {
        ChannelError::Rejected(text)
    }
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// A QR payload or redirect URL from `next_action`, if Stripe gave one.
fn next_action_payload(next_action: &Value) -> Option<String> {
    let obj = next_action.as_object()?;
    for (key, value) in obj {
        if key.ends_with("_display_qr_code")
            && let Some(data) = value.get("data").and_then(Value::as_str)
        {
            return Some(data.to_owned());
        }
    }
    next_action
        .pointer("/redirect_to_url/url")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    object: EventObject,
}

#[derive(Deserialize)]
struct EventObject {
    id: Option<String>,
    #[serde(default)]
    amount: i64,
    #[serde(default)]
    amount_received: i64,
    #[serde(default)]
    currency: String,
    #[serde(default)]
    metadata: std::collections::HashMap<String, String>,
    #[serde(default)]
    last_payment_error: Option<LastPaymentError>,
    #[serde(default)]
    amount_refunded: i64,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    failure_reason: Option<String>,
    #[serde(default)]
    receipt_email: Option<String>,
    #[serde(default)]
    billing_details: Option<BillingDetails>,
    /// Expanded on request (`expand[]=latest_charge`); an id string otherwise.
    #[serde(default)]
    latest_charge: Option<Value>,
    /// Checkout Session: what the customer paid, in minor units.
    #[serde(default)]
    amount_total: Option<i64>,
    /// Checkout Session: `paid`, `unpaid` (a delayed method still running) or
    /// `no_payment_required`.
    #[serde(default)]
    payment_status: Option<String>,
    /// Checkout Session: the Stripe payment intent it created (an id, or expanded).
    #[serde(default)]
    payment_intent: Option<Value>,
    /// Checkout Session: the reference its creator passed (ours: the intent id).
    #[serde(default)]
    client_reference_id: Option<String>,
    /// Checkout Session: who paid.
    #[serde(default)]
    customer_details: Option<BillingDetails>,
}

#[derive(Deserialize)]
struct BillingDetails {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

impl EventObject {
    /// The payer from the billing details (of the charge, or of an expanded `latest_charge`),
    /// else the receipt e-mail.
    fn payer(&self) -> Option<String> {
        let expanded = self
            .latest_charge
            .as_ref()
            .and_then(|c| c.get("billing_details"))
            .and_then(|b| serde_json::from_value::<BillingDetails>(b.clone()).ok());
        let billing = self.billing_details.as_ref().or(expanded.as_ref());
        billing
            .and_then(|b| b.email.clone().or_else(|| b.name.clone()))
            .or_else(|| self.receipt_email.clone())
            .filter(|p| !p.is_empty())
    }

    /// The intent a Checkout Session or payment intent belongs to: `metadata.ipay_intent_id`,
    /// else (Checkout Sessions) `client_reference_id`.
    fn our_intent(&self) -> Option<&str> {
        self.metadata
            .get(METADATA_KEY)
            .or(self.client_reference_id.as_ref())
            .map(String::as_str)
    }

    /// What a completed (or asynchronously paid) Checkout Session says: paid when its
    /// `payment_status` says so, else nothing yet (a delayed method such as SEPA debit ends in
    /// `checkout.session.async_payment_succeeded` or `_failed`).
    fn checkout_outcome(self, kind: &str) -> Result<CallbackOutcome, CallbackError> {
        if kind == "checkout.session.async_payment_failed" {
            return Ok(CallbackOutcome::Failed {
                reason: "stripe checkout: the delayed payment failed".into(),
            });
        }
        match self.payment_status.as_deref() {
            Some("paid") | Some("no_payment_required") => {}
            _ => return Ok(CallbackOutcome::Ignored),
        }
        let amount = self.amount_total.unwrap_or(self.amount);
        let reference = match &self.payment_intent {
            Some(Value::String(id)) => Some(id.clone()),
            Some(v) => v.get("id").and_then(Value::as_str).map(str::to_owned),
            None => None,
        };
        let payer = self
            .customer_details
            .as_ref()
            .and_then(|b| b.email.clone().or_else(|| b.name.clone()))
            .filter(|p| !p.is_empty());
        Ok(CallbackOutcome::Paid {
            amount: money(amount, &self.currency)?,
            payer,
            channel_reference: reference.or(self.id),
        })
    }

    /// What a refund or charge event says about refunds.
    fn refund_report(self, kind: &str) -> Result<CallbackOutcome, CallbackError> {
        if kind == "charge.refunded" {
            return Ok(CallbackOutcome::Refund(RefundReport::Total {
                refunded: money(self.amount_refunded, &self.currency)?,
                psp_reference: self.id,
            }));
        }
        // Refunds made in the dashboard carry no refund id of ours: `charge.refunded` counts
        // them.
        let Some(ours) = self.metadata.get(REFUND_METADATA_KEY) else {
            return Ok(CallbackOutcome::Ignored);
        };
        let refund_id = RefundId::parse(ours).map_err(|_| {
            CallbackError::Malformed(format!("metadata.{REFUND_METADATA_KEY} is not a refund id"))
        })?;
        Ok(CallbackOutcome::Refund(RefundReport::Own {
            refund_id,
            state: refund_state(self.status.as_deref().unwrap_or(""), self.failure_reason),
            psp_reference: self.id,
        }))
    }
}

#[derive(Deserialize)]
struct LastPaymentError {
    message: Option<String>,
}

#[async_trait]
impl ChannelAdapter for StripeAdapter {
    fn name(&self) -> &'static str {
        NAME
    }

    fn supports_currency(&self, currency: Currency) -> bool {
        // Stripe's smallest unit equals ISO 4217's minor unit except for these, and three-
        // decimal currencies need amounts rounded to tens; none of them are offered.
        matches!(currency.exponent(), 0 | 2)
            && !matches!(currency.code(), "ISK" | "UGX" | "HUF" | "TWD")
    }

    fn allows_livemode(&self) -> bool {
        self.creds.live
    }

    async fn create_payment(
        &self,
        req: &ChannelPaymentRequest,
    ) -> Result<ChannelPayment, ChannelError> {
        let intent = req.intent_id.to_string();
        let amount = req.amount.value.to_string();
        let currency = req.amount.currency.code().to_ascii_lowercase();
        let description = format!("Payment {intent}");
        let form = crate::alipay::encode_form(&[
            ("amount", amount.as_str()),
            ("currency", currency.as_str()),
            ("automatic_payment_methods[enabled]", "true"),
            ("description", description.as_str()),
            ("metadata[ipay_intent_id]", intent.as_str()),
        ]);
        let authorization = format!("Bearer {}", self.creds.secret_key.expose());
        let answer = self
            .client
            .post(
                NAME,
                &self.url,
                &[
                    ("authorization", &authorization),
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("idempotency-key", &intent),
                ],
                form.into_bytes(),
            )
            .await?;
        if !(200..300).contains(&answer.status) {
            return Err(error_answer(&answer));
        }
        let pi: PaymentIntentAnswer = serde_json::from_slice(&answer.body)
            .map_err(|e| ChannelError::Unavailable(format!("stripe answer is malformed: {e}")))?;
        let qr_code = pi
            .next_action
            .as_ref()
            .and_then(next_action_payload)
            .or(pi.client_secret)
            .ok_or_else(|| {
                ChannelError::Unavailable("stripe answer has no client_secret".into())
            })?;
        Ok(ChannelPayment {
            qr_code,
            channel_reference: Some(pi.id),
        })
    }

    async fn refund(&self, req: &ChannelRefundRequest) -> Result<ChannelRefund, ChannelError> {
        let pi = req.channel_reference.as_deref().ok_or_else(|| {
            ChannelError::Rejected("no Stripe PaymentIntent id is known for this payment".into())
        })?;
        let intent = req.intent_id.to_string();
        let refund_id = req.refund_id.to_string();
        let amount = req.amount.value.to_string();
        let form = crate::alipay::encode_form(&[
            ("payment_intent", pi),
            ("amount", amount.as_str()),
            ("metadata[ipay_intent_id]", intent.as_str()),
            ("metadata[ipay_refund_id]", refund_id.as_str()),
        ]);
        let authorization = format!("Bearer {}", self.creds.secret_key.expose());
        let answer = self
            .client
            .post(
                NAME,
                &self.refunds_url,
                &[
                    ("authorization", &authorization),
                    ("content-type", "application/x-www-form-urlencoded"),
                    // Our refund id: a retried refund returns the first one, never a second.
                    ("idempotency-key", &refund_id),
                ],
                form.into_bytes(),
            )
            .await?;
        if !(200..300).contains(&answer.status) {
            return Err(match error_answer(&answer) {
                ChannelError::Rejected(why) => {
                    return Ok(ChannelRefund {
                        state: ChannelRefundState::Failed { reason: why },
                        psp_reference: None,
                    });
                }
                other => other,
            });
        }
        let refund: RefundObject = serde_json::from_slice(&answer.body)
            .map_err(|e| ChannelError::Unavailable(format!("stripe answer is malformed: {e}")))?;
        Ok(ChannelRefund {
            state: refund_state(&refund.status, refund.failure_reason),
            psp_reference: Some(refund.id),
        })
    }

    async fn refund_status(
        &self,
        req: &ChannelRefundRequest,
    ) -> Result<ChannelRefund, ChannelError> {
        let Some(pi) = req.channel_reference.as_deref() else {
            return Ok(ChannelRefund {
                state: ChannelRefundState::NotFound,
                psp_reference: None,
            });
        };
        let query = crate::alipay::encode_form(&[("payment_intent", pi), ("limit", "100")]);
        let authorization = format!("Bearer {}", self.creds.secret_key.expose());
        let answer = self
            .client
            .get(
                NAME,
                &format!("{}?{query}", self.refunds_url),
                &[("authorization", &authorization)],
            )
            .await?;
        if !(200..300).contains(&answer.status) {
            return Err(error_answer(&answer));
        }
        let list: RefundList = serde_json::from_slice(&answer.body)
            .map_err(|e| ChannelError::Unavailable(format!("stripe answer is malformed: {e}")))?;
        let ours = req.refund_id.to_string();
        Ok(
            match list
                .data
                .into_iter()
                .find(|r| r.metadata.get(REFUND_METADATA_KEY) == Some(&ours))
            {
                Some(r) => ChannelRefund {
                    state: refund_state(&r.status, r.failure_reason),
                    psp_reference: Some(r.id),
                },
                None => ChannelRefund {
                    state: ChannelRefundState::NotFound,
                    psp_reference: None,
                },
            },
        )
    }

    fn verify_callback(
        &self,
        cb: &InboundCallback,
        now: Timestamp,
    ) -> Result<CallbackNotice, CallbackError> {
        let body = &cb.body[..];
        let signature = cb
            .header(wire::HEADER_NAME)
            .ok_or_else(|| CallbackError::Malformed("missing Stripe-Signature header".into()))?;
        wire::verify(
            signature,
            body,
            self.creds.webhook_secret.expose(),
            now.ms().div_euclid(1000),
            wire::DEFAULT_TOLERANCE_SECS,
        )
        .map_err(|e| match e {
            wire::StripeSignatureError::MalformedHeader(_) => {
                CallbackError::Malformed(e.to_string())
            }
            wire::StripeSignatureError::TimestampOutsideTolerance { .. } => {
                CallbackError::Stale(e.to_string())
            }
            _ => CallbackError::SignatureMismatch(e.to_string()),
        })?;
        let event: Event<'_> = serde_json::from_slice(body)
            .map_err(|e| CallbackError::Malformed(format!("stripe event: {e}")))?;
        let object = event.data.object;
        let intent = object.our_intent().ok_or_else(|| {
            CallbackError::Malformed(format!(
                "event has no metadata.{METADATA_KEY} (nor, for a Checkout Session, client_reference_id)"
            ))
        })?;
        let intent = intent_id(METADATA_KEY, intent)?;
        let outcome = match event.kind.as_ref() {
            "payment_intent.succeeded" => {
                let value = if object.amount_received > 0 {
                    object.amount_received
                } else {
                    object.amount
                };
                CallbackOutcome::Paid {
                    amount: money(value, &object.currency)?,
                    payer: object.payer(),
                    channel_reference: object.id,
                }
            }
            "payment_intent.payment_failed" => CallbackOutcome::Failed {
                reason: object
                    .last_payment_error
                    .and_then(|e| e.message)
                    .unwrap_or_else(|| "stripe payment failed".into()),
            },
            "payment_intent.canceled" => CallbackOutcome::Failed {
                reason: "stripe payment intent canceled".into(),
            },
            kind @ ("charge.refunded" | "refund.created" | "refund.updated" | "refund.failed") => {
                object.refund_report(kind)?
            }
            kind @ ("checkout.session.completed"
            | "checkout.session.async_payment_succeeded"
            | "checkout.session.async_payment_failed") => object.checkout_outcome(kind)?,
            _ => CallbackOutcome::Ignored,
        };
        Ok(CallbackNotice {
            notification_id: event.id.into_owned(),
            intent_id: intent,
            outcome,
        })
    }
}

/// The intent a Stripe event names (`data.object.metadata.ipay_intent_id`, else a Checkout
/// Session's `client_reference_id`), read without verifying.
pub fn peek_intent(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Peek {
        data: PeekData,
    }
    #[derive(Deserialize)]
    struct PeekData {
        object: PeekObject,
    }
    #[derive(Deserialize)]
    struct PeekObject {
        #[serde(default)]
        metadata: std::collections::HashMap<String, String>,
        #[serde(default)]
        client_reference_id: Option<String>,
    }
    let mut peek: Peek = serde_json::from_slice(body).ok()?;
    let object = &mut peek.data.object;
    object
        .metadata
        .remove(METADATA_KEY)
        .or(object.client_reference_id.take())
}

/// What each event type becomes (signature checks are in `tests.rs`).
#[cfg(test)]
mod event_tests {
    use super::*;
    use crate::http::HttpTimeouts;
    use serde_json::json;

    const WHSEC: &str = "whsec_ipay_event_tests_0123456789";
    const INTENT: &str = "pi_01JWQ8Z6Q0V3R2K9M5N7P4T1XB";

    fn deliver(body: &Value) -> Result<CallbackNotice, CallbackError> {
        let creds = StripeCredentials::from_json(
            &json!({"secret_key": "sk_test_0123456789abcdef", "webhook_secret": WHSEC}),
        )
        .unwrap();
        let client = HttpClient::new(HttpTimeouts::default()).unwrap();
        let adapter = StripeAdapter::new(creds, "http://127.0.0.1:9", client);
        let body = serde_json::to_vec(body).unwrap();
        let sig = wire::sign(&body, WHSEC, 1_700_000_000);
        let cb = InboundCallback {
            headers: vec![("stripe-signature".into(), sig)],
            body: body.into(),
            ..InboundCallback::default()
        };
        adapter.verify_callback(&cb, Timestamp(1_700_000_000_000))
    }

    /// A Checkout Session event shaped like Stripe's (`data.object` is the session).
    fn checkout(kind: &str, payment_status: &str) -> Value {
        json!({"id": "evt_1Checkout", "object": "event", "type": kind, "data": {"object": {
            "id": "cs_test_a1B2c3", "object": "checkout.session", "mode": "payment",
            "amount_subtotal": 2599, "amount_total": 2599, "currency": "eur",
            "client_reference_id": INTENT, "metadata": {},
            "customer_details": {"email": "jan@example.nl", "name": "Jan de Vries"},
            "payment_intent": "pi_3StripeIntent", "payment_status": payment_status}}})
    }

    #[test]
    fn a_completed_checkout_session_pays_the_intent_it_references() {
        let n = deliver(&checkout("checkout.session.completed", "paid")).unwrap();
        assert_eq!(n.intent_id.to_string(), INTENT);
        let CallbackOutcome::Paid {
            amount,
            channel_reference,
            payer,
        } = n.outcome
        else {
            panic!("not paid: {:?}", n.outcome);
        };
        assert_eq!((amount.value, amount.currency.code()), (2599, "EUR"));
        assert_eq!(channel_reference.as_deref(), Some("pi_3StripeIntent"));
        assert_eq!(payer.as_deref(), Some("jan@example.nl"));
        let body = serde_json::to_vec(&checkout("checkout.session.completed", "paid")).unwrap();
        assert_eq!(peek_intent(&body).as_deref(), Some(INTENT));
    }

    #[test]
    fn metadata_names_the_intent_before_the_client_reference() {
        let mut body = checkout("checkout.session.completed", "paid");
        body["data"]["object"]["client_reference_id"] = json!("order-77");
        body["data"]["object"]["metadata"] = json!({ METADATA_KEY: INTENT });
        assert_eq!(deliver(&body).unwrap().intent_id.to_string(), INTENT);
    }

    #[test]
    fn delayed_checkout_payments_wait_for_their_async_outcome() {
        let unpaid = deliver(&checkout("checkout.session.completed", "unpaid")).unwrap();
        assert!(matches!(unpaid.outcome, CallbackOutcome::Ignored));
        let later = deliver(&checkout(
            "checkout.session.async_payment_succeeded",
            "paid",
        ));
        assert!(matches!(
            later.unwrap().outcome,
            CallbackOutcome::Paid { .. }
        ));
        let failed = deliver(&checkout("checkout.session.async_payment_failed", "unpaid"));
        assert!(matches!(
            failed.unwrap().outcome,
            CallbackOutcome::Failed { .. }
        ));
    }
}
