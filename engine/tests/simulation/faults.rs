//! The storage side of the simulated world: a [`Ledger`] that forwards to the real embedded
//! ledger and injects the faults the seed asks for (a failed `fdatasync`, before or after the
//! bytes reached the journal), and the torn journal tail written between two lives.
//!
//! It also keeps tokio's paused clock honest: the embedded ledger commits on its own OS
//! thread, which a paused current-thread runtime cannot see, so while a batch is in flight a
//! blocking-pool task waits for it; tokio does not auto-advance time while blocking tasks run,
//! so a session's call timeout never fires just because the writer thread was slow.

use ipay_engine::clock::Timestamp;
use ipay_engine::error::StoreError;
use ipay_engine::ids::{ApiKeyId, EventId, MerchantId, PaymentIntentId, RefundId, ServiceId};
use ipay_engine::model::{ApiKey, Event, Merchant, PaymentIntent, Refund, Service};
use ipay_engine::store::embedded::EmbeddedLedger;
use ipay_engine::store::hook::CommitHooks;
use ipay_engine::store::{
    CommitTicket, Completion, EntryRange, EventQuery, IdempotencyRecord, IntentQuery, Ledger, Page,
    PageRequest, StatusCounts, WriteBatch,
};
use parking_lot::Mutex;
use rand::Rng;
use rand::rngs::StdRng;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// How the next commit fails, if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncFault {
    /// The batch never reached the journal; the caller is told the sync failed.
    Before,
    /// The batch reached the journal but the caller is told the sync failed (its outcome is
    /// unknown to the caller, as after a real `fdatasync` error).
    After,
}

/// The seed's choices for the storage layer, shared by every ledger of one run.
pub struct StorageFaults {
    rng: Mutex<StdRng>,
    /// Probability (per mille) that a commit fails.
    fail_per_mille: u32,
    /// Off during set-up and the final check.
    armed: AtomicBool,
    /// Faults injected, described, for the run's trace.
    pub log: Mutex<Vec<String>>,
}

impl StorageFaults {
    pub fn new(rng: StdRng, fail_per_mille: u32) -> Arc<Self> {
        Arc::new(StorageFaults {
            rng: Mutex::new(rng),
            fail_per_mille,
            armed: AtomicBool::new(false),
            log: Mutex::new(Vec::new()),
        })
    }

    /// Turns injection on or off.
    pub fn arm(&self, on: bool) {
        self.armed.store(on, Ordering::SeqCst);
    }

    fn next(&self) -> Option<SyncFault> {
        if !self.armed.load(Ordering::SeqCst) {
            return None;
        }
        let mut rng = self.rng.lock();
        if rng.random_range(0..1000) >= self.fail_per_mille {
            return None;
        }
        Some(if rng.random_bool(0.5) {
            SyncFault::Before
        } else {
            SyncFault::After
        })
    }
}

/// The real embedded ledger behind the seed's fault plan. Like the real ledger after an I/O
/// error, it takes no more writes once a commit failed (fail-stop) until the next life.
pub struct FaultyLedger {
    inner: Arc<EmbeddedLedger>,
    faults: Arc<StorageFaults>,
    stopped: AtomicBool,
    /// Commits that failed by injection in this life.
    pub injected: std::sync::atomic::AtomicU64,
}

impl FaultyLedger {
    pub fn new(inner: Arc<EmbeddedLedger>, faults: Arc<StorageFaults>) -> Arc<Self> {
        Arc::new(FaultyLedger {
            inner,
            faults,
            stopped: AtomicBool::new(false),
            injected: Default::default(),
        })
    }

    fn refuse() -> StoreError {
        StoreError("simulated: the ledger stopped after an fdatasync error".into())
    }

    fn injected_error() -> StoreError {
        StoreError("simulated fdatasync error".into())
    }
}

/// Calls `done` once the inner ledger answered, with the answer rewritten by `fault`, and keeps
/// a blocking task alive meanwhile (see the module doc).
fn watched(fault: Option<SyncFault>, done: Completion) -> Completion {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    tokio::task::spawn_blocking(move || {
        let _ = rx.recv();
    });
    Box::new(move |r: Result<(), StoreError>| {
        let r = match (fault, r) {
            (Some(SyncFault::After), Ok(())) => Err(FaultyLedger::injected_error()),
            (_, r) => r,
        };
        done(r);
        let _ = tx.send(());
    })
}

#[async_trait::async_trait]
impl Ledger for FaultyLedger {
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

    fn submit_then(&self, batch: WriteBatch, done: Completion) {
        if self.stopped.load(Ordering::SeqCst) {
            return done(Err(Self::refuse()));
        }
        let fault = self.faults.next();
        if let Some(f) = fault {
            let events: Vec<&str> = batch.events().map(|e| e.event_type.as_str()).collect();
            self.faults.log.lock().push(format!(
                "  fdatasync fault {f:?} on a batch with events {events:?}"
            ));
            // Fail-stop from here on, as the real ledger does after an I/O error.
            self.stopped.store(true, Ordering::SeqCst);
            self.injected.fetch_add(1, Ordering::SeqCst);
        }
        if fault == Some(SyncFault::Before) {
            return done(Err(Self::injected_error()));
        }
        self.inner.submit_then(batch, watched(fault, done));
    }

    fn writable(&self) -> bool {
        !self.stopped.load(Ordering::SeqCst) && self.inner.writable()
    }

    fn commit_hooks(&self) -> Option<&CommitHooks> {
        self.inner.commit_hooks()
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
