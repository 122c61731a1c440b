//! Embedded [`Ledger`]: one redb file plus a write-ahead log in the data directory.
//!
//! Writes travel through two threads:
//! 1. `ledger-wal` takes every batch queued (up to `max_batch`), appends them to the WAL as one
//!    frame and makes it durable with a single `fdatasync` ([`super::wal`]);
//! 2. `ledger-apply` applies that group to redb in one transaction without syncing, then
//!    answers every submitter. Readers (redb MVCC) see the writes before anyone hears "ok".
//!
//! The two stages overlap: while one group is applied, the next is being synced. Every
//! `checkpoint_interval` a durable redb commit makes all applied groups durable in the B-trees
//! and the WAL segments they came from are deleted. Opening the ledger replays whatever WAL
//! is left, so a crash at any point loses nothing that was acknowledged.
//!
//! An I/O error on either stage stops the ledger for good (every later write fails with
//! `store_unavailable`): after a failed fsync the state of the file is unknown, and guessing
//! would risk losing or reviving writes. A restart replays the WAL and carries on.
//!
//! Records are encoded by the submitting task, so the single-threaded stages only copy bytes.
//! Secondary indexes are written in the same group as the records they index.

use super::wal;
use super::*;
use crate::model::IntentStatus;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};

type Bytes<'a> = &'a [u8];
type Table = TableDefinition<'static, Bytes<'static>, Bytes<'static>>;

const MERCHANTS: Table = TableDefinition::new("merchants");
const API_KEYS: Table = TableDefinition::new("api_keys");
const API_KEY_HASH: Table = TableDefinition::new("api_key_hash");
const KEYS_BY_MERCHANT: Table = TableDefinition::new("keys_by_merchant");
const SERVICES: Table = TableDefinition::new("services");
const SERVICES_BY_MERCHANT: Table = TableDefinition::new("services_by_merchant");
const SERVICE_NAMES: Table = TableDefinition::new("service_names");
const INTENTS: Table = TableDefinition::new("intents");
const INTENTS_BY_MERCHANT: Table = TableDefinition::new("intents_by_merchant");
const PENDING_EXPIRY: Table = TableDefinition::new("pending_expiry");
const REFUNDS: Table = TableDefinition::new("refunds");
const REFUNDS_BY_INTENT: Table = TableDefinition::new("refunds_by_intent");
const REFUNDS_BY_MERCHANT: Table = TableDefinition::new("refunds_by_merchant");
const EVENTS: Table = TableDefinition::new("events");
const EVENTS_BY_MERCHANT: Table = TableDefinition::new("events_by_merchant");
const EVENTS_BY_OBJECT: Table = TableDefinition::new("events_by_object");
const IDEMPOTENCY: Table = TableDefinition::new("idempotency");
const IDEMPOTENCY_BY_TIME: Table = TableDefinition::new("idempotency_by_time");
/// Generic records: `kind \0 key` → value.
const RECORDS: Table = TableDefinition::new("records");
/// Generic sorted indexes: `index \0 partition \0 sort` → value.
const ENTRIES: Table = TableDefinition::new("entries");

const ALL_TABLES: [Table; 20] = [
    MERCHANTS,
    API_KEYS,
    API_KEY_HASH,
    KEYS_BY_MERCHANT,
    SERVICES,
    SERVICES_BY_MERCHANT,
    SERVICE_NAMES,
    INTENTS,
    INTENTS_BY_MERCHANT,
    PENDING_EXPIRY,
    REFUNDS,
    REFUNDS_BY_INTENT,
    REFUNDS_BY_MERCHANT,
    EVENTS,
    EVENTS_BY_MERCHANT,
    EVENTS_BY_OBJECT,
    IDEMPOTENCY,
    IDEMPOTENCY_BY_TIME,
    RECORDS,
    ENTRIES,
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
const T_IDEMPOTENCY: usize = 16;
const T_IDEMPOTENCY_BY_TIME: usize = 17;
const T_RECORDS: usize = 18;
const T_ENTRIES: usize = 19;

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

/// Encodes one op into writer-ready puts and deletes; runs on the submitting task.
fn encode(op: WriteOp, out: &mut Vec<Enc>, events: &mut Vec<Event>) -> Result<(), StoreError> {
    let put = |t: usize, key: &[u8], value: Vec<u8>| Enc::Put {
        t,
        key: key.to_vec(),
        value,
    };
    match op {
        WriteOp::PutMerchant(m) => out.push(put(T_MERCHANTS, &m.id.to_bytes(), json(&m)?)),
        WriteOp::PutApiKey { key, secret_hash } => {
            let id = key.id.to_bytes();
            out.push(put(T_API_KEYS, &id, json(&key)?));
            if let Some(h) = secret_hash {
                out.push(put(T_API_KEY_HASH, &h, id.to_vec()));
            }
            out.push(put(
                T_KEYS_BY_MERCHANT,
                &mkey_obj(key.merchant_id, key.livemode, id),
                vec![],
            ));
        }
        WriteOp::PutService(svc) => {
            let json = json(&svc)?;
            out.push(Enc::Service {
                svc: Box::new(svc),
                json,
            });
        }
        WriteOp::PutIntent(pi) => {
            let id = pi.id.to_bytes();
            out.push(put(T_INTENTS, &id, json(&pi)?));
            let mut summary = Vec::with_capacity(1 + pi.channel.len());
            summary.push(pi.status.to_u8());
            summary.extend_from_slice(pi.channel.as_bytes());
            out.push(put(
                T_INTENTS_BY_MERCHANT,
                &mkey_obj(pi.merchant_id, pi.livemode, id),
                summary,
            ));
            let ek = expiry_key(pi.expires_at, pi.id).to_vec();
            if pi.status == IntentStatus::Pending {
                out.push(Enc::Put {
                    t: T_PENDING_EXPIRY,
                    key: ek,
                    value: vec![],
                });
            } else {
                out.push(Enc::Del {
                    t: T_PENDING_EXPIRY,
                    key: ek,
                });
            }
        }
        WriteOp::PutRefund(r) => {
            let id = r.id.to_bytes();
            out.push(put(T_REFUNDS, &id, json(&r)?));
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
            out.push(put(T_EVENTS, &id, json(&e)?));
            out.push(put(
                T_EVENTS_BY_MERCHANT,
                &mkey_obj(e.merchant_id, e.livemode, id),
                e.event_type.as_bytes().to_vec(),
            ));
            out.push(Enc::Put {
                t: T_EVENTS_BY_OBJECT,
                key: object_key(&e.object_id, Some(e.id)),
                value: vec![],
            });
            events.push(e);
        }
        WriteOp::PutIdempotency { scope, record } => {
            let mut tk = (record.created.ms().max(0) as u64).to_be_bytes().to_vec();
            tk.extend_from_slice(scope.as_bytes());
            out.push(Enc::Put {
                t: T_IDEMPOTENCY,
                key: scope.into_bytes(),
                value: json(&record)?,
            });
            out.push(Enc::Put {
                t: T_IDEMPOTENCY_BY_TIME,
                key: tk,
                value: vec![],
            });
        }
        WriteOp::PurgeIdempotencyBefore(t) => out.push(Enc::PurgeIdempotencyBefore(t)),
        WriteOp::PutRecord { kind, key, value } => {
            check_names(&[kind])?;
            check_key(&key)?;
            out.push(put(T_RECORDS, &record_key(kind, &key), value));
        }
        WriteOp::DeleteRecord { kind, key } => {
            check_names(&[kind])?;
            check_key(&key)?;
            out.push(Enc::Del {
                t: T_RECORDS,
                key: record_key(kind, &key),
            });
        }
        WriteOp::PutEntry {
            index,
            partition,
            sort,
            value,
        } => {
            check_names(&[index, &partition])?;
            check_key(&sort)?;
            out.push(put(T_ENTRIES, &entry_key(index, &partition, &sort), value));
        }
        WriteOp::DeleteEntry {
            index,
            partition,
            sort,
        } => {
            check_names(&[index, &partition])?;
            check_key(&sort)?;
            out.push(Enc::Del {
                t: T_ENTRIES,
                key: entry_key(index, &partition, &sort),
            });
        }
    }
    Ok(())
}

/// Tuning for the embedded ledger.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Batches waiting for the writer before `submit` refuses (back-pressure → 503).
    pub queue_capacity: usize,
    /// Most batches folded into one transaction.
    pub max_batch: usize,
    /// redb page cache, bytes.
    pub cache_bytes: usize,
    /// How often applied writes are made durable in redb and the WAL behind them deleted.
    pub checkpoint_interval: std::time::Duration,
    /// WAL segment size before rotating to a new file.
    pub wal_segment_bytes: u64,
    /// Also checkpoint once this many WAL bytes were applied since the last checkpoint: small,
    /// frequent checkpoints keep the pause each one causes short.
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

/// A write already encoded by the submitting task, so the single writer thread only copies
/// bytes into the B-trees. `t` indexes [`ALL_TABLES`].
enum Enc {
    Put {
        t: usize,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Del {
        t: usize,
        key: Vec<u8>,
    },
    /// Needs the stored version (to move its name index), so it is resolved in the writer.
    Service {
        svc: Box<Service>,
        json: Vec<u8>,
    },
    PurgeIdempotencyBefore(Timestamp),
}

impl Enc {
    /// Appends the WAL form of this op.
    fn write_to(&self, out: &mut Vec<u8>) {
        fn bytes(out: &mut Vec<u8>, b: &[u8]) {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        }
        match self {
            Enc::Put { t, key, value } => {
                out.push(0);
                out.push(*t as u8);
                bytes(out, key);
                bytes(out, value);
            }
            Enc::Del { t, key } => {
                out.push(1);
                out.push(*t as u8);
                bytes(out, key);
            }
            Enc::Service { json, .. } => {
                out.push(2);
                bytes(out, json);
            }
            Enc::PurgeIdempotencyBefore(t) => {
                out.push(3);
                out.extend_from_slice(&t.ms().to_le_bytes());
            }
        }
    }

    /// Parses a WAL payload back into ops.
    fn read_all(mut b: &[u8]) -> Result<Vec<Enc>, StoreError> {
        fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], StoreError> {
            if b.len() < n {
                return Err(StoreError("truncated WAL op".into()));
            }
            let (h, t) = b.split_at(n);
            *b = t;
            Ok(h)
        }
        fn bytes(b: &mut &[u8]) -> Result<Vec<u8>, StoreError> {
            let n = take(b, 4)?;
            let n = u32::from_le_bytes([n[0], n[1], n[2], n[3]]) as usize;
            Ok(take(b, n)?.to_vec())
        }
        fn table(b: &mut &[u8]) -> Result<usize, StoreError> {
            let t = take(b, 1)?[0] as usize;
            if t >= ALL_TABLES.len() {
                return Err(StoreError(format!("unknown table {t} in WAL")));
            }
            Ok(t)
        }
        let mut out = Vec::new();
        while !b.is_empty() {
            let tag = take(&mut b, 1)?[0];
            out.push(match tag {
                0 => {
                    let t = table(&mut b)?;
                    let key = bytes(&mut b)?;
                    Enc::Put {
                        t,
                        key,
                        value: bytes(&mut b)?,
                    }
                }
                1 => {
                    let t = table(&mut b)?;
                    Enc::Del {
                        t,
                        key: bytes(&mut b)?,
                    }
                }
                2 => {
                    let json = bytes(&mut b)?;
                    Enc::Service {
                        svc: Box::new(from_json(&json)?),
                        json,
                    }
                }
                3 => {
                    let v = take(&mut b, 8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(v);
                    Enc::PurgeIdempotencyBefore(Timestamp(i64::from_le_bytes(a)))
                }
                t => return Err(StoreError(format!("unknown WAL op {t}"))),
            });
        }
        Ok(out)
    }
}

struct Job {
    ops: Vec<Enc>,
    /// The WAL form of `ops`.
    wal: Vec<u8>,
    events: Vec<Event>,
    done: Done,
}

/// A group that is durable in the WAL and waits to be applied to redb.
struct Group {
    jobs: Vec<Job>,
    segment: u64,
}

/// The embedded ledger. Cheap to share behind an `Arc`.
pub struct EmbeddedLedger {
    db: Arc<Database>,
    tx: mpsc::Sender<Job>,
    events: broadcast::Sender<Arc<Event>>,
    /// Set when either writer stage hit an I/O error; all later writes are refused.
    failed: Arc<std::sync::atomic::AtomicBool>,
    /// Becomes `true` once the writer threads have finished and let go of the database file.
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

impl EmbeddedLedger {
    /// Opens (or creates) `ledger.redb` in `dir` and starts the writer thread.
    /// Fails if another process has the file open.
    pub fn open(dir: &Path, opts: EmbeddedOptions) -> Result<Arc<EmbeddedLedger>, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError(format!("cannot create data dir {}: {e}", dir.display())))?;
        let path = dir.join("ledger.redb");
        let db = Database::builder()
            .set_cache_size(opts.cache_bytes)
            .create(&path)
            .map_err(|e| {
                StoreError(format!(
                    "cannot open {} (is another `ipay` process using this data dir?): {e}",
                    path.display()
                ))
            })?;
        let txn = db.begin_write().map_err(se)?;
        for t in ALL_TABLES {
            txn.open_table(t).map_err(se)?;
        }
        txn.commit().map_err(se)?;
        let wal_dir = dir.join("wal");
        let replayed = replay_wal(&db, &wal_dir)?;
        if replayed > 0 {
            tracing::info!(
                groups = replayed,
                "replayed write-ahead log into the ledger"
            );
        }
        let wal = wal::Wal::create(&wal_dir, opts.wal_segment_bytes)?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel(opts.queue_capacity.max(1));
        let (events, _) = broadcast::channel(16_384);
        let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // A small bound: the WAL stage may run at most a few groups ahead of the apply stage.
        let (group_tx, group_rx) = std::sync::mpsc::sync_channel::<Group>(4);
        let max_batch = opts.max_batch.max(1);
        let f1 = failed.clone();
        std::thread::Builder::new()
            .name("ledger-wal".into())
            .spawn(move || wal_stage(wal, rx, group_tx, max_batch, f1))
            .map_err(se)?;
        let (apply_db, apply_events, f2) = (db.clone(), events.clone(), failed.clone());
        let (closed_tx, closed) = tokio::sync::watch::channel(false);
        let interval = opts.checkpoint_interval;
        let checkpoint_bytes = opts.checkpoint_bytes.max(1);
        std::thread::Builder::new()
            .name("ledger-apply".into())
            .spawn(move || {
                apply_stage(
                    apply_db,
                    wal_dir,
                    group_rx,
                    apply_events,
                    (interval, checkpoint_bytes),
                    f2,
                );
                let _ = closed_tx.send(true);
            })
            .map_err(se)?;
        Ok(Arc::new(EmbeddedLedger {
            db,
            tx,
            events,
            failed,
            closed,
            hooks: Default::default(),
        }))
    }

    fn encode_batch(batch: WriteBatch, done: Done) -> Result<Job, (StoreError, Done)> {
        let mut ops = Vec::with_capacity(batch.ops.len() * 3);
        let mut events = Vec::new();
        for op in batch.ops {
            if let Err(e) = encode(op, &mut ops, &mut events) {
                return Err((e, done));
            }
        }
        let size = ops
            .iter()
            .map(|o| match o {
                Enc::Put { key, value, .. } => 10 + key.len() + value.len(),
                _ => 64,
            })
            .sum();
        let mut wal = Vec::with_capacity(size);
        for op in &ops {
            op.write_to(&mut wal);
        }
        Ok(Job {
            ops,
            wal,
            events,
            done,
        })
    }

    fn stopped() -> StoreError {
        StoreError("the ledger stopped after an I/O error; restart the engine".into())
    }

    /// Encodes and queues a batch; on failure hands `done` back untouched.
    fn enqueue(&self, batch: WriteBatch, done: Done) -> Result<(), (StoreError, Done)> {
        if self.failed.load(std::sync::atomic::Ordering::Relaxed) {
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

    /// Resolves to `true` once the last handle to this ledger is gone and its writer threads
    /// have checkpointed and released the database file (so it can be opened again).
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

    fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let txn = self.db.begin_read().map_err(se)?;
        f(&txn)
    }

    fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        table: Table,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        self.read(|txn| {
            let t = txn.open_table(table).map_err(se)?;
            match t.get(key).map_err(se)? {
                Some(v) => Ok(Some(from_json(v.value())?)),
                None => Ok(None),
            }
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(se)?
    }
}

/// Applies whatever the WAL still holds (groups acknowledged or not yet checkpointed before
/// the last stop) and makes it durable in redb; then the segments are deleted.
fn replay_wal(db: &Database, wal_dir: &Path) -> Result<usize, StoreError> {
    let segments = wal::list_segments(wal_dir)?;
    if segments.is_empty() {
        return Ok(0);
    }
    let frames = wal::read_frames(wal_dir, &segments)?;
    let mut txn = db.begin_write().map_err(se)?;
    txn.set_durability(Durability::Immediate).map_err(se)?;
    {
        let mut w = Writer::open(&txn)?;
        for f in &frames {
            for op in Enc::read_all(f)? {
                w.apply(&op)?;
            }
        }
    }
    txn.commit().map_err(se)?;
    if let Some(last) = segments.last() {
        wal::delete_segments_before(wal_dir, last + 1)?;
    }
    Ok(frames.len())
}

fn fail_all(jobs: Vec<Job>, e: &StoreError) {
    for job in jobs {
        job.done.finish(Err(e.clone()));
    }
}

fn wal_stage(
    mut wal: wal::Wal,
    mut rx: mpsc::Receiver<Job>,
    groups: std::sync::mpsc::SyncSender<Group>,
    max_batch: usize,
    failed: Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    let mut payload = Vec::with_capacity(1 << 20);
    let mut scratch = Vec::with_capacity(1 << 20);
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = Vec::with_capacity(64);
        jobs.push(first);
        while jobs.len() < max_batch {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        if failed.load(Ordering::SeqCst) {
            fail_all(
                jobs,
                &StoreError("the ledger stopped after an I/O error; restart the engine".into()),
            );
            continue;
        }
        payload.clear();
        for j in &jobs {
            payload.extend_from_slice(&j.wal);
        }
        let started = std::time::Instant::now();
        match wal.append_durable(&payload, &mut scratch) {
            Ok(segment) => {
                metrics::histogram!("ipay_ledger_wal_sync_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::histogram!("ipay_ledger_group_size").record(jobs.len() as f64);
                if let Err(std::sync::mpsc::SendError(g)) = groups.send(Group { jobs, segment }) {
                    fail_all(g.jobs, &StoreError("ledger apply stage stopped".into()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "WAL append failed; the ledger stops taking writes");
                failed.store(true, Ordering::SeqCst);
                fail_all(jobs, &e);
            }
        }
    }
}

fn apply_stage(
    db: Arc<Database>,
    wal_dir: std::path::PathBuf,
    groups: std::sync::mpsc::Receiver<Group>,
    events: broadcast::Sender<Arc<Event>>,
    (checkpoint_interval, checkpoint_bytes): (std::time::Duration, u64),
    failed: Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    let mut last_checkpoint = std::time::Instant::now();
    let mut dirty_segment: Option<u64> = None;
    let mut dirty_bytes: u64 = 0;
    loop {
        let group = match groups.recv_timeout(checkpoint_interval) {
            Ok(g) => Some(g),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                if let Some(seg) = dirty_segment {
                    let _ = checkpoint(&db, &wal_dir, seg + 1);
                }
                return;
            }
        };
        if let Some(Group { jobs, segment }) = group {
            if failed.load(Ordering::SeqCst) {
                fail_all(
                    jobs,
                    &StoreError("the ledger stopped after an I/O error; restart the engine".into()),
                );
                continue;
            }
            let started = std::time::Instant::now();
            match apply_group(&db, &jobs) {
                Ok(()) => {
                    metrics::histogram!("ipay_ledger_commit_seconds")
                        .record(started.elapsed().as_secs_f64());
                    dirty_segment = Some(segment);
                    dirty_bytes += jobs.iter().map(|j| j.wal.len() as u64).sum::<u64>();
                    for job in jobs {
                        job.done.finish(Ok(()));
                        if events.receiver_count() > 0 {
                            for ev in job.events {
                                let _ = events.send(Arc::new(ev));
                            }
                        }
                    }
                }
                Err(e) => {
                    // The group is durable in the WAL but not applied: stop, and let a restart
                    // replay it rather than answer anything now.
                    tracing::error!(error = %e, "ledger apply failed; the ledger stops taking writes");
                    failed.store(true, Ordering::SeqCst);
                    fail_all(jobs, &e);
                    continue;
                }
            }
        }
        if let Some(seg) = dirty_segment
            && (last_checkpoint.elapsed() >= checkpoint_interval || dirty_bytes >= checkpoint_bytes)
        {
            {
                // Everything applied so far came from segments <= seg; those before `seg` are
                // complete, so they can go once redb holds their effects durably.
                match checkpoint(&db, &wal_dir, seg) {
                    // Nothing new to make durable until the next group is applied.
                    Ok(()) => {
                        dirty_segment = None;
                        dirty_bytes = 0;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "checkpoint failed; the ledger stops taking writes");
                        failed.store(true, Ordering::SeqCst);
                    }
                }
                last_checkpoint = std::time::Instant::now();
            }
        }
    }
}

fn apply_group(db: &Database, jobs: &[Job]) -> Result<(), StoreError> {
    let mut txn = db.begin_write().map_err(se)?;
    txn.set_durability(Durability::None).map_err(se)?;
    {
        let mut w = Writer::open(&txn)?;
        for job in jobs {
            for op in &job.ops {
                w.apply(op)?;
            }
        }
    }
    txn.commit().map_err(se)
}

/// Makes every applied group durable in redb, then deletes WAL segments before `keep_from`.
fn checkpoint(db: &Database, wal_dir: &Path, keep_from: u64) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let mut txn = db.begin_write().map_err(se)?;
    txn.set_durability(Durability::Immediate).map_err(se)?;
    txn.commit().map_err(se)?;
    wal::delete_segments_before(wal_dir, keep_from)?;
    metrics::histogram!("ipay_ledger_checkpoint_seconds").record(started.elapsed().as_secs_f64());
    Ok(())
}

struct Writer<'t> {
    tables: Vec<redb::Table<'t, Bytes<'static>, Bytes<'static>>>,
}

impl<'t> Writer<'t> {
    fn open(txn: &'t redb::WriteTransaction) -> Result<Self, StoreError> {
        let tables = ALL_TABLES
            .iter()
            .map(|t| txn.open_table(*t).map_err(se))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Writer { tables })
    }

    fn apply(&mut self, op: &Enc) -> Result<(), StoreError> {
        match op {
            Enc::Put { t, key, value } => {
                self.tables[*t].insert(&key[..], &value[..]).map_err(se)?;
            }
            Enc::Del { t, key } => {
                self.tables[*t].remove(&key[..]).map_err(se)?;
            }
            Enc::Service { svc, json } => {
                let id = svc.id.to_bytes();
                let old: Option<Service> = match self.tables[T_SERVICES].get(&id[..]).map_err(se)? {
                    Some(v) => Some(from_json(v.value())?),
                    None => None,
                };
                let mk = mkey(svc.merchant_id, svc.livemode);
                if let Some(old) = old {
                    let mut nk = mk.to_vec();
                    nk.extend_from_slice(old.name.as_bytes());
                    self.tables[T_SERVICE_NAMES].remove(&nk[..]).map_err(se)?;
                }
                self.tables[T_SERVICES]
                    .insert(&id[..], &json[..])
                    .map_err(se)?;
                let by_m = mkey_obj(svc.merchant_id, svc.livemode, id);
                if svc.status == crate::model::ServiceStatus::Deleted {
                    self.tables[T_SERVICES_BY_MERCHANT]
                        .remove(&by_m[..])
                        .map_err(se)?;
                } else {
                    self.tables[T_SERVICES_BY_MERCHANT]
                        .insert(&by_m[..], &[][..])
                        .map_err(se)?;
                    let mut nk = mk.to_vec();
                    nk.extend_from_slice(svc.name.as_bytes());
                    self.tables[T_SERVICE_NAMES]
                        .insert(&nk[..], &id[..])
                        .map_err(se)?;
                }
            }
            Enc::PurgeIdempotencyBefore(t) => {
                let end = (t.ms().max(0) as u64).to_be_bytes();
                let doomed: Vec<Vec<u8>> = self.tables[T_IDEMPOTENCY_BY_TIME]
                    .range::<&[u8]>(..&end[..])
                    .map_err(se)?
                    .take(10_000)
                    .filter_map(|r| r.ok().map(|(k, _)| k.value().to_vec()))
                    .collect();
                for k in doomed {
                    self.tables[T_IDEMPOTENCY_BY_TIME]
                        .remove(&k[..])
                        .map_err(se)?;
                    self.tables[T_IDEMPOTENCY].remove(&k[8..]).map_err(se)?;
                }
            }
        }
        Ok(())
    }
}

/// Pages through an index whose keys are `merchant(16) | mode(1) | id(16)`, filtering on the
/// index value, loading only the records of the requested page.
/// A range over a `merchant | mode | id` index and the table its ids point into.
struct Scan<'a> {
    index: Table,
    records: Table,
    lo: &'a [u8],
    hi: &'a [u8],
    descending: bool,
}

fn scan_index<T: for<'de> Deserialize<'de>>(
    txn: &redb::ReadTransaction,
    scan: Scan<'_>,
    page: PageRequest,
    keep: impl Fn(&[u8], &[u8]) -> bool,
) -> Result<Page<T>, StoreError> {
    let idx = txn.open_table(scan.index).map_err(se)?;
    let rec = txn.open_table(scan.records).map_err(se)?;
    let range = idx.range::<&[u8]>(scan.lo..scan.hi).map_err(se)?;
    let descending = scan.descending;
    let mut total = 0u64;
    let mut data = Vec::with_capacity(page.limit.min(1000));
    let mut visit = |k: &[u8], v: &[u8]| -> Result<(), StoreError> {
        if !keep(k, v) {
            return Ok(());
        }
        if total as usize >= page.offset && data.len() < page.limit {
            let id = &k[17..33];
            if let Some(r) = rec.get(id).map_err(se)? {
                data.push(from_json(r.value())?);
            }
        }
        total += 1;
        Ok(())
    };
    if descending {
        for item in range.rev() {
            let (k, v) = item.map_err(se)?;
            visit(k.value(), v.value())?;
        }
    } else {
        for item in range {
            let (k, v) = item.map_err(se)?;
            visit(k.value(), v.value())?;
        }
    }
    Ok(Page { data, total })
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
        !self.failed.load(std::sync::atomic::Ordering::Relaxed)
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
        self.get_json(MERCHANTS, &id.to_bytes())
    }

    async fn get_api_key(&self, id: ApiKeyId) -> Result<Option<ApiKey>, StoreError> {
        self.get_json(API_KEYS, &id.to_bytes())
    }

    async fn find_api_key_by_hash(&self, hash: [u8; 32]) -> Result<Option<ApiKey>, StoreError> {
        self.read(|txn| {
            let h = txn.open_table(API_KEY_HASH).map_err(se)?;
            let Some(id) = h.get(&hash[..]).map_err(se)? else {
                return Ok(None);
            };
            let keys = txn.open_table(API_KEYS).map_err(se)?;
            match keys.get(id.value()).map_err(se)? {
                Some(v) => Ok(Some(from_json(v.value())?)),
                None => Ok(None),
            }
        })
    }

    async fn list_api_keys(
        &self,
        merchant: MerchantId,
        livemode: bool,
    ) -> Result<Vec<ApiKey>, StoreError> {
        let lo = mkey(merchant, livemode);
        let hi = prefix_end(&lo, 34);
        self.read(|txn| {
            let page = PageRequest {
                limit: usize::MAX,
                offset: 0,
            };
            scan_index(
                txn,
                Scan {
                    index: KEYS_BY_MERCHANT,
                    records: API_KEYS,
                    lo: &lo,
                    hi: &hi,
                    descending: true,
                },
                page,
                |_, _| true,
            )
            .map(|p| p.data)
        })
    }

    async fn get_service(&self, id: ServiceId) -> Result<Option<Service>, StoreError> {
        self.get_json(SERVICES, &id.to_bytes())
    }

    async fn find_service_by_name(
        &self,
        merchant: MerchantId,
        livemode: bool,
        name: &str,
    ) -> Result<Option<Service>, StoreError> {
        let mut nk = mkey(merchant, livemode).to_vec();
        nk.extend_from_slice(name.as_bytes());
        self.read(|txn| {
            let names = txn.open_table(SERVICE_NAMES).map_err(se)?;
            let Some(id) = names.get(&nk[..]).map_err(se)? else {
                return Ok(None);
            };
            let svcs = txn.open_table(SERVICES).map_err(se)?;
            match svcs.get(id.value()).map_err(se)? {
                Some(v) => Ok(Some(from_json(v.value())?)),
                None => Ok(None),
            }
        })
    }

    async fn list_services(
        &self,
        merchant: MerchantId,
        livemode: bool,
        page: PageRequest,
    ) -> Result<Page<Service>, StoreError> {
        let lo = mkey(merchant, livemode);
        let hi = prefix_end(&lo, 34);
        self.read(|txn| {
            scan_index(
                txn,
                Scan {
                    index: SERVICES_BY_MERCHANT,
                    records: SERVICES,
                    lo: &lo,
                    hi: &hi,
                    descending: true,
                },
                page,
                |_, _| true,
            )
        })
    }

    async fn get_intent(&self, id: PaymentIntentId) -> Result<Option<PaymentIntent>, StoreError> {
        self.get_json(INTENTS, &id.to_bytes())
    }

    async fn list_intents(
        &self,
        merchant: MerchantId,
        livemode: bool,
        q: &IntentQuery,
    ) -> Result<Page<PaymentIntent>, StoreError> {
        let q = q.clone();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(se)?;
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
            scan_index(
                &txn,
                Scan {
                    index: INTENTS_BY_MERCHANT,
                    records: INTENTS,
                    lo: &lo,
                    hi: &hi,
                    descending: q.descending,
                },
                q.page,
                |_, v| {
                    status.is_none_or(|s| v.first() == Some(&s))
                        && channel
                            .as_deref()
                            .is_none_or(|c| v.get(1..) == Some(c.as_bytes()))
                },
            )
        })
        .await
    }

    async fn get_refund(&self, id: RefundId) -> Result<Option<Refund>, StoreError> {
        self.get_json(REFUNDS, &id.to_bytes())
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
                self.read(|txn| {
                    scan_index(
                        txn,
                        Scan {
                            index: REFUNDS_BY_MERCHANT,
                            records: REFUNDS,
                            lo: &lo,
                            hi: &hi,
                            descending: true,
                        },
                        page,
                        |_, _| true,
                    )
                })
            }
            Some(pi) => self.read(|txn| {
                // Refunds of one intent are few; load them all and page in memory.
                let idx = txn.open_table(REFUNDS_BY_INTENT).map_err(se)?;
                let rec = txn.open_table(REFUNDS).map_err(se)?;
                let lo = pi.to_bytes();
                let hi = prefix_end(&lo, 32);
                let mut all: Vec<Refund> = Vec::new();
                for item in idx.range::<&[u8]>(&lo[..]..&hi[..]).map_err(se)?.rev() {
                    let (k, _) = item.map_err(se)?;
                    let id = RefundId::from_u128(u128_at(k.value(), 16));
                    if let Some(v) = rec.get(&id.to_bytes()[..]).map_err(se)? {
                        let r: Refund = from_json(v.value())?;
                        if r.merchant_id == merchant && r.livemode == livemode {
                            all.push(r);
                        }
                    }
                }
                let total = all.len() as u64;
                let data = all.into_iter().skip(page.offset).take(page.limit).collect();
                Ok(Page { data, total })
            }),
        }
    }

    async fn get_event(&self, id: EventId) -> Result<Option<Event>, StoreError> {
        self.get_json(EVENTS, &id.to_bytes())
    }

    async fn list_events(
        &self,
        merchant: MerchantId,
        livemode: bool,
        q: &EventQuery,
    ) -> Result<Page<Event>, StoreError> {
        let q = q.clone();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(se)?;
            if let Some(obj) = &q.object_id {
                let idx = txn.open_table(EVENTS_BY_OBJECT).map_err(se)?;
                let rec = txn.open_table(EVENTS).map_err(se)?;
                let lo = object_key(obj, None);
                let hi = prefix_end(&lo, lo.len() + 16);
                let mut all = Vec::new();
                for item in idx.range::<&[u8]>(&lo[..]..&hi[..]).map_err(se)? {
                    let (k, _) = item.map_err(se)?;
                    let kv = k.value();
                    let id = EventId::from_u128(u128_at(kv, kv.len() - 16));
                    if let Some(v) = rec.get(&id.to_bytes()[..]).map_err(se)? {
                        let e: Event = from_json(v.value())?;
                        if e.merchant_id == merchant
                            && e.livemode == livemode
                            && q.event_type.as_deref().is_none_or(|t| t == e.event_type)
                        {
                            all.push(e);
                        }
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
            scan_index(
                &txn,
                Scan {
                    index: EVENTS_BY_MERCHANT,
                    records: EVENTS,
                    lo: &lo,
                    hi: &hi,
                    descending: true,
                },
                q.page,
                |_, v| ty.as_deref().is_none_or(|t| t.as_bytes() == v),
            )
        })
        .await
    }

    async fn get_idempotency(&self, scope: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.get_json(IDEMPOTENCY, scope.as_bytes())
    }

    async fn get_record(&self, kind: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_names(&[kind])?;
        check_key(key)?;
        self.read(|txn| {
            let t = txn.open_table(RECORDS).map_err(se)?;
            Ok(t.get(&record_key(kind, key)[..])
                .map_err(se)?
                .map(|v| v.value().to_vec()))
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
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(se)?;
            let t = txn.open_table(ENTRIES).map_err(se)?;
            let r = t
                .range::<&[u8]>((lo.as_ref().map(|v| &v[..]), up.as_ref().map(|v| &v[..])))
                .map_err(se)?;
            let mut out = Vec::with_capacity(limit.min(1024));
            let mut push = |k: &[u8], v: &[u8]| {
                let sort = String::from_utf8_lossy(&k[plen.min(k.len())..]).into_owned();
                out.push((sort, v.to_vec()));
            };
            if descending {
                for item in r.rev().take(limit) {
                    let (k, v) = item.map_err(se)?;
                    push(k.value(), v.value());
                }
            } else {
                for item in r.take(limit) {
                    let (k, v) = item.map_err(se)?;
                    push(k.value(), v.value());
                }
            }
            Ok(out)
        })
        .await
    }

    async fn pending_expiries(&self) -> Result<Vec<(PaymentIntentId, Timestamp)>, StoreError> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(se)?;
            let t = txn.open_table(PENDING_EXPIRY).map_err(se)?;
            let mut out = Vec::with_capacity(t.len().map_err(se)? as usize);
            for item in t.iter().map_err(se)? {
                let (k, _) = item.map_err(se)?;
                let k = k.value();
                let mut ms = [0u8; 8];
                ms.copy_from_slice(&k[..8]);
                out.push((
                    PaymentIntentId::from_u128(u128_at(k, 8)),
                    Timestamp(u64::from_be_bytes(ms) as i64),
                ));
            }
            Ok(out)
        })
        .await
    }

    async fn count_intents_by_status(&self) -> Result<StatusCounts, StoreError> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(se)?;
            let t = txn.open_table(INTENTS_BY_MERCHANT).map_err(se)?;
            let mut counts = [0u64; 5];
            for item in t.iter().map_err(se)? {
                let (_, v) = item.map_err(se)?;
                if let Some(s) = v.value().first().and_then(|s| IntentStatus::from_u8(*s)) {
                    counts[s.to_u8() as usize] += 1;
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
        use redb::TableHandle;
        let names = [
            (T_MERCHANTS, "merchants"),
            (T_API_KEYS, "api_keys"),
            (T_SERVICE_NAMES, "service_names"),
            (T_INTENTS, "intents"),
            (T_PENDING_EXPIRY, "pending_expiry"),
            (T_EVENTS_BY_OBJECT, "events_by_object"),
            (T_IDEMPOTENCY_BY_TIME, "idempotency_by_time"),
        ];
        for (i, n) in names {
            assert_eq!(ALL_TABLES[i].name(), n);
        }
    }

    #[test]
    fn wal_ops_round_trip() {
        let ops = vec![
            Enc::Put {
                t: T_INTENTS,
                key: vec![1, 2, 3],
                value: b"{\"a\":1}".to_vec(),
            },
            Enc::Del {
                t: T_PENDING_EXPIRY,
                key: vec![9; 24],
            },
            Enc::PurgeIdempotencyBefore(Timestamp(1_234)),
        ];
        let mut bytes = Vec::new();
        for op in &ops {
            op.write_to(&mut bytes);
        }
        let back = Enc::read_all(&bytes).unwrap();
        assert_eq!(back.len(), 3);
        assert!(
            matches!(&back[0], Enc::Put { t, key, value } if *t == T_INTENTS && key == &vec![1, 2, 3] && value == b"{\"a\":1}")
        );
        assert!(
            matches!(&back[1], Enc::Del { t, key } if *t == T_PENDING_EXPIRY && key.len() == 24)
        );
        assert!(matches!(
            &back[2],
            Enc::PurgeIdempotencyBefore(Timestamp(1_234))
        ));
        assert!(Enc::read_all(&bytes[..bytes.len() - 1]).is_err());
        assert!(Enc::read_all(&[0, 200]).is_err());
    }
}
