//! Returns of delivered parcels: a consumer (with the session's pay token) or the merchant
//! opens a return, a Sendcloud return label is made with the IPAY composite PDF, Sendcloud's
//! signed `parcel_status_changed` webhooks move it to in transit and received, and on receipt
//! the amount is refunded through the payment's channel with the engine's refund operation.
//!
//! Owns the [`ReturnCase`] record, its state machine ([`state`]), its storage, the
//! `return.opened` / `return.refunded` events and the consumer's return portal. It does not own
//! Sendcloud's wire format or signature (`ipay_adapters::sendcloud`), the refund itself (the
//! engine: amount checks, PSP call, confirmation), the payment session (`crate::sessions`), nor
//! HTTP (`gateway/src/routes/lastmile/returns.rs`).
//!
//! One concern per file: [`state`], [`open`] (opening, reading, listing, rejecting),
//! [`label`] (the Sendcloud label and the composite PDF), [`inbound`] (Sendcloud webhooks),
//! [`refund`] (the refund through the engine). This file holds the record, the settings and
//! storage.
//!
//! Storage (generic ledger records and indexes):
//! - `lm_return/{return_id}` → the return (JSON);
//! - `lm_return_token/{sha256(portal token)}`, `lm_return_session/{session_id}`,
//!   `lm_return_parcel/{sendcloud parcel id}` → return id;
//! - `lm_returns` partition `{merchant}`, sort key the return id (time-ordered) → the return.
//!
//! Every change is one ledger batch (record, list entry, events) made while holding the
//! return's reservation in [`HotState`](ipay_engine::store::HotState), so changes to one return
//! never interleave on any node.
//!
//! When is the money refunded? When the return reaches `received`, in the same request, with
//! the idempotency key `return:{id}:{attempt}`: a crash between the receipt and the refund's
//! answer leaves the return `received`, and the next read or retry repeats the refund under the
//! same key, so the engine answers the first refund rather than making a second. A refund the
//! PSP has not confirmed leaves the return `refund_pending`; it becomes `refunded` (and
//! `return.refunded` is emitted once) from the engine's committed `refund.succeeded`: the
//! settle hook writes a durable marker with that event and this node's consumer applies it
//! (`crate::sessions::settle`; a crash leaves the marker for the start-up scan or the sweep).
//! Reads of the return and `POST /api/returns/{id}/refund` check the refund too.

pub mod inbound;
pub mod label;
pub mod open;
mod refund;
pub mod state;

pub use open::{OpenReturnRequest, ReturnListParams, ReturnPage, ReturnPortal, ReturnView};
pub use state::{ReturnAction, ReturnStatus, return_transition};

use crate::LastMile;
use crate::reference::IpayReference;
use crate::sessions::SessionId;
use crate::stream;
use ipay_engine::clock::Timestamp;
use ipay_engine::error::{EngineError, EngineResult};
use ipay_engine::ids::{EventId, MerchantId, PaymentIntentId, RefundId};
use ipay_engine::model::Event;
use ipay_engine::store::{WriteBatch, WriteOp};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::{Duration, Instant};

const RETURN: &str = "lm_return";
const RETURN_BY_TOKEN: &str = "lm_return_token";
const RETURN_BY_SESSION: &str = "lm_return_session";
const RETURN_BY_PARCEL: &str = "lm_return_parcel";
const RETURNS: &str = "lm_returns";

/// `[lastmile.returns]` in `ipay.toml`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReturnsConfig {
    /// Sendcloud API origin (`https://panel.sendcloud.sc`; tests use the simulator).
    pub sendcloud_base_url: String,
    /// Sendcloud public key (HTTP Basic user). Without both keys, labels answer 503.
    pub sendcloud_public_key: Option<String>,
    /// Sendcloud secret key (HTTP Basic password; also the webhook signing key).
    pub sendcloud_secret_key: Option<String>,
    /// Origin of the consumer's return portal link `{portal_base_url}/returns/{token}`.
    pub portal_base_url: String,
    /// Weight declared on return parcels, grams.
    pub default_weight_grams: u32,
    /// Longest reason a consumer may give, characters.
    pub max_reason_chars: usize,
    /// Days after delivery a consumer may still open a return.
    pub window_days: i64,
}

impl Default for ReturnsConfig {
    fn default() -> Self {
        ReturnsConfig {
            sendcloud_base_url: "https://panel.sendcloud.sc".into(),
            sendcloud_public_key: None,
            sendcloud_secret_key: None,
            portal_base_url: "https://pay.ipay.global".into(),
            default_weight_grams: 1_000,
            max_reason_chars: 500,
            window_days: 30,
        }
    }
}

impl fmt::Debug for ReturnsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReturnsConfig")
            .field("sendcloud_base_url", &self.sendcloud_base_url)
            .field("sendcloud_public_key", &self.sendcloud_public_key)
            .field(
                "sendcloud_secret_key",
                &self.sendcloud_secret_key.as_ref().map(|_| "***"),
            )
            .field("portal_base_url", &self.portal_base_url)
            .field("default_weight_grams", &self.default_weight_grams)
            .field("max_reason_chars", &self.max_reason_chars)
            .field("window_days", &self.window_days)
            .finish()
    }
}

/// Who opened a return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Opener {
    Consumer,
    Merchant,
}

/// One entry of a return's history (kept on the record, at most [`MAX_HISTORY`]).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReturnHistory {
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    pub status: ReturnStatus,
    /// What moved it (`consumer`, `merchant`, `sendcloud:11 Delivered`, `refund re_…`).
    pub note: String,
}

/// Most history entries a return keeps.
pub const MAX_HISTORY: usize = 64;

/// A stored return.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReturnCase {
    /// `ret_` + a time-ordered ULID body.
    pub id: String,
    pub merchant_id: MerchantId,
    pub livemode: bool,
    pub session_id: SessionId,
    pub order_id: String,
    pub reference: IpayReference,
    /// Bearer capability of the return portal (256 random bits).
    pub portal_token: String,
    pub status: ReturnStatus,
    pub opened_by: Opener,
    pub reason: Option<String>,
    /// Minor units to refund.
    pub amount: i64,
    pub currency: String,
    /// The intent that paid the parcel (what is refunded).
    pub payment_intent: PaymentIntentId,
    pub sendcloud_parcel_id: Option<u64>,
    pub tracking_number: Option<String>,
    pub label_url: Option<String>,
    pub refund_id: Option<RefundId>,
    /// Refunds asked for so far (the idempotency key's counter).
    pub refund_attempts: u32,
    pub refund_failure: Option<String>,
    pub history: Vec<ReturnHistory>,
    pub created: Timestamp,
    pub updated: Timestamp,
    pub received_at: Option<Timestamp>,
    pub refunded_at: Option<Timestamp>,
}

impl ReturnCase {
    /// Moves the return and notes why in its history.
    fn apply(&mut self, action: ReturnAction, now: Timestamp, note: String) -> EngineResult<()> {
        self.status = return_transition(self.status, action)?;
        if self.history.len() < MAX_HISTORY {
            self.history.push(ReturnHistory {
                at: now,
                status: self.status,
                note,
            });
        }
        Ok(())
    }
}

/// A fresh return id at `ms`.
fn new_return_id(ms: i64) -> String {
    format!("ret_{}", &EventId::new_at(ms).to_string()[4..])
}

/// Writes collected while a return is held, committed as one batch.
struct Change {
    batch: WriteBatch,
    events: Vec<Event>,
    /// Whether the return itself changed (it is written when this is set).
    dirty: bool,
}

impl Change {
    fn new() -> Change {
        Change {
            batch: WriteBatch::new(),
            events: Vec::new(),
            dirty: false,
        }
    }

    /// Marks the return as changed.
    fn touch(&mut self) {
        self.dirty = true;
    }

    /// A public event (webhooks through the outbox, the live stream) about the return.
    fn event(&mut self, r: &ReturnCase, at: Timestamp, t: &str, data: &impl Serialize) {
        let e = Event::new(r.merchant_id, r.livemode, t, at, r.id.clone(), data);
        self.batch.push(stream::index_op(&e));
        self.events.push(e);
        self.dirty = true;
    }
}

fn internal(e: impl fmt::Display) -> EngineError {
    EngineError::Internal(e.to_string())
}

impl LastMile {
    fn ret_cfg(&self) -> &ReturnsConfig {
        &self.cfg.returns
    }

    async fn ret_load(&self, id: &str) -> EngineResult<Option<ReturnCase>> {
        match self.engine.ledger().get_record(RETURN, id).await? {
            Some(raw) => Ok(Some(serde_json::from_slice(&raw).map_err(internal)?)),
            None => Ok(None),
        }
    }

    async fn ret_lookup(&self, kind: &'static str, key: &str) -> EngineResult<Option<ReturnCase>> {
        let Some(raw) = self.engine.ledger().get_record(kind, key).await? else {
            return Ok(None);
        };
        self.ret_load(&String::from_utf8_lossy(&raw)).await
    }

    /// Commits the return with its list entry and events, then tells live subscribers.
    async fn ret_commit(&self, r: &mut ReturnCase, mut c: Change) -> EngineResult<()> {
        r.updated = self.engine.clock().now();
        let json = serde_json::to_vec(&*r).map_err(internal)?;
        c.batch.push(WriteOp::PutRecord {
            kind: RETURN,
            key: r.id.clone(),
            value: json.clone(),
        });
        c.batch.push(WriteOp::PutEntry {
            index: RETURNS,
            partition: r.merchant_id.to_string(),
            sort: r.id.clone(),
            value: json,
        });
        for e in &c.events {
            c.batch.push(WriteOp::PutEvent(e.clone()));
        }
        self.engine.ledger().submit(c.batch).await?;
        stream::publish(self.engine.hot().as_ref(), &c.events).await;
        Ok(())
    }

    /// Runs `f` on the return while holding it (on every node); commits what `f` collected.
    async fn ret_mutate<T>(
        &self,
        id: &str,
        f: impl AsyncFnOnce(&mut ReturnCase, &mut Change) -> EngineResult<T>,
    ) -> EngineResult<(ReturnCase, T)> {
        let scope = format!("lm:ret:{id}");
        let hot = self.engine.hot();
        let deadline = Instant::now() + Duration::from_secs(5);
        let held = loop {
            if let Some(r) = hot.reserve(&scope, Duration::from_secs(30)).await? {
                break r;
            }
            if Instant::now() >= deadline {
                return Err(EngineError::Conflict {
                    code: "return_busy",
                    message: "the return is being changed by another request; retry".into(),
                });
            }
            hot.wait_released(&scope, deadline.saturating_duration_since(Instant::now()))
                .await;
        };
        let out = async {
            let mut r = self
                .ret_load(id)
                .await?
                .ok_or_else(|| EngineError::not_found("return", id))?;
            let mut c = Change::new();
            let v = f(&mut r, &mut c).await?;
            if c.dirty {
                self.ret_commit(&mut r, c).await?;
            }
            Ok((r, v))
        }
        .await;
        if let Err(e) = hot.release(held).await {
            tracing::warn!(error = %e, "releasing a return reservation failed");
        }
        out
    }
}
