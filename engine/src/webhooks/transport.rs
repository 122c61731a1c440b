//! The dispatcher's way out: a [`Transport`] takes one signed delivery request and says what
//! became of it (a status code, or why there was none). [`HttpTransport`] is the real one
//! (reqwest): it owns the attempt's timeouts, refuses to follow redirects or use proxies, and
//! connects only to addresses the URL policy accepts after resolving (DNS rebinding and
//! redirects cannot get round it).
//!
//! Not here: what to send, signing, the retry schedule and what an answer means for the
//! delivery (the dispatcher, [`super::dispatch`]). The port exists so a deterministic
//! simulation can plug in a receiver that runs on tokio's paused clock, which real sockets
//! cannot.

use super::WebhookConfig;
use crate::error::StoreError;
use crate::url_policy::{GuardedResolver, Lookup, UrlPolicy, refusal_in};
use std::sync::Arc;
use std::time::Duration;

/// Most response-body bytes read (and discarded) so the connection can be reused.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// One signed delivery attempt, ready to go.
#[derive(Debug, Clone)]
pub struct SignedRequest {
    /// The endpoint's URL (already checked against the URL policy's form rules).
    pub url: String,
    /// Headers in the order they are sent (content type, signatures, ids, timestamp).
    pub headers: Vec<(&'static str, String)>,
    /// The JSON payload the signatures cover.
    pub body: Vec<u8>,
}

impl SignedRequest {
    /// The value of header `name` (lower case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What became of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The receiver answered with this status; `retry_after` is its raw `Retry-After` header.
    Status {
        code: u16,
        retry_after: Option<String>,
    },
    /// No answer within the attempt's time limit.
    Timeout,
    /// No connection could be made (refused, reset, unreachable).
    ConnectFailed,
    /// The URL policy refused every address the host resolved to (not retried).
    Refused(String),
    /// The request failed some other way (described, without secrets).
    Failed(String),
}

/// Sends signed delivery requests. Implementations bound each attempt in time themselves.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Sends `req` once and reports the outcome.
    async fn send(&self, req: SignedRequest) -> Answer;
}

/// The real transport: HTTPS through reqwest, guarded by the URL policy.
pub struct HttpTransport {
    client: reqwest::Client,
}

impl HttpTransport {
    /// A client with `cfg`'s timeouts and concurrency, resolving through `lookup` and
    /// connecting only where `policy` allows.
    pub fn new(
        cfg: &WebhookConfig,
        policy: UrlPolicy,
        lookup: Arc<dyn Lookup>,
    ) -> Result<HttpTransport, StoreError> {
        // Every connection goes to an address the policy checked after resolving (so DNS
        // rebinding cannot get round it), never through a proxy (which would resolve for us),
        // and redirects are not followed (a 3xx is an answer, not a new target).
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver::new(policy, lookup)))
            .no_proxy()
            .timeout(Duration::from_millis(cfg.timeout_ms.max(1)))
            .connect_timeout(Duration::from_millis(cfg.timeout_ms.max(1)))
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(cfg.max_concurrency_per_endpoint.max(1))
            .tcp_nodelay(true)
            .user_agent("ItPay-Webhook/1.0")
            .build()
            .map_err(|e| StoreError(format!("webhook HTTP client: {e}")))?;
        Ok(HttpTransport { client })
    }
}

#[async_trait::async_trait]
impl Transport for HttpTransport {
    async fn send(&self, req: SignedRequest) -> Answer {
        let mut b = self.client.post(&req.url);
        for (k, v) in &req.headers {
            b = b.header(*k, v);
        }
        match b.body(req.body).send().await {
            Ok(mut resp) => {
                let code = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                // Read (and discard) a bounded body so the connection can be reused; the
                // status already decided the outcome, so a broken body does not undo it.
                let mut read = 0usize;
                while read < MAX_RESPONSE_BYTES {
                    match resp.chunk().await {
                        Ok(Some(c)) => read += c.len(),
                        Ok(None) | Err(_) => break,
                    }
                }
                Answer::Status { code, retry_after }
            }
            Err(e) => match refusal_in(&e) {
                Some(why) => Answer::Refused(why.to_string()),
                None if e.is_timeout() => Answer::Timeout,
                None if e.is_connect() => Answer::ConnectFailed,
                None if e.is_request() || e.is_body() => Answer::Failed("request failed".into()),
                None => Answer::Failed("HTTP error".into()),
            },
        }
    }
}
