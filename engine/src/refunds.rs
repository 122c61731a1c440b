//! Refunds: refunding part or all of a succeeded intent through its channel (idempotent when a
//! key is given), confirming manual refunds, polling the PSP for pending ones, reading and
//! listing refunds.
//!
//! A refund is first decided by the intent's payment session, which checks the amount still
//! refundable (pending refunds count) and writes the `pending` refund, its reservation on the
//! intent and the poller's work entry in one batch. Only then is the PSP asked (behind the
//! channel's breaker and retries); its answer, a later callback, or the poller ends the refund
//! through the session again, which accepts exactly one ending per refund. The sandbox
//! channel refunds at once; channels without a refund API (PromptPay) leave the refund to the
//! merchant, who confirms it. Wire formats belong to the adapters; callbacks to
//! [`crate::callbacks`].
//!
//! Poller storage: index `refund_polls`, partition `all`, sort key = refund id, value =
//! [`PollEntry`] JSON. The entry is written with the pending refund and removed with the
//! refund's ending, so the work list survives restarts and never outlives its refund.

use crate::auth::AuthContext;
use crate::channel::{
    ChannelAdapter, ChannelError, ChannelRefund, ChannelRefundRequest, ChannelRefundState,
};
use crate::clock::{Clock, Timestamp};
use crate::config::Limits;
use crate::error::{EngineError, EngineResult};
use crate::idempotency::{Idempotency, IdempotentOutcome, canonical_hash};
use crate::ids::{PaymentIntentId, RefundId};
use crate::intents::{AmountInput, Intents};
use crate::model::{
    IntentCommand, PaymentIntent, Permission, Refund, RefundMode, RefundOutcome, RefundSource,
    RefundStatus,
};
use crate::money::Money;
use crate::paging::page;
use crate::routing::ChannelRouter;
use crate::session::{IdempotencySpec, SessionRegistry, idempotency_record};
use crate::store::{EntryRange, Ledger, Page, PageRequest, WriteBatch, WriteOp};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Longest refund reason, characters.
const MAX_REASON_CHARS: usize = 500;
/// The poller's index and its one partition.
const POLL_INDEX: &str = "refund_polls";
const POLL_PARTITION: &str = "all";
/// Pending refunds looked at per poller round.
const MAX_POLLED_PER_ROUND: usize = 200;
/// How long one node keeps the poller's leadership in cluster mode.
const POLL_LEADERSHIP: std::time::Duration = std::time::Duration::from_secs(30);
/// Wait before the first status query of a new refund: the PSP call made when it was created
/// usually settles it, and the poller should not race that call.
pub const FIRST_POLL_DELAY_MS: i64 = 30_000;

/// `POST /v1/refunds` body.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefundRequest {
    /// The intent to refund.
    pub payment_intent: String,
    /// Defaults to everything still refundable.
    #[serde(default)]
    pub amount: Option<AmountInput>,
    /// Why, in the merchant's words.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /v1/refunds/{id}/confirm` body: how a manual refund ended.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmRefundRequest {
    /// `succeeded` (the money was returned) or `failed` (it was not; the amount becomes
    /// refundable again).
    pub status: RefundStatus,
    /// For `failed`: why.
    #[serde(default)]
    pub failure_reason: Option<String>,
    /// The bank transfer's reference, if any.
    #[serde(default)]
    pub reference: Option<String>,
}

/// One pending refund on the poller's work list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PollEntry {
    pub refund: RefundId,
    pub intent: PaymentIntentId,
    /// When the next status query is due.
    pub due: Timestamp,
    /// Status queries made so far.
    pub attempts: u32,
}

/// The write that keeps the poller's work list in step with a refund, committed in the
/// refund's own batch: an entry while it is pending at a PSP, its removal when it ends. Refunds
/// that never wait for a PSP (sandbox, PSP-initiated, manual) need no write.
pub(crate) fn poll_entry_op(r: &Refund) -> Option<WriteOp> {
    let at_once = r.settled == Some(r.created);
    match r.status {
        RefundStatus::Pending if !r.manual => Some(poll_put(&PollEntry {
            refund: r.id,
            intent: r.payment_intent,
            due: Timestamp(r.created.ms().saturating_add(FIRST_POLL_DELAY_MS)),
            attempts: 0,
        })),
        RefundStatus::Pending => None,
        _ if r.manual || r.source == RefundSource::Psp || at_once => None,
        _ => Some(WriteOp::DeleteEntry {
            index: POLL_INDEX,
            partition: POLL_PARTITION.into(),
            sort: r.id.to_string(),
        }),
    }
}

fn poll_put(entry: &PollEntry) -> WriteOp {
    WriteOp::PutEntry {
        index: POLL_INDEX,
        partition: POLL_PARTITION.into(),
        sort: entry.refund.to_string(),
        value: serde_json::to_vec(entry).unwrap_or_default(),
    }
}

/// Refunds of one engine.
pub(crate) struct Refunds {
    ledger: Arc<dyn Ledger>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    sessions: SessionRegistry,
    intents: Arc<Intents>,
    idempotency: Arc<Idempotency>,
    routing: Arc<ChannelRouter>,
}

/// What the engine hands a refund: its stores, sessions and channels.
pub(crate) struct RefundsDeps {
    pub ledger: Arc<dyn Ledger>,
    pub clock: Arc<dyn Clock>,
    pub limits: Limits,
    pub sessions: SessionRegistry,
    pub intents: Arc<Intents>,
    pub idempotency: Arc<Idempotency>,
    pub routing: Arc<ChannelRouter>,
}

impl Refunds {
    /// Refunds on these stores, decided by these sessions, carried out by these channels.
    pub(crate) fn new(d: RefundsDeps) -> Self {
        Refunds {
            ledger: d.ledger,
            clock: d.clock,
            limits: d.limits,
            sessions: d.sessions,
            intents: d.intents,
            idempotency: d.idempotency,
            routing: d.routing,
        }
    }

    /// Refunds part or all of a succeeded intent (idempotent when a key is given).
    pub(crate) async fn create(
        &self,
        ctx: &AuthContext,
        req: CreateRefundRequest,
        idempotency_key: Option<&str>,
    ) -> EngineResult<IdempotentOutcome> {
        ctx.require(Permission::RefundsWrite)?;
        if req
            .reason
            .as_ref()
            .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS)
        {
            return Err(EngineError::invalid(
                "parameter_invalid",
                "reason",
                "reason is limited to 500 characters",
            ));
        }
        let hash = canonical_hash(&req);
        self.idempotency
            .run(ctx, "refunds", idempotency_key, hash, |spec| {
                self.create_now(ctx, req, spec)
            })
            .await
    }

    /// Writes the refund through the intent's session, then asks the PSP, and answers with the
    /// refund as it stands after the PSP's answer.
    async fn create_now(
        &self,
        ctx: &AuthContext,
        req: CreateRefundRequest,
        spec: Option<IdempotencySpec>,
    ) -> EngineResult<IdempotentOutcome> {
        let pi = self.refunded_intent(ctx, &req.payment_intent).await?;
        let amount = match &req.amount {
            None => None,
            Some(a) => Some(
                Money::from_parts(a.value, &a.currency)
                    .map_err(|e| EngineError::money("amount", e))?,
            ),
        };
        let adapter = self.adapter(&pi).await?;
        let mode = if pi.channel == "sandbox" {
            RefundMode::Instant
        } else if adapter.refunds_manually() {
            RefundMode::Manual
        } else {
            RefundMode::Psp
        };
        let cmd = IntentCommand::Refund {
            refund_id: RefundId::new_at(self.clock.now().ms()),
            amount,
            reason: req.reason.clone(),
            mode,
        };
        let applied = self.sessions.command(pi.id, cmd, spec.clone()).await?;
        let mut refund = applied
            .refund
            .ok_or_else(|| EngineError::Internal("refund command produced no refund".into()))?;
        if mode == RefundMode::Psp {
            let answer = self
                .routing
                .hub()
                .refund(&pi.channel, &adapter, &request(&applied.intent, &refund))
                .await;
            if let Some(settled) = self.apply_answer(&refund, answer).await? {
                refund = settled;
            }
        }
        let body =
            serde_json::to_string(&refund).map_err(|e| EngineError::Internal(e.to_string()))?;
        if let (Some(spec), false) = (&spec, refund.status == RefundStatus::Pending) {
            // A replay answers what this request answers, not the `pending` first written.
            let mut b = WriteBatch::new();
            b.push(idempotency_record(
                spec,
                201,
                body.clone(),
                self.clock.now(),
            ));
            self.ledger.submit(b).await?;
        }
        Ok(IdempotentOutcome {
            status: 201,
            body,
            replayed: false,
        })
    }

    /// The adapter that refunds an intent: the merchant's configured channel, or a built-in.
    async fn adapter(&self, pi: &PaymentIntent) -> EngineResult<Arc<dyn ChannelAdapter>> {
        self.routing
            .adapter_for(pi.merchant_id, pi.livemode, &pi.channel)
            .await?
            .ok_or_else(|| EngineError::Conflict {
                code: "channel_not_configured",
                message: format!(
                    "channel `{}` of payment intent {} is no longer configured; configure it again to refund",
                    pi.channel, pi.id
                ),
            })
    }

    /// Ends a pending refund as the PSP answered; `None` while it stays pending (the poller
    /// or a callback will end it).
    async fn apply_answer(
        &self,
        refund: &Refund,
        answer: Result<ChannelRefund, ChannelError>,
    ) -> EngineResult<Option<Refund>> {
        let (outcome, psp_reference) = match answer {
            Ok(ChannelRefund {
                state: ChannelRefundState::Succeeded,
                psp_reference,
            }) => (RefundOutcome::Succeeded, psp_reference),
            Ok(ChannelRefund {
                state: ChannelRefundState::Failed { reason },
                psp_reference,
            }) => (RefundOutcome::Failed { reason }, psp_reference),
            Err(ChannelError::Rejected(reason)) => (RefundOutcome::Failed { reason }, None),
            Ok(_) => return Ok(None),
            Err(ChannelError::Unavailable(why)) => {
                // The PSP may or may not have the refund: the poller asks later and re-sends
                // it under the same id if the PSP never got it.
                tracing::warn!(refund = %refund.id, error = %why, "refund left pending: channel unavailable");
                return Ok(None);
            }
        };
        self.settle(refund, outcome, psp_reference, Vec::new())
            .await
    }

    /// Ends a pending refund through its intent's session, with `records` in the same batch.
    /// `None` when it had already ended (a callback and the poller may race).
    pub(crate) async fn settle(
        &self,
        refund: &Refund,
        outcome: RefundOutcome,
        psp_reference: Option<String>,
        records: Vec<WriteOp>,
    ) -> EngineResult<Option<Refund>> {
        let cmd = IntentCommand::SettleRefund {
            refund: Box::new(refund.clone()),
            outcome,
            psp_reference,
        };
        match self
            .sessions
            .command_with_records(refund.payment_intent, cmd, records)
            .await
        {
            Ok(applied) => Ok(applied.refund),
            Err(EngineError::InvalidStateTransition { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The merchant's confirmation of a manual refund (a channel without a refund API).
    pub(crate) async fn confirm(
        &self,
        ctx: &AuthContext,
        id: &str,
        req: ConfirmRefundRequest,
    ) -> EngineResult<Refund> {
        ctx.require(Permission::RefundsWrite)?;
        let refund = self.get(ctx, id).await?;
        if !refund.manual {
            return Err(EngineError::Conflict {
                code: "refund_not_manual",
                message: format!(
                    "refund {id} is carried out by the PSP; only manual refunds are confirmed"
                ),
            });
        }
        let outcome = match req.status {
            RefundStatus::Succeeded => RefundOutcome::Succeeded,
            RefundStatus::Failed => RefundOutcome::Failed {
                reason: req
                    .failure_reason
                    .unwrap_or_else(|| "not returned to the payer".into())
                    .chars()
                    .take(MAX_REASON_CHARS)
                    .collect(),
            },
            RefundStatus::Pending => {
                return Err(EngineError::invalid(
                    "parameter_invalid",
                    "status",
                    "status must be `succeeded` or `failed`",
                ));
            }
        };
        let reference = req.reference.map(|r| r.chars().take(200).collect());
        self.settle(&refund, outcome, reference, Vec::new())
            .await?
            .ok_or_else(|| EngineError::InvalidStateTransition {
                object: "refund",
                from: refund.status.as_str().to_string(),
                action: "confirm".into(),
            })
    }

    /// The caller's intent named in the request; an unknown one is a bad parameter here, not
    /// a missing resource.
    async fn refunded_intent(&self, ctx: &AuthContext, id: &str) -> EngineResult<PaymentIntent> {
        match self.intents.owned(ctx, id).await {
            Err(EngineError::NotFound { .. }) => Err(EngineError::Invalid {
                code: "resource_missing",
                message: format!(
                    "no payment intent with id `{}`",
                    id.chars().take(60).collect::<String>()
                ),
                param: Some("payment_intent".into()),
            }),
            other => other,
        }
    }

    // ------------------------------------------------------------ poller

    /// One poller round: asks the PSP about every pending refund whose query is due (at most
    /// [`MAX_POLLED_PER_ROUND`]), ends those the PSP settled, re-sends those the PSP never
    /// received, and schedules the next query of the rest. Returns how many were looked at.
    pub(crate) async fn poll_due(&self) -> EngineResult<usize> {
        // Cluster mode: one node at a time polls (ending a refund twice is harmless, asking
        // every PSP once per node is not).
        if let Some(own) = self.sessions.ownership()
            && !own.lead("sweeper:refunds", POLL_LEADERSHIP).await?
        {
            return Ok(0);
        }
        let now = self.clock.now();
        let rows = self
            .ledger
            .scan_entries(
                POLL_INDEX,
                POLL_PARTITION,
                &EntryRange::all(MAX_POLLED_PER_ROUND * 5),
            )
            .await?;
        let mut seen = 0;
        for (_, bytes) in rows {
            let Ok(entry) = serde_json::from_slice::<PollEntry>(&bytes) else {
                continue;
            };
            if entry.due > now {
                continue;
            }
            if let Err(e) = self.poll_one(&entry).await {
                tracing::warn!(refund = %entry.refund, error = %e, "refund status poll failed");
            }
            seen += 1;
            if seen >= MAX_POLLED_PER_ROUND {
                break;
            }
        }
        Ok(seen)
    }

    /// Asks the PSP about one pending refund and acts on the answer.
    async fn poll_one(&self, entry: &PollEntry) -> EngineResult<()> {
        let refund = self.ledger.get_refund(entry.refund).await?;
        let intent = self.ledger.get_intent(entry.intent).await?;
        let (Some(refund), Some(pi)) = (refund, intent) else {
            return self.drop_entry(entry).await;
        };
        if refund.status != RefundStatus::Pending || refund.manual {
            return self.drop_entry(entry).await;
        }
        let adapter = self.adapter(&pi).await?;
        let hub = self.routing.hub();
        let req = request(&pi, &refund);
        let mut answer = hub.refund_status(&pi.channel, &adapter, &req).await;
        if matches!(&answer, Ok(a) if a.state == ChannelRefundState::NotFound) {
            // The creating call never reached the PSP: send it now, under the same id.
            answer = hub.refund(&pi.channel, &adapter, &req).await;
        }
        if self.apply_answer(&refund, answer).await?.is_none() {
            self.reschedule(entry).await?;
        }
        Ok(())
    }

    /// Schedules the next query of a refund the PSP has not settled yet.
    async fn reschedule(&self, entry: &PollEntry) -> EngineResult<()> {
        // Still pending? (It may have ended while we asked; then leave the entry deleted.)
        match self.ledger.get_refund(entry.refund).await? {
            Some(r) if r.status == RefundStatus::Pending => {}
            _ => return Ok(()),
        }
        let delays = &self.routing.hub().config().refund_poll_delays_ms;
        let idx = (entry.attempts as usize).min(delays.len().saturating_sub(1));
        let wait = delays.get(idx).copied().unwrap_or(3_600_000).max(1_000);
        let next = PollEntry {
            due: Timestamp(
                self.clock
                    .now()
                    .ms()
                    .saturating_add(i64::try_from(wait).unwrap_or(i64::MAX)),
            ),
            attempts: entry.attempts.saturating_add(1),
            ..entry.clone()
        };
        let mut b = WriteBatch::new();
        b.push(poll_put(&next));
        self.ledger.submit(b).await?;
        Ok(())
    }

    async fn drop_entry(&self, entry: &PollEntry) -> EngineResult<()> {
        let mut b = WriteBatch::new();
        b.push(WriteOp::DeleteEntry {
            index: POLL_INDEX,
            partition: POLL_PARTITION.into(),
            sort: entry.refund.to_string(),
        });
        self.ledger.submit(b).await?;
        Ok(())
    }

    // ------------------------------------------------------------ reads

    /// Refunds, optionally of one intent, newest first.
    pub(crate) async fn list(
        &self,
        ctx: &AuthContext,
        intent: Option<&str>,
        limit: Option<usize>,
        offset: Option<usize>,
    ) -> EngineResult<(Page<Refund>, PageRequest)> {
        ctx.require(Permission::RefundsRead)?;
        let p = page(&self.limits, limit, offset)?;
        let pid = match intent {
            None => None,
            Some(s) => Some(PaymentIntentId::parse(s).map_err(|e| {
                EngineError::invalid("parameter_invalid", "payment_intent", e.to_string())
            })?),
        };
        Ok((
            self.ledger
                .list_refunds(ctx.merchant_id, ctx.livemode, pid, p)
                .await?,
            p,
        ))
    }

    /// One refund.
    pub(crate) async fn get(&self, ctx: &AuthContext, id: &str) -> EngineResult<Refund> {
        ctx.require(Permission::RefundsRead)?;
        let rid = RefundId::parse(id).map_err(|_| EngineError::not_found("refund", id))?;
        match self.ledger.get_refund(rid).await? {
            Some(r) if ctx.owns(r.merchant_id, r.livemode) => Ok(r),
            _ => Err(EngineError::not_found("refund", id)),
        }
    }
}

/// What the PSP is asked about `refund` of `pi`.
fn request(pi: &PaymentIntent, refund: &Refund) -> ChannelRefundRequest {
    ChannelRefundRequest {
        refund_id: refund.id,
        intent_id: pi.id,
        channel_reference: pi.channel_reference.clone(),
        amount: refund.amount,
        captured: pi.amount,
        reason: refund.reason.clone(),
        livemode: pi.livemode,
    }
}
