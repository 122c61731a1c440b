//! One shard: hosts many payment sessions, handles their messages one at a time, keeps their
//! expiry timers, passivates idle ones.

use super::{
    Created, IdempotencySpec, SessionContext, idempotency_op, idempotency_record, record_transition,
};
use crate::clock::Timestamp;
use crate::error::{EngineError, EngineResult, StoreError};
use crate::ids::PaymentIntentId;
use crate::model::{Applied, Event, IntentCommand, IntentStatus, PaymentIntent};
use crate::session::ownership::fence_key;
use crate::store::{WriteBatch, WriteOp, is_fenced};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Messages a shard handles.
pub enum ShardMsg {
    /// Host a new intent and persist it.
    Create {
        intent: Box<PaymentIntent>,
        idem: Option<IdempotencySpec>,
        reply: RpcReplyPort<EngineResult<Created>>,
    },
    /// Apply a command to an intent's session.
    Command {
        id: PaymentIntentId,
        cmd: IntentCommand,
        idem: Option<IdempotencySpec>,
        /// Records committed in the same batch as the state change, if the command applies.
        records: Vec<WriteOp>,
        /// Set when this node just took the session over (cluster mode).
        fresh: Option<Fresh>,
        /// The epoch of this node's lease on the session (cluster mode): fences the writes.
        epoch: Option<u64>,
        reply: RpcReplyPort<EngineResult<Applied>>,
    },
    /// A rehydration read finished.
    Loaded {
        id: PaymentIntentId,
        result: Result<Option<PaymentIntent>, StoreError>,
    },
    /// A commit for this session finished.
    Committed { id: PaymentIntentId, ok: bool },
    /// Check timers and idle sessions; `reply` when someone waits for it.
    Tick { reply: Option<RpcReplyPort<()>> },
    /// Expiry timers to arm (from the ledger, at start-up or after a restart).
    ArmTimers(Vec<(PaymentIntentId, Timestamp)>),
    /// Clean stop in cluster mode: hand every idle session over (snapshot, release the lease)
    /// and forget it. Waits on the hot state inside the handler, which is fine only because
    /// the node is stopping and takes no new work.
    HandOver(RpcReplyPort<()>),
    /// Test hook: panic while handling a message for this session.
    #[cfg(test)]
    CrashForTest { id: PaymentIntentId },
}

/// This node just took a session over: drop what it remembers of it and load it again, from
/// the hand-over snapshot when there is one, else from the ledger.
#[derive(Debug, Clone)]
pub struct Fresh(pub Option<Box<PaymentIntent>>);

/// The shard actor.
pub struct SessionShard;

/// Arguments: the shard's index and the shared context.
pub struct ShardArgs {
    pub index: usize,
    pub ctx: Arc<SessionContext>,
}

struct Session {
    intent: PaymentIntent,
    last_touch_ms: i64,
    /// Commits submitted and not yet answered; a session is never passivated while > 0, so a
    /// rehydration read can never miss a write that is still on its way to disk.
    inflight: u32,
    /// A commit failed: refuse new work until in-flight commits drain, then drop the state.
    poisoned: bool,
}

enum Slot {
    Loading(VecDeque<Work>),
    Live(Box<Session>),
}

struct Work {
    cmd: IntentCommand,
    idem: Option<IdempotencySpec>,
    /// Written with the command's state change, and only if it applies.
    records: Vec<WriteOp>,
    /// Lease epoch the command was claimed under (cluster mode); fences its writes.
    epoch: Option<u64>,
    reply: Option<RpcReplyPort<EngineResult<Applied>>>,
}

/// Shard state.
pub struct ShardState {
    index: usize,
    ctx: Arc<SessionContext>,
    sessions: HashMap<PaymentIntentId, Slot>,
    timers: BTreeSet<(i64, PaymentIntentId)>,
}

impl ShardState {
    fn set_live(&mut self, id: PaymentIntentId, session: Session) {
        if self
            .sessions
            .insert(id, Slot::Live(Box::new(session)))
            .is_none()
        {
            self.ctx.live[self.index].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn remove(&mut self, id: PaymentIntentId) -> Option<Slot> {
        let s = self.sessions.remove(&id);
        if s.is_some() {
            self.ctx.live[self.index].fetch_sub(1, Ordering::Relaxed);
        }
        s
    }
}

fn reply<T>(port: Option<RpcReplyPort<T>>, v: T) {
    if let Some(p) = port {
        let _ = p.send(v);
    }
}

impl Actor for SessionShard {
    type Msg = ShardMsg;
    type State = ShardState;
    type Arguments = ShardArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ShardMsg>,
        args: ShardArgs,
    ) -> Result<ShardState, ActorProcessingErr> {
        let period = Duration::from_millis(args.ctx.config.tick_interval_ms.max(10));
        myself.send_interval(period, || ShardMsg::Tick { reply: None });
        Ok(ShardState {
            index: args.index,
            ctx: args.ctx,
            sessions: HashMap::new(),
            timers: BTreeSet::new(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ShardMsg>,
        state: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        state.ctx.live[state.index].store(0, Ordering::Relaxed);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ShardMsg>,
        msg: ShardMsg,
        st: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ShardMsg::Create {
                intent,
                idem,
                reply,
            } => {
                st.ctx.queued[st.index].fetch_sub(1, Ordering::Relaxed);
                handle_create(&myself, st, *intent, idem, reply);
            }
            ShardMsg::Command {
                id,
                cmd,
                idem,
                records,
                fresh,
                epoch,
                reply,
            } => {
                st.ctx.queued[st.index].fetch_sub(1, Ordering::Relaxed);
                if let Some(Fresh(snapshot)) = fresh
                    && !take_over(&myself, st, id, snapshot)
                {
                    let _ = reply.send(Err(EngineError::SessionUnavailable));
                    return Ok(());
                }
                route(
                    &myself,
                    st,
                    id,
                    Work {
                        cmd,
                        idem,
                        records,
                        epoch,
                        reply: Some(reply),
                    },
                );
            }
            ShardMsg::Loaded { id, result } => handle_loaded(&myself, st, id, result),
            ShardMsg::Committed { id, ok } => handle_committed(st, id, ok),
            ShardMsg::Tick { reply: r } => {
                tick(&myself, st);
                reply(r, ());
            }
            ShardMsg::ArmTimers(list) => {
                for (id, at) in list {
                    st.timers.insert((at.ms(), id));
                }
            }
            ShardMsg::HandOver(done) => {
                hand_over_idle(st).await;
                let _ = done.send(());
            }
            #[cfg(test)]
            ShardMsg::CrashForTest { id } => {
                panic!("test hook: injected panic while handling session {id}");
            }
        }
        Ok(())
    }
}

/// Forgets what this shard remembers of a session it just took over and rehydrates it from the
/// hand-over snapshot, if any; false when a write of ours is still in flight for it.
fn take_over(
    myself: &ActorRef<ShardMsg>,
    st: &mut ShardState,
    id: PaymentIntentId,
    snapshot: Option<Box<PaymentIntent>>,
) -> bool {
    match st.sessions.get(&id) {
        Some(Slot::Live(s)) if s.inflight > 0 => {
            // Our lease lapsed while a write of ours was in flight; let it land
            // before deciding anything on this session again.
            return false;
        }
        Some(Slot::Live(_)) => {
            st.remove(id);
        }
        _ => {}
    }
    if let Some(intent) = snapshot
        && !st.sessions.contains_key(&id)
    {
        st.sessions.insert(id, Slot::Loading(VecDeque::new()));
        st.ctx.live[st.index].fetch_add(1, Ordering::Relaxed);
        handle_loaded(myself, st, id, Ok(Some(*intent)));
    }
    true
}

/// Settles one finished commit; a poisoned session is dropped once its last commit lands.
fn handle_committed(st: &mut ShardState, id: PaymentIntentId, ok: bool) {
    let mut drop_it = false;
    if let Some(Slot::Live(s)) = st.sessions.get_mut(&id) {
        s.inflight = s.inflight.saturating_sub(1);
        if !ok {
            s.poisoned = true;
        }
        drop_it = s.poisoned && s.inflight == 0;
    }
    if drop_it {
        st.remove(id);
    }
}

/// Hands every idle, healthy session over to the cluster (cluster mode only) and forgets it.
async fn hand_over_idle(st: &mut ShardState) {
    let Some(own) = st.ctx.ownership.get().cloned() else {
        return;
    };
    let now = st.ctx.clock.now_ms();
    let idle: Vec<PaymentIntentId> = st
        .sessions
        .iter()
        .filter_map(|(id, slot)| match slot {
            Slot::Live(s) if s.inflight == 0 && !s.poisoned => Some(*id),
            _ => None,
        })
        .collect();
    for id in idle {
        if let Some(Slot::Live(s)) = st.remove(id) {
            own.hand_over(&s.intent, now).await;
        }
    }
}

fn handle_create(
    myself: &ActorRef<ShardMsg>,
    st: &mut ShardState,
    intent: PaymentIntent,
    idem: Option<IdempotencySpec>,
    reply_port: RpcReplyPort<EngineResult<Created>>,
) {
    let now = st.ctx.clock.now();
    let id = intent.id;
    // Serialized once: the event's data, the idempotency record and the HTTP body share it.
    let json = match serde_json::to_string(&intent) {
        Ok(j) => j,
        Err(e) => {
            let _ = reply_port.send(Err(EngineError::Internal(e.to_string())));
            return;
        }
    };
    let mut batch = WriteBatch::new();
    batch.push(WriteOp::PutIntent(intent.clone()));
    batch.push(WriteOp::PutEvent(Event::with_json(
        intent.merchant_id,
        intent.livemode,
        "payment_intent.created",
        intent.created,
        id.to_string(),
        json.clone(),
    )));
    if let Some(spec) = &idem {
        batch.push(idempotency_record(spec, 201, json.clone(), now));
    }
    st.timers.insert((intent.expires_at.ms(), id));
    st.set_live(
        id,
        Session {
            intent: intent.clone(),
            last_touch_ms: now.ms(),
            inflight: 1,
            poisoned: false,
        },
    );
    let me = myself.clone();
    st.ctx.ledger.submit_then(
        batch,
        Box::new(move |r| {
            let ok = r.is_ok();
            let _ = me.send_message(ShardMsg::Committed { id, ok });
            if ok {
                record_transition(None, IntentStatus::Pending);
            }
            let _ = reply_port.send(
                r.map(|_| Created { intent, json })
                    .map_err(EngineError::from),
            );
        }),
    );
}

fn route(myself: &ActorRef<ShardMsg>, st: &mut ShardState, id: PaymentIntentId, work: Work) {
    match st.sessions.get_mut(&id) {
        Some(Slot::Live(_)) => process(myself, st, id, work),
        Some(Slot::Loading(q)) => q.push_back(work),
        None => {
            st.sessions
                .insert(id, Slot::Loading(VecDeque::from([work])));
            st.ctx.live[st.index].fetch_add(1, Ordering::Relaxed);
            let ledger = st.ctx.ledger.clone();
            let me = myself.clone();
            tokio::spawn(async move {
                let result = ledger.get_intent(id).await;
                let _ = me.send_message(ShardMsg::Loaded { id, result });
            });
        }
    }
}

fn handle_loaded(
    myself: &ActorRef<ShardMsg>,
    st: &mut ShardState,
    id: PaymentIntentId,
    result: Result<Option<PaymentIntent>, StoreError>,
) {
    let Some(Slot::Loading(queue)) = st.remove(id) else {
        return;
    };
    match result {
        Ok(Some(intent)) => {
            let now = st.ctx.clock.now_ms();
            if intent.status == IntentStatus::Pending {
                st.timers.insert((intent.expires_at.ms(), id));
            }
            st.set_live(
                id,
                Session {
                    intent,
                    last_touch_ms: now,
                    inflight: 0,
                    poisoned: false,
                },
            );
            for work in queue {
                process(myself, st, id, work);
            }
        }
        Ok(None) => {
            for w in queue {
                reply(w.reply, Err(EngineError::not_found("payment intent", id)));
            }
        }
        Err(e) => {
            for w in queue {
                reply(w.reply, Err(EngineError::from(e.clone())));
            }
        }
    }
}

fn process(myself: &ActorRef<ShardMsg>, st: &mut ShardState, id: PaymentIntentId, work: Work) {
    let now = st.ctx.clock.now();
    let Some(Slot::Live(session)) = st.sessions.get_mut(&id) else {
        return;
    };
    if session.poisoned {
        reply(work.reply, Err(EngineError::SessionUnavailable));
        return;
    }
    session.last_touch_ms = now.ms();
    let before = session.intent.status;
    let Work {
        cmd,
        idem,
        records,
        epoch,
        reply: port,
    } = work;
    let Decision {
        mut batch,
        transitions,
        result,
    } = decide(session, &cmd, idem.as_ref(), records, now);
    if session.intent.status != IntentStatus::Pending && before == IntentStatus::Pending {
        st.timers.remove(&(session.intent.expires_at.ms(), id));
    }

    if batch.ops.is_empty() {
        // Nothing to persist: an illegal move, answered at once.
        if let Err(e) = &result
            && matches!(cmd, IntentCommand::Expire)
        {
            tracing::debug!(intent = %id, error = %e, "expiry timer found nothing to do");
        }
        reply(port, result);
        return;
    }
    if let Some(epoch) = epoch {
        batch.push(WriteOp::Fence {
            key: fence_key(id),
            epoch,
        });
    }
    session.inflight += 1;
    st.ctx.stop_before_commit.check(&cmd);
    let done = answer_when_committed(myself.clone(), st, id, transitions, result, port);
    st.ctx.ledger.submit_then(batch, done);
}

/// What runs once a decision's batch committed or failed: settle the session, count the
/// transitions, answer the caller. A batch refused by its fence means another node took the
/// session over and decided it while we stalled: our decision is void, the caller gets 503
/// and a retry reaches the new owner.
fn answer_when_committed(
    me: ActorRef<ShardMsg>,
    st: &ShardState,
    id: PaymentIntentId,
    transitions: Vec<(IntentStatus, IntentStatus)>,
    result: EngineResult<Applied>,
    port: Option<RpcReplyPort<EngineResult<Applied>>>,
) -> crate::store::Completion {
    let ownership = st.ctx.ownership.get().cloned();
    Box::new(move |r| {
        let ok = r.is_ok();
        let _ = me.send_message(ShardMsg::Committed { id, ok });
        match r {
            Ok(()) => {
                for (from, to) in transitions {
                    record_transition(Some(from), to);
                }
                reply(port, result);
            }
            Err(e) if is_fenced(&e) => {
                tracing::warn!(intent = %id, error = %e, "stale decision refused by the ledger");
                metrics::counter!("ipay_session_fenced_total").increment(1);
                if let Some(own) = ownership {
                    own.lost(id);
                }
                reply(port, Err(EngineError::SessionUnavailable));
            }
            Err(e) => reply(port, Err(EngineError::from(e))),
        }
    })
}

/// What a command did to a session: the writes to commit, the status moves to count once
/// they are durable, and the answer for the caller.
struct Decision {
    batch: WriteBatch,
    transitions: Vec<(IntentStatus, IntentStatus)>,
    result: EngineResult<Applied>,
}

/// Applies `cmd` to the session's intent in memory and gathers what must be written: its
/// changes and events, its idempotency record, and the caller's `records` — the last two only
/// if the command applies.
fn decide(
    session: &mut Session,
    cmd: &IntentCommand,
    idem: Option<&IdempotencySpec>,
    records: Vec<WriteOp>,
    now: Timestamp,
) -> Decision {
    let mut batch = WriteBatch::new();
    let mut transitions: Vec<(IntentStatus, IntentStatus)> = Vec::new();

    // A pending intent past its deadline expires before anything else is decided, even if its
    // timer has not fired yet.
    if session.intent.is_due(now)
        && !matches!(cmd, IntentCommand::Expire)
        && let Ok(a) = session.intent.apply(&IntentCommand::Expire, now)
    {
        transitions.push((session.intent.status, a.intent.status));
        push_applied(&mut batch, &a);
        session.intent = a.intent;
    }

    let result = match session.intent.apply(cmd, now) {
        Ok(applied) => {
            transitions.push((session.intent.status, applied.intent.status));
            push_applied(&mut batch, &applied);
            if let Some(spec) = idem {
                match &applied.refund {
                    Some(r) => batch.push(idempotency_op(spec, 201, r, now)),
                    None => batch.push(idempotency_op(spec, 200, &applied.intent, now)),
                };
            }
            batch.ops.extend(records);
            session.intent = applied.intent.clone();
            Ok(applied)
        }
        Err(e) => Err(e),
    };
    Decision {
        batch,
        transitions,
        result,
    }
}

fn push_applied(batch: &mut WriteBatch, a: &Applied) {
    batch.push(WriteOp::PutIntent(a.intent.clone()));
    if let Some(r) = &a.refund {
        batch.push(WriteOp::PutRefund(r.clone()));
        // The refund poller's work list changes in the same batch as the refund.
        if let Some(op) = crate::refunds::poll_entry_op(r) {
            batch.push(op);
        }
    }
    for e in &a.events {
        batch.push(WriteOp::PutEvent(e.clone()));
    }
}

fn tick(myself: &ActorRef<ShardMsg>, st: &mut ShardState) {
    let now = st.ctx.clock.now_ms();
    // Fire due expiry timers.
    while let Some(&(due, id)) = st.timers.first() {
        if due > now {
            break;
        }
        st.timers.pop_first();
        if st.ctx.ownership.get().is_some() {
            // Cluster mode: the session may be owned elsewhere by now; expire it through
            // its owner (a no-op there if it is no longer pending).
            let ctx = st.ctx.clone();
            tokio::spawn(async move {
                let _ =
                    super::owned_command(&ctx, id, IntentCommand::Expire, None, Vec::new(), false)
                        .await;
            });
            continue;
        }
        route(
            myself,
            st,
            id,
            Work {
                cmd: IntentCommand::Expire,
                idem: None,
                records: Vec::new(),
                epoch: None,
                reply: None,
            },
        );
    }
    // Passivate idle sessions with nothing in flight.
    let idle_after = st.ctx.config.passivate_after_ms;
    let idle: Vec<PaymentIntentId> = st
        .sessions
        .iter()
        .filter_map(|(id, slot)| match slot {
            Slot::Live(s) if s.inflight == 0 && now - s.last_touch_ms >= idle_after => Some(*id),
            _ => None,
        })
        .collect();
    for id in idle {
        st.remove(id);
    }
    metrics::gauge!("ipay_live_sessions").set(st.ctx.live_sessions() as f64);
}
