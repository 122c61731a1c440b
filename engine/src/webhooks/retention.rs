//! Retention of webhook data: attempt logs, dropped-delivery entries, finished delivery records
//! and the per-day event index are purged once they are older than the configured period, by a
//! background janitor that reads the injected clock (tests move the clock and run one sweep).
//!
//! The ledger cannot list the partitions of an index, so whoever writes into a dated partition
//! also registers it, once, in the expiry index ([`EXPIRE`]): partition
//! `{group}{shard:02}:{YYYYMMDD}` of the data's UTC day, sort `{kind}:{what}`:
//!
//! | kind | what | written by | purge |
//! |---|---|---|---|
//! | `L` | an attempt-log partition (merchant, mode, day) | the dispatcher step that logs | every log row, its per-event copy, and each finished delivery whose last attempt is past the cutoff |
//! | `X` | a dropped-deliveries partition | the step that drops | every row |
//! | `D` | a delivery that finished without any attempt (no log names it) | the step that finishes it | the record |
//! | `V` | a per-day event partition (what `recover` reads) | the outbox hook, with the event | every row |
//!
//! `V` entries are in group `v` and kept `max(retention_days, recover_max_days)` days, so a
//! recovery window never reaches purged days; the rest are in group `w`, kept
//! `retention_days`. A registration is remembered in memory (per shard task, per outbox), so
//! it costs one small write per partition and day, not one per row.
//!
//! The janitor purges whole UTC days: a day goes once all of it is older than the period. Its
//! progress (`wh_retention` record per group) is the last day fully purged, so a restart goes
//! on from there. Every node may run it; purges are idempotent deletes. Events, intents and
//! other ledger objects are not this module's to purge; idempotency records expire in
//! [`crate::idempotency`] (and by TTL in cluster mode).

use super::dispatch::{Shared, load_delivery};
use super::model::{self, AttemptLog, DELIVERY, DROPPED, EVENTS_BY_DAY, LOGS, LOGS_BY_EVENT};
use crate::error::StoreError;
use crate::store::{EntryRange, Ledger, WriteBatch, WriteOp};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The expiry index (see the module docs).
pub const EXPIRE: &str = "wh_expire";
/// The janitor's progress per group: the last day (days since the epoch) fully purged.
pub const PROGRESS: &str = "wh_retention";

const DAY_MS: i64 = 86_400_000;
/// Rows read (and deleted) per partition scan.
const PAGE: usize = 256;
/// Days behind the cutoff a janitor without recorded progress looks at (data is registered
/// only from the day it is written, so nothing older can be in the index).
const FIRST_LOOKBACK_DAYS: i64 = 2;
/// Registrations remembered before the memory is cleared (they are then written once more).
const MAX_REMEMBERED: usize = 65_536;

/// Which expiry group an entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Logs, dropped entries and deliveries: kept `retention_days`.
    Deliveries,
    /// The per-day event index: kept at least `recover_max_days`.
    Events,
}

impl Group {
    fn tag(self) -> char {
        match self {
            Group::Deliveries => 'w',
            Group::Events => 'v',
        }
    }
}

/// The day number of a time.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

fn expire_partition(group: Group, shard: u32, day: i64) -> String {
    format!(
        "{}{shard:02}:{}",
        group.tag(),
        crate::clock::Timestamp(day * DAY_MS)
            .to_datetime()
            .format("%Y%m%d")
    )
}

/// Registrations already written, so each is written once per partition and day.
#[derive(Default)]
pub struct Registered(HashSet<(String, String)>);

impl Registered {
    /// The op registering `what` (kind `kind`) for purging with `group` from the day of `ms`,
    /// unless it was registered before.
    pub fn op(
        &mut self,
        group: Group,
        shard: u32,
        ms: i64,
        kind: char,
        what: &str,
    ) -> Option<WriteOp> {
        let partition = expire_partition(group, shard, day_of(ms));
        let sort = format!("{kind}:{what}");
        if self.0.contains(&(partition.clone(), sort.clone())) {
            return None;
        }
        if self.0.len() >= MAX_REMEMBERED {
            self.0.clear();
        }
        self.0.insert((partition.clone(), sort.clone()));
        Some(WriteOp::PutEntry {
            index: EXPIRE,
            partition,
            sort,
            value: Vec::new(),
        })
    }

    /// Forgets everything (a step that registered something failed to commit).
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// What one sweep purged.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PurgeReport {
    /// Attempt-log rows (each with its per-event copy).
    pub logs: u64,
    /// Delivery records.
    pub deliveries: u64,
    /// Dropped-delivery rows.
    pub dropped: u64,
    /// Per-day event index rows.
    pub events: u64,
}

/// Runs [`sweep`] every `retention_sweep_ms` until `stop`.
pub async fn run(sh: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let every = Duration::from_millis(sh.cfg.retention_sweep_ms.max(1_000));
    loop {
        if let Err(e) = sweep(&sh).await {
            tracing::warn!(error = %e, "webhooks: retention sweep failed; trying again later");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// Purges every whole day older than its group's retention, as the clock says now.
pub async fn sweep(sh: &Shared) -> Result<PurgeReport, StoreError> {
    let now = sh.clock.now_ms();
    let days = sh.cfg.retention_days.max(1);
    let mut report = PurgeReport::default();
    for (group, keep) in [
        (Group::Deliveries, days),
        (Group::Events, days.max(sh.cfg.recover_max_days)),
    ] {
        let cutoff_ms = now - keep * DAY_MS;
        // The last day that ended before the cutoff.
        let last = day_of(cutoff_ms) - 1;
        let key = group.tag().to_string();
        let done = match sh.ledger.get_record(PROGRESS, &key).await? {
            Some(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .unwrap_or(last - FIRST_LOOKBACK_DAYS),
            None => last - FIRST_LOOKBACK_DAYS,
        };
        for day in done + 1..=last {
            for shard in 0..model::SHARDS {
                purge_partition(sh, group, shard, day, cutoff_ms, &mut report).await?;
            }
            let mut b = WriteBatch::new();
            b.push(WriteOp::PutRecord {
                kind: PROGRESS,
                key: key.clone(),
                value: day.to_string().into_bytes(),
            });
            sh.ledger.submit(b).await?;
        }
    }
    if report != PurgeReport::default() {
        tracing::info!(?report, "webhooks: purged data past its retention");
    }
    Ok(report)
}

/// Purges everything registered in one expiry partition, then the registrations.
async fn purge_partition(
    sh: &Shared,
    group: Group,
    shard: u32,
    day: i64,
    cutoff_ms: i64,
    report: &mut PurgeReport,
) -> Result<(), StoreError> {
    let partition = expire_partition(group, shard, day);
    loop {
        let entries = sh
            .ledger
            .scan_entries(EXPIRE, &partition, &EntryRange::all(PAGE))
            .await?;
        if entries.is_empty() {
            return Ok(());
        }
        for (sort, _) in entries {
            let Some((kind, what)) = sort.split_once(':') else {
                delete_registration(sh.ledger.as_ref(), &partition, &sort).await?;
                continue;
            };
            let finished = match kind {
                "L" => purge_logs(sh, what, cutoff_ms, report).await?,
                "X" => purge_rows(sh.ledger.as_ref(), DROPPED, what, &mut report.dropped).await?,
                "V" => {
                    purge_rows(sh.ledger.as_ref(), EVENTS_BY_DAY, what, &mut report.events).await?
                }
                "D" => purge_delivery(sh.ledger.as_ref(), what, cutoff_ms, report).await?,
                _ => true,
            };
            if finished {
                delete_registration(sh.ledger.as_ref(), &partition, &sort).await?;
            }
        }
    }
}

async fn delete_registration(
    ledger: &dyn Ledger,
    partition: &str,
    sort: &str,
) -> Result<(), StoreError> {
    let mut b = WriteBatch::new();
    b.push(WriteOp::DeleteEntry {
        index: EXPIRE,
        partition: partition.to_string(),
        sort: sort.to_string(),
    });
    ledger.submit(b).await
}

/// Deletes one page of rows of `partition` of `index`; true once the partition is empty.
async fn purge_rows(
    ledger: &dyn Ledger,
    index: &'static str,
    partition: &str,
    count: &mut u64,
) -> Result<bool, StoreError> {
    let rows = ledger
        .scan_entries(index, partition, &EntryRange::all(PAGE))
        .await?;
    let done = rows.len() < PAGE;
    let mut b = WriteBatch::new();
    for (sort, _) in rows {
        b.push(WriteOp::DeleteEntry {
            index,
            partition: partition.to_string(),
            sort,
        });
        *count += 1;
    }
    if !b.ops.is_empty() {
        ledger.submit(b).await?;
    }
    Ok(done)
}

/// Deletes one page of an attempt-log partition: each row, its per-event copy, and the
/// deliveries they belong to that are finished and past the cutoff (a delivery still being
/// retried, or whose last attempt is recent, stays; a later day's logs name it again).
async fn purge_logs(
    sh: &Shared,
    partition: &str,
    cutoff_ms: i64,
    report: &mut PurgeReport,
) -> Result<bool, StoreError> {
    let ledger = sh.ledger.as_ref();
    let rows = ledger
        .scan_entries(LOGS, partition, &EntryRange::all(PAGE))
        .await?;
    let done = rows.len() < PAGE;
    let mut b = WriteBatch::new();
    let mut seen = HashSet::new();
    for (sort, value) in rows {
        if let Ok(log) = serde_json::from_slice::<AttemptLog>(&value) {
            b.push(WriteOp::DeleteEntry {
                index: LOGS_BY_EVENT,
                partition: log.event_id.to_string(),
                sort: sort.clone(),
            });
            if seen.insert(log.delivery_id.clone())
                && expired_delivery(ledger, &log.delivery_id, cutoff_ms).await?
            {
                b.push(WriteOp::DeleteRecord {
                    kind: DELIVERY,
                    key: log.delivery_id.clone(),
                });
                report.deliveries += 1;
            }
        }
        b.push(WriteOp::DeleteEntry {
            index: LOGS,
            partition: partition.to_string(),
            sort,
        });
        report.logs += 1;
    }
    if !b.ops.is_empty() {
        ledger.submit(b).await?;
    }
    Ok(done)
}

/// Whether a delivery is finished and nothing happened to it since the cutoff.
async fn expired_delivery(
    ledger: &dyn Ledger,
    id: &str,
    cutoff_ms: i64,
) -> Result<bool, StoreError> {
    let Some(d) = load_delivery(ledger, id).await? else {
        return Ok(false);
    };
    let last = d.last_attempt.map_or(d.created.ms(), |t| t.ms());
    Ok(d.status.is_final() && last < cutoff_ms)
}

/// A delivery that finished without an attempt.
async fn purge_delivery(
    ledger: &dyn Ledger,
    id: &str,
    cutoff_ms: i64,
    report: &mut PurgeReport,
) -> Result<bool, StoreError> {
    if expired_delivery(ledger, id, cutoff_ms).await? {
        let mut b = WriteBatch::new();
        b.push(WriteOp::DeleteRecord {
            kind: DELIVERY,
            key: id.to_string(),
        });
        ledger.submit(b).await?;
        report.deliveries += 1;
    }
    Ok(true)
}
