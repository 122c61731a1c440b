//! Waiting between retries of a failed PSP call, injected: production sleeps on the tokio
//! timer, tests use [`RecordingSleeper`], which records each delay, moves a manual clock by it
//! and returns at once.

use crate::clock::ManualClock;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;

/// Waits before a retry.
#[async_trait::async_trait]
pub trait Sleeper: Send + Sync + 'static {
    /// Returns after `d` (or, in tests, at once).
    async fn sleep(&self, d: Duration);
}

/// Sleeps on the tokio timer.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioSleeper;

#[async_trait::async_trait]
impl Sleeper for TokioSleeper {
    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}

/// Records every delay and returns at once; advances `clock` by the delay when given, so time
/// seen by breakers and expiries moves as if the wait had happened.
#[derive(Debug, Clone, Default)]
pub struct RecordingSleeper {
    delays: Arc<Mutex<Vec<Duration>>>,
    clock: Option<ManualClock>,
}

impl RecordingSleeper {
    /// A sleeper that also moves `clock`.
    pub fn with_clock(clock: ManualClock) -> Self {
        RecordingSleeper {
            delays: Arc::default(),
            clock: Some(clock),
        }
    }

    /// Delays asked for so far, in order.
    pub fn delays(&self) -> Vec<Duration> {
        self.delays.lock().clone()
    }

    /// Returns and forgets the delays asked for so far.
    pub fn take(&self) -> Vec<Duration> {
        std::mem::take(&mut *self.delays.lock())
    }
}

#[async_trait::async_trait]
impl Sleeper for RecordingSleeper {
    async fn sleep(&self, d: Duration) {
        self.delays.lock().push(d);
        if let Some(c) = &self.clock {
            c.advance_ms(d.as_millis() as i64);
        }
    }
}
