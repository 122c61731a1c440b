//! Circuit breakers, one per channel: closed → open after N consecutive failed PSP calls; open
//! fails fast without calling the PSP; after a cool-down one probe call is let through
//! (half-open): its success closes the breaker, its failure opens it for another cool-down.
//!
//! Time comes from the caller (the engine's [`Clock`](crate::clock::Clock)), so tests move
//! through cool-downs without sleeping. The breaker reports its state to `/metrics` as
//! `ipay_channel_breaker_state{channel}` (0 closed, 1 half-open, 2 open),
//! `ipay_channel_consecutive_failures{channel}` and `ipay_channel_failures_total{channel}`.

use parking_lot::Mutex;
use serde::Serialize;

/// Breaker settings.
#[derive(Debug, Clone, Copy)]
pub struct BreakerSettings {
    /// Consecutive failures that open the breaker (at least 1).
    pub failure_threshold: u32,
    /// Open time before a probe is allowed, ms.
    pub cooldown_ms: i64,
}

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// One probe call is (or may be) in flight; others fail fast.
    HalfOpen,
    /// Calls fail fast until the cool-down ends.
    Open,
}

impl BreakerState {
    fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

/// A breaker's state as reported by `GET /v1/channels`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BreakerSnapshot {
    pub state: BreakerState,
    /// Failed calls since the last success.
    pub consecutive_failures: u32,
    /// Failed calls since the engine started.
    pub failures_total: u64,
}

/// Permission to make one call, returned by [`Breaker::try_acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// The breaker is closed.
    Normal,
    /// The half-open probe.
    Probe,
}

#[derive(Debug)]
struct State {
    state: BreakerState,
    consecutive_failures: u32,
    failures_total: u64,
    /// When the breaker last opened (Open) or the probe started (HalfOpen), ms.
    since_ms: i64,
}

/// One channel's breaker.
#[derive(Debug)]
pub struct Breaker {
    channel: String,
    settings: BreakerSettings,
    state: Mutex<State>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(channel: &str, settings: BreakerSettings) -> Self {
        let b = Breaker {
            channel: channel.to_string(),
            settings: BreakerSettings {
                failure_threshold: settings.failure_threshold.max(1),
                cooldown_ms: settings.cooldown_ms.max(0),
            },
            state: Mutex::new(State {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                failures_total: 0,
                since_ms: 0,
            }),
        };
        b.publish(BreakerState::Closed, 0);
        b
    }

    fn publish(&self, state: BreakerState, consecutive: u32) {
        let ch = self.channel.clone();
        metrics::gauge!("ipay_channel_breaker_state", "channel" => ch.clone()).set(state.gauge());
        metrics::gauge!("ipay_channel_consecutive_failures", "channel" => ch)
            .set(consecutive as f64);
    }

    /// Whether a call may go to the PSP now. `None`: fail fast.
    pub fn try_acquire(&self, now_ms: i64) -> Option<Permit> {
        let mut s = self.state.lock();
        let cooled = now_ms.saturating_sub(s.since_ms) >= self.settings.cooldown_ms;
        match s.state {
            BreakerState::Closed => Some(Permit::Normal),
            // A probe whose caller vanished (request cancelled) must not wedge the breaker:
            // after another cool-down a new probe is let through.
            BreakerState::Open | BreakerState::HalfOpen if cooled => {
                s.state = BreakerState::HalfOpen;
                s.since_ms = now_ms;
                let c = s.consecutive_failures;
                drop(s);
                self.publish(BreakerState::HalfOpen, c);
                tracing::info!(channel = %self.channel, "circuit breaker half-open: probing");
                Some(Permit::Probe)
            }
            BreakerState::Open | BreakerState::HalfOpen => None,
        }
    }

    /// The PSP answered (a refusal counts: the channel is up).
    pub fn on_success(&self) {
        let mut s = self.state.lock();
        let was = s.state;
        s.state = BreakerState::Closed;
        s.consecutive_failures = 0;
        drop(s);
        if was != BreakerState::Closed {
            tracing::info!(channel = %self.channel, "circuit breaker closed");
        }
        self.publish(BreakerState::Closed, 0);
    }

    /// The call failed (unavailable, 5xx, timeout).
    pub fn on_failure(&self, permit: Permit, now_ms: i64) {
        let mut s = self.state.lock();
        s.consecutive_failures = s.consecutive_failures.saturating_add(1);
        s.failures_total += 1;
        let open = permit == Permit::Probe
            || s.state == BreakerState::HalfOpen
            || s.consecutive_failures >= self.settings.failure_threshold;
        let opened = open && s.state != BreakerState::Open;
        if open {
            s.state = BreakerState::Open;
            s.since_ms = now_ms;
        }
        let (state, c) = (s.state, s.consecutive_failures);
        drop(s);
        metrics::counter!("ipay_channel_failures_total", "channel" => self.channel.clone())
            .increment(1);
        if opened {
            tracing::warn!(channel = %self.channel, consecutive_failures = c, "circuit breaker opened");
        }
        self.publish(state, c);
    }

    /// True when calls go through normally (closed).
    pub fn is_closed(&self) -> bool {
        self.state.lock().state == BreakerState::Closed
    }

    /// The current state.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let s = self.state.lock();
        BreakerSnapshot {
            state: s.state,
            consecutive_failures: s.consecutive_failures,
            failures_total: s.failures_total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(
            "test",
            BreakerSettings {
                failure_threshold: 3,
                cooldown_ms: 30_000,
            },
        )
    }

    #[test]
    fn opens_after_consecutive_failures_and_fails_fast_until_the_cooldown() {
        let b = breaker();
        for t in 0..2 {
            let p = b.try_acquire(t).unwrap();
            b.on_failure(p, t);
        }
        assert_eq!(b.snapshot().state, BreakerState::Closed);
        let p = b.try_acquire(2).unwrap();
        b.on_failure(p, 2);
        assert_eq!(b.snapshot().state, BreakerState::Open);
        assert_eq!(b.try_acquire(29_000), None);
        assert_eq!(b.try_acquire(30_002), Some(Permit::Probe));
        assert_eq!(b.snapshot().state, BreakerState::HalfOpen);
        assert_eq!(b.try_acquire(30_003), None, "one probe at a time");
    }

    #[test]
    fn a_success_resets_the_count_and_a_probe_decides_the_state() {
        let b = breaker();
        for t in 0..2 {
            b.on_failure(Permit::Normal, t);
        }
        b.on_success();
        b.on_failure(Permit::Normal, 3);
        assert_eq!(b.snapshot().state, BreakerState::Closed);
        for t in 4..6 {
            b.on_failure(Permit::Normal, t);
        }
        assert_eq!(b.snapshot().state, BreakerState::Open);
        let p = b.try_acquire(40_000).unwrap();
        b.on_failure(p, 40_000);
        assert_eq!(
            b.snapshot().state,
            BreakerState::Open,
            "failed probe reopens"
        );
        assert_eq!(b.try_acquire(50_000), None);
        let p = b.try_acquire(70_000).unwrap();
        assert_eq!(p, Permit::Probe);
        b.on_success();
        assert_eq!(b.snapshot().state, BreakerState::Closed);
        assert_eq!(b.snapshot().consecutive_failures, 0);
        assert_eq!(b.snapshot().failures_total, 6);
    }
}
