//! Storage ports. The [`Ledger`] is the durable truth (intents, refunds, events, keys,
//! manifests, idempotency records); [`HotState`] is shared fast state that may be lost without
//! losing money (idempotency reservations today; snapshots, counters and leases later).
//!
//! Writes go through [`Ledger::submit`] as a [`WriteBatch`]: one batch is one atomic, durable
//! step (a state change, its events and its idempotency record together). Batches are applied
//! in submission order; the returned [`CommitTicket`] resolves once the batch is on disk.

pub mod embedded;
pub mod memory_hot;
pub mod redis_hot;
pub mod cql;
pub mod wal;

use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::ids::{ApiKeyId, EventId, MerchantId, PaymentIntentId, RefundId, ServiceId};
use crate::model::{ApiKey, Event, IntentStatus, Merchant, PaymentIntent, Refund, Service};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;

/// One write inside a batch.
#[derive(Debug, Clone)]
pub enum WriteOp {
    PutMerchant(Merchant),
    /// `secret_hash` is given when the key is new; the hash index is written once.
    PutApiKey {
        key: ApiKey,
        secret_hash: Option<[u8; 32]>,
    },
    PutService(Service),
    PutIntent(PaymentIntent),
    PutRefund(Refund),
    PutEvent(Event),
    PutIdempotency {
        scope: String,
        record: IdempotencyRecord,
    },
    /// Drops idempotency records created before the given time.
    PurgeIdempotencyBefore(Timestamp),
}

/// Writes committed together, atomically and durably.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    pub ops: Vec<WriteOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        WriteBatch {
            ops: Vec::with_capacity(4),
        }
    }

    /// Adds an op.
    pub fn push(&mut self, op: WriteOp) -> &mut Self {
        self.ops.push(op);
        self
    }

    /// The events this batch appends.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.ops.iter().filter_map(|op| match op {
            WriteOp::PutEvent(e) => Some(e),
            _ => None,
        })
    }
}

/// Called once with the outcome of a submitted batch.
pub type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send + 'static>;

/// Resolves when a submitted batch is durable (or failed).
pub struct CommitTicket(TicketInner);

enum TicketInner {
    Waiting(oneshot::Receiver<Result<(), StoreError>>),
    Ready(Option<Result<(), StoreError>>),
}

impl CommitTicket {
    /// A ticket waiting on a writer.
    pub fn waiting(rx: oneshot::Receiver<Result<(), StoreError>>) -> Self {
        CommitTicket(TicketInner::Waiting(rx))
    }

    /// A ticket already resolved (e.g. the queue was full).
    pub fn ready(r: Result<(), StoreError>) -> Self {
        CommitTicket(TicketInner::Ready(Some(r)))
    }
}

impl Future for CommitTicket {
    type Output = Result<(), StoreError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            TicketInner::Waiting(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or_else(|_| Err(StoreError("ledger writer stopped".into())))),
            TicketInner::Ready(r) => Poll::Ready(
                r.take()
                    .unwrap_or_else(|| Err(StoreError("ticket polled twice".into()))),
            ),
        }
    }
}

/// The stored outcome of an idempotent request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// SHA-256 (hex) of the canonical request body.
    pub request_hash: String,
    /// HTTP status first returned.
    pub status: u16,
    /// Response body first returned (JSON).
    pub body: String,
    pub created: Timestamp,
}

/// Offset pagination.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub limit: usize,
    pub offset: usize,
}

/// One page and the total number of matches.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub total: u64,
}

/// Filters for listing intents.
#[derive(Debug, Clone)]
pub struct IntentQuery {
    pub status: Option<IntentStatus>,
    pub channel: Option<String>,
    /// Inclusive lower bound, ms.
    pub created_after: Option<i64>,
    /// Exclusive upper bound, ms.
    pub created_before: Option<i64>,
    pub descending: bool,
    pub page: PageRequest,
}

/// Filters for listing events.
#[derive(Debug, Clone)]
pub struct EventQuery {
    pub event_type: Option<String>,
    pub object_id: Option<String>,
    pub page: PageRequest,
}

/// Counts of intents per status, indexed by [`IntentStatus::to_u8`].
pub type StatusCounts = [u64; 5];

/// The durable ledger.
#[async_trait::async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// Queues a batch; the ticket resolves once it is durable. Never blocks: a full queue
    /// resolves the ticket at once with an error.
    fn submit(&self, batch: WriteBatch) -> CommitTicket;

    /// Like [`Ledger::submit`], but `done` is called with the outcome instead of a ticket being
    /// returned. It may run on the ledger's own thread, so it must be quick and never block
    /// (send a message, complete a reply port).
    fn submit_then(&self, batch: WriteBatch, done: Completion) {
        let ticket = self.submit(batch);
        tokio::spawn(async move { done(ticket.await) });
    }

    /// Whether the ledger still takes writes (false after it stopped on an I/O error).
    fn writable(&self) -> bool {
        true
    }

    async fn get_merchant(&self, id: MerchantId) -> Result<Option<Merchant>, StoreError>;
    async fn get_api_key(&self, id: ApiKeyId) -> Result<Option<ApiKey>, StoreError>;
    async fn find_api_key_by_hash(&self, hash: [u8; 32]) -> Result<Option<ApiKey>, StoreError>;
    async fn list_api_keys(
        &self,
        merchant: MerchantId,
        livemode: bool,
    ) -> Result<Vec<ApiKey>, StoreError>;
    async fn get_service(&self, id: ServiceId) -> Result<Option<Service>, StoreError>;
    async fn find_service_by_name(
        &self,
        merchant: MerchantId,
        livemode: bool,
        name: &str,
    ) -> Result<Option<Service>, StoreError>;
    async fn list_services(
        &self,
        merchant: MerchantId,
        livemode: bool,
        page: PageRequest,
    ) -> Result<Page<Service>, StoreError>;
    async fn get_intent(&self, id: PaymentIntentId) -> Result<Option<PaymentIntent>, StoreError>;
    async fn list_intents(
        &self,
        merchant: MerchantId,
        livemode: bool,
        q: &IntentQuery,
    ) -> Result<Page<PaymentIntent>, StoreError>;
    async fn get_refund(&self, id: RefundId) -> Result<Option<Refund>, StoreError>;
    async fn list_refunds(
        &self,
        merchant: MerchantId,
        livemode: bool,
        intent: Option<PaymentIntentId>,
        page: PageRequest,
    ) -> Result<Page<Refund>, StoreError>;
    async fn get_event(&self, id: EventId) -> Result<Option<Event>, StoreError>;
    async fn list_events(
        &self,
        merchant: MerchantId,
        livemode: bool,
        q: &EventQuery,
    ) -> Result<Page<Event>, StoreError>;
    async fn get_idempotency(&self, scope: &str) -> Result<Option<IdempotencyRecord>, StoreError>;
    /// Every pending intent with its expiry time (to re-arm timers after a start or restart).
    async fn pending_expiries(&self) -> Result<Vec<(PaymentIntentId, Timestamp)>, StoreError>;
    /// Intents per status over all merchants (metrics at start-up).
    async fn count_intents_by_status(&self) -> Result<StatusCounts, StoreError>;
}

/// Shared fast state; losing it must never lose or double a payment.
#[async_trait::async_trait]
pub trait HotState: Send + Sync + 'static {
    /// Takes an exclusive reservation on `scope`; `false` when someone else holds it.
    async fn reserve(&self, scope: &str, ttl: Duration) -> Result<bool, StoreError>;
    /// Gives a reservation back.
    async fn release(&self, scope: &str) -> Result<(), StoreError>;
    /// Returns when `scope` is no longer reserved, or after `timeout`.
    async fn wait_released(&self, scope: &str, timeout: Duration);
}
