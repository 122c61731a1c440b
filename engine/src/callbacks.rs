//! PSP callbacks: finding the intent a callback claims to be about, verifying it with that
//! merchant's channel credentials, skipping notifications applied before, and settling the
//! intent through its payment session.
//!
//! A notification applied once is recorded, so a replayed notification is acknowledged and
//! never applied twice. Wire formats and signatures are the adapters' business; rate limits
//! and the records themselves belong to [`crate::channels`].

use crate::channel::{CallbackAck, CallbackError, CallbackNotice, CallbackOutcome, ChannelAdapter};
use crate::channels::{ChannelHub, MAX_NOTIFICATION_ID_LEN};
use crate::clock::Clock;
use crate::error::{EngineError, EngineResult};
use crate::ids::PaymentIntentId;
use crate::model::{Event, IntentCommand, IntentStatus, PaymentIntent};
use crate::routing::ChannelRouter;
use crate::session::SessionRegistry;
use crate::store::{Ledger, WriteBatch, WriteOp};
use std::sync::Arc;

/// Longest failure reason kept from a PSP, characters.
const MAX_REASON_CHARS: usize = 500;

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
}

impl Callbacks {
    /// Callbacks settling intents through these sessions.
    pub(crate) fn new(
        ledger: Arc<dyn Ledger>,
        clock: Arc<dyn Clock>,
        sessions: SessionRegistry,
        routing: Arc<ChannelRouter>,
    ) -> Self {
        Callbacks {
            ledger,
            clock,
            sessions,
            routing,
        }
    }

    /// Handles a PSP callback: finds the intent it claims to be about, verifies it with that
    /// merchant's credentials, skips notifications applied before, and settles the intent
    /// through its payment session. Returns what to answer the PSP.
    pub(crate) async fn handle(
        &self,
        channel: &str,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> EngineResult<CallbackAck> {
        let target = self.target(channel, headers, body).await?;
        let notice = self.verify(channel, &target, headers, body)?;
        let outcome = self
            .apply(channel, &target.claimed, &target.intent, &notice)
            .await?;
        count(channel, outcome);
        Ok(target.adapter.callback_ack())
    }

    /// The intent the callback names (read without verifying anything) and the adapter
    /// built from its merchant's credentials, after the provider and merchant rate limits.
    async fn target(
        &self,
        channel: &str,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> EngineResult<Target> {
        let hub = self.routing.hub();
        let unknown = || EngineError::not_found("channel", channel);
        if !hub.knows(channel) {
            return Err(unknown());
        }
        hub.check_provider_rate(channel)?;
        let factory = hub.factory().ok_or_else(unknown)?;
        let claimed =
            factory
                .peek_intent(channel, headers, body)
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
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> EngineResult<CallbackNotice> {
        let pid = target.intent.id;
        let notice = match target
            .adapter
            .verify_callback(headers, body, self.clock.now())
        {
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
                channel_reference, ..
            } => (
                IntentCommand::Succeed {
                    channel_reference: channel_reference.clone(),
                },
                "succeeded",
            ),
            CallbackOutcome::Failed { reason } => {
                let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
                (IntentCommand::Fail { reason }, "failed")
            }
            CallbackOutcome::Ignored => {
                self.record(&note, None, "ignored").await?;
                return Ok("ignored");
            }
        };
        self.settle(&note, cmd, label).await
    }

    /// Sends the notice's command to the intent's session, then records the notification. A
    /// session that refuses the move (the intent already left `pending`) writes nothing; the
    /// record then says so, and money collected for an intent that is no longer payable is
    /// flagged, not lost.
    async fn settle(
        &self,
        note: &Note<'_>,
        cmd: IntentCommand,
        label: &'static str,
    ) -> EngineResult<&'static str> {
        let paid = matches!(cmd, IntentCommand::Succeed { .. });
        match self.sessions.command(note.intent.id, cmd, None).await {
            Ok(_) => {
                self.record(note, None, label).await?;
                Ok(label)
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
