//! ScyllaDB / Cassandra [`Ledger`] for cluster mode.
//!
//! Schema: `config/cql/*.cql`, embedded in the binary ([`MIGRATIONS`]) and applied by
//! [`CqlLedger::migrate`] (`ipay migrate`). Every table is designed for one query of the
//! [`Ledger`] trait; records are stored as the same JSON the embedded ledger keeps, index tables
//! carry only the columns their queries filter on.
//!
//! Writes:
//! - A batch with a home partition (it is fenced, or it writes exactly one payment intent) is
//!   committed in steps ([`home`]): its durable step is ONE single-partition write to the
//!   home's partition of `homes` (the intent's state, the fence epoch, and the rest of the batch
//!   as a journal row); the other rows follow and are repaired from the journal row if the
//!   writer stops in between. A fenced batch's durable step is one conditional batch on that
//!   partition, so a stale epoch is refused whatever the writer does between its steps. When
//!   such a batch stores an idempotency record, a pending claim naming the home is written
//!   first, so a look-up of the key finds (and completes) a batch whose writer stopped.
//! - Any other batch is one LOGGED batch: the coordinator writes it to the batch log first,
//!   so either every statement of it is applied or (after a coordinator failure) all are
//!   replayed. A batch is not isolated: a reader may briefly see part of it.
//! - Every statement carries `USING TIMESTAMP` from a per-process monotonic microsecond clock,
//!   reserved when the batch is *submitted* (statements inside a batch get consecutive values).
//!   Batches for one intent may be in flight together and reach the cluster in any order; the
//!   batch submitted later still wins, cell by cell, tombstones included.
//! - At most `max_inflight_batches` batches are in flight; beyond that `submit` fails at once
//!   ("queue is full"), which the engine answers with 503.
//! - A `list_days` row this handle has already committed is not written again (the rows are
//!   never deleted); see [`KnownDays`].
//! - `PutService` reads the stored manifest before writing, to move its name index (the engine
//!   serialises manifest writes per merchant, so that read cannot race another rename).
//! - `PutIdempotency` writes with a TTL that ends `idempotency_ttl` after the record was created,
//!   so `PurgeIdempotencyBefore` has nothing to do.
//! - Committed events are broadcast to [`CqlLedger::subscribe`] receivers, like the embedded
//!   ledger does (events of batches submitted through this handle only, not other nodes').
//!
//! Reads and writes use the driver's default consistency, LOCAL_QUORUM, so a read after an
//! acknowledged write sees it. Every request is bounded by the request timeout: one that cannot
//! be served in time fails with [`StoreError`], which the engine maps to 503 `store_unavailable`.
//!
//! Known costs (acceptable today, to be revisited with real volumes):
//! - Listings answer `total` by scanning every index row in range (all day-partitions of the
//!   merchant and mode); only the rows of the requested page load their records, one point
//!   read each. A merchant's busiest day is still one partition (≈ 60 bytes per intent).
//! - [`Ledger::count_intents_by_status`] scans the whole intent index, and
//!   [`Ledger::pending_expiries`] reads all 64 expiry partitions; both run at start-up only.
//! - A batch must fit Cassandra's `batch_size_fail_threshold` (50 KiB by default; ScyllaDB's
//!   default is 1 MiB). An intent with maximal metadata is written three times in its create
//!   batch (record, event, idempotency response) and can exceed 50 KiB: raise the threshold on
//!   Cassandra clusters.

use super::*;
use crate::model::{IntentStatus, ServiceStatus};
use futures::StreamExt;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::serialize::row::SerializeRow;
use scylla::statement::Statement;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlTimestamp, CqlValue};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tokio::sync::{Semaphore, broadcast};

mod home;
pub use home::{Steps, intent_home};

/// Width of one listing partition (`day` column): a UTC day, from the id's creation time.
pub const DAY_MS: i64 = 86_400_000;
/// Partitions of the pending-expiry table (bucket = low bits of the intent id).
pub const EXPIRY_BUCKETS: u32 = 64;
/// Longest a schema change may take (they wait for schema agreement across the cluster).
const DDL_TIMEOUT: Duration = Duration::from_secs(60);

/// One versioned schema migration, embedded in the binary.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub cql: &'static str,
}

/// Every migration, in version order. Never edit an applied file; add the next version.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "001_initial.cql",
        cql: include_str!("../../../config/cql/001_initial.cql"),
    },
    Migration {
        version: 2,
        name: "002_records.cql",
        cql: include_str!("../../../config/cql/002_records.cql"),
    },
    Migration {
        version: 3,
        name: "003_fences.cql",
        cql: include_str!("../../../config/cql/003_fences.cql"),
    },
    Migration {
        version: 4,
        name: "004_homes.cql",
        cql: include_str!("../../../config/cql/004_homes.cql"),
    },
];

/// What [`CqlLedger::migrate`] did.
#[derive(Debug, Clone, Default)]
pub struct MigrationReport {
    pub keyspace: String,
    /// Versions applied by this run, with their file names.
    pub applied: Vec<(i32, &'static str)>,
    /// Versions that were already applied.
    pub already_applied: Vec<i32>,
    /// Things an operator should look at (e.g. an applied file that has changed since).
    pub warnings: Vec<String>,
}

/// How to reach the cluster.
#[derive(Debug, Clone)]
pub struct CqlConfig {
    /// `host:port` of one or more nodes; the rest of the cluster is discovered.
    pub contact_points: Vec<String>,
    /// Keyspace holding the ledger (letters, digits, `_`; at most 48).
    pub keyspace: String,
    /// CQL replication map used when `migrate` creates the keyspace, e.g.
    /// `{'class': 'NetworkTopologyStrategy', 'dc1': 3}`.
    pub replication: String,
    /// Bound on each connection attempt; session set-up as a whole gives up after twice this.
    pub connect_timeout: Duration,
    /// Bound on each request (a read, a batch, one page of a scan), retries included.
    pub request_timeout: Duration,
    /// Write batches in flight before `submit` refuses at once.
    pub max_inflight_batches: usize,
    /// Idempotency records live this long after their creation (CQL TTL).
    pub idempotency_ttl: Duration,
    /// Login for clusters with authentication on; `None` connects without one.
    pub auth: Option<super::tls::CqlAuth>,
    /// TLS to every node (files may be empty: system trust store, no client certificate);
    /// `None` connects in plain text.
    pub tls: Option<super::tls::TlsFiles>,
}

impl Default for CqlConfig {
    fn default() -> Self {
        CqlConfig {
            contact_points: vec!["127.0.0.1:9042".into()],
            keyspace: "ipay".into(),
            replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}".into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(1),
            max_inflight_batches: 4_096,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            auth: None,
            tls: None,
        }
    }
}

impl CqlConfig {
    fn validate(&self) -> Result<(), StoreError> {
        let ks = &self.keyspace;
        if ks.is_empty()
            || ks.len() > 48
            || !ks.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(StoreError(format!(
                "invalid keyspace name `{ks}`: use 1 to 48 letters, digits or `_`"
            )));
        }
        let r = self.replication.trim();
        if !(r.starts_with('{') && r.ends_with('}')) || r.contains(';') {
            return Err(StoreError(format!(
                "invalid replication `{r}`: expected a CQL map such as \
                 {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
            )));
        }
        if self.contact_points.is_empty() {
            return Err(StoreError(
                "no CQL contact points: set [cluster] cql_contact_points, e.g. [\"127.0.0.1:9042\"]"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Prepared statements, indexed by [`S`]. `{ks}` is replaced by the keyspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum S {
    PutMerchant,
    PutApiKey,
    PutApiKeyHash,
    PutApiKeyByMerchant,
    PutService,
    PutServiceByMerchant,
    DelServiceByMerchant,
    PutServiceName,
    DelServiceName,
    PutIntent,
    PutIntentByMerchant,
    PutListDay,
    PutPending,
    DelPending,
    PutRefund,
    PutRefundByIntent,
    PutRefundByMerchant,
    PutEvent,
    PutEventByMerchant,
    PutEventByObject,
    PutIdempotency,
    GetMerchant,
    GetApiKey,
    GetApiKeyByHash,
    ListApiKeys,
    GetService,
    ListServices,
    GetServiceName,
    GetIntent,
    ListDays,
    ScanIntentsDesc,
    ScanIntentsAsc,
    ScanPending,
    ScanIntentStatuses,
    GetRefund,
    ScanRefundsByIntent,
    ScanRefundsByMerchant,
    GetEvent,
    ScanEventsByMerchant,
    ScanEventsByObject,
    GetIdempotency,
    PutRecordRow,
    DelRecordRow,
    GetRecordRow,
    PutEntryRow,
    DelEntryRow,
    // Entry scans, in the order [`scan_statement`] computes: ASC then DESC; lower bound `>`
    // then `>=`; upper bound none, `<`, `<=`.
    ScanEntries0,
    ScanEntries1,
    ScanEntries2,
    ScanEntries3,
    ScanEntries4,
    ScanEntries5,
    ScanEntries6,
    ScanEntries7,
    ScanEntries8,
    ScanEntries9,
    ScanEntries10,
    ScanEntries11,
    // Home partitions ([`home`]). Journal rows name statements by their position in this
    // enum, so it only ever grows at the end.
    HomePutRecord,
    HomePutJournal,
    HomeDelJournal,
    /// Inside conditional batches (no client timestamps there).
    HomeFenceLe,
    HomeFenceNull,
    HomeRecordCas,
    HomeJournalCas,
    HomeGet,
    HomeScan,
}

const STATEMENTS: &[(S, &str)] = &[
    (
        S::PutMerchant,
        "INSERT INTO {ks}.merchants (id, record) VALUES (?, ?) USING TIMESTAMP ?",
    ),
    (
        S::PutApiKey,
        "INSERT INTO {ks}.api_keys (id, record) VALUES (?, ?) USING TIMESTAMP ?",
    ),
    (
        S::PutApiKeyHash,
        "INSERT INTO {ks}.api_key_hashes (secret_hash, key_id) VALUES (?, ?) USING TIMESTAMP ?",
    ),
    (
        S::PutApiKeyByMerchant,
        "INSERT INTO {ks}.api_keys_by_merchant (merchant_id, livemode, key_id, record) \
         VALUES (?, ?, ?, ?) USING TIMESTAMP ?",
    ),
    (
        S::PutService,
        "INSERT INTO {ks}.services (id, record) VALUES (?, ?) USING TIMESTAMP ?",
    ),
    (
        S::PutServiceByMerchant,
        "INSERT INTO {ks}.services_by_merchant (merchant_id, livemode, service_id, record) \
         VALUES (?, ?, ?, ?) USING TIMESTAMP ?",
    ),
    (
        S::DelServiceByMerchant,
        "DELETE FROM {ks}.services_by_merchant USING TIMESTAMP ? \
         WHERE merchant_id = ? AND livemode = ? AND service_id = ?",
    ),
    (
        S::PutServiceName,
        "INSERT INTO {ks}.service_names (merchant_id, livemode, name, service_id) \
         VALUES (?, ?, ?, ?) USING TIMESTAMP ?",
    ),
    (
        S::DelServiceName,
        "DELETE FROM {ks}.service_names USING TIMESTAMP ? \
         WHERE merchant_id = ? AND livemode = ? AND name = ?",
    ),
    (
        S::PutIntent,
        "INSERT INTO {ks}.intents (id, record) VALUES (?, ?) USING TIMESTAMP ?",
    ),
    (
        S::PutIntentByMerchant,
        "INSERT INTO {ks}.intents_by_merchant \
         (merchant_id, livemode, day, intent_id, status, channel) \
         VALUES (?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
    ),
    (
        S::PutListDay,
        "INSERT INTO {ks}.list_days (merchant_id, livemode, kind, day) \
         VALUES (?, ?, ?, ?) USING TIMESTAMP ?",
    ),
    (
        S::PutPending,
        "INSERT INTO {ks}.pending_expiries (bucket, intent_id, expires_at) \
         VALUES (?, ?, ?) USING TIMESTAMP ?",
    ),
    (
        S::DelPending,
        "DELETE FROM {ks}.pending_expiries USING TIMESTAMP ? WHERE bucket = ? AND intent_id = ?",
    ),
    (
        S::PutRefund,
        "INSERT INTO {ks}.refunds (id, record) VALUES (?, ?) USING TIMESTAMP ?",
    ),
    (
        S::PutRefundByIntent,
        "INSERT INTO {ks}.refunds_by_intent (intent_id, refund_id, merchant_id, livemode) \
         VALUES (?, ?, ?, ?) USING TIMESTAMP ?",
    ),
    (
        S::PutRefundByMerchant,
        "INSERT INTO {ks}.refunds_by_merchant (merchant_id, livemode, day, refund_id) \
         VALUES (?, ?, ?, ?) USING TIMESTAMP ?",
    ),
    (
        S::PutEvent,
        "INSERT INTO {ks}.events (id, record) VALUES (?, ?) USING TIMESTAMP ?",
    ),
    (
        S::PutEventByMerchant,
        "INSERT INTO {ks}.events_by_merchant (merchant_id, livemode, day, event_id, event_type) \
         VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?",
    ),
    (
        S::PutEventByObject,
        "INSERT INTO {ks}.events_by_object \
         (object_id, event_id, merchant_id, livemode, event_type) \
         VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?",
    ),
    (
        S::PutIdempotency,
        "INSERT INTO {ks}.idempotency (scope, record) VALUES (?, ?) USING TIMESTAMP ? AND TTL ?",
    ),
    (
        S::GetMerchant,
        "SELECT record FROM {ks}.merchants WHERE id = ?",
    ),
    (
        S::GetApiKey,
        "SELECT record FROM {ks}.api_keys WHERE id = ?",
    ),
    (
        S::GetApiKeyByHash,
        "SELECT key_id FROM {ks}.api_key_hashes WHERE secret_hash = ?",
    ),
    (
        S::ListApiKeys,
        "SELECT record FROM {ks}.api_keys_by_merchant WHERE merchant_id = ? AND livemode = ?",
    ),
    (
        S::GetService,
        "SELECT record FROM {ks}.services WHERE id = ?",
    ),
    (
        S::ListServices,
        "SELECT record FROM {ks}.services_by_merchant WHERE merchant_id = ? AND livemode = ?",
    ),
    (
        S::GetServiceName,
        "SELECT service_id FROM {ks}.service_names \
         WHERE merchant_id = ? AND livemode = ? AND name = ?",
    ),
    (S::GetIntent, "SELECT record FROM {ks}.intents WHERE id = ?"),
    (
        S::ListDays,
        "SELECT day FROM {ks}.list_days WHERE merchant_id = ? AND livemode = ? AND kind = ?",
    ),
    (
        S::ScanIntentsDesc,
        "SELECT intent_id, status, channel FROM {ks}.intents_by_merchant \
         WHERE merchant_id = ? AND livemode = ? AND day = ? AND intent_id >= ? AND intent_id < ? \
         ORDER BY intent_id DESC",
    ),
    (
        S::ScanIntentsAsc,
        "SELECT intent_id, status, channel FROM {ks}.intents_by_merchant \
         WHERE merchant_id = ? AND livemode = ? AND day = ? AND intent_id >= ? AND intent_id < ? \
         ORDER BY intent_id ASC",
    ),
    (
        S::ScanPending,
        "SELECT intent_id, expires_at FROM {ks}.pending_expiries WHERE bucket = ?",
    ),
    (
        S::ScanIntentStatuses,
        "SELECT status FROM {ks}.intents_by_merchant",
    ),
    (S::GetRefund, "SELECT record FROM {ks}.refunds WHERE id = ?"),
    (
        S::ScanRefundsByIntent,
        "SELECT refund_id, merchant_id, livemode FROM {ks}.refunds_by_intent WHERE intent_id = ?",
    ),
    (
        S::ScanRefundsByMerchant,
        "SELECT refund_id FROM {ks}.refunds_by_merchant \
         WHERE merchant_id = ? AND livemode = ? AND day = ?",
    ),
    (S::GetEvent, "SELECT record FROM {ks}.events WHERE id = ?"),
    (
        S::ScanEventsByMerchant,
        "SELECT event_id, event_type FROM {ks}.events_by_merchant \
         WHERE merchant_id = ? AND livemode = ? AND day = ?",
    ),
    (
        S::ScanEventsByObject,
        "SELECT event_id, merchant_id, livemode, event_type FROM {ks}.events_by_object \
         WHERE object_id = ?",
    ),
    (
        S::GetIdempotency,
        "SELECT record FROM {ks}.idempotency WHERE scope = ?",
    ),
    (
        S::PutRecordRow,
        "INSERT INTO {ks}.records (kind, rkey, value) VALUES (?, ?, ?) USING TIMESTAMP ?",
    ),
    (
        S::DelRecordRow,
        "DELETE FROM {ks}.records USING TIMESTAMP ? WHERE kind = ? AND rkey = ?",
    ),
    (
        S::GetRecordRow,
        "SELECT value FROM {ks}.records WHERE kind = ? AND rkey = ?",
    ),
    (
        S::PutEntryRow,
        "INSERT INTO {ks}.index_entries (idx, part, sort, value) VALUES (?, ?, ?, ?) USING TIMESTAMP ?",
    ),
    (
        S::DelEntryRow,
        "DELETE FROM {ks}.index_entries USING TIMESTAMP ? WHERE idx = ? AND part = ? AND sort = ?",
    ),
    (
        S::ScanEntries0,
        "SELECT sort, value FROM {ks}.index_entries WHERE idx = ? AND part = ? AND sort > ? ORDER BY sort ASC LIMIT ?",
    ),
    (
        S::ScanEntries1,
        "SELECT sort, value FROM {ks}.index_entries WHERE idx = ? AND part = ? AND sort > ? AND sort < ? ORDER BY sort ASC LIMIT ?",
    ),
    (
        S::ScanEntries2,
        "SELECT sort, value FROM {ks}.index_entries WHERE idx = ? AND part = ? AND sort > ? AND sort <= ? ORDER BY sort ASC LIMIT ?",
    ),
    (
        S::ScanEntries3,
        "SELECT sort, value FROM {ks}.index_entries WHERE idx = ? AND part = ? AND sort >= ? ORDER BY sort ASC LIMIT ?",
    ),
    (
        S::ScanEntries4,
        "SELECT sort, value FROM {ks}.index_entries WHERE idx = ? AND part = ? AND sort >= ? AND sort < ? ORDER BY sort ASC LIMIT ?",
    ),
    (
        S::ScanEntries5,
        "SELECT sort, value FROM {ks}.index_entries WHERE idx = ? AND part = ? AND sort >= ? AND sort <= ? ORDER BY sort ASC LIMIT ?",
    ),
    (
        S::ScanEntries6,
        "SELECT sort, value FROM {ks}.index_entries WHERE idx = ? AND part = ? AND sort > ? ORDER BY sort DESC LIMIT ?",
    ),
    (
        S::ScanEntries7,
        "SELECT sort, value FROM {ks}.index_entries WHERE idx = ? AND part = ? AND sort > ? AND sort < ? ORDER BY sort DESC LIMIT ?",
    ),
    (
        S::ScanEntries8,
        "SELECT sort, value FROM {ks}.index_entries WHERE idx = ? AND part = ? AND sort > ? AND sort <= ? ORDER BY sort DESC LIMIT ?",
    ),
    (
        S::ScanEntries9,
        "SELECT sort, value FROM {ks}.index_entries WHERE idx = ? AND part = ? AND sort >= ? ORDER BY sort DESC LIMIT ?",
    ),
    (
        S::ScanEntries10,
        "SELECT sort, value FROM {ks}.index_entries WHERE idx = ? AND part = ? AND sort >= ? AND sort < ? ORDER BY sort DESC LIMIT ?",
    ),
    (
        S::ScanEntries11,
        "SELECT sort, value FROM {ks}.index_entries WHERE idx = ? AND part = ? AND sort >= ? AND sort <= ? ORDER BY sort DESC LIMIT ?",
    ),
    (
        S::HomePutRecord,
        "UPDATE {ks}.homes USING TIMESTAMP ? SET record = ? WHERE home = ?",
    ),
    (
        S::HomePutJournal,
        "INSERT INTO {ks}.homes (home, seq, ops) VALUES (?, ?, ?) USING TIMESTAMP ?",
    ),
    (
        S::HomeDelJournal,
        "DELETE FROM {ks}.homes USING TIMESTAMP ? WHERE home = ? AND seq = ?",
    ),
    (
        S::HomeFenceLe,
        "UPDATE {ks}.homes SET fence_epoch = ? WHERE home = ? IF fence_epoch <= ?",
    ),
    (
        S::HomeFenceNull,
        "UPDATE {ks}.homes SET fence_epoch = ? WHERE home = ? IF fence_epoch = null",
    ),
    (
        S::HomeRecordCas,
        "UPDATE {ks}.homes SET record = ? WHERE home = ?",
    ),
    (
        S::HomeJournalCas,
        "INSERT INTO {ks}.homes (home, seq, ops) VALUES (?, ?, ?)",
    ),
    (
        S::HomeGet,
        "SELECT record, seq, ops FROM {ks}.homes WHERE home = ?",
    ),
    (S::HomeScan, "SELECT home, seq, ops FROM {ks}.homes"),
];

/// The prepared scan of `entries` for a range's bounds and order (an unbounded start is
/// `>= ''`, an unbounded end is no clause).
fn scan_statement(range: &EntryRange) -> (S, Vec<CqlValue>) {
    let (lo_code, lo) = match &range.start {
        Bound::Excluded(s) => (0, s.clone()),
        Bound::Included(s) => (1, s.clone()),
        Bound::Unbounded => (1, String::new()),
    };
    let (up_code, up) = match &range.end {
        Bound::Unbounded => (0, None),
        Bound::Excluded(s) => (1, Some(s.clone())),
        Bound::Included(s) => (2, Some(s.clone())),
    };
    let code = (range.descending as usize) * 6 + lo_code * 3 + up_code;
    const SCANS: [S; 12] = [
        S::ScanEntries0,
        S::ScanEntries1,
        S::ScanEntries2,
        S::ScanEntries3,
        S::ScanEntries4,
        S::ScanEntries5,
        S::ScanEntries6,
        S::ScanEntries7,
        S::ScanEntries8,
        S::ScanEntries9,
        S::ScanEntries10,
        S::ScanEntries11,
    ];
    let mut values = vec![text(lo)];
    if let Some(up) = up {
        values.push(text(up));
    }
    let limit = range.limit.clamp(1, i32::MAX as usize) as i32;
    values.push(CqlValue::Int(limit));
    (SCANS[code], values)
}

/// Listing kinds in `list_days`.
const KIND_INTENTS: &str = "intents";
const KIND_REFUNDS: &str = "refunds";
const KIND_EVENTS: &str = "events";

/// Client-side write timestamps of one ledger handle: every batch gets a range above any range
/// handed out before by this handle (so later writes through it win over earlier ones, even
/// within one microsecond), and normally the wall clock in µs.
#[derive(Debug, Default)]
struct WriteStamps {
    /// The last timestamp handed out, µs since the epoch.
    last: AtomicI64,
}

impl WriteStamps {
    /// Reserves `n` consecutive write timestamps; returns the first.
    fn reserve(&self, n: i64) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        let n = n.max(1);
        let mut prev = self.last.load(Ordering::Relaxed);
        loop {
            let base = now.max(prev + 1);
            match self.last.compare_exchange_weak(
                prev,
                base + n - 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return base,
                Err(p) => prev = p,
            }
        }
    }
}

fn day_of(ms: i64) -> i64 {
    ms.max(0) / DAY_MS
}

fn expiry_bucket(id: PaymentIntentId) -> i32 {
    (id.as_u128() % EXPIRY_BUCKETS as u128) as i32
}

fn json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError(format!("cannot encode record: {e}")))
}

fn from_json<T: for<'de> Deserialize<'de>>(s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError(format!("corrupt record in CQL ledger: {e}")))
}

fn cql_err(what: &str) -> impl Fn(&dyn std::fmt::Display) -> StoreError + '_ {
    move |e| StoreError(format!("CQL ledger: {what} failed: {e}"))
}

fn check_names(names: &[&str]) -> Result<(), StoreError> {
    for n in names {
        if !super::valid_name(n) {
            return Err(StoreError(format!(
                "invalid record kind, index or partition {n:?}"
            )));
        }
    }
    Ok(())
}

fn text(s: impl Into<String>) -> CqlValue {
    CqlValue::Text(s.into())
}

/// One statement of a batch, encoded on the submitting task.
struct Stmt {
    s: S,
    values: Vec<CqlValue>,
}

/// A part of a batch: ready statements, or a manifest whose name index needs the stored
/// version (read when the batch runs).
enum Part {
    Stmt(Stmt),
    Service {
        svc: Box<Service>,
        json: String,
        /// First of the 4 timestamps reserved for it.
        ts: i64,
    },
}

struct Job {
    /// The LOGGED batch of a batch without a home (empty when `home` is set).
    parts: Vec<Part>,
    events: Vec<Event>,
    /// The steps of a batch with a home partition.
    home: Option<home::HomeWrite>,
    /// `list_days` rows this batch writes, remembered once it committed.
    new_days: Vec<DayKey>,
}

/// A `list_days` row: merchant, livemode, kind, day.
type DayKey = (String, bool, &'static str, i64);

/// `list_days` rows this handle has committed. The rows are never deleted, so a batch for a
/// day already known skips rewriting it (two of a create's writes). Bounded: forgotten in
/// bulk past [`KnownDays::MAX`], which only costs rewriting them.
#[derive(Default)]
struct KnownDays(parking_lot::Mutex<std::collections::HashSet<DayKey>>);

impl KnownDays {
    const MAX: usize = 100_000;

    fn contains(&self, k: &DayKey) -> bool {
        self.0.lock().contains(k)
    }

    fn insert(&self, keys: Vec<DayKey>) {
        if keys.is_empty() {
            return;
        }
        let mut set = self.0.lock();
        if set.len() + keys.len() > Self::MAX {
            set.clear();
        }
        set.extend(keys);
    }
}

/// The `list_days` rows one batch adds (those not known to be committed already).
struct NewDays<'a> {
    known: &'a KnownDays,
    new: Vec<DayKey>,
}

impl NewDays<'_> {
    fn put(&mut self, parts: &mut Vec<Part>, key: DayKey, ts: CqlValue) {
        if self.known.contains(&key) || self.new.contains(&key) {
            return;
        }
        let values = vec![
            text(key.0.clone()),
            CqlValue::Boolean(key.1),
            text(key.2),
            CqlValue::BigInt(key.3),
            ts,
        ];
        stmt(parts, S::PutListDay, values);
        self.new.push(key);
    }
}

/// Statements an op may produce at most (timestamps are reserved for all of them).
fn max_statements(op: &WriteOp) -> i64 {
    match op {
        WriteOp::PutMerchant(_) => 1,
        // The record, and the pending claim written before a home batch's durable step.
        WriteOp::PutIdempotency { .. } => 2,
        WriteOp::PutApiKey { .. } => 3,
        WriteOp::PutService(_)
        | WriteOp::PutIntent(_)
        | WriteOp::PutRefund(_)
        | WriteOp::PutEvent(_) => 4,
        WriteOp::PurgeIdempotencyBefore(_) | WriteOp::Fence { .. } => 0,
        WriteOp::PutRecord { .. }
        | WriteOp::DeleteRecord { .. }
        | WriteOp::PutEntry { .. }
        | WriteOp::DeleteEntry { .. } => 1,
    }
}

/// Hands out the write timestamps reserved for one batch, in statement order.
struct Stamps(i64);

impl Stamps {
    fn next(&mut self) -> CqlValue {
        let t = self.0;
        self.0 += 1;
        CqlValue::BigInt(t)
    }

    /// Reserves `n` for a part resolved later; returns the first.
    fn take(&mut self, n: i64) -> i64 {
        let t = self.0;
        self.0 += n;
        t
    }
}

fn stmt(parts: &mut Vec<Part>, s: S, values: Vec<CqlValue>) {
    parts.push(Part::Stmt(Stmt { s, values }));
}

/// Seconds an idempotency record created at `created` has left to live (at least 1).
fn idempotency_ttl_secs(ttl: Duration, created: Timestamp) -> i32 {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let age_ms = (now_ms - created.ms()).max(0);
    let left_ms = (ttl.as_millis() as i64).saturating_sub(age_ms);
    (left_ms / 1000).clamp(1, i32::MAX as i64) as i32
}

/// Encodes a batch into statements. Runs on the submitting task, so the write timestamps are
/// fixed in submission order.
fn encode(
    batch: WriteBatch,
    idempotency_ttl: Duration,
    stamps: &WriteStamps,
    known_days: &KnownDays,
) -> Result<Job, StoreError> {
    let fence = batch.fence()?.map(|(_, e)| e);
    let home_key = home::home_of(&batch)?;
    let total: i64 = batch.ops.iter().map(max_statements).sum();
    // One more for the journal row of a batch with a home.
    let mut ts = Stamps(stamps.reserve(total + 1));
    let journal_ts = ts.take(1);
    let mut record = None;
    let mut days = NewDays {
        known: known_days,
        new: Vec::new(),
    };
    let mut parts = Vec::with_capacity(batch.ops.len() * 4);
    let mut events = Vec::new();
    // Pending idempotency claims of a batch with a home (see [`home`]).
    let mut claims = Vec::new();
    for op in batch.ops {
        match op {
            WriteOp::PutMerchant(m) => {
                let values = vec![text(m.id.to_string()), text(json(&m)?), ts.next()];
                stmt(&mut parts, S::PutMerchant, values);
            }
            WriteOp::PutApiKey { key, secret_hash } => {
                let id = key.id.to_string();
                let record = json(&key)?;
                let values = vec![text(id.clone()), text(record.clone()), ts.next()];
                stmt(&mut parts, S::PutApiKey, values);
                if let Some(h) = secret_hash {
                    let values = vec![CqlValue::Blob(h.to_vec()), text(id.clone()), ts.next()];
                    stmt(&mut parts, S::PutApiKeyHash, values);
                }
                let values = vec![
                    text(key.merchant_id.to_string()),
                    CqlValue::Boolean(key.livemode),
                    text(id),
                    text(record),
                    ts.next(),
                ];
                stmt(&mut parts, S::PutApiKeyByMerchant, values);
            }
            WriteOp::PutService(svc) => {
                let json = json(&svc)?;
                parts.push(Part::Service {
                    svc: Box::new(svc),
                    json,
                    ts: ts.take(4),
                });
            }
            WriteOp::PutIntent(pi) => {
                let id = pi.id.to_string();
                let m = pi.merchant_id.to_string();
                let day = CqlValue::BigInt(day_of(pi.id.timestamp_ms()));
                let (record_json, record_ts) = (json(&pi)?, ts.take(1));
                if home_key.as_deref() == Some(intent_home(pi.id).as_str()) {
                    // Stored once, in the intent's home partition (the durable step).
                    record = Some((record_json, record_ts));
                } else {
                    let values = vec![
                        text(id.clone()),
                        text(record_json),
                        CqlValue::BigInt(record_ts),
                    ];
                    stmt(&mut parts, S::PutIntent, values);
                }
                let values = vec![
                    text(m.clone()),
                    CqlValue::Boolean(pi.livemode),
                    day.clone(),
                    text(id.clone()),
                    CqlValue::TinyInt(pi.status.to_u8() as i8),
                    text(pi.channel.clone()),
                    ts.next(),
                ];
                stmt(&mut parts, S::PutIntentByMerchant, values);
                let key = (m, pi.livemode, KIND_INTENTS, day_of(pi.id.timestamp_ms()));
                days.put(&mut parts, key, ts.next());
                let bucket = CqlValue::Int(expiry_bucket(pi.id));
                if pi.status == IntentStatus::Pending {
                    let values = vec![
                        bucket,
                        text(id),
                        CqlValue::BigInt(pi.expires_at.ms()),
                        ts.next(),
                    ];
                    stmt(&mut parts, S::PutPending, values);
                } else {
                    stmt(&mut parts, S::DelPending, vec![ts.next(), bucket, text(id)]);
                }
            }
            WriteOp::PutRefund(r) => {
                let id = r.id.to_string();
                let m = r.merchant_id.to_string();
                let day = CqlValue::BigInt(day_of(r.id.timestamp_ms()));
                let values = vec![text(id.clone()), text(json(&r)?), ts.next()];
                stmt(&mut parts, S::PutRefund, values);
                let values = vec![
                    text(r.payment_intent.to_string()),
                    text(id.clone()),
                    text(m.clone()),
                    CqlValue::Boolean(r.livemode),
                    ts.next(),
                ];
                stmt(&mut parts, S::PutRefundByIntent, values);
                let values = vec![
                    text(m.clone()),
                    CqlValue::Boolean(r.livemode),
                    day.clone(),
                    text(id),
                    ts.next(),
                ];
                stmt(&mut parts, S::PutRefundByMerchant, values);
                let key = (m, r.livemode, KIND_REFUNDS, day_of(r.id.timestamp_ms()));
                days.put(&mut parts, key, ts.next());
            }
            WriteOp::PutEvent(e) => {
                let id = e.id.to_string();
                let m = e.merchant_id.to_string();
                let day = CqlValue::BigInt(day_of(e.id.timestamp_ms()));
                let values = vec![text(id.clone()), text(json(&e)?), ts.next()];
                stmt(&mut parts, S::PutEvent, values);
                let values = vec![
                    text(m.clone()),
                    CqlValue::Boolean(e.livemode),
                    day.clone(),
                    text(id.clone()),
                    text(e.event_type.clone()),
                    ts.next(),
                ];
                stmt(&mut parts, S::PutEventByMerchant, values);
                let key = (
                    m.clone(),
                    e.livemode,
                    KIND_EVENTS,
                    day_of(e.id.timestamp_ms()),
                );
                days.put(&mut parts, key, ts.next());
                let values = vec![
                    text(e.object_id.clone()),
                    text(id),
                    text(m),
                    CqlValue::Boolean(e.livemode),
                    text(e.event_type.clone()),
                    ts.next(),
                ];
                stmt(&mut parts, S::PutEventByObject, values);
                events.push(e);
            }
            WriteOp::PutIdempotency { scope, record } => {
                let ttl = idempotency_ttl_secs(idempotency_ttl, record.created);
                // Older than the record, so the record replaces the claim.
                let claim_ts = ts.next();
                if let Some(home) = &home_key {
                    claims.push(home::claim_statement(
                        &scope,
                        home,
                        claim_ts,
                        CqlValue::Int(ttl),
                    )?);
                }
                let values = vec![
                    text(scope),
                    text(json(&record)?),
                    ts.next(),
                    CqlValue::Int(ttl),
                ];
                stmt(&mut parts, S::PutIdempotency, values);
            }
            // Records expire through their TTL; nothing to purge.
            WriteOp::PurgeIdempotencyBefore(_) => {}
            WriteOp::PutRecord { kind, key, value } => {
                check_names(&[kind])?;
                let values = vec![text(kind), text(key), CqlValue::Blob(value), ts.next()];
                stmt(&mut parts, S::PutRecordRow, values);
            }
            WriteOp::DeleteRecord { kind, key } => {
                check_names(&[kind])?;
                let values = vec![ts.next(), text(kind), text(key)];
                stmt(&mut parts, S::DelRecordRow, values);
            }
            WriteOp::PutEntry {
                index,
                partition,
                sort,
                value,
            } => {
                check_names(&[index, &partition])?;
                let values = vec![
                    text(index),
                    text(partition),
                    text(sort),
                    CqlValue::Blob(value),
                    ts.next(),
                ];
                stmt(&mut parts, S::PutEntryRow, values);
            }
            WriteOp::DeleteEntry {
                index,
                partition,
                sort,
            } => {
                check_names(&[index, &partition])?;
                let values = vec![ts.next(), text(index), text(partition), text(sort)];
                stmt(&mut parts, S::DelEntryRow, values);
            }
            WriteOp::Fence { .. } => {}
        }
    }
    let home = match home_key {
        Some(key) => Some(home::HomeWrite::new(
            key,
            record,
            fence,
            journal_ts,
            claims,
            std::mem::take(&mut parts),
        )?),
        None => None,
    };
    Ok(Job {
        parts,
        events,
        home,
        new_days: days.new,
    })
}

/// Splits a migration file into statements: whole-line `--` comments dropped, split on `;`.
pub fn migration_statements(cql: &str) -> Vec<String> {
    let body: String = cql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    body.split(';')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn checksum(cql: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(cql.as_bytes()))
}

/// Opens a driver session with bounded connect and request timeouts.
async fn open_session(cfg: &CqlConfig) -> Result<Session, StoreError> {
    cfg.validate()?;
    let profile = ExecutionProfile::builder()
        .request_timeout(Some(cfg.request_timeout))
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(&cfg.contact_points)
        .connection_timeout(cfg.connect_timeout)
        .keyspaces_to_fetch([cfg.keyspace.clone()])
        .default_execution_profile_handle(profile.into_handle());
    if let Some(auth) = &cfg.auth {
        builder = builder.user(auth.username.clone(), auth.password.expose());
    }
    if let Some(files) = &cfg.tls {
        builder = builder.tls_context(Some(super::tls::cql_tls_context(files)?));
    }
    let nodes = cfg.contact_points.join(", ");
    let bound = cfg.connect_timeout.saturating_mul(2);
    match tokio::time::timeout(bound, builder.build()).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => {
            // The driver's message names the cause (authentication, certificate, refused) but
            // never the password, which it does not know how to print.
            let e = e.to_string();
            let hint = super::tls::cql_error_hint(&e, cfg.tls.is_some(), cfg.auth.is_some());
            Err(StoreError(format!(
                "cannot connect to Cassandra/ScyllaDB at {nodes}: {e}. {hint}"
            )))
        }
        Err(_) => Err(StoreError(format!(
            "cannot connect to Cassandra/ScyllaDB at {nodes}: no session within {} ms. Check \
             that the cluster is running and reachable (or raise [cluster] \
             cql_connect_timeout_ms)",
            bound.as_millis()
        ))),
    }
}

async fn ddl(session: &Session, cql: &str) -> Result<(), StoreError> {
    let mut st = Statement::new(cql.to_string());
    st.set_request_timeout(Some(DDL_TIMEOUT));
    session.query_unpaged(st, ()).await.map_err(|e| {
        let head: String = cql.chars().take(120).collect();
        StoreError(format!("schema change failed: {e}\n  statement: {head}"))
    })?;
    Ok(())
}

/// Versions recorded in `schema_migrations`, with their checksums.
async fn applied_versions(
    session: &Session,
    keyspace: &str,
) -> Result<HashMap<i32, Option<String>>, StoreError> {
    let mut st = Statement::new(format!(
        "SELECT version, checksum FROM {keyspace}.schema_migrations"
    ));
    st.set_request_timeout(Some(DDL_TIMEOUT));
    let res = session
        .query_unpaged(st, ())
        .await
        .map_err(|e| StoreError(format!("cannot read {keyspace}.schema_migrations: {e}")))?;
    let rows = res
        .into_rows_result()
        .map_err(|e| StoreError(format!("cannot read {keyspace}.schema_migrations: {e}")))?;
    let mut out = HashMap::new();
    for row in rows
        .rows::<(i32, Option<String>)>()
        .map_err(|e| StoreError(format!("cannot read {keyspace}.schema_migrations: {e}")))?
    {
        let (v, sum) =
            row.map_err(|e| StoreError(format!("cannot read {keyspace}.schema_migrations: {e}")))?;
        out.insert(v, sum);
    }
    Ok(out)
}

/// Shared by the ledger handle and its in-flight batches.
struct Inner {
    session: Session,
    stmts: Vec<PreparedStatement>,
    /// Write timestamps of this handle (monotonic per ledger).
    stamps: WriteStamps,
    /// `list_days` rows committed through this handle.
    known_days: KnownDays,
}

/// The ScyllaDB / Cassandra ledger. Cheap to share behind an `Arc`.
pub struct CqlLedger {
    inner: Arc<Inner>,
    runtime: tokio::runtime::Handle,
    inflight: Arc<Semaphore>,
    max_inflight: usize,
    idempotency_ttl: Duration,
    events: broadcast::Sender<Arc<Event>>,
    keyspace: String,
    /// Run on every batch before it is encoded (the webhook outbox).
    hooks: crate::store::hook::CommitHooks,
}

impl CqlLedger {
    /// Creates the keyspace (with `config.replication`) and applies every embedded migration
    /// not yet recorded in its `schema_migrations` table. Idempotent.
    pub async fn migrate(config: &CqlConfig) -> Result<MigrationReport, StoreError> {
        let session = open_session(config).await?;
        let ks = &config.keyspace;
        let mut report = MigrationReport {
            keyspace: ks.clone(),
            ..Default::default()
        };
        ddl(
            &session,
            &format!(
                "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {}",
                config.replication.trim()
            ),
        )
        .await?;
        ddl(
            &session,
            &format!(
                "CREATE TABLE IF NOT EXISTS {ks}.schema_migrations (version int PRIMARY KEY, \
                 name text, checksum text, applied_at timestamp)"
            ),
        )
        .await?;
        let applied = applied_versions(&session, ks).await?;
        let pending: Vec<&Migration> = MIGRATIONS
            .iter()
            .filter(|m| !applied.contains_key(&m.version))
            .collect();
        for m in MIGRATIONS {
            if let Some(sum) = applied.get(&m.version) {
                report.already_applied.push(m.version);
                if sum.as_deref().is_some_and(|s| s != checksum(m.cql)) {
                    report.warnings.push(format!(
                        "migration {} ({}) has changed since it was applied; the change was \
                         not applied. Put schema changes in a new migration file instead.",
                        m.version, m.name
                    ));
                }
            }
        }
        if let Some(newest) = applied.keys().max()
            && MIGRATIONS.iter().all(|m| m.version < *newest)
        {
            report.warnings.push(format!(
                "the keyspace has migration {newest}, newer than this binary knows; \
                 upgrade `ipay` before running it against this keyspace"
            ));
        }
        if pending.is_empty() {
            return Ok(report);
        }
        session
            .use_keyspace(ks.clone(), false)
            .await
            .map_err(|e| StoreError(format!("cannot use keyspace {ks}: {e}")))?;
        let record = session
            .prepare(format!(
                "INSERT INTO {ks}.schema_migrations (version, name, checksum, applied_at) \
                 VALUES (?, ?, ?, ?)"
            ))
            .await
            .map_err(|e| StoreError(format!("cannot prepare migration record: {e}")))?;
        for m in pending {
            for st in migration_statements(m.cql) {
                ddl(&session, &st).await.map_err(|e| {
                    StoreError(format!("migration {} ({}): {}", m.version, m.name, e.0))
                })?;
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            session
                .execute_unpaged(
                    &record,
                    (m.version, m.name, checksum(m.cql), CqlTimestamp(now)),
                )
                .await
                .map_err(|e| {
                    StoreError(format!(
                        "migration {} applied but not recorded: {e}; run `ipay migrate` again",
                        m.version
                    ))
                })?;
            report.applied.push((m.version, m.name));
        }
        Ok(report)
    }

    /// Connects, checks that the keyspace carries every migration this binary knows and
    /// prepares every statement. Must run inside a tokio runtime, which then runs the writes.
    pub async fn connect(config: CqlConfig) -> Result<Arc<CqlLedger>, StoreError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            StoreError("the CQL ledger must be opened inside a tokio runtime".into())
        })?;
        let session = open_session(&config).await?;
        let ks = &config.keyspace;
        let applied = applied_versions(&session, ks).await.map_err(|e| {
            StoreError(format!(
                "keyspace `{ks}` has no IPAY ledger schema ({}); run `ipay migrate` with the \
                 same [cluster] settings first",
                e.0
            ))
        })?;
        let missing: Vec<String> = MIGRATIONS
            .iter()
            .filter(|m| !applied.contains_key(&m.version))
            .map(|m| m.name.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(StoreError(format!(
                "keyspace `{ks}` lacks schema migrations {}; run `ipay migrate` first",
                missing.join(", ")
            )));
        }
        let prepares = STATEMENTS.iter().map(|(_, cql)| {
            let cql = cql.replace("{ks}", ks);
            let session = &session;
            async move {
                session.prepare(cql.clone()).await.map_err(|e| {
                    StoreError(format!(
                        "cannot prepare `{cql}`: {e}; is the schema of keyspace `{ks}` current \
                         (`ipay migrate`)?"
                    ))
                })
            }
        });
        let stmts = futures::future::try_join_all(prepares).await?;
        let (events, _) = broadcast::channel(16_384);
        let max_inflight = config.max_inflight_batches.max(1);
        let inner = Arc::new(Inner {
            session,
            stmts,
            stamps: WriteStamps::default(),
            known_days: KnownDays::default(),
        });
        // Batches whose writer stopped between its steps are completed before this node
        // serves anything (listings and expiry timers read the rows they follow with).
        let repaired = inner.repair_all_homes().await?;
        if repaired > 0 {
            tracing::info!(repaired, "CQL ledger: completed interrupted batches");
        }
        Ok(Arc::new(CqlLedger {
            inner,
            runtime,
            inflight: Arc::new(Semaphore::new(max_inflight)),
            max_inflight,
            idempotency_ttl: config.idempotency_ttl,
            events,
            keyspace: config.keyspace,
            hooks: Default::default(),
        }))
    }

    /// The keyspace this ledger writes to.
    pub fn keyspace(&self) -> &str {
        &self.keyspace
    }

    /// The driver session (for tools and tests).
    pub fn session(&self) -> &Session {
        &self.inner.session
    }

    /// Committed events, in commit order, of batches submitted through this handle (for live
    /// consumers; the durable history is in the ledger).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// Sender side of the committed-event stream.
    pub fn event_sender(&self) -> broadcast::Sender<Arc<Event>> {
        self.events.clone()
    }

    /// Encodes and starts a batch; on failure hands `done` back untouched.
    fn start(&self, batch: WriteBatch, done: Done) -> Result<(), (StoreError, Done)> {
        let Ok(permit) = self.inflight.clone().try_acquire_owned() else {
            return Err((
                StoreError(format!(
                    "CQL ledger write queue is full ({} batches in flight); the cluster is not \
                     keeping up",
                    self.max_inflight
                )),
                done,
            ));
        };
        let job = match encode(
            batch,
            self.idempotency_ttl,
            &self.inner.stamps,
            &self.inner.known_days,
        ) {
            Ok(j) => j,
            Err(e) => return Err((e, done)),
        };
        let inner = self.inner.clone();
        let events = self.events.clone();
        self.runtime.spawn(async move {
            let Job {
                parts,
                events: committed,
                home,
                new_days,
            } = job;
            let started = std::time::Instant::now();
            let r = match home {
                Some(h) => Steps::new(inner.clone(), h).run().await,
                None => inner.execute(parts).await,
            };
            if r.is_ok() {
                inner.known_days.insert(new_days);
            }
            drop(permit);
            metrics::histogram!("ipay_ledger_commit_seconds")
                .record(started.elapsed().as_secs_f64());
            if let Err(e) = &r
                && !is_fenced(e)
            {
                tracing::warn!(error = %e, "CQL ledger write batch failed");
            }
            let ok = r.is_ok();
            done.finish(r);
            if ok && events.receiver_count() > 0 {
                for ev in committed {
                    let _ = events.send(Arc::new(ev));
                }
            }
        });
        Ok(())
    }
}

/// Scan results: the rows of the requested page (in order) and how many rows matched.
struct Window<T> {
    page: PageRequest,
    rows: Vec<T>,
    total: u64,
}

impl<T> Window<T> {
    fn new(page: PageRequest) -> Self {
        Window {
            page,
            rows: Vec::with_capacity(page.limit.min(1000)),
            total: 0,
        }
    }

    /// Counts one matching row; keeps it when it falls on the page.
    fn offer(&mut self, row: impl FnOnce() -> T) {
        if self.total as usize >= self.page.offset && self.rows.len() < self.page.limit {
            self.rows.push(row());
        }
        self.total += 1;
    }
}

impl Inner {
    fn st(&self, s: S) -> &PreparedStatement {
        &self.stmts[s as usize]
    }

    /// Runs one batch: resolves manifest parts (reading stored versions) and sends one LOGGED
    /// batch.
    async fn execute(&self, parts: Vec<Part>) -> Result<(), StoreError> {
        let mut batch = Batch::new(BatchType::Logged);
        let mut values: Vec<Vec<CqlValue>> = Vec::with_capacity(parts.len());
        // Manifests written earlier in this batch: their "stored" version is the batch's own.
        let mut written: HashMap<ServiceId, Service> = HashMap::new();
        for part in parts {
            match part {
                Part::Stmt(Stmt { s, values: v }) => {
                    batch.append_statement(self.st(s).clone());
                    values.push(v);
                }
                Part::Service { svc, json, ts } => {
                    let old = match written.get(&svc.id) {
                        Some(s) => Some(s.clone()),
                        None => {
                            self.get_record::<Service>(S::GetService, (svc.id.to_string(),))
                                .await?
                        }
                    };
                    for Stmt { s, values: v } in service_statements(&svc, old.as_ref(), json, ts) {
                        batch.append_statement(self.st(s).clone());
                        values.push(v);
                    }
                    written.insert(svc.id, *svc);
                }
            }
        }
        if values.is_empty() {
            return Ok(());
        }
        // Every statement carries its own timestamp, so replaying the batch is harmless.
        batch.set_is_idempotent(true);
        self.session.batch(&batch, values).await.map_err(|e| {
            let msg = e.to_string();
            if msg.contains("Batch too large") {
                StoreError(format!(
                    "CQL ledger: write batch refused as too large ({msg}); raise the cluster's \
                     batch_size_fail_threshold (Cassandra's default is 50 KiB)"
                ))
            } else {
                cql_err("write batch")(&e)
            }
        })?;
        Ok(())
    }

    async fn get_record<T: for<'de> Deserialize<'de>>(
        &self,
        s: S,
        key: impl SerializeRow,
    ) -> Result<Option<T>, StoreError> {
        let res = self
            .session
            .execute_unpaged(self.st(s), key)
            .await
            .map_err(|e| cql_err("read")(&e))?;
        let rows = res.into_rows_result().map_err(|e| cql_err("read")(&e))?;
        match rows
            .maybe_first_row::<(Option<String>,)>()
            .map_err(|e| cql_err("read")(&e))?
        {
            Some((Some(json),)) => Ok(Some(from_json(&json)?)),
            _ => Ok(None),
        }
    }

    /// Streams every row of a (paged) query into `f`.
    async fn scan<R>(
        &self,
        s: S,
        values: impl SerializeRow,
        mut f: impl FnMut(R) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>
    where
        R: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata>,
    {
        let pager = self
            .session
            .execute_iter(self.st(s).clone(), values)
            .await
            .map_err(|e| cql_err("scan")(&e))?;
        let mut rows = pager.rows_stream::<R>().map_err(|e| cql_err("scan")(&e))?;
        while let Some(row) = rows.next().await {
            f(row.map_err(|e| cql_err("scan")(&e))?)?;
        }
        Ok(())
    }

    /// Days of a merchant's listing that hold rows, newest first.
    async fn days(
        &self,
        m: MerchantId,
        livemode: bool,
        kind: &str,
    ) -> Result<Vec<i64>, StoreError> {
        let mut days = Vec::new();
        self.scan::<(i64,)>(S::ListDays, (m.to_string(), livemode, kind), |(d,)| {
            days.push(d);
            Ok(())
        })
        .await?;
        Ok(days)
    }

    /// Loads records by id, concurrently, keeping their order; ids without a record (a batch
    /// half-visible to this read) are skipped.
    async fn load_all<T: for<'de> Deserialize<'de>>(
        &self,
        s: S,
        ids: Vec<String>,
    ) -> Result<Vec<T>, StoreError> {
        let loads = ids.into_iter().map(|id| self.get_record::<T>(s, (id,)));
        Ok(futures::future::try_join_all(loads)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }
}

/// The statements of one manifest write, given the stored version: the name index moves on a
/// rename and goes away on delete; deleted manifests leave the listing.
fn service_statements(svc: &Service, old: Option<&Service>, json: String, ts: i64) -> Vec<Stmt> {
    let mut ts = Stamps(ts);
    let mut out = Vec::with_capacity(4);
    let m = svc.merchant_id.to_string();
    let id = svc.id.to_string();
    let deleted = svc.status == ServiceStatus::Deleted;
    if let Some(old) = old
        && old.status != ServiceStatus::Deleted
        && (deleted
            || old.name != svc.name
            || old.merchant_id != svc.merchant_id
            || old.livemode != svc.livemode)
    {
        out.push(Stmt {
            s: S::DelServiceName,
            values: vec![
                ts.next(),
                text(old.merchant_id.to_string()),
                CqlValue::Boolean(old.livemode),
                text(old.name.clone()),
            ],
        });
    }
    out.push(Stmt {
        s: S::PutService,
        values: vec![text(id.clone()), text(json.clone()), ts.next()],
    });
    if deleted {
        out.push(Stmt {
            s: S::DelServiceByMerchant,
            values: vec![
                ts.next(),
                text(m),
                CqlValue::Boolean(svc.livemode),
                text(id),
            ],
        });
    } else {
        out.push(Stmt {
            s: S::PutServiceByMerchant,
            values: vec![
                text(m.clone()),
                CqlValue::Boolean(svc.livemode),
                text(id.clone()),
                text(json),
                ts.next(),
            ],
        });
        out.push(Stmt {
            s: S::PutServiceName,
            values: vec![
                text(m),
                CqlValue::Boolean(svc.livemode),
                text(svc.name.clone()),
                text(id),
                ts.next(),
            ],
        });
    }
    out
}

#[async_trait::async_trait]
impl Ledger for CqlLedger {
    fn shared(&self) -> bool {
        true
    }

    fn backend(&self) -> &'static str {
        "cql"
    }

    fn commit_hooks(&self) -> Option<&crate::store::hook::CommitHooks> {
        Some(&self.hooks)
    }

    fn submit(&self, mut batch: WriteBatch) -> CommitTicket {
        let (tx, rx) = oneshot::channel();
        let done = self.hooks.prepare(&mut batch, Done::Ticket(tx));
        match self.start(batch, done) {
            Ok(()) => CommitTicket::waiting(rx),
            Err((e, _)) => CommitTicket::ready(Err(e)),
        }
    }

    fn submit_then(&self, mut batch: WriteBatch, done: Completion) {
        let done = self.hooks.prepare(&mut batch, Done::Callback(done));
        if let Err((e, done)) = self.start(batch, done) {
            done.finish(Err(e));
        }
    }

    async fn get_merchant(&self, id: MerchantId) -> Result<Option<Merchant>, StoreError> {
        self.inner
            .get_record(S::GetMerchant, (id.to_string(),))
            .await
    }

    async fn get_api_key(&self, id: ApiKeyId) -> Result<Option<ApiKey>, StoreError> {
        self.inner.get_record(S::GetApiKey, (id.to_string(),)).await
    }

    async fn find_api_key_by_hash(&self, hash: [u8; 32]) -> Result<Option<ApiKey>, StoreError> {
        let res = self
            .inner
            .session
            .execute_unpaged(self.inner.st(S::GetApiKeyByHash), (hash.to_vec(),))
            .await
            .map_err(|e| cql_err("key look-up")(&e))?;
        let rows = res
            .into_rows_result()
            .map_err(|e| cql_err("key look-up")(&e))?;
        let id = rows
            .maybe_first_row::<(Option<String>,)>()
            .map_err(|e| cql_err("key look-up")(&e))?;
        match id {
            Some((Some(id),)) => self.inner.get_record(S::GetApiKey, (id,)).await,
            _ => Ok(None),
        }
    }

    async fn list_api_keys(
        &self,
        merchant: MerchantId,
        livemode: bool,
    ) -> Result<Vec<ApiKey>, StoreError> {
        let mut out = Vec::new();
        self.inner
            .scan::<(Option<String>,)>(
                S::ListApiKeys,
                (merchant.to_string(), livemode),
                |(record,)| {
                    if let Some(r) = record {
                        out.push(from_json(&r)?);
                    }
                    Ok(())
                },
            )
            .await?;
        Ok(out)
    }

    async fn get_service(&self, id: ServiceId) -> Result<Option<Service>, StoreError> {
        self.inner
            .get_record(S::GetService, (id.to_string(),))
            .await
    }

    async fn find_service_by_name(
        &self,
        merchant: MerchantId,
        livemode: bool,
        name: &str,
    ) -> Result<Option<Service>, StoreError> {
        let res = self
            .inner
            .session
            .execute_unpaged(
                self.inner.st(S::GetServiceName),
                (merchant.to_string(), livemode, name),
            )
            .await
            .map_err(|e| cql_err("service name look-up")(&e))?;
        let rows = res
            .into_rows_result()
            .map_err(|e| cql_err("service name look-up")(&e))?;
        let id = rows
            .maybe_first_row::<(Option<String>,)>()
            .map_err(|e| cql_err("service name look-up")(&e))?;
        match id {
            Some((Some(id),)) => self.inner.get_record(S::GetService, (id,)).await,
            _ => Ok(None),
        }
    }

    /// Scans the merchant's whole manifest index to count `total` (manifests are few).
    async fn list_services(
        &self,
        merchant: MerchantId,
        livemode: bool,
        page: PageRequest,
    ) -> Result<Page<Service>, StoreError> {
        let mut w = Window::new(page);
        self.inner
            .scan::<(Option<String>,)>(
                S::ListServices,
                (merchant.to_string(), livemode),
                |(record,)| {
                    w.offer(|| record);
                    Ok(())
                },
            )
            .await?;
        let data = w
            .rows
            .into_iter()
            .flatten()
            .map(|r| from_json(&r))
            .collect::<Result<Vec<Service>, _>>()?;
        Ok(Page {
            data,
            total: w.total,
        })
    }

    async fn get_intent(&self, id: PaymentIntentId) -> Result<Option<PaymentIntent>, StoreError> {
        self.inner.read_intent(id).await
    }

    /// Visits every day-partition of the merchant and mode inside the time bounds and counts
    /// every matching index row for `total` (a known cost: O(matching range), not O(page)).
    /// Only the intents of the requested page are loaded.
    async fn list_intents(
        &self,
        merchant: MerchantId,
        livemode: bool,
        q: &IntentQuery,
    ) -> Result<Page<PaymentIntent>, StoreError> {
        let lo = q
            .created_after
            .map(|ms| PaymentIntentId::min_at(ms).to_string())
            .unwrap_or_else(|| PaymentIntentId::PREFIX.to_string());
        let hi = q
            .created_before
            .map(|ms| PaymentIntentId::min_at(ms).to_string())
            .unwrap_or_else(|| format!("{}~", PaymentIntentId::PREFIX));
        if lo >= hi {
            return Ok(Page {
                data: Vec::new(),
                total: 0,
            });
        }
        let first_day = q.created_after.map(day_of);
        let last_day = q.created_before.map(|ms| day_of(ms - 1));
        let mut days: Vec<i64> = self
            .inner
            .days(merchant, livemode, KIND_INTENTS)
            .await?
            .into_iter()
            .filter(|d| first_day.is_none_or(|f| *d >= f) && last_day.is_none_or(|l| *d <= l))
            .collect();
        let scan = if q.descending {
            S::ScanIntentsDesc
        } else {
            days.reverse();
            S::ScanIntentsAsc
        };
        let status = q.status.map(|s| s.to_u8() as i8);
        let channel = q.channel.as_deref();
        let m = merchant.to_string();
        let mut w = Window::new(q.page);
        for day in days {
            self.inner
                .scan::<(String, Option<i8>, Option<String>)>(
                    scan,
                    (&m, livemode, day, &lo, &hi),
                    |(id, st, ch)| {
                        if status.is_none_or(|s| st == Some(s))
                            && channel.is_none_or(|c| ch.as_deref() == Some(c))
                        {
                            w.offer(|| id);
                        }
                        Ok(())
                    },
                )
                .await?;
        }
        let data = self.inner.load_intents(w.rows).await?;
        Ok(Page {
            data,
            total: w.total,
        })
    }

    async fn get_refund(&self, id: RefundId) -> Result<Option<Refund>, StoreError> {
        self.inner.get_record(S::GetRefund, (id.to_string(),)).await
    }

    /// Newest first. Scans every matching index row to count `total`.
    async fn list_refunds(
        &self,
        merchant: MerchantId,
        livemode: bool,
        intent: Option<PaymentIntentId>,
        page: PageRequest,
    ) -> Result<Page<Refund>, StoreError> {
        let m = merchant.to_string();
        let mut w = Window::new(page);
        match intent {
            Some(pi) => {
                self.inner
                    .scan::<(String, Option<String>, Option<bool>)>(
                        S::ScanRefundsByIntent,
                        (pi.to_string(),),
                        |(id, rm, rl)| {
                            if rm.as_deref() == Some(m.as_str()) && rl == Some(livemode) {
                                w.offer(|| id);
                            }
                            Ok(())
                        },
                    )
                    .await?;
            }
            None => {
                for day in self.inner.days(merchant, livemode, KIND_REFUNDS).await? {
                    self.inner
                        .scan::<(String,)>(S::ScanRefundsByMerchant, (&m, livemode, day), |(id,)| {
                            w.offer(|| id);
                            Ok(())
                        })
                        .await?;
                }
            }
        }
        let data = self.inner.load_all(S::GetRefund, w.rows).await?;
        Ok(Page {
            data,
            total: w.total,
        })
    }

    async fn get_event(&self, id: EventId) -> Result<Option<Event>, StoreError> {
        self.inner.get_record(S::GetEvent, (id.to_string(),)).await
    }

    /// Newest first. Scans every index row of the merchant (or of the object) to count
    /// `total`; the type filter is applied on the index, before any event is loaded.
    async fn list_events(
        &self,
        merchant: MerchantId,
        livemode: bool,
        q: &EventQuery,
    ) -> Result<Page<Event>, StoreError> {
        let m = merchant.to_string();
        let ty = q.event_type.as_deref();
        let mut w = Window::new(q.page);
        match &q.object_id {
            Some(obj) => {
                self.inner
                    .scan::<(String, Option<String>, Option<bool>, Option<String>)>(
                        S::ScanEventsByObject,
                        (obj,),
                        |(id, em, el, et)| {
                            if em.as_deref() == Some(m.as_str())
                                && el == Some(livemode)
                                && ty.is_none_or(|t| et.as_deref() == Some(t))
                            {
                                w.offer(|| id);
                            }
                            Ok(())
                        },
                    )
                    .await?;
            }
            None => {
                for day in self.inner.days(merchant, livemode, KIND_EVENTS).await? {
                    self.inner
                        .scan::<(String, Option<String>)>(
                            S::ScanEventsByMerchant,
                            (&m, livemode, day),
                            |(id, et)| {
                                if ty.is_none_or(|t| et.as_deref() == Some(t)) {
                                    w.offer(|| id);
                                }
                                Ok(())
                            },
                        )
                        .await?;
                }
            }
        }
        let data = self.inner.load_all(S::GetEvent, w.rows).await?;
        Ok(Page {
            data,
            total: w.total,
        })
    }

    async fn get_idempotency(&self, scope: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.inner.read_idempotency(scope).await
    }

    async fn get_record(&self, kind: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_names(&[kind])?;
        let res = self
            .inner
            .session
            .execute_unpaged(self.inner.st(S::GetRecordRow), (kind, key))
            .await
            .map_err(|e| cql_err("read")(&e))?;
        let rows = res.into_rows_result().map_err(|e| cql_err("read")(&e))?;
        Ok(rows
            .maybe_first_row::<(Option<Vec<u8>>,)>()
            .map_err(|e| cql_err("read")(&e))?
            .and_then(|(v,)| v))
    }

    async fn scan_entries(
        &self,
        index: &str,
        partition: &str,
        range: &EntryRange,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        check_names(&[index, partition])?;
        if range.limit == 0 {
            return Ok(Vec::new());
        }
        let (s, bounds) = scan_statement(range);
        let mut values = vec![text(index), text(partition)];
        values.extend(bounds);
        let mut out = Vec::with_capacity(range.limit.min(1024));
        self.inner
            .scan::<(String, Option<Vec<u8>>)>(s, values, |(sort, v)| {
                out.push((sort, v.unwrap_or_default()));
                Ok(())
            })
            .await?;
        Ok(out)
    }

    /// Reads all [`EXPIRY_BUCKETS`] partitions (a few at a time): a full scan of the pending
    /// intents, meant for start-up. Sorted by expiry time, then id.
    async fn pending_expiries(&self) -> Result<Vec<(PaymentIntentId, Timestamp)>, StoreError> {
        let inner = &self.inner;
        let reads = (0..EXPIRY_BUCKETS as i32).map(|b| async move {
            let mut out = Vec::new();
            inner
                .scan::<(String, Option<i64>)>(S::ScanPending, (b,), |(id, at)| {
                    let id = PaymentIntentId::parse(&id)
                        .map_err(|e| StoreError(format!("corrupt pending-expiry row: {e}")))?;
                    out.push((id, Timestamp(at.unwrap_or(0))));
                    Ok(())
                })
                .await?;
            Ok::<_, StoreError>(out)
        });
        let mut all: Vec<(PaymentIntentId, Timestamp)> = futures::stream::iter(reads)
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect();
        all.sort_by_key(|(id, at)| (*at, *id));
        Ok(all)
    }

    /// A full scan of the intent listing index (every merchant): start-up only.
    async fn count_intents_by_status(&self) -> Result<StatusCounts, StoreError> {
        let mut counts = [0u64; 5];
        self.inner
            .scan::<(Option<i8>,)>(S::ScanIntentStatuses, (), |(s,)| {
                if let Some(s) = s.and_then(|s| IntentStatus::from_u8(s as u8)) {
                    counts[s.to_u8() as usize] += 1;
                }
                Ok(())
            })
            .await?;
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_listed_in_enum_order() {
        for (i, (s, cql)) in STATEMENTS.iter().enumerate() {
            assert_eq!(*s as usize, i, "{cql}");
        }
        assert_eq!(STATEMENTS.len(), S::HomeScan as usize + 1);
    }

    #[test]
    fn write_timestamps_increase_and_batches_get_ranges() {
        let stamps = WriteStamps::default();
        let a = stamps.reserve(4);
        let b = stamps.reserve(1);
        let c = stamps.reserve(3);
        assert!(b >= a + 4);
        assert!(c > b);
    }

    #[test]
    fn migrations_split_into_statements() {
        let st = migration_statements(
            "-- a comment; with a semicolon\nCREATE TABLE IF NOT EXISTS a (x int PRIMARY KEY);\n\n  -- x\nCREATE TABLE IF NOT EXISTS b (y int PRIMARY KEY)\n  WITH gc_grace_seconds = 1;\n",
        );
        assert_eq!(st.len(), 2);
        assert!(st[0].starts_with("CREATE TABLE IF NOT EXISTS a"));
        assert!(st[1].ends_with("gc_grace_seconds = 1"));
        for m in MIGRATIONS {
            for s in migration_statements(m.cql) {
                assert!(s.starts_with("CREATE TABLE IF NOT EXISTS"), "{s}");
            }
        }
    }

    #[test]
    fn idempotency_ttl_counts_from_creation() {
        let day = Duration::from_secs(86_400);
        let now = chrono::Utc::now().timestamp_millis();
        let fresh = idempotency_ttl_secs(day, Timestamp(now));
        assert!((86_390..=86_400).contains(&fresh), "{fresh}");
        let hour_old = idempotency_ttl_secs(day, Timestamp(now - 3_600_000));
        assert!((82_790..=82_800).contains(&hour_old), "{hour_old}");
        assert_eq!(
            idempotency_ttl_secs(day, Timestamp(now - 100 * 86_400_000)),
            1
        );
    }

    #[test]
    fn config_validation_names_the_problem() {
        let bad = CqlConfig {
            keyspace: "ipay; DROP".into(),
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().0.contains("keyspace"));
        let bad = CqlConfig {
            replication: "SimpleStrategy".into(),
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().0.contains("replication"));
        assert!(CqlConfig::default().validate().is_ok());
    }
}
