//! Noticing payments the engine settled while nobody looked: the sessions awaiting payment this
//! node follows (bounded by `watch_max_sessions`; others are settled when next read) and the
//! tick that checks them every `paid_check_interval_ms`.

use super::{SessionId, SessionStatus};
use crate::LastMile;
use std::sync::Arc;
use std::time::Duration;

impl LastMile {
    /// Follows a session awaiting payment, while the watch list has room.
    pub(super) fn ps_watch(&self, id: SessionId) {
        if self.sessions.watched.len() < self.ps_scfg().watch_max_sessions {
            self.sessions.watched.insert(id, ());
        }
    }

    /// Checks every watched session once (the watcher's tick; tests call it directly).
    pub async fn check_watched(&self) {
        let ids: Vec<SessionId> = self.sessions.watched.iter().map(|e| *e.key()).collect();
        for id in ids {
            match self.ps_load(id).await {
                Ok(Some(s)) if s.status == SessionStatus::PaymentPending => {
                    if let Err(e) = self.settle_from_intent(s).await {
                        tracing::warn!(error = %e, session = %id, "paid check failed");
                    }
                }
                _ => {
                    self.sessions.watched.remove(&id);
                }
            }
        }
    }

    /// Runs the paid-check watcher until the subsystem is dropped.
    pub fn spawn_watcher(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let every = Duration::from_millis(self.ps_scfg().paid_check_interval_ms.max(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(lm) = weak.upgrade() else { return };
                lm.check_watched().await;
            }
        });
    }
}
