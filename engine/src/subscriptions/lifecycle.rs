//! What happens when a subscription falls due: the timer's tick scans the due index up to the
//! clock's now and advances each due subscription by one step.
//!
//! One step, decided from the record and (when a payment is open) that intent's status:
//! - open payment still pending → look again in `recheck_secs`;
//! - open payment succeeded → first payment: `active`, period 1 starts at the payment time;
//!   renewal: next period (counted from the anchor), `subscription.renewed`;
//! - open payment failed, expired or cancelled → first payment: `incomplete_expired`; renewal:
//!   `past_due` and a retry in `retry_delay_secs`, or after `max_renewal_attempts` failures
//!   `cancelled` with `subscription.cancelled` and `revocation.succeeded`;
//! - no open payment, period over → cancelled at period end: `cancelled` and
//!   `revocation.succeeded`; otherwise a renewal payment is opened (idempotently).

use super::model::{Subscription, SubscriptionAction, SubscriptionStatus};
use super::{DUE, DUE_PARTITIONS, Subscriptions};
use crate::clock::Timestamp;
use crate::error::{EngineError, EngineResult};
use crate::ids::{PaymentIntentId, SubscriptionId};
use crate::model::{Event, IntentStatus};
use crate::store::{EntryRange, WriteBatch, WriteOp};
use std::ops::Bound;
use std::sync::Arc;

impl Subscriptions {
    /// Advances every subscription due at the clock's now by one step; returns how many were
    /// looked at. The background timer calls it; tests call it after moving the clock.
    pub(crate) async fn tick(&self) -> EngineResult<usize> {
        let now = self.clock.now();
        let mut seen = 0;
        for p in 0..DUE_PARTITIONS {
            let partition = format!("due-{p}");
            let range = EntryRange {
                start: Bound::Unbounded,
                // Every key of a due time ≤ now sorts before `{now+1}/`.
                end: Bound::Excluded(format!("{:015}/", now.ms().saturating_add(1).max(0))),
                limit: self.settings.tick_batch,
                descending: false,
            };
            for (sort, _) in self.ledger.scan_entries(DUE, &partition, &range).await? {
                seen += 1;
                let Some(id) = sort
                    .split_once('/')
                    .and_then(|(_, id)| SubscriptionId::parse(id).ok())
                else {
                    continue;
                };
                if let Err(e) = self.step(id, &partition, &sort).await {
                    tracing::warn!(subscription = %id, error = %e, "subscription step failed; retried next tick");
                }
            }
        }
        Ok(seen)
    }

    /// One step of one due subscription, under its lock.
    async fn step(&self, id: SubscriptionId, partition: &str, sort: &str) -> EngineResult<()> {
        let lock = self.lock(id).await?;
        let out = self.step_locked(id, partition, sort).await;
        self.unlock(lock).await;
        out
    }

    async fn step_locked(
        &self,
        id: SubscriptionId,
        partition: &str,
        sort: &str,
    ) -> EngineResult<()> {
        let now = self.clock.now();
        let Some(mut sub) = self.load(id).await? else {
            // An entry without its record: nothing to do, ever.
            let mut b = WriteBatch::new();
            b.push(WriteOp::DeleteEntry {
                index: DUE,
                partition: partition.to_string(),
                sort: sort.to_string(),
            });
            self.ledger.submit(b).await?;
            return Ok(());
        };
        // Someone (a cancel, another node's tick) moved it since the scan.
        if sub.due_at.is_none_or(|d| d > now) {
            return Ok(());
        }
        let old_due = sub.due_at;
        let mut events = Vec::new();
        match sub.open_intent {
            Some(pi) => self.settle_open(&mut sub, pi, now, &mut events).await?,
            None => self.period_over(&mut sub, now, &mut events).await?,
        }
        sub.updated = now;
        self.commit(WriteBatch::new(), &sub, old_due, events).await
    }

    /// The open payment's outcome decides the next state.
    async fn settle_open(
        &self,
        sub: &mut Subscription,
        pi: PaymentIntentId,
        now: Timestamp,
        events: &mut Vec<Event>,
    ) -> EngineResult<()> {
        let intent =
            self.ledger.get_intent(pi).await?.ok_or_else(|| {
                EngineError::Internal(format!("payment {pi} of {} is gone", sub.id))
            })?;
        match intent.status {
            IntentStatus::Pending => {
                sub.due_at = Some(now.plus_secs(self.settings.recheck_secs));
            }
            IntentStatus::Succeeded => {
                sub.open_intent = None;
                self.paid(sub, intent.updated, now, events)?;
            }
            IntentStatus::Failed | IntentStatus::Expired | IntentStatus::Cancelled => {
                sub.open_intent = None;
                self.payment_failed(sub, now, events)?;
            }
        }
        Ok(())
    }

    /// A payment succeeded at `paid_at`: the first one activates, a renewal extends.
    fn paid(
        &self,
        sub: &mut Subscription,
        paid_at: Timestamp,
        now: Timestamp,
        events: &mut Vec<Event>,
    ) -> EngineResult<()> {
        if sub.status == SubscriptionStatus::Incomplete {
            sub.apply(SubscriptionAction::Activate)?;
            sub.billing_anchor = Some(paid_at);
            sub.periods_paid = 1;
            sub.set_current_period();
            return Ok(());
        }
        sub.apply(SubscriptionAction::Renew)?;
        sub.periods_paid += 1;
        sub.renewal_attempts = 0;
        sub.set_current_period();
        sub.updated = now;
        events.push(self.event(sub, "subscription.renewed", now));
        Ok(())
    }

    /// A payment failed: the first one expires the subscription; a renewal is retried until
    /// `max_renewal_attempts`, then the subscription ends.
    fn payment_failed(
        &self,
        sub: &mut Subscription,
        now: Timestamp,
        events: &mut Vec<Event>,
    ) -> EngineResult<()> {
        if sub.status == SubscriptionStatus::Incomplete {
            sub.apply(SubscriptionAction::Expire)?;
            sub.due_at = None;
            sub.ended_at = Some(now);
            return Ok(());
        }
        sub.renewal_attempts += 1;
        if sub.renewal_attempts >= self.settings.max_renewal_attempts {
            sub.apply(SubscriptionAction::End)?;
            sub.cancelled_at = Some(now);
            sub.cancellation_reason = Some("payment_failed".into());
            sub.updated = now;
            self.end_now(sub, now, true, events);
            return Ok(());
        }
        sub.apply(SubscriptionAction::MissRenewal)?;
        let retry = now.plus_secs(self.settings.retry_delay_secs);
        sub.due_at = Some(retry);
        sub.next_billing_date = Some(retry);
        Ok(())
    }

    /// No payment open and the subscription is due: end it (cancelled at period end) or open
    /// the next renewal attempt.
    async fn period_over(
        &self,
        sub: &mut Subscription,
        now: Timestamp,
        events: &mut Vec<Event>,
    ) -> EngineResult<()> {
        match sub.status {
            SubscriptionStatus::Active if sub.cancel_at_period_end => {
                sub.apply(SubscriptionAction::End)?;
                sub.due_at = None;
                sub.next_billing_date = None;
                sub.ended_at = Some(now);
                sub.updated = now;
                events.push(self.event(sub, "revocation.succeeded", now));
            }
            SubscriptionStatus::Active | SubscriptionStatus::PastDue => {
                let which = format!(
                    "period-{}-attempt-{}",
                    sub.periods_paid + 1,
                    sub.renewal_attempts + 1
                );
                let ctx = self.merchant_ctx(sub);
                match self.open_payment(sub, &which, &ctx).await {
                    Ok(intent) => {
                        sub.latest_intent = Some(intent.id);
                        sub.open_intent = Some(intent.id);
                        sub.due_at = Some(now.plus_secs(self.settings.recheck_secs));
                    }
                    // The channel or manifest refused the payment outright: a failed attempt.
                    Err(e) if !is_transient(&e) => {
                        tracing::info!(subscription = %sub.id, error = %e, "renewal payment refused");
                        self.payment_failed(sub, now, events)?;
                    }
                    Err(e) => return Err(e),
                }
            }
            _ => sub.due_at = None,
        }
        Ok(())
    }
}

/// Errors worth retrying at the next tick rather than counting as a failed attempt.
fn is_transient(e: &EngineError) -> bool {
    matches!(
        e,
        EngineError::StoreUnavailable(_)
            | EngineError::SessionUnavailable
            | EngineError::IdempotencyInProgress
            | EngineError::Internal(_)
    )
}

/// Runs [`Subscriptions::tick`] every `timer_every` until the subscriptions are dropped.
pub(crate) fn spawn_timer(subs: &Arc<Subscriptions>) {
    let weak = Arc::downgrade(subs);
    let every = subs.settings.timer_every;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(s) = weak.upgrade() else { return };
            if let Err(e) = s.tick().await {
                tracing::warn!(error = %e, "subscription tick failed");
            }
        }
    });
}
