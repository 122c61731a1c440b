//! Payment sessions as virtual actors.
//!
//! Each live payment intent has actor semantics — its own state, its messages handled one at a
//! time in order, passivation when idle, rehydration from the ledger on its next message,
//! supervision — but it is hosted by one of a fixed set of ractor *shard* actors chosen by
//! hashing its id, rather than being a ractor actor of its own (a ractor actor costs ≈ 8 KiB and
//! 14–20 µs to spawn; a hosted session is a map entry of a few hundred bytes).
//!
//! ```text
//! SessionSupervisor ── SessionShard × N ── sessions: HashMap<PaymentIntentId, Slot>
//!                                          timers:   BTreeSet<(due_ms, id)>  (expiry)
//! ```
//!
//! A shard never waits on I/O inside a handler: rehydration reads and ledger commits run as
//! spawned futures whose results come back as messages ([`ShardMsg::Loaded`],
//! [`ShardMsg::Committed`]). Writes are handed to the ledger in handler order, so one
//! session's changes are committed in the order they were decided. A caller hears "ok" only
//! after its batch is durable. When a shard panics its supervisor starts a fresh one under the
//! same index; the new shard re-arms its expiry timers from the ledger and rehydrates sessions
//! lazily, so no acknowledged work is lost.

pub mod ownership;
mod shard;
mod supervisor;

pub use ownership::{Claim, Ownership, OwnershipOptions};
pub use shard::{Fresh, SessionShard, ShardMsg};
pub use supervisor::SessionSupervisor;

use crate::clock::Clock;
use crate::error::{EngineError, EngineResult};
use crate::ids::PaymentIntentId;
use crate::model::{Applied, IntentCommand, IntentStatus, PaymentIntent};
use crate::store::{IdempotencyRecord, Ledger, WriteBatch, WriteOp};
use parking_lot::RwLock;
use ractor::rpc::CallResult;
use ractor::{ActorRef, MessagingErr};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::watch;

/// Session-layer settings (`[sessions]` in `ipay.toml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// Number of shard actors hosting sessions.
    pub shards: usize,
    /// A session untouched for this long (and with no write in flight) is passivated.
    pub passivate_after_ms: i64,
    /// How often each shard checks its timers and idle sessions.
    pub tick_interval_ms: u64,
    /// Longest a caller waits for a session's answer.
    pub call_timeout_ms: u64,
    /// Messages queued on one shard before callers get 503 (the mailbox bound).
    pub mailbox_bound: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            shards: 64,
            passivate_after_ms: 60_000,
            tick_interval_ms: 250,
            call_timeout_ms: 10_000,
            mailbox_bound: 10_000,
        }
    }
}

/// How an idempotent request's outcome is recorded with the state change it caused.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdempotencySpec {
    pub scope: String,
    pub request_hash: String,
}

/// What every shard shares.
pub struct SessionContext {
    pub ledger: Arc<dyn Ledger>,
    pub clock: Arc<dyn Clock>,
    pub config: SessionConfig,
    pub(crate) registry: RwLock<Vec<ActorRef<ShardMsg>>>,
    pub(crate) queued: Vec<AtomicUsize>,
    pub(crate) generation: watch::Sender<u64>,
    /// Sessions held in memory, per shard (reset when a shard is restarted).
    pub(crate) live: Vec<AtomicI64>,
    pub(crate) stopping: AtomicBool,
    /// Session ownership across nodes (cluster mode only).
    pub(crate) ownership: OnceLock<Arc<Ownership>>,
    /// Test hook for the fencing tests: see [`StopBeforeCommit`].
    pub(crate) stop_before_commit: StopBeforeCommit,
}

/// Test hook, off unless the environment variable `IPAY_TEST_STOP_BEFORE_COMMIT` names a
/// command (`succeed`, `fail`, `cancel`, `expire` or `refund`) when the process starts: the
/// first such command this process decides stops the whole process with `SIGSTOP` after
/// deciding and before committing, until someone sends `SIGCONT`. It lets a test stall an
/// owner at exactly the moment fencing protects (see `gateway/tests/cluster_fencing.rs`);
/// there is no other way to hit that window from outside the process.
pub(crate) struct StopBeforeCommit {
    command: Option<String>,
    fired: AtomicBool,
}

impl StopBeforeCommit {
    fn from_env() -> Self {
        StopBeforeCommit {
            command: std::env::var("IPAY_TEST_STOP_BEFORE_COMMIT")
                .ok()
                .filter(|c| !c.is_empty()),
            fired: AtomicBool::new(false),
        }
    }

    /// Stops this process if the hook is armed for `cmd` and has not fired yet.
    pub(crate) fn check(&self, cmd: &IntentCommand) {
        let Some(armed) = &self.command else { return };
        let name = match cmd {
            IntentCommand::Succeed { .. } => "succeed",
            IntentCommand::Fail { .. } => "fail",
            IntentCommand::Expire => "expire",
            IntentCommand::Cancel { .. } => "cancel",
            IntentCommand::Refund { .. } => "refund",
            IntentCommand::SettleRefund { .. } => "settle_refund",
            IntentCommand::RecordPspRefunds { .. } => "record_psp_refunds",
        };
        if name != armed || self.fired.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::warn!(
            command = name,
            "test hook: stopping this process before a commit"
        );
        // `kill` stops every thread before the shell exits, so nothing runs past this line
        // until SIGCONT.
        let _ = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("kill -STOP {}", std::process::id()))
            .status();
    }
}

impl SessionContext {
    /// Shared context for a new session layer.
    pub fn new(
        ledger: Arc<dyn Ledger>,
        clock: Arc<dyn Clock>,
        mut config: SessionConfig,
    ) -> Arc<Self> {
        config.shards = config.shards.clamp(1, 4096);
        let queued = (0..config.shards).map(|_| AtomicUsize::new(0)).collect();
        let live = (0..config.shards).map(|_| AtomicI64::new(0)).collect();
        Arc::new(SessionContext {
            ledger,
            clock,
            config,
            registry: RwLock::new(Vec::new()),
            queued,
            live,
            generation: watch::channel(0).0,
            stopping: AtomicBool::new(false),
            ownership: OnceLock::new(),
            stop_before_commit: StopBeforeCommit::from_env(),
        })
    }

    /// Which shard hosts a session.
    pub fn shard_of(&self, id: PaymentIntentId) -> usize {
        let v = id.as_u128();
        // The low 80 bits of a ULID are random, so folding them spreads sessions evenly.
        ((v as u64) ^ ((v >> 64) as u64)) as usize % self.config.shards
    }

    /// Number of sessions held in memory across all shards.
    pub fn live_sessions(&self) -> i64 {
        self.live.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// The handle the engine uses to talk to sessions.
#[derive(Clone)]
pub struct SessionRegistry {
    ctx: Arc<SessionContext>,
    supervisor: ActorRef<()>,
}

impl SessionRegistry {
    /// Starts the supervisor and its shards.
    pub async fn start(ctx: Arc<SessionContext>) -> EngineResult<SessionRegistry> {
        let (supervisor, _) = ractor::Actor::spawn(None, SessionSupervisor, ctx.clone())
            .await
            .map_err(|e| EngineError::Internal(format!("cannot start session supervisor: {e}")))?;
        Ok(SessionRegistry { ctx, supervisor })
    }

    /// The shared context.
    pub fn context(&self) -> &Arc<SessionContext> {
        &self.ctx
    }

    /// Stops all shards (in-flight commits still complete; the ledger owns them).
    pub async fn stop(&self) {
        self.ctx.stopping.store(true, Ordering::SeqCst);
        if self.ctx.ownership.get().is_some() {
            // Hand idle sessions over to the other nodes (bounded: a stop must not hang).
            let shards = self.ctx.registry.read().clone();
            let calls = shards
                .iter()
                .map(|s| s.call(ShardMsg::HandOver, Some(Duration::from_secs(3))));
            let _ = tokio::time::timeout(Duration::from_secs(5), futures::future::join_all(calls))
                .await;
        }
        let _ = self
            .supervisor
            .stop_and_wait(None, Some(Duration::from_secs(5)))
            .await;
    }

    /// Turns on session ownership across nodes (cluster mode): from now on a session is
    /// decided only by the node holding its lease, and commands for sessions owned elsewhere
    /// are forwarded (see [`ownership`]). Also starts the sweep that expires pending intents
    /// whose owner died. Call once, before serving traffic.
    pub fn enable_ownership(&self, ownership: Arc<Ownership>) -> EngineResult<()> {
        self.ctx
            .ownership
            .set(ownership)
            .map_err(|_| EngineError::Internal("session ownership enabled twice".into()))?;
        spawn_expiry_sweep(Arc::downgrade(&self.ctx));
        Ok(())
    }

    /// Session ownership, when enabled.
    pub fn ownership(&self) -> Option<&Arc<Ownership>> {
        self.ctx.ownership.get()
    }

    /// Hands a new intent to its session; resolves once it is durable.
    pub async fn create(
        &self,
        intent: PaymentIntent,
        idem: Option<IdempotencySpec>,
    ) -> EngineResult<Created> {
        let id = intent.id;
        if let Some(own) = self.ctx.ownership.get() {
            own.claim_new(id).await?;
        }
        call(&self.ctx, id, move |reply| ShardMsg::Create {
            intent: Box::new(intent.clone()),
            idem: idem.clone(),
            reply,
        })
        .await
    }

    /// Sends a command to an intent's session; resolves once its effects are durable. In
    /// cluster mode the command runs on the node that owns the session.
    pub async fn command(
        &self,
        id: PaymentIntentId,
        cmd: IntentCommand,
        idem: Option<IdempotencySpec>,
    ) -> EngineResult<Applied> {
        owned_command(&self.ctx, id, cmd, idem, Vec::new(), false).await
    }

    /// Like [`SessionRegistry::command`], and when the command applies, `records` are
    /// committed in the same batch as the state change and its events, so neither can be
    /// durable without the other; when the command is refused nothing is written. A command
    /// forwarded to the node owning the session (cluster mode) carries no records: they are
    /// committed here, in a batch of their own, once the owner has committed.
    pub async fn command_with_records(
        &self,
        id: PaymentIntentId,
        cmd: IntentCommand,
        records: Vec<WriteOp>,
    ) -> EngineResult<Applied> {
        owned_command(&self.ctx, id, cmd, None, records, false).await
    }

    /// Runs a command another node forwarded here. It is never forwarded again: if this node
    /// no longer owns the session the caller gets 503 and retries.
    pub async fn command_forwarded(
        &self,
        id: PaymentIntentId,
        cmd: IntentCommand,
        idem: Option<IdempotencySpec>,
    ) -> EngineResult<Applied> {
        owned_command(&self.ctx, id, cmd, idem, Vec::new(), true).await
    }

    /// Runs every shard's timers now and waits until each has handled the tick (tests, and
    /// after the clock jumps).
    pub async fn tick_all(&self) {
        let shards = self.ctx.registry.read().clone();
        for s in shards {
            let _ = s
                .call(
                    |reply| ShardMsg::Tick { reply: Some(reply) },
                    Some(Duration::from_secs(5)),
                )
                .await;
        }
    }

    /// Makes the shard hosting `id` panic while handling a message for it.
    #[cfg(test)]
    pub(crate) fn inject_panic(&self, id: PaymentIntentId) {
        let idx = self.ctx.shard_of(id);
        let shard = self.ctx.registry.read()[idx].clone();
        let _ = shard.send_message(ShardMsg::CrashForTest { id });
    }
}

/// Claims the session (cluster mode) and runs the command here or on its owner.
pub(crate) async fn owned_command(
    ctx: &Arc<SessionContext>,
    id: PaymentIntentId,
    cmd: IntentCommand,
    idem: Option<IdempotencySpec>,
    records: Vec<WriteOp>,
    forwarded: bool,
) -> EngineResult<Applied> {
    let mut fresh = None;
    let mut epoch = None;
    if let Some(own) = ctx.ownership.get() {
        let (claim, lease_epoch) = own.claim_fenced(id).await?;
        epoch = lease_epoch;
        match claim {
            Claim::Held => {}
            Claim::Fresh => fresh = Some(Fresh(own.take_snapshot(id).await?.map(Box::new))),
            Claim::Elsewhere(_) if forwarded => return Err(EngineError::SessionUnavailable),
            Claim::Elsewhere(url) => {
                let applied = own.forward(&url, id, cmd, idem).await?;
                commit_records(ctx, records).await?;
                return Ok(applied);
            }
        }
    }
    call(ctx, id, move |reply| ShardMsg::Command {
        id,
        cmd: cmd.clone(),
        idem: idem.clone(),
        records: records.clone(),
        fresh: fresh.clone(),
        epoch,
        reply,
    })
    .await
}

/// Commits records that could not ride along with a forwarded command.
async fn commit_records(ctx: &SessionContext, records: Vec<WriteOp>) -> EngineResult<()> {
    if records.is_empty() {
        return Ok(());
    }
    ctx.ledger.submit(WriteBatch { ops: records }).await?;
    Ok(())
}

/// Cluster mode: every lease TTL (at least 5 s) one node at a time expires the pending intents
/// that are past due, through their owners, so intents of a node that died still expire.
fn spawn_expiry_sweep(ctx: std::sync::Weak<SessionContext>) {
    tokio::spawn(async move {
        let Some(period) = ctx
            .upgrade()
            .and_then(|c| c.ownership.get().map(|o| o.lease_ttl()))
        else {
            return;
        };
        let period = period.max(Duration::from_secs(5));
        let mut every = tokio::time::interval(period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let Some(ctx) = ctx.upgrade() else { return };
            if ctx.stopping.load(Ordering::Relaxed) {
                return;
            }
            let Some(own) = ctx.ownership.get().cloned() else {
                return;
            };
            own.forget_lapsed();
            match own.lead("sweeper:expiry", period * 2).await {
                Ok(true) => {}
                _ => continue,
            }
            let now = ctx.clock.now();
            let due = match ctx.ledger.pending_expiries().await {
                Ok(list) => list,
                Err(e) => {
                    tracing::warn!(error = %e, "expiry sweep could not read the ledger");
                    continue;
                }
            };
            for (id, at) in due.into_iter().filter(|(_, at)| *at <= now).take(1000) {
                let _ = at;
                if let Err(e) =
                    owned_command(&ctx, id, IntentCommand::Expire, None, Vec::new(), false).await
                {
                    tracing::debug!(intent = %id, error = %e, "expiry sweep skipped an intent");
                }
            }
        }
    });
}

async fn call<T, F>(ctx: &SessionContext, id: PaymentIntentId, build: F) -> EngineResult<T>
where
    T: Send + 'static,
    F: Fn(ractor::RpcReplyPort<EngineResult<T>>) -> ShardMsg,
{
    {
        let idx = ctx.shard_of(id);
        let timeout = Some(Duration::from_millis(ctx.config.call_timeout_ms));
        // One retry: a send that fails because the shard is being restarted waits for the
        // supervisor to publish the replacement.
        for attempt in 0..2 {
            let mut gen_rx = ctx.generation.subscribe();
            let shard = match ctx.registry.read().get(idx) {
                Some(s) => s.clone(),
                None => return Err(EngineError::SessionUnavailable),
            };
            let q = &ctx.queued[idx];
            if q.fetch_add(1, Ordering::Relaxed) >= ctx.config.mailbox_bound {
                q.fetch_sub(1, Ordering::Relaxed);
                return Err(EngineError::StoreUnavailable(
                    "payment session shard is overloaded".into(),
                ));
            }
            match shard.call(&build, timeout).await {
                Ok(CallResult::Success(r)) => return r,
                Ok(CallResult::Timeout) => return Err(EngineError::SessionUnavailable),
                Ok(CallResult::SenderError) => return Err(EngineError::SessionUnavailable),
                Err(MessagingErr::SendErr(_)) | Err(MessagingErr::ChannelClosed)
                    if attempt == 0 =>
                {
                    q.fetch_sub(1, Ordering::Relaxed);
                    let _ = tokio::time::timeout(Duration::from_secs(2), gen_rx.changed()).await;
                }
                Err(_) => {
                    q.fetch_sub(1, Ordering::Relaxed);
                    return Err(EngineError::SessionUnavailable);
                }
            }
        }
        Err(EngineError::SessionUnavailable)
    }
}

/// A newly created intent and its JSON (serialized once, for the body and the records).
#[derive(Debug, Clone)]
pub struct Created {
    pub intent: PaymentIntent,
    pub json: String,
}

/// The idempotency record of an outcome whose JSON is already at hand.
pub(crate) fn idempotency_record(
    spec: &IdempotencySpec,
    status: u16,
    body: String,
    now: crate::clock::Timestamp,
) -> WriteOp {
    WriteOp::PutIdempotency {
        scope: spec.scope.clone(),
        record: IdempotencyRecord {
            request_hash: spec.request_hash.clone(),
            status,
            body,
            created: now,
        },
    }
}

/// Builds the idempotency record written with a state change.
pub(crate) fn idempotency_op<T: Serialize>(
    spec: &IdempotencySpec,
    status: u16,
    body: &T,
    now: crate::clock::Timestamp,
) -> WriteOp {
    idempotency_record(
        spec,
        status,
        serde_json::to_string(body).unwrap_or_default(),
        now,
    )
}

/// Keeps the `ipay_intents{status}` gauge in step with committed transitions.
pub(crate) fn record_transition(from: Option<IntentStatus>, to: IntentStatus) {
    if from == Some(to) {
        return;
    }
    if let Some(f) = from {
        metrics::gauge!("ipay_intents", "status" => f.as_str()).decrement(1.0);
    }
    metrics::gauge!("ipay_intents", "status" => to.as_str()).increment(1.0);
}

#[cfg(test)]
mod tests;
