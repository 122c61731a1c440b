//! Request extractors whose every failure is a coded JSON error: bodies ([`ApiJson`]), query
//! strings ([`ApiQuery`]), the API key ([`Auth`], which also applies the request rate limits
//! of [`crate::ratelimit`]) and the `Idempotency-Key` header.

use crate::app::AppState;
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use ipay_engine::AuthContext;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;

/// A JSON body, parsed with field paths in its error messages.
pub struct ApiJson<T>(pub T);

/// The raw body, within the configured size limit.
async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state)
        .await
        .map_err(|e: BytesRejection| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "request body is larger than the server accepts",
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    format!("cannot read request body: {e}"),
                )
            }
        })
}

fn classify_json_error(path: String, e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let msg = e.to_string();
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("request body is not valid JSON: {msg}"),
        ),
        Category::Data => {
            // serde's messages name the field: "missing field `x`", "unknown field `y`, expected …".
            let field = msg.split('`').nth(1).unwrap_or_default().to_string();
            let join = |f: &str| {
                if path == "." || path.is_empty() {
                    f.to_string()
                } else {
                    format!("{path}.{f}")
                }
            };
            if msg.starts_with("missing field") {
                let p = join(&field);
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "parameter_missing",
                    format!("missing required parameter `{p}`"),
                )
                .param(p)
            } else if msg.starts_with("unknown field") {
                // For an unknown field the path already ends with the field itself.
                let p = if path == "." || path.is_empty() {
                    field
                } else {
                    path
                };
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "parameter_unknown",
                    format!("unknown parameter `{p}`"),
                )
                .param(p)
            } else {
                let p = if path == "." { String::new() } else { path };
                let clean = msg.split(" at line ").next().unwrap_or(&msg).to_string();
                let text = if p.is_empty() {
                    clean
                } else {
                    format!("invalid value for `{p}`: {clean}")
                };
                let err = ApiError::new(StatusCode::BAD_REQUEST, "parameter_invalid", text);
                if p.is_empty() { err } else { err.param(p) }
            }
        }
    }
}

/// Parses JSON bytes into `T`, with the error mapping every JSON body uses.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "request body is empty; send a JSON object",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        classify_json_error(path, e.inner())
    })
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ok = ct
                .to_str()
                .map(|s| {
                    s.trim_start()
                        .to_ascii_lowercase()
                        .starts_with("application/json")
                })
                .unwrap_or(false);
            if !ok {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send the body as JSON with `Content-Type: application/json`",
                ));
            }
        }
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// An optional JSON body: absent or empty means `T::default()`.
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        parse_json(&bytes).map(OptionalJson)
    }
}

/// A query string.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e| {
                let detail = e.body_text();
                let detail = detail.trim_start_matches("Failed to deserialize query string: ");
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "parameter_invalid",
                    format!("invalid query string: {detail}"),
                )
            })
    }
}

/// The authenticated caller.
pub struct Auth(pub AuthContext);

/// The token of an `Authorization: Bearer …` header, if well-formed.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl FromRequestParts<AppState> for Auth {
    /// A rendered answer: a rate-limit refusal carries headers an [`ApiError`] cannot.
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let token = bearer(parts)
            .ok_or_else(|| ApiError::from(ipay_engine::EngineError::AuthInvalid).into_response())?;
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let ctx = state
            .engine
            .authenticate(token, ip)
            .await
            .map_err(|e| ApiError::from(e).into_response())?;
        // Counted only once the caller is known: a bad key spends no merchant's budget.
        state.rate_limits.check(&ctx, parts).await.map_err(|r| *r)?;
        Ok(Auth(ctx))
    }
}

/// The `Idempotency-Key` header, if sent.
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        // Two keys would leave it to chance which one guards the request (and a retry sent
        // through a different proxy chain could pick the other), so the request is refused.
        if parts
            .headers
            .get_all("idempotency-key")
            .iter()
            .nth(1)
            .is_some()
        {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "parameter_invalid",
                "send exactly one Idempotency-Key header; this request had several",
            )
            .param("Idempotency-Key"));
        }
        match parts.headers.get("idempotency-key") {
            None => Ok(IdempotencyKey(None)),
            Some(v) => v
                .to_str()
                .map(|s| IdempotencyKey(Some(s.to_string())))
                .map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "parameter_invalid",
                        "Idempotency-Key must be printable ASCII",
                    )
                    .param("Idempotency-Key")
                }),
        }
    }
}
