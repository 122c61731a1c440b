//! Payment sessions: the 18-digit reference of an order, its pay link, its payment, the parcel
//! states and the driver's OTP check at the door.
//!
//! Owns the [`PaymentSession`] record, its two state machines (one transition function each:
//! [`session_transition`], [`parcel_transition`]), the per-session event log, OTP attempt
//! limits and lock-out, and the link to the engine's payment intent. It does not own the
//! payment itself: that is an engine [`PaymentIntent`](crate::model::PaymentIntent) living in
//! a PaymentSession actor like any other intent, created through [`Engine::create_intent`]
//! for the order's merchant. Nor HTTP, QR images or rate-limit headers (the gateway).
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
//! - `lm_otp_key/{merchant}` → the merchant's random OTP key (hex).
//!
//! Every change to a session is one ledger batch: the record, its list entry, its log entries,
//! its events (and the order's new status), made while holding the session's reservation in
//! [`HotState`](crate::store::HotState) — an in-process lock in embedded mode, a Redis
//! `SET NX` in cluster mode — so changes to one session never interleave, on any node.
//!
//! When does a session become paid? The engine settles the intent (a PSP callback, the
//! sandbox endpoint or `start-payment` with `simulate`); this module notices by reading the
//! intent: on every read of the session, and from a watcher that checks sessions awaiting
//! payment every `paid_check_interval_ms`. Either path commits `session.paid` exactly once.

use super::LastMile;
use super::daily::{self, day};
use super::orders::{
    CursorPagination, Order, OrderId, OrderStatus, UpdateResult, UpdateStage, ValidOrder,
    apply_shop_update, order_write_ops,
};
use super::otp::{self, Otp, OtpKey};
use super::reference::IpayReference;
use super::stream;
use crate::clock::Timestamp;
use crate::engine::{AmountInput, AuthContext, CreateIntentRequest};
use crate::error::{EngineError, EngineResult};
use crate::ids::{ApiKeyId, EventId, MerchantId, PaymentIntentId, ServiceId};
use crate::model::{ApiKey, Event, IntentStatus, PaymentIntent, Permission, ServiceAction};
use crate::model::{ServiceInput, ServiceStatus};
use crate::store::{EntryRange, WriteBatch, WriteOp};
use base64::Engine as _;
use dashmap::DashMap;
use governor::{DefaultKeyedRateLimiter, Quota};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SESSION: &str = "lm_session";
const SESSION_BY_REF: &str = "lm_session_ref";
const SESSION_BY_TOKEN: &str = "lm_session_token";
const SESSION_BY_ORDER: &str = "lm_session_order";
const SESSIONS_BY_DAY: &str = "lm_sessions";
const SESSION_DAYS: &str = "lm_session_days";
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
    /// How often the watcher checks sessions awaiting payment, ms.
    pub paid_check_interval_ms: u64,
    /// Most sessions the watcher follows on this node (others are settled on read).
    pub watch_max_sessions: usize,
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
            paid_check_interval_ms: 1_000,
            watch_max_sessions: 100_000,
            channels: vec!["sandbox".into()],
            payment_expires_in_secs: 900,
            pay_base_url: "https://pay.ipay.global".into(),
            list_scan_budget: 20_000,
        }
    }
}

pub use crate::ids::PaymentSessionId as SessionId;

/// Where a session's payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SessionStatus {
    /// Reference and pay link exist; no payment started (or the last one failed).
    Created,
    /// The consumer started a payment; waiting for the channel.
    PaymentPending,
    /// Paid: the OTP is derivable and shown to the consumer.
    Paid,
    /// The driver verified the OTP at the door; the parcel was handed over.
    Released,
}

impl SessionStatus {
    /// Wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            SessionStatus::Created => "CREATED",
            SessionStatus::PaymentPending => "PAYMENT_PENDING",
            SessionStatus::Paid => "PAID",
            SessionStatus::Released => "RELEASED",
        }
    }

    fn parse(s: &str) -> Option<SessionStatus> {
        serde_json::from_value(serde_json::Value::String(s.trim().to_ascii_uppercase())).ok()
    }
}

/// What can happen to a session's payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAction {
    StartPayment,
    PaymentFailed,
    PaymentSucceeded,
    ReleaseWithOtp,
}

impl SessionAction {
    fn verb(&self) -> &'static str {
        match self {
            SessionAction::StartPayment => "start a payment",
            SessionAction::PaymentFailed => "record a failed payment",
            SessionAction::PaymentSucceeded => "record a payment",
            SessionAction::ReleaseWithOtp => "release the parcel",
        }
    }
}

/// The session state machine, the one place its moves are decided.
///
/// | from            | StartPayment    | PaymentFailed | PaymentSucceeded | ReleaseWithOtp |
/// |-----------------|-----------------|---------------|------------------|----------------|
/// | CREATED         | PAYMENT_PENDING | –             | –                | –              |
/// | PAYMENT_PENDING | PAYMENT_PENDING | CREATED       | PAID             | –              |
/// | PAID            | –               | –             | –                | RELEASED       |
/// | RELEASED        | –               | –             | –                | –              |
pub fn session_transition(
    from: SessionStatus,
    action: SessionAction,
) -> EngineResult<SessionStatus> {
    use SessionAction as A;
    use SessionStatus as S;
    match (from, action) {
        (S::Created | S::PaymentPending, A::StartPayment) => Ok(S::PaymentPending),
        (S::PaymentPending, A::PaymentFailed) => Ok(S::Created),
        (S::PaymentPending, A::PaymentSucceeded) => Ok(S::Paid),
        (S::Paid, A::ReleaseWithOtp) => Ok(S::Released),
        (from, action) => Err(EngineError::InvalidStateTransition {
            object: "payment session",
            from: from.as_str().into(),
            action: action.verb().into(),
        }),
    }
}

/// Where the parcel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ParcelStatus {
    /// Label made, not yet with the carrier.
    AwaitingPickup,
    PickedUp,
    InDelivery,
    /// Final.
    Delivered,
}

impl ParcelStatus {
    /// Wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            ParcelStatus::AwaitingPickup => "AWAITING_PICKUP",
            ParcelStatus::PickedUp => "PICKED_UP",
            ParcelStatus::InDelivery => "IN_DELIVERY",
            ParcelStatus::Delivered => "DELIVERED",
        }
    }

    /// Parses a wire name (any case).
    pub fn parse(s: &str) -> Option<ParcelStatus> {
        serde_json::from_value(serde_json::Value::String(s.trim().to_ascii_uppercase())).ok()
    }
}

/// The parcel state machine, the one place its moves are decided. `released` says whether the
/// driver has verified the consumer's OTP: pay-on-delivery parcels are only delivered after.
///
/// AWAITING_PICKUP → PICKED_UP → IN_DELIVERY → DELIVERED (only once released). Asking for the
/// current state again is accepted and changes nothing; every other move is a 409.
pub fn parcel_transition(
    from: ParcelStatus,
    to: ParcelStatus,
    released: bool,
) -> EngineResult<ParcelStatus> {
    use ParcelStatus as P;
    match (from, to) {
        (a, b) if a == b => Ok(a),
        (P::AwaitingPickup, P::PickedUp) | (P::PickedUp, P::InDelivery) => Ok(to),
        (P::InDelivery, P::Delivered) if released => Ok(to),
        (P::InDelivery, P::Delivered) => Err(EngineError::Conflict {
            code: "otp_not_verified",
            message: "a pay-on-delivery parcel is delivered when the driver verifies the \
                      consumer's OTP (POST /api/driver/verify-otp)"
                .into(),
        }),
        (from, to) => Err(EngineError::InvalidStateTransition {
            object: "parcel",
            from: from.as_str().into(),
            action: format!("move it to {}", to.as_str()),
        }),
    }
}

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

/// A session as its merchant (and operators) see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    #[schema(value_type = String, example = "ps_01J7XZ1A2B3C4D5E6F7G8H9IKM")]
    pub id: SessionId,
    #[schema(value_type = String)]
    pub merchant_id: MerchantId,
    pub order_id: String,
    /// 18 digits, ISO 7064 MOD 97-10 check digits at the end.
    #[schema(value_type = String, example = "123456789012345678")]
    pub ipay_reference_18: IpayReference,
    /// The same, grouped by four for labels.
    pub ipay_reference_display: String,
    pub pay_url: String,
    /// What the QR code encodes (the pay URL).
    pub qr_payload: String,
    pub status: SessionStatus,
    pub parcel_status: ParcelStatus,
    pub amount: i64,
    pub currency: String,
    pub country: String,
    pub carrier_code: String,
    pub psp: Option<String>,
    pub payment_method: Option<String>,
    #[schema(value_type = Option<String>)]
    pub payment_intent: Option<PaymentIntentId>,
    pub otp_failures: u32,
    pub otp_locked: bool,
    pub livemode: bool,
    #[schema(value_type = String, format = DateTime)]
    pub created: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub paid_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub released_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub delivered_at: Option<Timestamp>,
}

/// One entry of a session's event log.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogEntry {
    /// The event id when the entry is a public event, else a log id.
    pub id: String,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// `session.created`, `payment.started`, `otp.attempt`, `parcel.status_changed`, …
    #[serde(rename = "type")]
    pub entry_type: String,
    /// What happened, never an OTP.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// `GET /api/payment-sessions/{id}`: the session and its log, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionDetail {
    #[serde(flatten)]
    pub session: SessionView,
    pub events: Vec<LogEntry>,
}

/// What the consumer's pay page may see: nothing internal, the OTP only once paid.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConsumerView {
    pub ipay_reference_18: String,
    pub ipay_reference_display: String,
    pub merchant_name: Option<String>,
    pub amount: i64,
    pub currency: String,
    pub status: SessionStatus,
    pub parcel_status: ParcelStatus,
    /// Channels the consumer may pay with.
    pub channels: Vec<String>,
    /// The open payment, while one is pending.
    pub payment: Option<ConsumerPayment>,
    /// The 4-digit code to give the driver; present only while PAID.
    pub otp: Option<String>,
}

/// The consumer's open payment.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConsumerPayment {
    pub channel: String,
    pub status: String,
    /// What to show or scan to pay (QR payload or checkout link).
    pub qr_code: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
}

/// `POST /api/session/{token}/start-payment` body.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartPaymentRequest {
    /// One of the session's `channels`.
    pub channel: String,
    /// Test mode, `sandbox` only: settle at once with `succeed` or `fail`.
    #[serde(default)]
    pub simulate: Option<String>,
}

/// `POST /api/driver/verify-otp` body.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyOtpRequest {
    /// The 18-digit reference from the label (spaces allowed).
    pub ipay_reference_18: String,
    /// The 4-digit code the consumer shows.
    pub otp_4: String,
}

impl fmt::Debug for VerifyOtpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyOtpRequest")
            .field("ipay_reference_18", &self.ipay_reference_18)
            .field("otp_4", &"****")
            .finish()
    }
}

/// The answer to a correct OTP.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VerifyOtpResponse {
    pub released: bool,
    pub session: SessionView,
}

/// `POST /api/payment-sessions/{id}/parcel-status` body.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParcelStatusRequest {
    /// PICKED_UP | IN_DELIVERY | DELIVERED
    pub status: String,
}

/// Query of `GET /api/payment-sessions`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SessionListParams {
    /// 1 to 100, default 20.
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// ISO 3166-1 alpha-2 country of the delivery address.
    pub country: Option<String>,
    /// Carrier code (`DHL`, `POSTNL`, …).
    pub carrier: Option<String>,
    /// Channel of the payment (`sandbox`, `stripe`, …).
    pub psp: Option<String>,
    pub payment_method: Option<String>,
    /// CREATED | PAYMENT_PENDING | PAID | RELEASED
    pub status: Option<String>,
    /// AWAITING_PICKUP | PICKED_UP | IN_DELIVERY | DELIVERED
    pub parcel_status: Option<String>,
    /// Operators only: whose sessions to list.
    pub merchant_id: Option<String>,
}

/// One page of sessions, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionPage {
    pub data: Vec<SessionView>,
    pub pagination: CursorPagination,
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
    services: DashMap<MerchantId, ServiceId>,
    drivers: DefaultKeyedRateLimiter<String>,
    /// Sessions awaiting payment that this node's watcher checks.
    watched: DashMap<SessionId, ()>,
    streams: Arc<tokio::sync::Semaphore>,
}

impl SessionsState {
    /// Fresh state for `cfg`.
    pub fn new(cfg: &SessionsConfig) -> Self {
        let per_min =
            NonZeroU32::new(cfg.driver_attempts_per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        SessionsState {
            otp_keys: DashMap::new(),
            services: DashMap::new(),
            drivers: governor::RateLimiter::keyed(Quota::per_minute(per_min)),
            watched: DashMap::new(),
            streams: Arc::new(tokio::sync::Semaphore::new(cfg.stream_max_clients.max(1))),
        }
    }
}

fn internal(e: impl fmt::Display) -> EngineError {
    EngineError::Internal(e.to_string())
}

fn token_key(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn new_token() -> String {
    let bytes: [u8; TOKEN_BYTES] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Which payment method a channel collects with.
fn method_of(channel: &str) -> &'static str {
    match channel {
        "alipay" | "wechat" | "promptpay" => "qr",
        "stripe" => "card",
        "multisafepay" => "ideal",
        _ => "test",
    }
}

/// Changes collected while a session is held, committed as one batch.
struct Change {
    batch: WriteBatch,
    events: Vec<Event>,
}

impl Change {
    fn new() -> Self {
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
    fn note(&mut self, s: &mut PaymentSession, at: Timestamp, t: &str, detail: serde_json::Value) {
        let id = format!("log_{}", &EventId::new_at(at.ms()).to_string()[4..]);
        self.log(s, id, at, t, detail);
    }

    /// A public event (webhooks, SSE) that is also logged.
    fn event(&mut self, s: &mut PaymentSession, at: Timestamp, t: &str, data: &impl Serialize) {
        let e = Event::new(s.merchant_id, s.livemode, t, at, s.id.to_string(), data);
        let detail = serde_json::from_str(e.data.get()).unwrap_or_default();
        self.log(s, e.id.to_string(), at, t, detail);
        self.batch.push(stream::index_op(&e));
        self.events.push(e);
    }
}

impl LastMile {
    fn ps_scfg(&self) -> &SessionsConfig {
        &self.cfg.sessions
    }

    fn ps_livemode(&self) -> bool {
        self.cfg.events_livemode
    }

    /// The pay URL of a token.
    pub fn session_pay_url(&self, token: &str) -> String {
        format!(
            "{}/pay/{token}",
            self.ps_scfg().pay_base_url.trim_end_matches('/')
        )
    }

    /// The merchant's view of a session.
    pub fn session_view(&self, s: &PaymentSession) -> SessionView {
        let pay_url = self.session_pay_url(&s.pay_token);
        SessionView {
            id: s.id,
            merchant_id: s.merchant_id,
            order_id: s.order_id.clone(),
            ipay_reference_18: s.reference,
            ipay_reference_display: s.reference.grouped(),
            qr_payload: pay_url.clone(),
            pay_url,
            status: s.status,
            parcel_status: s.parcel_status,
            amount: s.amount,
            currency: s.currency.clone(),
            country: s.country.clone(),
            carrier_code: s.carrier_code.clone(),
            psp: s.psp.clone(),
            payment_method: s.payment_method.clone(),
            payment_intent: s.payment_intent,
            otp_failures: s.otp_failures,
            otp_locked: s.otp_locked,
            livemode: s.livemode,
            created: s.created,
            updated: s.updated,
            paid_at: s.paid_at,
            released_at: s.released_at,
            delivered_at: s.delivered_at,
        }
    }

    /// An engine caller acting for `merchant` in last-mile's mode (never stored, never
    /// usable as an API key: it has no secret).
    fn ps_engine_ctx(&self, merchant: MerchantId) -> AuthContext {
        let now = self.engine.clock().now();
        let livemode = self.ps_livemode();
        AuthContext {
            merchant_id: merchant,
            livemode,
            key: ApiKey {
                id: ApiKeyId::from_u128(0),
                label: "last-mile".into(),
                redacted: "internal".into(),
                permissions: vec![
                    Permission::ServicesRead,
                    Permission::ServicesWrite,
                    Permission::PaymentIntentsRead,
                    Permission::PaymentIntentsWrite,
                ],
                ip_whitelist: vec![],
                livemode,
                merchant_id: merchant,
                created: now,
                expires_at: now.plus_secs(3600),
                revoked_at: None,
            },
        }
    }

    /// The merchant's active last-mile service, created on first use.
    async fn ps_service_for(&self, ctx: &AuthContext) -> EngineResult<ServiceId> {
        if let Some(id) = self.sessions.services.get(&ctx.merchant_id) {
            return Ok(*id);
        }
        let input = ServiceInput {
            name: Some(SERVICE_NAME.into()),
            description: Some("Pay-on-delivery parcels (IPAY last mile)".into()),
            accepted_channels: Some(self.ps_scfg().channels.clone()),
            ..Default::default()
        };
        let (svc, _) = self.engine.upsert_service(ctx, input).await?;
        let mut status = svc.status;
        if status == ServiceStatus::Draft {
            status = self
                .engine
                .service_action(ctx, &svc.id.to_string(), ServiceAction::Activate)
                .await?
                .status;
        } else if status == ServiceStatus::Paused {
            status = self
                .engine
                .service_action(ctx, &svc.id.to_string(), ServiceAction::Resume)
                .await?
                .status;
        }
        if status != ServiceStatus::Active {
            return Err(EngineError::Conflict {
                code: "service_not_active",
                message: format!(
                    "the merchant's `{SERVICE_NAME}` service is {}",
                    status.as_str()
                ),
            });
        }
        self.sessions.services.insert(ctx.merchant_id, svc.id);
        Ok(svc.id)
    }

    /// The merchant's OTP key, created once (under a reservation, so nodes agree).
    async fn ps_otp_key(&self, merchant: MerchantId) -> EngineResult<OtpKey> {
        if let Some(k) = self.sessions.otp_keys.get(&merchant) {
            return Ok(k.clone());
        }
        let ledger = self.engine.ledger();
        let read = |raw: Vec<u8>| -> EngineResult<OtpKey> {
            let bytes = hex::decode(raw).map_err(internal)?;
            let secret: [u8; otp::KEY_LEN] = bytes
                .try_into()
                .map_err(|_| internal("stored OTP key has the wrong length"))?;
            Ok(OtpKey::new(&secret))
        };
        let key = match ledger.get_record(OTP_KEY, &merchant.to_string()).await? {
            Some(raw) => read(raw)?,
            None => {
                let guard = self.ps_hold(&format!("lm:otpkey:{merchant}")).await?;
                let out = match ledger.get_record(OTP_KEY, &merchant.to_string()).await? {
                    Some(raw) => read(raw),
                    None => {
                        let secret = OtpKey::generate_secret();
                        let mut b = WriteBatch::new();
                        b.push(WriteOp::PutRecord {
                            kind: OTP_KEY,
                            key: merchant.to_string(),
                            value: hex::encode(secret).into_bytes(),
                        });
                        ledger.submit(b).await?;
                        Ok(OtpKey::new(&secret))
                    }
                };
                guard.release(self).await;
                out?
            }
        };
        self.sessions.otp_keys.insert(merchant, key.clone());
        Ok(key)
    }

    /// Takes the reservation `scope` (waiting up to 5 s for another holder).
    async fn ps_hold(&self, scope: &str) -> EngineResult<Held> {
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

    async fn ps_load(&self, id: SessionId) -> EngineResult<Option<PaymentSession>> {
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

    async fn ps_lookup(
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
    async fn ps_commit(&self, s: &mut PaymentSession, mut c: Change) -> EngineResult<()> {
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
    async fn ps_mutate<T>(
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
    async fn ps_order_status_ops(&self, s: &PaymentSession, status: OrderStatus, c: &mut Change) {
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

    // ------------------------------------------------------------------ shop updates

    /// Applies a shop's new version of an existing order ([`apply_shop_update`] decides which
    /// fields may change). Holds the order's session-creation reservation and, when the order
    /// has a session, the session's, so the update never interleaves with a payment on any
    /// node. With a session, the update is also noted in the session's log
    /// (`order.updated_by_shop`, with what changed and what was kept). `extra` joins the batch.
    pub(crate) async fn update_order_from_shop(
        &self,
        merchant: MerchantId,
        order_id: OrderId,
        update: ValidOrder,
        cancelled: bool,
        extra: Vec<WriteOp>,
    ) -> EngineResult<(Order, UpdateResult)> {
        let oid = order_id.to_string();
        let create_guard = self.ps_hold(&format!("lm:order-session:{oid}")).await?;
        let out = async {
            let Some(session) = self.ps_lookup(SESSION_BY_ORDER, &oid).await? else {
                let mut order = self.get_order(merchant, &oid).await?;
                let r = apply_shop_update(&mut order, update, cancelled, UpdateStage::NoSession);
                let mut c = Change::new();
                self.order_updated_ops(&mut order, &r, &mut c)?;
                c.batch.ops.extend(extra);
                for e in &c.events {
                    c.batch.push(WriteOp::PutEvent(e.clone()));
                }
                if !c.batch.ops.is_empty() {
                    self.engine.ledger().submit(c.batch).await?;
                    stream::publish(self.engine.hot().as_ref(), &c.events).await;
                }
                return Ok((order, r));
            };
            let (_, out) = self
                .ps_mutate(session.id, async |s, c| {
                    let mut order = self.get_order(merchant, &oid).await?;
                    let paid = matches!(s.status, SessionStatus::Paid | SessionStatus::Released);
                    let stage = if paid {
                        UpdateStage::Paid
                    } else {
                        UpdateStage::SessionUnpaid
                    };
                    let shop_amount = update.amount();
                    let r = apply_shop_update(&mut order, update, cancelled, stage);
                    if !r.changed.is_empty() || !r.kept.is_empty() {
                        let now = self.engine.clock().now();
                        c.note(
                            s,
                            now,
                            "order.updated_by_shop",
                            serde_json::json!({
                                "order_id": oid,
                                "changed": r.changed,
                                "kept": r.kept,
                                "shop_amount": shop_amount,
                            }),
                        );
                        s.country = order.customer.address.country.clone();
                        s.carrier_code = order.carrier_code.clone();
                    }
                    self.order_updated_ops(&mut order, &r, c)?;
                    c.batch.ops.extend(extra);
                    Ok((order, r))
                })
                .await?;
            Ok(out)
        }
        .await;
        create_guard.release(self).await;
        out
    }

    /// The order's new record and an `order.updated` event (streamed), when anything changed.
    fn order_updated_ops(
        &self,
        order: &mut Order,
        r: &UpdateResult,
        c: &mut Change,
    ) -> EngineResult<()> {
        if r.changed.is_empty() {
            return Ok(());
        }
        let now = self.engine.clock().now();
        order.updated = now;
        c.batch.ops.extend(order_write_ops(order)?);
        let e = Event::new(
            order.merchant_id,
            self.ps_livemode(),
            "order.updated",
            now,
            order.id.to_string(),
            &*order,
        );
        // `ps_commit` writes the events of `c`; the path without a session does too.
        c.batch.push(stream::index_op(&e));
        c.events.push(e);
        Ok(())
    }

    // ------------------------------------------------------------------ create

    /// Creates the payment session of an order (or returns the one it has: `false`).
    pub async fn create_session(
        &self,
        merchant: MerchantId,
        order_id: &str,
    ) -> EngineResult<(SessionView, bool)> {
        let order = self.get_order(merchant, order_id).await?;
        if let Some(s) = self
            .ps_lookup(SESSION_BY_ORDER, &order.id.to_string())
            .await?
        {
            return Ok((self.session_view(&s), false));
        }
        check_order_payable(&order)?;
        // One creation per order at a time, on any node.
        let guard = self
            .ps_hold(&format!("lm:order-session:{}", order.id))
            .await?;
        let out = self.create_session_held(&order).await;
        guard.release(self).await;
        out
    }

    async fn create_session_held(&self, order: &Order) -> EngineResult<(SessionView, bool)> {
        let ledger = self.engine.ledger();
        if let Some(s) = self
            .ps_lookup(SESSION_BY_ORDER, &order.id.to_string())
            .await?
        {
            return Ok((self.session_view(&s), false));
        }
        // A fresh random reference, reserved so no two sessions can take the same one.
        let (reference, ref_guard) = loop {
            let r = IpayReference::generate();
            let g = self.ps_hold(&format!("lm:ref:{r}")).await?;
            if ledger
                .get_record(SESSION_BY_REF, &r.to_string())
                .await?
                .is_none()
            {
                break (r, g);
            }
            g.release(self).await;
        };
        let now = self.engine.clock().now();
        let token = new_token();
        let mut s = PaymentSession {
            id: SessionId::new_at(now.ms()),
            merchant_id: order.merchant_id,
            livemode: self.ps_livemode(),
            order_id: order.id.to_string(),
            reference,
            pay_token: token.clone(),
            status: SessionStatus::Created,
            parcel_status: ParcelStatus::AwaitingPickup,
            amount: order.amount.value,
            currency: order.amount.currency.code().to_string(),
            country: order.customer.address.country.clone(),
            carrier_code: order.carrier_code.clone(),
            psp: None,
            payment_method: None,
            payment_intent: None,
            paid_intent: None,
            otp_failures: 0,
            otp_locked: false,
            log_entries: 0,
            log_dropped: 0,
            created: now,
            updated: now,
            paid_at: None,
            released_at: None,
            delivered_at: None,
        };
        let mut c = Change::new();
        let sid = s.id.to_string();
        for (kind, key) in [
            (SESSION_BY_REF, reference.to_string()),
            (SESSION_BY_TOKEN, token_key(&token)),
            (SESSION_BY_ORDER, order.id.to_string()),
        ] {
            c.batch.push(WriteOp::PutRecord {
                kind,
                key,
                value: sid.clone().into_bytes(),
            });
        }
        c.batch.push(WriteOp::PutEntry {
            index: SESSION_DAYS,
            partition: s.merchant_id.to_string(),
            sort: day(s.id.timestamp_ms()),
            value: vec![],
        });
        let view = self.session_view(&s);
        c.event(&mut s, now, "session.created", &view);
        self.ps_order_status_ops(&s, OrderStatus::SessionCreated, &mut c)
            .await;
        let out = self.ps_commit(&mut s, c).await;
        ref_guard.release(self).await;
        out?;
        Ok((self.session_view(&s), true))
    }

    // ------------------------------------------------------------------ reads

    async fn ps_visible(&self, who: Actor, id: &str) -> EngineResult<PaymentSession> {
        let nf = || EngineError::not_found("payment session", id);
        let sid = SessionId::parse(id).map_err(|_| nf())?;
        let s = self.ps_load(sid).await?.ok_or_else(nf)?;
        match who {
            Actor::Merchant(m) if m != s.merchant_id => Err(nf()),
            _ => Ok(s),
        }
    }

    /// A session with its event log (oldest first).
    pub async fn session_detail(&self, who: Actor, id: &str) -> EngineResult<SessionDetail> {
        let s = self.ps_visible(who, id).await?;
        let s = self.settle_from_intent(s).await?;
        let rows = self
            .engine
            .ledger()
            .scan_entries(
                SESSION_LOG,
                &s.id.to_string(),
                &EntryRange::all(MAX_LOG_ENTRIES as usize),
            )
            .await?;
        let events = rows
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect();
        Ok(SessionDetail {
            session: self.session_view(&s),
            events,
        })
    }

    /// A merchant's sessions (operators: any merchant's, given `merchant_id`), newest first,
    /// filtered, keyset-paginated. A page may hold fewer than `limit` sessions while
    /// `has_more` is true when the scan budget ran out; follow `next_cursor`.
    pub async fn list_sessions(
        &self,
        who: Actor,
        p: &SessionListParams,
    ) -> EngineResult<SessionPage> {
        let merchant = match (who, p.merchant_id.as_deref()) {
            (Actor::Merchant(m), None) => m,
            (Actor::Merchant(_), Some(_)) => {
                return Err(EngineError::invalid(
                    "parameter_unknown",
                    "merchant_id",
                    "merchant_id is for operators; merchants see their own sessions",
                ));
            }
            (Actor::Operator, Some(m)) => MerchantId::parse(m).map_err(|e| {
                EngineError::invalid("parameter_invalid", "merchant_id", e.to_string())
            })?,
            (Actor::Operator, None) => {
                return Err(EngineError::invalid(
                    "parameter_missing",
                    "merchant_id",
                    "operators list one merchant's sessions at a time: pass merchant_id",
                ));
            }
        };
        let limit = p.limit.unwrap_or(20);
        if limit == 0 || limit > 100 {
            return Err(EngineError::invalid(
                "parameter_invalid",
                "limit",
                "limit must be between 1 and 100",
            ));
        }
        let cursor = match p.cursor.as_deref() {
            Some(c) => Some(SessionId::parse(c).map_err(|_| {
                EngineError::invalid(
                    "parameter_invalid",
                    "cursor",
                    "cursor must be the next_cursor of a previous page",
                )
            })?),
            None => None,
        };
        let status = p
            .status
            .as_deref()
            .map(|v| {
                SessionStatus::parse(v).ok_or_else(|| {
                    EngineError::invalid(
                        "parameter_invalid",
                        "status",
                        "status must be one of CREATED, PAYMENT_PENDING, PAID, RELEASED",
                    )
                })
            })
            .transpose()?;
        let parcel = p
            .parcel_status
            .as_deref()
            .map(|v| {
                ParcelStatus::parse(v).ok_or_else(|| {
                    EngineError::invalid(
                        "parameter_invalid",
                        "parcel_status",
                        "parcel_status must be one of AWAITING_PICKUP, PICKED_UP, IN_DELIVERY, DELIVERED",
                    )
                })
            })
            .transpose()?;
        let upper_case = |v: &Option<String>| v.as_deref().map(|c| c.trim().to_ascii_uppercase());
        let lower_case = |v: &Option<String>| v.as_deref().map(|c| c.trim().to_ascii_lowercase());
        let (country, carrier) = (upper_case(&p.country), upper_case(&p.carrier));
        let (psp, method) = (lower_case(&p.psp), lower_case(&p.payment_method));
        let matches = |s: &PaymentSession| {
            status.is_none_or(|x| s.status == x)
                && parcel.is_none_or(|x| s.parcel_status == x)
                && country.as_deref().is_none_or(|x| s.country == x)
                && carrier.as_deref().is_none_or(|x| s.carrier_code == x)
                && psp.as_deref().is_none_or(|x| s.psp.as_deref() == Some(x))
                && method
                    .as_deref()
                    .is_none_or(|x| s.payment_method.as_deref() == Some(x))
        };
        let owner = merchant.to_string();
        let page = daily::newest_first(
            self.engine.ledger().as_ref(),
            daily::DailyScan {
                days_index: SESSION_DAYS,
                items_index: SESSIONS_BY_DAY,
                owner: &owner,
                lower: None,
                upper: cursor.map(|c| c.to_string()),
                first_day: None,
                last_day: cursor.map(|c| day(c.timestamp_ms())),
                limit,
                budget: self.ps_scfg().list_scan_budget.max(100),
            },
            |value| {
                let s: PaymentSession = serde_json::from_slice(value).map_err(internal)?;
                Ok(matches(&s).then_some(s))
            },
            |s| s.id.to_string(),
        )
        .await?;
        Ok(SessionPage {
            data: page.data.iter().map(|s| self.session_view(s)).collect(),
            pagination: CursorPagination {
                limit,
                next_cursor: page.next_cursor,
                has_more: page.has_more,
            },
        })
    }

    // ------------------------------------------------------------------ payment

    /// If the session awaits a payment the engine has since settled, records the outcome
    /// (`session.paid`, or back to CREATED on failure). Cheap when nothing is pending.
    pub async fn settle_from_intent(&self, s: PaymentSession) -> EngineResult<PaymentSession> {
        let (SessionStatus::PaymentPending, Some(pi)) = (s.status, s.payment_intent) else {
            return Ok(s);
        };
        let Some(intent) = self.engine.ledger().get_intent(pi).await? else {
            return Ok(s);
        };
        if intent.status == IntentStatus::Pending {
            return Ok(s);
        }
        let (s, ()) = self
            .ps_mutate(s.id, async |s, c| {
                if s.status == SessionStatus::PaymentPending && s.payment_intent == Some(pi) {
                    self.ps_apply_intent_outcome(s, c, &intent).await?;
                }
                Ok(())
            })
            .await?;
        if s.status != SessionStatus::PaymentPending {
            self.sessions.watched.remove(&s.id);
        }
        Ok(s)
    }

    async fn ps_apply_intent_outcome(
        &self,
        s: &mut PaymentSession,
        c: &mut Change,
        intent: &PaymentIntent,
    ) -> EngineResult<()> {
        let now = self.engine.clock().now();
        match intent.status {
            IntentStatus::Pending => {}
            IntentStatus::Succeeded => {
                s.status = session_transition(s.status, SessionAction::PaymentSucceeded)?;
                s.paid_intent = Some(intent.id);
                s.paid_at = Some(now);
                let view = self.session_view(s);
                c.event(s, now, "session.paid", &view);
                self.ps_order_status_ops(s, OrderStatus::Paid, c).await;
            }
            other => {
                s.status = session_transition(s.status, SessionAction::PaymentFailed)?;
                c.note(
                    s,
                    now,
                    "payment.failed",
                    serde_json::json!({"payment_intent": intent.id, "intent_status": other.as_str(),
                        "reason": intent.failure_reason}),
                );
            }
        }
        Ok(())
    }

    /// The consumer's page.
    pub async fn consumer_view(&self, token: &str) -> EngineResult<ConsumerView> {
        let s = self.ps_by_token(token).await?;
        let s = self.settle_from_intent(s).await?;
        let payment = match (s.status, s.payment_intent) {
            (SessionStatus::PaymentPending, Some(pi)) => self
                .engine
                .ledger()
                .get_intent(pi)
                .await?
                .map(|i| ConsumerPayment {
                    channel: i.channel.clone(),
                    status: i.status.as_str().to_string(),
                    qr_code: Some(i.qr_code.clone()),
                    expires_at: i.expires_at,
                }),
            _ => None,
        };
        let otp = match (s.status, s.paid_intent) {
            (SessionStatus::Paid, Some(pi)) => {
                let key = self.ps_otp_key(s.merchant_id).await?;
                Some(
                    key.derive(&s.reference, &pi.to_string())
                        .expose()
                        .to_string(),
                )
            }
            _ => None,
        };
        let merchant_name = self.merchant(s.merchant_id).await.ok().map(|m| m.name);
        Ok(ConsumerView {
            ipay_reference_18: s.reference.to_string(),
            ipay_reference_display: s.reference.grouped(),
            merchant_name,
            amount: s.amount,
            currency: s.currency.clone(),
            status: s.status,
            parcel_status: s.parcel_status,
            channels: self.ps_scfg().channels.clone(),
            payment,
            otp,
        })
    }

    async fn ps_by_token(&self, token: &str) -> EngineResult<PaymentSession> {
        // Tokens are 43 base64url characters; anything else cannot match.
        let nf = || EngineError::not_found("payment session", "(token)");
        if token.len() > 100 {
            return Err(nf());
        }
        self.ps_lookup(SESSION_BY_TOKEN, &token_key(token))
            .await?
            .ok_or_else(nf)
    }

    /// Starts (or restarts) the consumer's payment through the engine.
    pub async fn start_payment(
        &self,
        token: &str,
        req: StartPaymentRequest,
    ) -> EngineResult<ConsumerView> {
        if !self.ps_scfg().channels.contains(&req.channel) {
            return Err(EngineError::invalid(
                "channel_not_accepted",
                "channel",
                format!("pay with one of: {}", self.ps_scfg().channels.join(", ")),
            ));
        }
        let simulate = match req.simulate.as_deref() {
            None => None,
            Some("succeed") => Some(true),
            Some("fail") => Some(false),
            Some(_) => {
                return Err(EngineError::invalid(
                    "parameter_invalid",
                    "simulate",
                    "simulate must be `succeed` or `fail`",
                ));
            }
        };
        if simulate.is_some() && (self.ps_livemode() || req.channel != "sandbox") {
            return Err(EngineError::Forbidden {
                code: "test_mode_only",
                message: "simulate works in test mode with the sandbox channel only".into(),
            });
        }
        let s = self.ps_by_token(token).await?;
        let s = self.settle_from_intent(s).await?;
        let ctx = self.ps_engine_ctx(s.merchant_id);
        let (s, ()) = self
            .ps_mutate(s.id, async |s, c| {
                // A payment still open on the same channel is reused, not duplicated.
                if let (SessionStatus::PaymentPending, Some(pi)) = (s.status, s.payment_intent)
                    && let Some(i) = self.engine.ledger().get_intent(pi).await?
                {
                    if i.status != IntentStatus::Pending {
                        self.ps_apply_intent_outcome(s, c, &i).await?;
                    } else if i.channel == req.channel {
                        return Ok(());
                    } else {
                        let _ = self
                            .engine
                            .cancel_intent(
                                &ctx,
                                &pi.to_string(),
                                Some("consumer switched channel".into()),
                            )
                            .await;
                    }
                }
                let next = session_transition(s.status, SessionAction::StartPayment)?;
                let service = self.ps_service_for(&ctx).await?;
                let mut metadata = serde_json::Map::new();
                metadata.insert("ipay_session".into(), s.id.to_string().into());
                metadata.insert("ipay_reference".into(), s.reference.to_string().into());
                let out = self
                    .engine
                    .create_intent(
                        &ctx,
                        CreateIntentRequest {
                            service_id: service.to_string(),
                            amount: AmountInput {
                                value: s.amount,
                                currency: s.currency.clone(),
                            },
                            channel: req.channel.clone(),
                            metadata: Some(metadata),
                            expires_in: Some(self.ps_scfg().payment_expires_in_secs),
                        },
                        None,
                    )
                    .await?;
                let intent: PaymentIntent = serde_json::from_str(&out.body).map_err(internal)?;
                s.status = next;
                s.payment_intent = Some(intent.id);
                s.psp = Some(req.channel.clone());
                s.payment_method = Some(method_of(&req.channel).into());
                let now = self.engine.clock().now();
                c.note(
                    s,
                    now,
                    "payment.started",
                    serde_json::json!({"payment_intent": intent.id, "channel": req.channel}),
                );
                if let Some(ok) = simulate {
                    let settled = self
                        .engine
                        .sandbox_settle(&ctx, &intent.id.to_string(), ok)
                        .await?;
                    self.ps_apply_intent_outcome(s, c, &settled).await?;
                }
                Ok(())
            })
            .await?;
        if s.status == SessionStatus::PaymentPending {
            self.ps_watch(s.id);
        }
        self.consumer_view(token).await
    }

    fn ps_watch(&self, id: SessionId) {
        if self.sessions.watched.len() < self.ps_scfg().watch_max_sessions {
            self.sessions.watched.insert(id, ());
        }
    }

    /// Checks every watched session once (the watcher's tick; tests call it directly).
    pub async fn check_watched(&self) {
        let ids: Vec<SessionId> = self.sessions.watched.iter().map(|e| *e.key()).collect();
        for id in ids {
            match self.ps_load(id).await {
                Ok(Some(s)) if s.status == SessionStatus::PaymentPending => {
                    if let Err(e) = self.settle_from_intent(s).await {
                        tracing::warn!(error = %e, session = %id, "paid check failed");
                    }
                }
                _ => {
                    self.sessions.watched.remove(&id);
                }
            }
        }
    }

    /// Runs the paid-check watcher until the subsystem is dropped.
    pub fn spawn_watcher(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let every = Duration::from_millis(self.ps_scfg().paid_check_interval_ms.max(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(lm) = weak.upgrade() else { return };
                lm.check_watched().await;
            }
        });
    }

    // ------------------------------------------------------------------ parcel

    /// Moves the parcel (merchant or operator).
    pub async fn set_parcel_status(
        &self,
        who: Actor,
        id: &str,
        req: ParcelStatusRequest,
    ) -> EngineResult<SessionView> {
        let to = ParcelStatus::parse(&req.status).ok_or_else(|| {
            EngineError::invalid(
                "parameter_invalid",
                "status",
                "status must be one of PICKED_UP, IN_DELIVERY, DELIVERED",
            )
        })?;
        let s = self.ps_visible(who, id).await?;
        let (s, ()) = self
            .ps_mutate(s.id, async |s, c| {
                let released = s.status == SessionStatus::Released;
                let next = parcel_transition(s.parcel_status, to, released)?;
                if next == s.parcel_status {
                    return Ok(());
                }
                let now = self.engine.clock().now();
                let from = s.parcel_status;
                s.parcel_status = next;
                c.note(
                    s,
                    now,
                    "parcel.status_changed",
                    serde_json::json!({"from": from, "to": next}),
                );
                if next == ParcelStatus::Delivered {
                    self.ps_deliver(s, c, now).await;
                }
                Ok(())
            })
            .await?;
        Ok(self.session_view(&s))
    }

    async fn ps_deliver(&self, s: &mut PaymentSession, c: &mut Change, now: Timestamp) {
        s.delivered_at = Some(now);
        let view = self.session_view(s);
        c.event(s, now, "parcel.delivered", &view);
        self.ps_order_status_ops(s, OrderStatus::Delivered, c).await;
    }

    // ------------------------------------------------------------------ driver OTP

    /// A driver's OTP check at the door. A correct OTP releases the parcel (`session.otp_verified`)
    /// and delivers it (`parcel.delivered`). Wrong OTPs count; the last allowed one locks the
    /// reference (423) until an operator unlocks it. Every attempt is logged, never the OTP.
    pub async fn verify_otp(
        &self,
        driver: &Driver,
        req: VerifyOtpRequest,
    ) -> EngineResult<VerifyOtpResponse> {
        if let Err(not_until) = self.sessions.drivers.check_key(&driver.user_id) {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            return Err(EngineError::RateLimited {
                message: "too many OTP checks from this driver; wait and retry".into(),
                retry_after_secs: wait.as_secs().max(1) as u32,
            });
        }
        let reference = IpayReference::parse(&req.ipay_reference_18).map_err(|e| {
            EngineError::invalid("reference_invalid", "ipay_reference_18", e.to_string())
        })?;
        if !otp::well_formed(&req.otp_4) {
            return Err(EngineError::invalid(
                "parameter_invalid",
                "otp_4",
                "otp_4 is the 4-digit code the consumer shows",
            ));
        }
        let nf = || EngineError::not_found("payment session", reference);
        let s = self
            .ps_lookup(SESSION_BY_REF, &reference.to_string())
            .await?
            .ok_or_else(nf)?;
        if driver.merchant_id.is_some_and(|m| m != s.merchant_id) {
            return Err(nf());
        }
        let s = self.settle_from_intent(s).await?;
        let key = self.ps_otp_key(s.merchant_id).await?;
        let max = self.ps_scfg().otp_max_failures.max(1);
        let driver_id = driver.user_id.clone();
        let (s, outcome) = self
            .ps_mutate(s.id, async |s, c| {
                let now = self.engine.clock().now();
                let attempt = |s: &mut PaymentSession, c: &mut Change, result: &str| {
                    c.note(
                        s,
                        now,
                        "otp.attempt",
                        serde_json::json!({"driver": driver_id, "result": result,
                            "failures": s.otp_failures}),
                    );
                };
                if s.otp_locked {
                    attempt(s, c, "locked");
                    return Ok(Err(locked()));
                }
                let paid_intent = match (s.status, s.paid_intent) {
                    (SessionStatus::Paid, Some(pi)) => pi,
                    (SessionStatus::Released, _) => {
                        attempt(s, c, "already_released");
                        return Ok(Err(EngineError::InvalidStateTransition {
                            object: "payment session",
                            from: s.status.as_str().into(),
                            action: "verify an OTP".into(),
                        }));
                    }
                    _ => {
                        attempt(s, c, "not_paid");
                        return Ok(Err(EngineError::Conflict {
                            code: "session_not_paid",
                            message:
                                "the consumer has not paid yet; no OTP exists for this reference"
                                    .into(),
                        }));
                    }
                };
                if s.parcel_status == ParcelStatus::AwaitingPickup {
                    attempt(s, c, "parcel_not_picked_up");
                    return Ok(Err(EngineError::Conflict {
                        code: "parcel_not_picked_up",
                        message: "the parcel has not been picked up; mark it PICKED_UP first"
                            .into(),
                    }));
                }
                if !key.verify(&s.reference, &paid_intent.to_string(), &req.otp_4) {
                    s.otp_failures += 1;
                    let left = max.saturating_sub(s.otp_failures);
                    attempt(s, c, "wrong");
                    if left == 0 {
                        s.otp_locked = true;
                        c.note(
                            s,
                            now,
                            "otp.locked",
                            serde_json::json!({"failures": s.otp_failures}),
                        );
                        return Ok(Err(locked()));
                    }
                    return Ok(Err(EngineError::invalid(
                        "otp_incorrect",
                        "otp_4",
                        format!(
                            "wrong OTP; {left} attempt(s) left before this reference is locked"
                        ),
                    )));
                }
                attempt(s, c, "correct");
                s.status = session_transition(s.status, SessionAction::ReleaseWithOtp)?;
                s.released_at = Some(now);
                let view = self.session_view(s);
                c.event(s, now, "session.otp_verified", &view);
                // The parcel is in the driver's hands at the door: released means delivered.
                let from = s.parcel_status;
                s.parcel_status =
                    parcel_transition(ParcelStatus::InDelivery, ParcelStatus::Delivered, true)?;
                c.note(
                    s,
                    now,
                    "parcel.status_changed",
                    serde_json::json!({"from": from, "to": s.parcel_status}),
                );
                self.ps_deliver(s, c, now).await;
                Ok(Ok(()))
            })
            .await?;
        outcome?;
        Ok(VerifyOtpResponse {
            released: true,
            session: self.session_view(&s),
        })
    }

    /// Operator: clears the wrong-OTP count and the lock of a session.
    pub async fn unlock_otp(&self, id: &str, operator: &str) -> EngineResult<SessionView> {
        let s = self.ps_visible(Actor::Operator, id).await?;
        let operator = operator.to_string();
        let (s, ()) = self
            .ps_mutate(s.id, async |s, c| {
                let now = self.engine.clock().now();
                c.note(
                    s,
                    now,
                    "otp.unlocked",
                    serde_json::json!({"operator": operator, "failures_cleared": s.otp_failures,
                        "was_locked": s.otp_locked}),
                );
                s.otp_failures = 0;
                s.otp_locked = false;
                Ok(())
            })
            .await?;
        Ok(self.session_view(&s))
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

    /// The OTP of a paid session (benches and tests; never logged, never in an event).
    pub async fn otp_of(&self, s: &PaymentSession) -> EngineResult<Option<Otp>> {
        match s.paid_intent {
            Some(pi) => Ok(Some(
                self.ps_otp_key(s.merchant_id)
                    .await?
                    .derive(&s.reference, &pi.to_string()),
            )),
            None => Ok(None),
        }
    }
}

fn locked() -> EngineError {
    EngineError::Locked {
        code: "otp_locked",
        message: "too many wrong OTPs for this reference; an operator must unlock it \
                  (POST /api/payment-sessions/{id}/unlock-otp)"
            .into(),
    }
}

fn check_order_payable(o: &Order) -> EngineResult<()> {
    if !o.ipay_flag {
        return Err(EngineError::Conflict {
            code: "order_not_ipay",
            message: format!(
                "order {} is not collected through IPAY (ipay_flag is false)",
                o.id
            ),
        });
    }
    if o.status == OrderStatus::Cancelled {
        return Err(EngineError::Conflict {
            code: "order_cancelled",
            message: format!("order {} is cancelled", o.id),
        });
    }
    Ok(())
}

/// A held reservation; give it back with [`Held::release`].
struct Held(crate::store::Reservation);

impl Held {
    async fn release(self, lm: &LastMile) {
        if let Err(e) = lm.engine.hot().release(self.0).await {
            tracing::warn!(error = %e, "releasing a session reservation failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parcel_moves_forward_one_step_at_a_time() {
        use ParcelStatus as P;
        assert_eq!(
            parcel_transition(P::AwaitingPickup, P::PickedUp, false).unwrap(),
            P::PickedUp
        );
        assert_eq!(
            parcel_transition(P::PickedUp, P::InDelivery, false).unwrap(),
            P::InDelivery
        );
        assert_eq!(
            parcel_transition(P::InDelivery, P::Delivered, true).unwrap(),
            P::Delivered
        );
        assert_eq!(
            parcel_transition(P::InDelivery, P::InDelivery, false).unwrap(),
            P::InDelivery
        );
        for (a, b) in [
            (P::AwaitingPickup, P::InDelivery),
            (P::AwaitingPickup, P::Delivered),
            (P::PickedUp, P::Delivered),
            (P::InDelivery, P::PickedUp),
            (P::Delivered, P::InDelivery),
            (P::PickedUp, P::AwaitingPickup),
        ] {
            let e = parcel_transition(a, b, true).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Conflict, "{a:?} -> {b:?}");
        }
        let e = parcel_transition(P::InDelivery, P::Delivered, false).unwrap_err();
        assert_eq!(e.code(), "otp_not_verified");
    }

    #[test]
    fn session_table_allows_only_its_moves() {
        use SessionAction as A;
        use SessionStatus as S;
        let all_s = [S::Created, S::PaymentPending, S::Paid, S::Released];
        let all_a = [
            A::StartPayment,
            A::PaymentFailed,
            A::PaymentSucceeded,
            A::ReleaseWithOtp,
        ];
        let allowed = [
            (S::Created, A::StartPayment, S::PaymentPending),
            (S::PaymentPending, A::StartPayment, S::PaymentPending),
            (S::PaymentPending, A::PaymentFailed, S::Created),
            (S::PaymentPending, A::PaymentSucceeded, S::Paid),
            (S::Paid, A::ReleaseWithOtp, S::Released),
        ];
        for s in all_s {
            for a in all_a {
                let want = allowed
                    .iter()
                    .find(|(f, x, _)| *f == s && *x == a)
                    .map(|t| t.2);
                match (session_transition(s, a), want) {
                    (Ok(got), Some(w)) => assert_eq!(got, w),
                    (Err(e), None) => assert_eq!(e.code(), "invalid_state_transition"),
                    (got, want) => panic!("{s:?} {a:?}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    #[test]
    fn session_ids_round_trip_and_sort_by_time() {
        let a = SessionId::new_at(1_000);
        let b = SessionId::new_at(2_000);
        assert!(a < b && a.to_string() < b.to_string());
        assert_eq!(SessionId::parse(&a.to_string()).ok(), Some(a));
        assert!(SessionId::parse("ps_short").is_err());
        assert!(SessionId::parse(&a.to_string().replace("ps_", "pi_")).is_err());
    }

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

    #[test]
    fn verify_request_debug_hides_the_otp() {
        let r = VerifyOtpRequest {
            ipay_reference_18: "1".into(),
            otp_4: "1234".into(),
        };
        assert!(!format!("{r:?}").contains("1234"));
    }
}
