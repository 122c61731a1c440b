//! The connection layer below the router: accepting sockets, bounding them and closing the ones
//! that stall.
//!
//! It owns the cap on open connections (past it a client gets a JSON 503 with
//! `Connection: close` and `Retry-After`), the header-read and keep-alive idle timeouts, the
//! back-off on accept errors (`EMFILE` and friends) and the answers that must be given before a
//! request reaches the router: 431 for oversized headers, and `Connection: close` on every
//! response after which the connection will be closed (an unread request body, shutdown). It
//! does not route, authenticate or map engine errors: that is `app.rs` and `error.rs`.
//!
//! Connections speak HTTP/1.1 (hyper). Errors hyper answers by itself before a request exists
//! (a malformed request line or header, more headers than hyper parses) keep hyper's empty body.

use crate::config::ServerConfig;
use crate::error::{ApiError, standalone};
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::{Body as _, Bytes, Frame, Incoming, SizeHint};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tower::ServiceExt;

/// Connections past the cap that may be answered at once; beyond these the socket is closed
/// without an answer (answering costs a descriptor and a task each).
const REFUSALS_IN_FLIGHT: usize = 64;
/// How long a refused connection is drained after the answer, so that the client's unread
/// request does not turn the close into a reset that destroys the answer.
const REFUSAL_LINGER: Duration = Duration::from_millis(500);
/// First pause after an accept error; doubles up to `accept_backoff_max_ms`.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);

/// The limits the connection layer enforces, from `[server]`.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Longest wait for a complete request head once its first byte arrived.
    pub header_read_timeout: Duration,
    /// Longest a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// Largest request line plus headers, bytes (larger → 431).
    pub max_header_bytes: usize,
    /// Longest pause after repeated accept errors.
    pub accept_backoff_max: Duration,
}

impl ConnLimits {
    /// The limits configured in `[server]` (zero values are raised to the smallest workable).
    pub fn from_config(cfg: &ServerConfig) -> Self {
        ConnLimits {
            header_read_timeout: Duration::from_millis(cfg.header_read_timeout_ms.max(1)),
            idle_timeout: Duration::from_millis(cfg.idle_timeout_ms.max(1)),
            // Waiting for every connection at shutdown takes all permits at once (a u32).
            max_connections: cfg.max_connections.clamp(1, u32::MAX as usize),
            max_header_bytes: cfg.max_header_bytes.max(1),
            accept_backoff_max: Duration::from_millis(
                cfg.accept_backoff_max_ms
                    .max(ACCEPT_BACKOFF_MIN.as_millis() as u64),
            ),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets every
/// connection finish its current request and returns once all are closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let limits = Arc::new(limits);
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut backoff = ACCEPT_BACKOFF_MIN;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                backoff = ACCEPT_BACKOFF_MIN;
                a
            }
            // The peer gave up between SYN and accept: nothing is wrong with us.
            Err(e) if is_peer_error(&e) => continue,
            Err(e) => {
                // Out of descriptors or buffers: retrying at once would spin on the same
                // error. Pause, doubling, so the idle timeout can free descriptors meanwhile.
                metrics::counter!("ipay_http_accept_errors_total").increment(1);
                tracing::warn!(error = %e, pause_ms = backoff.as_millis() as u64, "accept failed; pausing before the next accept");
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(limits.accept_backoff_max);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match open.clone().try_acquire_owned() {
            Ok(permit) => {
                let app = app.clone();
                let limits = limits.clone();
                let stop = stop_rx.clone();
                tokio::spawn(async move {
                    metrics::gauge!("ipay_http_connections_open").increment(1.0);
                    serve_connection(stream, peer, app, &limits, stop).await;
                    metrics::gauge!("ipay_http_connections_open").decrement(1.0);
                    drop(permit);
                });
            }
            Err(_) => {
                metrics::counter!("ipay_http_connections_refused_total").increment(1);
                if let Ok(slot) = refusals.clone().try_acquire_owned() {
                    tokio::spawn(async move {
                        refuse(stream).await;
                        drop(slot);
                    });
                }
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds one permit until it ends: all permits back means all closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = open.acquire_many(all).await;
}

/// Accept errors that concern one connection only (the next accept is unaffected).
fn is_peer_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// The answer past the connection cap, written straight to the socket.
async fn refuse(mut stream: TcpStream) {
    let mut err = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "connection_limit",
        "the server has as many open connections as it accepts; retry shortly",
    );
    err.retry_after = Some(1);
    let resp = standalone(&err, None);
    let mut head = String::from("HTTP/1.1 503 Service Unavailable\r\n");
    for (name, value) in resp.headers() {
        if let Ok(v) = value.to_str() {
            head.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    let body = match axum::body::to_bytes(resp.into_body(), 64 * 1024).await {
        Ok(b) => b,
        Err(_) => return,
    };
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    let answered = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.shutdown().await
    };
    if answered.await.is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// What one connection is doing, shared by its socket, its requests and its watchdog. Times are
/// milliseconds since the connection was accepted.
struct Activity {
    start: Instant,
    /// Last byte read or written.
    last_io: AtomicU64,
    /// When the first byte of the request head now being read arrived.
    head_started: AtomicU64,
    /// Bytes arrived since the last request ended and no request has started yet.
    reading_head: AtomicBool,
    /// Requests handed to the router and not yet answered.
    in_flight: AtomicUsize,
    /// The connection will close after the current response.
    closing: AtomicBool,
    /// Wakes the watchdog when its next deadline moves earlier (a head started, a request
    /// ended).
    changed: Notify,
}

/// What the watchdog does next.
enum Step {
    /// Nothing is overdue; look again at this time (ms since accept).
    WaitUntil(u64),
    /// No request for `idle_timeout`: close between requests.
    CloseIdle,
    /// A request head took longer than `header_read_timeout`: drop the connection.
    DropSlowHead,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_io: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            reading_head: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn read(&self) {
        let now = self.now();
        self.last_io.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Acquire) == 0
            && !self.reading_head.swap(true, Ordering::AcqRel)
        {
            self.head_started.store(now, Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    fn wrote(&self) {
        self.last_io.store(self.now(), Ordering::Relaxed);
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.reading_head.store(false, Ordering::Release);
    }

    fn request_ended(&self) {
        self.last_io.store(self.now(), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.changed.notify_one();
    }

    fn step(&self, limits: &ConnLimits) -> Step {
        let now = self.now();
        let header = limits.header_read_timeout.as_millis() as u64;
        let idle = limits.idle_timeout.as_millis() as u64;
        if self.in_flight.load(Ordering::Acquire) > 0 {
            // The request timeout bounds a request; look again once it could be idle.
            return Step::WaitUntil(now + idle.min(header));
        }
        if self.reading_head.load(Ordering::Acquire) {
            let due = self.head_started.load(Ordering::Relaxed) + header;
            return if now >= due {
                Step::DropSlowHead
            } else {
                Step::WaitUntil(due)
            };
        }
        let due = self.last_io.load(Ordering::Relaxed) + idle;
        if now >= due {
            Step::CloseIdle
        } else {
            Step::WaitUntil(due)
        }
    }
}

/// Marks a request in flight for as long as it lives.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.request_started();
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// The socket, reporting every byte moved to the connection's [`Activity`].
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body that records whether it was read to its end: hyper cannot keep a
/// connection alive after a response whose request body was left unread.
struct Watched {
    inner: Incoming,
    done: Arc<AtomicBool>,
}

impl hyper::body::Body for Watched {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(None) => self.done.store(true, Ordering::Release),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => {
                self.done.store(true, Ordering::Release)
            }
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Bytes of the request line and headers as sent (near enough: separators counted).
fn head_bytes(req: &Request<Incoming>) -> usize {
    let uri = req.uri();
    let target = uri.path_and_query().map_or(0, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    let line = req.method().as_str().len() + target + 12;
    req.headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + line
}

/// One request: limits checked here, then the router.
async fn handle(
    req: Request<Incoming>,
    app: Router,
    peer: SocketAddr,
    activity: Arc<Activity>,
    limits: Arc<ConnLimits>,
) -> Result<Response<Body>, Infallible> {
    let _in_flight = InFlight::start(&activity);
    if head_bytes(&req) > limits.max_header_bytes {
        let err = ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "header_too_large",
            format!(
                "the request line and headers exceed {} bytes; send fewer or shorter headers",
                limits.max_header_bytes
            ),
        );
        let mut resp = standalone(&err, Some(req.headers()));
        close_after(&mut resp);
        return Ok(resp);
    }
    let (mut parts, body) = req.into_parts();
    let done = Arc::new(AtomicBool::new(body.is_end_stream()));
    parts.extensions.insert(ConnectInfo(peer));
    let body = Body::new(Watched {
        inner: body,
        done: done.clone(),
    });
    let mut resp = match app.oneshot(Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    if !done.load(Ordering::Acquire) || activity.closing.load(Ordering::Acquire) {
        close_after(&mut resp);
    }
    Ok(resp)
}

/// Tells the client the connection ends with this response (hyper then closes it).
fn close_after(resp: &mut Response<Body>) {
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}

/// Serves one connection until the client or a timeout ends it, or shutdown drains it.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: &Arc<ConnLimits>,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = hyper_util::rt::TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
    });
    let svc = {
        let activity = activity.clone();
        let limits = limits.clone();
        hyper::service::service_fn(move |req| {
            handle(req, app.clone(), peer, activity.clone(), limits.clone())
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Header timing is ours (the watchdog below, which also knows idle from slow).
    builder.header_read_timeout(None);
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let mut stopping = *stop.borrow();
    if stopping {
        activity.closing.store(true, Ordering::Release);
        conn.as_mut().graceful_shutdown();
    }
    let mut idle_closed = false;
    loop {
        let wake = match activity.step(limits) {
            Step::WaitUntil(ms) => activity.start + Duration::from_millis(ms),
            Step::DropSlowHead => {
                tracing::debug!(%peer, "request head not complete within header_read_timeout; closing");
                metrics::counter!("ipay_http_connections_timed_out_total", "reason" => "header")
                    .increment(1);
                return;
            }
            Step::CloseIdle if idle_closed => {
                // Asked to close while idle and still open: hyper holds a partial request.
                return;
            }
            Step::CloseIdle => {
                metrics::counter!("ipay_http_connections_timed_out_total", "reason" => "idle")
                    .increment(1);
                idle_closed = true;
                activity.closing.store(true, Ordering::Release);
                conn.as_mut().graceful_shutdown();
                // Give hyper one idle period to finish what it holds.
                Instant::now() + limits.idle_timeout
            }
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    activity.closing.store(true, Ordering::Release);
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
            _ = activity.changed.notified() => {}
        }
    }
}
