//! Embedded [`Ledger`]: one redb file in the data directory, written by a single writer thread
//! with group commit.
//!
//! Every submitted batch goes onto a bounded queue. The writer takes everything queued (up to
//! `max_batch`), applies it in one redb transaction with `Durability::Immediate` (one fsync for
//! the whole group), then answers every ticket. Under load many batches share one fsync; when
//! idle a single batch commits at once. Reads use redb's MVCC read transactions and never wait
//! for the writer.
//!
//! Secondary indexes are kept in the same transaction as the records they index, so a crash
//! can never leave an index pointing at nothing.

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

const ALL_TABLES: [Table; 18] = [
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
];

/// Tuning for the embedded ledger.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Batches waiting for the writer before `submit` refuses (back-pressure → 503).
    pub queue_capacity: usize,
    /// Most batches folded into one transaction.
    pub max_batch: usize,
    /// redb page cache, bytes.
    pub cache_bytes: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            queue_capacity: 65_536,
            max_batch: 2_048,
            cache_bytes: 256 << 20,
        }
    }
}

struct Job {
    batch: WriteBatch,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The embedded ledger. Cheap to share behind an `Arc`.
pub struct EmbeddedLedger {
    db: Arc<Database>,
    tx: mpsc::Sender<Job>,
    events: broadcast::Sender<Arc<Event>>,
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
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel(opts.queue_capacity.max(1));
        let (events, _) = broadcast::channel(16_384);
        let writer_db = db.clone();
        let writer_events = events.clone();
        let max_batch = opts.max_batch.max(1);
        std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || writer_loop(writer_db, rx, writer_events, max_batch))
            .map_err(se)?;
        Ok(Arc::new(EmbeddedLedger { db, tx, events }))
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

fn writer_loop(
    db: Arc<Database>,
    mut rx: mpsc::Receiver<Job>,
    events: broadcast::Sender<Arc<Event>>,
    max_batch: usize,
) {
    let mut jobs: Vec<Job> = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        jobs.push(first);
        while jobs.len() < max_batch {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let result = commit_group(&db, &jobs);
        metrics::histogram!("ipay_ledger_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("ipay_ledger_group_size").record(jobs.len() as f64);
        match result {
            Ok(()) => {
                for job in jobs.drain(..) {
                    for ev in job.batch.events() {
                        let _ = events.send(Arc::new(ev.clone()));
                    }
                    let _ = job.done.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, batches = jobs.len(), "ledger commit failed");
                for job in jobs.drain(..) {
                    let _ = job.done.send(Err(e.clone()));
                }
            }
        }
    }
}

fn commit_group(db: &Database, jobs: &[Job]) -> Result<(), StoreError> {
    let mut txn = db.begin_write().map_err(se)?;
    txn.set_durability(Durability::Immediate).map_err(se)?;
    {
        let mut w = Writer::open(&txn)?;
        for job in jobs {
            for op in &job.batch.ops {
                w.apply(op)?;
            }
        }
    }
    txn.commit().map_err(se)
}

struct Writer<'t> {
    merchants: redb::Table<'t, Bytes<'static>, Bytes<'static>>,
    api_keys: redb::Table<'t, Bytes<'static>, Bytes<'static>>,
    api_key_hash: redb::Table<'t, Bytes<'static>, Bytes<'static>>,
    keys_by_merchant: redb::Table<'t, Bytes<'static>, Bytes<'static>>,
    services: redb::Table<'t, Bytes<'static>, Bytes<'static>>,
    services_by_merchant: redb::Table<'t, Bytes<'static>, Bytes<'static>>,
    service_names: redb::Table<'t, Bytes<'static>, Bytes<'static>>,
    intents: redb::Table<'t, Bytes<'static>, Bytes<'static>>,
    intents_by_merchant: redb::Table<'t, Bytes<'static>, Bytes<'static>>,
    pending_expiry: redb::Table<'t, Bytes<'static>, Bytes<'static>>,
    refunds: redb::Table<'t, Bytes<'static>, Bytes<'static>>,
    refunds_by_intent: redb::Table<'t, Bytes<'static>, Bytes<'static>>,
    refunds_by_merchant: redb::Table<'t, Bytes<'static>, Bytes<'static>>,
    events: redb::Table<'t, Bytes<'static>, Bytes<'static>>,
    events_by_merchant: redb::Table<'t, Bytes<'static>, Bytes<'static>>,
    events_by_object: redb::Table<'t, Bytes<'static>, Bytes<'static>>,
    idempotency: redb::Table<'t, Bytes<'static>, Bytes<'static>>,
    idempotency_by_time: redb::Table<'t, Bytes<'static>, Bytes<'static>>,
}

impl<'t> Writer<'t> {
    fn open(txn: &'t redb::WriteTransaction) -> Result<Self, StoreError> {
        Ok(Writer {
            merchants: txn.open_table(MERCHANTS).map_err(se)?,
            api_keys: txn.open_table(API_KEYS).map_err(se)?,
            api_key_hash: txn.open_table(API_KEY_HASH).map_err(se)?,
            keys_by_merchant: txn.open_table(KEYS_BY_MERCHANT).map_err(se)?,
            services: txn.open_table(SERVICES).map_err(se)?,
            services_by_merchant: txn.open_table(SERVICES_BY_MERCHANT).map_err(se)?,
            service_names: txn.open_table(SERVICE_NAMES).map_err(se)?,
            intents: txn.open_table(INTENTS).map_err(se)?,
            intents_by_merchant: txn.open_table(INTENTS_BY_MERCHANT).map_err(se)?,
            pending_expiry: txn.open_table(PENDING_EXPIRY).map_err(se)?,
            refunds: txn.open_table(REFUNDS).map_err(se)?,
            refunds_by_intent: txn.open_table(REFUNDS_BY_INTENT).map_err(se)?,
            refunds_by_merchant: txn.open_table(REFUNDS_BY_MERCHANT).map_err(se)?,
            events: txn.open_table(EVENTS).map_err(se)?,
            events_by_merchant: txn.open_table(EVENTS_BY_MERCHANT).map_err(se)?,
            events_by_object: txn.open_table(EVENTS_BY_OBJECT).map_err(se)?,
            idempotency: txn.open_table(IDEMPOTENCY).map_err(se)?,
            idempotency_by_time: txn.open_table(IDEMPOTENCY_BY_TIME).map_err(se)?,
        })
    }

    fn apply(&mut self, op: &WriteOp) -> Result<(), StoreError> {
        match op {
            WriteOp::PutMerchant(m) => {
                self.merchants
                    .insert(&m.id.to_bytes()[..], &json(m)?[..])
                    .map_err(se)?;
            }
            WriteOp::PutApiKey { key, secret_hash } => {
                let id = key.id.to_bytes();
                self.api_keys.insert(&id[..], &json(key)?[..]).map_err(se)?;
                if let Some(h) = secret_hash {
                    self.api_key_hash.insert(&h[..], &id[..]).map_err(se)?;
                }
                self.keys_by_merchant
                    .insert(&mkey_obj(key.merchant_id, key.livemode, id)[..], &[][..])
                    .map_err(se)?;
            }
            WriteOp::PutService(s) => {
                let id = s.id.to_bytes();
                let old: Option<Service> = match self.services.get(&id[..]).map_err(se)? {
                    Some(v) => Some(from_json(v.value())?),
                    None => None,
                };
                let mk = mkey(s.merchant_id, s.livemode);
                if let Some(old) = old {
                    let mut nk = mk.to_vec();
                    nk.extend_from_slice(old.name.as_bytes());
                    self.service_names.remove(&nk[..]).map_err(se)?;
                }
                self.services.insert(&id[..], &json(s)?[..]).map_err(se)?;
                let by_m = mkey_obj(s.merchant_id, s.livemode, id);
                if s.status == crate::model::ServiceStatus::Deleted {
                    self.services_by_merchant.remove(&by_m[..]).map_err(se)?;
                } else {
                    self.services_by_merchant
                        .insert(&by_m[..], &[][..])
                        .map_err(se)?;
                    let mut nk = mk.to_vec();
                    nk.extend_from_slice(s.name.as_bytes());
                    self.service_names.insert(&nk[..], &id[..]).map_err(se)?;
                }
            }
            WriteOp::PutIntent(pi) => {
                let id = pi.id.to_bytes();
                self.intents.insert(&id[..], &json(pi)?[..]).map_err(se)?;
                let mut summary = Vec::with_capacity(1 + pi.channel.len());
                summary.push(pi.status.to_u8());
                summary.extend_from_slice(pi.channel.as_bytes());
                self.intents_by_merchant
                    .insert(&mkey_obj(pi.merchant_id, pi.livemode, id)[..], &summary[..])
                    .map_err(se)?;
                let ek = expiry_key(pi.expires_at, pi.id);
                if pi.status == IntentStatus::Pending {
                    self.pending_expiry.insert(&ek[..], &[][..]).map_err(se)?;
                } else {
                    self.pending_expiry.remove(&ek[..]).map_err(se)?;
                }
            }
            WriteOp::PutRefund(r) => {
                let id = r.id.to_bytes();
                self.refunds.insert(&id[..], &json(r)?[..]).map_err(se)?;
                let mut k = [0u8; 32];
                k[..16].copy_from_slice(&r.payment_intent.to_bytes());
                k[16..].copy_from_slice(&id);
                self.refunds_by_intent.insert(&k[..], &[][..]).map_err(se)?;
                self.refunds_by_merchant
                    .insert(&mkey_obj(r.merchant_id, r.livemode, id)[..], &[][..])
                    .map_err(se)?;
            }
            WriteOp::PutEvent(e) => {
                let id = e.id.to_bytes();
                self.events.insert(&id[..], &json(e)?[..]).map_err(se)?;
                self.events_by_merchant
                    .insert(
                        &mkey_obj(e.merchant_id, e.livemode, id)[..],
                        e.event_type.as_bytes(),
                    )
                    .map_err(se)?;
                self.events_by_object
                    .insert(&object_key(&e.object_id, Some(e.id))[..], &[][..])
                    .map_err(se)?;
            }
            WriteOp::PutIdempotency { scope, record } => {
                self.idempotency
                    .insert(scope.as_bytes(), &json(record)?[..])
                    .map_err(se)?;
                let mut tk = (record.created.ms().max(0) as u64).to_be_bytes().to_vec();
                tk.extend_from_slice(scope.as_bytes());
                self.idempotency_by_time
                    .insert(&tk[..], &[][..])
                    .map_err(se)?;
            }
            WriteOp::PurgeIdempotencyBefore(t) => {
                let end = (t.ms().max(0) as u64).to_be_bytes();
                let doomed: Vec<Vec<u8>> = self
                    .idempotency_by_time
                    .range::<&[u8]>(..&end[..])
                    .map_err(se)?
                    .take(10_000)
                    .filter_map(|r| r.ok().map(|(k, _)| k.value().to_vec()))
                    .collect();
                for k in doomed {
                    self.idempotency_by_time.remove(&k[..]).map_err(se)?;
                    self.idempotency.remove(&k[8..]).map_err(se)?;
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
    fn submit(&self, batch: WriteBatch) -> CommitTicket {
        let (done, rx) = oneshot::channel();
        match self.tx.try_send(Job { batch, done }) {
            Ok(()) => CommitTicket::waiting(rx),
            Err(mpsc::error::TrySendError::Full(_)) => {
                CommitTicket::ready(Err(StoreError("ledger write queue is full".into())))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                CommitTicket::ready(Err(StoreError("ledger writer stopped".into())))
            }
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
