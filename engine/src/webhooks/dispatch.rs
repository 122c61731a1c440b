//! The dispatcher: one task per owned shard reads what is due from the due index, fans events
//! out into deliveries, sends them, and records each outcome.
//!
//! A shard's bookkeeping is serial: each step gathers finished attempts and due entries,
//! writes every change they cause as ONE ledger batch, waits for it, and only then starts the
//! sends it decided on. So a step always reads what earlier steps wrote, and nothing is sent
//! that is not durably recorded as pending first. Sends run concurrently (bounded per shard and
//! per endpoint); their outcomes come back to the shard's task on a channel.
//!
//! Memory per pending delivery is zero: pending work lives only in the due index. In memory
//! are the deliveries being sent (bounded by `max_in_flight_per_shard`) and the endpoint cache.

use super::WebhookConfig;
use super::backoff::Backoff;
use super::model::{
    self, AttemptLog, AttemptStatus, CHAIN, CURSOR, DELIVERY, DROPPED, DUE, Delivery,
    DeliveryStatus, ENDPOINT, LOGS, LOGS_BY_EVENT, MANIFEST_DISABLED, MAX_ATTEMPTS, Payload,
    RETRY_SCHEDULE_SECS,
};
use super::outbox::{Outbox, Signal};
use super::resolve::{self, Resolved, Resolver, Target};
use super::retention::{self, Registered};
use super::transport::{Answer, SignedRequest, Transport};
use crate::clock::{Clock, Timestamp};
use crate::error::StoreError;
use crate::ids::{MerchantId, RequestId};
use crate::model::Event;
use crate::store::{EntryRange, HotState, Ledger, WriteBatch, WriteOp};
use crate::url_policy::UrlPolicy;
use dashmap::DashMap;
use futures::StreamExt;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, watch};

/// A scan cursor only moves past a minute this long after it ended, so a marker committed late
/// (by a slow write, or by another node whose clock is behind) is still found.
const CURSOR_GRACE_MS: i64 = 5 * 60_000;
/// Ordering chains a shard keeps in memory (beyond this, chains are read from the ledger).
const MAX_KNOWN_CHAINS: usize = 16_384;
/// Entries read when a chain is first met; a chain with fewer is known completely.
const CHAIN_READ: usize = 64;
/// Objects a shard remembers as having a parked fan-out marker (beyond this, markers are
/// fanned out into held deliveries as before instead of being parked).
const MAX_PARKED_OBJECTS: usize = 65_536;
/// Chain reads one shard step has outstanding at once.
const CHAIN_READ_CONCURRENCY: usize = 4;
/// The whole retry schedule, ms: a delivery held back this long by its endpoint's back-off
/// is dropped, as it would have been after its last retry.
const SCHEDULE_MS: i64 = {
    let mut total = 0;
    let mut i = 0;
    while i < RETRY_SCHEDULE_SECS.len() {
        total += RETRY_SCHEDULE_SECS[i];
        i += 1;
    }
    total * 1000
};

/// State shared by the shards of one node.
pub struct Shared {
    pub ledger: Arc<dyn Ledger>,
    pub clock: Arc<dyn Clock>,
    pub cfg: WebhookConfig,
    /// Where signed requests go out ([`super::transport::HttpTransport`] outside tests).
    pub transport: Arc<dyn Transport>,
    /// Which URLs deliveries may go to (checked before every send).
    pub url_policy: UrlPolicy,
    /// The ledger's outbox: its signal wakes the shards.
    pub outbox: Arc<Outbox>,
    pub resolver: Resolver,
    endpoint_limits: DashMap<String, Arc<Semaphore>>,
    /// Endpoints whose attempts keep failing wait instead of being called.
    pub backoff: Backoff,
    /// What each shard's task has done so far (one per shard).
    progress: Vec<watch::Sender<ShardProgress>>,
}

/// What one shard's task has done since this node started, published after every step so an
/// observer can wait for a step that began after some moment (tests asserting that nothing
/// was sent wait for such a step instead of sleeping, so they fail if the shard never ran).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardProgress {
    /// Scans of the due index begun.
    pub scans_started: u64,
    /// The number of the last scan whose step finished (written, or failed and dropped).
    pub scans_done: u64,
    /// Attempts started (sends handed to the transport).
    pub sends: u64,
}

impl Shared {
    pub fn new(
        ledger: Arc<dyn Ledger>,
        clock: Arc<dyn Clock>,
        cfg: WebhookConfig,
        url_policy: UrlPolicy,
        outbox: Arc<Outbox>,
        transport: Arc<dyn Transport>,
    ) -> Shared {
        let backoff = Backoff::new(cfg.backoff_after_failures, cfg.backoff_max_ms);
        Shared {
            resolver: Resolver::new(Duration::from_millis(cfg.endpoint_cache_ms), outbox.clone()),
            ledger,
            clock,
            cfg,
            transport,
            url_policy,
            outbox,
            endpoint_limits: DashMap::new(),
            backoff,
            progress: (0..model::SHARDS)
                .map(|_| watch::channel(ShardProgress::default()).0)
                .collect(),
        }
    }

    /// Follows what the task of `shard` has done ([`ShardProgress`]).
    pub fn progress(&self, shard: u32) -> Option<watch::Receiver<ShardProgress>> {
        self.progress.get(shard as usize).map(|p| p.subscribe())
    }

    fn note_progress(&self, shard: u32, f: impl FnOnce(&mut ShardProgress)) {
        if let Some(p) = self.progress.get(shard as usize) {
            p.send_modify(f);
        }
    }

    /// What wakes this node's shards.
    pub fn signal(&self) -> &Signal {
        self.outbox.signal()
    }

    fn endpoint_limit(&self, id: &str) -> Arc<Semaphore> {
        if let Some(s) = self.endpoint_limits.get(id) {
            return s.clone();
        }
        self.endpoint_limits
            .entry(id.to_string())
            .or_insert_with(|| {
                Arc::new(Semaphore::new(self.cfg.max_concurrency_per_endpoint.max(1)))
            })
            .clone()
    }
}

/// A delivery on its way out.
struct Job {
    delivery: Delivery,
    event: Arc<Event>,
    target: Option<Arc<Target>>,
}

enum Kind {
    Success,
    Failure {
        retry_after_secs: Option<u64>,
    },
    /// 410 Gone: disable the endpoint.
    Gone,
    /// Not sent: the URL policy refuses the endpoint's URL or every address its host resolves
    /// to. Dropped at once; retrying would only knock on the same door.
    Refused,
    /// Not sent: the endpoint is disabled.
    Disabled,
    /// Not sent: the endpoint no longer exists.
    Cancelled,
}

struct Outcome {
    job: Job,
    kind: Kind,
    status_code: Option<u16>,
    error: Option<String>,
    latency_ms: u64,
    request_id: String,
    at: i64,
}

/// Everything one step writes, and what it decided to send.
#[derive(Default)]
struct Step {
    ops: Vec<WriteOp>,
    deliveries: HashMap<String, Delivery>,
    send: Vec<Job>,
    chain_added: HashMap<String, Vec<String>>,
    chain_deleted: HashSet<(String, String)>,
    cursor: Option<i64>,
    /// The earliest minute this step writes a due entry in.
    earliest_due: Option<i64>,
}

impl Step {
    fn note_due(&mut self, due_ms: i64) {
        let m = model::minute_of(due_ms);
        self.earliest_due = Some(self.earliest_due.map_or(m, |e| e.min(m)));
    }

    fn put_due(&mut self, d: &Delivery) {
        self.note_due(d.due_ms);
        self.ops.push(WriteOp::PutEntry {
            index: DUE,
            partition: model::due_partition(d.shard, model::minute_of(d.due_ms)),
            sort: model::due_sort(d.due_ms, 'd', &d.id),
            value: d.id.as_bytes().to_vec(),
        });
    }

    fn delete_due(&mut self, shard: u32, due_ms: i64, kind: char, reference: &str) {
        self.ops.push(WriteOp::DeleteEntry {
            index: DUE,
            partition: model::due_partition(shard, model::minute_of(due_ms)),
            sort: model::due_sort(due_ms, kind, reference),
        });
    }

    fn save(&mut self, d: Delivery) {
        self.deliveries.insert(d.id.clone(), d);
    }
}

/// What one scan learnt ahead of processing its due entries.
#[derive(Default)]
struct Lookahead {
    /// Ordering chains read for the current partition's fan-out markers (chain → members).
    fetched: HashMap<String, Vec<String>>,
    /// Objects with a fan-out marker left due in this scan: their later markers stay too.
    held: HashSet<(MerchantId, String)>,
}

fn chain_partition(endpoint_id: &str, object_id: &str) -> Option<String> {
    let p = format!("{endpoint_id}:{object_id}");
    crate::store::valid_name(&p).then_some(p)
}

/// One shard's dispatcher.
pub struct ShardTask {
    sh: Arc<Shared>,
    shard: u32,
    cursor: i64,
    inflight: HashSet<String>,
    per_endpoint: HashMap<String, usize>,
    /// The last scan left due work for lack of room: scan again when attempts finish.
    blocked: bool,
    /// Ordering chains whose unfinished deliveries this task knows completely: read once from
    /// the ledger when first met, then kept up to date by this task's own fan-outs and
    /// finishes. Valid because only the holder of a shard's lease writes its chains; dropped
    /// with the task (lease lost) and cleared when a step fails to commit. Bounded by
    /// [`MAX_KNOWN_CHAINS`]; unknown chains are read as before.
    chains: HashMap<String, BTreeSet<String>>,
    /// Objects with a fan-out marker parked behind a back-off window, and the latest time one
    /// of them is parked until: a later event of the object is parked at least as long, so it
    /// can never be fanned out ahead of an earlier one. Only grows later (never shortened by a
    /// failed write, which at worst delays); entries past their time are pruned when full.
    parked: HashMap<(MerchantId, String), i64>,
    /// Dated partitions this task registered for retention ([`retention`]).
    registered: Registered,
    tx: mpsc::UnboundedSender<Outcome>,
}

/// Where shard `shard` starts scanning: its saved cursor, or, the first time, a grace period
/// before now, saved before anything is scanned. A restart must resume from a saved minute,
/// never from its own "now": due entries between the two (retries, markers written while
/// no step of the shard committed) would never be read again. `None`: stopped meanwhile.
async fn start_cursor(sh: &Shared, shard: u32, stop: &mut watch::Receiver<bool>) -> Option<i64> {
    let key = shard.to_string();
    loop {
        let fresh = model::minute_of(sh.clock.now_ms() - CURSOR_GRACE_MS);
        let r = match sh.ledger.get_record(CURSOR, &key).await {
            Ok(Some(b)) => {
                let saved = std::str::from_utf8(&b).ok().and_then(|s| s.parse().ok());
                if let Some(c) = saved {
                    return Some(c);
                }
                tracing::error!(shard, "webhooks: unreadable scan cursor; starting afresh");
                save_cursor(sh, &key, fresh).await
            }
            Ok(None) => save_cursor(sh, &key, fresh).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => return Some(fresh),
            Err(e) => {
                tracing::warn!(shard, error = %e, "webhooks: cannot read or save the scan cursor; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return None,
                }
            }
        }
    }
}

async fn save_cursor(sh: &Shared, key: &str, minute: i64) -> Result<(), StoreError> {
    let mut batch = WriteBatch::new();
    batch.ops.push(WriteOp::PutRecord {
        kind: CURSOR,
        key: key.to_string(),
        value: minute.to_string().into_bytes(),
    });
    sh.ledger.submit(batch).await
}

/// Runs shard `shard` until `stop` turns true.
pub async fn run_shard(sh: Arc<Shared>, shard: u32, mut stop: watch::Receiver<bool>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Outcome>();
    let Some(cursor) = start_cursor(&sh, shard, &mut stop).await else {
        return;
    };
    let mut t = ShardTask {
        sh: sh.clone(),
        shard,
        cursor,
        inflight: HashSet::new(),
        per_endpoint: HashMap::new(),
        blocked: false,
        chains: HashMap::new(),
        parked: HashMap::new(),
        registered: Registered::default(),
        tx,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(sh.cfg.poll_interval_ms.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut scan = true;
    let mut outcomes = Vec::new();
    loop {
        if outcomes.is_empty() && (!scan || t.budget() == 0) {
            tokio::select! {
                _ = stop.changed() => {}
                o = rx.recv() => if let Some(o) = o { outcomes.push(o) },
                _ = sh.signal().notified(shard) => scan = true,
                _ = tick.tick() => scan = true,
            }
        }
        if *stop.borrow() {
            break;
        }
        while outcomes.len() < sh.cfg.max_batch.max(1) {
            match rx.try_recv() {
                Ok(o) => outcomes.push(o),
                Err(_) => break,
            }
        }
        let mut step = Step::default();
        let mut failed = false;
        let outcomes_empty = outcomes.is_empty();
        for o in outcomes.drain(..) {
            if let Err(e) = t.complete(o, &mut step).await {
                tracing::warn!(shard, error = %e, "webhooks: recording an attempt failed");
                failed = true;
            }
        }
        if t.blocked && !outcomes_empty {
            scan = true;
        }
        let mut scanned = None;
        if scan && !failed {
            t.blocked = false;
            sh.note_progress(shard, |p| {
                p.scans_started += 1;
                scanned = Some(p.scans_started);
            });
            match t.scan(&mut step).await {
                Ok(more) => scan = more,
                Err(e) => {
                    tracing::warn!(shard, error = %e, "webhooks: scanning due deliveries failed");
                    failed = true;
                }
            }
        }
        if failed {
            // A step is all or nothing: a half-read step is never written.
            for j in &step.send {
                t.release(&j.delivery);
            }
        }
        let committed = !failed && t.commit(step).await;
        if let Some(n) = scanned {
            sh.note_progress(shard, |p| p.scans_done = n);
        }
        if !committed {
            // The in-memory chains (and registrations) may hold changes never written.
            t.chains.clear();
            t.registered.clear();
            // Nothing of this step was recorded: what was being sent is sent again once its
            // lease lapses, and retries stay where they were (at-least-once). Back off.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = stop.changed() => {}
            }
            scan = true;
        }
    }
}

impl ShardTask {
    fn budget(&self) -> usize {
        self.sh
            .cfg
            .max_in_flight_per_shard
            .saturating_sub(self.inflight.len())
    }

    /// Writes the step; on success starts its sends. False when the write failed.
    async fn commit(&mut self, mut step: Step) -> bool {
        for (_, d) in step.deliveries.drain() {
            match serde_json::to_vec(&d) {
                Ok(v) => step.ops.push(WriteOp::PutRecord {
                    kind: DELIVERY,
                    key: d.id.clone(),
                    value: v,
                }),
                Err(e) => tracing::error!(error = %e, "webhooks: cannot encode a delivery"),
            }
        }
        // A retry's due time counts from when its attempt ended, which can be long before
        // this step (a stalled task, a clock jump, a backlog of outcomes): an entry written
        // behind the cursor would never be read again, so the cursor goes back to it.
        if let Some(m) = step.earliest_due
            && m < step.cursor.unwrap_or(self.cursor)
        {
            step.cursor = Some(m);
        }
        if let Some(c) = step.cursor
            && c != self.cursor
        {
            step.ops.push(WriteOp::PutRecord {
                kind: CURSOR,
                key: self.shard.to_string(),
                value: c.to_string().into_bytes(),
            });
        }
        if !step.ops.is_empty() {
            let n = step.ops.len();
            let mut batch = WriteBatch::new();
            batch.ops = step.ops;
            if let Err(e) = self.sh.ledger.submit(batch).await {
                tracing::warn!(shard = self.shard, ops = n, error = %e, "webhooks: bookkeeping write failed");
                for j in &step.send {
                    self.release(&j.delivery);
                }
                return false;
            }
        }
        if let Some(c) = step.cursor {
            self.cursor = c;
        }
        if !step.send.is_empty() {
            let n = step.send.len() as u64;
            self.sh.note_progress(self.shard, |p| p.sends += n);
        }
        for job in step.send {
            let sh = self.sh.clone();
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let o = send(&sh, job).await;
                let _ = tx.send(o);
            });
        }
        true
    }

    fn take(&mut self, d: &Delivery) {
        self.inflight.insert(d.id.clone());
        *self.per_endpoint.entry(d.endpoint_id.clone()).or_default() += 1;
    }

    fn release(&mut self, d: &Delivery) {
        self.inflight.remove(&d.id);
        if let Some(n) = self.per_endpoint.get_mut(&d.endpoint_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_endpoint.remove(&d.endpoint_id);
            }
        }
    }

    fn saturated(&self, endpoint_id: &str) -> bool {
        self.per_endpoint.get(endpoint_id).copied().unwrap_or(0)
            >= self.sh.cfg.max_in_flight_per_endpoint.max(1)
    }

    /// Makes a pending delivery go out now if there is room (its due entry moves to the lease
    /// expiry, so a crash mid-send resends it then), else leaves it due now for a later scan.
    fn ready(
        &mut self,
        mut d: Delivery,
        event: Arc<Event>,
        target: Option<Arc<Target>>,
        step: &mut Step,
        now: i64,
    ) {
        d.status = DeliveryStatus::Pending;
        let room = self.budget() > 0 && !self.saturated(&d.endpoint_id);
        if let Some(until) = self.sh.backoff.hold_until(&d.endpoint_id, now, room) {
            // The endpoint is backing off: wait for its window without an attempt.
            d.due_ms = until;
            d.next_attempt = Some(Timestamp(until));
            step.put_due(&d);
            step.save(d);
            return;
        }
        let send = room;
        if !send {
            self.blocked = true;
        }
        d.due_ms = if send {
            now + self.sh.cfg.inflight_lease_ms as i64
        } else {
            now
        };
        d.next_attempt = Some(Timestamp(now));
        step.put_due(&d);
        if send {
            self.take(&d);
            step.send.push(Job {
                delivery: d.clone(),
                event,
                target,
            });
        }
        step.save(d);
    }

    /// Reads due entries of this shard and turns them into work. True if more is due.
    async fn scan(&mut self, step: &mut Step) -> Result<bool, StoreError> {
        let now = self.sh.clock.now_ms();
        if let Some(m) = self.sh.signal().take_min_minute(self.shard) {
            self.cursor = self.cursor.min(m);
        }
        let now_min = model::minute_of(now);
        let end = Bound::Excluded(format!("{:013}", now + 1));
        let mut new_cursor = self.cursor;
        let mut contiguous = true;
        let mut more = false;
        let mut taken = 0usize;
        let max_items = self.sh.cfg.max_batch.max(1);
        let mut m = self.cursor;
        let mut look = Lookahead::default();
        while m <= now_min {
            let room = max_items.saturating_sub(taken);
            if room == 0 {
                more = true;
                break;
            }
            let partition = model::due_partition(self.shard, m);
            let range = EntryRange {
                start: Bound::Unbounded,
                end: end.clone(),
                limit: room + self.inflight.len().min(1024),
                descending: false,
            };
            let entries = self.sh.ledger.scan_entries(DUE, &partition, &range).await?;
            let mut left = entries.len() == range.limit;
            let events;
            (events, look.fetched) = self.prefetch(&entries).await?;
            for ((sort, _), event) in entries.into_iter().zip(events) {
                if taken >= max_items {
                    left = true;
                    more = true;
                    break;
                }
                let Some((due_ms, kind, reference)) = parse_due(&sort) else {
                    step.ops.push(WriteOp::DeleteEntry {
                        index: DUE,
                        partition: partition.clone(),
                        sort,
                    });
                    continue;
                };
                if matches!(kind, 'f' | 'd') && self.budget() == 0 {
                    // Nothing more can be sent: leave the rest where it is, untouched.
                    self.blocked = true;
                    left = true;
                    break;
                }
                let done = match kind {
                    'f' => {
                        self.fan_out(due_ms, reference, event, step, now, &mut look)
                            .await?
                    }
                    'd' => self.due_delivery(due_ms, reference, step, now).await?,
                    _ => {
                        step.delete_due(self.shard, due_ms, kind, reference);
                        true
                    }
                };
                if done {
                    taken += 1;
                } else {
                    left = true;
                }
            }
            let ended = (m + 1) * 60_000 + CURSOR_GRACE_MS <= now;
            if contiguous && ended && !left {
                new_cursor = m + 1;
            } else {
                contiguous = false;
            }
            if left && self.budget() == 0 {
                // Out of room for sends: look again once attempts finish.
                more = true;
                break;
            }
            m += 1;
        }
        if new_cursor != self.cursor {
            step.cursor = Some(new_cursor);
        }
        Ok(more)
    }

    /// A fan-out marker: one delivery per endpoint that wants the event. Returns false when the
    /// marker must stay (its endpoints could not be resolved).
    async fn fan_out(
        &mut self,
        due_ms: i64,
        event_id: &str,
        event: Option<Result<Event, serde_json::Error>>,
        step: &mut Step,
        now: i64,
        look: &mut Lookahead,
    ) -> Result<bool, StoreError> {
        let event: Event = match event {
            Some(Ok(e)) => e,
            Some(Err(e)) => {
                step.delete_due(self.shard, due_ms, 'f', event_id);
                tracing::error!(event_id, error = %e, "webhooks: unreadable fan-out marker dropped");
                return Ok(true);
            }
            None => {
                // Past this step's room: stays due, looked at again when attempts finish.
                self.blocked = true;
                return Ok(false);
            }
        };
        let object = (event.merchant_id, event.object_id.clone());
        if look.held.contains(&object) {
            // An earlier event of this object stays due: so does this one (per-object order).
            return Ok(false);
        }
        let resolved = self
            .sh
            .resolver
            .get(
                self.sh.ledger.as_ref(),
                event.merchant_id,
                event.livemode,
                false,
            )
            .await?;
        if !resolved.targets.iter().any(|t| t.enabled) {
            // Nothing to send to: later events of this merchant need no marker at all.
            self.sh
                .outbox
                .note_no_endpoints(event.merchant_id, event.livemode, resolved.epoch);
        } else {
            self.note_merchant_hold(&event, &resolved, now);
        }
        let wanted = || {
            resolved
                .targets
                .iter()
                .filter(|t| t.enabled && t.wants(&event.event_type))
        };
        let expired = now - event.created.ms() >= SCHEDULE_MS;
        let wanted_now: Vec<&Arc<Target>> = wanted().collect();
        if let Some(until) = self.park_time(&event, &wanted_now, now, expired) {
            // A marker that could not be moved stays where it is, still due.
            return Ok(self.park(due_ms, event_id, &event, until, step));
        }
        if !wanted_now.is_empty() && wanted().all(|t| self.saturated(&t.id)) {
            // Every endpoint is busy: the marker stays (cheaper than writing deliveries that
            // are due now and would be read back and rewritten when room frees up), and so
            // do later markers of the same object in this scan.
            self.blocked = true;
            look.held.insert(object);
            return Ok(false);
        }
        step.delete_due(self.shard, due_ms, 'f', event_id);
        let event = Arc::new(event);
        for t in resolved.targets.iter() {
            if !t.enabled || !t.wants(&event.event_type) {
                continue;
            }
            let id = format!("{}:{}", event.id, t.id);
            if expired && self.sh.backoff.hold_until(&t.id, now, false).is_some() {
                // Parked for the whole retry schedule and the endpoint still fails: dropped
                // as its last retry would have been, without a pending record first.
                let d = new_delivery(&event, t, id, self.shard, false, now);
                self.drop_unreachable(d, step, now).await?;
                continue;
            }
            let chain = chain_partition(&t.id, &event.object_id);
            let waiting = match &chain {
                Some(c) => self.chain_busy(c, &id, step, &look.fetched).await?,
                None => false,
            };
            let d = new_delivery(&event, t, id.clone(), self.shard, chain.is_some(), now);
            if let Some(c) = chain {
                step.ops.push(WriteOp::PutEntry {
                    index: CHAIN,
                    partition: c.clone(),
                    sort: id.clone(),
                    value: Vec::new(),
                });
                self.remember_chain(&c, &id, step, &look.fetched);
                step.chain_added.entry(c).or_default().push(id.clone());
            }
            if waiting {
                step.save(d);
            } else {
                self.ready(d, event.clone(), Some(t.clone()), step, now);
            }
        }
        Ok(true)
    }

    /// Tells the outbox whether every enabled endpoint of the event's merchant backs off, and
    /// until when the earliest window lasts: while it does, the merchant's new markers are
    /// written due at that time instead of now, so neither this scan nor a park rewrites them
    /// one by one while nothing could be sent (a failing merchant costs others nothing).
    fn note_merchant_hold(&self, event: &Event, resolved: &Resolved, now: i64) {
        let hold = resolved
            .targets
            .iter()
            .filter(|t| t.enabled)
            .map(|t| self.sh.backoff.hold_until(&t.id, now, false))
            .collect::<Option<Vec<i64>>>()
            .and_then(|v| v.into_iter().min());
        let outbox = &self.sh.outbox;
        match hold {
            Some(until) => {
                outbox.note_held(event.merchant_id, event.livemode, until, resolved.epoch)
            }
            None => outbox.forget_held(event.merchant_id, event.livemode),
        }
    }

    /// Until when the marker of `event` should be parked instead of fanned out: at least as
    /// long as an earlier event of its object is parked (per-object order), and, unless it has
    /// waited the whole retry schedule (`expired`), while every endpoint it wants is backing
    /// off (until the first window ends). `None`: fan it out now.
    fn park_time(
        &mut self,
        event: &Event,
        wanted: &[&Arc<Target>],
        now: i64,
        expired: bool,
    ) -> Option<i64> {
        let key = (event.merchant_id, event.object_id.clone());
        let behind = self.parked.get(&key).copied().filter(|t| *t > now);
        let own = if wanted.is_empty() || expired {
            None
        } else {
            wanted
                .iter()
                .map(|t| self.sh.backoff.hold_until(&t.id, now, false))
                .collect::<Option<Vec<i64>>>()
                .and_then(|v| v.into_iter().min())
        };
        let until = match (behind, own) {
            (Some(b), o) => b.max(o.unwrap_or(b)),
            (None, Some(o)) => o,
            (None, None) => return None,
        };
        if !self.parked.contains_key(&key) && self.parked.len() >= MAX_PARKED_OBJECTS {
            self.parked.retain(|_, t| *t > now);
            if self.parked.len() >= MAX_PARKED_OBJECTS {
                // Too many to remember (and no earlier event of this object is parked):
                // fan out; its deliveries are held one by one.
                return None;
            }
        }
        let t = self.parked.entry(key).or_insert(until);
        *t = (*t).max(until);
        Some(until)
    }

    /// Moves a fan-out marker to `until`: one index entry rewritten per window instead of a
    /// delivery record, due entry and chain entry per endpoint while nothing can be sent.
    /// False when the marker could not be encoded (it then stays where it is).
    fn park(
        &mut self,
        due_ms: i64,
        event_id: &str,
        event: &Event,
        until: i64,
        step: &mut Step,
    ) -> bool {
        let Ok(value) = serde_json::to_vec(event) else {
            tracing::error!(event_id, "webhooks: cannot encode a parked fan-out marker");
            return false;
        };
        step.delete_due(self.shard, due_ms, 'f', event_id);
        step.note_due(until);
        step.ops.push(WriteOp::PutEntry {
            index: DUE,
            partition: model::due_partition(self.shard, model::minute_of(until)),
            sort: model::due_sort(until, 'f', event_id),
            value,
        });
        true
    }

    /// Records `id` as an unfinished member of `chain` when this task knows the chain (or can
    /// start knowing it from a complete read made in this step).
    fn remember_chain(
        &mut self,
        chain: &str,
        id: &str,
        step: &Step,
        fetched: &HashMap<String, Vec<String>>,
    ) {
        if let Some(set) = self.chains.get_mut(chain) {
            set.insert(id.to_string());
            return;
        }
        let Some(read) = fetched.get(chain) else {
            return;
        };
        if read.len() >= CHAIN_READ || self.chains.len() >= MAX_KNOWN_CHAINS {
            return;
        }
        let mut set: BTreeSet<String> = read
            .iter()
            .filter(|s| {
                !step
                    .chain_deleted
                    .contains(&(chain.to_string(), (*s).clone()))
            })
            .cloned()
            .collect();
        if let Some(added) = step.chain_added.get(chain) {
            set.extend(added.iter().cloned());
        }
        set.insert(id.to_string());
        self.chains.insert(chain.to_string(), set);
    }

    /// Decodes the fan-out markers among `entries` (aligned with them; `None` for other
    /// entries) and reads, concurrently, the ordering chains they need that this task does not
    /// know yet (chain → its first [`CHAIN_READ`] members).
    #[allow(clippy::type_complexity)]
    async fn prefetch(
        &self,
        entries: &[(String, Vec<u8>)],
    ) -> Result<
        (
            Vec<Option<Result<Event, serde_json::Error>>>,
            HashMap<String, Vec<String>>,
        ),
        StoreError,
    > {
        let mut events = Vec::with_capacity(entries.len());
        let mut want = Vec::new();
        let mut seen = HashSet::new();
        // Deliveries this step may start, per endpoint: markers past the room are left
        // undecoded (they stay due) so a shard with a backlog does not decode it every step.
        let mut room = self.budget();
        let mut planned: HashMap<String, usize> = HashMap::new();
        let per_endpoint = self.sh.cfg.max_in_flight_per_endpoint.max(1);
        let now = self.sh.clock.now_ms();
        for (sort, value) in entries {
            if room == 0 || !matches!(parse_due(sort), Some((_, 'f', _))) {
                events.push(None);
                continue;
            }
            let e = serde_json::from_slice::<Event>(value);
            if let Ok(e) = &e {
                let resolved = self
                    .sh
                    .resolver
                    .get(self.sh.ledger.as_ref(), e.merchant_id, e.livemode, false)
                    .await?;
                let (mut wanted, mut took) = (false, false);
                for t in resolved.targets.iter() {
                    if !t.enabled || !t.wants(&e.event_type) {
                        continue;
                    }
                    wanted = true;
                    if self.sh.backoff.hold_until(&t.id, now, false).is_some() {
                        // Backing off: its marker is parked, so no chain is read for it.
                        continue;
                    }
                    let n = planned.entry(t.id.clone()).or_default();
                    if self.per_endpoint.get(&t.id).copied().unwrap_or(0) + *n >= per_endpoint {
                        continue;
                    }
                    *n += 1;
                    took = true;
                    room = room.saturating_sub(1);
                    if let Some(c) = chain_partition(&t.id, &e.object_id)
                        && !self.chains.contains_key(&c)
                        && seen.insert(c.clone())
                    {
                        want.push(c);
                    }
                }
                if wanted && !took {
                    // Every endpoint it wants is full; it still counts against the look-ahead.
                    room = room.saturating_sub(1);
                }
            }
            events.push(Some(e));
        }
        let range = EntryRange {
            start: Bound::Unbounded,
            end: Bound::Unbounded,
            limit: CHAIN_READ,
            descending: false,
        };
        let ledger = &self.sh.ledger;
        let reads: Vec<Result<(String, Vec<String>), StoreError>> = futures::stream::iter(want)
            .map(|c| {
                let range = &range;
                async move {
                    let v = ledger.scan_entries(CHAIN, &c, range).await?;
                    Ok((c, v.into_iter().map(|(s, _)| s).collect()))
                }
            })
            .buffer_unordered(CHAIN_READ_CONCURRENCY)
            .collect()
            .await;
        let fetched = reads.into_iter().collect::<Result<HashMap<_, _>, _>>()?;
        Ok((events, fetched))
    }

    /// Whether an earlier delivery of the same object to the same endpoint is unfinished.
    async fn chain_busy(
        &self,
        chain: &str,
        id: &str,
        step: &Step,
        fetched: &HashMap<String, Vec<String>>,
    ) -> Result<bool, StoreError> {
        if step
            .chain_added
            .get(chain)
            .is_some_and(|v| v.iter().any(|s| s.as_str() < id))
        {
            return Ok(true);
        }
        if let Some(set) = self.chains.get(chain) {
            return Ok(set
                .range::<str, _>((Bound::Unbounded, Bound::Excluded(id)))
                .next()
                .is_some());
        }
        if let Some(read) = fetched.get(chain) {
            return Ok(read.iter().any(|s| {
                s.as_str() < id && !step.chain_deleted.contains(&(chain.to_string(), s.clone()))
            }));
        }
        let range = EntryRange {
            start: Bound::Unbounded,
            end: Bound::Excluded(id.to_string()),
            limit: 4,
            descending: false,
        };
        let before = self.sh.ledger.scan_entries(CHAIN, chain, &range).await?;
        Ok(before
            .iter()
            .any(|(s, _)| !step.chain_deleted.contains(&(chain.to_string(), s.clone()))))
    }

    /// A due delivery entry (a retry, a replay, or one whose lease lapsed). Returns false when
    /// it must stay where it is for now.
    async fn due_delivery(
        &mut self,
        due_ms: i64,
        id: &str,
        step: &mut Step,
        now: i64,
    ) -> Result<bool, StoreError> {
        if self.inflight.contains(id) || step.deliveries.contains_key(id) {
            return Ok(false);
        }
        // The endpoint is part of the id: skip the read while it has no room.
        if id.split(':').nth(1).is_some_and(|e| self.saturated(e)) {
            self.blocked = true;
            return Ok(false);
        }
        let Some(d) = load_delivery(self.sh.ledger.as_ref(), id).await? else {
            step.delete_due(self.shard, due_ms, 'd', id);
            return Ok(true);
        };
        if d.status != DeliveryStatus::Pending || d.due_ms != due_ms {
            step.delete_due(self.shard, due_ms, 'd', id);
            return Ok(true);
        }
        if now - d.created.ms() >= SCHEDULE_MS
            && self
                .sh
                .backoff
                .hold_until(&d.endpoint_id, now, false)
                .is_some()
        {
            step.delete_due(self.shard, due_ms, 'd', id);
            self.drop_unreachable(d, step, now).await?;
            return Ok(true);
        }
        if self.budget() == 0 {
            self.blocked = true;
            return Ok(false);
        }
        if self.saturated(&d.endpoint_id) {
            // Stays due; looked at again as soon as an attempt to that endpoint finishes.
            self.blocked = true;
            return Ok(false);
        }
        let mut d = d;
        step.delete_due(self.shard, due_ms, 'd', id);
        let Some(event) = self.sh.ledger.get_event(d.event_id).await? else {
            d.status = DeliveryStatus::Cancelled;
            d.last_error = Some("the event no longer exists".into());
            self.finish(d, step, now).await?;
            return Ok(true);
        };
        let target = self
            .sh
            .resolver
            .get(self.sh.ledger.as_ref(), d.merchant_id, d.livemode, false)
            .await?
            .find(&d.endpoint_id);
        self.ready(d, Arc::new(event), target, step, now);
        Ok(true)
    }

    /// Drops a delivery whose endpoint has been backing off for longer than the whole retry
    /// schedule since the delivery was made (held deliveries use up no attempts, so without
    /// this a dead endpoint's backlog would wait for ever).
    async fn drop_unreachable(
        &mut self,
        mut d: Delivery,
        step: &mut Step,
        now: i64,
    ) -> Result<(), StoreError> {
        metrics::counter!("ipay_webhook_attempts_total", "outcome" => "expired").increment(1);
        d.status = DeliveryStatus::Dropped;
        d.next_attempt = None;
        d.last_error =
            Some("the endpoint failed or was backing off for the whole retry schedule".to_string());
        if let Ok(v) = serde_json::to_vec(&d) {
            let partition = model::day_partition(d.merchant_id, d.livemode, now);
            step.ops.extend(self.registered.op(
                retention::Group::Deliveries,
                self.shard,
                now,
                'X',
                &partition,
            ));
            step.ops.push(WriteOp::PutEntry {
                index: DROPPED,
                partition,
                sort: d.id.clone(),
                value: v,
            });
        }
        self.finish(d, step, now).await
    }

    /// Records one attempt's outcome.
    async fn complete(&mut self, o: Outcome, step: &mut Step) -> Result<(), StoreError> {
        self.release(&o.job.delivery);
        let mut d = o.job.delivery.clone();
        let now = o.at;
        let attempted = matches!(
            o.kind,
            Kind::Success | Kind::Failure { .. } | Kind::Gone | Kind::Refused
        );
        if attempted {
            d.attempts += 1;
            d.last_attempt = Some(Timestamp(now));
            d.last_status_code = o.status_code;
            d.last_error = o.error.clone();
            if let Some(t) = &o.job.target {
                d.endpoint = t.url.clone();
            }
        }
        match o.kind {
            Kind::Success => self.sh.backoff.record(&d.endpoint_id, true, now),
            Kind::Failure { .. } => self.sh.backoff.record(&d.endpoint_id, false, now),
            _ => {}
        }
        let status = match o.kind {
            Kind::Success => {
                metrics::counter!("ipay_webhook_attempts_total", "outcome" => "succeeded")
                    .increment(1);
                d.status = DeliveryStatus::Succeeded;
                d.next_attempt = None;
                AttemptStatus::Succeeded
            }
            Kind::Failure { retry_after_secs } if d.attempts < MAX_ATTEMPTS => {
                metrics::counter!("ipay_webhook_attempts_total", "outcome" => "failed")
                    .increment(1);
                let idx = (d.attempts as usize - 1).min(RETRY_SCHEDULE_SECS.len() - 1);
                let mut delay = RETRY_SCHEDULE_SECS[idx] * 1000;
                if let Some(ra) = retry_after_secs {
                    let ra = ra.min(self.sh.cfg.retry_after_max_secs) as i64 * 1000;
                    delay = delay.max(ra);
                }
                step.delete_due(d.shard, d.due_ms, 'd', &d.id);
                d.due_ms = now + delay;
                d.next_attempt = Some(Timestamp(d.due_ms));
                step.put_due(&d);
                self.log(&d, &o.job.target, AttemptStatus::Failed, &o, step);
                step.save(d);
                return Ok(());
            }
            Kind::Failure { .. } => {
                metrics::counter!("ipay_webhook_attempts_total", "outcome" => "dropped")
                    .increment(1);
                d.status = DeliveryStatus::Dropped;
                d.next_attempt = None;
                AttemptStatus::Dropped
            }
            Kind::Refused => {
                metrics::counter!("ipay_webhook_attempts_total", "outcome" => "refused")
                    .increment(1);
                d.status = DeliveryStatus::Dropped;
                d.next_attempt = None;
                AttemptStatus::Dropped
            }
            Kind::Gone => {
                metrics::counter!("ipay_webhook_attempts_total", "outcome" => "gone").increment(1);
                d.status = DeliveryStatus::Dropped;
                d.next_attempt = None;
                if let Some(t) = &o.job.target {
                    self.disable(t, &d, step, now).await?;
                }
                AttemptStatus::Dropped
            }
            Kind::Disabled => {
                d.status = DeliveryStatus::Dropped;
                d.next_attempt = None;
                d.last_error = o.error.clone();
                AttemptStatus::Dropped
            }
            Kind::Cancelled => {
                d.status = DeliveryStatus::Cancelled;
                d.next_attempt = None;
                d.last_error = o.error.clone();
                self.finish(d, step, now).await?;
                return Ok(());
            }
        };
        self.log(&d, &o.job.target, status, &o, step);
        if d.status == DeliveryStatus::Dropped
            && let Ok(v) = serde_json::to_vec(&d)
        {
            let partition = model::day_partition(d.merchant_id, d.livemode, now);
            step.ops.extend(self.registered.op(
                retention::Group::Deliveries,
                self.shard,
                now,
                'X',
                &partition,
            ));
            step.ops.push(WriteOp::PutEntry {
                index: DROPPED,
                partition,
                sort: d.id.clone(),
                value: v,
            });
        }
        self.finish(d, step, now).await
    }

    fn log(
        &mut self,
        d: &Delivery,
        target: &Option<Arc<Target>>,
        status: AttemptStatus,
        o: &Outcome,
        step: &mut Step,
    ) {
        let log = AttemptLog {
            id: model::new_id("wha_", o.at),
            delivery_id: d.id.clone(),
            event_id: d.event_id,
            event_type: d.event_type.clone(),
            endpoint_id: d.endpoint_id.clone(),
            endpoint: target
                .as_ref()
                .map(|t| t.url.clone())
                .unwrap_or_else(|| d.endpoint.clone()),
            attempt: d.attempts,
            status,
            status_code: o.status_code,
            latency_ms: o.latency_ms,
            error: o.error.clone(),
            request_id: o.request_id.clone(),
            next_attempt: d.next_attempt,
            created: Timestamp(o.at),
        };
        let Ok(v) = serde_json::to_vec(&log) else {
            return;
        };
        let partition = model::day_partition(d.merchant_id, d.livemode, o.at);
        step.ops.extend(self.registered.op(
            retention::Group::Deliveries,
            self.shard,
            o.at,
            'L',
            &partition,
        ));
        step.ops.push(WriteOp::PutEntry {
            index: LOGS,
            partition,
            sort: log.id.clone(),
            value: v.clone(),
        });
        step.ops.push(WriteOp::PutEntry {
            index: LOGS_BY_EVENT,
            partition: d.event_id.to_string(),
            sort: log.id,
            value: v,
        });
    }

    /// 410 Gone: no more deliveries to this endpoint until it is enabled again.
    async fn disable(
        &self,
        t: &Target,
        d: &Delivery,
        step: &mut Step,
        now: i64,
    ) -> Result<(), StoreError> {
        match t.source {
            model::EndpointSource::Api => {
                if let Some(mut e) = resolve::get_endpoint(self.sh.ledger.as_ref(), &t.id).await? {
                    e.status = model::EndpointStatus::Disabled;
                    e.disabled_reason = Some("answered 410 Gone".into());
                    e.updated = Timestamp(now);
                    if let Ok(v) = serde_json::to_vec(&e) {
                        step.ops.push(WriteOp::PutRecord {
                            kind: ENDPOINT,
                            key: e.id.clone(),
                            value: v,
                        });
                    }
                }
            }
            model::EndpointSource::Manifest => step.ops.push(WriteOp::PutRecord {
                kind: MANIFEST_DISABLED,
                key: t.id.clone(),
                value: t.url.as_bytes().to_vec(),
            }),
        }
        tracing::warn!(endpoint = %t.id, merchant = %d.merchant_id, "webhooks: endpoint answered 410 Gone; disabled");
        self.sh.resolver.invalidate(d.merchant_id, d.livemode);
        Ok(())
    }

    /// A delivery reached a final state: drop its due entry, leave its chain, and start the
    /// next delivery of the chain.
    async fn finish(&mut self, d: Delivery, step: &mut Step, now: i64) -> Result<(), StoreError> {
        debug_assert!(d.status.is_final());
        step.delete_due(d.shard, d.due_ms, 'd', &d.id);
        if d.attempts == 0 {
            // No attempt log names it, so it is registered for retention on its own.
            step.ops.extend(self.registered.op(
                retention::Group::Deliveries,
                self.shard,
                now,
                'D',
                &d.id,
            ));
        }
        let chain = d
            .ordered
            .then(|| chain_partition(&d.endpoint_id, &d.object_id))
            .flatten();
        let id = d.id.clone();
        step.save(d);
        let Some(chain) = chain else {
            return Ok(());
        };
        step.ops.push(WriteOp::DeleteEntry {
            index: CHAIN,
            partition: chain.clone(),
            sort: id.clone(),
        });
        step.chain_deleted.insert((chain.clone(), id.clone()));
        let next = if let Some(set) = self.chains.get_mut(&chain) {
            set.remove(&id);
            let next = set
                .range::<str, _>((Bound::Excluded(id.as_str()), Bound::Unbounded))
                .next()
                .cloned();
            if set.is_empty() {
                self.chains.remove(&chain);
            }
            next
        } else {
            self.sh
                .ledger
                .scan_entries(CHAIN, &chain, &EntryRange::after(&id, 4))
                .await?
                .into_iter()
                .map(|(s, _)| s)
                .find(|s| !step.chain_deleted.contains(&(chain.clone(), s.clone())))
        };
        let Some(next) = next else {
            return Ok(());
        };
        let d = match step.deliveries.get(&next) {
            Some(d) => Some(d.clone()),
            None => load_delivery(self.sh.ledger.as_ref(), &next).await?,
        };
        let Some(d) = d else {
            return Ok(());
        };
        if d.status != DeliveryStatus::Waiting {
            return Ok(());
        }
        let Some(event) = self.sh.ledger.get_event(d.event_id).await? else {
            let mut d = d;
            d.status = DeliveryStatus::Cancelled;
            d.last_error = Some("the event no longer exists".into());
            return Box::pin(self.finish(d, step, now)).await;
        };
        let target = self
            .sh
            .resolver
            .get(self.sh.ledger.as_ref(), d.merchant_id, d.livemode, false)
            .await?
            .find(&d.endpoint_id);
        self.ready(d, Arc::new(event), target, step, now);
        Ok(())
    }
}

/// A new delivery of `event` to `t`, not yet scheduled.
fn new_delivery(
    event: &Event,
    t: &Target,
    id: String,
    shard: u32,
    ordered: bool,
    now: i64,
) -> Delivery {
    Delivery {
        id,
        event_id: event.id,
        event_type: event.event_type.clone(),
        endpoint_id: t.id.clone(),
        endpoint: t.url.clone(),
        merchant_id: event.merchant_id,
        livemode: event.livemode,
        object_id: event.object_id.clone(),
        shard,
        ordered,
        status: DeliveryStatus::Waiting,
        attempts: 0,
        due_ms: 0,
        last_status_code: None,
        last_error: None,
        last_attempt: None,
        next_attempt: None,
        created: Timestamp(now),
    }
}

/// Reads a delivery record.
pub async fn load_delivery(ledger: &dyn Ledger, id: &str) -> Result<Option<Delivery>, StoreError> {
    match ledger.get_record(DELIVERY, id).await? {
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| StoreError(format!("bad webhook delivery record {id}: {e}"))),
        None => Ok(None),
    }
}

fn parse_due(sort: &str) -> Option<(i64, char, &str)> {
    let (due, rest) = sort.split_once(':')?;
    let (kind, reference) = rest.split_once(':')?;
    let mut k = kind.chars();
    let c = k.next()?;
    if k.next().is_some() {
        return None;
    }
    Some((due.parse().ok()?, c, reference))
}

/// Makes one attempt.
async fn send(sh: &Shared, job: Job) -> Outcome {
    let request_id = RequestId::new_at(sh.clock.now_ms()).to_string();
    let outcome = |job: Job, kind, code, error: Option<String>, latency_ms| Outcome {
        job,
        kind,
        status_code: code,
        error,
        latency_ms,
        request_id: request_id.clone(),
        at: sh.clock.now_ms(),
    };
    let Some(t) = job.target.clone() else {
        return outcome(
            job,
            Kind::Cancelled,
            None,
            Some("the endpoint was deleted".into()),
            0,
        );
    };
    if !t.enabled {
        return outcome(
            job,
            Kind::Disabled,
            None,
            Some("the endpoint is disabled".into()),
            0,
        );
    }
    if let Err(why) = sh.url_policy.check_url(&t.url) {
        return outcome(
            job,
            Kind::Refused,
            None,
            Some(format!("URL not allowed: {why}")),
            0,
        );
    }
    let limit = sh.endpoint_limit(&t.id);
    let Ok(_permit) = limit.acquire_owned().await else {
        return outcome(
            job,
            Kind::Failure {
                retry_after_secs: None,
            },
            None,
            Some("shutting down".into()),
            0,
        );
    };
    let e = &job.event;
    let body = match serde_json::to_vec(&Payload {
        id: &e.id,
        event_type: &e.event_type,
        created: &e.created,
        data: &e.data,
    }) {
        Ok(b) => b,
        Err(err) => {
            return outcome(
                job,
                Kind::Failure {
                    retry_after_secs: None,
                },
                None,
                Some(format!("encode: {err}")),
                0,
            );
        }
    };
    let now_ms = sh.clock.now_ms();
    let req = signed(&t, &e.id.to_string(), &request_id, body, now_ms);
    let started = Instant::now();
    let answer = sh.transport.send(req).await;
    let (kind, code, error) = judge(answer, now_ms);
    let latency = started.elapsed().as_millis() as u64;
    outcome(job, kind, code, error, latency)
}

/// The attempt's request: `body` signed with every secret of `t` valid at `now_ms`, both
/// signature schemes.
fn signed(
    t: &Target,
    event_id: &str,
    request_id: &str,
    body: Vec<u8>,
    now_ms: i64,
) -> SignedRequest {
    let ts = now_ms.div_euclid(1000);
    let secrets = t.signing_secrets(now_ms);
    let itpay = super::sign::itpay_signature(ts, &body, &secrets);
    let standard = super::sign::standard_signature(event_id, ts, &body, &secrets);
    SignedRequest {
        url: t.url.clone(),
        headers: vec![
            ("content-type", "application/json".to_string()),
            ("x-itpay-signature", itpay),
            ("x-itpay-request-id", request_id.to_string()),
            ("webhook-id", event_id.to_string()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", standard),
        ],
        body,
    }
}

/// What an answer means for the delivery: its kind, status code and error text.
fn judge(answer: Answer, now_ms: i64) -> (Kind, Option<u16>, Option<String>) {
    let failure = |e: &str| {
        (
            Kind::Failure {
                retry_after_secs: None,
            },
            None,
            Some(e.to_string()),
        )
    };
    match answer {
        // The receiver said 2xx; a broken body after that does not undo it.
        Answer::Status { code, .. } if (200..300).contains(&code) => {
            (Kind::Success, Some(code), None)
        }
        Answer::Status { code: 410, .. } => (
            Kind::Gone,
            Some(410),
            Some("HTTP 410 Gone: endpoint disabled".into()),
        ),
        Answer::Status { code, retry_after } => {
            let ra = matches!(code, 429 | 503)
                .then(|| retry_after.and_then(|v| parse_retry_after(&v, now_ms)))
                .flatten();
            (
                Kind::Failure {
                    retry_after_secs: ra,
                },
                Some(code),
                Some(format!("HTTP {code}")),
            )
        }
        Answer::Refused(why) => (Kind::Refused, None, Some(why)),
        Answer::Timeout => failure("timeout"),
        Answer::ConnectFailed => failure("connection failed"),
        Answer::Failed(why) => failure(&why),
    }
}

/// `Retry-After`: delay-seconds or an HTTP date.
fn parse_retry_after(v: &str, now_ms: i64) -> Option<u64> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(s);
    }
    let t = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    Some(((t.timestamp_millis() - now_ms).max(0) / 1000) as u64)
}

/// Keeps the shards this node holds leases for running: tries to take every shard's lease,
/// renews those it holds, and stops a shard the moment its lease is lost.
pub async fn run_leases(
    sh: Arc<Shared>,
    hot: Arc<dyn HotState>,
    node: String,
    mut stop: watch::Receiver<bool>,
) {
    let ttl = Duration::from_millis(sh.cfg.lease_ttl_ms.max(100));
    let mut owned: HashMap<u32, watch::Sender<bool>> = HashMap::new();
    loop {
        for shard in 0..model::SHARDS {
            let key = format!("webhooks:shard:{shard}");
            let held = match owned.entry(shard) {
                std::collections::hash_map::Entry::Occupied(e) => Some(e),
                std::collections::hash_map::Entry::Vacant(_) => None,
            };
            if let Some(e) = held {
                if !matches!(hot.renew_lease(&key, &node, ttl).await, Ok(true)) {
                    tracing::info!(shard, "webhooks: lost the shard lease; stopping it");
                    let _ = e.remove().send(true);
                }
            } else if matches!(hot.acquire_lease(&key, &node, ttl).await, Ok(true)) {
                let (tx, rx) = watch::channel(false);
                owned.insert(shard, tx);
                tokio::spawn(run_shard(sh.clone(), shard, rx));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(ttl / 3) => {}
            _ = stop.changed() => break,
        }
    }
    for (shard, tx) in owned {
        let _ = tx.send(true);
        let _ = hot
            .release_lease(&format!("webhooks:shard:{shard}"), &node)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::engine::{AuthContext, create_merchant};
    use crate::store::embedded::{EmbeddedLedger, EmbeddedOptions};
    use crate::store::memory_hot::MemoryHotState;
    use crate::webhooks::api::EndpointInput;
    use crate::webhooks::{WebhookDeps, Webhooks};
    use crate::{Engine, EngineConfig};

    /// Answers every attempt with `code` and counts the attempts.
    struct Fixed {
        code: u16,
        sent: watch::Sender<usize>,
    }

    #[async_trait::async_trait]
    impl Transport for Fixed {
        async fn send(&self, _: SignedRequest) -> Answer {
            self.sent.send_modify(|n| *n += 1);
            Answer::Status {
                code: self.code,
                retry_after: None,
            }
        }
    }

    async fn dispatcher(engine: &Engine, code: u16) -> (Arc<Webhooks>, watch::Receiver<usize>) {
        let (sent, seen) = watch::channel(0);
        let cfg = WebhookConfig::default();
        let deps = WebhookDeps {
            ledger: engine.ledger().clone(),
            hot: Arc::new(MemoryHotState::new()),
            clock: engine.clock().clone(),
            outbox: crate::webhooks::Outbox::attach(engine.ledger().as_ref()).unwrap(),
            url_policy: cfg.url_policy(),
            max_page_size: 100,
        };
        let w = Webhooks::start_with_transport(deps, cfg, Arc::new(Fixed { code, sent }))
            .await
            .unwrap();
        (w, seen)
    }

    async fn merchant_with_endpoint(engine: &Engine, clock: &ManualClock) -> AuthContext {
        let creds = create_merchant(engine.ledger().as_ref(), clock, "m")
            .await
            .unwrap();
        engine
            .authenticate(&creds.test_secret_key, None)
            .await
            .unwrap()
    }

    /// A retry due while no step of its shard had saved a cursor, then a restart more than the
    /// cursor's grace later: the new dispatcher must still find it (it used to start from its
    /// own clock and skip it for good).
    #[tokio::test(start_paused = true)]
    async fn a_retry_due_before_a_restart_is_sent_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = EmbeddedLedger::open(dir.path(), EmbeddedOptions::default()).unwrap();
        let clock = ManualClock::new(1_800_000_000_000);
        crate::webhooks::Outbox::attach(ledger.as_ref()).unwrap();
        let hot = Arc::new(MemoryHotState::new());
        let engine = Engine::start(
            ledger,
            hot,
            Arc::new(clock.clone()),
            EngineConfig::default(),
        )
        .await
        .unwrap();
        let ctx = merchant_with_endpoint(&engine, &clock).await;
        let (failing, mut sent) = dispatcher(&engine, 500).await;
        let input = EndpointInput {
            url: "https://hooks.example/in".into(),
            ..Default::default()
        };
        let endpoint = failing
            .create_endpoint(&ctx, input)
            .await
            .unwrap()
            .endpoint
            .id;
        let e = Event::new(
            ctx.merchant_id,
            false,
            "payment_intent.created",
            clock.now(),
            "pi_1".to_string(),
            &serde_json::json!({"id": "pi_1"}),
        );
        let e_id = e.id;
        let mut b = WriteBatch::new();
        b.push(WriteOp::PutEvent(e));
        let id = format!("{}:{endpoint}", e_id);
        engine.ledger().submit(b).await.unwrap();
        sent.wait_for(|n| *n == 1).await.unwrap();
        // The failed attempt is recorded (the ledger is the only witness: poll it).
        let ledger = engine.ledger().clone();
        let recorded = async {
            loop {
                let d = load_delivery(ledger.as_ref(), &id).await.unwrap();
                if d.is_some_and(|d| d.attempts == 1) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), recorded)
            .await
            .expect("the failed attempt was never recorded");
        failing.shutdown();
        drop(failing);
        // Down for an hour: the retry (due 10 s after the attempt) is long overdue.
        clock.advance_ms(3_600_000);
        let (_ok, mut sent) = dispatcher(&engine, 200).await;
        let retried = tokio::time::timeout(Duration::from_secs(60), sent.wait_for(|n| *n >= 1));
        assert!(retried.await.is_ok(), "the overdue retry was never sent");
    }

    #[test]
    fn due_sort_keys_parse_back() {
        let s = model::due_sort(1_700_000_000_123, 'd', "evt_X:we_Y");
        assert_eq!(parse_due(&s), Some((1_700_000_000_123, 'd', "evt_X:we_Y")));
        assert_eq!(parse_due("junk"), None);
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(parse_retry_after("120", 0), Some(120));
        let now = chrono::DateTime::parse_from_rfc2822("Wed, 21 Oct 2015 07:28:00 GMT")
            .unwrap()
            .timestamp_millis();
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(30)
        );
        assert_eq!(parse_retry_after("soon", 0), None);
    }
}
