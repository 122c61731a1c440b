//! The storage side of the simulated world: the seed's plan of journal-sync failures, given to
//! the real embedded ledger's writer as its fault hook (so a failed `fdatasync` takes the
//! writer's own error path: the group fails, the ledger stops taking writes until the next
//! life), and the torn journal tail written between two lives.
//!
//! It also keeps tokio's paused clock honest: the embedded ledger commits on its own OS
//! thread, which a paused current-thread runtime cannot see, so [`WatchedLedger`] keeps a
//! blocking-pool task waiting while a batch is in flight; tokio does not auto-advance time
//! while blocking tasks run, so a session's call timeout never fires just because the writer
//! thread was slow.
//!
//! And it answers one read without the store, exactly: the webhook dispatcher walks its due
//! index one minute partition at a time (16 shards × every minute of the 31 h retry
//! schedule), and each read of the real store goes through the blocking pool (~20 µs). The
//! wrapper carries the outbox hook itself, so it sees every batch complete with its fan-out
//! markers, and remembers every due-index partition any batch ever wrote (over the whole run:
//! the data directory starts empty). A partition never written is empty, so its scan answers
//! empty at once; every other scan goes to the store.

use ipay_engine::clock::Timestamp;
use ipay_engine::error::StoreError;
use ipay_engine::ids::{ApiKeyId, EventId, MerchantId, PaymentIntentId, RefundId, ServiceId};
use ipay_engine::model::{ApiKey, Event, Merchant, PaymentIntent, Refund, Service};
use ipay_engine::store::WriteOp;
use ipay_engine::store::embedded::EmbeddedLedger;
use ipay_engine::store::embedded::faults::{SyncFault, SyncFaults};
use ipay_engine::store::hook::{CommitHook, CommitHooks};
use ipay_engine::store::{
    CommitTicket, Completion, EntryRange, EventQuery, IdempotencyRecord, IntentQuery, Ledger, Page,
    PageRequest, StatusCounts, WriteBatch,
};
use ipay_engine::webhooks::Outbox;
use ipay_engine::webhooks::model::DUE;
use parking_lot::Mutex;
use rand::Rng;
use rand::rngs::StdRng;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The seed's choices for the storage layer, shared by every ledger of one run.
pub struct StorageFaults {
    rng: Mutex<StdRng>,
    /// Probability (per mille) that a group commit's sync fails.
    fail_per_mille: u32,
    /// Off during set-up and the final check.
    armed: AtomicBool,
    /// Sync failures injected so far.
    pub injected: AtomicU64,
    /// Faults injected, described, for the run's trace.
    pub log: Mutex<Vec<String>>,
}

impl StorageFaults {
    pub fn new(rng: StdRng, fail_per_mille: u32) -> Arc<Self> {
        Arc::new(StorageFaults {
            rng: Mutex::new(rng),
            fail_per_mille,
            armed: AtomicBool::new(false),
            injected: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
        })
    }

    /// Turns injection on or off.
    pub fn arm(&self, on: bool) {
        self.armed.store(on, Ordering::SeqCst);
    }
}

impl SyncFaults for StorageFaults {
    fn next(&self) -> Option<SyncFault> {
        if !self.armed.load(Ordering::SeqCst) {
            return None;
        }
        let mut rng = self.rng.lock();
        if rng.random_range(0..1000) >= self.fail_per_mille {
            return None;
        }
        let f = if rng.random_bool(0.5) {
            SyncFault::Before
        } else {
            SyncFault::After
        };
        self.injected.fetch_add(1, Ordering::SeqCst);
        self.log.lock().push(format!(
            "  fdatasync fault {f:?} in the writer's group commit"
        ));
        Some(f)
    }
}

/// Due-index partitions written during one run (shared by its lives).
pub type WrittenPartitions = Arc<Mutex<HashSet<String>>>;

/// The real embedded ledger, with a blocking-pool task kept alive while a batch is in flight,
/// carrying the outbox hook and answering scans of never-written due partitions (see the
/// module doc). Faults are injected inside the ledger's writer, not here.
pub struct WatchedLedger {
    inner: Arc<EmbeddedLedger>,
    hooks: CommitHooks,
    outbox: std::sync::OnceLock<Arc<Outbox>>,
    written: WrittenPartitions,
}

impl WatchedLedger {
    pub fn new(inner: Arc<EmbeddedLedger>, written: WrittenPartitions) -> Arc<Self> {
        Arc::new(WatchedLedger {
            inner,
            hooks: CommitHooks::default(),
            outbox: std::sync::OnceLock::new(),
            written,
        })
    }

    /// Installs the webhook outbox as this ledger's commit hook (before the engine starts).
    pub fn attach_outbox(&self) -> Result<Arc<Outbox>, StoreError> {
        let outbox = Outbox::attach(self)?;
        let _ = self.outbox.set(outbox.clone());
        Ok(outbox)
    }

    fn note_written(&self, batch: &WriteBatch) {
        let mut w = self.written.lock();
        for op in &batch.ops {
            if let WriteOp::PutEntry {
                index, partition, ..
            } = op
                && *index == DUE
                && !w.contains(partition)
            {
                w.insert(partition.clone());
            }
        }
    }
}

/// Calls `done` once the inner ledger answered, and keeps a blocking task alive meanwhile.
fn watched(done: Completion) -> Completion {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    tokio::task::spawn_blocking(move || {
        let _ = rx.recv();
    });
    Box::new(move |r: Result<(), StoreError>| {
        done(r);
        let _ = tx.send(());
    })
}

#[async_trait::async_trait]
impl Ledger for WatchedLedger {
    fn submit(&self, batch: WriteBatch) -> CommitTicket {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit_then(
            batch,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        CommitTicket::waiting(rx)
    }

    fn submit_then(&self, mut batch: WriteBatch, done: Completion) {
        let after = self.outbox.get().and_then(|o| o.prepare(&mut batch));
        self.note_written(&batch);
        let done: Completion = match after {
            None => done,
            Some(after) => Box::new(move |r| {
                after(&r);
                done(r);
            }),
        };
        self.inner.submit_then(batch, watched(done));
    }

    fn writable(&self) -> bool {
        self.inner.writable()
    }

    fn shared(&self) -> bool {
        self.inner.shared()
    }

    fn commit_hooks(&self) -> Option<&CommitHooks> {
        Some(&self.hooks)
    }

    async fn get_merchant(&self, id: MerchantId) -> Result<Option<Merchant>, StoreError> {
        self.inner.get_merchant(id).await
    }
    async fn get_api_key(&self, id: ApiKeyId) -> Result<Option<ApiKey>, StoreError> {
        self.inner.get_api_key(id).await
    }
    async fn find_api_key_by_hash(&self, hash: [u8; 32]) -> Result<Option<ApiKey>, StoreError> {
        self.inner.find_api_key_by_hash(hash).await
    }
    async fn list_api_keys(
        &self,
        merchant: MerchantId,
        livemode: bool,
    ) -> Result<Vec<ApiKey>, StoreError> {
        self.inner.list_api_keys(merchant, livemode).await
    }
    async fn get_service(&self, id: ServiceId) -> Result<Option<Service>, StoreError> {
        self.inner.get_service(id).await
    }
    async fn find_service_by_name(
        &self,
        merchant: MerchantId,
        livemode: bool,
        name: &str,
    ) -> Result<Option<Service>, StoreError> {
        self.inner
            .find_service_by_name(merchant, livemode, name)
            .await
    }
    async fn list_services(
        &self,
        merchant: MerchantId,
        livemode: bool,
        page: PageRequest,
    ) -> Result<Page<Service>, StoreError> {
        self.inner.list_services(merchant, livemode, page).await
    }
    async fn get_intent(&self, id: PaymentIntentId) -> Result<Option<PaymentIntent>, StoreError> {
        self.inner.get_intent(id).await
    }
    async fn list_intents(
        &self,
        merchant: MerchantId,
        livemode: bool,
        q: &IntentQuery,
    ) -> Result<Page<PaymentIntent>, StoreError> {
        self.inner.list_intents(merchant, livemode, q).await
    }
    async fn get_refund(&self, id: RefundId) -> Result<Option<Refund>, StoreError> {
        self.inner.get_refund(id).await
    }
    async fn list_refunds(
        &self,
        merchant: MerchantId,
        livemode: bool,
        intent: Option<PaymentIntentId>,
        page: PageRequest,
    ) -> Result<Page<Refund>, StoreError> {
        self.inner
            .list_refunds(merchant, livemode, intent, page)
            .await
    }
    async fn get_event(&self, id: EventId) -> Result<Option<Event>, StoreError> {
        self.inner.get_event(id).await
    }
    async fn list_events(
        &self,
        merchant: MerchantId,
        livemode: bool,
        q: &EventQuery,
    ) -> Result<Page<Event>, StoreError> {
        self.inner.list_events(merchant, livemode, q).await
    }
    async fn get_idempotency(&self, scope: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.inner.get_idempotency(scope).await
    }
    async fn pending_expiries(&self) -> Result<Vec<(PaymentIntentId, Timestamp)>, StoreError> {
        self.inner.pending_expiries().await
    }
    async fn count_intents_by_status(&self) -> Result<StatusCounts, StoreError> {
        self.inner.count_intents_by_status().await
    }
    async fn get_record(&self, kind: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_record(kind, key).await
    }
    async fn scan_entries(
        &self,
        index: &str,
        partition: &str,
        range: &EntryRange,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        if index == DUE && !self.written.lock().contains(partition) {
            return Ok(Vec::new());
        }
        self.inner.scan_entries(index, partition, range).await
    }
}

/// Appends `len` bytes of garbage to the newest journal file under `dir`, as a write torn by
/// power loss leaves a partial frame behind the last synced one. Returns the file touched.
pub fn tear_journal_tail(dir: &Path, rng: &mut StdRng, len: usize) -> Option<std::path::PathBuf> {
    let newest = journal_files(dir).into_iter().max_by_key(|(n, _)| *n)?;
    let mut garbage = vec![0u8; len];
    rng.fill(&mut garbage[..]);
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&newest.1)
        .ok()?;
    f.write_all(&garbage).ok()?;
    f.sync_all().ok()?;
    Some(newest.1)
}

/// Journal files of the store in `dir` with their sequence numbers.
fn journal_files(dir: &Path) -> Vec<(u64, std::path::PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "jnl") {
                let n = p
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                out.push((n, p));
            }
        }
    }
    out
}
