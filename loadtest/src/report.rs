//! The result of a run as shown to people (plain text) and to scripts (one
//! JSON object): counts, achieved throughput and latency percentiles.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::driver::{Outcome, Plan};

/// A run is said to have kept its target rate when at least this share of
/// the scheduled requests was actually sent.
const RATE_KEPT_SHARE: f64 = 0.99;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencyMs {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest latency seen.
    pub max: f64,
}

/// Summary of the measured phase of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario that was run (e.g. `create-intents`).
    pub scenario: String,
    /// Target URL.
    pub target: String,
    /// `open-loop` or `closed-loop`.
    pub mode: &'static str,
    /// Requested rate in requests/s; `0` for closed loop.
    pub rate: u64,
    /// Number of connections.
    pub connections: usize,
    /// Length of the measured phase in seconds.
    pub duration_secs: f64,
    /// Length of the discarded warmup phase in seconds.
    pub warmup_secs: f64,
    /// Requests attempted in the measured phase.
    pub requests: u64,
    /// 2xx responses.
    pub ok: u64,
    /// All responses by status code.
    pub status_counts: BTreeMap<u16, u64>,
    /// Transport errors (connect, I/O, timeout).
    pub errors: u64,
    /// 2xx responses per second of measured phase.
    pub throughput_rps: f64,
    /// Latency of answered requests.
    pub latency_ms: LatencyMs,
    /// Open-loop requests due in the measured phase (`null` in closed loop).
    pub scheduled: Option<u64>,
    /// Whether the open-loop rate was kept (`null` in closed loop).
    pub rate_kept: Option<bool>,
    /// Connections re-opened during the run.
    pub reconnects: u64,
    /// A few distinct transport-error messages.
    pub error_samples: Vec<String>,
}

impl Report {
    /// Builds the report of `outcome`, a run of `plan` under `scenario`.
    pub fn new(scenario: &str, plan: &Plan, outcome: &Outcome) -> Self {
        let ok = outcome.ok();
        let duration_secs = plan.duration.as_secs_f64();
        let h = &outcome.latency_us;
        let ms = |micros: u64| micros as f64 / 1000.0;
        let latency_ms = if h.is_empty() {
            LatencyMs {
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
            }
        } else {
            LatencyMs {
                p50: ms(h.value_at_quantile(0.50)),
                p90: ms(h.value_at_quantile(0.90)),
                p99: ms(h.value_at_quantile(0.99)),
                p999: ms(h.value_at_quantile(0.999)),
                max: ms(h.max()),
            }
        };
        let open = plan.is_open_loop();
        Self {
            scenario: scenario.to_string(),
            target: plan.target.url().to_string(),
            mode: if open { "open-loop" } else { "closed-loop" },
            rate: plan.rate,
            connections: plan.connections,
            duration_secs,
            warmup_secs: plan.warmup.as_secs_f64(),
            requests: outcome.requests,
            ok,
            status_counts: outcome.status_counts.clone(),
            errors: outcome.errors,
            throughput_rps: ok as f64 / duration_secs,
            latency_ms,
            scheduled: open.then_some(outcome.scheduled),
            rate_kept: open
                .then_some(outcome.requests as f64 >= outcome.scheduled as f64 * RATE_KEPT_SHARE),
            reconnects: outcome.reconnects,
            error_samples: outcome.error_samples.clone(),
        }
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        // Serialising plain numbers, strings and maps with integer keys
        // cannot fail.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "scenario:     {}", self.scenario)?;
        writeln!(f, "target:       {}", self.target)?;
        if self.rate > 0 {
            writeln!(f, "mode:         open-loop at {} req/s", self.rate)?;
        } else {
            writeln!(f, "mode:         closed-loop")?;
        }
        writeln!(f, "connections:  {}", self.connections)?;
        writeln!(
            f,
            "duration:     {:.3} s (after {:.3} s warmup)",
            self.duration_secs, self.warmup_secs
        )?;
        writeln!(f, "requests:     {}", self.requests)?;
        writeln!(f, "ok (2xx):     {}", self.ok)?;
        let non_2xx: Vec<String> = self
            .status_counts
            .iter()
            .filter(|(code, _)| !(200..300).contains(*code))
            .map(|(code, n)| format!("{code}={n}"))
            .collect();
        if non_2xx.is_empty() {
            writeln!(f, "non-2xx:      none")?;
        } else {
            writeln!(f, "non-2xx:      {}", non_2xx.join(" "))?;
        }
        writeln!(f, "errors:       {}", self.errors)?;
        for sample in &self.error_samples {
            writeln!(f, "  error:      {sample}")?;
        }
        if self.reconnects > 0 {
            writeln!(f, "reconnects:   {}", self.reconnects)?;
        }
        writeln!(f, "throughput:   {:.1} req/s (2xx)", self.throughput_rps)?;
        let l = &self.latency_ms;
        writeln!(
            f,
            "latency (ms): p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            l.p50, l.p90, l.p99, l.p999, l.max
        )?;
        if let (Some(scheduled), Some(false)) = (self.scheduled, self.rate_kept) {
            let share = if scheduled == 0 {
                0.0
            } else {
                self.requests as f64 * 100.0 / scheduled as f64
            };
            writeln!(
                f,
                "WARNING:      target rate not kept: sent {} of {} scheduled requests ({share:.1}%); \
                 latencies include the queueing this caused",
                self.requests, scheduled
            )?;
        }
        Ok(())
    }
}
