//! The outbound HTTP client every channel adapter shares: one connection pool, a connect
//! timeout, a whole-request timeout and a cap on response size, with failures sorted into the
//! engine's two kinds (`Unavailable` is worth retrying, `Rejected` is not).
//!
//! It owns transport only. It never logs or returns URLs, headers or bodies in its error texts:
//! some channels put secrets in the URL (MultiSafepay's `api_key` query parameter) or headers
//! (Stripe's bearer key). Parsing what a channel answers is the channel's business.
//!
//! `https://` endpoints go through rustls on `ring` with the webpki (Mozilla) root
//! certificates, enabled by the workspace's `reqwest` features; no system OpenSSL and no
//! aws-lc are involved.

use std::time::Duration;

use bytes::Bytes;
use ipay_engine::channel::ChannelError;

/// Default time allowed to open a TCP connection to a PSP.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default time allowed for a whole PSP call (connect, send, answer read in full).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest PSP answer read, in bytes; a longer one is treated as malformed.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// Idle connections kept per PSP host.
const POOL_IDLE_PER_HOST: usize = 32;

/// Timeouts of the shared client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    /// Time allowed to connect.
    pub connect: Duration,
    /// Time allowed for the whole call.
    pub request: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        HttpTimeouts {
            connect: DEFAULT_CONNECT_TIMEOUT,
            request: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// A PSP's answer, read in full (at most [`MAX_RESPONSE_BYTES`]).
#[derive(Debug, Clone)]
pub struct PspResponse {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: http::HeaderMap,
    /// Response body.
    pub body: Bytes,
}

impl PspResponse {
    /// A header's value as text, if present and ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as UTF-8, or `Unavailable` (a PSP that answers garbage is broken, not refusing).
    pub fn text(&self, channel: &str) -> Result<&str, ChannelError> {
        std::str::from_utf8(&self.body)
            .map_err(|_| ChannelError::Unavailable(format!("{channel} answered a non-UTF-8 body")))
    }
}

/// The shared client. Cheap to clone (one pool behind an `Arc`).
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
}

impl HttpClient {
    /// A client with these timeouts. Fails only if the TLS/HTTP stack cannot initialise.
    pub fn new(timeouts: HttpTimeouts) -> Result<Self, String> {
        let inner = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.request)
            .pool_max_idle_per_host(POOL_IDLE_PER_HOST)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", e.without_url()))?;
        Ok(HttpClient { inner })
    }

    /// POSTs `body` to `url` with `headers` and reads the whole answer. Transport failures,
    /// timeouts, 5xx answers and oversized bodies are `Unavailable`; any other status is
    /// returned for the channel to interpret.
    pub async fn post(
        &self,
        channel: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<PspResponse, ChannelError> {
        self.send(channel, self.inner.post(url).body(body), headers)
            .await
    }

    /// GETs `url` with `headers` (status queries), with [`HttpClient::post`]'s error rules.
    pub async fn get(
        &self,
        channel: &str,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<PspResponse, ChannelError> {
        self.send(channel, self.inner.get(url), headers).await
    }

    async fn send(
        &self,
        channel: &str,
        mut request: reqwest::RequestBuilder,
        headers: &[(&str, &str)],
    ) -> Result<PspResponse, ChannelError> {
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| transport_error(channel, &e))?;
        let status = response.status().as_u16();
        let headers = std::mem::take(response.headers_mut());
        let mut buf = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transport_error(channel, &e))?
        {
            if buf.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(ChannelError::Unavailable(format!(
                    "{channel} answered more than {MAX_RESPONSE_BYTES} bytes"
                )));
            }
            buf.extend_from_slice(&chunk);
        }
        if status >= 500 {
            return Err(ChannelError::Unavailable(format!(
                "{channel} answered HTTP {status}"
            )));
        }
        Ok(PspResponse {
            status,
            headers,
            body: Bytes::from(buf),
        })
    }
}

/// Names the kind of failure without the URL (which may carry a key).
fn transport_error(channel: &str, e: &reqwest::Error) -> ChannelError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not be reached"
    } else if e.is_body() || e.is_decode() {
        "broke off its answer"
    } else if e.is_builder() {
        // A bad endpoint URL in configuration: retrying will not fix it.
        return ChannelError::Rejected(format!("{channel} endpoint URL is invalid"));
    } else {
        "failed at the transport level"
    };
    ChannelError::Unavailable(format!("{channel} {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback port nothing listens on (bound, then released).
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn https_endpoint_fails_to_connect_rather_than_refusing_the_scheme() {
        let client = HttpClient::new(HttpTimeouts::default()).unwrap();
        let url = format!(
            "https://127.0.0.1:{}/v3/pay/transactions/native",
            closed_port()
        );

        // Without a TLS backend reqwest refuses an `https` URL as a builder error before it
        // opens any socket; with one it tries to connect and fails to.
        let err = client.inner.post(&url).send().await.unwrap_err();
        assert!(!err.is_builder(), "https refused by the client: {err:?}");
        assert!(err.is_connect(), "expected a connection error: {err:?}");

        match client.post("wechat", &url, &[], Vec::new()).await {
            Err(ChannelError::Unavailable(why)) => assert_eq!(why, "wechat could not be reached"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn unsupported_scheme_is_a_rejected_configuration() {
        let client = HttpClient::new(HttpTimeouts::default()).unwrap();
        match client
            .post("stripe", "ftp://127.0.0.1/", &[], Vec::new())
            .await
        {
            Err(ChannelError::Rejected(why)) => assert_eq!(why, "stripe endpoint URL is invalid"),
            other => panic!("expected Rejected, got {other:?}"),
        }
    }
}
