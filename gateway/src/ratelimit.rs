//! Request rate limits of the merchant API: a token bucket per API key and one per merchant
//! (all its keys together), checked right after authentication, so an unauthenticated request
//! costs nobody's budget and one merchant's burst never slows another merchant.
//!
//! Past a limit the answer is `429 rate_limited` with `Retry-After` and the `X-RateLimit-Limit`,
//! `X-RateLimit-Remaining` and `X-RateLimit-Reset` headers.
//!
//! Embedded mode: governor token buckets in this process (no I/O). Cluster mode: the nodes
//! share one budget per key and per merchant through the hot state (Redis): a counter per
//! window of `burst / rate` seconds (at least 1 s) allows `burst` requests, which is the
//! configured rate on average and the configured burst at most within a window (up to twice
//! it across a window boundary). One Redis round trip per limit and request. When Redis does
//! not answer within 100 ms, requests are let through, and for the next second without asking
//! it (the limits are a safety net against runaway clients, not billing, and a request that
//! needs Redis gets its own 503 anyway). It does not limit PSP
//! callbacks (the engine's channel subsystem does) nor the admin API.

use crate::error::{ApiError, ReqId, render};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use ipay_engine::ids::{ApiKeyId, MerchantId};
use ipay_engine::store::HotState;
use ipay_engine::{AuthContext, Limits};
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Keys tracked by one limiter before idle buckets are swept (bounds memory under key churn).
const SWEEP_ABOVE: usize = 100_000;

/// The `X-RateLimit-*` headers.
const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// One keyed limit: the buckets and the size of each.
struct Limit<K: Hash + Eq + Clone> {
    buckets: DefaultKeyedRateLimiter<K>,
    burst: u32,
}

impl<K: Hash + Eq + Clone> Limit<K> {
    /// `None` when `per_sec` is 0 (the limit is off).
    fn new(per_sec: u32, burst: u32) -> Option<Self> {
        let rate = NonZeroU32::new(per_sec)?;
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(rate).allow_burst(burst);
        Some(Limit {
            buckets: DefaultKeyedRateLimiter::keyed(quota),
            burst: burst.get(),
        })
    }

    /// Takes one request from `key`'s bucket, or says how long until one is available.
    fn take(&self, key: &K) -> Result<(), Duration> {
        if self.buckets.len() > SWEEP_ABOVE {
            self.buckets.retain_recent();
        }
        self.buckets
            .check_key(key)
            .map_err(|n| n.wait_time_from(DefaultClock::default().now()))
    }
}

/// One limit counted in the hot state, shared by every node: `burst` requests per window.
struct SharedLimit {
    burst: u32,
    window: Duration,
}

impl SharedLimit {
    /// `None` when `per_sec` is 0 (the limit is off).
    fn new(per_sec: u32, burst: u32) -> Option<Self> {
        let per_sec = NonZeroU32::new(per_sec)?;
        let burst = burst.max(1);
        // burst / rate seconds, rounded up to whole milliseconds, at least one second.
        let ms = (u64::from(burst) * 1000).div_ceil(u64::from(per_sec.get()));
        Some(SharedLimit {
            burst,
            window: Duration::from_millis(ms.max(1000)),
        })
    }

    /// Counts one request under `key`; past the budget, the wait until the window ends (at
    /// most). Fails open when the hot state does not answer within [`SHARED_BOUND`], and then
    /// does not ask it again for [`SHARED_PAUSE`], so a hung Redis costs a request at most
    /// that bound here (the request's own Redis calls then fail on their own bound).
    async fn take(&self, shared: &Shared, key: &str) -> Result<(), Duration> {
        if shared.paused() {
            return Ok(());
        }
        match tokio::time::timeout(SHARED_BOUND, shared.hot.incr(key, self.window)).await {
            Ok(Ok(n)) if n > i64::from(self.burst) => Err(self.window),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                shared.pause();
                tracing::debug!(error = %e, "shared rate limit unavailable; request let through");
                Ok(())
            }
            Err(_) => {
                shared.pause();
                tracing::debug!("shared rate limit did not answer in time; request let through");
                Ok(())
            }
        }
    }
}

/// Longest a shared limit waits for the hot state before letting the request through.
const SHARED_BOUND: Duration = Duration::from_millis(100);
/// How long shared limits are skipped after the hot state failed to answer.
const SHARED_PAUSE: Duration = Duration::from_secs(1);

/// The hot state shared limits are counted in, and when to ask it again after a failure.
struct Shared {
    hot: Arc<dyn HotState>,
    /// Until when (ms on this process's monotonic clock) shared limits are skipped.
    paused_until_ms: AtomicU64,
    started: Instant,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn paused(&self) -> bool {
        self.now_ms() < self.paused_until_ms.load(Ordering::Relaxed)
    }

    fn pause(&self) {
        let until = self.now_ms() + SHARED_PAUSE.as_millis() as u64;
        self.paused_until_ms.store(until, Ordering::Relaxed);
    }
}

/// Where the limits are counted.
enum Counting {
    /// In this process (embedded mode).
    Local {
        per_key: Option<Limit<ApiKeyId>>,
        per_merchant: Option<Limit<MerchantId>>,
    },
    /// In the hot state shared by all nodes (cluster mode).
    Shared {
        shared: Shared,
        per_key: Option<SharedLimit>,
        per_merchant: Option<SharedLimit>,
    },
}

/// The per-key and per-merchant request limits.
pub struct RateLimits {
    counting: Counting,
}

impl RateLimits {
    /// The limits `[limits]` configures, counted in this process.
    pub fn new(cfg: &Limits) -> Self {
        RateLimits {
            counting: Counting::Local {
                per_key: Limit::new(cfg.rate_per_key_per_sec, cfg.rate_per_key_burst),
                per_merchant: Limit::new(
                    cfg.rate_per_merchant_per_sec,
                    cfg.rate_per_merchant_burst,
                ),
            },
        }
    }

    /// The limits `[limits]` configures, counted in `hot`, shared by every node using it.
    pub fn shared(cfg: &Limits, hot: Arc<dyn HotState>) -> Self {
        RateLimits {
            counting: Counting::Shared {
                shared: Shared {
                    hot,
                    paused_until_ms: AtomicU64::new(0),
                    started: Instant::now(),
                },
                per_key: SharedLimit::new(cfg.rate_per_key_per_sec, cfg.rate_per_key_burst),
                per_merchant: SharedLimit::new(
                    cfg.rate_per_merchant_per_sec,
                    cfg.rate_per_merchant_burst,
                ),
            },
        }
    }

    /// Counts one request of the authenticated caller; past its key's or its merchant's limit,
    /// the complete `429` answer.
    pub async fn check(&self, ctx: &AuthContext, parts: &Parts) -> Result<(), Box<Response>> {
        match &self.counting {
            Counting::Local {
                per_key,
                per_merchant,
            } => {
                if let Some(l) = per_key
                    && let Err(wait) = l.take(&ctx.key.id)
                {
                    return Err(Box::new(refusal("API key", l.burst, wait, parts)));
                }
                if let Some(l) = per_merchant
                    && let Err(wait) = l.take(&ctx.merchant_id)
                {
                    return Err(Box::new(refusal("merchant", l.burst, wait, parts)));
                }
            }
            Counting::Shared {
                shared,
                per_key,
                per_merchant,
            } => {
                if let Some(l) = per_key
                    && let Err(wait) = l.take(shared, &format!("rl:key:{}", ctx.key.id)).await
                {
                    return Err(Box::new(refusal("API key", l.burst, wait, parts)));
                }
                if let Some(l) = per_merchant
                    && let Err(wait) = l
                        .take(shared, &format!("rl:merchant:{}", ctx.merchant_id))
                        .await
                {
                    return Err(Box::new(refusal("merchant", l.burst, wait, parts)));
                }
            }
        }
        Ok(())
    }
}

/// `429 rate_limited` with `Retry-After` and the `X-RateLimit-*` headers, rendered here (not
/// by the request-id middleware) so that the headers survive.
fn refusal(what: &str, burst: u32, wait: Duration, parts: &Parts) -> Response {
    // Whole seconds, rounded up: a client that waits `Retry-After` is let in.
    let secs = u32::try_from(wait.as_millis().div_ceil(1000).max(1)).unwrap_or(u32::MAX);
    metrics::counter!("ipay_http_rate_limited_total", "limit" => what.replace(' ', "_").to_lowercase())
        .increment(1);
    let mut err = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests for this {what}; retry after {secs} s"),
    );
    err.retry_after = Some(secs);
    let id = parts
        .extensions
        .get::<ReqId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let mut resp = render(&err, &id);
    let h = resp.headers_mut();
    h.insert(LIMIT, HeaderValue::from(burst));
    h.insert(REMAINING, HeaderValue::from(0u32));
    h.insert(RESET, HeaderValue::from(secs));
    resp
}
