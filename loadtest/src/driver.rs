//! The generic load driver: it owns the persistent HTTP/1.1 connections (one
//! tokio task each), the open-loop schedule or closed-loop pacing, the
//! warmup/measure phases, per-task statistics and their merge at the end.
//! What is sent is decided by a [`Scenario`], so new scenarios only have to
//! build requests.
//!
//! Latency semantics: in open-loop mode every request has an *intended* send
//! time on a fixed global schedule (`seq / rate` seconds after the start). A
//! request that is sent late because the previous one on its connection had
//! not been answered yet is timed from its intended time, which corrects for
//! coordinated omission. When a connection is ahead of schedule it sleeps,
//! and the request is then timed from the moment it actually leaves, so the
//! tokio timer's millisecond granularity is not charged to the server.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::HOST;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{Barrier, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout};

use crate::duration::MAX_DURATION;
use crate::error::{Error, Result};
use crate::target::Target;

/// Request body type used by every scenario.
pub type Body = Full<Bytes>;

/// Largest number of connections a run may open.
pub const MAX_CONNECTIONS: usize = 4096;

/// Largest total request rate (requests per second) a run may ask for.
pub const MAX_RATE: u64 = 10_000_000;

/// How many distinct transport-error messages a report keeps as samples.
const MAX_ERROR_SAMPLES: usize = 5;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Something that can produce the requests of a load test.
pub trait Scenario: Send + Sync + 'static {
    /// Builds request number `seq`; `seq` is unique within a run.
    ///
    /// `scratch` is a buffer owned by the calling connection and reused for
    /// every request it sends: write the body (or header values) into it and
    /// take them out with [`BytesMut::split`], so that steady-state requests
    /// do not allocate new buffers. The driver adds the `Host` header.
    fn build(&self, seq: u64, scratch: &mut BytesMut) -> Result<Request<Body>>;
}

/// The shape of a run: where, how many connections, how fast, how long.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The loopback server to load.
    pub target: Target,
    /// Number of persistent connections (`1..=MAX_CONNECTIONS`).
    pub connections: usize,
    /// Total requests per second across all connections; `0` means closed
    /// loop (each connection sends as soon as the previous answer arrived).
    pub rate: u64,
    /// Phase before the measured one whose results are discarded.
    pub warmup: Duration,
    /// Length of the measured phase.
    pub duration: Duration,
    /// Limit for connecting, and for one request/response exchange.
    pub request_timeout: Duration,
}

impl Plan {
    /// Checks every bound of the plan, returning a message for the first
    /// violation.
    pub fn validate(&self) -> Result<()> {
        if self.connections == 0 || self.connections > MAX_CONNECTIONS {
            return Err(Error::new(format!(
                "connections must be between 1 and {MAX_CONNECTIONS}, got {}",
                self.connections
            )));
        }
        if self.rate > MAX_RATE {
            return Err(Error::new(format!(
                "rate must be at most {MAX_RATE} requests/s, got {}",
                self.rate
            )));
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return Err(Error::new("duration must be more than 0 and at most 1h"));
        }
        if self.warmup > MAX_DURATION {
            return Err(Error::new("warmup must be at most 1h"));
        }
        if self.request_timeout.is_zero() || self.request_timeout > MAX_DURATION {
            return Err(Error::new("timeout must be more than 0 and at most 1h"));
        }
        Ok(())
    }

    /// Whether the plan paces requests on a fixed schedule.
    pub fn is_open_loop(&self) -> bool {
        self.rate > 0
    }

    /// Offset from the start of the run at which request `seq` is due
    /// (open loop only).
    fn slot_offset(&self, seq: u64) -> Duration {
        let nanos = u128::from(seq) * NANOS_PER_SEC / u128::from(self.rate.max(1));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Number of open-loop slots that fall in the measured phase.
    fn scheduled_in_window(&self) -> u64 {
        if !self.is_open_loop() {
            return 0;
        }
        let rate = u128::from(self.rate);
        let first = (self.warmup.as_nanos() * rate).div_ceil(NANOS_PER_SEC);
        let end = ((self.warmup + self.duration).as_nanos() * rate).div_ceil(NANOS_PER_SEC);
        u64::try_from(end - first).unwrap_or(u64::MAX)
    }
}

/// Merged results of the measured phase of a run.
#[derive(Debug)]
pub struct Outcome {
    /// Latency of every answered request, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Responses by HTTP status code.
    pub status_counts: BTreeMap<u16, u64>,
    /// Requests attempted (answered plus failed).
    pub requests: u64,
    /// Requests that failed at the transport level (connect, I/O, timeout).
    pub errors: u64,
    /// Connections opened after the initial ones.
    pub reconnects: u64,
    /// Open-loop slots due in the measured phase (`0` in closed loop).
    pub scheduled: u64,
    /// A few distinct transport-error messages.
    pub error_samples: Vec<String>,
}

impl Outcome {
    /// Number of 2xx responses.
    pub fn ok(&self) -> u64 {
        self.status_counts
            .iter()
            .filter(|(code, _)| (200..300).contains(*code))
            .map(|(_, n)| n)
            .sum()
    }
}

/// Statistics gathered by one connection task.
struct TaskStats {
    latency_us: Histogram<u64>,
    statuses: Vec<(u16, u64)>,
    requests: u64,
    errors: u64,
    reconnects: u64,
    error_samples: Vec<String>,
}

impl TaskStats {
    fn new() -> Self {
        Self {
            latency_us: new_histogram(),
            statuses: Vec::new(),
            requests: 0,
            errors: 0,
            reconnects: 0,
            error_samples: Vec::new(),
        }
    }

    fn record_response(&mut self, status: StatusCode, latency: Duration) {
        self.requests += 1;
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        if self.latency_us.record(micros).is_err() {
            self.latency_us.saturating_record(micros);
        }
        let code = status.as_u16();
        match self.statuses.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += 1,
            None => self.statuses.push((code, 1)),
        }
    }

    fn record_error(&mut self, message: String) {
        self.requests += 1;
        self.errors += 1;
        push_sample(&mut self.error_samples, message);
    }
}

/// An empty auto-resizing histogram with 3 significant figures: it starts
/// small and only grows to the largest latency seen, which keeps thousands of
/// per-connection histograms cheap.
fn new_histogram() -> Histogram<u64> {
    // Creation only fails for a precision above 5.
    Histogram::new(3).expect("3 significant figures is a valid precision")
}

fn push_sample(samples: &mut Vec<String>, message: String) {
    if samples.len() < MAX_ERROR_SAMPLES && !samples.contains(&message) {
        samples.push(message);
    }
}

/// Everything the connection tasks share.
struct Shared {
    plan: Plan,
    scenario: Arc<dyn Scenario>,
}

/// One live HTTP/1.1 connection; its I/O runs in a separate task that is
/// stopped when this value is dropped.
struct Conn {
    sender: SendRequest<Body>,
    io_task: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.io_task.abort();
    }
}

/// Runs `plan` with requests built by `scenario` and returns the merged
/// statistics of the measured phase.
///
/// Fails early if the plan is out of bounds or the target refuses a first
/// test connection; transport errors during the run are counted instead.
pub async fn run(plan: Plan, scenario: Arc<dyn Scenario>) -> Result<Outcome> {
    plan.validate()?;
    let addr = plan.target.addr();
    match timeout(plan.request_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(_probe)) => {}
        Ok(Err(e)) => {
            return Err(Error::new(format!(
                "cannot connect to {}: {e}",
                plan.target.url()
            )));
        }
        Err(_) => {
            return Err(Error::new(format!(
                "cannot connect to {}: timed out after {:?}",
                plan.target.url(),
                plan.request_timeout
            )));
        }
    }

    let connections = plan.connections;
    let scheduled = plan.scheduled_in_window();
    let shared = Arc::new(Shared { plan, scenario });
    let barrier = Arc::new(Barrier::new(connections + 1));
    let (start_tx, start_rx) = watch::channel(None);

    let mut tasks = Vec::with_capacity(connections);
    for idx in 0..connections {
        tasks.push(tokio::spawn(connection_task(
            idx as u64,
            Arc::clone(&shared),
            Arc::clone(&barrier),
            start_rx.clone(),
        )));
    }
    drop(start_rx);

    // Every task has tried its first connection: start the clock.
    barrier.wait().await;
    let t0 = Instant::now();
    // Receivers live in the tasks; a send error only means they all ended.
    let _ = start_tx.send(Some(t0));

    let mut outcome = Outcome {
        latency_us: new_histogram(),
        status_counts: BTreeMap::new(),
        requests: 0,
        errors: 0,
        reconnects: 0,
        scheduled,
        error_samples: Vec::new(),
    };
    let mut first_failure = None;
    for task in tasks {
        match task.await {
            Ok(Ok(stats)) => merge(&mut outcome, stats)?,
            Ok(Err(e)) => {
                first_failure.get_or_insert(e);
            }
            Err(e) => {
                first_failure.get_or_insert(Error::new(format!("connection task failed: {e}")));
            }
        }
    }
    match first_failure {
        Some(e) => Err(e),
        None => Ok(outcome),
    }
}

fn merge(outcome: &mut Outcome, stats: TaskStats) -> Result<()> {
    outcome
        .latency_us
        .add(&stats.latency_us)
        .map_err(|e| Error::new(format!("cannot merge latency histograms: {e:?}")))?;
    for (code, n) in stats.statuses {
        *outcome.status_counts.entry(code).or_insert(0) += n;
    }
    outcome.requests += stats.requests;
    outcome.errors += stats.errors;
    outcome.reconnects += stats.reconnects;
    for sample in stats.error_samples {
        push_sample(&mut outcome.error_samples, sample);
    }
    Ok(())
}

/// Drives one connection for the whole run.
async fn connection_task(
    idx: u64,
    shared: Arc<Shared>,
    barrier: Arc<Barrier>,
    mut start: watch::Receiver<Option<Instant>>,
) -> Result<TaskStats> {
    let plan = &shared.plan;
    let mut stats = TaskStats::new();
    // A failure here is retried (and counted) once the run is under way.
    let mut conn = open(plan).await.ok();
    let mut ever_connected = conn.is_some();

    barrier.wait().await;
    let t0 = match start.wait_for(Option::is_some).await {
        Ok(value) => match *value {
            Some(t0) => t0,
            None => return Ok(stats),
        },
        Err(_) => return Ok(stats),
    };
    let measure_from = t0 + plan.warmup;
    let end = measure_from + plan.duration;
    let stride = plan.connections as u64;
    let mut scratch = BytesMut::with_capacity(1024);
    let mut backoff = Duration::from_millis(10);

    for k in 0u64.. {
        let seq = idx + k * stride;
        let now = Instant::now();
        if now >= end {
            break;
        }
        // `intended` places the request in a phase; `start_at` is where its
        // latency is measured from (see the module docs).
        let (intended, start_at) = if plan.is_open_loop() {
            let intended = t0 + plan.slot_offset(seq);
            if intended >= end {
                break;
            }
            if now < intended {
                sleep_until(intended).await;
                (intended, Instant::now())
            } else {
                (intended, intended)
            }
        } else {
            (now, now)
        };
        let measured = intended >= measure_from;

        if conn.as_ref().is_none_or(|c| c.sender.is_closed()) {
            conn = None;
            match open(plan).await {
                Ok(c) => {
                    if ever_connected {
                        stats.reconnects += 1;
                    }
                    ever_connected = true;
                    backoff = Duration::from_millis(10);
                    conn = Some(c);
                }
                Err(message) => {
                    if measured {
                        stats.record_error(message);
                    }
                    sleep_until((Instant::now() + backoff).min(end)).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                    continue;
                }
            }
        }
        let Some(live) = conn.as_mut() else {
            continue;
        };

        let mut request = shared.scenario.build(seq, &mut scratch)?;
        request
            .headers_mut()
            .insert(HOST, plan.target.host_header().clone());

        match timeout(plan.request_timeout, exchange(&mut live.sender, request)).await {
            Ok(Ok(status)) => {
                if measured {
                    stats.record_response(status, start_at.elapsed());
                }
            }
            Ok(Err(message)) => {
                conn = None;
                if measured {
                    stats.record_error(message);
                }
            }
            Err(_) => {
                conn = None;
                if measured {
                    stats.record_error(format!(
                        "no complete response within {:?}",
                        plan.request_timeout
                    ));
                }
            }
        }
    }
    Ok(stats)
}

/// Opens a TCP connection with `TCP_NODELAY`, performs the HTTP/1.1
/// handshake and waits until it can take a request.
async fn open(plan: &Plan) -> std::result::Result<Conn, String> {
    let addr = plan.target.addr();
    let attempt = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("set TCP_NODELAY on {addr}: {e}"))?;
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP/1.1 handshake with {addr}: {}", describe(&e)))?;
        let io_task = tokio::spawn(async move {
            // Failures surface to the sender as request errors.
            let _ = connection.await;
        });
        let conn_ready = sender.ready().await;
        let conn = Conn { sender, io_task };
        conn_ready.map_err(|e| format!("connection to {addr} not usable: {}", describe(&e)))?;
        Ok(conn)
    };
    match timeout(plan.request_timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "connect to {addr}: timed out after {:?}",
            plan.request_timeout
        )),
    }
}

/// Sends one request and reads the whole response body; returns the status.
async fn exchange(
    sender: &mut SendRequest<Body>,
    request: Request<Body>,
) -> std::result::Result<StatusCode, String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("connection lost: {}", describe(&e)))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request failed: {}", describe(&e)))?;
    let status = response.status();
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        frame.map_err(|e| format!("reading response body: {}", describe(&e)))?;
    }
    Ok(status)
}

/// Formats an error with its chain of sources.
fn describe(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(rate: u64, warmup_ms: u64, duration_ms: u64) -> Plan {
        Plan {
            target: Target::parse("http://127.0.0.1:1").expect("target"),
            connections: 4,
            rate,
            warmup: Duration::from_millis(warmup_ms),
            duration: Duration::from_millis(duration_ms),
            request_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn open_loop_slots_are_evenly_spaced() {
        let p = plan(1000, 0, 1000);
        assert_eq!(p.slot_offset(0), Duration::ZERO);
        assert_eq!(p.slot_offset(1), Duration::from_millis(1));
        assert_eq!(p.slot_offset(1500), Duration::from_millis(1500));
        assert_eq!(p.scheduled_in_window(), 1000);
        assert_eq!(plan(3, 500, 1000).scheduled_in_window(), 3);
        assert_eq!(plan(0, 500, 1000).scheduled_in_window(), 0);
    }

    #[test]
    fn plan_bounds_are_enforced() {
        assert!(plan(0, 0, 1000).validate().is_ok());
        assert!(plan(MAX_RATE + 1, 0, 1000).validate().is_err());
        assert!(plan(0, 0, 0).validate().is_err());
        let mut p = plan(0, 0, 1000);
        p.connections = 0;
        assert!(p.validate().is_err());
        p.connections = MAX_CONNECTIONS + 1;
        assert!(p.validate().is_err());
    }
}
