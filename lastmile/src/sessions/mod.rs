//! Payment sessions: the 18-digit reference of an order, its pay link, its payment, the parcel
//! states and the driver's OTP check at the door.
//!
//! Owns the [`PaymentSession`] record, its two state machines (one transition function each:
//! [`session_transition`], [`parcel_transition`]), the per-session event log, OTP attempt
//! limits and lock-out, and the link to the engine's payment intent. It does not own the
//! payment itself: that is an engine [`PaymentIntent`](ipay_engine::model::PaymentIntent)
//! living in a PaymentSession actor like any other intent, created through
//! [`Engine::create_intent`](ipay_engine::Engine::create_intent) for the order's merchant. Nor
//! HTTP, QR images or rate-limit headers (the gateway).
//!
//! One concern per file: [`state`] (both state machines), [`store`] (holding, loading and
//! committing a session), [`create`], [`payment`] (the consumer's page and payments through the
//! engine), [`settle`] (turning paid from the engine's committed events), [`parcel`], [`driver`] (the OTP check at
//! the door), [`views`], [`listing`] and [`shop_update`] (a shop's new version of an order).
//! This file holds the record, the settings and the per-node state.
//!
//! Storage (generic ledger records and indexes, so embedded and cluster mode work alike):
//! - `lm_session/{session_id}` → the session (JSON);
//! - `lm_session_ref/{reference}`, `lm_session_token/{sha256(token)}`,
//!   `lm_session_order/{order_id}` → session id (look-ups);
//! - `lm_sessions` partition `{merchant}:{YYYYMMDD}` (day of creation), sort key the session
//!   id → the session again, so a list page needs no look-ups; `lm_session_days` partition
//!   `{merchant}` → days with sessions;
//! - `lm_session_log` partition `{session_id}` → the session's event log (every state change
//!   and every OTP attempt, never an OTP), capped at [`MAX_LOG_ENTRIES`];
//! - `lm_otp_key/{merchant}` → the merchant's random OTP key (hex);
//! - `lm_settle` partition `{0..15}`, sort key `{session_id}:{intent_id}` → a session to settle
//!   from its intent's final event (written with the event, deleted with the session's update).
//!
//! Every change to a session is one ledger batch: the record, its list entry, its log entries,
//! its events (and the order's new status), made while holding the session's reservation in
//! [`HotState`](ipay_engine::store::HotState) — an in-process lock in embedded mode, a Redis
//! `SET NX` in cluster mode — so changes to one session never interleave, on any node.
//!
//! When does a session become paid? The engine settles the intent (a PSP callback, the
//! sandbox endpoint or `start-payment` with `simulate`) and commits its final event; a commit
//! hook writes a settle marker in that same batch and the node that committed it applies the
//! outcome at once ([`settle`]); markers a crash left behind are applied when a node starts or
//! sweeps. A read of the session that comes first applies it too. Whichever path is first
//! commits `session.paid` exactly once: the change is made under the session's reservation and
//! only while the session still awaits that intent.

pub mod create;
pub mod driver;
pub mod listing;
pub mod parcel;
pub mod payment;
pub mod settle;
pub mod shop_update;
pub mod state;
mod store;
pub mod views;

pub use driver::{VerifyOtpRequest, VerifyOtpResponse};
pub use listing::{SessionListParams, SessionPage};
pub use parcel::{LockerRelease, ParcelStatusRequest};
pub use payment::StartPaymentRequest;
pub use state::{
    ParcelStatus, SessionAction, SessionStatus, parcel_transition, session_transition,
};
pub use views::{ConsumerPayment, ConsumerView, LogEntry, SessionDetail, SessionView};

use crate::LastMile;
use crate::otp::OtpKey;
use crate::reference::IpayReference;
use dashmap::DashMap;
use governor::{DefaultKeyedRateLimiter, Quota};
use ipay_engine::clock::Timestamp;
use ipay_engine::error::{EngineError, EngineResult};
use ipay_engine::ids::{MerchantId, PaymentIntentId, ServiceId};
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;
use std::sync::Arc;

const SESSION: &str = "lm_session";
const SESSION_BY_REF: &str = "lm_session_ref";
const SESSION_BY_TOKEN: &str = "lm_session_token";
const SESSION_BY_ORDER: &str = "lm_session_order";
pub(crate) const SESSIONS_BY_DAY: &str = "lm_sessions";
pub(crate) const SESSION_DAYS: &str = "lm_session_days";
const SESSION_LOG: &str = "lm_session_log";
const OTP_KEY: &str = "lm_otp_key";

/// Most entries one session's event log keeps; later entries are dropped (and counted).
pub const MAX_LOG_ENTRIES: u32 = 500;
/// Name of the engine service (manifest) last-mile payments are taken under.
pub const SERVICE_NAME: &str = "ipay-lastmile";
/// Bytes of randomness in a pay token (base64url, 43 characters).
pub const TOKEN_BYTES: usize = 32;

/// `[lastmile.sessions]` in `ipay.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// Wrong OTPs per reference before it locks (until an operator unlocks it).
    pub otp_max_failures: u32,
    /// OTP checks one driver may make per minute (burst = the same number).
    pub driver_attempts_per_minute: u32,
    /// SSE heartbeat interval, ms.
    pub heartbeat_ms: u64,
    /// Most events one `Last-Event-ID` replay sends before switching to live events.
    pub replay_max_events: usize,
    /// Most SSE streams open at once on this node (then 503).
    pub stream_max_clients: usize,
    /// Longest one SSE stream stays open, seconds; the client reconnects with
    /// `Last-Event-ID` and loses nothing.
    pub stream_max_secs: u64,
    /// Sessions this node settles at once from committed intent events; 0: this node settles
    /// none (its markers wait for a node that does, or for its own restart).
    pub settle_concurrency: usize,
    /// Most committed settle markers queued for this node's consumer; beyond it the consumer
    /// scans the marker index instead (nothing is lost, it is only slower).
    pub settle_queue_max: usize,
    /// How often the node sweeps the marker index for markers left by a crashed node or a
    /// failed settle, seconds.
    pub settle_sweep_secs: u64,
    /// Age a marker must reach before a sweep applies it (younger ones are their own node's),
    /// ms.
    pub settle_sweep_after_ms: u64,
    /// Delay before a failed settle is tried again, ms.
    pub settle_retry_ms: u64,
    /// Channels the consumer may pay with (each must be a known engine channel).
    pub channels: Vec<String>,
    /// Seconds a started payment stays open.
    pub payment_expires_in_secs: i64,
    /// Origin of the pay URL `{pay_base_url}/pay/{token}` (what the QR code encodes); empty
    /// gives the relative `/pay/{token}`.
    pub pay_base_url: String,
    /// Most index entries one `GET /api/payment-sessions` examines before returning a partial
    /// page with a cursor.
    pub list_scan_budget: usize,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            otp_max_failures: 5,
            driver_attempts_per_minute: 30,
            heartbeat_ms: 15_000,
            replay_max_events: 1_000,
            stream_max_clients: 10_000,
            stream_max_secs: 3_600,
            settle_concurrency: 8,
            settle_queue_max: 100_000,
            settle_sweep_secs: 30,
            settle_sweep_after_ms: 10_000,
            settle_retry_ms: 1_000,
            channels: vec!["sandbox".into()],
            payment_expires_in_secs: 900,
            pay_base_url: "https://pay.ipay.global".into(),
            list_scan_budget: 20_000,
        }
    }
}

pub use ipay_engine::ids::PaymentSessionId as SessionId;

/// A stored payment session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentSession {
    pub id: SessionId,
    pub merchant_id: MerchantId,
    pub livemode: bool,
    pub order_id: String,
    pub reference: IpayReference,
    /// Bearer capability of the consumer page; the merchant may see it, nobody else.
    pub pay_token: String,
    pub status: SessionStatus,
    pub parcel_status: ParcelStatus,
    pub amount: i64,
    pub currency: String,
    pub country: String,
    pub carrier_code: String,
    /// The channel of the latest payment (`sandbox`, `stripe`, …).
    pub psp: Option<String>,
    pub payment_method: Option<String>,
    /// The engine intent of the latest payment.
    pub payment_intent: Option<PaymentIntentId>,
    /// The intent that paid (the OTP is derived from it).
    pub paid_intent: Option<PaymentIntentId>,
    pub otp_failures: u32,
    pub otp_locked: bool,
    pub log_entries: u32,
    pub log_dropped: u32,
    pub created: Timestamp,
    pub updated: Timestamp,
    pub paid_at: Option<Timestamp>,
    pub released_at: Option<Timestamp>,
    pub delivered_at: Option<Timestamp>,
}

/// Who acts on a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// The merchant owning the session.
    Merchant(MerchantId),
    /// An operator: any merchant's sessions.
    Operator,
}

/// A driver checking an OTP.
#[derive(Debug, Clone)]
pub struct Driver {
    /// Stable id for rate limiting and the log.
    pub user_id: String,
    /// Drivers attached to a merchant may only release that merchant's parcels.
    pub merchant_id: Option<MerchantId>,
}

/// Per-node state of the session module, held by [`LastMile`].
pub struct SessionsState {
    otp_keys: DashMap<MerchantId, OtpKey>,
    /// The last-mile service of each merchant and mode, with the channels it accepts.
    services: DashMap<(MerchantId, bool), (ServiceId, Vec<String>)>,
    drivers: DefaultKeyedRateLimiter<String>,
    /// The consumer of settle markers.
    settler: settle::Settler,
    streams: Arc<tokio::sync::Semaphore>,
}

impl SessionsState {
    /// Fresh state for `cfg`, consuming the markers of `hook` (see [`settle::SettleHook`]).
    pub fn new(cfg: &SessionsConfig, hook: Arc<settle::SettleHook>) -> Self {
        let per_min =
            NonZeroU32::new(cfg.driver_attempts_per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        SessionsState {
            otp_keys: DashMap::new(),
            services: DashMap::new(),
            drivers: governor::RateLimiter::keyed(Quota::per_minute(per_min)),
            settler: settle::Settler::new(hook),
            streams: Arc::new(tokio::sync::Semaphore::new(cfg.stream_max_clients.max(1))),
        }
    }
}

impl LastMile {
    fn ps_scfg(&self) -> &SessionsConfig {
        &self.cfg.sessions
    }

    /// The server's default mode (`[lastmile] events_livemode`), for merchants that never
    /// chose one; a merchant's own is [`LastMile::merchant_livemode`], a session's its
    /// `livemode`.
    pub(crate) fn ps_livemode(&self) -> bool {
        self.cfg.events_livemode
    }

    /// A slot for one live stream, or 503 when [`SessionsConfig::stream_max_clients`] are open.
    pub fn stream_permit(&self) -> EngineResult<tokio::sync::OwnedSemaphorePermit> {
        self.sessions
            .streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| EngineError::StoreUnavailable("too many open event streams".into()))
    }

    /// The session settings in force.
    pub fn sessions_config(&self) -> &SessionsConfig {
        self.ps_scfg()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_round_trip_and_sort_by_time() {
        let a = SessionId::new_at(1_000);
        let b = SessionId::new_at(2_000);
        assert!(a < b && a.to_string() < b.to_string());
        assert_eq!(SessionId::parse(&a.to_string()).ok(), Some(a));
        assert!(SessionId::parse("ps_short").is_err());
        assert!(SessionId::parse(&a.to_string().replace("ps_", "pi_")).is_err());
    }
}
