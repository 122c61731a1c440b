//! Last-mile pay-on-delivery: accounts, orders (API, bulk upload, shop webhooks), payment
//! sessions with an 18-digit reference, parcel states, driver OTP, the live event stream, and
//! the merchant's self-serve go-live ([`golive`]: API keys, event endpoints, channels, mode).
//!
//! This crate owns the [`LastMile`] facade and its configuration. Each concern lives in its own
//! module: [`accounts`] (users, passwords, JWTs), [`orders`] (the order model, its storage and
//! listing), [`upload`] (streaming CSV/XLSX ingest), [`shops`] (shop-platform webhooks: the
//! flow; each platform's wire format is in `ipay_adapters::shops`), [`sessions`] (payment
//! sessions, parcels, OTP), [`stream`] (the live event stream), [`statements`] (fee statements
//! and channel settlement checks), [`sync`] (orders pulled from marketplaces and the sync
//! scheduler), [`returns`] (returns, Sendcloud labels, refunds on receipt) and [`lockers`]
//! (locker pickup codes). It runs on the engine's public
//! API only, and all data lives in the ledger's generic records and sorted indexes, so embedded
//! and cluster mode work alike. HTTP belongs to the gateway (`gateway/src/routes/lastmile`).

pub mod accounts;
mod daily;
pub mod golive;
pub mod orders;
pub mod shops;
pub mod upload;

pub mod lockers;
pub mod otp;
pub mod reference;
pub mod returns;
pub mod sessions;
pub mod statements;
pub mod stream;
pub mod sync;

use ipay_engine::Engine;
use ipay_engine::error::{EngineError, EngineResult};
use ipay_engine::store::Reservation;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `[lastmile]` in `ipay.toml`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LastMileConfig {
    /// HS256 key for account JWTs (`IPAY_LASTMILE__JWT_SECRET`), at least 32 bytes. When
    /// absent, a random key is generated once and kept in the ledger, so tokens survive
    /// restarts; in cluster mode set it explicitly so every node agrees from the start.
    pub jwt_secret: Option<String>,
    /// Lifetime of an account JWT, seconds (default 7 days).
    pub token_ttl_secs: i64,
    /// Orders written per ledger batch during a bulk upload.
    pub upload_batch_size: usize,
    /// Largest bulk-upload body, bytes (CSV is streamed, so this bounds time, not memory).
    /// Default 512 MiB: a 1,000,000-row CSV is about 140 MB.
    pub upload_max_bytes: u64,
    /// Time bound of one `POST /api/orders/upload`, ms (default 15 minutes). The route is
    /// outside the global `server.request_timeout_ms`, which would cut a large file.
    pub upload_timeout_ms: u64,
    /// Bulk uploads running at once on this node; more are refused with 503 (default 4).
    pub upload_max_concurrent: usize,
    /// Largest XLSX upload, bytes (an XLSX is a zip whose directory sits at the end, so it is
    /// read whole).
    pub xlsx_max_bytes: usize,
    /// Most per-row errors and duplicates listed in an upload report (the counts stay exact).
    pub upload_max_reported_rows: usize,
    /// Most index entries one `GET /api/orders` examines before returning a partial page with
    /// a cursor to continue from.
    pub list_scan_budget: usize,
    /// `livemode` of the events last-mile objects emit.
    pub events_livemode: bool,
    /// Payment sessions, driver OTP and the live stream (`[lastmile.sessions]`).
    pub sessions: sessions::SessionsConfig,
    /// Marketplace order sync and its scheduler (`[lastmile.sync]`).
    pub sync: sync::SyncConfig,
    /// Returns and Sendcloud labels (`[lastmile.returns]`).
    pub returns: returns::ReturnsConfig,
    /// Locker carriers' secrets and code lock-out (`[lastmile.lockers]`).
    pub lockers: lockers::LockersConfig,
}

impl Default for LastMileConfig {
    fn default() -> Self {
        LastMileConfig {
            jwt_secret: None,
            token_ttl_secs: 7 * 86_400,
            upload_batch_size: 500,
            upload_max_bytes: 512 * 1024 * 1024,
            upload_timeout_ms: 15 * 60 * 1_000,
            upload_max_concurrent: 4,
            xlsx_max_bytes: 50 * 1024 * 1024,
            upload_max_reported_rows: 1_000,
            list_scan_budget: 20_000,
            events_livemode: false,
            sessions: sessions::SessionsConfig::default(),
            sync: sync::SyncConfig::default(),
            returns: returns::ReturnsConfig::default(),
            lockers: lockers::LockersConfig::default(),
        }
    }
}

impl fmt::Debug for LastMileConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LastMileConfig")
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "***"))
            .field("token_ttl_secs", &self.token_ttl_secs)
            .field("upload_batch_size", &self.upload_batch_size)
            .field("upload_max_bytes", &self.upload_max_bytes)
            .field("upload_timeout_ms", &self.upload_timeout_ms)
            .field("upload_max_concurrent", &self.upload_max_concurrent)
            .field("xlsx_max_bytes", &self.xlsx_max_bytes)
            .field("upload_max_reported_rows", &self.upload_max_reported_rows)
            .field("list_scan_budget", &self.list_scan_budget)
            .field("events_livemode", &self.events_livemode)
            .field("sessions", &self.sessions)
            .field("sync", &self.sync)
            .field("returns", &self.returns)
            .field("lockers", &self.lockers)
            .finish()
    }
}

/// The last-mile subsystem of one node.
pub struct LastMile {
    engine: Engine,
    cfg: LastMileConfig,
    jwt: accounts::JwtKeys,
    /// Payment sessions' per-node state (OTP keys, driver limits, settle consumer).
    sessions: sessions::SessionsState,
    /// Marketplace sync: platform client and scheduler state.
    sync: sync::SyncState,
    /// The Sendcloud account return labels are made with, when its keys are configured.
    sendcloud: Option<ipay_adapters::sendcloud::SendcloudClient>,
}

impl LastMile {
    /// Starts the last-mile subsystem on this engine.
    pub async fn start(engine: &Engine, cfg: LastMileConfig) -> EngineResult<Arc<LastMile>> {
        let mut cfg = cfg;
        cfg.upload_batch_size = cfg.upload_batch_size.clamp(1, 5_000);
        cfg.list_scan_budget = cfg.list_scan_budget.max(100);
        cfg.token_ttl_secs = cfg.token_ttl_secs.clamp(60, 365 * 86_400);
        let jwt = accounts::JwtKeys::load(engine, cfg.jwt_secret.as_deref()).await?;
        let hook = sessions::settle::SettleHook::attach(
            engine.ledger().as_ref(),
            cfg.sessions.settle_queue_max,
        )?;
        let sendcloud = returns::label::sendcloud_client(&cfg.returns)?;
        let lm = Arc::new(LastMile {
            engine: engine.clone(),
            sendcloud,
            sessions: sessions::SessionsState::new(&cfg.sessions, hook),
            sync: sync::SyncState::new(&cfg.sync)?,
            cfg,
            jwt,
        });
        lm.spawn_settler();
        lm.spawn_scheduler();
        Ok(lm)
    }

    /// The engine this subsystem runs on.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The configuration in force.
    pub fn config(&self) -> &LastMileConfig {
        &self.cfg
    }

    /// Reserves unique keys (an email, an external order id, a webhook delivery id) in
    /// [`HotState`](ipay_engine::store::HotState) for a check-then-write, so no other request on any
    /// node can pass the same check before this one commits. In cluster mode a reservation is
    /// a Redis `SET NX` with a TTL, in embedded mode an in-process entry.
    ///
    /// All or nothing: when one key is held elsewhere, the keys taken are given back before
    /// waiting, so two callers reserving overlapping sets cannot deadlock. Waits up to
    /// [`UNIQUE_WAIT`] in total, then 409 `duplicate_check_busy`.
    pub(crate) async fn reserve_unique(&self, scopes: Vec<String>) -> EngineResult<UniqueKeys> {
        let hot = self.engine.hot();
        let deadline = Instant::now() + UNIQUE_WAIT;
        loop {
            let mut results = Vec::with_capacity(scopes.len());
            for chunk in scopes.chunks(UNIQUE_PARALLEL) {
                let calls: Vec<_> = chunk.iter().map(|s| hot.reserve(s, UNIQUE_TTL)).collect();
                results.extend(futures::future::join_all(calls).await);
            }
            let mut held = UniqueKeys(Vec::with_capacity(scopes.len()));
            let mut busy = None;
            let mut failed = None;
            for (scope, r) in scopes.iter().zip(results) {
                match r {
                    Ok(Some(r)) => held.0.push(r),
                    Ok(None) => {
                        busy.get_or_insert(scope);
                    }
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
            let Some(scope) = busy.filter(|_| failed.is_none()) else {
                if let Some(e) = failed {
                    held.release(self).await;
                    return Err(e.into());
                }
                return Ok(held);
            };
            held.release(self).await;
            let now = Instant::now();
            if now >= deadline {
                return Err(EngineError::Conflict {
                    code: "duplicate_check_busy",
                    message: "another request is storing the same email, order id or webhook \
                              delivery right now; retry"
                        .into(),
                });
            }
            hot.wait_released(scope, deadline - now).await;
        }
    }
}

/// Lifetime of a unique-key reservation whose holder never gives it back (a crashed node).
const UNIQUE_TTL: Duration = Duration::from_secs(30);
/// Longest wait for unique keys held by another request.
const UNIQUE_WAIT: Duration = Duration::from_secs(10);
/// Reservations requested at once (in cluster mode: Redis round trips in flight).
const UNIQUE_PARALLEL: usize = 64;

/// Unique keys held by [`LastMile::reserve_unique`]; give them back with
/// [`UniqueKeys::release`] after the write that depends on them has committed (or failed).
#[must_use = "release the keys after the commit"]
pub(crate) struct UniqueKeys(Vec<Reservation>);

impl UniqueKeys {
    /// Gives every key back. A failure is logged: the key then lapses at its TTL.
    pub(crate) async fn release(self, lm: &LastMile) {
        let hot = lm.engine.hot();
        let mut results = Vec::with_capacity(self.0.len());
        let mut held = self.0.into_iter().peekable();
        while held.peek().is_some() {
            let calls: Vec<_> = held
                .by_ref()
                .take(UNIQUE_PARALLEL)
                .map(|r| hot.release(r))
                .collect();
            results.extend(futures::future::join_all(calls).await);
        }
        for r in results {
            if let Err(e) = r {
                tracing::warn!(error = %e, "releasing a unique-key reservation failed");
            }
        }
    }
}
