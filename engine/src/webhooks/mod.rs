//! Merchant webhooks: the durable outbox, signed deliveries, the retry schedule, delivery logs,
//! dropped deliveries, replay and recovery.
//!
//! - [`Outbox`] is the ledger's commit hook: it writes a fan-out marker with every event, in
//!   the event's own batch ([`outbox`]). It is attached to the ledger before the engine starts.
//! - [`Webhooks::start`] runs the dispatcher ([`dispatch`]): one task per shard this node holds
//!   the lease for, reading the due-time index, fanning events out to endpoints
//!   ([`resolve`]), sending signed requests ([`sign`]) through a [`transport`] and recording
//!   every attempt.
//! - The API methods on [`Webhooks`] ([`api`]) manage endpoints and read logs; the gateway maps
//!   them to HTTP.
//!
//! Everything is stored with the ledger's generic records and sorted indexes ([`model`]). The
//! subsystem is given what it needs ([`WebhookDeps`]: ledger, hot state, clock, outbox, URL
//! policy, page limit); it does not know the [`crate::Engine`].

pub mod api;
pub mod backoff;
pub mod dispatch;
pub mod model;
pub mod outbox;
pub mod resolve;
pub mod retention;
pub mod sign;
#[cfg(test)]
mod tests;
pub mod transport;

pub use outbox::Outbox;

use crate::clock::Clock;
use crate::error::{EngineError, EngineResult};
use crate::store::{HotState, Ledger};
use crate::url_policy::{AllowList, Lookup, SystemLookup, UrlPolicy};
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
    /// Hosts and networks webhooks may reach although they are private, loopback or link-local
    /// (IP addresses, CIDR networks such as `10.20.0.0/16`, or exact host names). Empty by
    /// default: webhooks only go to public addresses.
    pub allowed_private_hosts: Vec<String>,
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
    /// Failed attempts in a row after which an endpoint backs off: its due deliveries wait,
    /// unattempted, until a window ends, then one probe goes ([`backoff`]). 0: never.
    pub backoff_after_failures: u32,
    /// Longest back-off window, ms (windows start at 10 s and double per failure).
    pub backoff_max_ms: u64,
    /// Days attempt logs, dropped-delivery entries and finished delivery records are kept
    /// (whole UTC days; the per-day event index `recover` reads is kept at least
    /// `recover_max_days`). At least 1.
    pub retention_days: i64,
    /// How often the retention janitor looks for expired days, ms (at least 1000).
    pub retention_sweep_ms: u64,
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
            allowed_private_hosts: Vec::new(),
            rotation_overlap_secs: 86_400,
            rotation_overlap_max_secs: 7 * 86_400,
            recover_max_events: 10_000,
            recover_max_days: 31,
            lease_ttl_ms: 10_000,
            backoff_after_failures: 5,
            backoff_max_ms: 600_000,
            retention_days: 30,
            retention_sweep_ms: 600_000,
        }
    }
}

impl WebhookConfig {
    /// The URL policy these settings ask for (endpoints, manifests and the dispatcher share it).
    /// An unreadable allow-list entry allows nothing here (and [`Webhooks::start`] refuses to
    /// start with it, see [`WebhookConfig::validate`]).
    pub fn url_policy(&self) -> UrlPolicy {
        UrlPolicy {
            allow_insecure_loopback: self.allow_insecure_loopback,
            allowed_private_hosts: AllowList::parse(&self.allowed_private_hosts)
                .unwrap_or_default(),
        }
    }

    /// Refuses settings that cannot work together or cannot be read.
    pub fn validate(&self) -> EngineResult<()> {
        if self.inflight_lease_ms <= self.timeout_ms {
            return Err(EngineError::Internal(
                "webhooks.inflight_lease_ms must be larger than webhooks.timeout_ms".into(),
            ));
        }
        AllowList::parse(&self.allowed_private_hosts).map_err(EngineError::Internal)?;
        if self.retention_days < 1 {
            return Err(EngineError::Internal(
                "webhooks.retention_days must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// What the webhook subsystem works with, handed in by whoever wires the process.
#[derive(Clone)]
pub struct WebhookDeps {
    /// Where endpoints, deliveries and logs are stored, and events are read.
    pub ledger: Arc<dyn Ledger>,
    /// Where shard leases are taken (in-process in embedded mode, Redis in cluster mode), so
    /// one node dispatches a shard at a time.
    pub hot: Arc<dyn HotState>,
    pub clock: Arc<dyn Clock>,
    /// The outbox attached to `ledger` (its signal wakes this node's shards).
    pub outbox: Arc<Outbox>,
    /// Which URLs endpoints may have and deliveries may go to.
    pub url_policy: UrlPolicy,
    /// Largest `limit` a listing accepts (`[limits] max_page_size`).
    pub max_page_size: usize,
}

/// The webhook subsystem of one node.
pub struct Webhooks {
    shared: Arc<dispatch::Shared>,
    max_page_size: usize,
    stop: watch::Sender<bool>,
}

impl Webhooks {
    /// Starts the delivery scheduler (unless `cfg.dispatch` is off), taking shard leases in
    /// `deps.hot`.
    pub async fn start(deps: WebhookDeps, cfg: WebhookConfig) -> EngineResult<Arc<Webhooks>> {
        Webhooks::start_with_lookup(deps, cfg, Arc::new(SystemLookup)).await
    }

    /// [`Webhooks::start`] resolving endpoint host names with `lookup` instead of the system
    /// resolver (tests pin names to addresses with a [`crate::url_policy::StaticLookup`]).
    pub async fn start_with_lookup(
        deps: WebhookDeps,
        cfg: WebhookConfig,
        lookup: Arc<dyn Lookup>,
    ) -> EngineResult<Arc<Webhooks>> {
        let http = transport::HttpTransport::new(&cfg, deps.url_policy.clone(), lookup)
            .map_err(EngineError::from)?;
        Webhooks::start_with_transport(deps, cfg, Arc::new(http)).await
    }

    /// [`Webhooks::start`] sending every attempt through `transport` instead of HTTPS (the
    /// deterministic simulation plugs in a receiver on tokio's paused clock). The URL policy's
    /// form rules still apply before each send; resolving and connecting are the transport's.
    pub async fn start_with_transport(
        deps: WebhookDeps,
        cfg: WebhookConfig,
        transport: Arc<dyn transport::Transport>,
    ) -> EngineResult<Arc<Webhooks>> {
        cfg.validate()?;
        let WebhookDeps {
            ledger,
            hot,
            clock,
            outbox,
            url_policy,
            max_page_size,
        } = deps;
        let node = model::new_id("node_", clock.now_ms());
        let shared = Arc::new(dispatch::Shared::new(
            ledger,
            clock,
            cfg.clone(),
            url_policy,
            outbox,
            transport,
        ));
        let (stop, rx) = watch::channel(false);
        // Retention runs on every node, dispatching or not (its deletes are idempotent).
        tokio::spawn(retention::run(shared.clone(), rx.clone()));
        if cfg.dispatch {
            tokio::spawn(dispatch::run_leases(shared.clone(), hot, node, rx));
        }
        Ok(Arc::new(Webhooks {
            shared,
            max_page_size,
            stop,
        }))
    }

    /// Stops this node's dispatcher (sends in flight finish on their own).
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Purges, now, every whole day of webhook data older than its retention (the janitor does
    /// this every `retention_sweep_ms`).
    pub async fn purge_expired(&self) -> EngineResult<retention::PurgeReport> {
        Ok(retention::sweep(&self.shared).await?)
    }

    /// Follows what this node's dispatcher task for `shard` has done (steps begun and finished,
    /// sends started), to wait for a step that began after some moment.
    pub fn progress(&self, shard: u32) -> Option<watch::Receiver<dispatch::ShardProgress>> {
        self.shared.progress(shard)
    }

    /// Wakes the dispatcher of `shard` for work due from `ms` on.
    fn wake(&self, shard: u32, ms: i64) {
        self.shared.signal().wake(shard, model::minute_of(ms));
    }
}

impl Drop for Webhooks {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
