//! PromptPay as a `ChannelAdapter`: the dynamic EMVCo QR is built locally for the merchant's
//! PromptPay id and the amount (no PSP call), and settlement is confirmed by the acquiring
//! bank's callback, in the format this module defines (there is no national standard for it).
//!
//! # Bank callback
//!
//! `POST {notify_url}`, `Content-Type: application/json`, header
//! `X-Bank-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(bank_callback_secret, "<t>.<body>")>`
//! (the same construction as Stripe's, 300 s tolerance), body:
//!
//! ```json
//! {"id":"bnk_…","reference":"pi_…","status":"paid","amount":10050,"currency":"THB",
//!  "promptpay_id":"0066812345678","bank_reference":"…","paid_at":"2026-05-27T10:00:00Z"}
//! ```
//!
//! `id` is unique per notification; `reference` is our intent id (the bank learns it when it
//! matches the transfer to the QR it was registered for); `status` is `paid`, `failed` or
//! `expired`; `amount` is in satang. `promptpay_id`, `bank_reference` and `paid_at` are
//! optional; when `promptpay_id` is given it must be the merchant's (wire form).

use async_trait::async_trait;
use ipay_engine::channel::{
    CallbackError, CallbackNotice, CallbackOutcome, ChannelAdapter, ChannelError, ChannelPayment,
    ChannelPaymentRequest, InboundCallback,
};
use ipay_engine::clock::Timestamp;
use ipay_engine::model::Secret;
use ipay_engine::money::Currency;
use serde::Deserialize;
use serde_json::Value;

use super::wire::{self, ParsedRecipient, Recipient};
use crate::common::{Fields, intent_id, money};

/// Channel name.
pub const NAME: &str = "promptpay";
/// Header carrying the bank callback signature.
pub const SIGNATURE_HEADER: &str = "x-bank-signature";
/// Accepted distance between the signed timestamp and now.
pub const TOLERANCE_SECS: i64 = 300;
/// Shortest accepted `bank_callback_secret`.
pub const MIN_SECRET_LEN: usize = 32;
const FIELDS: &[&str] = &["promptpay_id", "bank_callback_secret"];

/// A merchant's PromptPay credentials: `promptpay_id` (a mobile number `0812345678`, a
/// 13-digit national or tax id, or a 15-digit e-wallet id) and `bank_callback_secret` (the
/// HMAC key the bank signs callbacks with, at least 32 bytes).
#[derive(Clone, Debug)]
pub struct PromptPayCredentials {
    promptpay_id: String,
    /// The id as the QR carries it (`0066…` for mobiles).
    wire_id: String,
    secret: Secret,
}

fn recipient(id: &str) -> Recipient<'_> {
    let digits = id.bytes().filter(u8::is_ascii_digit).count();
    let first = id.bytes().find(u8::is_ascii_digit);
    match digits {
        // Thai national and tax ids never start with 0; `0066…` is a mobile in wire form.
        13 if first != Some(b'0') => Recipient::NationalId(id),
        15 => Recipient::EWallet(id),
        _ => Recipient::Mobile(id),
    }
}

impl PromptPayCredentials {
    /// Parses and checks the credential object.
    pub fn from_json(value: &Value) -> Result<Self, String> {
        let f = Fields::new(NAME, value, FIELDS)?;
        let promptpay_id = f.req("promptpay_id")?;
        let sample = wire::build(&recipient(promptpay_id), Some(100))
            .map_err(|e| f.bad("promptpay_id", format_args!("is invalid: {e}")))?;
        let wire_id = match wire::parse(&sample).map(|p| p.recipient) {
            Ok(ParsedRecipient::Mobile(id))
            | Ok(ParsedRecipient::NationalId(id))
            | Ok(ParsedRecipient::EWallet(id)) => id,
            _ => return Err(f.bad("promptpay_id", "is invalid")),
        };
        let secret = f.req("bank_callback_secret")?;
        if secret.len() < MIN_SECRET_LEN {
            return Err(f.bad(
                "bank_callback_secret",
                format_args!("must be at least {MIN_SECRET_LEN} bytes"),
            ));
        }
        Ok(PromptPayCredentials {
            promptpay_id: promptpay_id.to_owned(),
            wire_id,
            secret: Secret::new(secret.to_owned()),
        })
    }
}

/// The PromptPay adapter for one merchant.
pub struct PromptPayAdapter {
    creds: PromptPayCredentials,
}

impl PromptPayAdapter {
    /// An adapter for these credentials.
    pub fn new(creds: PromptPayCredentials) -> Self {
        PromptPayAdapter { creds }
    }
}

/// The bank callback body (see the module docs).
#[derive(Debug, Deserialize)]
pub struct BankCallback<'a> {
    /// Notification id.
    #[serde(borrow)]
    pub id: std::borrow::Cow<'a, str>,
    /// Our intent id.
    #[serde(borrow)]
    pub reference: std::borrow::Cow<'a, str>,
    /// `paid`, `failed` or `expired`.
    #[serde(borrow)]
    pub status: std::borrow::Cow<'a, str>,
    /// Amount in satang.
    pub amount: i64,
    /// Currency (`THB`).
    #[serde(borrow)]
    pub currency: std::borrow::Cow<'a, str>,
    /// Receiving PromptPay id, wire form.
    #[serde(default, borrow)]
    pub promptpay_id: Option<std::borrow::Cow<'a, str>>,
    /// The bank's transfer reference.
    #[serde(default)]
    pub bank_reference: Option<String>,
}

/// Signs a bank callback body: the `X-Bank-Signature` value at Unix time `t`. For the PSP
/// simulator and tests.
pub fn sign_bank_callback(body: &[u8], secret: &str, t: i64) -> String {
    crate::stripe::sign(body, secret, t)
}

#[async_trait]
impl ChannelAdapter for PromptPayAdapter {
    fn name(&self) -> &'static str {
        NAME
    }

    fn supports_currency(&self, currency: Currency) -> bool {
        currency.code() == "THB"
    }

    fn allows_livemode(&self) -> bool {
        true
    }

    /// PromptPay is a push transfer from the payer's bank: no acquirer can pull it back, so the
    /// merchant returns the money by transfer and confirms the refund.
    fn refunds_manually(&self) -> bool {
        true
    }

    async fn create_payment(
        &self,
        req: &ChannelPaymentRequest,
    ) -> Result<ChannelPayment, ChannelError> {
        if req.amount.currency.code() != "THB" {
            return Err(ChannelError::Rejected(format!(
                "promptpay takes THB only, got {}",
                req.amount.currency
            )));
        }
        let satang = u64::try_from(req.amount.value)
            .map_err(|_| ChannelError::Rejected("amount must be positive".into()))?;
        let qr_code = wire::build(&recipient(&self.creds.promptpay_id), Some(satang))
            .map_err(|e| ChannelError::Rejected(format!("promptpay: {e}")))?;
        Ok(ChannelPayment {
            qr_code,
            channel_reference: None,
        })
    }

    fn verify_callback(
        &self,
        cb: &InboundCallback,
        now: Timestamp,
    ) -> Result<CallbackNotice, CallbackError> {
        let body = &cb.body[..];
        let signature = cb
            .header(SIGNATURE_HEADER)
            .ok_or_else(|| CallbackError::Malformed("missing X-Bank-Signature header".into()))?;
        crate::stripe::verify(
            signature,
            body,
            self.creds.secret.expose(),
            now.ms().div_euclid(1000),
            TOLERANCE_SECS,
        )
        .map_err(|e| {
            use crate::stripe::StripeSignatureError as E;
            let text = e
                .to_string()
                .replace("Stripe-Signature", "X-Bank-Signature");
            match e {
                E::MalformedHeader(_) => CallbackError::Malformed(text),
                E::TimestampOutsideTolerance { .. } => CallbackError::Stale(text),
                _ => CallbackError::SignatureMismatch(text),
            }
        })?;
        let cb: BankCallback<'_> = serde_json::from_slice(body)
            .map_err(|e| CallbackError::Malformed(format!("bank callback: {e}")))?;
        if cb
            .promptpay_id
            .as_deref()
            .is_some_and(|id| id != self.creds.wire_id)
        {
            return Err(CallbackError::Malformed(
                "`promptpay_id` is not this merchant's".into(),
            ));
        }
        let intent = intent_id("reference", &cb.reference)?;
        let outcome = match cb.status.as_ref() {
            "paid" => CallbackOutcome::Paid {
                amount: money(cb.amount, &cb.currency)?,
                channel_reference: cb.bank_reference,
                payer: None,
            },
            "failed" | "expired" => CallbackOutcome::Failed {
                reason: format!("promptpay transfer {}", cb.status),
            },
            _ => CallbackOutcome::Ignored,
        };
        Ok(CallbackNotice {
            notification_id: cb.id.into_owned(),
            intent_id: intent,
            outcome,
        })
    }
}

/// The intent a bank callback names (`reference`), read without verifying.
pub fn peek_intent(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Peek {
        reference: String,
    }
    serde_json::from_slice::<Peek>(body)
        .ok()
        .map(|p| p.reference)
}
