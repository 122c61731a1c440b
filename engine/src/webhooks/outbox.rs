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

use super::model::{self, DUE, EVENTS_BY_DAY};
use crate::error::StoreError;
use crate::model::Event;
use crate::store::hook::{AfterCommit, CommitHook};
use crate::store::{Ledger, WriteBatch, WriteOp};
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

/// The webhook outbox of one ledger: the commit hook that writes fan-out markers, and the
/// signal that wakes this process's dispatcher when some were committed.
pub struct Outbox {
    signal: Arc<Signal>,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox::new()
    }
}

impl Outbox {
    /// An outbox not yet attached to a ledger (see [`Outbox::attach`]).
    pub fn new() -> Outbox {
        Outbox {
            signal: Arc::new(Signal::new()),
        }
    }

    /// The outbox of `ledger`, installing it as the ledger's commit hook if it has none yet.
    /// Attach before anything writes events (before the engine starts): events committed
    /// earlier have no fan-out marker and are never delivered.
    pub fn attach(ledger: &dyn Ledger) -> Result<Arc<Outbox>, StoreError> {
        ledger
            .commit_hooks()
            .ok_or_else(|| {
                StoreError(
                    "this ledger takes no commit hook, so it cannot carry the webhook outbox"
                        .into(),
                )
            })?
            .get_or_install(Outbox::new)
    }

    /// What wakes this process's dispatcher shards.
    pub fn signal(&self) -> &Arc<Signal> {
        &self.signal
    }
}

impl CommitHook for Outbox {
    fn prepare(&self, batch: &mut WriteBatch) -> Option<AfterCommit> {
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
        if wake.is_empty() {
            return None;
        }
        batch.ops.extend(extra);
        let signal = self.signal.clone();
        Some(Box::new(move |r| {
            if r.is_ok() {
                for (shard, minute) in wake {
                    signal.wake(shard, minute);
                }
            }
        }))
    }
}
