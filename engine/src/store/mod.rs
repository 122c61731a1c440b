//! Storage ports. The [`Ledger`] is the durable truth (intents, refunds, events, keys,
//! manifests, idempotency records); [`HotState`] is shared fast state that may be lost without
//! losing money: idempotency reservations, ownership leases, snapshots, counters with expiry
//! and pub/sub fan-out.
//!
//! Writes go through [`Ledger::submit`] as a [`WriteBatch`]: one batch is one atomic, durable
//! step (a state change, its events and its idempotency record together). Batches are applied
//! in submission order; the returned [`CommitTicket`] resolves once the batch is on disk.

pub mod cql;
pub mod embedded;
pub mod hook;
pub mod memory_hot;
pub mod redis_hot;
pub mod tls;

use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::ids::{ApiKeyId, EventId, MerchantId, PaymentIntentId, RefundId, ServiceId};
use crate::model::{ApiKey, Event, IntentStatus, Merchant, PaymentIntent, Refund, Service};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::ops::Bound;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{broadcast, oneshot};

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
    /// Stores `value` as the record `key` of collection `kind` (replacing it).
    /// See [`Ledger::get_record`].
    PutRecord {
        kind: &'static str,
        key: String,
        value: Vec<u8>,
    },
    /// Removes a record (nothing happens if there is none).
    DeleteRecord {
        kind: &'static str,
        key: String,
    },
    /// Stores an entry `(partition, sort) → value` in the sorted index `index`.
    /// See [`Ledger::scan_entries`].
    PutEntry {
        index: &'static str,
        partition: String,
        sort: String,
        value: Vec<u8>,
    },
    /// Removes an index entry (nothing happens if there is none).
    DeleteEntry {
        index: &'static str,
        partition: String,
        sort: String,
    },
    /// A fencing token: the whole batch is applied only if `epoch` is at least the highest
    /// epoch any batch fenced on `key` has committed with, and then `epoch` becomes that
    /// highest. Otherwise nothing of the batch is written and it fails with an error for
    /// which [`is_fenced`] holds. A session owner fences its decisions with its lease epoch
    /// ([`HotState::acquire_lease_epoch`]), so a node that lost its lease while stalled cannot
    /// commit after the next owner did. At most one fence per batch; batches without one pay
    /// nothing for it. `key` must pass [`valid_name`].
    Fence {
        key: String,
        epoch: u64,
    },
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

    /// The batch's fence, if it carries one: `(key, epoch)`. More than one is an error.
    pub fn fence(&self) -> Result<Option<(&str, u64)>, StoreError> {
        let mut fences = self.ops.iter().filter_map(|op| match op {
            WriteOp::Fence { key, epoch } => Some((key.as_str(), *epoch)),
            _ => None,
        });
        let first = fences.next();
        if fences.next().is_some() {
            return Err(StoreError("a write batch carries at most one fence".into()));
        }
        if let Some((key, _)) = first
            && !valid_name(key)
        {
            return Err(StoreError(format!("invalid fence key {key:?}")));
        }
        Ok(first)
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

/// How a backend tells a submitter the outcome of its batch: a ticket or a callback.
pub(crate) enum Done {
    Ticket(oneshot::Sender<Result<(), StoreError>>),
    Callback(Completion),
}

impl Done {
    pub(crate) fn finish(self, r: Result<(), StoreError>) {
        match self {
            Done::Ticket(tx) => {
                let _ = tx.send(r);
            }
            Done::Callback(f) => f(r),
        }
    }
}

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

/// Which entries of one partition [`Ledger::scan_entries`] returns: sort keys within
/// `start..end` (compared as bytes), at most `limit` of them, ascending unless `descending`.
#[derive(Debug, Clone)]
pub struct EntryRange {
    pub start: Bound<String>,
    pub end: Bound<String>,
    pub limit: usize,
    pub descending: bool,
}

impl EntryRange {
    /// Every entry, ascending, up to `limit`.
    pub fn all(limit: usize) -> Self {
        EntryRange {
            start: Bound::Unbounded,
            end: Bound::Unbounded,
            limit,
            descending: false,
        }
    }

    /// Entries whose sort key starts with `prefix`, ascending, up to `limit`.
    pub fn prefix(prefix: &str, limit: usize) -> Self {
        let end = prefix_end(prefix);
        EntryRange {
            start: Bound::Included(prefix.to_string()),
            end: end.map_or(Bound::Unbounded, Bound::Excluded),
            limit,
            descending: false,
        }
    }

    /// Entries with sort keys strictly after `after` (for keyset pagination), ascending.
    pub fn after(after: &str, limit: usize) -> Self {
        EntryRange {
            start: Bound::Excluded(after.to_string()),
            end: Bound::Unbounded,
            limit,
            descending: false,
        }
    }

    /// The same range, newest (largest sort key) first.
    pub fn rev(mut self) -> Self {
        self.descending = !self.descending;
        self
    }
}

/// The smallest string greater than every string starting with `prefix` (None: no bound).
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(c) = chars.pop() {
        if let Some(n) = char::from_u32(c as u32 + 1) {
            chars.push(n);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Whether `name` is usable as a record kind, index name or partition: non-empty, at most 200
/// bytes, no NUL (the embedded backend's separator).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 200 && !name.contains('\0')
}

/// How a fenced-off batch's error message starts (see [`is_fenced`]).
const FENCED: &str = "fenced: ";

/// The error of a batch refused by its [`WriteOp::Fence`]: `epoch` is older than `current`.
pub fn fenced_error(key: &str, epoch: u64, current: u64) -> StoreError {
    StoreError(format!(
        "{FENCED}{key} was decided under epoch {current}; epoch {epoch} is stale (this node \
         lost its lease)"
    ))
}

/// Whether a batch failed because its fence was stale (nothing of it was written).
pub fn is_fenced(e: &StoreError) -> bool {
    e.0.starts_with(FENCED)
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

    /// Whether other processes may write this ledger too (cluster mode). Caches of ledger
    /// records are only safe when it is not shared.
    fn shared(&self) -> bool {
        false
    }

    /// Which backend this is (`"embedded"`, `"cql"`), for readiness reports.
    fn backend(&self) -> &'static str {
        "embedded"
    }

    /// The slots for [`hook::CommitHook`]s that add their ops to every batch before it is
    /// queued (the webhook outbox, last mile's settle markers). `None`: this ledger takes no
    /// hook.
    fn commit_hooks(&self) -> Option<&hook::CommitHooks> {
        None
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

    // --- generic records and sorted indexes ---
    //
    // Features beyond the core payment objects (webhook endpoints and outbox, channel
    // configurations, orders, last-mile sessions, …) keep their data here, written with
    // `WriteOp::PutRecord`/`DeleteRecord`/`PutEntry`/`DeleteEntry` inside ordinary batches, so
    // they share the batches' atomicity and durability. Values are opaque bytes (JSON by
    // convention). Kinds, index names and partitions must pass [`valid_name`]; keys and sort
    // keys may be any string without NUL. Design partitions so one stays small enough to scan
    // (per merchant, per day, …): in cluster mode one partition is one CQL partition.

    /// The record `key` of collection `kind`.
    async fn get_record(&self, kind: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Entries `(sort, value)` of one partition of `index`, in sort-key byte order.
    async fn scan_entries(
        &self,
        index: &str,
        partition: &str,
        range: &EntryRange,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
}

/// A held idempotency reservation: the scope and the random token that proves we hold it.
///
/// Returned by [`HotState::reserve`] and given back to [`HotState::release`], which only
/// removes the reservation while it still carries this token. A reservation that lapsed at its
/// TTL and was taken by someone else is therefore never removed by its former holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    scope: String,
    token: u128,
}

impl Reservation {
    /// A reservation of `scope` identified by `token` (backends pick a random token).
    pub fn new(scope: impl Into<String>, token: u128) -> Self {
        Reservation {
            scope: scope.into(),
            token,
        }
    }

    /// The reserved scope.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The holder's token.
    pub fn token(&self) -> u128 {
        self.token
    }
}

/// A message received on a pub/sub channel.
pub type Message = Arc<[u8]>;

/// Called once when a [`Subscription`] is dropped, after its receiver is gone.
pub type OnUnsubscribe = Box<dyn FnOnce() + Send + Sync + 'static>;

/// The receiving end of [`HotState::subscribe`]: messages published on one channel, in the
/// order they were published, **at most once**.
///
/// Messages are lost when this subscriber falls more than the channel's buffer behind (counted
/// in [`Subscription::missed`]) and, for the Redis backend, while the pub/sub connection is
/// being re-established. Use it for live fan-out (SSE, wake-ups) only; anything that must not
/// be lost goes through the ledger and the outbox.
pub struct Subscription {
    rx: Option<broadcast::Receiver<Message>>,
    missed: u64,
    on_drop: Option<OnUnsubscribe>,
}

impl Subscription {
    /// Wraps a broadcast receiver; `on_drop` runs once the receiver has been dropped (backends
    /// use it to stop listening when the last local subscriber of a channel goes away).
    pub fn new(rx: broadcast::Receiver<Message>, on_drop: Option<OnUnsubscribe>) -> Self {
        Subscription {
            rx: Some(rx),
            missed: 0,
            on_drop,
        }
    }

    /// The next message; `None` once the channel is closed (the backend was dropped).
    /// Messages this subscriber was too slow to take are skipped and counted in
    /// [`Subscription::missed`].
    pub async fn recv(&mut self) -> Option<Message> {
        let Subscription { rx, missed, .. } = self;
        let rx = rx.as_mut()?;
        loop {
            match rx.recv().await {
                Ok(m) => return Some(m),
                Err(broadcast::error::RecvError::Lagged(n)) => *missed += n,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Messages skipped so far because this subscriber fell behind.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// The subscription as a stream of messages (ends when the channel closes).
    pub fn into_stream(self) -> impl futures::Stream<Item = Message> + Send + 'static {
        futures::stream::unfold(self, |mut s| async move { s.recv().await.map(|m| (m, s)) })
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("missed", &self.missed)
            .finish_non_exhaustive()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Drop the receiver first, so the hook sees this subscriber gone.
        drop(self.rx.take());
        if let Some(f) = self.on_drop.take() {
            f();
        }
    }
}

/// Shared fast state (in-process in embedded mode, Redis in cluster mode).
///
/// Losing any of it must never lose or double a payment: every primitive here is either a
/// coordination aid whose loss only costs a retry or a wait (reservations, leases, pub/sub), or
/// a cache of something the ledger holds (snapshots), or a limit that fails safe (counters).
///
/// All TTLs are wall-clock durations measured by the backend (Redis: the server's clock, with
/// millisecond precision; a TTL below 1 ms counts as 1 ms there). Keys, scopes and channels are
/// free-form strings; a backend may prefix them with its own namespace. Every call that talks
/// to a remote backend is bounded in time and fails with [`StoreError`] rather than hanging.
#[async_trait::async_trait]
pub trait HotState: Send + Sync + 'static {
    /// Which backend this is (`"memory"`, `"redis"`), for readiness reports.
    fn backend(&self) -> &'static str {
        "memory"
    }

    /// One bounded round trip to the backend (readiness checks); in-process backends always
    /// answer.
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    // --- idempotency reservations ---

    /// Takes an exclusive reservation on `scope` for at most `ttl`: `Some` with our token when
    /// we got it, `None` when someone else holds it. A holder that never releases (its task was
    /// cancelled, its node died) loses the reservation at its TTL, so a scope cannot be wedged.
    async fn reserve(&self, scope: &str, ttl: Duration) -> Result<Option<Reservation>, StoreError>;

    /// Gives a reservation back and wakes those waiting in [`HotState::wait_released`].
    /// Only removes it while it is still ours (same token, not lapsed): `true` if it was,
    /// `false` if it had lapsed or now belongs to someone else (then nothing is touched).
    async fn release(&self, reservation: Reservation) -> Result<bool, StoreError>;

    /// Returns when `scope` is no longer reserved (released, or lapsed at its TTL), or after
    /// `timeout`, whichever comes first. It says nothing about who gets the scope next: call
    /// [`HotState::reserve`] again. Never fails: if the backend cannot be reached it returns
    /// early, and the caller's next `reserve` reports the error.
    async fn wait_released(&self, scope: &str, timeout: Duration);

    // --- ownership leases (which node owns a session) ---

    /// Takes the lease on `key` for `owner` for `ttl` when nobody holds it: `true` if `owner`
    /// now holds it. Re-entrant: if `owner` already holds it, the TTL is reset to `ttl` and the
    /// answer is `true`; another owner's live lease is never touched (`false`).
    async fn acquire_lease(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Like [`HotState::acquire_lease`], and returns the lease's epoch when `owner` holds
    /// it: a fencing token for [`WriteOp::Fence`]. A lease taken anew gets an epoch greater
    /// than every epoch handed out before for any key (while the hot state keeps its data;
    /// after a loss, epochs continue from the backend's clock in microseconds, so they still
    /// grow unless that clock goes back). Re-entrant acquires and renewals keep the epoch.
    async fn acquire_lease_epoch(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, StoreError>;

    /// Extends `owner`'s lease on `key` to `ttl` from now, only while it is still theirs:
    /// `false` when the lease lapsed or belongs to someone else (then acquire it anew).
    async fn renew_lease(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError>;

    /// Gives up `owner`'s lease on `key`: `true` if it was theirs and is now free, `false`
    /// (nothing touched) if it had lapsed or belongs to someone else.
    async fn release_lease(&self, key: &str, owner: &str) -> Result<bool, StoreError>;

    /// The current holder of the lease on `key`, if any.
    async fn lease_owner(&self, key: &str) -> Result<Option<String>, StoreError>;

    // --- snapshots (cached, rebuildable state) ---

    /// Stores opaque `bytes` under `key` for `ttl`, replacing what was there. A snapshot is a
    /// cache: it may vanish at any time (TTL, eviction, restart), so the reader validates it
    /// and falls back to the ledger.
    async fn put_snapshot(&self, key: &str, bytes: &[u8], ttl: Duration) -> Result<(), StoreError>;

    /// The bytes last stored under `key`, unless they expired or were deleted.
    async fn get_snapshot(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Removes the snapshot under `key` (nothing happens if there is none).
    async fn delete_snapshot(&self, key: &str) -> Result<(), StoreError>;

    // --- counters with expiry (attempt limits) ---

    /// Adds one to the counter `key` and returns the new value. The first increment starts
    /// the counter at 1 with expiry `ttl`; later increments do not extend it (a fixed window
    /// counted from the first increment). Atomic across concurrent callers.
    async fn incr(&self, key: &str, ttl: Duration) -> Result<i64, StoreError>;

    /// Drops the counter `key`; the next [`HotState::incr`] starts at 1 again.
    async fn reset(&self, key: &str) -> Result<(), StoreError>;

    // --- pub/sub fan-out (live, at-most-once) ---

    /// Sends `message` to everyone currently subscribed to `channel` (in every process that
    /// shares this hot state). Fire-and-forget, at most once: subscribers that are not
    /// connected right now never see it. Never use it for anything that must not be lost.
    async fn publish(&self, channel: &str, message: &[u8]) -> Result<(), StoreError>;

    /// Starts listening on `channel`. Once this returns, every message published on the
    /// channel afterwards is delivered to the subscription in publication order, subject to
    /// the at-most-once caveats on [`Subscription`]. Dropping the subscription stops it.
    async fn subscribe(&self, channel: &str) -> Result<Subscription, StoreError>;
}
