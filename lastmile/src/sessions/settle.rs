//! Sessions turn paid (or back to CREATED) from the engine's committed intent events, on the
//! node that committed them, without polling and without losing one to a crash.
//!
//! How: [`SettleHook`] is a commit hook on the ledger. Every batch carrying a final event of an
//! intent that belongs to a last-mile session (`payment_intent.succeeded`, `.failed`,
//! `.expired`, `.cancelled`, with `metadata.ipay_session`) also writes, in the same atomic
//! step, a *settle marker* `lm_settle` partition `{0..15}` sort `{session}:{intent}`. Once the
//! batch is durable the hook hands the marker to this node's queue ([`SettleQueue`]); the
//! consumer task records the outcome on the session and deletes the marker in the session's own
//! batch. A crash between the intent's event and the session's update leaves the marker: every
//! node scans the markers when it starts, and again every `settle_sweep_secs` for markers older
//! than `settle_sweep_after_ms` (another node crashed, or a settle failed and waits for retry).
//! Applying a marker twice is harmless: the session is changed under its reservation, only
//! while it still awaits that very intent.
//!
//! Returns ride the same hook and consumer with a second kind of marker: a batch carrying
//! `refund.succeeded` / `refund.failed` of a refund made for a return (its `reason` is
//! `return {return_id}`, set by [`crate::returns`]) also writes a [`ReturnMarker`]
//! (`lm_settle_return` partition `{0..15}` sort `{return}:{refund}`), so a `refund_pending`
//! return turns `refunded` (or `refund_failed`) without anybody reading it.
//!
//! This module owns the hook, the marker indexes and the consumer; what an outcome does to a
//! session is [`super::payment`]'s business (the same transition a read makes), what it does to
//! a return is [`crate::returns`]'s.

use super::{SessionId, SessionStatus};
use crate::LastMile;
use ipay_engine::error::{EngineError, EngineResult};
use ipay_engine::ids::{PaymentIntentId, RefundId};
use ipay_engine::model::{Event, IntentStatus};
use ipay_engine::store::hook::{AfterCommit, CommitHook};
use ipay_engine::store::{EntryRange, Ledger, WriteBatch, WriteOp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// The marker index.
const SETTLE: &str = "lm_settle";
/// The index of return markers.
const SETTLE_RETURN: &str = "lm_settle_return";
/// Refund events after which a refund no longer changes its return.
const REFUND_FINAL_EVENTS: &[&str] = &["refund.succeeded", "refund.failed"];
/// What a return's refund carries as its `reason` (followed by the return id).
pub const RETURN_REFUND_REASON: &str = "return ";
/// Marker partitions (spreads a busy node's markers over several CQL partitions).
const PARTITIONS: u8 = 16;
/// Markers read from one partition per scan step.
const SCAN_PAGE: usize = 500;
/// Quick retries of a failing marker (every `settle_retry_ms`); after them it waits for the
/// sweep, so a marker that cannot be applied costs one attempt per sweep, not one a second.
const MAX_QUICK_RETRIES: u32 = 5;
/// Intent events after which an intent no longer changes its session's payment state.
const FINAL_EVENTS: &[&str] = &[
    "payment_intent.succeeded",
    "payment_intent.failed",
    "payment_intent.expired",
    "payment_intent.cancelled",
];

/// One session to settle from one intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub session: SessionId,
    pub intent: PaymentIntentId,
    /// When the intent's event was created (ms): the sweep leaves young markers to their node.
    pub at_ms: i64,
}

#[derive(Serialize, Deserialize)]
struct MarkerValue {
    at: i64,
}

impl Marker {
    /// The marker of a final event of a last-mile intent; `None` for any other event.
    fn of_event(e: &Event) -> Option<Marker> {
        if !FINAL_EVENTS.contains(&e.event_type.as_str()) {
            return None;
        }
        #[derive(Deserialize)]
        struct Intent {
            #[serde(default)]
            metadata: Meta,
        }
        #[derive(Default, Deserialize)]
        struct Meta {
            ipay_session: Option<String>,
        }
        let i: Intent = serde_json::from_str(e.data.get()).ok()?;
        Some(Marker {
            session: SessionId::parse(i.metadata.ipay_session.as_deref()?).ok()?,
            intent: PaymentIntentId::parse(&e.object_id).ok()?,
            at_ms: e.created.ms(),
        })
    }

    fn partition(&self) -> String {
        partition_of(&self.session.to_string())
    }

    fn sort(&self) -> String {
        format!("{}:{}", self.session, self.intent)
    }

    fn put_op(&self) -> Option<WriteOp> {
        Some(WriteOp::PutEntry {
            index: SETTLE,
            partition: self.partition(),
            sort: self.sort(),
            value: serde_json::to_vec(&MarkerValue { at: self.at_ms }).ok()?,
        })
    }

    /// Deletes the marker (in the session's batch, or alone when nothing changed).
    pub(super) fn delete_op(&self) -> WriteOp {
        WriteOp::DeleteEntry {
            index: SETTLE,
            partition: self.partition(),
            sort: self.sort(),
        }
    }

    fn parse(sort: &str, value: &[u8]) -> Option<Marker> {
        let (s, i) = sort.split_once(':')?;
        let v: MarkerValue = serde_json::from_slice(value).ok()?;
        Some(Marker {
            session: SessionId::parse(s).ok()?,
            intent: PaymentIntentId::parse(i).ok()?,
            at_ms: v.at,
        })
    }
}

/// The partition of an object's markers.
fn partition_of(object: &str) -> String {
    let h = Sha256::digest(object.as_bytes());
    (h[0] % PARTITIONS).to_string()
}

/// One return to settle from its refund's final event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnMarker {
    /// The return (`ret_…`).
    pub return_id: String,
    pub refund: RefundId,
    /// When the refund's event was created (ms).
    pub at_ms: i64,
}

impl ReturnMarker {
    /// The marker of a final event of a return's refund; `None` for any other event.
    fn of_event(e: &Event) -> Option<ReturnMarker> {
        if !REFUND_FINAL_EVENTS.contains(&e.event_type.as_str()) {
            return None;
        }
        // The event's object is the refunded intent; the refund is its data.
        #[derive(Deserialize)]
        struct RefundData {
            id: String,
            reason: Option<String>,
        }
        let r: RefundData = serde_json::from_str(e.data.get()).ok()?;
        let id = r.reason?.strip_prefix(RETURN_REFUND_REASON)?.to_string();
        Some(ReturnMarker {
            return_id: valid_return_id(id)?,
            refund: RefundId::parse(&r.id).ok()?,
            at_ms: e.created.ms(),
        })
    }

    fn sort(&self) -> String {
        format!("{}:{}", self.return_id, self.refund)
    }

    fn put_op(&self) -> Option<WriteOp> {
        Some(WriteOp::PutEntry {
            index: SETTLE_RETURN,
            partition: partition_of(&self.return_id),
            sort: self.sort(),
            value: serde_json::to_vec(&MarkerValue { at: self.at_ms }).ok()?,
        })
    }

    /// Deletes the marker (in the return's batch, or alone when nothing changed).
    pub(crate) fn delete_op(&self) -> WriteOp {
        WriteOp::DeleteEntry {
            index: SETTLE_RETURN,
            partition: partition_of(&self.return_id),
            sort: self.sort(),
        }
    }

    fn parse(sort: &str, value: &[u8]) -> Option<ReturnMarker> {
        let (r, f) = sort.split_once(':')?;
        let v: MarkerValue = serde_json::from_slice(value).ok()?;
        Some(ReturnMarker {
            return_id: valid_return_id(r.to_string())?,
            refund: RefundId::parse(f).ok()?,
            at_ms: v.at,
        })
    }
}

/// `id` if it has the shape of a return id (`ret_` + 26 ULID characters): a refund's reason is
/// merchant-writable text, so only a well-formed id becomes a key.
fn valid_return_id(id: String) -> Option<String> {
    let body = id.strip_prefix("ret_")?;
    (body.len() == 26 && body.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(id)
}

/// Work for the consumer: a session or a return to settle.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Due {
    Session(Marker),
    Return(ReturnMarker),
}

impl Due {
    /// Identifies the marker (what deduplication and retry counts go by).
    fn key(&self) -> String {
        match self {
            Due::Session(m) => format!("s:{}", m.sort()),
            Due::Return(m) => format!("r:{}", m.sort()),
        }
    }

    fn at_ms(&self) -> i64 {
        match self {
            Due::Session(m) => m.at_ms,
            Due::Return(m) => m.at_ms,
        }
    }

    fn of_event(e: &Event) -> Option<Due> {
        Marker::of_event(e)
            .map(Due::Session)
            .or_else(|| ReturnMarker::of_event(e).map(Due::Return))
    }

    fn put_op(&self) -> Option<WriteOp> {
        match self {
            Due::Session(m) => m.put_op(),
            Due::Return(m) => m.put_op(),
        }
    }
}

/// Markers committed on this node and not yet taken by its consumer.
pub struct SettleQueue {
    items: Mutex<VecDeque<Due>>,
    /// Markers were dropped from a full queue: the consumer scans the index instead.
    overflow: AtomicBool,
    /// A consumer runs on this node; without one nothing is queued (the markers are durable
    /// and wait for a node that settles).
    consuming: AtomicBool,
    notify: Notify,
    max: usize,
}

impl SettleQueue {
    fn new(max: usize) -> SettleQueue {
        SettleQueue {
            items: Mutex::new(VecDeque::new()),
            overflow: AtomicBool::new(false),
            consuming: AtomicBool::new(false),
            notify: Notify::new(),
            max: max.max(1),
        }
    }

    fn push(&self, found: Vec<Due>) {
        if !self.consuming.load(Ordering::Acquire) {
            return;
        }
        {
            let mut q = self.items.lock().unwrap_or_else(PoisonError::into_inner);
            for m in found {
                if q.len() < self.max {
                    q.push_back(m);
                } else {
                    self.overflow.store(true, Ordering::Release);
                }
            }
        }
        self.notify.notify_one();
    }

    fn take(&self) -> (Vec<Due>, bool) {
        let items = self
            .items
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        (items, self.overflow.swap(false, Ordering::AcqRel))
    }
}

/// The commit hook writing settle markers (see the module documentation).
pub struct SettleHook {
    queue: Arc<SettleQueue>,
}

impl SettleHook {
    /// The hook of `ledger`, installed on first use. Attach it before anything can commit an
    /// intent's final event (the `ipay` binary does so before the engine starts; the gateway
    /// again when it starts last-mile, a no-op then).
    pub fn attach(ledger: &dyn Ledger, queue_max: usize) -> EngineResult<Arc<SettleHook>> {
        let hooks = ledger.commit_hooks().ok_or_else(|| {
            EngineError::Internal("this ledger takes no commit hook: sessions cannot settle".into())
        })?;
        Ok(hooks.get_or_install(|| SettleHook {
            queue: Arc::new(SettleQueue::new(queue_max)),
        })?)
    }
}

impl CommitHook for SettleHook {
    fn prepare(&self, batch: &mut WriteBatch) -> Option<AfterCommit> {
        let found: Vec<Due> = batch.events().filter_map(Due::of_event).collect();
        if found.is_empty() {
            return None;
        }
        batch.ops.extend(found.iter().filter_map(Due::put_op));
        let queue = self.queue.clone();
        Some(Box::new(move |r| {
            if r.is_ok() {
                queue.push(found);
            }
        }))
    }
}

/// Per-node state of the consumer.
pub(crate) struct Settler {
    hook: Arc<SettleHook>,
    /// Markers this node has settled (or found stale) since it started: what tests wait on.
    settled: watch::Sender<u64>,
}

impl Settler {
    /// The consumer state over `hook`'s queue.
    pub(crate) fn new(hook: Arc<SettleHook>) -> Settler {
        Settler {
            hook,
            settled: watch::channel(0).0,
        }
    }
}

impl LastMile {
    /// Counts markers this node has processed; changes after each one (for tests and
    /// diagnostics: a signal instead of a sleep).
    pub fn settled_markers(&self) -> watch::Receiver<u64> {
        self.sessions.settler.settled.subscribe()
    }

    /// Applies one marker: records the intent's outcome on the session if it still awaits that
    /// intent (deleting the marker in the same batch), else deletes the stale marker.
    pub async fn settle_marker(&self, m: Marker) -> EngineResult<()> {
        let intent = self.engine.ledger().get_intent(m.intent).await?;
        let applied = match intent.filter(|i| i.status != IntentStatus::Pending) {
            None => false,
            Some(intent) => {
                let out = self
                    .ps_mutate(m.session, async |s, c| {
                        let waiting = s.status == SessionStatus::PaymentPending
                            && s.payment_intent == Some(m.intent);
                        if waiting {
                            self.ps_apply_intent_outcome(s, c, &intent).await?;
                            c.batch.push(m.delete_op());
                        }
                        Ok(waiting)
                    })
                    .await;
                match out {
                    Ok((_, applied)) => applied,
                    Err(EngineError::NotFound { .. }) => false,
                    Err(e) => return Err(e),
                }
            }
        };
        if !applied {
            let mut b = WriteBatch::new();
            b.push(m.delete_op());
            self.engine.ledger().submit(b).await?;
        }
        self.sessions.settler.settled.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Applies one return marker: the return takes its refund's committed outcome (deleting the
    /// marker in the return's batch), else the stale marker is deleted.
    pub async fn settle_return_marker(&self, m: &ReturnMarker) -> EngineResult<()> {
        let applied = match self.ret_settle_from_refund(m).await {
            Ok(applied) => applied,
            Err(EngineError::NotFound { .. }) => false,
            Err(e) => return Err(e),
        };
        if !applied {
            let mut b = WriteBatch::new();
            b.push(m.delete_op());
            self.engine.ledger().submit(b).await?;
        }
        self.sessions.settler.settled.send_modify(|n| *n += 1);
        Ok(())
    }

    async fn settle_due(&self, d: &Due) -> EngineResult<()> {
        match d {
            Due::Session(m) => self.settle_marker(*m).await,
            Due::Return(m) => self.settle_return_marker(m).await,
        }
    }

    /// Every marker in both indexes (all of them, or those older than `older_than_ms`).
    async fn pending_markers(&self, older_than_ms: Option<i64>) -> EngineResult<Vec<Due>> {
        let mut out = Vec::new();
        for index in [SETTLE, SETTLE_RETURN] {
            for p in 0..PARTITIONS {
                self.scan_partition(index, &p.to_string(), &mut out).await?;
            }
        }
        out.retain(|d| older_than_ms.is_none_or(|t| d.at_ms() < t));
        Ok(out)
    }

    /// Appends the markers of one partition of `index` to `out`.
    async fn scan_partition(&self, index: &str, p: &str, out: &mut Vec<Due>) -> EngineResult<()> {
        let mut range = EntryRange::all(SCAN_PAGE);
        loop {
            let page = self.engine.ledger().scan_entries(index, p, &range).await?;
            let last = page.last().map(|(s, _)| s.clone());
            out.extend(page.iter().filter_map(|(s, v)| match index {
                SETTLE => Marker::parse(s, v).map(Due::Session),
                _ => ReturnMarker::parse(s, v).map(Due::Return),
            }));
            match last {
                Some(l) if page.len() == SCAN_PAGE => range = EntryRange::after(&l, SCAN_PAGE),
                _ => return Ok(()),
            }
        }
    }

    /// Applies `markers`, at most `settle_concurrency` at once; returns those that failed.
    async fn settle_all(&self, markers: Vec<Due>) -> Vec<Due> {
        use futures::StreamExt;
        let n = self.ps_scfg().settle_concurrency.max(1);
        let failed: Vec<Due> = futures::stream::iter(markers)
            .map(|m| async move {
                self.settle_due(&m).await.err().map(|e| {
                    tracing::warn!(error = %e, marker = %m.key(), "settling a marker failed; retried");
                    m
                })
            })
            .buffer_unordered(n)
            .filter_map(|m| async move { m })
            .collect()
            .await;
        failed
    }

    /// Starts this node's consumer: a scan of every marker first (what a crash left behind),
    /// then the markers this node commits, as they commit, plus the periodic sweep for old
    /// ones. With `settle_concurrency = 0` the node settles nothing (markers wait for a node
    /// that does).
    pub(crate) fn spawn_settler(self: &Arc<Self>) {
        if self.ps_scfg().settle_concurrency == 0 {
            return;
        }
        let weak = Arc::downgrade(self);
        let queue = self.sessions.settler.hook.queue.clone();
        queue.consuming.store(true, Ordering::Release);
        let sweep = Duration::from_secs(self.ps_scfg().settle_sweep_secs.max(1));
        let retry = Duration::from_millis(self.ps_scfg().settle_retry_ms.max(10));
        tokio::spawn(async move {
            let mut scan = Some(None);
            let mut retrying: Vec<Due> = Vec::new();
            let mut attempts: HashMap<String, u32> = HashMap::new();
            loop {
                let Some(lm) = weak.upgrade() else {
                    // Another consumer of this ledger may still be running: hand the wake on.
                    queue.notify.notify_one();
                    return;
                };
                let (mut work, overflow) = queue.take();
                work.append(&mut retrying);
                if overflow {
                    scan = Some(None);
                }
                if let Some(older_than) = scan.take() {
                    match lm.pending_markers(older_than).await {
                        Ok(found) => work.extend(found),
                        Err(e) => tracing::warn!(error = %e, "scanning settle markers failed"),
                    }
                }
                work.sort_by_cached_key(Due::key);
                work.dedup_by_key(|m| m.key());
                let failed = lm.settle_all(work).await;
                retrying = quick_retries(failed, &mut attempts);
                let cutoff = lm.engine.clock().now().ms()
                    - i64::try_from(lm.ps_scfg().settle_sweep_after_ms).unwrap_or(i64::MAX);
                drop(lm);
                let wait = if retrying.is_empty() { sweep } else { retry };
                tokio::select! {
                    _ = queue.notify.notified() => {}
                    _ = tokio::time::sleep(wait) => {
                        if retrying.is_empty() {
                            scan = Some(Some(cutoff));
                        }
                    }
                }
            }
        });
    }
}

/// The failed markers to retry soon: those failed fewer than [`MAX_QUICK_RETRIES`] times in a
/// row. `attempts` keeps the count of the ones still failing only.
fn quick_retries(failed: Vec<Due>, attempts: &mut HashMap<String, u32>) -> Vec<Due> {
    let mut next = HashMap::with_capacity(failed.len());
    let mut retry = Vec::with_capacity(failed.len());
    for m in failed {
        let n = attempts.get(&m.key()).copied().unwrap_or(0) + 1;
        if n <= MAX_QUICK_RETRIES {
            next.insert(m.key(), n);
            retry.push(m);
        }
    }
    *attempts = next;
    retry
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipay_engine::clock::Timestamp;
    use ipay_engine::ids::{EventId, MerchantId};

    fn event(t: &str, meta: serde_json::Value) -> Event {
        let pi = PaymentIntentId::new_at(1_000);
        Event::new(
            MerchantId::new_at(1),
            false,
            t,
            Timestamp(5_000),
            pi.to_string(),
            &serde_json::json!({"id": pi, "metadata": meta}),
        )
    }

    #[test]
    fn only_final_events_of_last_mile_intents_make_markers() {
        let s = SessionId::new_at(2_000);
        let m = Marker::of_event(&event(
            "payment_intent.succeeded",
            serde_json::json!({"ipay_session": s}),
        ))
        .unwrap();
        assert_eq!((m.session, m.at_ms), (s, 5_000));
        let parsed = Marker::parse(&m.sort(), br#"{"at":5000}"#).unwrap();
        assert_eq!(parsed, m);
        for t in FINAL_EVENTS {
            let e = event(t, serde_json::json!({"ipay_session": s}));
            assert!(Marker::of_event(&e).is_some(), "{t}");
        }
        let created = event(
            "payment_intent.created",
            serde_json::json!({"ipay_session": s}),
        );
        assert!(Marker::of_event(&created).is_none());
        let other = event(
            "payment_intent.succeeded",
            serde_json::json!({"order": "1"}),
        );
        assert!(Marker::of_event(&other).is_none());
    }

    #[test]
    fn a_failing_marker_is_retried_quickly_a_bounded_number_of_times() {
        let m = Due::Session(Marker {
            session: SessionId::new_at(2_000),
            intent: PaymentIntentId::new_at(1_000),
            at_ms: 0,
        });
        let mut attempts = HashMap::new();
        for _ in 0..MAX_QUICK_RETRIES {
            assert_eq!(
                quick_retries(vec![m.clone()], &mut attempts),
                vec![m.clone()]
            );
        }
        assert!(quick_retries(vec![m.clone()], &mut attempts).is_empty());
        assert!(attempts.is_empty(), "left to the sweep, forgotten here");
        assert_eq!(quick_retries(vec![m.clone()], &mut attempts), vec![m]);
    }

    #[test]
    fn the_hook_adds_the_marker_to_the_events_batch() {
        let hook = SettleHook {
            queue: Arc::new(SettleQueue::new(1)),
        };
        hook.queue.consuming.store(true, Ordering::Release);
        let s = SessionId::new_at(2_000);
        let mut b = WriteBatch::new();
        let e = event(
            "payment_intent.succeeded",
            serde_json::json!({"ipay_session": s}),
        );
        b.push(WriteOp::PutEvent(e.clone()));
        b.push(WriteOp::PutEvent(e));
        let after = hook.prepare(&mut b).unwrap();
        let markers = b
            .ops
            .iter()
            .filter(|op| matches!(op, WriteOp::PutEntry { index, .. } if *index == SETTLE))
            .count();
        assert_eq!(markers, 2);
        assert!(hook.queue.take().0.is_empty(), "queued before the commit");
        after(&Ok(()));
        let (items, overflow) = hook.queue.take();
        assert_eq!(items.len(), 1);
        assert!(overflow, "the second marker overflowed the queue of one");
        let mut none = WriteBatch::new();
        assert!(hook.prepare(&mut none).is_none());
    }

    fn refund_event(t: &str, reason: Option<&str>) -> Event {
        let re = RefundId::new_at(3_000);
        Event::new(
            MerchantId::new_at(1),
            false,
            t,
            Timestamp(6_000),
            PaymentIntentId::new_at(1_000).to_string(),
            &serde_json::json!({"id": re, "reason": reason}),
        )
    }

    #[test]
    fn only_final_events_of_return_refunds_make_return_markers() {
        let ret = format!("ret_{}", &EventId::new_at(1).to_string()[4..]);
        let reason = format!("{RETURN_REFUND_REASON}{ret}");
        for t in REFUND_FINAL_EVENTS {
            let m = ReturnMarker::of_event(&refund_event(t, Some(&reason))).unwrap();
            assert_eq!((m.return_id.as_str(), m.at_ms), (ret.as_str(), 6_000));
            assert_eq!(ReturnMarker::parse(&m.sort(), br#"{"at":6000}"#), Some(m));
        }
        let created = refund_event("refund.created", Some(&reason));
        assert!(ReturnMarker::of_event(&created).is_none());
        for other in [
            None,
            Some("damaged"),
            Some("return ret_short"),
            Some("return ret_../x"),
        ] {
            let e = refund_event("refund.succeeded", other);
            assert!(ReturnMarker::of_event(&e).is_none(), "{other:?}");
        }
        let mut b = WriteBatch::new();
        b.push(WriteOp::PutEvent(refund_event(
            "refund.failed",
            Some(&reason),
        )));
        let hook = SettleHook {
            queue: Arc::new(SettleQueue::new(4)),
        };
        assert!(hook.prepare(&mut b).is_some());
        let written = b
            .ops
            .iter()
            .filter(|op| matches!(op, WriteOp::PutEntry { index, .. } if *index == SETTLE_RETURN));
        assert_eq!(written.count(), 1);
    }
}
