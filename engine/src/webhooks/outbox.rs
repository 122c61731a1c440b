//! The outbox commit hook: every batch that appends events also appends, in the same batch, a
//! fan-out marker per event in the due index and the event's entry in the per-day event index.
//! Event and outbox record are therefore one durable step: no event without its delivery, no
//! delivery of an event that was never committed.
//!
//! [`Outbox`] is installed once on the ledger ([`Outbox::attach`], by whoever wires the process,
//! before the engine starts writing), so every writer gets it without knowing about webhooks.
//! After a batch with events commits, it wakes this process's dispatcher shards through its
//! [`Signal`] (other nodes find the markers on their next poll). It owns nothing else: endpoint
//! resolution, sending and retries are in [`super::dispatch`].
//!
//! A marker costs a second write when the dispatcher resolves it, so events of a merchant known
//! to have no endpoint get none (their per-day entry, which recovery reads, is still written).
//! What is known comes from the dispatcher's resolutions and is forgotten the moment any batch
//! touches endpoints or manifests; on a shared ledger (cluster mode), where other nodes change
//! endpoints unseen, every event gets its marker.

use super::model::{self, DUE, ENDPOINT, ENDPOINTS_BY_MERCHANT, EVENTS_BY_DAY, MANIFEST_DISABLED};
use super::retention::{self, Registered};
use crate::error::StoreError;
use crate::ids::MerchantId;
use crate::model::Event;
use crate::store::hook::{AfterCommit, CommitHook};
use crate::store::{Ledger, WriteBatch, WriteOp};
use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
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
    /// A signal for every dispatch shard.
    pub fn new() -> Signal {
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

/// The value of an [`EVENTS_BY_DAY`] entry.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct DayEntry {
    #[serde(rename = "type")]
    pub event_type: String,
    pub object_id: String,
}

/// The fan-out marker of one event, due at `due`: its entry in the due index (value = the
/// event's JSON).
fn marker_op(e: &Event, due: i64) -> Option<WriteOp> {
    let shard = model::shard_of(e.merchant_id, &e.object_id);
    Some(WriteOp::PutEntry {
        index: DUE,
        partition: model::due_partition(shard, model::minute_of(due)),
        sort: model::due_sort(due, 'f', &e.id.to_string()),
        value: serde_json::to_vec(e).ok()?,
    })
}

/// The event's entry in the per-day event index (what recovery reads).
fn day_op(e: &Event) -> Option<WriteOp> {
    Some(WriteOp::PutEntry {
        index: EVENTS_BY_DAY,
        partition: model::day_partition(e.merchant_id, e.livemode, e.created.ms()),
        sort: e.id.to_string(),
        value: serde_json::to_vec(&DayEntry {
            event_type: e.event_type.clone(),
            object_id: e.object_id.clone(),
        })
        .ok()?,
    })
}

/// Whether `op` can give a merchant an endpoint it did not have: an API endpoint written or
/// indexed, a manifest naming an endpoint, a manifest endpoint enabled again.
fn touches_endpoints(op: &WriteOp) -> bool {
    match op {
        WriteOp::PutService(s) => s.endpoint.is_some(),
        WriteOp::PutRecord { kind, .. } | WriteOp::DeleteRecord { kind, .. } => {
            *kind == ENDPOINT || *kind == MANIFEST_DISABLED
        }
        WriteOp::PutEntry { index, .. } | WriteOp::DeleteEntry { index, .. } => {
            *index == ENDPOINTS_BY_MERCHANT
        }
        _ => false,
    }
}

/// Most merchants (and modes) remembered as having no endpoint; beyond it, events of others
/// simply keep their markers.
const MAX_KNOWN_WITHOUT_ENDPOINTS: usize = 100_000;

/// Most merchants (and modes) remembered as having every endpoint backing off.
const MAX_KNOWN_HELD: usize = 100_000;

/// Which merchants are known to have no endpoint at all, and which have every endpoint backing
/// off (until when).
#[derive(Default)]
struct Knowledge {
    without: HashSet<(MerchantId, bool)>,
    held: HashMap<(MerchantId, bool), i64>,
    /// Moves when an endpoint change is prepared and again when it finished, so a resolution
    /// read before or during a change is never taken as current.
    epoch: u64,
    /// Endpoint-changing batches prepared and not yet finished.
    changing: usize,
}

/// The webhook outbox of one ledger: the commit hook that writes fan-out markers, and the
/// signal that wakes this process's dispatcher when some were committed.
pub struct Outbox {
    signal: Arc<Signal>,
    /// Off on a shared ledger: there, endpoint changes of other nodes are not seen here.
    skip_markers: bool,
    known: Arc<RwLock<Knowledge>>,
    /// Per-day event partitions registered for retention (one registration per partition
    /// and day, not one per event).
    registered: Arc<Mutex<Registered>>,
}

impl Outbox {
    /// An outbox not yet attached to a ledger (see [`Outbox::attach`]). `shared`: the ledger is
    /// written by other processes too, so every event keeps its marker.
    pub fn new(shared: bool) -> Outbox {
        Outbox {
            signal: Arc::new(Signal::new()),
            skip_markers: !shared,
            known: Arc::default(),
            registered: Arc::default(),
        }
    }

    /// The outbox of `ledger`, installing it as the ledger's commit hook if it has none yet.
    /// Attach before anything writes events (before the engine starts): events committed
    /// earlier have no fan-out marker and are never delivered.
    pub fn attach(ledger: &dyn Ledger) -> Result<Arc<Outbox>, StoreError> {
        let shared = ledger.shared();
        ledger
            .commit_hooks()
            .ok_or_else(|| {
                StoreError(
                    "this ledger takes no commit hook, so it cannot carry the webhook outbox"
                        .into(),
                )
            })?
            .get_or_install(|| Outbox::new(shared))
    }

    /// What wakes this process's dispatcher shards.
    pub fn signal(&self) -> &Arc<Signal> {
        &self.signal
    }

    /// The current endpoint epoch: read it before reading a merchant's endpoints, and hand it
    /// to [`Outbox::note_no_endpoints`] with what was read.
    pub fn endpoint_epoch(&self) -> u64 {
        self.known.read().epoch
    }

    /// Records that the merchant had no enabled endpoint in a read started at `epoch`; ignored
    /// when endpoints changed since (or are changing), so a stale read never hides a new one.
    pub fn note_no_endpoints(&self, merchant: MerchantId, livemode: bool, epoch: u64) {
        if !self.skip_markers {
            return;
        }
        let mut k = self.known.write();
        if k.epoch == epoch && k.changing == 0 && k.without.len() < MAX_KNOWN_WITHOUT_ENDPOINTS {
            k.without.insert((merchant, livemode));
        }
    }

    /// Records that every enabled endpoint of the merchant backs off until `until` (the end of
    /// the earliest window), as read at `epoch`: markers of its events written before then are
    /// written due at `until`, so nothing reads them while nothing could be sent. Ignored when
    /// endpoints changed since the read.
    pub fn note_held(&self, merchant: MerchantId, livemode: bool, until: i64, epoch: u64) {
        if !self.skip_markers {
            return;
        }
        let mut k = self.known.write();
        let key = (merchant, livemode);
        if k.epoch == epoch
            && k.changing == 0
            && (k.held.len() < MAX_KNOWN_HELD || k.held.contains_key(&key))
        {
            k.held.insert(key, until);
        }
    }

    /// Forgets a hold: some endpoint of the merchant may be tried again.
    pub fn forget_held(&self, merchant: MerchantId, livemode: bool) {
        if !self.skip_markers {
            return;
        }
        let key = (merchant, livemode);
        if self.known.read().held.contains_key(&key) {
            self.known.write().held.remove(&key);
        }
    }

    /// Whether events of this merchant and mode currently go without a fan-out marker.
    pub fn knows_no_endpoints(&self, merchant: MerchantId, livemode: bool) -> bool {
        self.known.read().without.contains(&(merchant, livemode))
    }

    /// An endpoint change is being written: forget everything known until it finished.
    fn begin_change(&self) {
        let mut k = self.known.write();
        k.epoch += 1;
        k.changing += 1;
        k.without.clear();
        k.held.clear();
    }
}

impl CommitHook for Outbox {
    fn prepare(&self, batch: &mut WriteBatch) -> Option<AfterCommit> {
        let change = self.skip_markers && batch.ops.iter().any(touches_endpoints);
        if change {
            self.begin_change();
        }
        let mut extra = Vec::new();
        let mut wake = Vec::new();
        let mut registering = false;
        {
            let known = self.known.read();
            let mut registered = self.registered.lock();
            for e in batch.events() {
                let key = (e.merchant_id, e.livemode);
                let created = e.created.ms();
                // Held: due when the merchant's earliest back-off window ends; the dispatcher's
                // scan reaches it then, with no wake-up now.
                let held = known.held.get(&key).copied().filter(|t| *t > created);
                if !known.without.contains(&key)
                    && let Some(op) = marker_op(e, held.unwrap_or(created))
                {
                    extra.push(op);
                    if held.is_none() {
                        wake.push((
                            model::shard_of(e.merchant_id, &e.object_id),
                            model::minute_of(created),
                        ));
                    }
                }
                extra.extend(day_op(e));
                let day = model::day_partition(e.merchant_id, e.livemode, e.created.ms());
                if let Some(op) = registered.op(
                    retention::Group::Events,
                    model::shard_of(e.merchant_id, &e.object_id),
                    e.created.ms(),
                    'V',
                    &day,
                ) {
                    extra.push(op);
                    registering = true;
                }
            }
        }
        batch.ops.extend(extra);
        if wake.is_empty() && !change && !registering {
            return None;
        }
        let signal = self.signal.clone();
        let known = change.then(|| self.known.clone());
        let registered = registering.then(|| self.registered.clone());
        Some(Box::new(move |r| {
            if r.is_err()
                && let Some(registered) = registered
            {
                // A registration that was never written must be written again.
                registered.lock().clear();
            }
            if let Some(known) = known {
                let mut k = known.write();
                k.epoch += 1;
                k.changing = k.changing.saturating_sub(1);
            }
            if r.is_ok() {
                for (shard, minute) in wake {
                    signal.wake(shard, minute);
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;

    fn event(merchant: MerchantId) -> Event {
        Event::new(
            merchant,
            false,
            "payment_intent.succeeded",
            Timestamp(1_800_000_000_000),
            "pi_x".to_string(),
            &serde_json::json!({"id": "pi_x"}),
        )
    }

    fn all_indexes_of(outbox: &Outbox, ops: Vec<WriteOp>) -> Vec<&'static str> {
        let mut b = WriteBatch::new();
        b.ops = ops;
        if let Some(after) = outbox.prepare(&mut b) {
            after(&Ok(()));
        }
        b.ops
            .iter()
            .filter_map(|op| match op {
                WriteOp::PutEntry { index, .. } => Some(*index),
                _ => None,
            })
            .collect()
    }

    /// The indexes a batch writes to, leaving out retention registrations (tested below).
    fn indexes_of(outbox: &Outbox, ops: Vec<WriteOp>) -> Vec<&'static str> {
        all_indexes_of(outbox, ops)
            .into_iter()
            .filter(|i| *i != retention::EXPIRE)
            .collect()
    }

    #[test]
    fn a_days_event_partition_is_registered_for_retention_once() {
        let outbox = Outbox::new(false);
        let m = MerchantId::new_at(1);
        let put = |m| vec![WriteOp::PutEvent(event(m))];
        assert_eq!(
            all_indexes_of(&outbox, put(m)),
            vec![DUE, EVENTS_BY_DAY, retention::EXPIRE]
        );
        assert_eq!(all_indexes_of(&outbox, put(m)), vec![DUE, EVENTS_BY_DAY]);
        // Another merchant's day partition is registered on its own.
        assert_eq!(
            all_indexes_of(&outbox, put(MerchantId::new_at(2))),
            vec![DUE, EVENTS_BY_DAY, retention::EXPIRE]
        );
        // A batch that failed may not have written its registration: it is written again.
        let mut b = WriteBatch::new();
        b.ops = put(MerchantId::new_at(3));
        let after = outbox.prepare(&mut b).expect("a wake-up to run");
        after(&Err(StoreError("disk full".into())));
        assert!(all_indexes_of(&outbox, put(MerchantId::new_at(3))).contains(&retention::EXPIRE));
    }

    #[test]
    fn events_of_a_merchant_without_endpoints_get_no_marker_until_endpoints_change() {
        let outbox = Outbox::new(false);
        let m = MerchantId::new_at(1);
        let put = |m| vec![WriteOp::PutEvent(event(m))];
        assert_eq!(indexes_of(&outbox, put(m)), vec![DUE, EVENTS_BY_DAY]);
        outbox.note_no_endpoints(m, false, outbox.endpoint_epoch());
        assert!(outbox.knows_no_endpoints(m, false));
        // The per-day entry stays: recovery of a later endpoint still finds the event.
        assert_eq!(indexes_of(&outbox, put(m)), vec![EVENTS_BY_DAY]);
        // Another merchant, or the same merchant's other mode, is not affected.
        assert_eq!(
            indexes_of(&outbox, put(MerchantId::new_at(2))),
            vec![DUE, EVENTS_BY_DAY]
        );
        // An endpoint is added: markers come back at once, in that very batch too.
        let mut with_endpoint = vec![WriteOp::PutEntry {
            index: ENDPOINTS_BY_MERCHANT,
            partition: model::merchant_partition(m, false),
            sort: "we_1".into(),
            value: Vec::new(),
        }];
        with_endpoint.extend(put(m));
        assert_eq!(
            indexes_of(&outbox, with_endpoint),
            vec![ENDPOINTS_BY_MERCHANT, DUE, EVENTS_BY_DAY]
        );
        assert!(!outbox.knows_no_endpoints(m, false));
        assert_eq!(indexes_of(&outbox, put(m)), vec![DUE, EVENTS_BY_DAY]);
    }

    #[test]
    fn a_resolution_read_before_an_endpoint_change_is_not_trusted() {
        let outbox = Outbox::new(false);
        let m = MerchantId::new_at(1);
        let seen = outbox.endpoint_epoch();
        // An endpoint record is written while the dispatcher's read is under way.
        let mut b = WriteBatch::new();
        b.push(WriteOp::PutRecord {
            kind: ENDPOINT,
            key: "we_1".into(),
            value: Vec::new(),
        });
        let after = outbox
            .prepare(&mut b)
            .expect("an endpoint change is tracked");
        outbox.note_no_endpoints(m, false, seen);
        assert!(!outbox.knows_no_endpoints(m, false));
        // Nor is one started while the change is still being committed.
        outbox.note_no_endpoints(m, false, outbox.endpoint_epoch());
        assert!(!outbox.knows_no_endpoints(m, false));
        after(&Ok(()));
        outbox.note_no_endpoints(m, false, seen);
        assert!(!outbox.knows_no_endpoints(m, false));
        outbox.note_no_endpoints(m, false, outbox.endpoint_epoch());
        assert!(outbox.knows_no_endpoints(m, false));
    }

    /// The due time (ms) of the fan-out marker a batch with one event of `m` writes.
    fn marker_due(outbox: &Outbox, m: MerchantId) -> Option<i64> {
        let mut b = WriteBatch::new();
        b.push(WriteOp::PutEvent(event(m)));
        let _ = outbox.prepare(&mut b);
        b.ops.iter().find_map(|op| match op {
            WriteOp::PutEntry { index, sort, .. } if *index == DUE => sort[..13].parse().ok(),
            _ => None,
        })
    }

    #[test]
    fn markers_of_a_merchant_whose_endpoints_all_back_off_are_due_when_the_window_ends() {
        let outbox = Outbox::new(false);
        let m = MerchantId::new_at(1);
        let created = 1_800_000_000_000;
        assert_eq!(marker_due(&outbox, m), Some(created));
        outbox.note_held(m, false, created + 10_000, outbox.endpoint_epoch());
        assert_eq!(marker_due(&outbox, m), Some(created + 10_000));
        // Others are not affected; a hold already over changes nothing.
        assert_eq!(marker_due(&outbox, MerchantId::new_at(2)), Some(created));
        outbox.note_held(m, false, created - 1, outbox.endpoint_epoch());
        assert_eq!(marker_due(&outbox, m), Some(created));
        // A hold read before an endpoint change is not taken; a change drops holds.
        let seen = outbox.endpoint_epoch();
        let mut b = WriteBatch::new();
        b.push(WriteOp::PutRecord {
            kind: ENDPOINT,
            key: "we_1".into(),
            value: Vec::new(),
        });
        if let Some(after) = outbox.prepare(&mut b) {
            after(&Ok(()));
        }
        outbox.note_held(m, false, created + 10_000, seen);
        assert_eq!(marker_due(&outbox, m), Some(created));
        outbox.note_held(m, false, created + 10_000, outbox.endpoint_epoch());
        outbox.forget_held(m, false);
        assert_eq!(marker_due(&outbox, m), Some(created));
    }

    #[test]
    fn on_a_shared_ledger_every_event_keeps_its_marker() {
        let outbox = Outbox::new(true);
        let m = MerchantId::new_at(1);
        outbox.note_no_endpoints(m, false, outbox.endpoint_epoch());
        assert!(!outbox.knows_no_endpoints(m, false));
        assert_eq!(
            indexes_of(&outbox, vec![WriteOp::PutEvent(event(m))]),
            vec![DUE, EVENTS_BY_DAY]
        );
    }
}
