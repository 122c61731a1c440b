//! PSP callbacks: finding the intent a callback claims to be about, verifying it with that
//! merchant's channel credentials, skipping notifications applied before, and settling the
//! intent through its payment session.
//!
//! The notification's de-duplication record is committed in the same batch as the state
//! change it causes (see [`SessionRegistry::command_with_records`]), so a replayed
//! notification is acknowledged and never applied twice, even across a crash between the
//! two. Wire formats and signatures are the adapters' business; rate limits and the records
//! themselves belong to [`crate::channels`].
//!
//! Refund notifications go the same way: one about our own refund ends it (once, whoever
//! reports first: callback, PSP answer or poller); one reporting the PSP's refunded total
//! records the part beyond our refunds as a PSP-initiated refund.

use crate::channel::{
    CallbackAck, CallbackError, CallbackNotice, CallbackOutcome, ChannelAdapter,
    ChannelRefundState, InboundCallback, RefundReport,
};
use crate::channels::{ChannelHub, MAX_NOTIFICATION_ID_LEN};
use crate::clock::Clock;
use crate::error::{EngineError, EngineResult};
use crate::ids::{PaymentIntentId, RefundId};
use crate::model::{Event, IntentCommand, IntentStatus, PaymentIntent, RefundOutcome};
use crate::routing::ChannelRouter;
use crate::session::SessionRegistry;
use crate::settlement::Settlement;
use crate::store::{Ledger, WriteBatch, WriteOp};
use std::sync::Arc;

/// Longest failure reason kept from a PSP, characters.
const MAX_REASON_CHARS: usize = 500;
/// Longest payer identifier kept from a PSP, characters.
const MAX_PAYER_CHARS: usize = 200;

/// The intent a callback is about and the adapter that verifies it.
struct Target {
    /// The intent id as the callback spells it.
    claimed: String,
    intent: PaymentIntent,
    adapter: Arc<dyn ChannelAdapter>,
}

/// Callback handling of one engine.
pub(crate) struct Callbacks {
    ledger: Arc<dyn Ledger>,
    clock: Arc<dyn Clock>,
    sessions: SessionRegistry,
    routing: Arc<ChannelRouter>,
    settlement: Arc<Settlement>,
}

impl Callbacks {
    /// Callbacks settling intents through these sessions; successes carry a settlement quote.
    pub(crate) fn new(
        ledger: Arc<dyn Ledger>,
        clock: Arc<dyn Clock>,
        sessions: SessionRegistry,
        routing: Arc<ChannelRouter>,
        settlement: Arc<Settlement>,
    ) -> Self {
        Callbacks {
            ledger,
            clock,
            sessions,
            routing,
            settlement,
        }
    }

    /// Handles a PSP callback: finds the intent it claims to be about, verifies it with that
    /// merchant's credentials, skips notifications applied before, and settles the intent
    /// through its payment session. Returns what to answer the PSP.
    pub(crate) async fn handle(
        &self,
        channel: &str,
        cb: &InboundCallback,
    ) -> EngineResult<CallbackAck> {
        let target = self.target(channel, cb).await?;
        let notice = self.verify(channel, &target, cb)?;
        let outcome = self
            .apply(channel, &target.claimed, &target.intent, &notice)
            .await?;
        count(channel, outcome);
        Ok(target.adapter.callback_ack())
    }

    /// The intent the callback names (read without verifying anything) and the adapter
    /// built from its merchant's credentials, after the provider and merchant rate limits.
    async fn target(&self, channel: &str, cb: &InboundCallback) -> EngineResult<Target> {
        let hub = self.routing.hub();
        let unknown = || EngineError::not_found("channel", channel);
        if !hub.knows(channel) {
            return Err(unknown());
        }
        hub.check_provider_rate(channel)?;
        let factory = hub.factory().ok_or_else(unknown)?;
        let claimed = factory
            .peek_intent(channel, cb)
            .ok_or_else(|| EngineError::Invalid {
                code: "parameter_invalid",
                message: format!("the callback names no payment intent `{channel}` knows"),
                param: None,
            })?;
        let missing = || EngineError::not_found("payment intent", &claimed);
        let pid = PaymentIntentId::parse(&claimed).map_err(|_| missing())?;
        let intent = match self.ledger.get_intent(pid).await? {
            Some(pi) if pi.channel == channel => pi,
            _ => return Err(missing()),
        };
        hub.check_merchant_rate(intent.merchant_id)?;
        let adapter = hub
            .configured_adapter(intent.merchant_id, intent.livemode, channel)
            .await?
            .ok_or_else(|| {
                EngineError::invalid(
                    "signature_mismatch",
                    "signature",
                    "the merchant of this payment intent has no credentials for this channel to verify with",
                )
            })?;
        Ok(Target {
            claimed,
            intent,
            adapter,
        })
    }

    /// What the callback reports, once its signature verifies, it is about the intent it
    /// claimed, and its notification id is usable as a de-duplication key.
    fn verify(
        &self,
        channel: &str,
        target: &Target,
        cb: &InboundCallback,
    ) -> EngineResult<CallbackNotice> {
        let pid = target.intent.id;
        let notice = match target.adapter.verify_callback(cb, self.clock.now()) {
            Ok(n) => n,
            Err(e) => {
                count(channel, "rejected");
                tracing::warn!(channel, intent = %pid, error = %e, "callback refused");
                return Err(callback_error(e));
            }
        };
        if notice.intent_id != pid {
            count(channel, "rejected");
            return Err(EngineError::invalid(
                "signature_mismatch",
                "signature",
                "the signed notification is about another payment intent",
            ));
        }
        let nid = notice.notification_id.as_str();
        if nid.is_empty() || nid.len() > MAX_NOTIFICATION_ID_LEN || nid.contains('\0') {
            return Err(EngineError::Invalid {
                code: "parameter_invalid",
                message: format!(
                    "the notification id must be 1 to {MAX_NOTIFICATION_ID_LEN} bytes"
                ),
                param: None,
            });
        }
        Ok(notice)
    }

    /// Applies a verified notice about `intent` once: a notification seen before changes
    /// nothing. Returns the outcome label (for metrics), which is also stored in the
    /// notification's record.
    async fn apply(
        &self,
        channel: &str,
        claimed: &str,
        intent: &PaymentIntent,
        notice: &CallbackNotice,
    ) -> EngineResult<&'static str> {
        let hub = self.routing.hub();
        let nid = notice.notification_id.as_str();
        if hub.notification_seen(channel, nid).await? {
            return Ok("duplicate");
        }
        let note = Note {
            hub,
            channel,
            nid,
            claimed,
            intent,
        };
        let (cmd, label) = match &notice.outcome {
            CallbackOutcome::Paid { amount, .. } if *amount != intent.amount => {
                // Money moved, but not the amount asked for: a person must look at it.
                tracing::warn!(channel, intent = %intent.id, "callback amount differs from the intent");
                let ev = note.flag(
                    "payment_intent.amount_mismatch",
                    serde_json::json!({"expected": intent.amount, "received": amount}),
                    &*self.clock,
                );
                self.record(&note, Some(ev), "amount_mismatch").await?;
                return Ok("amount_mismatch");
            }
            CallbackOutcome::Paid {
                channel_reference,
                payer,
                ..
            } => (
                IntentCommand::Succeed {
                    channel_reference: channel_reference.clone(),
                    payer: payer
                        .as_ref()
                        .map(|p| p.chars().take(MAX_PAYER_CHARS).collect()),
                    settlement: self.settlement.quote(intent).await?.map(Box::new),
                },
                "succeeded",
            ),
            CallbackOutcome::Failed { reason } => {
                let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
                (IntentCommand::Fail { reason }, "failed")
            }
            CallbackOutcome::Refund(report) => match self.refund_command(&note, report).await? {
                Some(found) => found,
                None => {
                    self.record(&note, None, "ignored").await?;
                    return Ok("ignored");
                }
            },
            CallbackOutcome::Ignored => {
                self.record(&note, None, "ignored").await?;
                return Ok("ignored");
            }
        };
        self.settle(&note, cmd, label).await
    }

    /// Sends the notice's command to the intent's session with the notification record in
    /// the same batch. A session that refuses the move (the intent already left `pending`)
    /// writes nothing; the record then says so, and money collected for an intent that is no
    /// longer payable is flagged, not lost.
    async fn settle(
        &self,
        note: &Note<'_>,
        cmd: IntentCommand,
        label: &'static str,
    ) -> EngineResult<&'static str> {
        let paid = matches!(cmd, IntentCommand::Succeed { .. });
        let mut records = vec![note.record(label)];
        if paid {
            records.extend(self.settlement.success_ops(note.intent));
        }
        match self
            .sessions
            .command_with_records(note.intent.id, cmd, records)
            .await
        {
            Ok(_) => Ok(label),
            Err(EngineError::Conflict {
                code: "refund_already_recorded",
                ..
            }) => {
                self.record(note, None, "no_change").await?;
                Ok("no_change")
            }
            Err(EngineError::InvalidStateTransition { from, .. }) => {
                if paid && from != IntentStatus::Succeeded.as_str() {
                    let ev = note.flag(
                        "payment_intent.paid_after_close",
                        serde_json::json!({"status": from}),
                        &*self.clock,
                    );
                    self.record(note, Some(ev), "paid_after_close").await?;
                    Ok("paid_after_close")
                } else {
                    self.record(note, None, "no_change").await?;
                    Ok("no_change")
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The session command a refund report asks for, `None` when it changes nothing (still
    /// pending, a refund that is not this intent's, another currency).
    async fn refund_command(
        &self,
        note: &Note<'_>,
        report: &RefundReport,
    ) -> EngineResult<Option<(IntentCommand, &'static str)>> {
        match report {
            RefundReport::Own {
                refund_id,
                state,
                psp_reference,
            } => {
                let outcome = match state {
                    ChannelRefundState::Succeeded => RefundOutcome::Succeeded,
                    ChannelRefundState::Failed { reason } => RefundOutcome::Failed {
                        reason: reason.chars().take(MAX_REASON_CHARS).collect(),
                    },
                    ChannelRefundState::Pending | ChannelRefundState::NotFound => return Ok(None),
                };
                let label = match outcome {
                    RefundOutcome::Succeeded => "refund_succeeded",
                    RefundOutcome::Failed { .. } => "refund_failed",
                };
                let refund = match self.ledger.get_refund(*refund_id).await? {
                    Some(r) if r.payment_intent == note.intent.id => r,
                    _ => {
                        tracing::warn!(channel = note.channel, refund = %refund_id, "refund notification about an unknown refund");
                        return Ok(None);
                    }
                };
                let cmd = IntentCommand::SettleRefund {
                    refund: Box::new(refund),
                    outcome,
                    psp_reference: psp_reference.clone(),
                };
                Ok(Some((cmd, label)))
            }
            RefundReport::Total {
                refunded,
                psp_reference,
            } => {
                if refunded.currency != note.intent.amount.currency {
                    tracing::warn!(channel = note.channel, intent = %note.intent.id, "refund report in another currency");
                    return Ok(None);
                }
                let cmd = IntentCommand::RecordPspRefunds {
                    refund_id: RefundId::new_at(self.clock.now().ms()),
                    total: refunded.value,
                    psp_reference: psp_reference.clone(),
                };
                Ok(Some((cmd, "refund_recorded")))
            }
        }
    }

    /// Commits the notification record, with a flag event when there is one, for a notice
    /// that changes no intent.
    async fn record(
        &self,
        note: &Note<'_>,
        flag: Option<Event>,
        label: &'static str,
    ) -> EngineResult<()> {
        let mut b = WriteBatch::new();
        if let Some(ev) = flag {
            b.push(WriteOp::PutEvent(ev));
        }
        b.push(note.record(label));
        self.ledger.submit(b).await?;
        Ok(())
    }
}

/// One notification about one intent, for building its record and flag events.
struct Note<'a> {
    hub: &'a ChannelHub,
    channel: &'a str,
    nid: &'a str,
    claimed: &'a str,
    intent: &'a PaymentIntent,
}

impl Note<'_> {
    /// The write marking the notification applied with this outcome.
    fn record(&self, label: &str) -> WriteOp {
        self.hub
            .notification_op(self.channel, self.nid, self.claimed, label)
    }

    /// An event for a person to look at: the notification could not be applied as sent.
    fn flag(&self, event_type: &str, detail: serde_json::Value, clock: &dyn Clock) -> Event {
        Event::new(
            self.intent.merchant_id,
            self.intent.livemode,
            event_type,
            clock.now(),
            self.intent.id.to_string(),
            &serde_json::json!({
                "payment_intent": self.intent.id.to_string(),
                "channel": self.channel,
                "notification_id": self.nid,
                "detail": detail,
            }),
        )
    }
}

/// Counts a callback by channel and outcome.
fn count(channel: &str, outcome: &str) {
    metrics::counter!("ipay_channel_callbacks_total", "channel" => channel.to_string(), "outcome" => outcome.to_string()).increment(1);
}

fn callback_error(e: CallbackError) -> EngineError {
    match e {
        CallbackError::SignatureMismatch(m) => {
            EngineError::invalid("signature_mismatch", "signature", m)
        }
        CallbackError::Stale(m) => EngineError::invalid("timestamp_stale", "timestamp", m),
        CallbackError::Malformed(m) => EngineError::Invalid {
            code: "parameter_invalid",
            message: m,
            param: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::ChannelHub;
    use crate::clock::ManualClock;
    use crate::clock::Timestamp;
    use crate::error::StoreError;
    use crate::ids::{ApiKeyId, EventId, MerchantId, ServiceId};
    use crate::merchants::MerchantLocks;
    use crate::model::{ApiKey, Merchant, Refund, Service};
    use crate::money::Money;
    use crate::session::{SessionConfig, SessionContext};
    use crate::store::embedded::{EmbeddedLedger, EmbeddedOptions};
    use crate::store::{
        CommitTicket, Completion, EntryRange, EventQuery, IdempotencyRecord, IntentQuery, Page,
        PageRequest, StatusCounts,
    };
    use parking_lot::Mutex;

    /// A ledger that keeps a copy of every batch submitted to it, in order.
    struct Recording {
        inner: Arc<EmbeddedLedger>,
        batches: Mutex<Vec<WriteBatch>>,
    }

    impl Recording {
        fn batches(&self) -> Vec<WriteBatch> {
            self.batches.lock().clone()
        }
    }

    #[async_trait::async_trait]
    impl Ledger for Recording {
        fn submit(&self, batch: WriteBatch) -> CommitTicket {
            self.batches.lock().push(batch.clone());
            self.inner.submit(batch)
        }
        fn submit_then(&self, batch: WriteBatch, done: Completion) {
            self.batches.lock().push(batch.clone());
            self.inner.submit_then(batch, done)
        }
        async fn get_merchant(&self, id: MerchantId) -> Result<Option<Merchant>, StoreError> {
            self.inner.get_merchant(id).await
        }
        async fn get_api_key(&self, id: ApiKeyId) -> Result<Option<ApiKey>, StoreError> {
            self.inner.get_api_key(id).await
        }
        async fn find_api_key_by_hash(&self, hash: [u8; 32]) -> Result<Option<ApiKey>, StoreError> {
            self.inner.find_api_key_by_hash(hash).await
        }
        async fn list_api_keys(
            &self,
            merchant: MerchantId,
            livemode: bool,
        ) -> Result<Vec<ApiKey>, StoreError> {
            self.inner.list_api_keys(merchant, livemode).await
        }
        async fn get_service(&self, id: ServiceId) -> Result<Option<Service>, StoreError> {
            self.inner.get_service(id).await
        }
        async fn find_service_by_name(
            &self,
            merchant: MerchantId,
            livemode: bool,
            name: &str,
        ) -> Result<Option<Service>, StoreError> {
            self.inner
                .find_service_by_name(merchant, livemode, name)
                .await
        }
        async fn list_services(
            &self,
            merchant: MerchantId,
            livemode: bool,
            page: PageRequest,
        ) -> Result<Page<Service>, StoreError> {
            self.inner.list_services(merchant, livemode, page).await
        }
        async fn get_intent(
            &self,
            id: PaymentIntentId,
        ) -> Result<Option<PaymentIntent>, StoreError> {
            self.inner.get_intent(id).await
        }
        async fn list_intents(
            &self,
            merchant: MerchantId,
            livemode: bool,
            q: &IntentQuery,
        ) -> Result<Page<PaymentIntent>, StoreError> {
            self.inner.list_intents(merchant, livemode, q).await
        }
        async fn get_refund(&self, id: RefundId) -> Result<Option<Refund>, StoreError> {
            self.inner.get_refund(id).await
        }
        async fn list_refunds(
            &self,
            merchant: MerchantId,
            livemode: bool,
            intent: Option<PaymentIntentId>,
            page: PageRequest,
        ) -> Result<Page<Refund>, StoreError> {
            self.inner
                .list_refunds(merchant, livemode, intent, page)
                .await
        }
        async fn get_event(&self, id: EventId) -> Result<Option<Event>, StoreError> {
            self.inner.get_event(id).await
        }
        async fn list_events(
            &self,
            merchant: MerchantId,
            livemode: bool,
            q: &EventQuery,
        ) -> Result<Page<Event>, StoreError> {
            self.inner.list_events(merchant, livemode, q).await
        }
        async fn get_idempotency(
            &self,
            scope: &str,
        ) -> Result<Option<IdempotencyRecord>, StoreError> {
            self.inner.get_idempotency(scope).await
        }
        async fn pending_expiries(&self) -> Result<Vec<(PaymentIntentId, Timestamp)>, StoreError> {
            self.inner.pending_expiries().await
        }
        async fn count_intents_by_status(&self) -> Result<StatusCounts, StoreError> {
            self.inner.count_intents_by_status().await
        }
        async fn get_record(&self, kind: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get_record(kind, key).await
        }
        async fn scan_entries(
            &self,
            index: &str,
            partition: &str,
            range: &EntryRange,
        ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
            self.inner.scan_entries(index, partition, range).await
        }
    }

    struct Fixture {
        ledger: Arc<Recording>,
        hub: Arc<ChannelHub>,
        callbacks: Callbacks,
        intent: PaymentIntent,
        _dir: tempfile::TempDir,
    }

    /// Callbacks over a recording ledger, with one pending sandbox intent.
    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let inner = EmbeddedLedger::open(dir.path(), EmbeddedOptions::default()).unwrap();
        let ledger = Arc::new(Recording {
            inner,
            batches: Mutex::new(Vec::new()),
        });
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_800_000_000_000));
        let ctx = SessionContext::new(ledger.clone(), clock.clone(), SessionConfig::default());
        let sessions = SessionRegistry::start(ctx).await.unwrap();
        let routing = Arc::new(ChannelRouter::new(
            ledger.clone(),
            clock.clone(),
            Arc::new(MerchantLocks::default()),
        ));
        let now = clock.now();
        let intent = PaymentIntent {
            id: PaymentIntentId::new_at(now.ms()),
            status: IntentStatus::Pending,
            amount: Money::from_parts(1000, "EUR").unwrap(),
            amount_refunded: 0,
            refunds_pending: Vec::new(),
            payer: None,
            channel: "sandbox".into(),
            service_id: ServiceId::new_at(now.ms()),
            qr_code: "qr".into(),
            channel_reference: None,
            metadata: Default::default(),
            failure_reason: None,
            cancellation_reason: None,
            settlement: None,
            livemode: false,
            merchant_id: MerchantId::new_at(now.ms()),
            expires_at: now.plus_secs(900),
            created: now,
            updated: now,
        };
        sessions.create(intent.clone(), None).await.unwrap();
        Fixture {
            hub: routing.hub().clone(),
            callbacks: Callbacks::new(
                ledger.clone(),
                clock.clone(),
                sessions,
                routing,
                Arc::new(Settlement::new(
                    ledger.clone(),
                    Arc::new(crate::store::memory_hot::MemoryHotState::new()),
                    clock,
                )),
            ),
            ledger,
            intent,
            _dir: dir,
        }
    }

    fn notice(f: &Fixture, id: &str, outcome: CallbackOutcome) -> CallbackNotice {
        CallbackNotice {
            notification_id: id.into(),
            intent_id: f.intent.id,
            outcome,
        }
    }

    async fn apply(f: &Fixture, n: &CallbackNotice) -> &'static str {
        f.callbacks
            .apply("sandbox", &f.intent.id.to_string(), &f.intent, n)
            .await
            .unwrap()
    }

    fn is_record_of(op: &WriteOp, notification: &str) -> bool {
        matches!(op, WriteOp::PutRecord { kind, key, .. }
            if *kind == "channel_notification" && key == &format!("sandbox:{notification}"))
    }

    #[tokio::test]
    async fn a_notification_record_commits_in_the_batch_of_the_state_change_it_causes() {
        let f = fixture().await;
        let paid = notice(
            &f,
            "ntf-1",
            CallbackOutcome::Paid {
                amount: f.intent.amount,
                channel_reference: Some("psp-1".into()),
                payer: None,
            },
        );
        let before = f.ledger.batches().len();
        assert_eq!(apply(&f, &paid).await, "succeeded");

        let batches = f.ledger.batches();
        assert_eq!(batches.len(), before + 1, "one durable batch per callback");
        let ops = &batches[before].ops;
        assert!(ops.iter().any(
            |op| matches!(op, WriteOp::PutIntent(pi) if pi.status == IntentStatus::Succeeded)
        ));
        assert!(ops.iter().any(
            |op| matches!(op, WriteOp::PutEvent(e) if e.event_type == "payment_intent.succeeded")
        ));
        assert!(ops.iter().any(|op| is_record_of(op, "ntf-1")));
        assert!(f.hub.notification_seen("sandbox", "ntf-1").await.unwrap());
        assert_eq!(
            f.ledger
                .get_intent(f.intent.id)
                .await
                .unwrap()
                .unwrap()
                .status,
            IntentStatus::Succeeded
        );

        // A replay is acknowledged and writes nothing.
        assert_eq!(apply(&f, &paid).await, "duplicate");
        assert_eq!(f.ledger.batches().len(), before + 1);
    }

    #[tokio::test]
    async fn a_notification_the_session_refuses_is_recorded_without_a_state_change() {
        let f = fixture().await;
        let paid = CallbackOutcome::Paid {
            amount: f.intent.amount,
            channel_reference: None,
            payer: None,
        };
        assert_eq!(apply(&f, &notice(&f, "ntf-1", paid)).await, "succeeded");
        let before = f.ledger.batches().len();
        let failed = CallbackOutcome::Failed {
            reason: "closed".into(),
        };
        assert_eq!(apply(&f, &notice(&f, "ntf-2", failed)).await, "no_change");

        let batches = f.ledger.batches();
        assert_eq!(batches.len(), before + 1);
        let ops = &batches[before].ops;
        assert_eq!(ops.len(), 1);
        assert!(is_record_of(&ops[0], "ntf-2"));
        assert_eq!(
            f.ledger
                .get_intent(f.intent.id)
                .await
                .unwrap()
                .unwrap()
                .status,
            IntentStatus::Succeeded
        );
    }
}
