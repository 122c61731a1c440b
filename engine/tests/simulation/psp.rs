//! The simulated payment channel (registered as [`CHANNEL`]): a [`ChannelFactory`] and adapter whose every answer
//! is chosen by the seed (success, refusal, "unavailable", or no answer at all so the engine's
//! call timeout fires on tokio's paused clock), and whose callbacks are a plain
//! `key=value&…` body the simulation writes, so duplicate and conflicting notifications can be
//! sent at will. Signatures are not simulated: the channels' real verification is covered by
//! the adapters' vectors and the property tests.

use ipay_engine::channel::{
    CallbackError, CallbackNotice, CallbackOutcome, ChannelAdapter, ChannelError, ChannelFactory,
    ChannelPayment, ChannelPaymentRequest, ChannelRefund, ChannelRefundRequest, ChannelRefundState,
    InboundCallback,
};
use ipay_engine::clock::Timestamp;
use ipay_engine::ids::PaymentIntentId;
use ipay_engine::money::{Currency, Money};
use parking_lot::Mutex;
use rand::Rng;
use rand::rngs::StdRng;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The channel's name. Manifests accept only the channels the product knows, so the simulated
/// PSP stands in under one of their names; nothing of that channel's real adapter is used.
pub const CHANNEL: &str = "promptpay";

/// How the simulated PSP answers one `create_payment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Ok,
    Unavailable,
    Hang,
    Rejected,
}

/// The seed's choices for the PSP, and what it saw.
pub struct PspPlan {
    rng: Mutex<StdRng>,
    /// Per mille of calls answered "unavailable", hanging, refused.
    unavailable: u32,
    hang: u32,
    rejected: u32,
    /// Calls made, and calls left hanging (the engine's timeout ended them).
    pub calls: AtomicU64,
    pub hangs: AtomicU64,
}

impl PspPlan {
    pub fn new(rng: StdRng, unavailable: u32, hang: u32, rejected: u32) -> Arc<Self> {
        Arc::new(PspPlan {
            rng: Mutex::new(rng),
            unavailable,
            hang,
            rejected,
            calls: AtomicU64::new(0),
            hangs: AtomicU64::new(0),
        })
    }

    fn next(&self) -> Answer {
        let roll = self.rng.lock().random_range(0..1000u32);
        let (u, h, r) = (self.unavailable, self.hang, self.rejected);
        if roll < u {
            Answer::Unavailable
        } else if roll < u + h {
            Answer::Hang
        } else if roll < u + h + r {
            Answer::Rejected
        } else {
            Answer::Ok
        }
    }
}

/// Builds [`SimAdapter`]s for the merchant's configuration of [`CHANNEL`].
pub struct SimFactory(pub Arc<PspPlan>);

impl ChannelFactory for SimFactory {
    fn channels(&self) -> &'static [&'static str] {
        &[CHANNEL]
    }

    fn validate(&self, _channel: &str, _credentials: &serde_json::Value) -> Result<(), String> {
        Ok(())
    }

    fn build(
        &self,
        _channel: &str,
        _credentials: &serde_json::Value,
        _notify_url: &str,
    ) -> Result<Arc<dyn ChannelAdapter>, String> {
        Ok(Arc::new(SimAdapter(self.0.clone())))
    }

    fn peek_intent(&self, _channel: &str, cb: &InboundCallback) -> Option<String> {
        field(&cb.body, "intent").map(str::to_string)
    }
}

/// The adapter: answers as the plan says, verifies the simulation's callbacks.
pub struct SimAdapter(Arc<PspPlan>);

#[async_trait::async_trait]
impl ChannelAdapter for SimAdapter {
    fn name(&self) -> &'static str {
        CHANNEL
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
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        match self.0.next() {
            Answer::Ok => Ok(ChannelPayment {
                qr_code: format!("sim://{}", req.intent_id),
                channel_reference: Some(format!("sim-{}", req.intent_id)),
            }),
            Answer::Unavailable => Err(ChannelError::Unavailable("simulated 503".into())),
            Answer::Rejected => Err(ChannelError::Rejected("simulated refusal".into())),
            Answer::Hang => {
                self.0.hangs.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<()>().await;
                Err(ChannelError::Unavailable("unreachable".into()))
            }
        }
    }

    /// Refunds draw from the same seeded plan as payments: accepted and settled at once,
    /// unreachable (the refund stays pending for the poller), refused (it fails and gives its
    /// amount back) or hanging until the engine's time budget cuts it.
    async fn refund(&self, req: &ChannelRefundRequest) -> Result<ChannelRefund, ChannelError> {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        match self.0.next() {
            Answer::Ok => Ok(ChannelRefund {
                state: ChannelRefundState::Succeeded,
                psp_reference: Some(format!("sim-{}", req.refund_id)),
            }),
            Answer::Unavailable => Err(ChannelError::Unavailable("simulated 503".into())),
            Answer::Rejected => Ok(ChannelRefund {
                state: ChannelRefundState::Failed {
                    reason: "simulated refusal".into(),
                },
                psp_reference: None,
            }),
            Answer::Hang => {
                self.0.hangs.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<()>().await;
                Err(ChannelError::Unavailable("unreachable".into()))
            }
        }
    }

    fn verify_callback(
        &self,
        cb: &InboundCallback,
        _now: Timestamp,
    ) -> Result<CallbackNotice, CallbackError> {
        let get = |k: &str| {
            field(&cb.body, k).ok_or_else(|| CallbackError::Malformed(format!("no `{k}`")))
        };
        let intent_id = PaymentIntentId::parse(get("intent")?)
            .map_err(|_| CallbackError::Malformed("bad intent id".into()))?;
        let outcome = match get("outcome")? {
            "paid" => CallbackOutcome::Paid {
                amount: get("amount")?
                    .parse()
                    .ok()
                    .and_then(|v| Money::from_parts(v, get("currency").ok()?).ok())
                    .ok_or_else(|| CallbackError::Malformed("bad amount".into()))?,
                channel_reference: Some(format!("sim-{intent_id}")),
                payer: None,
            },
            "failed" => CallbackOutcome::Failed {
                reason: "simulated decline".into(),
            },
            _ => CallbackOutcome::Ignored,
        };
        Ok(CallbackNotice {
            notification_id: get("nid")?.to_string(),
            intent_id,
            outcome,
        })
    }
}

/// The value of `key` in a `k=v&k=v` body.
fn field<'a>(body: &'a [u8], key: &str) -> Option<&'a str> {
    std::str::from_utf8(body)
        .ok()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// A callback body the simulated PSP sends.
pub fn callback(
    intent: &str,
    nid: &str,
    outcome: &str,
    amount: i64,
    currency: &str,
) -> InboundCallback {
    let body =
        format!("intent={intent}&nid={nid}&outcome={outcome}&amount={amount}&currency={currency}");
    InboundCallback {
        method: "POST".into(),
        path: format!("/callbacks/{CHANNEL}"),
        query: None,
        headers: vec![(
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        )],
        body: body.into(),
    }
}
