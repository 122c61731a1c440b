//! The HTTP side of a replay: one pooled keep-alive client for the engine and the PSP
//! simulator, JSON in and out, every answer counted in the run's statistics, and the bounded
//! retry a well-behaved client does on `429`/`503` with `Retry-After`. It knows no endpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
}

/// The shared client.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    engine: String,
    sim: String,
    stats: Arc<Stats>,
    counts: Arc<ClientCounts>,
}

impl Api {
    /// A client for the engine at `engine` and the simulator at `sim` (both loopback).
    pub fn new(
        engine: &Target,
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
        Ok(Self {
            http,
            engine: engine.url().trim_end_matches('/').to_string(),
            sim: sim.url().trim_end_matches('/').to_string(),
            stats,
            counts: Arc::new(ClientCounts::default()),
        })
    }

    /// The engine's base URL.
    pub fn engine_url(&self) -> &str {
        &self.engine
    }

    /// The simulator's base URL.
    pub fn sim_url(&self) -> &str {
        &self.sim
    }

    /// The client's counters.
    pub fn counts(&self) -> &ClientCounts {
        &self.counts
    }

    /// A request to the engine.
    pub fn engine(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.engine))
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
