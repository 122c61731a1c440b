//! Merchant webhooks: the durable outbox, signed deliveries, the retry schedule, delivery logs,
//! dropped deliveries, replay and recovery.
//!
//! - [`with_outbox`] (applied by [`Engine::start`]) writes a fan-out marker with every event, in
//!   the event's own batch ([`outbox`]).
//! - [`Webhooks::start`] runs the dispatcher ([`dispatch`]): one task per shard this node holds
//!   the lease for, reading the due-time index, fanning events out to endpoints
//!   ([`resolve`]), sending signed requests ([`sign`]) and recording every attempt.
//! - The API methods on [`Webhooks`] ([`api`]) manage endpoints and read logs; the gateway maps
//!   them to HTTP.
//!
//! Everything is stored with the ledger's generic records and sorted indexes ([`model`]).

pub mod api;
pub mod dispatch;
pub mod model;
pub mod outbox;
pub mod resolve;
pub mod sign;
#[cfg(test)]
mod tests;

use crate::Engine;
use crate::error::{EngineError, EngineResult};
use crate::store::{HotState, Ledger};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::watch;

/// `[webhooks]` in `ipay.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Run the dispatcher on this node (the API works either way).
    pub dispatch: bool,
    /// One attempt's limit, connect to last response byte, ms.
    pub timeout_ms: u64,
    /// Requests in flight to one endpoint from this node.
    pub max_concurrency_per_endpoint: usize,
    /// Deliveries being sent at once by one shard (16 shards per node at most).
    pub max_in_flight_per_shard: usize,
    /// Deliveries of one endpoint taken on by one shard at once; more are pushed back 1 s.
    pub max_in_flight_per_endpoint: usize,
    /// Most items (due entries or finished attempts) one bookkeeping step handles.
    pub max_batch: usize,
    /// How often a shard looks for due retries when nothing woke it, ms.
    pub poll_interval_ms: u64,
    /// How long a delivery being sent is hidden from the due index; after a crash it is sent
    /// again once this lapses, ms. Must exceed `timeout_ms`.
    pub inflight_lease_ms: u64,
    /// Longest `Retry-After` honoured, s.
    pub retry_after_max_secs: u64,
    /// How long resolved endpoints are cached, ms.
    pub endpoint_cache_ms: u64,
    /// API endpoints per merchant and mode.
    pub max_endpoints: usize,
    /// Accept `http://127.0.0.1`, `http://localhost` and `http://[::1]` endpoints (tests and
    /// local development only). Off by default: endpoints must be https.
    pub allow_insecure_loopback: bool,
    /// Default overlap after a secret rotation, s (old and new secret both sign).
    pub rotation_overlap_secs: i64,
    /// Longest overlap a rotation may ask for, s.
    pub rotation_overlap_max_secs: i64,
    /// Most events one recover call re-sends.
    pub recover_max_events: usize,
    /// Longest window one recover call covers, days.
    pub recover_max_days: i64,
    /// Shard lease lifetime (cluster mode), ms.
    pub lease_ttl_ms: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            dispatch: true,
            timeout_ms: 5_000,
            max_concurrency_per_endpoint: 32,
            max_in_flight_per_shard: 256,
            max_in_flight_per_endpoint: 128,
            max_batch: 1_024,
            poll_interval_ms: 1_000,
            inflight_lease_ms: 30_000,
            retry_after_max_secs: 3_600,
            endpoint_cache_ms: 2_000,
            max_endpoints: 16,
            allow_insecure_loopback: false,
            rotation_overlap_secs: 86_400,
            rotation_overlap_max_secs: 7 * 86_400,
            recover_max_events: 10_000,
            recover_max_days: 31,
            lease_ttl_ms: 10_000,
        }
    }
}

/// The webhook subsystem of one node.
pub struct Webhooks {
    engine: Engine,
    shared: Arc<dispatch::Shared>,
    stop: watch::Sender<bool>,
}

impl Webhooks {
    /// Starts the delivery scheduler for this engine, taking shard leases in the engine's hot
    /// state (in-process in embedded mode, Redis in cluster mode), so one node dispatches a
    /// shard at a time.
    pub async fn start(engine: &Engine, cfg: WebhookConfig) -> EngineResult<Arc<Webhooks>> {
        Self::start_with_hot(engine, cfg, engine.hot().clone()).await
    }

    /// Starts the scheduler, taking shard leases in `hot`.
    pub async fn start_with_hot(
        engine: &Engine,
        cfg: WebhookConfig,
        hot: Arc<dyn HotState>,
    ) -> EngineResult<Arc<Webhooks>> {
        if cfg.inflight_lease_ms <= cfg.timeout_ms {
            return Err(EngineError::Internal(
                "webhooks.inflight_lease_ms must be larger than webhooks.timeout_ms".into(),
            ));
        }
        crate::model::service::set_allow_insecure_loopback(cfg.allow_insecure_loopback);
        let ledger = engine.ledger().clone();
        let signal = outbox::signal_for(&ledger).unwrap_or_else(|| {
            tracing::warn!("webhooks: the engine's ledger has no outbox; only polling finds work");
            Arc::new(outbox::Signal::default())
        });
        let shared = Arc::new(
            dispatch::Shared::new(ledger, engine.clock().clone(), cfg.clone(), signal)
                .map_err(EngineError::from)?,
        );
        let (stop, rx) = watch::channel(false);
        if cfg.dispatch {
            let node = model::new_id("node_", engine.clock().now_ms());
            tokio::spawn(dispatch::run_leases(shared.clone(), hot, node, rx));
        }
        Ok(Arc::new(Webhooks {
            engine: engine.clone(),
            shared,
            stop,
        }))
    }

    /// Stops this node's dispatcher (sends in flight finish on their own).
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Wakes the dispatcher of `shard` for work due from `ms` on.
    fn wake(&self, shard: u32, ms: i64) {
        self.shared.signal.wake(shard, model::minute_of(ms));
    }
}

impl Drop for Webhooks {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Wraps the ledger so that every batch carrying events also carries their outbox records
/// (one durable step). [`Engine::start`] applies it to the ledger it is given.
pub fn with_outbox(ledger: Arc<dyn Ledger>) -> Arc<dyn Ledger> {
    outbox::wrap(ledger)
}
