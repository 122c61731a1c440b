//! What a replay measures while it runs: one HDR histogram per lifecycle stage and one for the
//! whole lifecycle, HTTP statuses, and a per-second timeline (arrivals, completions, latency
//! percentiles) for the plots. It owns no I/O; everything sits behind one short-held lock.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;

use crate::report::LatencyMs;

/// A measured step of a parcel's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Intended arrival → order accepted (201).
    OrderAccepted,
    /// Order accepted → payment session created (18-digit reference).
    SessionCreated,
    /// Consumer starts the payment → the PSP order exists.
    PaymentStarted,
    /// The PSP sends its signed callback → the session reads `PAID`.
    PaidAfterCallback,
    /// The callback is sent → `session.paid` reaches the merchant's webhook sink.
    WebhookDelivered,
    /// The driver sends the OTP → verified and delivered.
    OtpVerified,
    /// Intended arrival → `DELIVERED` (paid lifecycles only).
    Lifecycle,
}

impl Stage {
    /// Every stage, in report order.
    pub const ALL: [Stage; 7] = [
        Stage::OrderAccepted,
        Stage::SessionCreated,
        Stage::PaymentStarted,
        Stage::PaidAfterCallback,
        Stage::WebhookDelivered,
        Stage::OtpVerified,
        Stage::Lifecycle,
    ];

    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::OrderAccepted => "order_accepted",
            Stage::SessionCreated => "session_created",
            Stage::PaymentStarted => "payment_started",
            Stage::PaidAfterCallback => "paid_after_callback",
            Stage::WebhookDelivered => "webhook_delivered",
            Stage::OtpVerified => "otp_verified",
            Stage::Lifecycle => "lifecycle",
        }
    }
}

/// One second of the run.
#[derive(Debug)]
struct Bucket {
    started: u64,
    completed: u64,
    ended_known: u64,
    lost: u64,
    lifecycle_us: Histogram<u64>,
}

impl Bucket {
    fn new() -> Self {
        Self {
            started: 0,
            completed: 0,
            ended_known: 0,
            lost: 0,
            lifecycle_us: histogram(),
        }
    }
}

/// One second of the timeline as reported and plotted.
#[derive(Debug, Clone, Serialize)]
pub struct TimelinePoint {
    /// Seconds since the start of the run.
    pub t: u64,
    /// Lifecycles whose intended arrival fell in this second.
    pub started: u64,
    /// Lifecycles delivered in this second.
    pub completed: u64,
    /// Lifecycles that ended in a known non-delivered state in this second.
    pub ended_known: u64,
    /// Lifecycles lost (an unexpected answer) in this second.
    pub lost: u64,
    /// Lifecycle latency of the deliveries of this second (ms), when there were any.
    pub lifecycle_ms: Option<LatencyMs>,
}

/// Largest timeline kept (a day compressed into at most 24 h of wall time).
const MAX_BUCKETS: usize = 86_400;

#[derive(Debug)]
struct Inner {
    stages: BTreeMap<Stage, Histogram<u64>>,
    statuses: BTreeMap<u16, u64>,
    timeline: Vec<Bucket>,
}

/// The run's measurements; shared by every lifecycle task.
#[derive(Debug)]
pub struct Stats {
    inner: Mutex<Inner>,
}

/// An auto-resizing histogram with 3 significant figures.
pub fn histogram() -> Histogram<u64> {
    // Only a precision above 5 makes creation fail.
    Histogram::new(3).expect("3 significant figures is a valid precision")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    let v = micros(d).max(1);
    if h.record(v).is_err() {
        h.saturating_record(v);
    }
}

/// Percentiles of `h` (µs) in milliseconds; zeros when empty.
pub fn percentiles(h: &Histogram<u64>) -> LatencyMs {
    if h.is_empty() {
        return LatencyMs {
            p50: 0.0,
            p90: 0.0,
            p99: 0.0,
            p999: 0.0,
            max: 0.0,
        };
    }
    let ms = |us: u64| us as f64 / 1000.0;
    LatencyMs {
        p50: ms(h.value_at_quantile(0.50)),
        p90: ms(h.value_at_quantile(0.90)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
    }
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// Empty measurements.
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                stages: Stage::ALL.into_iter().map(|s| (s, histogram())).collect(),
                statuses: BTreeMap::new(),
                timeline: Vec::new(),
            }),
        }
    }

    /// Records the latency of one stage.
    pub fn stage(&self, stage: Stage, d: Duration) {
        let mut g = self.inner.lock();
        if let Some(h) = g.stages.get_mut(&stage) {
            record(h, d);
        }
    }

    /// Counts one HTTP answer.
    pub fn status(&self, code: u16) {
        *self.inner.lock().statuses.entry(code).or_insert(0) += 1;
    }

    fn bucket(g: &mut Inner, at: Duration) -> Option<&mut Bucket> {
        let i = usize::try_from(at.as_secs()).unwrap_or(usize::MAX);
        if i >= MAX_BUCKETS {
            return None;
        }
        while g.timeline.len() <= i {
            g.timeline.push(Bucket::new());
        }
        g.timeline.get_mut(i)
    }

    /// A lifecycle whose intended arrival is `at` (offset from the start) began.
    pub fn started(&self, at: Duration) {
        if let Some(b) = Self::bucket(&mut self.inner.lock(), at) {
            b.started += 1;
        }
    }

    /// A lifecycle was delivered at `now` (offset), `latency` after its intended arrival.
    pub fn completed(&self, now: Duration, latency: Duration) {
        let mut g = self.inner.lock();
        if let Some(h) = g.stages.get_mut(&Stage::Lifecycle) {
            record(h, latency);
        }
        if let Some(b) = Self::bucket(&mut g, now) {
            b.completed += 1;
            record(&mut b.lifecycle_us, latency);
        }
    }

    /// A lifecycle ended at `now` in the known non-delivered state it was meant to reach.
    pub fn ended_known(&self, now: Duration) {
        if let Some(b) = Self::bucket(&mut self.inner.lock(), now) {
            b.ended_known += 1;
        }
    }

    /// A lifecycle was lost at `now`.
    pub fn lost(&self, now: Duration) {
        if let Some(b) = Self::bucket(&mut self.inner.lock(), now) {
            b.lost += 1;
        }
    }

    /// Count and percentiles of every stage.
    pub fn stage_summary(&self) -> BTreeMap<Stage, (u64, LatencyMs)> {
        let g = self.inner.lock();
        g.stages
            .iter()
            .map(|(s, h)| (*s, (h.len(), percentiles(h))))
            .collect()
    }

    /// Every HTTP answer by status code.
    pub fn statuses(&self) -> BTreeMap<u16, u64> {
        self.inner.lock().statuses.clone()
    }

    /// The per-second timeline.
    pub fn timeline(&self) -> Vec<TimelinePoint> {
        let g = self.inner.lock();
        g.timeline
            .iter()
            .enumerate()
            .map(|(t, b)| TimelinePoint {
                t: t as u64,
                started: b.started,
                completed: b.completed,
                ended_known: b.ended_known,
                lost: b.lost,
                lifecycle_ms: (!b.lifecycle_us.is_empty()).then(|| percentiles(&b.lifecycle_us)),
            })
            .collect()
    }
}
