//! Per-endpoint back-off: an endpoint whose attempts keep failing (refused connections,
//! timeouts, error statuses) is left alone for a while instead of being called once per due
//! delivery, so a merchant with dead endpoints does not spend the dispatcher's sends, the
//! ledger's writes (one attempt log each) and the CPU that other merchants' deliveries need.
//!
//! Once an attempt to an endpoint failed, its deliveries go out one at a time: one is let
//! through as a probe and the others coming due meanwhile wait (up to the first retry delay,
//! 10 s). After `backoff_after_failures` failed attempts in a row, the endpoint is *open* for
//! a window that starts at 10 s and doubles with every further failure up to
//! `backoff_max_ms`. Deliveries of an open endpoint that come due (or are fanned out) are
//! moved to the end of the window without an attempt: no connection, no log, and their retry
//! count is not used up. When the window ends, one delivery goes out as a probe while the
//! others wait another window; the probe's success closes the endpoint, its failure opens a
//! longer window. Any success resets the count.
//!
//! The state is per node and in memory only (bounded to [`MAX_TRACKED`] failing endpoints):
//! after a restart an endpoint starts closed and earns its back-off again within a few
//! attempts. It owns nothing durable; the delivery records and schedule are the dispatcher's.

use super::model::RETRY_SCHEDULE_SECS;
use dashmap::DashMap;

/// The first window (and the longest a delivery waits behind a probe before the endpoint is
/// open): the schedule's first retry delay.
const FIRST_WINDOW_MS: i64 = RETRY_SCHEDULE_SECS[0] * 1000;

/// Failing endpoints tracked at most (beyond it, new ones are simply not backed off).
pub const MAX_TRACKED: usize = 100_000;

#[derive(Default)]
struct Health {
    /// Failed attempts in a row.
    failures: u32,
    /// While `now < open_until`, nothing is sent.
    open_until: i64,
    /// The current window, ms.
    window: i64,
    /// A probe was let through: others wait until then (a probe whose outcome never comes,
    /// because its step was not written, stops holding the others back at this time).
    probing_until: i64,
}

/// The back-off state of every failing endpoint this node knows.
pub struct Backoff {
    after_failures: u32,
    max_ms: i64,
    endpoints: DashMap<String, Health>,
}

impl Backoff {
    /// Back-off after `after_failures` failures in a row (0: never), windows up to `max_ms`.
    pub fn new(after_failures: u32, max_ms: u64) -> Backoff {
        Backoff {
            after_failures,
            max_ms: max_ms.max(1) as i64,
            endpoints: DashMap::new(),
        }
    }

    /// `None` when a delivery to `endpoint` may be attempted at `now`; otherwise when to try
    /// again. When the endpoint is backing off and its window ended, the first caller that
    /// will really send (`will_send`) takes the probe and gets `None`.
    pub fn hold_until(&self, endpoint: &str, now: i64, will_send: bool) -> Option<i64> {
        if self.after_failures == 0 {
            return None;
        }
        let mut h = self.endpoints.get_mut(endpoint)?;
        if now < h.open_until {
            return Some(h.open_until);
        }
        if now < h.probing_until {
            return Some(h.probing_until);
        }
        if will_send {
            h.probing_until = now + h.window.max(FIRST_WINDOW_MS);
        }
        None
    }

    /// Records the outcome of an attempt to `endpoint` that reached (or tried to reach) it.
    pub fn record(&self, endpoint: &str, success: bool, now: i64) {
        if self.after_failures == 0 {
            return;
        }
        if success {
            self.endpoints.remove(endpoint);
            return;
        }
        if !self.endpoints.contains_key(endpoint) && self.endpoints.len() >= MAX_TRACKED {
            return;
        }
        let mut h = self.endpoints.entry(endpoint.to_string()).or_default();
        h.failures = h.failures.saturating_add(1);
        h.probing_until = 0;
        if h.failures >= self.after_failures {
            let doublings = (h.failures - self.after_failures).min(20);
            h.window = FIRST_WINDOW_MS
                .saturating_mul(1 << doublings)
                .min(self.max_ms);
            h.open_until = now + h.window;
        } else {
            h.window = FIRST_WINDOW_MS.min(self.max_ms);
        }
    }

    /// Whether `endpoint` is backing off at `now` (its window has not ended).
    pub fn is_open(&self, endpoint: &str, now: i64) -> bool {
        self.endpoints
            .get(endpoint)
            .is_some_and(|h| now < h.open_until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_backs_off_after_repeated_failures_and_one_probe_reopens_it() {
        let b = Backoff::new(3, 60_000);
        let t = 1_000_000;
        for i in 0..2 {
            b.record("we_1", false, t + i);
            assert_eq!(b.hold_until("we_1", t + i, true), None, "not yet");
        }
        b.record("we_1", false, t + 2);
        assert_eq!(b.hold_until("we_1", t + 3, true), Some(t + 2 + 10_000));
        assert!(b.is_open("we_1", t + 3));
        // Other endpoints are not affected.
        assert_eq!(b.hold_until("we_2", t + 3, true), None);
        // The window ends: one probe goes, the others wait another window.
        let later = t + 2 + 10_000;
        assert_eq!(b.hold_until("we_1", later, true), None);
        assert_eq!(b.hold_until("we_1", later, true), Some(later + 10_000));
        // The probe fails: a doubled window; then one succeeds: closed at once.
        b.record("we_1", false, later + 5);
        assert_eq!(
            b.hold_until("we_1", later + 6, true),
            Some(later + 5 + 20_000)
        );
        b.record("we_1", true, later + 7);
        assert_eq!(b.hold_until("we_1", later + 8, true), None);
        assert!(!b.is_open("we_1", later + 8));
    }

    #[test]
    fn after_one_failure_attempts_go_one_at_a_time() {
        let b = Backoff::new(5, 60_000);
        b.record("we_1", false, 100);
        assert_eq!(b.hold_until("we_1", 200, true), None, "the probe");
        assert_eq!(b.hold_until("we_1", 201, true), Some(200 + 10_000));
        // A caller that would not send does not take the probe slot.
        let c = Backoff::new(5, 60_000);
        c.record("we_1", false, 100);
        assert_eq!(c.hold_until("we_1", 200, false), None);
        assert_eq!(c.hold_until("we_1", 200, true), None);
        // The probe succeeds: everything flows again.
        b.record("we_1", true, 300);
        assert_eq!(b.hold_until("we_1", 301, true), None);
        assert_eq!(b.hold_until("we_1", 301, true), None);
    }

    #[test]
    fn windows_stop_growing_at_the_maximum_and_zero_turns_it_off() {
        let b = Backoff::new(1, 45_000);
        for i in 0..30 {
            b.record("we_1", false, i);
        }
        assert_eq!(b.hold_until("we_1", 30, true), Some(29 + 45_000));
        let off = Backoff::new(0, 45_000);
        for i in 0..30 {
            off.record("we_1", false, i);
        }
        assert_eq!(off.hold_until("we_1", 30, true), None);
    }
}
