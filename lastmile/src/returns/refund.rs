//! Refunding a received return through the engine's refund operation (the payment's own
//! channel: the PSP simulator's Stripe or MultiSafepay in tests, a manual confirmation for
//! PromptPay), and recording what the engine committed about that refund.
//!
//! The idempotency key `return:{id}:{attempt}` makes a repeated attempt (after a crash, or two
//! nodes reading the same `received` return) answer the first refund instead of making a
//! second; `attempt` only grows after a refund was recorded as failed, when the merchant asks
//! again.

use super::{ReturnAction, ReturnCase, ReturnStatus, internal};
use crate::LastMile;
use crate::sessions::Actor;
use crate::sessions::settle::{RETURN_REFUND_REASON, ReturnMarker};
use ipay_engine::engine::{AmountInput, AuthContext, CreateRefundRequest};
use ipay_engine::error::{EngineError, EngineResult};
use ipay_engine::ids::ApiKeyId;
use ipay_engine::model::{ApiKey, Permission, Refund, RefundStatus};

impl LastMile {
    /// An engine caller acting for the return's merchant, allowed to refund (never stored,
    /// never usable as an API key: it has no secret).
    fn ret_engine_ctx(&self, r: &ReturnCase) -> AuthContext {
        let now = self.engine.clock().now();
        AuthContext {
            merchant_id: r.merchant_id,
            livemode: r.livemode,
            key: ApiKey {
                id: ApiKeyId::from_u128(0),
                label: "last-mile returns".into(),
                redacted: "internal".into(),
                permissions: vec![
                    Permission::PaymentIntentsRead,
                    Permission::RefundsRead,
                    Permission::RefundsWrite,
                ],
                ip_whitelist: vec![],
                livemode: r.livemode,
                merchant_id: r.merchant_id,
                created: now,
                expires_at: now.plus_secs(3600),
                revoked_at: None,
            },
        }
    }

    /// Brings the refund of a return up to date: a `received` return is refunded, a
    /// `refund_pending` one takes the engine's committed outcome. Other returns are as they are.
    pub(super) async fn settle_refund(&self, r: ReturnCase) -> EngineResult<ReturnCase> {
        if !matches!(
            r.status,
            ReturnStatus::Received | ReturnStatus::RefundPending
        ) {
            return Ok(r);
        }
        match self
            .ret_mutate(&r.id, async |r, c| self.refund_held(r, c, false).await)
            .await
        {
            Ok((r, ())) => Ok(r),
            Err(e) => {
                // Reading a return must not fail because its refund could not be asked for
                // now (engine busy, PSP down); the next read or retry asks again.
                tracing::warn!(error = %e, return_id = %r.id, "return refund not settled yet");
                Ok(r)
            }
        }
    }

    /// Settles the return from its refund's committed final event (the consumer of
    /// [`ReturnMarker`]s): a `refund_pending` (or still `received`) return takes the refund's
    /// outcome, and the marker is deleted in the same batch. `false` when the return had
    /// nothing to take from this refund (already settled, or another refund), so the caller
    /// deletes the stale marker; a return is changed under its reservation, so a marker applied
    /// twice, or with a concurrent read, emits `return.refunded` once.
    pub(crate) async fn ret_settle_from_refund(&self, m: &ReturnMarker) -> EngineResult<bool> {
        let (_, applied) = self
            .ret_mutate(&m.return_id, async |r, c| {
                // The link is the refund's reason, which a merchant can also write: a look-alike
                // can at most make a `received` return ask for its own refund (due anyway), and
                // the refund is read as the return's merchant, so another's is not found.
                let ours = r.refund_id.is_none_or(|id| id == m.refund);
                if !ours
                    || !matches!(
                        r.status,
                        ReturnStatus::Received | ReturnStatus::RefundPending
                    )
                {
                    return Ok(false);
                }
                self.refund_held(r, c, false).await?;
                if r.status == ReturnStatus::RefundPending {
                    // A `received` return asks again under its key, and the engine answers the
                    // refund as first made (pending): read what it is now.
                    self.refund_held(r, c, false).await?;
                }
                if r.status == ReturnStatus::RefundPending {
                    // Not final as read here yet: keep the marker for the retry.
                    return Err(EngineError::Internal(format!(
                        "refund {} of return {} is not final yet",
                        m.refund, r.id
                    )));
                }
                c.batch.push(m.delete_op());
                c.touch();
                Ok(true)
            })
            .await?;
        Ok(applied)
    }

    /// The merchant asks again: checks a pending refund, and retries a failed one (also one
    /// the check finds failed) as a new attempt with a new idempotency key. 409 unless the
    /// return is received, refund_pending or refund_failed.
    pub async fn retry_return_refund(
        &self,
        who: Actor,
        id: &str,
    ) -> EngineResult<super::ReturnView> {
        // The state is judged before the pending refund is read: a check that finds it
        // succeeded answers `refunded`, not 409.
        let r = self.return_visible(who, id).await?;
        if !matches!(
            r.status,
            ReturnStatus::RefundFailed | ReturnStatus::RefundPending | ReturnStatus::Received
        ) {
            return Err(EngineError::InvalidStateTransition {
                object: "return",
                from: r.status.as_str().into(),
                action: "refund it".into(),
            });
        }
        let (r, ()) = self
            .ret_mutate(&r.id, async |r, c| self.refund_held(r, c, true).await)
            .await?;
        Ok(self.return_view(&r))
    }

    /// On the held return: refunds it (`received`, or `refund_failed` when `retry`), or reads
    /// its pending refund; records the outcome.
    async fn refund_held(
        &self,
        r: &mut ReturnCase,
        c: &mut super::Change,
        retry: bool,
    ) -> EngineResult<()> {
        let ctx = self.ret_engine_ctx(r);
        if let (ReturnStatus::RefundPending, Some(id)) = (r.status, r.refund_id) {
            let pending = self.engine.get_refund(&ctx, &id.to_string()).await?;
            self.record_refund(r, c, &pending)?;
        }
        let refund = match r.status {
            ReturnStatus::Received => match self.make_refund(&ctx, r).await {
                Ok(refund) => refund,
                Err(e) => return self.refund_refused(r, c, e),
            },
            // The merchant asked: a failed refund (also one the check above just found failed)
            // is tried again as a new attempt.
            ReturnStatus::RefundFailed if retry => {
                r.refund_attempts += 1;
                c.touch();
                match self.make_refund(&ctx, r).await {
                    Ok(refund) => refund,
                    Err(e) => return self.refund_refused(r, c, e),
                }
            }
            _ => return Ok(()),
        };
        self.record_refund(r, c, &refund)
    }

    /// The engine refused to make the refund. A refusal that asking again will not change
    /// (nothing left to refund, channel no longer configured) fails the refund so the merchant
    /// sees why; anything else (store or PSP unavailable) leaves the return as it was.
    fn refund_refused(
        &self,
        r: &mut ReturnCase,
        c: &mut super::Change,
        e: EngineError,
    ) -> EngineResult<()> {
        use ipay_engine::ErrorKind as K;
        if !matches!(
            e.kind(),
            K::Conflict | K::InvalidRequest | K::Unprocessable | K::Forbidden
        ) {
            return Err(e);
        }
        let now = self.engine.clock().now();
        r.apply(
            ReturnAction::RefundFailed,
            now,
            format!("refund refused: {}", e.code()),
        )?;
        r.refund_failure = Some(e.to_string());
        c.touch();
        Ok(())
    }

    /// Asks the engine for the refund under this attempt's idempotency key.
    async fn make_refund(&self, ctx: &AuthContext, r: &ReturnCase) -> EngineResult<Refund> {
        let key = format!("return:{}:{}", r.id, r.refund_attempts);
        let out = self
            .engine
            .create_refund(
                ctx,
                CreateRefundRequest {
                    payment_intent: r.payment_intent.to_string(),
                    amount: Some(AmountInput {
                        value: r.amount,
                        currency: r.currency.clone(),
                    }),
                    // The link from the refund's committed events back to this return
                    // (see `sessions::settle::ReturnMarker`).
                    reason: Some(format!("{RETURN_REFUND_REASON}{}", r.id)),
                },
                Some(&key),
            )
            .await?;
        serde_json::from_str(&out.body).map_err(internal)
    }

    /// Moves the return after what the engine committed about its refund.
    fn record_refund(
        &self,
        r: &mut ReturnCase,
        c: &mut super::Change,
        refund: &Refund,
    ) -> EngineResult<()> {
        let now = self.engine.clock().now();
        let note = format!("refund {} {}", refund.id, refund.status.as_str());
        r.refund_id = Some(refund.id);
        match refund.status {
            RefundStatus::Pending if r.status == ReturnStatus::RefundPending => return Ok(()),
            RefundStatus::Pending => r.apply(ReturnAction::RefundStarted, now, note)?,
            RefundStatus::Succeeded => {
                r.apply(ReturnAction::RefundSucceeded, now, note)?;
                r.refunded_at = Some(refund.settled.unwrap_or(now));
                r.refund_failure = None;
                let view = self.return_view(r);
                c.event(r, now, "return.refunded", &view);
            }
            RefundStatus::Failed => {
                r.apply(ReturnAction::RefundFailed, now, note)?;
                r.refund_failure = refund.failure_reason.clone();
            }
        }
        c.touch();
        Ok(())
    }
}
