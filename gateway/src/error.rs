//! HTTP errors: the one place where engine errors become status codes and JSON bodies.
//!
//! Every error body is `{"error":{"code","message","param"?,…,"request_id"}}`. Handlers and
//! extractors return [`ApiError`]; the [`request_id`] middleware stamps the request id into the
//! body and the `X-Request-Id` header, and also turns any bare error response produced outside
//! our handlers (unknown route, wrong method, timeout, overload) into the same JSON shape.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipay_engine::ids::RequestId;
use ipay_engine::{EngineError, ErrorKind};
use serde_json::{Map, Value, json};

/// An error on its way to the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra fields beside `code` and `message` (`param`, `channel`, `alternatives`, …).
    pub extra: Map<String, Value>,
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// A plain error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: Map::new(),
            retry_after: None,
        }
    }

    /// Adds `param`.
    pub fn param(mut self, p: impl Into<String>) -> Self {
        self.extra.insert("param".into(), Value::String(p.into()));
        self
    }
}

fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InvalidRequest => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Locked => StatusCode::LOCKED,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let status = status_of(e.kind());
        let mut err = ApiError::new(status, e.code(), e.to_string());
        if let Some(p) = e.param() {
            err = err.param(p);
        }
        match &e {
            EngineError::ChannelUnavailable {
                channel,
                retry_after_secs,
                alternatives,
                ..
            } => {
                err.extra.insert("channel".into(), json!(channel));
                err.extra
                    .insert("retry_after".into(), json!(retry_after_secs));
                err.extra.insert("alternatives".into(), json!(alternatives));
                err.retry_after = Some(*retry_after_secs);
            }
            EngineError::RateLimited {
                retry_after_secs, ..
            } => {
                err.retry_after = Some(*retry_after_secs);
            }
            EngineError::StoreUnavailable(_) | EngineError::SessionUnavailable => {
                err.retry_after = Some(1)
            }
            EngineError::Relayed { status: 503, .. } => err.retry_after = Some(1),
            EngineError::Internal(detail) => {
                // Details of a bug go to the log, not to the client.
                tracing::error!(detail = %detail, "internal error");
                err.message = "internal error; the request id identifies it in our logs".into();
            }
            _ => {}
        }
        err
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = self.status.into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp.extensions_mut().insert(self);
        resp
    }
}

/// The bytes of the error envelope `{"error":{"code","message",…,"request_id"}}`.
pub fn envelope_bytes(err: &ApiError, request_id: &str) -> Vec<u8> {
    let mut body = Map::new();
    body.insert("code".into(), Value::String(err.code.into()));
    body.insert("message".into(), Value::String(err.message.clone()));
    for (k, v) in &err.extra {
        body.insert(k.clone(), v.clone());
    }
    body.insert("request_id".into(), Value::String(request_id.into()));
    serde_json::to_vec(&json!({ "error": body })).unwrap_or_default()
}

/// Renders the error envelope.
pub(crate) fn render(err: &ApiError, request_id: &str) -> Response {
    let mut resp = Response::new(Body::from(envelope_bytes(err, request_id)));
    *resp.status_mut() = err.status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(s) = err.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    resp
}

/// Error for a bare status that did not come from our handlers.
fn for_bare_status(status: StatusCode) -> ApiError {
    match status {
        StatusCode::NOT_FOUND => ApiError::new(
            status,
            "route_not_found",
            "no such route; see /openapi.json for the API",
        ),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            status,
            "method_not_allowed",
            "this route does not accept that HTTP method",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            status,
            "payload_too_large",
            "request body is larger than the server accepts",
        ),
        StatusCode::REQUEST_TIMEOUT => ApiError::new(
            status,
            "request_timeout",
            "the request took too long and was abandoned; retry it",
        ),
        StatusCode::SERVICE_UNAVAILABLE => {
            let mut e = ApiError::new(
                status,
                "overloaded",
                "the server is at its concurrency limit; retry shortly",
            );
            e.retry_after = Some(1);
            e
        }
        s if s.is_server_error() => ApiError::new(
            status,
            "internal_error",
            "internal error; the request id identifies it in our logs",
        ),
        s => ApiError::new(
            status,
            "http_error",
            s.canonical_reason().unwrap_or("request failed"),
        ),
    }
}

/// The request id of the request being handled.
#[derive(Debug, Clone)]
pub struct ReqId(pub String);

fn valid_client_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| s.to_string())
}

/// The client's `X-Request-Id` when it is usable, otherwise a new id.
fn request_id_of(headers: Option<&HeaderMap>) -> String {
    headers
        .and_then(|h| h.get("x-request-id"))
        .and_then(valid_client_request_id)
        .unwrap_or_else(|| RequestId::new_at(chrono::Utc::now().timestamp_millis()).to_string())
}

/// A complete error response for answers given below the router (oversized headers, the
/// connection cap), which the [`request_id`] middleware never sees: it carries the envelope, a
/// request id (the client's, from `headers`, when usable) and `X-Request-Id`.
pub fn standalone(err: &ApiError, headers: Option<&HeaderMap>) -> Response {
    let id = request_id_of(headers);
    let mut resp = render(err, &id);
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Outermost middleware: assigns the request id and gives every error the JSON envelope.
pub async fn request_id(mut req: Request<Body>, next: Next) -> Response {
    let id = request_id_of(Some(req.headers()));
    req.extensions_mut().insert(ReqId(id.clone()));
    let resp = next.run(req).await;
    let mut resp = if let Some(err) = resp.extensions().get::<ApiError>().cloned() {
        render(&err, &id)
    } else if (resp.status().is_client_error() || resp.status().is_server_error())
        && !resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
            // Pages render their own error page (with the same code) as HTML.
            v.as_bytes().starts_with(b"application/json") || v.as_bytes().starts_with(b"text/html")
        })
    {
        render(&for_bare_status(resp.status()), &id)
    } else {
        resp
    };
    if resp.status().is_server_error() {
        tracing::warn!(request_id = %id, status = resp.status().as_u16(), "request failed on the server side");
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}
