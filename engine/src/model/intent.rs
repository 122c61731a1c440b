//! Payment intents and their state machine: the one place where an intent changes state.
//!
//! ```text
//! pending ──succeed──▶ succeeded ──refund (partial, repeatable)──▶ succeeded
//!    ├────fail──────▶ failed
//!    ├────expire────▶ expired
//!    └────cancel────▶ cancelled
//! ```
//! Every other move is [`EngineError::InvalidStateTransition`] (HTTP 409). The table is also
//! written out in `docs/state-machines.md`.

use crate::clock::Timestamp;
use crate::error::{EngineError, EngineResult};
use crate::ids::{MerchantId, PaymentIntentId, RefundId, ServiceId};
use crate::model::event::Event;
use crate::model::refund::{self, PendingRefund, Refund, RefundMode, RefundOutcome};
use crate::money::Money;
use crate::settlement::IntentSettlement;
use serde::{Deserialize, Serialize};

/// Where an intent is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IntentStatus {
    Pending,
    Succeeded,
    Failed,
    Expired,
    Cancelled,
}

impl IntentStatus {
    /// All states, for metrics and docs.
    pub const ALL: [IntentStatus; 5] = [
        IntentStatus::Pending,
        IntentStatus::Succeeded,
        IntentStatus::Failed,
        IntentStatus::Expired,
        IntentStatus::Cancelled,
    ];

    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            IntentStatus::Pending => "pending",
            IntentStatus::Succeeded => "succeeded",
            IntentStatus::Failed => "failed",
            IntentStatus::Expired => "expired",
            IntentStatus::Cancelled => "cancelled",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<IntentStatus> {
        IntentStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Compact code for storage indexes.
    pub fn to_u8(self) -> u8 {
        self as u8
    }

    /// Inverse of [`IntentStatus::to_u8`].
    pub fn from_u8(v: u8) -> Option<IntentStatus> {
        IntentStatus::ALL.get(v as usize).copied()
    }
}

/// What can be asked of an intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntentAction {
    Succeed,
    Fail,
    Expire,
    Cancel,
    Refund,
}

impl IntentAction {
    fn verb(&self) -> &'static str {
        match self {
            IntentAction::Succeed => "succeed",
            IntentAction::Fail => "fail",
            IntentAction::Expire => "expire",
            IntentAction::Cancel => "cancel",
            IntentAction::Refund => "refund",
        }
    }
}

/// The transition table. The only function that decides whether a move is legal.
pub fn next_status(from: IntentStatus, action: IntentAction) -> EngineResult<IntentStatus> {
    use IntentAction as A;
    use IntentStatus as S;
    match (from, action) {
        (S::Pending, A::Succeed) => Ok(S::Succeeded),
        (S::Pending, A::Fail) => Ok(S::Failed),
        (S::Pending, A::Expire) => Ok(S::Expired),
        (S::Pending, A::Cancel) => Ok(S::Cancelled),
        (S::Succeeded, A::Refund) => Ok(S::Succeeded),
        (from, action) => Err(EngineError::InvalidStateTransition {
            object: "payment intent",
            from: from.as_str().to_string(),
            action: action.verb().to_string(),
        }),
    }
}

/// A command addressed to one intent's session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum IntentCommand {
    /// The channel confirmed payment (and maybe who paid). `settlement` is what it settles
    /// as, quoted by [`crate::settlement`] just before (absent when no rate was known).
    Succeed {
        channel_reference: Option<String>,
        payer: Option<String>,
        #[serde(default)]
        settlement: Option<Box<IntentSettlement>>,
    },
    /// The channel reported failure.
    Fail { reason: String },
    /// The expiry timer fired.
    Expire,
    /// The merchant cancelled.
    Cancel { reason: Option<String> },
    /// Refund part or all of what is left.
    Refund {
        refund_id: RefundId,
        amount: Option<Money>,
        reason: Option<String>,
        mode: RefundMode,
    },
    /// A pending refund ended (PSP answer, callback, poller or the merchant's confirmation).
    SettleRefund {
        refund: Box<Refund>,
        outcome: RefundOutcome,
        psp_reference: Option<String>,
    },
    /// The PSP reports its running refunded total; the part beyond ours becomes a refund.
    RecordPspRefunds {
        refund_id: RefundId,
        total: i64,
        psp_reference: Option<String>,
    },
}

impl IntentCommand {
    fn action(&self) -> IntentAction {
        match self {
            IntentCommand::Succeed { .. } => IntentAction::Succeed,
            IntentCommand::Fail { .. } => IntentAction::Fail,
            IntentCommand::Expire => IntentAction::Expire,
            IntentCommand::Cancel { .. } => IntentAction::Cancel,
            IntentCommand::Refund { .. }
            | IntentCommand::SettleRefund { .. }
            | IntentCommand::RecordPspRefunds { .. } => IntentAction::Refund,
        }
    }
}

/// A request to collect an amount through one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PaymentIntent {
    #[schema(value_type = String, example = "pi_01J7XZ1A2B3C4D5E6F7G8H9IKM")]
    pub id: PaymentIntentId,
    pub status: IntentStatus,
    pub amount: Money,
    /// Minor units refunded so far, refunds still pending at the PSP included (never above
    /// `amount.value`; a failed refund gives its amount back).
    pub amount_refunded: i64,
    /// Refunds waiting for the PSP (their amounts are in `amount_refunded`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refunds_pending: Vec<PendingRefund>,
    /// Who paid, when the channel says (Alipay `buyer_id`, WeChat Pay `openid`, Stripe
    /// billing details).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    pub channel: String,
    #[schema(value_type = String)]
    pub service_id: ServiceId,
    /// Payload to render as a QR code for the payer.
    pub qr_code: String,
    /// The channel's own reference for this payment, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_reference: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancellation_reason: Option<String>,
    /// What it settles as for the merchant (`{value, currency, rate}` plus the rate's source
    /// and time), set when it succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement: Option<IntentSettlement>,
    /// `false` for objects created with a test key.
    pub livemode: bool,
    #[schema(value_type = String)]
    pub merchant_id: MerchantId,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub created: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated: Timestamp,
}

/// The durable effects of one applied command: the new intent, its events, maybe a refund.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Applied {
    pub intent: PaymentIntent,
    pub events: Vec<Event>,
    pub refund: Option<Refund>,
}

impl PaymentIntent {
    /// True when the intent is pending and its expiry time has come.
    pub fn is_due(&self, now: Timestamp) -> bool {
        self.status == IntentStatus::Pending && now >= self.expires_at
    }

    /// Minor units still refundable.
    pub fn refundable(&self) -> i64 {
        if self.status == IntentStatus::Succeeded {
            self.amount.value - self.amount_refunded
        } else {
            0
        }
    }

    /// The event announcing a newly created intent.
    pub fn created_event(&self) -> Event {
        Event::new(
            self.merchant_id,
            self.livemode,
            "payment_intent.created",
            self.created,
            self.id.to_string(),
            self,
        )
    }

    /// Applies one command. Pure: returns the new state and its events, touches nothing.
    pub fn apply(&self, cmd: &IntentCommand, now: Timestamp) -> EngineResult<Applied> {
        let status = next_status(self.status, cmd.action())?;
        let mut next = self.clone();
        next.status = status;
        next.updated = now;
        let event_type = match cmd {
            IntentCommand::Succeed {
                channel_reference,
                payer,
                settlement,
            } => {
                if let Some(r) = channel_reference {
                    next.channel_reference = Some(r.clone());
                }
                if payer.is_some() {
                    next.payer = payer.clone();
                }
                if let Some(s) = settlement {
                    next.settlement = Some((**s).clone());
                }
                "payment_intent.succeeded"
            }
            IntentCommand::Fail { reason } => {
                next.failure_reason = Some(reason.clone());
                "payment_intent.failed"
            }
            IntentCommand::Expire => {
                if now < self.expires_at {
                    return Err(EngineError::Conflict {
                        code: "not_yet_expired",
                        message: format!(
                            "payment intent {} does not expire before {}",
                            self.id, self.expires_at
                        ),
                    });
                }
                "payment_intent.expired"
            }
            IntentCommand::Cancel { reason } => {
                next.cancellation_reason = reason.clone();
                "payment_intent.cancelled"
            }
            IntentCommand::Refund {
                refund_id,
                amount,
                reason,
                mode,
            } => return refund::create(self, next, *refund_id, *amount, reason, *mode, now),
            IntentCommand::SettleRefund {
                refund,
                outcome,
                psp_reference,
            } => return refund::settle(self, next, refund, outcome, psp_reference, now),
            IntentCommand::RecordPspRefunds {
                refund_id,
                total,
                psp_reference,
            } => {
                return refund::record_psp_total(
                    self,
                    next,
                    *refund_id,
                    *total,
                    psp_reference,
                    now,
                );
            }
        };
        let ev = Event::new(
            self.merchant_id,
            self.livemode,
            event_type,
            now,
            self.id.to_string(),
            &next,
        );
        Ok(Applied {
            intent: next,
            events: vec![ev],
            refund: None,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample(now: i64) -> PaymentIntent {
        PaymentIntent {
            id: PaymentIntentId::new_at(now),
            status: IntentStatus::Pending,
            amount: Money::from_parts(1000, "EUR").unwrap(),
            amount_refunded: 0,
            refunds_pending: Vec::new(),
            payer: None,
            channel: "sandbox".into(),
            service_id: ServiceId::new_at(now),
            qr_code: "qr".into(),
            channel_reference: None,
            metadata: Default::default(),
            failure_reason: None,
            cancellation_reason: None,
            settlement: None,
            livemode: false,
            merchant_id: MerchantId::new_at(now),
            expires_at: Timestamp(now + 900_000),
            created: Timestamp(now),
            updated: Timestamp(now),
        }
    }

    fn refund(amount: Option<i64>) -> IntentCommand {
        IntentCommand::Refund {
            refund_id: RefundId::new_at(1),
            amount: amount.map(|v| Money::from_parts(v, "EUR").unwrap()),
            reason: None,
            mode: RefundMode::Instant,
        }
    }

    #[test]
    fn pending_intent_succeeds_once_and_emits_its_event() {
        let pi = sample(1_000);
        let a = pi
            .apply(
                &IntentCommand::Succeed {
                    channel_reference: Some("ch_1".into()),
                    payer: None,
                    settlement: None,
                },
                Timestamp(2_000),
            )
            .unwrap();
        assert_eq!(a.intent.status, IntentStatus::Succeeded);
        assert_eq!(a.events.len(), 1);
        assert_eq!(a.events[0].event_type, "payment_intent.succeeded");
        let again = a.intent.apply(
            &IntentCommand::Succeed {
                channel_reference: None,
                payer: None,
                settlement: None,
            },
            Timestamp(3_000),
        );
        assert_eq!(again.unwrap_err().code(), "invalid_state_transition");
    }

    #[test]
    fn refund_above_captured_amount_is_rejected() {
        let pi = sample(1_000)
            .apply(
                &IntentCommand::Succeed {
                    channel_reference: None,
                    payer: None,
                    settlement: None,
                },
                Timestamp(1),
            )
            .unwrap()
            .intent;
        let a = pi.apply(&refund(Some(600)), Timestamp(2)).unwrap();
        assert_eq!(a.intent.amount_refunded, 600);
        assert_eq!(a.refund.as_ref().unwrap().amount.value, 600);
        let err = a
            .intent
            .apply(&refund(Some(401)), Timestamp(3))
            .unwrap_err();
        assert_eq!(err.code(), "refund_exceeds_captured");
        let rest = a.intent.apply(&refund(None), Timestamp(3)).unwrap();
        assert_eq!(rest.intent.amount_refunded, 1000);
        assert_eq!(
            rest.intent
                .apply(&refund(None), Timestamp(4))
                .unwrap_err()
                .code(),
            "charge_already_refunded"
        );
    }

    #[test]
    fn refunding_a_pending_intent_is_an_illegal_transition() {
        assert_eq!(
            sample(1)
                .apply(&refund(None), Timestamp(2))
                .unwrap_err()
                .code(),
            "invalid_state_transition"
        );
    }

    #[test]
    fn expiry_before_the_deadline_is_refused() {
        let pi = sample(0);
        assert_eq!(
            pi.apply(&IntentCommand::Expire, Timestamp(10))
                .unwrap_err()
                .code(),
            "not_yet_expired"
        );
        let a = pi
            .apply(&IntentCommand::Expire, Timestamp(900_000))
            .unwrap();
        assert_eq!(a.intent.status, IntentStatus::Expired);
        assert_eq!(a.events[0].event_type, "payment_intent.expired");
    }

    fn any_action() -> impl Strategy<Value = IntentAction> {
        prop_oneof![
            Just(IntentAction::Succeed),
            Just(IntentAction::Fail),
            Just(IntentAction::Expire),
            Just(IntentAction::Cancel),
            Just(IntentAction::Refund)
        ]
    }

    proptest! {
        #[test]
        fn terminal_states_accept_nothing_but_refunds_on_success(actions in proptest::collection::vec(any_action(), 1..12)) {
            let mut st = IntentStatus::Pending;
            for a in actions {
                match next_status(st, a) {
                    Ok(n) => {
                        if st != IntentStatus::Pending {
                            prop_assert_eq!(st, IntentStatus::Succeeded);
                            prop_assert_eq!(a, IntentAction::Refund);
                        }
                        st = n;
                    }
                    Err(e) => prop_assert_eq!(e.code(), "invalid_state_transition"),
                }
            }
        }

        #[test]
        fn refunds_never_exceed_the_captured_amount(amounts in proptest::collection::vec(1i64..700, 1..10)) {
            let mut pi = sample(0).apply(&IntentCommand::Succeed { channel_reference: None, payer: None, settlement: None }, Timestamp(1)).unwrap().intent;
            for v in amounts {
                if let Ok(a) = pi.apply(&refund(Some(v)), Timestamp(2)) { pi = a.intent; }
                prop_assert!(pi.amount_refunded <= pi.amount.value);
            }
        }
    }
}
