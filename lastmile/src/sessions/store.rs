//! Holding, loading and committing a session: the reservation that serialises changes to one
//! session on every node, the look-ups by reference, token and order, and the [`Change`] a
//! mutation collects and commits as one ledger batch. No business rules: those live in the
//! files that call `ps_mutate`.

use super::{
    LogEntry, MAX_LOG_ENTRIES, PaymentSession, SESSION, SESSION_LOG, SESSIONS_BY_DAY, SessionId,
    TOKEN_BYTES,
};
use crate::LastMile;
use crate::daily::day;
use crate::orders::{OrderStatus, order_write_ops};
use crate::stream;
use base64::Engine as _;
use ipay_engine::clock::Timestamp;
use ipay_engine::error::{EngineError, EngineResult};
use ipay_engine::ids::EventId;
use ipay_engine::model::Event;
use ipay_engine::store::{WriteBatch, WriteOp};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt;
use std::time::{Duration, Instant};

pub(super) fn internal(e: impl fmt::Display) -> EngineError {
    EngineError::Internal(e.to_string())
}

/// The look-up key of a pay token: its SHA-256, so the ledger never holds a usable token
/// outside the session record.
pub(super) fn token_key(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh pay token.
pub(super) fn new_token() -> String {
    let bytes: [u8; TOKEN_BYTES] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Changes collected while a session is held, committed as one batch.
pub(super) struct Change {
    /// The ledger writes of the change.
    pub(super) batch: WriteBatch,
    /// Public events, written and streamed after the commit.
    pub(super) events: Vec<Event>,
}

impl Change {
    /// An empty change.
    pub(super) fn new() -> Self {
        Change {
            batch: WriteBatch::new(),
            events: Vec::new(),
        }
    }

    /// Appends a log entry (dropped past the cap).
    fn log(
        &mut self,
        s: &mut PaymentSession,
        id: String,
        at: Timestamp,
        t: &str,
        detail: serde_json::Value,
    ) {
        if s.log_entries >= MAX_LOG_ENTRIES {
            s.log_dropped += 1;
            return;
        }
        s.log_entries += 1;
        let e = LogEntry {
            id: id.clone(),
            at,
            entry_type: t.into(),
            detail,
        };
        self.batch.push(WriteOp::PutEntry {
            index: SESSION_LOG,
            partition: s.id.to_string(),
            sort: id,
            value: serde_json::to_vec(&e).unwrap_or_default(),
        });
    }

    /// A private log entry (not an event).
    pub(super) fn note(
        &mut self,
        s: &mut PaymentSession,
        at: Timestamp,
        t: &str,
        detail: serde_json::Value,
    ) {
        let id = format!("log_{}", &EventId::new_at(at.ms()).to_string()[4..]);
        self.log(s, id, at, t, detail);
    }

    /// A public event (webhooks, SSE) that is also logged.
    pub(super) fn event(
        &mut self,
        s: &mut PaymentSession,
        at: Timestamp,
        t: &str,
        data: &impl Serialize,
    ) {
        let e = Event::new(s.merchant_id, s.livemode, t, at, s.id.to_string(), data);
        let detail = serde_json::from_str(e.data.get()).unwrap_or_default();
        self.log(s, e.id.to_string(), at, t, detail);
        self.batch.push(stream::index_op(&e));
        self.events.push(e);
    }
}

impl LastMile {
    /// Takes the reservation `scope` (waiting up to 5 s for another holder).
    pub(super) async fn ps_hold(&self, scope: &str) -> EngineResult<Held> {
        let hot = self.engine.hot();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(r) = hot.reserve(scope, Duration::from_secs(30)).await? {
                return Ok(Held(r));
            }
            if Instant::now() >= deadline {
                return Err(EngineError::Conflict {
                    code: "session_busy",
                    message: "the payment session is being changed by another request; retry"
                        .into(),
                });
            }
            hot.wait_released(scope, deadline.saturating_duration_since(Instant::now()))
                .await;
        }
    }

    pub(super) async fn ps_load(&self, id: SessionId) -> EngineResult<Option<PaymentSession>> {
        match self
            .engine
            .ledger()
            .get_record(SESSION, &id.to_string())
            .await?
        {
            Some(raw) => Ok(Some(serde_json::from_slice(&raw).map_err(internal)?)),
            None => Ok(None),
        }
    }

    pub(super) async fn ps_lookup(
        &self,
        kind: &'static str,
        key: &str,
    ) -> EngineResult<Option<PaymentSession>> {
        let Some(raw) = self.engine.ledger().get_record(kind, key).await? else {
            return Ok(None);
        };
        match SessionId::parse(&String::from_utf8_lossy(&raw)).ok() {
            Some(id) => self.ps_load(id).await,
            None => Ok(None),
        }
    }

    /// Commits a change to a held session: record, list entry, log, events; then tells live
    /// subscribers.
    pub(super) async fn ps_commit(
        &self,
        s: &mut PaymentSession,
        mut c: Change,
    ) -> EngineResult<()> {
        s.updated = self.engine.clock().now();
        let json = serde_json::to_vec(&*s).map_err(internal)?;
        c.batch.push(WriteOp::PutRecord {
            kind: SESSION,
            key: s.id.to_string(),
            value: json.clone(),
        });
        c.batch.push(WriteOp::PutEntry {
            index: SESSIONS_BY_DAY,
            partition: format!("{}:{}", s.merchant_id, day(s.id.timestamp_ms())),
            sort: s.id.to_string(),
            value: json,
        });
        for e in &c.events {
            c.batch.push(WriteOp::PutEvent(e.clone()));
        }
        self.engine.ledger().submit(c.batch).await?;
        stream::publish(self.engine.hot().as_ref(), &c.events).await;
        Ok(())
    }

    /// Runs `f` on the session while holding it; `f` records its changes in the `Change`.
    pub(super) async fn ps_mutate<T>(
        &self,
        id: SessionId,
        f: impl AsyncFnOnce(&mut PaymentSession, &mut Change) -> EngineResult<T>,
    ) -> EngineResult<(PaymentSession, T)> {
        let guard = self.ps_hold(&format!("lm:ps:{id}")).await?;
        let out = async {
            let mut s = self
                .ps_load(id)
                .await?
                .ok_or_else(|| EngineError::not_found("payment session", id))?;
            let mut c = Change::new();
            let v = f(&mut s, &mut c).await?;
            if !c.batch.ops.is_empty() || !c.events.is_empty() {
                self.ps_commit(&mut s, c).await?;
            }
            Ok((s, v))
        }
        .await;
        guard.release(self).await;
        out
    }

    /// Moves the session's order to `status` in the same batch (never backwards).
    pub(super) async fn ps_order_status_ops(
        &self,
        s: &PaymentSession,
        status: OrderStatus,
        c: &mut Change,
    ) {
        match self.get_order(s.merchant_id, &s.order_id).await {
            Ok(mut o) => {
                if o.status == status || o.status == OrderStatus::Cancelled {
                    return;
                }
                o.status = status;
                o.updated = self.engine.clock().now();
                if let Ok(ops) = order_write_ops(&o) {
                    c.batch.ops.extend(ops);
                }
            }
            Err(e) => tracing::warn!(error = %e, session = %s.id, "order of session unreadable"),
        }
    }
}

/// A held reservation; give it back with [`Held::release`].
pub(super) struct Held(ipay_engine::store::Reservation);

impl Held {
    /// Gives the reservation back; a failure is logged and the reservation lapses at its TTL.
    pub(super) async fn release(self, lm: &LastMile) {
        if let Err(e) = lm.engine.hot().release(self.0).await {
            tracing::warn!(error = %e, "releasing a session reservation failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pay_tokens_carry_256_random_bits_in_base64url() {
        let t = new_token();
        assert_eq!(t.len(), 43);
        assert!(
            t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(t, new_token());
    }
}
