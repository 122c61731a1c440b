//! The channel port: what the engine needs from a payment channel. Adapters for real channels
//! live in the `ipay-adapters` crate; the built-in [`SandboxChannel`] lets test-mode merchants
//! run the whole flow without one.

use crate::clock::Timestamp;
use crate::ids::PaymentIntentId;
use crate::money::{Currency, Money};

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
}
