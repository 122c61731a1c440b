//! The durable sync scheduler: every connection has its own interval (default 15 minutes) and
//! a next-run time stored with its progress (`lm_sync_state`), so schedules survive restarts
//! and every node sees the same ones. A pass visits the connections (`lm_sync_conns`) and
//! syncs those due on the engine clock; a failed sync is retried after a delay that doubles
//! per failure up to a cap. Two nodes passing at once cannot both run a connection: the
//! sync takes a per-connection lease in HotState and re-reads the due time under it, and
//! imports are keyed by platform order id anyway.
//!
//! The background loop ticks on wall time (`tick_ms`) but decides with the injected clock, so
//! tests advance a manual clock and run a pass (`run_scheduler_pass`) without sleeping.

use super::{CONNS, CONNS_PART, STATE, SyncConfig, SyncProgress, Trigger};
use crate::LastMile;
use ipay_adapters::marketplaces::Marketplace;
use ipay_engine::clock::Timestamp;
use ipay_engine::error::EngineResult;
use ipay_engine::ids::MerchantId;
use ipay_engine::store::EntryRange;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// The retry delay after `failures` failed syncs in a row, seconds: base, 2×base, 4×base, …
/// up to `backoff_max_secs`.
pub fn backoff_secs(cfg: &SyncConfig, failures: u32) -> i64 {
    let base = cfg.backoff_base_secs.max(1);
    let shift = failures.saturating_sub(1).min(30);
    let secs = base
        .saturating_mul(1u64 << shift)
        .min(cfg.backoff_max_secs.max(base));
    i64::try_from(secs).unwrap_or(i64::MAX / 2_000)
}

/// What one scheduler pass did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PassReport {
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// Connections examined.
    pub connections: usize,
    /// Connections due and synced (successfully or not).
    pub ran: usize,
    /// Of those, failed syncs.
    pub failed: usize,
    /// Due connections skipped because another node was syncing them.
    pub busy: usize,
    /// Orders created by this pass.
    pub created: usize,
}

/// `GET /api/admin/scheduler/status`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SchedulerStatus {
    /// Whether this node's background loop runs (`tick_ms` > 0).
    pub running: bool,
    pub tick_ms: u64,
    pub default_interval_secs: u64,
    /// Connected marketplaces (all merchants).
    pub connections: usize,
    /// The earliest next run among them.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_run_at: Option<Timestamp>,
    /// This node's last pass.
    pub last_pass: Option<PassReport>,
}

fn parse_key(key: &str) -> Option<(MerchantId, Marketplace)> {
    let (m, p) = key.rsplit_once(':')?;
    Some((MerchantId::parse(m).ok()?, Marketplace::parse(p)?))
}

impl LastMile {
    /// Starts this node's scheduler loop (unless `tick_ms` is 0). It holds a weak reference,
    /// so it ends with the subsystem.
    pub(crate) fn spawn_scheduler(self: &Arc<Self>) {
        if self.cfg.sync.tick_ms == 0 {
            return;
        }
        let weak = Arc::downgrade(self);
        let every = Duration::from_millis(self.cfg.sync.tick_ms.max(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(lm) = weak.upgrade() else { return };
                if let Err(e) = lm.run_scheduler_pass().await {
                    tracing::warn!(error = %e, "sync scheduler pass failed");
                }
            }
        });
    }

    /// Connections with their progress (at most `max_connections_per_pass`).
    async fn scheduled(&self) -> EngineResult<Vec<(MerchantId, Marketplace, SyncProgress)>> {
        let limit = self.cfg.sync.max_connections_per_pass.max(1);
        let rows = self
            .engine
            .ledger()
            .scan_entries(CONNS, CONNS_PART, &EntryRange::all(limit))
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (key, _) in rows {
            let Some((merchant, m)) = parse_key(&key) else {
                continue;
            };
            let progress = self
                .engine
                .ledger()
                .get_record(STATE, &key)
                .await?
                .and_then(|r| serde_json::from_slice(&r).ok())
                .unwrap_or_default();
            out.push((merchant, m, progress));
        }
        Ok(out)
    }

    /// One pass: syncs every connection due on the engine clock.
    pub async fn run_scheduler_pass(&self) -> EngineResult<PassReport> {
        let now = self.engine.clock().now();
        let conns = self.scheduled().await?;
        let mut report = PassReport {
            at: now,
            connections: conns.len(),
            ran: 0,
            failed: 0,
            busy: 0,
            created: 0,
        };
        for (merchant, m, progress) in conns {
            if progress.next_run_ms > now.ms() {
                continue;
            }
            match self.sync_leased(merchant, m, Trigger::Scheduled).await {
                Ok(Some(out)) => {
                    report.ran += 1;
                    report.created += out.created;
                }
                Ok(None) => report.busy += 1,
                Err(_) => {
                    // Logged and backed off inside the sync.
                    report.ran += 1;
                    report.failed += 1;
                }
            }
        }
        *self.sync.last_pass.lock() = Some(report.clone());
        Ok(report)
    }

    /// The scheduler's state for operators.
    pub async fn scheduler_status(&self) -> EngineResult<SchedulerStatus> {
        let conns = self.scheduled().await?;
        Ok(SchedulerStatus {
            running: self.cfg.sync.tick_ms > 0,
            tick_ms: self.cfg.sync.tick_ms,
            default_interval_secs: self.cfg.sync.interval_secs,
            connections: conns.len(),
            next_run_at: conns.iter().map(|c| c.2.next_run_ms).min().map(Timestamp),
            last_pass: self.sync.last_pass.lock().clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let cfg = SyncConfig::default();
        let got: Vec<i64> = (1..=8).map(|f| backoff_secs(&cfg, f)).collect();
        assert_eq!(got, vec![60, 120, 240, 480, 960, 1_920, 3_600, 3_600]);
        assert_eq!(backoff_secs(&cfg, u32::MAX), 3_600);
    }
}
