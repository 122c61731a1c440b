//! Refunds: money returned against a succeeded payment intent, and the refund half of the
//! intent's state machine (decided in the intent's session, like every other move).
//!
//! ```text
//! refund:  pending ──PSP confirms──▶ succeeded
//!             └─────PSP refuses───▶ failed      (the reserved amount is released)
//! ```
//! A refund reserves its amount on the intent (`amount_refunded`) when it is created, so the
//! check "never more than captured" counts pending refunds; a failed refund gives the amount
//! back. Refunds the PSP reports without us asking (made in the PSP's dashboard) are recorded
//! from the PSP's running total as `succeeded` refunds with `source: psp`. It does not talk to
//! any PSP: [`crate::refunds`] does, and sends the outcomes here through the session.

use crate::clock::Timestamp;
use crate::error::{EngineError, EngineResult};
use crate::ids::{MerchantId, PaymentIntentId, RefundId};
use crate::model::event::Event;
use crate::model::intent::{Applied, PaymentIntent};
use crate::money::Money;
use serde::{Deserialize, Serialize};

/// Most refunds one intent may have pending at the PSP at once.
pub const MAX_PENDING_REFUNDS: usize = 50;

/// Refund outcome: `pending` until the PSP confirms (`succeeded`) or refuses (`failed`). The
/// sandbox channel settles refunds at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Pending,
    Succeeded,
    Failed,
}

impl RefundStatus {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            RefundStatus::Pending => "pending",
            RefundStatus::Succeeded => "succeeded",
            RefundStatus::Failed => "failed",
        }
    }
}

/// Who started a refund.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefundSource {
    /// The merchant, through `POST /v1/refunds`.
    #[default]
    Merchant,
    /// The PSP reported it (a refund made in the PSP's own dashboard).
    Psp,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A refund of part or all of a payment intent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Refund {
    #[schema(value_type = String, example = "re_01J7XZ1A2B3C4D5E6F7G8H9IKM")]
    pub id: RefundId,
    #[schema(value_type = String)]
    pub payment_intent: PaymentIntentId,
    pub amount: Money,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub status: RefundStatus,
    /// Why the PSP refused, for a `failed` refund.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// The PSP's own id for the refund, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psp_reference: Option<String>,
    #[serde(default)]
    pub source: RefundSource,
    /// The channel has no refund API (PromptPay): the merchant returns the money by hand and
    /// confirms with `POST /v1/refunds/{id}/confirm`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub manual: bool,
    pub livemode: bool,
    #[schema(value_type = String)]
    pub merchant_id: MerchantId,
    #[schema(value_type = String, format = DateTime)]
    pub created: Timestamp,
    /// When it left `pending`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub settled: Option<Timestamp>,
}

/// A refund still waiting for the PSP, as the intent remembers it (its amount is reserved).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PendingRefund {
    #[schema(value_type = String)]
    pub id: RefundId,
    /// Minor units reserved.
    pub amount: i64,
}

/// How a new refund is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefundMode {
    /// Done when written (the sandbox channel): `succeeded` at once.
    Instant,
    /// Asked of the PSP after it is written: `pending` until the PSP answers.
    Psp,
    /// No PSP refund API: `pending` until the merchant confirms.
    Manual,
}

/// How a pending refund ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefundOutcome {
    Succeeded,
    Failed { reason: String },
}

impl Refund {
    /// `refund.succeeded`, whose data carries `refunded_payment_intent` as the spec says.
    pub fn succeeded_event(&self, now: Timestamp) -> Event {
        self.event("refund.succeeded", now)
    }

    /// `refund.failed`: the PSP did not return the money; the amount is refundable again.
    pub fn failed_event(&self, now: Timestamp) -> Event {
        self.event("refund.failed", now)
    }

    fn event(&self, event_type: &str, now: Timestamp) -> Event {
        #[derive(Serialize)]
        struct Data<'a> {
            #[serde(flatten)]
            refund: &'a Refund,
            refunded_payment_intent: &'a PaymentIntentId,
        }
        let data = Data {
            refund: self,
            refunded_payment_intent: &self.payment_intent,
        };
        Event::new(
            self.merchant_id,
            self.livemode,
            event_type,
            now,
            self.payment_intent.to_string(),
            &data,
        )
    }

    /// The refund's one transition: `pending` to `succeeded` or `failed`.
    pub fn settle(
        &self,
        outcome: &RefundOutcome,
        psp_reference: Option<String>,
        now: Timestamp,
    ) -> EngineResult<Refund> {
        if self.status != RefundStatus::Pending {
            return Err(EngineError::InvalidStateTransition {
                object: "refund",
                from: self.status.as_str().to_string(),
                action: "settle".into(),
            });
        }
        let mut next = self.clone();
        match outcome {
            RefundOutcome::Succeeded => next.status = RefundStatus::Succeeded,
            RefundOutcome::Failed { reason } => {
                next.status = RefundStatus::Failed;
                next.failure_reason = Some(reason.chars().take(500).collect());
            }
        }
        if psp_reference.is_some() {
            next.psp_reference = psp_reference;
        }
        next.settled = Some(now);
        Ok(next)
    }
}

/// The minor units a new refund of `pi` takes: `amount` (default: everything left), checked
/// against what is still refundable, pending refunds included.
fn refund_value(pi: &PaymentIntent, amount: Option<Money>) -> EngineResult<i64> {
    let left = pi.refundable();
    let value = match amount {
        Some(m) if m.currency != pi.amount.currency => {
            return Err(EngineError::invalid(
                "currency_mismatch",
                "amount.currency",
                format!(
                    "refund currency {} differs from the payment's {}",
                    m.currency, pi.amount.currency
                ),
            ));
        }
        Some(m) => m.value,
        None => left,
    };
    if left <= 0 {
        return Err(EngineError::Conflict {
            code: "charge_already_refunded",
            message: format!(
                "payment intent {} is already fully refunded (pending refunds included)",
                pi.id
            ),
        });
    }
    if value > left {
        return Err(EngineError::invalid(
            "refund_exceeds_captured",
            "amount.value",
            format!(
                "refund of {value} exceeds the {left} minor units still refundable on {} (pending refunds included)",
                pi.id
            ),
        ));
    }
    Ok(value)
}

/// A new refund of `pi` (already moved to `next` by the state table): checks the amount still
/// refundable (pending refunds count), reserves it, and writes the refund `pending` (or
/// `succeeded` for [`RefundMode::Instant`]).
pub(crate) fn create(
    pi: &PaymentIntent,
    mut next: PaymentIntent,
    refund_id: RefundId,
    amount: Option<Money>,
    reason: &Option<String>,
    mode: RefundMode,
    now: Timestamp,
) -> EngineResult<Applied> {
    let value = refund_value(pi, amount)?;
    let status = if mode == RefundMode::Instant {
        crate::model::RefundStatus::Succeeded
    } else {
        if next.refunds_pending.len() >= MAX_PENDING_REFUNDS {
            return Err(EngineError::Conflict {
                code: "too_many_pending_refunds",
                message: format!(
                    "payment intent {} already has {MAX_PENDING_REFUNDS} refunds pending; wait for the PSP to settle them",
                    pi.id
                ),
            });
        }
        next.refunds_pending.push(PendingRefund {
            id: refund_id,
            amount: value,
        });
        RefundStatus::Pending
    };
    next.amount_refunded += value;
    debug_assert!(next.amount_refunded <= next.amount.value);
    let refund = Refund {
        id: refund_id,
        payment_intent: pi.id,
        amount: Money {
            value,
            currency: pi.amount.currency,
        },
        reason: reason.clone(),
        status,
        failure_reason: None,
        psp_reference: None,
        source: RefundSource::Merchant,
        manual: mode == RefundMode::Manual,
        livemode: pi.livemode,
        merchant_id: pi.merchant_id,
        created: now,
        settled: (status == RefundStatus::Succeeded).then_some(now),
    };
    let events = match status {
        RefundStatus::Succeeded => vec![refund.succeeded_event(now)],
        _ => Vec::new(),
    };
    Ok(Applied {
        intent: next,
        events,
        refund: Some(refund),
    })
}

/// Ends a pending refund of `pi`: only a refund the intent still holds as pending can end, and
/// only once (a second confirmation is an illegal transition, so callback and poller may race).
pub(crate) fn settle(
    pi: &PaymentIntent,
    mut next: PaymentIntent,
    refund: &Refund,
    outcome: &RefundOutcome,
    psp_reference: &Option<String>,
    now: Timestamp,
) -> EngineResult<Applied> {
    let Some(pos) = pi.refunds_pending.iter().position(|p| p.id == refund.id) else {
        return Err(EngineError::InvalidStateTransition {
            object: "refund",
            from: if refund.status == RefundStatus::Pending {
                "settled".to_string()
            } else {
                refund.status.as_str().to_string()
            },
            action: "settle".into(),
        });
    };
    let held = next.refunds_pending.remove(pos);
    let settled = Refund {
        status: RefundStatus::Pending,
        ..refund.clone()
    }
    .settle(outcome, psp_reference.clone(), now)?;
    let event = match outcome {
        RefundOutcome::Succeeded => settled.succeeded_event(now),
        RefundOutcome::Failed { .. } => {
            next.amount_refunded -= held.amount;
            settled.failed_event(now)
        }
    };
    debug_assert!(next.amount_refunded >= 0);
    Ok(Applied {
        intent: next,
        events: vec![event],
        refund: Some(settled),
    })
}

/// Records what the PSP refunded beyond our own refunds: the PSP reports its running total
/// `total`; whatever exceeds the amount we already count (ours, pending included) is a refund
/// made at the PSP. A total that adds nothing is `refund_already_recorded` (replays, or a
/// report that only covers our own refunds).
pub(crate) fn record_psp_total(
    pi: &PaymentIntent,
    mut next: PaymentIntent,
    refund_id: RefundId,
    total: i64,
    psp_reference: &Option<String>,
    now: Timestamp,
) -> EngineResult<Applied> {
    // The PSP cannot have refunded more than it captured; never count more.
    let extra = total.min(pi.amount.value) - pi.amount_refunded;
    if extra <= 0 {
        return Err(EngineError::Conflict {
            code: "refund_already_recorded",
            message: format!(
                "the PSP's refunded total {total} is already accounted for on {}",
                pi.id
            ),
        });
    }
    next.amount_refunded += extra;
    debug_assert!(next.amount_refunded <= next.amount.value);
    let refund = Refund {
        id: refund_id,
        payment_intent: pi.id,
        amount: Money {
            value: extra,
            currency: pi.amount.currency,
        },
        reason: Some("refunded at the PSP".into()),
        status: RefundStatus::Succeeded,
        failure_reason: None,
        psp_reference: psp_reference.clone(),
        source: RefundSource::Psp,
        manual: false,
        livemode: pi.livemode,
        merchant_id: pi.merchant_id,
        created: now,
        settled: Some(now),
    };
    Ok(Applied {
        intent: next,
        events: vec![refund.succeeded_event(now)],
        refund: Some(refund),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IntentCommand;
    use crate::model::intent::tests::sample;
    use proptest::prelude::*;

    fn paid() -> PaymentIntent {
        sample(0)
            .apply(
                &IntentCommand::Succeed {
                    channel_reference: Some("psp".into()),
                    payer: Some("2088000000000002".into()),
                    settlement: None,
                },
                Timestamp(1),
            )
            .unwrap()
            .intent
    }

    fn create(pi: &PaymentIntent, id: u8, value: i64) -> EngineResult<Applied> {
        pi.apply(
            &IntentCommand::Refund {
                refund_id: RefundId::new_at(i64::from(id) + 10),
                amount: Some(Money::from_parts(value, "EUR").unwrap()),
                reason: None,
                mode: RefundMode::Psp,
            },
            Timestamp(2),
        )
    }

    fn settle(pi: &PaymentIntent, r: &Refund, ok: bool) -> EngineResult<Applied> {
        let outcome = if ok {
            RefundOutcome::Succeeded
        } else {
            RefundOutcome::Failed {
                reason: "declined".into(),
            }
        };
        pi.apply(
            &IntentCommand::SettleRefund {
                refund: Box::new(r.clone()),
                outcome,
                psp_reference: None,
            },
            Timestamp(3),
        )
    }

    #[test]
    fn a_pending_refund_reserves_its_amount_and_a_failed_one_gives_it_back() {
        let pi = paid();
        assert_eq!(pi.payer.as_deref(), Some("2088000000000002"));
        let a = create(&pi, 1, 600).unwrap();
        let r = a.refund.unwrap();
        assert_eq!(r.status, RefundStatus::Pending);
        assert!(a.events.is_empty(), "no event until the PSP answers");
        assert_eq!(a.intent.amount_refunded, 600);
        assert_eq!(
            create(&a.intent, 2, 401).unwrap_err().code(),
            "refund_exceeds_captured"
        );
        let failed = settle(&a.intent, &r, false).unwrap();
        assert_eq!(failed.events[0].event_type, "refund.failed");
        assert_eq!(failed.refund.as_ref().unwrap().status, RefundStatus::Failed);
        assert_eq!(failed.intent.amount_refunded, 0);
        assert!(failed.intent.refunds_pending.is_empty());
        // A second ending of the same refund is refused: the callback and the poller may race.
        assert_eq!(
            settle(&failed.intent, &r, true).unwrap_err().code(),
            "invalid_state_transition"
        );
    }

    #[test]
    fn a_psp_total_beyond_our_refunds_is_recorded_once() {
        let pi = paid();
        let a = create(&pi, 1, 300).unwrap();
        let total = |pi: &PaymentIntent, t: i64| {
            pi.apply(
                &IntentCommand::RecordPspRefunds {
                    refund_id: RefundId::new_at(99),
                    total: t,
                    psp_reference: Some("ch_1".into()),
                },
                Timestamp(4),
            )
        };
        // Only our own refund: nothing to record.
        assert_eq!(
            total(&a.intent, 300).unwrap_err().code(),
            "refund_already_recorded"
        );
        let b = total(&a.intent, 500).unwrap();
        let r = b.refund.unwrap();
        assert_eq!((r.amount.value, r.source), (200, RefundSource::Psp));
        assert_eq!(b.events[0].event_type, "refund.succeeded");
        assert_eq!(b.intent.amount_refunded, 500);
        assert_eq!(
            total(&b.intent, 500).unwrap_err().code(),
            "refund_already_recorded"
        );
        // A PSP can never have refunded more than it captured.
        assert_eq!(
            total(&b.intent, 5_000).unwrap().intent.amount_refunded,
            1000
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Create(i64),
        Settle(usize, bool),
        PspTotal(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1i64..600).prop_map(Op::Create),
            (0usize..8, any::<bool>()).prop_map(|(i, ok)| Op::Settle(i, ok)),
            (0i64..1_500).prop_map(Op::PspTotal),
        ]
    }

    proptest! {
        /// Whatever order merchant refunds, PSP answers and PSP-reported totals arrive in (the
        /// session applies them one at a time), the refunded amount never exceeds the capture
        /// and always equals the refunds that are pending or succeeded.
        #[test]
        fn refunds_pending_and_psp_initiated_never_exceed_the_capture(ops in proptest::collection::vec(op(), 1..40)) {
            let mut pi = paid();
            let mut refunds: Vec<Refund> = Vec::new();
            for (n, op) in ops.into_iter().enumerate() {
                let applied = match op {
                    Op::Create(v) => create(&pi, n as u8, v),
                    Op::Settle(i, ok) => match refunds.get(i) {
                        Some(r) => settle(&pi, r, ok),
                        None => continue,
                    },
                    Op::PspTotal(t) => pi.apply(&IntentCommand::RecordPspRefunds {
                        refund_id: RefundId::new_at(1_000 + n as i64),
                        total: t,
                        psp_reference: None,
                    }, Timestamp(5)),
                };
                if let Ok(a) = applied {
                    if let Some(r) = a.refund {
                        match refunds.iter_mut().find(|x| x.id == r.id) {
                            Some(x) => *x = r,
                            None => refunds.push(r),
                        }
                    }
                    pi = a.intent;
                }
                prop_assert!(pi.amount_refunded <= pi.amount.value);
                let live: i64 = refunds.iter().filter(|r| r.status != RefundStatus::Failed).map(|r| r.amount.value).sum();
                prop_assert_eq!(live, pi.amount_refunded);
                let pending = refunds.iter().filter(|r| r.status == RefundStatus::Pending).count();
                prop_assert_eq!(pending, pi.refunds_pending.len());
            }
        }
    }
}
