//! The HTTP side of a replay: one pooled keep-alive client for the engine and the PSP
//! simulator, JSON in and out, every answer counted in the run's statistics, and the bounded
//! retry a well-behaved client does on `429`/`503` with `Retry-After`. It knows no endpoint.
//! Given several engine nodes (a cluster), it spreads requests over them round-robin, so one
//! lifecycle's steps land on different nodes as a load balancer would send them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

use super::stats::Stats;
use crate::error::{Error, Result};
use crate::target::Target;

/// Attempts of one request when the server sheds load (`429`/`503`).
const MAX_ATTEMPTS: u32 = 5;

/// Longest wait honoured from a `Retry-After` during a replay; the schedule keeps running, so
/// a longer wait would only show as latency anyway.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(2);

/// An answer: status and JSON body (`Value::Null` when the body was not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// Parsed body.
    pub body: Value,
}

impl Reply {
    /// The error code of an error answer.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("-")
    }

    /// A short description for failure samples.
    pub fn describe(&self) -> String {
        let text = self.body.to_string();
        let cut: String = text.chars().take(200).collect();
        format!("HTTP {} {}", self.status.as_u16(), cut)
    }
}

/// Counters of the client's own behaviour.
#[derive(Debug, Default)]
pub struct ClientCounts {
    /// Requests retried after a `429`/`503`.
    pub retried: AtomicU64,
    /// Transport failures (connect, reset, timeout).
    pub transport_errors: AtomicU64,
    /// `503` answers without a usable `Retry-After` header (load shedding must carry one).
    pub unavailable_without_retry_after: AtomicU64,
    /// PSP callbacks the engine did not acknowledge, by its answer's status (0: no answer).
    callbacks_refused: Mutex<BTreeMap<u16, u64>>,
}

impl ClientCounts {
    /// Counts a PSP callback the engine answered with `status` instead of a 2xx.
    pub fn callback_refused(&self, status: u16) {
        *self.callbacks_refused.lock().entry(status).or_insert(0) += 1;
    }

    /// Unacknowledged PSP callbacks so far, by status.
    pub fn callbacks_refused(&self) -> BTreeMap<u16, u64> {
        self.callbacks_refused.lock().clone()
    }
}

/// The shared client.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    /// Base URLs of the engine nodes (one in embedded mode).
    engines: Arc<[String]>,
    /// Round-robin position over `engines`.
    next: Arc<AtomicUsize>,
    sim: String,
    stats: Arc<Stats>,
    counts: Arc<ClientCounts>,
}

impl Api {
    /// A client for the engine nodes `engines` (at least one) and the simulator at `sim` (all
    /// loopback).
    pub fn new(
        engines: &[Target],
        sim: &Target,
        timeout: Duration,
        stats: Arc<Stats>,
    ) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(4096)
            .tcp_nodelay(true)
            .no_proxy()
            .build()
            .map_err(|e| Error::new(format!("cannot build the HTTP client: {e}")))?;
        if engines.is_empty() {
            return Err(Error::new("at least one engine URL is needed"));
        }
        Ok(Self {
            http,
            engines: engines
                .iter()
                .map(|t| t.url().trim_end_matches('/').to_string())
                .collect(),
            next: Arc::new(AtomicUsize::new(0)),
            sim: sim.url().trim_end_matches('/').to_string(),
            stats,
            counts: Arc::new(ClientCounts::default()),
        })
    }

    /// The first engine node's base URL.
    pub fn engine_url(&self) -> &str {
        &self.engines[0]
    }

    /// Every engine node's base URL.
    pub fn engine_urls(&self) -> &[String] {
        &self.engines
    }

    /// The base URL of node `i` (modulo the node count): where merchant `i`'s PSP callbacks go.
    pub fn engine_url_for(&self, i: usize) -> &str {
        &self.engines[i % self.engines.len()]
    }

    /// The simulator's base URL.
    pub fn sim_url(&self) -> &str {
        &self.sim
    }

    /// The client's counters.
    pub fn counts(&self) -> &ClientCounts {
        &self.counts
    }

    /// A request to the engine (the next node, round-robin).
    pub fn engine(&self, method: Method, path: &str) -> RequestBuilder {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.engines.len();
        self.http
            .request(method, format!("{}{path}", self.engines[i]))
    }

    /// A request to one engine node, by index (modulo the node count).
    pub fn engine_at(&self, node: usize, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.engine_url_for(node)))
    }

    /// A request to the simulator's control API.
    pub fn sim(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.sim))
    }

    /// Sends `rb`, retrying (bounded) while the server sheds load; counts every answer.
    pub async fn send(&self, rb: RequestBuilder) -> Result<Reply> {
        let mut attempt = 1;
        loop {
            let Some(this) = rb.try_clone() else {
                return Err(Error::new("request body cannot be retried"));
            };
            let resp = match this.send().await {
                Ok(r) => r,
                Err(e) => {
                    self.counts.transport_errors.fetch_add(1, Ordering::Relaxed);
                    return Err(Error::new(format!("transport: {e}")));
                }
            };
            let status = resp.status();
            self.stats.status(status.as_u16());
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if status == StatusCode::SERVICE_UNAVAILABLE && retry_after.is_none() {
                self.counts
                    .unavailable_without_retry_after
                    .fetch_add(1, Ordering::Relaxed);
            }
            let shed = status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::SERVICE_UNAVAILABLE;
            if shed && attempt < MAX_ATTEMPTS {
                self.counts.retried.fetch_add(1, Ordering::Relaxed);
                let wait = Duration::from_secs(retry_after.unwrap_or(1)).min(MAX_RETRY_WAIT);
                tokio::time::sleep(wait).await;
                attempt += 1;
                continue;
            }
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| Error::new(format!("reading the answer: {e}")))?;
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Ok(Reply { status, body });
        }
    }

    /// Sends `rb` and requires `expect`; anything else is an error naming `what`.
    pub async fn expect(
        &self,
        what: &str,
        rb: RequestBuilder,
        expect: &[StatusCode],
    ) -> Result<Reply> {
        let r = self
            .send(rb)
            .await
            .map_err(|e| Error::new(format!("{what}: {e}")))?;
        if expect.contains(&r.status) {
            Ok(r)
        } else {
            Err(Error::new(format!("{what}: {}", r.describe())))
        }
    }
}
