//! What the simulated clients were told, and the invariants checked against the ledger at the
//! end of a run:
//!
//! 1. nothing acknowledged is lost: every intent and refund a client got a success for is in
//!    the ledger with the amount it was given;
//! 2. no double transition: an intent has one `payment_intent.created` event and at most one
//!    terminal event, which matches its status; a terminal state a client saw (in an answer or
//!    a durable read) is the final state;
//! 3. refunds never exceed captures: the intent's refunds add up to its `amount_refunded`,
//!    which is at most its amount, and only a succeeded intent has refunds;
//! 4. one idempotency key, one intent, across crashes;
//! 5. nothing is stuck: once the clock is past every expiry and timers have run, no intent is
//!    pending.

use ipay_engine::model::{IntentStatus, PaymentIntent};
use std::collections::BTreeMap;

/// An intent as the clients know it.
#[derive(Debug, Clone)]
pub struct KnownIntent {
    pub amount: i64,
    /// The terminal state a client was shown, if any.
    pub terminal: Option<IntentStatus>,
    /// Refunds acknowledged: id → amount.
    pub refunds: BTreeMap<String, i64>,
}

/// Everything acknowledged so far in one run.
#[derive(Debug, Default)]
pub struct Model {
    pub intents: BTreeMap<String, KnownIntent>,
    /// Idempotency key → (amount asked for, intent id once acknowledged).
    pub keys: BTreeMap<String, (i64, Option<String>)>,
    /// Notifications sent: (intent, nid, outcome), for duplicates.
    pub notifications: Vec<(String, String, &'static str)>,
}

impl Model {
    /// Records an acknowledged intent (from a create answer), checking the key maps to it. A
    /// replayed answer shows the intent as it was when first created, so its state says
    /// nothing about now.
    pub fn acked_intent(
        &mut self,
        pi: &PaymentIntent,
        key: Option<&str>,
        replayed: bool,
    ) -> Result<(), String> {
        let id = pi.id.to_string();
        if let Some(k) = key {
            let slot = self
                .keys
                .entry(k.to_string())
                .or_insert((pi.amount.value, None));
            match &slot.1 {
                Some(prev) if *prev != id => {
                    return Err(format!(
                        "idempotency key {k} answered {id} after it had answered {prev}"
                    ));
                }
                _ => slot.1 = Some(id.clone()),
            }
        }
        self.intents.entry(id).or_insert(KnownIntent {
            amount: pi.amount.value,
            terminal: None,
            refunds: BTreeMap::new(),
        });
        if replayed {
            return Ok(());
        }
        self.observed(pi)
    }

    /// Records a state a client saw (an answer or a durable read).
    pub fn observed(&mut self, pi: &PaymentIntent) -> Result<(), String> {
        let id = pi.id.to_string();
        let Some(k) = self.intents.get_mut(&id) else {
            return Ok(());
        };
        if pi.status == IntentStatus::Pending {
            return match k.terminal {
                Some(t) => Err(format!("{id} was {t:?} and is pending again")),
                None => Ok(()),
            };
        }
        match k.terminal {
            Some(t) if t != pi.status => {
                Err(format!("{id} was shown {t:?} and later {:?}", pi.status))
            }
            _ => {
                k.terminal = Some(pi.status);
                Ok(())
            }
        }
    }

    /// Records an acknowledged refund.
    pub fn acked_refund(&mut self, intent: &str, refund: &str, amount: i64) {
        if let Some(k) = self.intents.get_mut(intent) {
            k.refunds.insert(refund.to_string(), amount);
        }
    }
}

/// What the ledger holds about one intent at the end of a run.
pub struct Stored {
    pub intent: Option<PaymentIntent>,
    /// Event types about the intent, oldest first.
    pub events: Vec<String>,
    /// Refunds of the intent, whatever their state: id → amount.
    pub refunds: BTreeMap<String, i64>,
    /// What the intent's pending and succeeded refunds add up to (a failed refund gives its
    /// amount back, so it is not counted).
    pub refunds_live: i64,
    /// How many refund records were listed (more than `refunds` holds if an id repeats).
    pub refund_rows: usize,
}

const TERMINAL_EVENTS: [&str; 4] = [
    "payment_intent.succeeded",
    "payment_intent.failed",
    "payment_intent.expired",
    "payment_intent.cancelled",
];

/// Checks invariants 1–3 and 5 for one acknowledged intent against what is stored.
pub fn check_intent(id: &str, known: &KnownIntent, stored: &Stored) -> Result<(), String> {
    let pi = stored
        .intent
        .as_ref()
        .ok_or_else(|| format!("acknowledged intent {id} is missing"))?;
    if pi.amount.value != known.amount {
        return Err(format!(
            "{id}: amount {} != acknowledged {}",
            pi.amount.value, known.amount
        ));
    }
    if let Some(t) = known.terminal
        && t != pi.status
    {
        return Err(format!(
            "{id}: clients saw {t:?}, the ledger says {:?}",
            pi.status
        ));
    }
    if pi.status == IntentStatus::Pending {
        return Err(format!("{id}: still pending after every expiry passed"));
    }
    check_events(id, pi, &stored.events)?;
    check_refunds(id, pi, known, stored)
}

fn check_events(id: &str, pi: &PaymentIntent, events: &[String]) -> Result<(), String> {
    let created = events
        .iter()
        .filter(|e| *e == "payment_intent.created")
        .count();
    if created != 1 {
        return Err(format!("{id}: {created} created events ({events:?})"));
    }
    let terminal: Vec<&String> = events
        .iter()
        .filter(|e| TERMINAL_EVENTS.contains(&e.as_str()))
        .collect();
    let expected = format!("payment_intent.{}", status_word(pi.status));
    if terminal.len() != 1 || *terminal[0] != expected {
        return Err(format!(
            "{id}: status {:?} but terminal events {terminal:?} (double or missing transition)",
            pi.status
        ));
    }
    Ok(())
}

fn check_refunds(
    id: &str,
    pi: &PaymentIntent,
    known: &KnownIntent,
    stored: &Stored,
) -> Result<(), String> {
    for (rid, amount) in &known.refunds {
        if stored.refunds.get(rid) != Some(amount) {
            return Err(format!(
                "{id}: acknowledged refund {rid} of {amount} is missing"
            ));
        }
    }
    let sum = stored.refunds_live;
    if sum != pi.amount_refunded {
        return Err(format!(
            "{id}: refunds add up to {sum}, amount_refunded is {}",
            pi.amount_refunded
        ));
    }
    if sum > pi.amount.value {
        return Err(format!(
            "{id}: refunded {sum} of a {} capture",
            pi.amount.value
        ));
    }
    if sum > 0 && pi.status != IntentStatus::Succeeded {
        return Err(format!("{id}: refunds on a {:?} intent", pi.status));
    }
    if stored.refund_rows != stored.refunds.len() {
        return Err(format!("{id}: a refund is stored twice"));
    }
    Ok(())
}

fn status_word(s: IntentStatus) -> &'static str {
    match s {
        IntentStatus::Pending => "pending",
        IntentStatus::Succeeded => "succeeded",
        IntentStatus::Failed => "failed",
        IntentStatus::Expired => "expired",
        IntentStatus::Cancelled => "cancelled",
    }
}
