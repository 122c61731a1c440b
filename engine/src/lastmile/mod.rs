//! Last-mile pay-on-delivery: accounts, orders (API, bulk upload, shop webhooks), payment
//! sessions with an 18-digit reference, parcel states, driver OTP and the live event stream.
//!
//! This module owns the [`LastMile`] facade and its configuration. Each concern lives in its own
//! file: [`accounts`] (users, passwords, JWTs), [`orders`] (the order model, its storage and
//! listing), [`upload`] (streaming CSV/XLSX ingest), [`shops`] (shop-platform webhooks). All
//! data lives in the ledger's generic records and sorted indexes, so embedded and cluster mode
//! work alike. HTTP belongs to the gateway (`gateway/src/routes/lastmile`).

pub mod accounts;
pub mod orders;
pub mod shops;
pub mod upload;

pub mod otp;
pub mod reference;
pub mod sessions;
pub mod stream;

use crate::Engine;
use crate::error::EngineResult;
use crate::ids::MerchantId;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

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
    pub upload_max_bytes: u64,
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
}

impl Default for LastMileConfig {
    fn default() -> Self {
        LastMileConfig {
            jwt_secret: None,
            token_ttl_secs: 7 * 86_400,
            upload_batch_size: 500,
            upload_max_bytes: 2 * 1024 * 1024 * 1024,
            xlsx_max_bytes: 50 * 1024 * 1024,
            upload_max_reported_rows: 1_000,
            list_scan_budget: 20_000,
            events_livemode: false,
            sessions: sessions::SessionsConfig::default(),
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
            .field("xlsx_max_bytes", &self.xlsx_max_bytes)
            .field("upload_max_reported_rows", &self.upload_max_reported_rows)
            .field("list_scan_budget", &self.list_scan_budget)
            .field("events_livemode", &self.events_livemode)
            .field("sessions", &self.sessions)
            .finish()
    }
}

/// The last-mile subsystem of one node.
pub struct LastMile {
    engine: Engine,
    cfg: LastMileConfig,
    jwt: accounts::JwtKeys,
    /// Serialises order creation per merchant on this node, so a duplicate check and the write
    /// that follows it cannot interleave with another request for the same external id.
    order_locks: DashMap<MerchantId, Arc<tokio::sync::Mutex<()>>>,
    /// Serialises registrations on this node (the email uniqueness check).
    accounts_lock: tokio::sync::Mutex<()>,
    /// Payment sessions' per-node state (OTP keys, driver limits, paid watcher).
    sessions: sessions::SessionsState,
}

impl LastMile {
    /// Starts the last-mile subsystem on this engine.
    pub async fn start(engine: &Engine, cfg: LastMileConfig) -> EngineResult<Arc<LastMile>> {
        let mut cfg = cfg;
        cfg.upload_batch_size = cfg.upload_batch_size.clamp(1, 5_000);
        cfg.list_scan_budget = cfg.list_scan_budget.max(100);
        cfg.token_ttl_secs = cfg.token_ttl_secs.clamp(60, 365 * 86_400);
        let jwt = accounts::JwtKeys::load(engine, cfg.jwt_secret.as_deref()).await?;
        let lm = Arc::new(LastMile {
            engine: engine.clone(),
            sessions: sessions::SessionsState::new(&cfg.sessions),
            cfg,
            jwt,
            order_locks: DashMap::new(),
            accounts_lock: tokio::sync::Mutex::new(()),
        });
        lm.spawn_watcher();
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

    fn order_lock(&self, merchant: MerchantId) -> Arc<tokio::sync::Mutex<()>> {
        self.order_locks.entry(merchant).or_default().clone()
    }
}
