//! The session supervisor: starts the shards, restarts any that fail.

use super::SessionContext;
use super::shard::{SessionShard, ShardArgs, ShardMsg};
use crate::clock::Timestamp;
use crate::ids::PaymentIntentId;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Supervises the session shards.
pub struct SessionSupervisor;

/// Supervisor state: which actor is which shard.
pub struct SupervisorState {
    ctx: Arc<SessionContext>,
    by_actor: HashMap<ActorId, usize>,
}

async fn spawn_shard(
    supervisor: ActorCell,
    ctx: &Arc<SessionContext>,
    index: usize,
) -> Result<ActorRef<ShardMsg>, ActorProcessingErr> {
    let (shard, _) = SessionShard::spawn_linked(
        None,
        SessionShard,
        ShardArgs {
            index,
            ctx: ctx.clone(),
        },
        supervisor,
    )
    .await?;
    Ok(shard)
}

fn arm(
    ctx: &Arc<SessionContext>,
    shard: &ActorRef<ShardMsg>,
    index: usize,
    pending: &[(PaymentIntentId, Timestamp)],
) {
    let mine: Vec<_> = pending
        .iter()
        .filter(|(id, _)| ctx.shard_of(*id) == index)
        .copied()
        .collect();
    if !mine.is_empty() {
        let _ = shard.send_message(ShardMsg::ArmTimers(mine));
    }
}

impl Actor for SessionSupervisor {
    type Msg = ();
    type State = SupervisorState;
    type Arguments = Arc<SessionContext>;

    async fn pre_start(
        &self,
        myself: ActorRef<()>,
        ctx: Arc<SessionContext>,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let pending = ctx.ledger.pending_expiries().await?;
        let mut shards = Vec::with_capacity(ctx.config.shards);
        let mut by_actor = HashMap::new();
        for i in 0..ctx.config.shards {
            let shard = spawn_shard(myself.get_cell(), &ctx, i).await?;
            by_actor.insert(shard.get_id(), i);
            arm(&ctx, &shard, i, &pending);
            shards.push(shard);
        }
        *ctx.registry.write() = shards;
        tracing::info!(
            shards = ctx.config.shards,
            pending = pending.len(),
            "session shards started"
        );
        Ok(SupervisorState { ctx, by_actor })
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<()>,
        evt: SupervisionEvent,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match &evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell.clone(), err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell.clone(),
                reason.clone().unwrap_or_else(|| "stopped".into()),
            ),
            _ => return Ok(()),
        };
        let Some(index) = st.by_actor.remove(&cell.get_id()) else {
            return Ok(());
        };
        if st.ctx.stopping.load(Ordering::SeqCst) {
            return Ok(());
        }
        tracing::error!(shard = index, reason = %why, "session shard died; restarting it from durable state");
        metrics::counter!("ipay_session_shard_restarts_total").increment(1);
        let shard = spawn_shard(myself.get_cell(), &st.ctx, index).await?;
        st.by_actor.insert(shard.get_id(), index);
        st.ctx.registry.write()[index] = shard.clone();
        // Messages that were queued in the dead shard are gone with it; their callers got an
        // error and nothing of theirs was acknowledged. Reset the mailbox count accordingly.
        st.ctx.queued[index].store(0, Ordering::Relaxed);
        st.ctx.live[index].store(0, Ordering::Relaxed);
        st.ctx.generation.send_modify(|g| *g += 1);
        let ctx = st.ctx.clone();
        tokio::spawn(async move {
            match ctx.ledger.pending_expiries().await {
                Ok(pending) => arm(&ctx, &shard, index, &pending),
                Err(e) => tracing::error!(shard = index, error = %e, "cannot re-arm expiry timers"),
            }
        });
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<()>,
        _msg: (),
        _st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}
