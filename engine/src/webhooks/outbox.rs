//! The outbox decorator: every batch that appends events also appends, in the same batch, a
//! fan-out marker per event in the due index and the event's entry in the per-day event index.
//! Event and outbox record are therefore one durable step: no event without its delivery, no
//! delivery of an event that was never committed.
//!
//! After a batch with events commits, the decorator wakes this process's dispatcher shards
//! (other nodes find the markers on their next poll). It owns nothing else: endpoint
//! resolution, sending and retries are in [`super::dispatch`].

use super::model::{self, DUE, EVENTS_BY_DAY};
use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::ids::{ApiKeyId, EventId, MerchantId, PaymentIntentId, RefundId, ServiceId};
use crate::model::{ApiKey, Event, Merchant, PaymentIntent, Refund, Service};
use crate::store::{
    CommitTicket, Completion, EntryRange, EventQuery, IdempotencyRecord, IntentQuery, Ledger, Page,
    PageRequest, StatusCounts, WriteBatch, WriteOp,
};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use tokio::sync::Notify;

/// Wakes dispatcher shards of this process when fan-out markers were committed.
pub struct Signal {
    shards: Vec<ShardSignal>,
}

struct ShardSignal {
    notify: Notify,
    /// The earliest minute with a marker committed since the shard last looked (rewinds its
    /// scan cursor if a slow commit landed behind it). `i64::MAX` = none.
    min_minute: AtomicI64,
}

impl Default for Signal {
    fn default() -> Self {
        Signal::new()
    }
}

impl Signal {
    fn new() -> Signal {
        Signal {
            shards: (0..model::SHARDS)
                .map(|_| ShardSignal {
                    notify: Notify::new(),
                    min_minute: AtomicI64::new(i64::MAX),
                })
                .collect(),
        }
    }

    /// Marks work for `shard` due from `minute` on and wakes it.
    pub fn wake(&self, shard: u32, minute: i64) {
        if let Some(s) = self.shards.get(shard as usize) {
            s.min_minute.fetch_min(minute, Ordering::AcqRel);
            s.notify.notify_one();
        }
    }

    /// Resolves when `shard` is woken.
    pub async fn notified(&self, shard: u32) {
        if let Some(s) = self.shards.get(shard as usize) {
            s.notify.notified().await;
        }
    }

    /// Takes the earliest minute signalled for `shard` since the last call.
    pub fn take_min_minute(&self, shard: u32) -> Option<i64> {
        let m = self
            .shards
            .get(shard as usize)?
            .min_minute
            .swap(i64::MAX, Ordering::AcqRel);
        (m != i64::MAX).then_some(m)
    }
}

/// Decorated ledgers of this process and their signals (the engine wraps its ledger before the
/// webhook subsystem starts; [`signal_for`] finds the signal again from the engine's ledger).
static SIGNALS: Mutex<Vec<(usize, Weak<Signal>)>> = Mutex::new(Vec::new());

fn ledger_key(ledger: &Arc<dyn Ledger>) -> usize {
    Arc::as_ptr(ledger) as *const () as usize
}

/// The signal of a ledger made by [`with_outbox`], if it is one.
pub fn signal_for(ledger: &Arc<dyn Ledger>) -> Option<Arc<Signal>> {
    let key = ledger_key(ledger);
    let reg = SIGNALS.lock();
    reg.iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, w)| w.upgrade())
}

/// See [`super::with_outbox`].
pub fn wrap(inner: Arc<dyn Ledger>) -> Arc<dyn Ledger> {
    let signal = Arc::new(Signal::new());
    let outbox: Arc<dyn Ledger> = Arc::new(Outbox {
        inner,
        signal: signal.clone(),
    });
    let mut reg = SIGNALS.lock();
    reg.retain(|(_, w)| w.strong_count() > 0);
    reg.push((ledger_key(&outbox), Arc::downgrade(&signal)));
    outbox
}

struct Outbox {
    inner: Arc<dyn Ledger>,
    signal: Arc<Signal>,
}

/// The value of an [`EVENTS_BY_DAY`] entry.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct DayEntry {
    #[serde(rename = "type")]
    pub event_type: String,
    pub object_id: String,
}

/// The outbox ops of one event.
pub fn outbox_ops(e: &Event) -> Option<[WriteOp; 2]> {
    let json = serde_json::to_vec(e).ok()?;
    let due = e.created.ms();
    let shard = model::shard_of(e.merchant_id, &e.object_id);
    let id = e.id.to_string();
    Some([
        WriteOp::PutEntry {
            index: DUE,
            partition: model::due_partition(shard, model::minute_of(due)),
            sort: model::due_sort(due, 'f', &id),
            value: json,
        },
        WriteOp::PutEntry {
            index: EVENTS_BY_DAY,
            partition: model::day_partition(e.merchant_id, e.livemode, due),
            sort: id,
            value: serde_json::to_vec(&DayEntry {
                event_type: e.event_type.clone(),
                object_id: e.object_id.clone(),
            })
            .ok()?,
        },
    ])
}

impl Outbox {
    /// Adds the outbox ops; returns the shards and minutes to wake after the commit.
    fn add_outbox(batch: &mut WriteBatch) -> Vec<(u32, i64)> {
        let mut extra = Vec::new();
        let mut wake = Vec::new();
        for e in batch.events() {
            if let Some(ops) = outbox_ops(e) {
                extra.extend(ops);
                wake.push((
                    model::shard_of(e.merchant_id, &e.object_id),
                    model::minute_of(e.created.ms()),
                ));
            }
        }
        batch.ops.extend(extra);
        wake
    }
}

#[async_trait::async_trait]
impl Ledger for Outbox {
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
        let wake = Self::add_outbox(&mut batch);
        if wake.is_empty() {
            return self.inner.submit_then(batch, done);
        }
        let signal = self.signal.clone();
        self.inner.submit_then(
            batch,
            Box::new(move |r| {
                if r.is_ok() {
                    for (shard, minute) in wake {
                        signal.wake(shard, minute);
                    }
                }
                done(r)
            }),
        );
    }

    fn writable(&self) -> bool {
        self.inner.writable()
    }

    fn shared(&self) -> bool {
        self.inner.shared()
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
