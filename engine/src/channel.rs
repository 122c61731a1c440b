//! The channel port: what the engine needs from a payment channel. Adapters for real channels
//! live in the `ipay-adapters` crate; the built-in [`SandboxChannel`] lets test-mode merchants
//! run the whole flow without one.

use crate::clock::Timestamp;
use crate::ids::{PaymentIntentId, RefundId};
use crate::model::merchant::Secret;
use crate::money::{Currency, Money};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `[channels]` in `ipay.toml`: where each channel's API lives (the real PSP in production, the
/// PSP simulator in tests), the master key that encrypts stored credentials, and the limits of
/// the circuit breakers, retries and callback rate limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelsConfig {
    /// Base URL per channel name (`alipay = "https://…"`); a channel without one uses its
    /// production endpoint.
    pub endpoints: BTreeMap<String, String>,
    /// Base64 of the 32-byte AES-256-GCM key that encrypts stored channel credentials. Set it
    /// through `IPAY_CHANNELS__MASTER_KEY`. When absent in embedded mode, a key is generated
    /// once into `<data_dir>/channels.key` (mode 0600).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_key: Option<Secret>,
    /// Delays before each retry of a failed PSP call, ms (at most 5 retries, each ≤ 60 s).
    pub retry_delays_ms: Vec<u64>,
    /// Consecutive failed PSP calls that open a channel's circuit breaker.
    pub breaker_failure_threshold: u32,
    /// How long an open breaker fails fast before letting one probe call through, ms.
    pub breaker_cooldown_ms: u64,
    /// Longest one PSP call may take before it counts as a failure, ms.
    pub call_timeout_ms: u64,
    /// `Retry-After` (and `retry_after`) of a `channel_unavailable` answer, seconds.
    pub retry_after_secs: u32,
    /// Callbacks accepted per second from one provider (channel), all merchants together.
    pub callback_rate_per_provider: u32,
    /// Callbacks accepted per second for one merchant, all channels together.
    pub callback_rate_per_merchant: u32,
    /// Largest `credentials` object accepted by `POST /v1/channels`, bytes of JSON.
    pub max_credentials_bytes: usize,
    /// Cluster mode: how long a node trusts an adapter built from stored credentials before
    /// reading them again (another node may have replaced them), ms.
    pub adapter_cache_ttl_ms: u64,
    /// How often the refund poller looks for pending refunds that are due, ms.
    pub refund_poll_interval_ms: u64,
    /// Waits between status queries of one pending refund, ms; the last repeats. The first
    /// query comes [`crate::refunds::FIRST_POLL_DELAY_MS`] after the refund was created.
    pub refund_poll_delays_ms: Vec<u64>,
}

impl Default for ChannelsConfig {
    fn default() -> Self {
        ChannelsConfig {
            endpoints: BTreeMap::new(),
            master_key: None,
            retry_delays_ms: vec![1_000, 5_000],
            breaker_failure_threshold: 5,
            breaker_cooldown_ms: 30_000,
            call_timeout_ms: 10_000,
            retry_after_secs: 30,
            callback_rate_per_provider: 2_000,
            callback_rate_per_merchant: 500,
            max_credentials_bytes: 16 * 1024,
            adapter_cache_ttl_ms: 30_000,
            refund_poll_interval_ms: 5_000,
            refund_poll_delays_ms: vec![60_000, 300_000, 1_800_000, 3_600_000],
        }
    }
}

/// What the engine asks a channel for when an intent is created.
#[derive(Debug, Clone)]
pub struct ChannelPaymentRequest {
    pub intent_id: PaymentIntentId,
    pub amount: Money,
    pub expires_at: Timestamp,
    pub livemode: bool,
}

/// The channel's answer: a payload to show as a QR code, and its own reference.
#[derive(Debug, Clone)]
pub struct ChannelPayment {
    pub qr_code: String,
    pub channel_reference: Option<String>,
}

/// What the engine asks a channel to refund (and later asks the status of).
#[derive(Debug, Clone)]
pub struct ChannelRefundRequest {
    /// Our refund id: the PSP's idempotency key for this refund (Alipay `out_request_no`,
    /// WeChat Pay `out_refund_no`, Stripe `Idempotency-Key`, …), so a retried or re-sent
    /// refund is never paid twice.
    pub refund_id: RefundId,
    /// The refunded intent (the PSP's merchant order number).
    pub intent_id: PaymentIntentId,
    /// The PSP's own reference of the payment, when a callback reported it.
    pub channel_reference: Option<String>,
    /// How much to give back.
    pub amount: Money,
    /// The whole payment (WeChat Pay wants it with every refund).
    pub captured: Money,
    /// The merchant's reason, if any.
    pub reason: Option<String>,
    pub livemode: bool,
}

/// Where a refund stands at the PSP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelRefundState {
    /// Accepted; the money has not moved yet (a callback or a later query says when).
    Pending,
    /// Money returned to the payer.
    Succeeded,
    /// The PSP will not (or could not) return the money.
    Failed { reason: String },
    /// A status query: the PSP knows no refund under this id (the request never reached it).
    NotFound,
}

/// A PSP's answer about one refund.
#[derive(Debug, Clone)]
pub struct ChannelRefund {
    pub state: ChannelRefundState,
    /// The PSP's own id for the refund, when it gave one.
    pub psp_reference: Option<String>,
}

/// What a verified callback says about refunds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundReport {
    /// One of our refunds (named by our refund id) reached this state.
    Own {
        refund_id: RefundId,
        state: ChannelRefundState,
        psp_reference: Option<String>,
    },
    /// The PSP's running total refunded on the payment, whoever started the refunds (refunds
    /// made in the PSP's dashboard included): the part not accounted for by our own refunds is
    /// recorded as a PSP-initiated refund.
    Total {
        refunded: Money,
        psp_reference: Option<String>,
    },
}

/// Channel failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChannelError {
    /// Down, timing out or answering 5xx: worth retrying later or elsewhere.
    #[error("channel unavailable: {0}")]
    Unavailable(String),
    /// The channel refused this request; retrying will not help.
    #[error("channel rejected the request: {0}")]
    Rejected(String),
}

/// A PSP callback as the gateway received it: plain values, no HTTP crate types, so the engine
/// and the adapters see the same request whatever server framework carried it.
#[derive(Debug, Clone, Default)]
pub struct InboundCallback {
    /// The request method as received (`"POST"`).
    pub method: String,
    /// The request path as received (`/callbacks/wechat/pi_…`), without the query string. Some
    /// channels route by it: WeChat Pay names the intent only in its notify URL's last segment.
    pub path: String,
    /// The raw query string, without the leading `?`.
    pub query: Option<String>,
    /// Headers in the order received, names lower-cased; values that are not UTF-8 are dropped.
    pub headers: Vec<(String, String)>,
    /// The body, verbatim: signatures cover these exact bytes.
    pub body: bytes::Bytes,
}

impl InboundCallback {
    /// First header with this name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What a verified PSP callback says happened.
#[derive(Debug, Clone)]
pub struct CallbackNotice {
    /// The PSP's own id for this notification (Alipay `notify_id`, WeChat `id`, Stripe event
    /// `id`, …): a notification seen before is acknowledged again but not re-applied.
    pub notification_id: String,
    /// The intent it is about (the merchant order number we gave the PSP).
    pub intent_id: PaymentIntentId,
    pub outcome: CallbackOutcome,
}

/// The payment outcome a callback reports.
#[derive(Debug, Clone)]
pub enum CallbackOutcome {
    /// Paid: the amount and currency the PSP says it collected (checked against the intent).
    Paid {
        amount: Money,
        channel_reference: Option<String>,
        /// Who paid, as the channel names them (Alipay `buyer_id`, WeChat Pay `openid`, a
        /// Stripe billing name or e-mail), when it says.
        payer: Option<String>,
    },
    /// The payment failed or was closed at the PSP.
    Failed { reason: String },
    /// A notification about refunds of the (succeeded) payment.
    Refund(RefundReport),
    /// A notification that changes nothing (e.g. still waiting for the payer).
    Ignored,
}

/// Why a callback was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallbackError {
    /// The signature does not verify (400 `signature_mismatch`).
    #[error("signature mismatch: {0}")]
    SignatureMismatch(String),
    /// The signed timestamp is outside the channel's tolerance (400 `timestamp_stale`).
    #[error("stale timestamp: {0}")]
    Stale(String),
    /// The body or headers are not what the channel sends (400 `parameter_invalid`).
    #[error("malformed callback: {0}")]
    Malformed(String),
}

/// The answer a PSP expects after a callback it sent was accepted (Alipay: `success`;
/// WeChat: `{"code":"SUCCESS"}`; …).
#[derive(Debug, Clone)]
pub struct CallbackAck {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// A payment channel as the engine sees it.
#[async_trait::async_trait]
pub trait ChannelAdapter: Send + Sync + 'static {
    /// The channel's name as merchants write it (`alipay`, `sandbox`, …).
    fn name(&self) -> &'static str;
    /// Whether the channel can collect this currency.
    fn supports_currency(&self, currency: Currency) -> bool;
    /// Whether live-mode (real money) intents may use it.
    fn allows_livemode(&self) -> bool;
    /// Opens a payment with the channel.
    async fn create_payment(
        &self,
        req: &ChannelPaymentRequest,
    ) -> Result<ChannelPayment, ChannelError>;

    /// Verifies a callback the channel sent (path, headers and body, as received) and says
    /// what it reports. `now` is for timestamp tolerance. Channels without callbacks refuse all.
    fn verify_callback(
        &self,
        _cb: &InboundCallback,
        _now: Timestamp,
    ) -> Result<CallbackNotice, CallbackError> {
        Err(CallbackError::Malformed(format!(
            "channel `{}` takes no callbacks",
            self.name()
        )))
    }

    /// Asks the PSP to refund part of a payment. The default: the channel has no refund API.
    async fn refund(&self, _req: &ChannelRefundRequest) -> Result<ChannelRefund, ChannelError> {
        Err(ChannelError::Rejected(format!(
            "channel `{}` has no refund API",
            self.name()
        )))
    }

    /// Asks the PSP where a refund stands (the poller's question for pending refunds).
    async fn refund_status(
        &self,
        req: &ChannelRefundRequest,
    ) -> Result<ChannelRefund, ChannelError> {
        self.refund(req).await
    }

    /// Whether refunds on this channel are made by hand by the merchant (no PSP refund API,
    /// e.g. PromptPay): the refund stays `pending` until the merchant confirms it.
    fn refunds_manually(&self) -> bool {
        false
    }

    /// What to answer the PSP once its callback was accepted (or recognised as a duplicate).
    fn callback_ack(&self) -> CallbackAck {
        CallbackAck {
            status: 200,
            content_type: "application/json",
            body: "{\"received\":true}".into(),
        }
    }
}

/// Builds channel adapters from a merchant's stored credentials (implemented in the
/// `ipay-adapters` crate; the engine stores the credentials encrypted and asks the factory for
/// an adapter when it needs one).
pub trait ChannelFactory: Send + Sync + 'static {
    /// The channels this factory knows (`alipay`, `wechat`, `promptpay`, `stripe`,
    /// `multisafepay`).
    fn channels(&self) -> &'static [&'static str];

    /// Checks credentials before they are stored (PEMs parse, key sizes, 32-byte APIv3 key,
    /// …). The message names the offending field but never echoes a secret.
    fn validate(&self, channel: &str, credentials: &serde_json::Value) -> Result<(), String>;

    /// An adapter using these (already validated) credentials; `notify_url` is where the PSP
    /// should send callbacks.
    fn build(
        &self,
        channel: &str,
        credentials: &serde_json::Value,
        notify_url: &str,
    ) -> Result<std::sync::Arc<dyn ChannelAdapter>, String>;

    /// The intent a callback claims to be about, read without verifying anything (so the
    /// engine can find the merchant whose credentials verify it). `None` if it names none.
    fn peek_intent(&self, channel: &str, cb: &InboundCallback) -> Option<String>;
}

/// The built-in test channel: any currency, test mode only, settled through
/// `POST /v1/sandbox/payment-intents/{id}/succeed|fail`.
#[derive(Debug, Default)]
pub struct SandboxChannel;

#[async_trait::async_trait]
impl ChannelAdapter for SandboxChannel {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    fn supports_currency(&self, _currency: Currency) -> bool {
        true
    }

    fn allows_livemode(&self) -> bool {
        false
    }

    async fn create_payment(
        &self,
        req: &ChannelPaymentRequest,
    ) -> Result<ChannelPayment, ChannelError> {
        let qr_code = format!(
            "ipay+sandbox://pay?intent={}&amount={}&currency={}",
            req.intent_id, req.amount.value, req.amount.currency
        );
        Ok(ChannelPayment {
            qr_code,
            channel_reference: Some(format!(
                "sbx_{}",
                req.intent_id.to_string().trim_start_matches("pi_")
            )),
        })
    }

    async fn refund(&self, req: &ChannelRefundRequest) -> Result<ChannelRefund, ChannelError> {
        // Test money: the sandbox returns it at once.
        Ok(ChannelRefund {
            state: ChannelRefundState::Succeeded,
            psp_reference: Some(format!(
                "sbx_{}",
                req.refund_id.to_string().trim_start_matches("re_")
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_headers_are_found_whatever_their_case_first_one_wins() {
        let cb = InboundCallback {
            headers: vec![
                ("stripe-signature".into(), "t=1,v1=aa".into()),
                ("stripe-signature".into(), "t=2,v1=bb".into()),
            ],
            ..InboundCallback::default()
        };
        assert_eq!(cb.header("Stripe-Signature"), Some("t=1,v1=aa"));
        assert_eq!(cb.header("auth"), None);
    }
}
