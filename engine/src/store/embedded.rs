//! Embedded [`Ledger`]: a log-structured store (fjall) in the data directory, one process.
//!
//! Writes: the submitting task encodes its batch into keyspace puts and deletes; the single
//! `ledger-writer` thread takes every batch queued (up to `max_batch`), folds them into one
//! atomic cross-keyspace write batch, appends it to the store's journal and makes it durable
//! with one `fdatasync`, then publishes it to readers and answers every submitter. The synced
//! journal frame is the commit point: a crash at any moment loses nothing acknowledged, and
//! opening the directory again replays the journal. The queryable part (memtables, flushed
//! and compacted into sorted tables) absorbs the writes in the store's own background
//! threads; nothing stops writers to make it durable, so there are no checkpoint pauses.
//!
//! Reads open a snapshot at the last published group, so they see every acknowledged write at
//! once and never half of a batch or anything not yet durable.
//!
//! Storage layout: one keyspace per table with the key encodings of the earlier B-tree
//! backend. Secondary indexes hold keys (plus a few filter bytes), never a copy of a record.
//! An intent or idempotency record whose JSON equals the data of an event written in the same
//! batch points at that event instead of copying it ([`codec`]). Idempotency records live in
//! one keyspace per UTC day of their creation, so expiring them drops whole keyspaces instead
//! of deleting record by record.
//!
//! An I/O error while committing stops the ledger for good (every later write fails with
//! `store_unavailable`): after a failed fsync the state of the journal is unknown, and
//! guessing would risk losing or reviving writes. A restart recovers from the journal.
//!
//! Not here: the outbox, webhooks and other features keep their data in the generic records
//! and sorted entries through ordinary batches.

mod codec;
pub mod faults;

use super::*;
use crate::model::{IntentStatus, ServiceStatus};
use codec::Json;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable, Snapshot};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use tokio::sync::{broadcast, mpsc};

const DAY_MS: i64 = 86_400_000;
/// Prefix of the per-day idempotency keyspaces (`idempotency_<days since 1970>`).
const IDEM_PREFIX: &str = "idempotency_";

/// The fixed keyspaces, indexed by the `T_*` constants.
const TABLES: [&str; 18] = [
    "merchants",
    "api_keys",
    "api_key_hash",
    "keys_by_merchant",
    "services",
    "services_by_merchant",
    "service_names",
    "intents",
    "intents_by_merchant",
    "pending_expiry",
    "refunds",
    "refunds_by_intent",
    "refunds_by_merchant",
    "events",
    "events_by_merchant",
    "events_by_object",
    // Generic records: `kind \0 key` → value.
    "records",
    // Generic sorted indexes: `index \0 partition \0 sort` → value.
    "entries",
];

const T_MERCHANTS: usize = 0;
const T_API_KEYS: usize = 1;
const T_API_KEY_HASH: usize = 2;
const T_KEYS_BY_MERCHANT: usize = 3;
const T_SERVICES: usize = 4;
const T_SERVICES_BY_MERCHANT: usize = 5;
const T_SERVICE_NAMES: usize = 6;
const T_INTENTS: usize = 7;
const T_INTENTS_BY_MERCHANT: usize = 8;
const T_PENDING_EXPIRY: usize = 9;
const T_REFUNDS: usize = 10;
const T_REFUNDS_BY_INTENT: usize = 11;
const T_REFUNDS_BY_MERCHANT: usize = 12;
const T_EVENTS: usize = 13;
const T_EVENTS_BY_MERCHANT: usize = 14;
const T_EVENTS_BY_OBJECT: usize = 15;
const T_RECORDS: usize = 16;
const T_ENTRIES: usize = 17;

fn record_key(kind: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(kind.len() + 1 + key.len());
    k.extend_from_slice(kind.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

fn entry_prefix(index: &str, partition: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(index.len() + partition.len() + 40);
    k.extend_from_slice(index.as_bytes());
    k.push(0);
    k.extend_from_slice(partition.as_bytes());
    k.push(0);
    k
}

fn entry_key(index: &str, partition: &str, sort: &str) -> Vec<u8> {
    let mut k = entry_prefix(index, partition);
    k.extend_from_slice(sort.as_bytes());
    k
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

fn check_key(key: &str) -> Result<(), StoreError> {
    if key.contains('\0') {
        return Err(StoreError(
            "record and sort keys must not contain NUL".into(),
        ));
    }
    Ok(())
}

/// The UTC day (days since 1970) an idempotency record created at `ms` is filed under.
fn idem_day(ms: i64) -> i64 {
    ms.max(0) / DAY_MS
}

/// Tuning for the embedded ledger.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Batches waiting for the writer before `submit` refuses (back-pressure → 503).
    pub queue_capacity: usize,
    /// Most batches folded into one durable group commit.
    pub max_batch: usize,
    /// Block cache of the store, bytes.
    pub cache_bytes: usize,
    /// No effect since the ledger moved to a log-structured store: writes become durable in
    /// the journal and the store flushes in the background, so there is nothing to
    /// checkpoint. Kept so existing configurations still load.
    pub checkpoint_interval: std::time::Duration,
    /// Half the journal size, bytes, beyond which the store flushes its oldest memtables so
    /// the journal behind them can go (the journal is bounded at twice this, at least
    /// 64 MiB). Bounds both memory and the replay work after a crash.
    pub wal_segment_bytes: u64,
    /// No effect (see `checkpoint_interval`); kept so existing configurations still load.
    pub checkpoint_bytes: u64,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            queue_capacity: 65_536,
            max_batch: 2_048,
            cache_bytes: 256 << 20,
            checkpoint_interval: std::time::Duration::from_secs(2),
            wal_segment_bytes: 64 << 20,
            checkpoint_bytes: 2 << 20,
        }
    }
}

/// Where a write goes: a fixed keyspace or the idempotency keyspace of one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Target {
    Table(usize),
    Idempotency(i64),
}

/// A write already encoded by the submitting task, so the writer thread only moves bytes.
enum Enc {
    /// Put (`Some`) or delete (`None`).
    Write {
        target: Target,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
    },
    /// Needs the stored version (to move its name index), so it is resolved in the writer.
    Service {
        svc: Box<Service>,
        json: Vec<u8>,
    },
    PurgeIdempotencyBefore(Timestamp),
}

fn put(t: usize, key: &[u8], value: Vec<u8>) -> Enc {
    Enc::Write {
        target: Target::Table(t),
        key: key.to_vec(),
        value: Some(value),
    }
}

fn del(t: usize, key: Vec<u8>) -> Enc {
    Enc::Write {
        target: Target::Table(t),
        key,
        value: None,
    }
}

/// The events of one batch, so intents and idempotency bodies equal to an event's data can
/// point at it instead of repeating it.
struct BatchEvents<'a>(Vec<&'a Event>);

impl BatchEvents<'_> {
    /// The id of an event of this batch whose data is exactly `json` (and, when given, whose
    /// object is `object`).
    fn holding(&self, json: &[u8], object: Option<&str>) -> Option<[u8; 16]> {
        self.0
            .iter()
            .find(|e| e.data.get().as_bytes() == json && object.is_none_or(|o| e.object_id == o))
            .map(|e| e.id.to_bytes())
    }
}

/// Encodes one op; runs on the submitting task.
fn encode(op: &WriteOp, evs: &BatchEvents<'_>, out: &mut Vec<Enc>) -> Result<(), StoreError> {
    match op {
        WriteOp::PutMerchant(m) => out.push(put(T_MERCHANTS, &m.id.to_bytes(), json(m)?)),
        WriteOp::PutApiKey { key, secret_hash } => {
            let id = key.id.to_bytes();
            out.push(put(T_API_KEYS, &id, json(key)?));
            if let Some(h) = secret_hash {
                out.push(put(T_API_KEY_HASH, h, id.to_vec()));
            }
            out.push(put(
                T_KEYS_BY_MERCHANT,
                &mkey_obj(key.merchant_id, key.livemode, id),
                vec![],
            ));
        }
        WriteOp::PutService(svc) => out.push(Enc::Service {
            svc: Box::new(svc.clone()),
            json: json(svc)?,
        }),
        WriteOp::PutIntent(pi) => {
            let id = pi.id.to_bytes();
            let doc = json(pi)?;
            let holder = evs.holding(&doc, Some(&pi.id.to_string()));
            out.push(put(T_INTENTS, &id, codec::encode_doc(&doc, holder)));
            let mut summary = Vec::with_capacity(1 + pi.channel.len());
            summary.push(pi.status.to_u8());
            summary.extend_from_slice(pi.channel.as_bytes());
            out.push(put(
                T_INTENTS_BY_MERCHANT,
                &mkey_obj(pi.merchant_id, pi.livemode, id),
                summary,
            ));
            let ek = expiry_key(pi.expires_at, pi.id);
            if pi.status == IntentStatus::Pending {
                out.push(put(T_PENDING_EXPIRY, &ek, vec![]));
            } else {
                out.push(del(T_PENDING_EXPIRY, ek.to_vec()));
            }
        }
        WriteOp::PutRefund(r) => {
            let id = r.id.to_bytes();
            out.push(put(T_REFUNDS, &id, json(r)?));
            let mut k = [0u8; 32];
            k[..16].copy_from_slice(&r.payment_intent.to_bytes());
            k[16..].copy_from_slice(&id);
            out.push(put(T_REFUNDS_BY_INTENT, &k, vec![]));
            out.push(put(
                T_REFUNDS_BY_MERCHANT,
                &mkey_obj(r.merchant_id, r.livemode, id),
                vec![],
            ));
        }
        WriteOp::PutEvent(e) => {
            let id = e.id.to_bytes();
            out.push(put(T_EVENTS, &id, codec::encode_event(e)?));
            out.push(put(
                T_EVENTS_BY_MERCHANT,
                &mkey_obj(e.merchant_id, e.livemode, id),
                e.event_type.as_bytes().to_vec(),
            ));
            out.push(put(
                T_EVENTS_BY_OBJECT,
                &object_key(&e.object_id, Some(e.id)),
                vec![],
            ));
        }
        WriteOp::PutIdempotency { scope, record } => {
            let holder = evs.holding(record.body.as_bytes(), None);
            out.push(Enc::Write {
                target: Target::Idempotency(idem_day(record.created.ms())),
                key: scope.as_bytes().to_vec(),
                value: Some(codec::encode_idempotency(record, holder)),
            });
        }
        WriteOp::PurgeIdempotencyBefore(t) => out.push(Enc::PurgeIdempotencyBefore(*t)),
        WriteOp::PutRecord { kind, key, value } => {
            check_names(&[kind])?;
            check_key(key)?;
            out.push(put(T_RECORDS, &record_key(kind, key), value.clone()));
        }
        WriteOp::DeleteRecord { kind, key } => {
            check_names(&[kind])?;
            check_key(key)?;
            out.push(del(T_RECORDS, record_key(kind, key)));
        }
        WriteOp::PutEntry {
            index,
            partition,
            sort,
            value,
        } => {
            check_names(&[index, partition])?;
            check_key(sort)?;
            out.push(put(
                T_ENTRIES,
                &entry_key(index, partition, sort),
                value.clone(),
            ));
        }
        WriteOp::DeleteEntry {
            index,
            partition,
            sort,
        } => {
            check_names(&[index, partition])?;
            check_key(sort)?;
            out.push(del(T_ENTRIES, entry_key(index, partition, sort)));
        }
        // Checked and written by the writer thread (see `Job::fence`).
        WriteOp::Fence { .. } => {}
    }
    Ok(())
}

/// Record kind under which the writer keeps the highest committed epoch of each fence key.
const FENCE_KIND: &str = "ledger_fence";

struct Job {
    ops: Vec<Enc>,
    events: Vec<Event>,
    done: Done,
    /// The batch's fence `(key, epoch)`: checked under the writer, against the stored epoch
    /// and those of earlier jobs of the same group, so check and write are one atomic step.
    fence: Option<(String, u64)>,
}

/// The store's handles, shared by readers and the writer thread.
struct Stores {
    db: Database,
    tables: Vec<Keyspace>,
    /// Idempotency keyspaces by day, created by the writer as records arrive.
    idempotency: parking_lot::RwLock<BTreeMap<i64, Keyspace>>,
    /// Records created before this (ms) count as purged even while their day's keyspace is
    /// still there (it goes once the whole day is older than the cut-off).
    purged_before: AtomicI64,
}

impl Stores {
    fn table(&self, t: usize) -> &Keyspace {
        &self.tables[t]
    }

    /// The idempotency keyspaces, newest day first.
    fn idempotency_days(&self) -> Vec<Keyspace> {
        self.idempotency.read().values().rev().cloned().collect()
    }

    /// The keyspace for `day`, created when missing (writer thread only).
    fn idempotency_day(&self, day: i64) -> Result<Keyspace, StoreError> {
        if let Some(ks) = self.idempotency.read().get(&day) {
            return Ok(ks.clone());
        }
        let ks = self
            .db
            .keyspace(&format!("{IDEM_PREFIX}{day}"), keyspace_options)
            .map_err(se)?;
        self.idempotency.write().insert(day, ks.clone());
        Ok(ks)
    }

    /// Drops the keyspaces of days that ended before `cutoff` (writer thread only).
    fn purge_idempotency(&self, cutoff: Timestamp) {
        self.purged_before.fetch_max(cutoff.ms(), Ordering::SeqCst);
        let doomed: Vec<(i64, Keyspace)> = {
            let mut days = self.idempotency.write();
            let keep = days.split_off(&idem_day(cutoff.ms()));
            std::mem::replace(&mut *days, keep).into_iter().collect()
        };
        for (day, ks) in doomed {
            if let Err(e) = self.db.delete_keyspace(ks) {
                // The records stay unreadable (see `purged_before`); the next purge retries.
                tracing::warn!(day, error = %e, "could not drop an expired idempotency keyspace");
            }
        }
    }
}

/// The options of every keyspace: lz4 blocks on every level (the values are JSON and
/// repetitive keys, so this roughly halves the disk), smaller memtables than the default so
/// twenty keyspaces do not hold gigabytes in memory.
fn keyspace_options() -> KeyspaceCreateOptions {
    use fjall::CompressionType;
    use fjall::config::CompressionPolicy;
    KeyspaceCreateOptions::default()
        .data_block_compression_policy(CompressionPolicy::all(CompressionType::Lz4))
        .max_memtable_size(16 << 20)
}

/// The embedded ledger. Cheap to share behind an `Arc`.
pub struct EmbeddedLedger {
    stores: Arc<Stores>,
    tx: mpsc::Sender<Job>,
    events: broadcast::Sender<Arc<Event>>,
    /// Set when the writer hit an I/O error; all later writes are refused.
    failed: Arc<AtomicBool>,
    /// Becomes `true` once the writer thread has finished and let go of the data directory.
    closed: tokio::sync::watch::Receiver<bool>,
    /// Run on every batch before it is queued (the webhook outbox).
    hooks: crate::store::hook::CommitHooks,
}

fn se<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError(e.to_string())
}

fn mkey(m: MerchantId, livemode: bool) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[..16].copy_from_slice(&m.to_bytes());
    k[16] = livemode as u8;
    k
}

fn mkey_obj(m: MerchantId, livemode: bool, obj: [u8; 16]) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[..17].copy_from_slice(&mkey(m, livemode));
    k[17..].copy_from_slice(&obj);
    k
}

fn expiry_key(at: Timestamp, id: PaymentIntentId) -> [u8; 24] {
    let mut k = [0u8; 24];
    // Times before 1970 do not occur; clamp so the big-endian order stays the time order.
    k[..8].copy_from_slice(&(at.ms().max(0) as u64).to_be_bytes());
    k[8..].copy_from_slice(&id.to_bytes());
    k
}

fn object_key(object_id: &str, evt: Option<EventId>) -> Vec<u8> {
    let b = object_id.as_bytes();
    let mut k = Vec::with_capacity(1 + b.len() + 16);
    k.push(b.len().min(255) as u8);
    k.extend_from_slice(&b[..b.len().min(255)]);
    if let Some(e) = evt {
        k.extend_from_slice(&e.to_bytes());
    }
    k
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(se)
}

fn from_json<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|e| StoreError(format!("corrupt record: {e}")))
}

/// Upper bound for a prefix range: the prefix followed by 0xFF bytes up to `len`.
fn prefix_end(prefix: &[u8], len: usize) -> Vec<u8> {
    let mut v = prefix.to_vec();
    v.resize(len, 0xFF);
    v
}

fn u128_at(b: &[u8], at: usize) -> u128 {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    u128::from_be_bytes(a)
}

/// The JSON a stored document stands for, fetched from its event when it is a pointer.
fn resolve<T: for<'de> Deserialize<'de>>(
    snap: &Snapshot,
    s: &Stores,
    doc: Json<'_>,
) -> Result<T, StoreError> {
    match doc {
        Json::Inline(j) => from_json(j),
        Json::Event(id) => {
            // Written in the same atomic batch and never deleted: always there.
            let ev = snap
                .get(s.table(T_EVENTS), id)
                .map_err(se)?
                .ok_or_else(|| StoreError("a stored record points at a missing event".into()))?;
            from_json(codec::event_parts(&ev)?.data)
        }
    }
}

fn load_json<T: for<'de> Deserialize<'de>>(
    snap: &Snapshot,
    s: &Stores,
    t: usize,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    match snap.get(s.table(t), key).map_err(se)? {
        Some(v) => Ok(Some(from_json(&v)?)),
        None => Ok(None),
    }
}

fn load_intent(
    snap: &Snapshot,
    s: &Stores,
    key: &[u8],
) -> Result<Option<PaymentIntent>, StoreError> {
    match snap.get(s.table(T_INTENTS), key).map_err(se)? {
        Some(v) => Ok(Some(resolve(snap, s, codec::decode_doc(&v)?)?)),
        None => Ok(None),
    }
}

fn load_event(snap: &Snapshot, s: &Stores, key: &[u8]) -> Result<Option<Event>, StoreError> {
    match snap.get(s.table(T_EVENTS), key).map_err(se)? {
        Some(v) => {
            let id = EventId::from_u128(u128_at(key, 0));
            Ok(Some(codec::decode_event(id, &v)?))
        }
        None => Ok(None),
    }
}

impl EmbeddedLedger {
    /// Opens (or creates) the ledger in `dir/ledger` and starts the writer thread.
    /// Fails if another process has it open.
    pub fn open(dir: &Path, opts: EmbeddedOptions) -> Result<Arc<EmbeddedLedger>, StoreError> {
        EmbeddedLedger::open_inner(dir, opts, None)
    }

    /// [`EmbeddedLedger::open`] with a fault plan asked before every group commit's journal
    /// sync ([`faults`]; tests and the deterministic simulation).
    pub fn open_with_faults(
        dir: &Path,
        opts: EmbeddedOptions,
        faults: Arc<dyn faults::SyncFaults>,
    ) -> Result<Arc<EmbeddedLedger>, StoreError> {
        EmbeddedLedger::open_inner(dir, opts, Some(faults))
    }

    fn open_inner(
        dir: &Path,
        opts: EmbeddedOptions,
        faults: Option<Arc<dyn faults::SyncFaults>>,
    ) -> Result<Arc<EmbeddedLedger>, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError(format!("cannot create data dir {}: {e}", dir.display())))?;
        let old = dir.join("ledger.redb");
        if old.exists() {
            return Err(StoreError(format!(
                "{} is a ledger of the earlier on-disk format, which this version does not read; \
                 start with an empty data dir (or run the previous version against this one)",
                old.display()
            )));
        }
        let path = dir.join("ledger");
        let journal = opts.wal_segment_bytes.saturating_mul(2).max(64 << 20);
        let db = Database::builder(&path)
            .cache_size(opts.cache_bytes as u64)
            .max_journaling_size(journal)
            .open()
            .map_err(|e| {
                StoreError(format!(
                    "cannot open the ledger in {} (is another `ipay` process using this data \
                     dir?): {e}",
                    path.display()
                ))
            })?;
        let tables = TABLES
            .iter()
            .map(|name| db.keyspace(name, keyspace_options).map_err(se))
            .collect::<Result<Vec<_>, _>>()?;
        let mut days = BTreeMap::new();
        for name in db.list_keyspace_names() {
            let name: &str = name.as_ref();
            if let Some(day) = name
                .strip_prefix(IDEM_PREFIX)
                .and_then(|d| d.parse::<i64>().ok())
            {
                days.insert(day, db.keyspace(name, keyspace_options).map_err(se)?);
            }
        }
        let stores = Arc::new(Stores {
            db,
            tables,
            idempotency: parking_lot::RwLock::new(days),
            purged_before: AtomicI64::new(i64::MIN),
        });
        let (tx, rx) = mpsc::channel(opts.queue_capacity.max(1));
        let (events, _) = broadcast::channel(16_384);
        let failed = Arc::new(AtomicBool::new(false));
        let (closed_tx, closed) = tokio::sync::watch::channel(false);
        let writer = Writer {
            stores: stores.clone(),
            events: events.clone(),
            failed: failed.clone(),
            max_batch: opts.max_batch.max(1),
            faults,
        };
        std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || {
                writer.run(rx);
                let _ = closed_tx.send(true);
            })
            .map_err(se)?;
        Ok(Arc::new(EmbeddedLedger {
            stores,
            tx,
            events,
            failed,
            closed,
            hooks: Default::default(),
        }))
    }

    fn encode_batch(batch: WriteBatch, done: Done) -> Result<Job, (StoreError, Done)> {
        let fence = match batch.fence() {
            Ok(f) => f.map(|(k, e)| (k.to_string(), e)),
            Err(e) => return Err((e, done)),
        };
        let mut ops = Vec::with_capacity(batch.ops.len() * 3);
        {
            let evs = BatchEvents(batch.events().collect());
            for op in &batch.ops {
                if let Err(e) = encode(op, &evs, &mut ops) {
                    return Err((e, done));
                }
            }
        }
        let events = batch
            .ops
            .into_iter()
            .filter_map(|op| match op {
                WriteOp::PutEvent(e) => Some(e),
                _ => None,
            })
            .collect();
        Ok(Job {
            ops,
            events,
            done,
            fence,
        })
    }

    fn stopped() -> StoreError {
        StoreError("the ledger stopped after an I/O error; restart the engine".into())
    }

    /// Encodes and queues a batch; on failure hands `done` back untouched.
    fn enqueue(&self, batch: WriteBatch, done: Done) -> Result<(), (StoreError, Done)> {
        if self.failed.load(Ordering::Relaxed) {
            return Err((Self::stopped(), done));
        }
        let job = Self::encode_batch(batch, done)?;
        match self.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(job)) => {
                Err((StoreError("ledger write queue is full".into()), job.done))
            }
            Err(mpsc::error::TrySendError::Closed(job)) => {
                Err((StoreError("ledger writer stopped".into()), job.done))
            }
        }
    }

    /// Resolves to `true` once the last handle to this ledger is gone and its writer thread
    /// has released the data directory (so it can be opened again).
    pub fn closed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closed.clone()
    }

    /// Committed events, in commit order (for live consumers; durable history is in the ledger).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// Sender side of the committed-event stream.
    pub fn event_sender(&self) -> broadcast::Sender<Arc<Event>> {
        self.events.clone()
    }

    /// Runs `f` on a snapshot of everything acknowledged so far (point reads: memtables and
    /// cached blocks, quick enough for the calling task).
    fn read<T>(
        &self,
        f: impl FnOnce(&Snapshot, &Stores) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let snap = self.stores.db.snapshot();
        f(&snap, &self.stores)
    }

    /// Like [`EmbeddedLedger::read`], on the blocking pool (scans).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Snapshot, &Stores) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let stores = self.stores.clone();
        tokio::task::spawn_blocking(move || {
            let snap = stores.db.snapshot();
            f(&snap, &stores)
        })
        .await
        .map_err(se)?
    }
}

fn fail_all(jobs: Vec<Job>, e: &StoreError) {
    for job in jobs {
        job.done.finish(Err(e.clone()));
    }
}

/// The single writer thread: group commit.
struct Writer {
    stores: Arc<Stores>,
    events: broadcast::Sender<Arc<Event>>,
    failed: Arc<AtomicBool>,
    max_batch: usize,
    /// Injected journal-sync failures (tests only; `None` in production).
    faults: Option<Arc<dyn faults::SyncFaults>>,
}

impl Writer {
    fn run(self, mut rx: mpsc::Receiver<Job>) {
        while let Some(first) = rx.blocking_recv() {
            let mut jobs = Vec::with_capacity(64);
            jobs.push(first);
            while jobs.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            if self.failed.load(Ordering::SeqCst) {
                fail_all(jobs, &EmbeddedLedger::stopped());
                continue;
            }
            let started = std::time::Instant::now();
            match self.commit(&mut jobs) {
                Ok((purge, refused)) => {
                    if let Some(t) = purge {
                        self.stores.purge_idempotency(t);
                    }
                    metrics::histogram!("ipay_ledger_commit_seconds")
                        .record(started.elapsed().as_secs_f64());
                    metrics::histogram!("ipay_ledger_group_size").record(jobs.len() as f64);
                    let live = self.events.receiver_count() > 0;
                    for (i, job) in jobs.into_iter().enumerate() {
                        if let Some(e) = refused.iter().find(|(j, _)| *j == i).map(|(_, e)| e) {
                            job.done.finish(Err(e.clone()));
                            continue;
                        }
                        job.done.finish(Ok(()));
                        if live {
                            for ev in job.events {
                                let _ = self.events.send(Arc::new(ev));
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "ledger commit failed; the ledger stops taking writes");
                    self.failed.store(true, Ordering::SeqCst);
                    fail_all(jobs, &e);
                }
            }
        }
        // Every ledger handle is gone (the queue closed); wait for readers still holding the
        // store (a scan on the blocking pool) so dropping it below really releases the
        // directory before `closed` says so.
        let Writer { stores, .. } = self;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while Arc::strong_count(&stores) > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        drop(stores);
    }

    /// Folds a group into one write batch and makes it durable (one `fdatasync`).
    /// Returns the idempotency purge cut-off the group asked for, if any, and the jobs
    /// refused by their fence (index in `jobs`, error); those wrote nothing.
    /// The jobs' encoded writes are moved into the batch (the writer is the one serial stage,
    /// so it copies no key or value).
    fn commit(&self, jobs: &mut [Job]) -> Result<(Option<Timestamp>, Refused), StoreError> {
        let s = &*self.stores;
        // Within one batch every write carries the same sequence number, so a key written
        // twice in a group must be written once, with its last value.
        let mut writes: Writes = HashMap::with_capacity(jobs.len() * 8);
        let mut services: HashMap<[u8; 16], Service> = HashMap::new();
        let mut snapshot: Option<Snapshot> = None;
        let mut purge: Option<Timestamp> = None;
        let mut fences: HashMap<&str, u64> = HashMap::new();
        let mut refused: Refused = Vec::new();
        for (i, job) in jobs.iter_mut().enumerate() {
            if let Some((key, epoch)) = &job.fence
                && let Err(e) = fence(s, &mut snapshot, &mut fences, &mut writes, key, *epoch)?
            {
                refused.push((i, e));
                continue;
            }
            for op in std::mem::take(&mut job.ops) {
                match op {
                    Enc::Write { target, key, value } => {
                        writes.insert((target, key), value);
                    }
                    Enc::Service { svc, json } => {
                        let id = svc.id.to_bytes();
                        let old = match services.get(&id) {
                            Some(o) => Some(o.clone()),
                            None => {
                                let snap = snapshot.get_or_insert_with(|| s.db.snapshot());
                                load_json::<Service>(snap, s, T_SERVICES, &id)?
                            }
                        };
                        service_writes(&mut writes, old.as_ref(), &svc, &json);
                        services.insert(id, *svc);
                    }
                    Enc::PurgeIdempotencyBefore(t) => {
                        purge = Some(purge.map_or(t, |p| p.max(t)));
                    }
                }
            }
        }
        if writes.is_empty() {
            return Ok((purge, refused));
        }
        let mut days: HashMap<i64, Keyspace> = HashMap::new();
        let mut batch = s.db.batch().durability(Some(PersistMode::SyncData));
        for ((target, key), value) in writes {
            let ks = match target {
                Target::Table(t) => s.table(t),
                Target::Idempotency(day) => {
                    if let std::collections::hash_map::Entry::Vacant(e) = days.entry(day) {
                        e.insert(s.idempotency_day(day)?);
                    }
                    &days[&day]
                }
            };
            match value {
                Some(v) => batch.insert(ks, key, v),
                None => batch.remove(ks, key),
            }
        }
        let started = std::time::Instant::now();
        let fault = self.faults.as_ref().and_then(|f| f.next());
        if fault == Some(faults::SyncFault::Before) {
            return Err(faults::injected(faults::SyncFault::Before));
        }
        batch.commit().map_err(se)?;
        if let Some(f) = fault {
            return Err(faults::injected(f));
        }
        metrics::histogram!("ipay_ledger_wal_sync_seconds").record(started.elapsed().as_secs_f64());
        Ok((purge, refused))
    }
}

/// The keyed writes a group folds into one store batch (`None`: delete).
type Writes = HashMap<(Target, Vec<u8>), Option<Vec<u8>>>;

/// Checks a job's fence against earlier jobs of its group (`fences`) and the stored epoch;
/// when it holds, records `epoch` as the key's newest (in `fences`, and in `writes` so it is
/// committed with the job). `Ok(Err(_))`: refused.
fn fence<'j>(
    s: &Stores,
    snapshot: &mut Option<Snapshot>,
    fences: &mut HashMap<&'j str, u64>,
    writes: &mut Writes,
    key: &'j str,
    epoch: u64,
) -> Result<Result<(), StoreError>, StoreError> {
    let stored = match fences.get(key) {
        Some(e) => Some(*e),
        None => stored_fence(snapshot.get_or_insert_with(|| s.db.snapshot()), s, key)?,
    };
    if let Some(current) = stored.filter(|c| *c > epoch) {
        return Ok(Err(fenced_error(key, epoch, current)));
    }
    fences.insert(key, epoch);
    let k = (Target::Table(T_RECORDS), record_key(FENCE_KIND, key));
    writes.insert(k, Some(epoch.to_be_bytes().to_vec()));
    Ok(Ok(()))
}

/// Jobs of a group refused by their fence: index in the group and the error they get.
type Refused = Vec<(usize, StoreError)>;

/// The highest epoch committed under fence `key`, if any.
fn stored_fence(snap: &Snapshot, s: &Stores, key: &str) -> Result<Option<u64>, StoreError> {
    let v = snap
        .get(s.table(T_RECORDS), record_key(FENCE_KIND, key))
        .map_err(se)?;
    Ok(v.and_then(|b| <[u8; 8]>::try_from(&b[..]).ok().map(u64::from_be_bytes)))
}

/// The writes of storing `svc` over `old`: the record, the merchant listing and the name
/// index (the old name released, the new one taken unless the service is deleted).
fn service_writes(
    writes: &mut HashMap<(Target, Vec<u8>), Option<Vec<u8>>>,
    old: Option<&Service>,
    svc: &Service,
    json: &[u8],
) {
    let id = svc.id.to_bytes();
    let mk = mkey(svc.merchant_id, svc.livemode);
    let name_key = |name: &str| {
        let mut nk = mk.to_vec();
        nk.extend_from_slice(name.as_bytes());
        (Target::Table(T_SERVICE_NAMES), nk)
    };
    if let Some(old) = old {
        writes.insert(name_key(&old.name), None);
    }
    writes.insert(
        (Target::Table(T_SERVICES), id.to_vec()),
        Some(json.to_vec()),
    );
    let by_m = (
        Target::Table(T_SERVICES_BY_MERCHANT),
        mkey_obj(svc.merchant_id, svc.livemode, id).to_vec(),
    );
    if svc.status == ServiceStatus::Deleted {
        writes.insert(by_m, None);
    } else {
        writes.insert(by_m, Some(vec![]));
        writes.insert(name_key(&svc.name), Some(id.to_vec()));
    }
}

/// A range over a `merchant | mode | id` index and how to load the records its ids name.
struct Scan<'a> {
    index: usize,
    lo: &'a [u8],
    hi: &'a [u8],
    descending: bool,
}

/// Pages through an index whose keys are `merchant(16) | mode(1) | id(16)`, filtering on the
/// index value, loading only the records of the requested page.
fn scan_index<T>(
    snap: &Snapshot,
    s: &Stores,
    scan: Scan<'_>,
    page: PageRequest,
    keep: impl Fn(&[u8], &[u8]) -> bool,
    load: impl Fn(&Snapshot, &Stores, &[u8]) -> Result<Option<T>, StoreError>,
) -> Result<Page<T>, StoreError> {
    let range = snap.range(s.table(scan.index), scan.lo..scan.hi);
    let mut total = 0u64;
    let mut data = Vec::with_capacity(page.limit.min(1000));
    let mut visit = |k: &[u8], v: &[u8]| -> Result<(), StoreError> {
        if !keep(k, v) {
            return Ok(());
        }
        if total as usize >= page.offset
            && data.len() < page.limit
            && let Some(r) = load(snap, s, &k[17..33])?
        {
            data.push(r);
        }
        total += 1;
        Ok(())
    };
    if scan.descending {
        for item in range.rev() {
            let (k, v) = item.into_inner().map_err(se)?;
            visit(&k, &v)?;
        }
    } else {
        for item in range {
            let (k, v) = item.into_inner().map_err(se)?;
            visit(&k, &v)?;
        }
    }
    Ok(Page { data, total })
}

fn load_api_key(snap: &Snapshot, s: &Stores, id: &[u8]) -> Result<Option<ApiKey>, StoreError> {
    load_json(snap, s, T_API_KEYS, id)
}

fn load_service(snap: &Snapshot, s: &Stores, id: &[u8]) -> Result<Option<Service>, StoreError> {
    load_json(snap, s, T_SERVICES, id)
}

fn load_refund(snap: &Snapshot, s: &Stores, id: &[u8]) -> Result<Option<Refund>, StoreError> {
    load_json(snap, s, T_REFUNDS, id)
}

#[async_trait::async_trait]
impl Ledger for EmbeddedLedger {
    fn submit(&self, mut batch: WriteBatch) -> CommitTicket {
        let (tx, rx) = oneshot::channel();
        let done = self.hooks.prepare(&mut batch, Done::Ticket(tx));
        match self.enqueue(batch, done) {
            Ok(()) => CommitTicket::waiting(rx),
            Err((e, _)) => CommitTicket::ready(Err(e)),
        }
    }

    fn writable(&self) -> bool {
        !self.failed.load(Ordering::Relaxed)
    }

    fn commit_hooks(&self) -> Option<&crate::store::hook::CommitHooks> {
        Some(&self.hooks)
    }

    fn submit_then(&self, mut batch: WriteBatch, done: Completion) {
        let done = self.hooks.prepare(&mut batch, Done::Callback(done));
        if let Err((e, done)) = self.enqueue(batch, done) {
            done.finish(Err(e));
        }
    }

    async fn get_merchant(&self, id: MerchantId) -> Result<Option<Merchant>, StoreError> {
        self.read(|snap, s| load_json(snap, s, T_MERCHANTS, &id.to_bytes()))
    }

    async fn get_api_key(&self, id: ApiKeyId) -> Result<Option<ApiKey>, StoreError> {
        self.read(|snap, s| load_api_key(snap, s, &id.to_bytes()))
    }

    async fn find_api_key_by_hash(&self, hash: [u8; 32]) -> Result<Option<ApiKey>, StoreError> {
        self.read(
            |snap, s| match snap.get(s.table(T_API_KEY_HASH), hash).map_err(se)? {
                Some(id) => load_api_key(snap, s, &id),
                None => Ok(None),
            },
        )
    }

    async fn list_api_keys(
        &self,
        merchant: MerchantId,
        livemode: bool,
    ) -> Result<Vec<ApiKey>, StoreError> {
        let lo = mkey(merchant, livemode);
        let hi = prefix_end(&lo, 34);
        self.read(|snap, s| {
            let page = PageRequest {
                limit: usize::MAX,
                offset: 0,
            };
            let scan = Scan {
                index: T_KEYS_BY_MERCHANT,
                lo: &lo,
                hi: &hi,
                descending: true,
            };
            scan_index(snap, s, scan, page, |_, _| true, load_api_key).map(|p| p.data)
        })
    }

    async fn get_service(&self, id: ServiceId) -> Result<Option<Service>, StoreError> {
        self.read(|snap, s| load_service(snap, s, &id.to_bytes()))
    }

    async fn find_service_by_name(
        &self,
        merchant: MerchantId,
        livemode: bool,
        name: &str,
    ) -> Result<Option<Service>, StoreError> {
        let mut nk = mkey(merchant, livemode).to_vec();
        nk.extend_from_slice(name.as_bytes());
        self.read(
            |snap, s| match snap.get(s.table(T_SERVICE_NAMES), &nk).map_err(se)? {
                Some(id) => load_service(snap, s, &id),
                None => Ok(None),
            },
        )
    }

    async fn list_services(
        &self,
        merchant: MerchantId,
        livemode: bool,
        page: PageRequest,
    ) -> Result<Page<Service>, StoreError> {
        let lo = mkey(merchant, livemode);
        let hi = prefix_end(&lo, 34);
        self.read(|snap, s| {
            let scan = Scan {
                index: T_SERVICES_BY_MERCHANT,
                lo: &lo,
                hi: &hi,
                descending: true,
            };
            scan_index(snap, s, scan, page, |_, _| true, load_service)
        })
    }

    async fn get_intent(&self, id: PaymentIntentId) -> Result<Option<PaymentIntent>, StoreError> {
        self.read(|snap, s| load_intent(snap, s, &id.to_bytes()))
    }

    async fn list_intents(
        &self,
        merchant: MerchantId,
        livemode: bool,
        q: &IntentQuery,
    ) -> Result<Page<PaymentIntent>, StoreError> {
        let q = q.clone();
        self.blocking(move |snap, s| {
            let after = q
                .created_after
                .map(|ms| PaymentIntentId::min_at(ms).to_bytes())
                .unwrap_or([0; 16]);
            let lo = mkey_obj(merchant, livemode, after);
            let hi = match q.created_before {
                Some(ms) => {
                    mkey_obj(merchant, livemode, PaymentIntentId::min_at(ms).to_bytes()).to_vec()
                }
                None => prefix_end(&mkey(merchant, livemode), 34),
            };
            let status = q.status.map(|s| s.to_u8());
            let channel = q.channel.clone();
            let scan = Scan {
                index: T_INTENTS_BY_MERCHANT,
                lo: &lo,
                hi: &hi,
                descending: q.descending,
            };
            scan_index(
                snap,
                s,
                scan,
                q.page,
                |_, v| {
                    status.is_none_or(|s| v.first() == Some(&s))
                        && channel
                            .as_deref()
                            .is_none_or(|c| v.get(1..) == Some(c.as_bytes()))
                },
                load_intent,
            )
        })
        .await
    }

    async fn get_refund(&self, id: RefundId) -> Result<Option<Refund>, StoreError> {
        self.read(|snap, s| load_refund(snap, s, &id.to_bytes()))
    }

    async fn list_refunds(
        &self,
        merchant: MerchantId,
        livemode: bool,
        intent: Option<PaymentIntentId>,
        page: PageRequest,
    ) -> Result<Page<Refund>, StoreError> {
        match intent {
            None => {
                let lo = mkey(merchant, livemode);
                let hi = prefix_end(&lo, 34);
                self.read(|snap, s| {
                    let scan = Scan {
                        index: T_REFUNDS_BY_MERCHANT,
                        lo: &lo,
                        hi: &hi,
                        descending: true,
                    };
                    scan_index(snap, s, scan, page, |_, _| true, load_refund)
                })
            }
            Some(pi) => self.read(|snap, s| {
                // Refunds of one intent are few; load them all and page in memory.
                let lo = pi.to_bytes();
                let hi = prefix_end(&lo, 32);
                let mut all: Vec<Refund> = Vec::new();
                for item in snap
                    .range(s.table(T_REFUNDS_BY_INTENT), &lo[..]..&hi[..])
                    .rev()
                {
                    let k = item.key().map_err(se)?;
                    if let Some(r) = load_refund(snap, s, &k[16..32])?
                        && r.merchant_id == merchant
                        && r.livemode == livemode
                    {
                        all.push(r);
                    }
                }
                let total = all.len() as u64;
                let data = all.into_iter().skip(page.offset).take(page.limit).collect();
                Ok(Page { data, total })
            }),
        }
    }

    async fn get_event(&self, id: EventId) -> Result<Option<Event>, StoreError> {
        self.read(|snap, s| load_event(snap, s, &id.to_bytes()))
    }

    async fn list_events(
        &self,
        merchant: MerchantId,
        livemode: bool,
        q: &EventQuery,
    ) -> Result<Page<Event>, StoreError> {
        let q = q.clone();
        self.blocking(move |snap, s| {
            if let Some(obj) = &q.object_id {
                let lo = object_key(obj, None);
                let hi = prefix_end(&lo, lo.len() + 16);
                let mut all = Vec::new();
                for item in snap.range(s.table(T_EVENTS_BY_OBJECT), &lo[..]..&hi[..]) {
                    let k = item.key().map_err(se)?;
                    if let Some(e) = load_event(snap, s, &k[k.len() - 16..])?
                        && e.merchant_id == merchant
                        && e.livemode == livemode
                        && q.event_type.as_deref().is_none_or(|t| t == e.event_type)
                    {
                        all.push(e);
                    }
                }
                all.reverse();
                let total = all.len() as u64;
                let data = all
                    .into_iter()
                    .skip(q.page.offset)
                    .take(q.page.limit)
                    .collect();
                return Ok(Page { data, total });
            }
            let lo = mkey(merchant, livemode);
            let hi = prefix_end(&lo, 34);
            let ty = q.event_type.clone();
            let scan = Scan {
                index: T_EVENTS_BY_MERCHANT,
                lo: &lo,
                hi: &hi,
                descending: true,
            };
            scan_index(
                snap,
                s,
                scan,
                q.page,
                |_, v| ty.as_deref().is_none_or(|t| t.as_bytes() == v),
                load_event,
            )
        })
        .await
    }

    async fn get_idempotency(&self, scope: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        let days = self.stores.idempotency_days();
        self.read(|snap, s| {
            for ks in &days {
                let Some(v) = snap.get(ks, scope).map_err(se)? else {
                    continue;
                };
                let p = codec::decode_idempotency(&v)?;
                if p.created.ms() < s.purged_before.load(Ordering::SeqCst) {
                    return Ok(None);
                }
                let body = match p.body {
                    Json::Inline(b) => String::from_utf8(b.to_vec())
                        .map_err(|_| StoreError("corrupt idempotency record".into()))?,
                    Json::Event(id) => {
                        let ev = snap
                            .get(s.table(T_EVENTS), id)
                            .map_err(se)?
                            .ok_or_else(|| {
                                StoreError("an idempotency record points at a missing event".into())
                            })?;
                        String::from_utf8(codec::event_parts(&ev)?.data.to_vec())
                            .map_err(|_| StoreError("corrupt event record".into()))?
                    }
                };
                return Ok(Some(IdempotencyRecord {
                    request_hash: p.request_hash,
                    status: p.status,
                    body,
                    created: p.created,
                }));
            }
            Ok(None)
        })
    }

    async fn get_record(&self, kind: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_names(&[kind])?;
        check_key(key)?;
        self.read(|snap, s| {
            Ok(snap
                .get(s.table(T_RECORDS), record_key(kind, key))
                .map_err(se)?
                .map(|v| v.to_vec()))
        })
    }

    async fn scan_entries(
        &self,
        index: &str,
        partition: &str,
        range: &EntryRange,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        check_names(&[index, partition])?;
        let prefix = entry_prefix(index, partition);
        let mut hi = prefix.clone();
        // The separator is 0, so every key of this partition is below `prefix` with 0 → 1.
        if let Some(last) = hi.last_mut() {
            *last = 1;
        }
        let bound = |b: &Bound<String>| -> Bound<Vec<u8>> {
            match b {
                Bound::Included(s) => Bound::Included(entry_key(index, partition, s)),
                Bound::Excluded(s) => Bound::Excluded(entry_key(index, partition, s)),
                Bound::Unbounded => Bound::Unbounded,
            }
        };
        let lo = match bound(&range.start) {
            Bound::Unbounded => Bound::Included(prefix.clone()),
            b => b,
        };
        let up = match bound(&range.end) {
            Bound::Unbounded => Bound::Excluded(hi),
            b => b,
        };
        let limit = range.limit;
        let descending = range.descending;
        let plen = prefix.len();
        self.blocking(move |snap, s| {
            let r = snap.range(s.table(T_ENTRIES), (lo, up));
            let mut out = Vec::with_capacity(limit.min(1024));
            let mut push = |k: &[u8], v: &[u8]| {
                let sort = String::from_utf8_lossy(&k[plen.min(k.len())..]).into_owned();
                out.push((sort, v.to_vec()));
            };
            if descending {
                for item in r.rev().take(limit) {
                    let (k, v) = item.into_inner().map_err(se)?;
                    push(&k, &v);
                }
            } else {
                for item in r.take(limit) {
                    let (k, v) = item.into_inner().map_err(se)?;
                    push(&k, &v);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn pending_expiries(&self) -> Result<Vec<(PaymentIntentId, Timestamp)>, StoreError> {
        self.blocking(|snap, s| {
            let t = s.table(T_PENDING_EXPIRY);
            let mut out = Vec::with_capacity(t.approximate_len());
            for item in snap.iter(t) {
                let k = item.key().map_err(se)?;
                let mut ms = [0u8; 8];
                ms.copy_from_slice(&k[..8]);
                out.push((
                    PaymentIntentId::from_u128(u128_at(&k, 8)),
                    Timestamp(u64::from_be_bytes(ms) as i64),
                ));
            }
            Ok(out)
        })
        .await
    }

    async fn count_intents_by_status(&self) -> Result<StatusCounts, StoreError> {
        self.blocking(|snap, s| {
            let mut counts = [0u64; 5];
            for item in snap.iter(s.table(T_INTENTS_BY_MERCHANT)) {
                let (_, v) = item.into_inner().map_err(se)?;
                if let Some(st) = v.first().and_then(|b| IntentStatus::from_u8(*b)) {
                    counts[st.to_u8() as usize] += 1;
                }
            }
            Ok(counts)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_indices_match_the_table_list() {
        let names = [
            (T_MERCHANTS, "merchants"),
            (T_API_KEYS, "api_keys"),
            (T_SERVICE_NAMES, "service_names"),
            (T_INTENTS, "intents"),
            (T_PENDING_EXPIRY, "pending_expiry"),
            (T_EVENTS_BY_OBJECT, "events_by_object"),
            (T_RECORDS, "records"),
            (T_ENTRIES, "entries"),
        ];
        for (i, n) in names {
            assert_eq!(TABLES[i], n);
        }
    }

    #[test]
    fn idempotency_days_are_utc_days() {
        assert_eq!(idem_day(0), 0);
        assert_eq!(idem_day(DAY_MS - 1), 0);
        assert_eq!(idem_day(DAY_MS), 1);
        assert_eq!(idem_day(-5), 0);
    }
}
