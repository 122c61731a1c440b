//! Channel configuration (`/v1/channels`) and inbound PSP callbacks (`/callbacks/{channel}`,
//! plus the paths the seed names: `/api/payments/webhook` for Stripe and
//! `/api/webhooks/multisafepay`). Callbacks carry no API key: the engine verifies them with the
//! merchant's channel credentials, so method, path, headers and raw body are handed over untouched
//! as an [`InboundCallback`].

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Auth};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ipay_engine::channel::{CallbackAck, InboundCallback};
use ipay_engine::channels::breaker::{BreakerSnapshot, BreakerState};
use ipay_engine::channels::{ChannelConfigInput, ChannelView};
use serde::Serialize;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/channels", post(configure).get(list))
        .route("/callbacks/{channel}", post(callback))
        .route("/callbacks/{channel}/{*rest}", post(callback_with_path))
        .route("/api/payments/webhook", post(stripe_webhook))
        .route("/api/webhooks/multisafepay", post(multisafepay_webhook))
}

/// This module's part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(configure, list, callback, callback_with_path, stripe_webhook, multisafepay_webhook),
    components(schemas(ChannelConfigInput, ChannelView, ChannelList, BreakerSnapshot, BreakerState)),
    tags(
        (name = "channels", description = "Payment channel credentials and health"),
        (name = "callbacks", description = "Inbound PSP notifications (signed by the PSP)"),
    )
)]
pub struct Doc;

/// `GET /v1/channels` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChannelList {
    pub data: Vec<ChannelView>,
}

/// Adds or replaces a channel configuration in the key's mode. Credentials are validated
/// (PEMs parse, key sizes, 32-byte APIv3 key, …), stored encrypted, and never returned.
#[utoipa::path(post, path = "/v1/channels", tag = "channels", security(("bearer" = [])), request_body = ChannelConfigInput,
    responses((status = 201, body = ChannelView, description = "configured"), (status = 200, body = ChannelView, description = "replaced"),
              (status = 400, body = super::ErrorEnvelope), (status = 403, body = super::ErrorEnvelope)))]
pub async fn configure(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    ApiJson(input): ApiJson<ChannelConfigInput>,
) -> Result<Response, ApiError> {
    let (view, created) = st.engine.configure_channel(&ctx, input).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(super::json(status, &view))
}

/// The caller's configured channels with their health (circuit breaker state and failures).
#[utoipa::path(get, path = "/v1/channels", tag = "channels", security(("bearer" = [])),
    responses((status = 200, body = ChannelList), (status = 403, body = super::ErrorEnvelope)))]
pub async fn list(State(st): State<AppState>, Auth(ctx): Auth) -> Result<Response, ApiError> {
    let data = st.engine.list_channels(&ctx).await?;
    Ok(super::json(StatusCode::OK, &ChannelList { data }))
}

fn ack(a: CallbackAck) -> Response {
    let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::OK);
    let mut r = (status, a.body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    r
}

/// The request as the engine takes it: plain values, the path as received (WeChat Pay routes
/// by it), header values that are not UTF-8 dropped (no channel signs such values).
fn inbound(method: &Method, uri: &Uri, headers: &HeaderMap, body: Bytes) -> InboundCallback {
    InboundCallback {
        method: method.as_str().to_owned(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers: headers
            .iter()
            .filter_map(|(name, value)| {
                let value = std::str::from_utf8(value.as_bytes()).ok()?;
                Some((name.as_str().to_owned(), value.to_owned()))
            })
            .collect(),
        body,
    }
}

async fn handle(st: &AppState, channel: &str, cb: InboundCallback) -> Result<Response, ApiError> {
    Ok(ack(st.engine.handle_callback(channel, &cb).await?))
}

/// A PSP's payment notification. Answered with the channel's own acknowledgement (Alipay
/// `success`, WeChat `{"code":"SUCCESS"}`, …); a duplicate is acknowledged but not re-applied.
#[utoipa::path(post, path = "/callbacks/{channel}", tag = "callbacks", params(("channel" = String, Path)),
    request_body(content = String, description = "the PSP's body, verbatim"),
    responses((status = 200, description = "accepted (or a duplicate)"), (status = 400, body = super::ErrorEnvelope, description = "signature_mismatch, timestamp_stale, parameter_invalid"),
              (status = 404, body = super::ErrorEnvelope), (status = 429, body = super::ErrorEnvelope)))]
pub async fn callback(
    State(st): State<AppState>,
    Path(channel): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    handle(&st, &channel, inbound(&method, &uri, &headers, body)).await
}

/// A PSP's notification to a notify URL with a path below the channel (WeChat Pay:
/// `/callbacks/wechat/{intent id}`, since its notify URLs may not carry a query string).
#[utoipa::path(post, path = "/callbacks/{channel}/{rest}", tag = "callbacks", params(("channel" = String, Path), ("rest" = String, Path)),
    request_body(content = String, description = "the PSP's body, verbatim"),
    responses((status = 200, description = "accepted (or a duplicate)"), (status = 400, body = super::ErrorEnvelope), (status = 404, body = super::ErrorEnvelope)))]
pub async fn callback_with_path(
    State(st): State<AppState>,
    Path((channel, _rest)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    handle(&st, &channel, inbound(&method, &uri, &headers, body)).await
}

/// Stripe webhooks (`Stripe-Signature`), as `/callbacks/stripe`.
#[utoipa::path(post, path = "/api/payments/webhook", tag = "callbacks",
    request_body(content = String, description = "Stripe's event, verbatim"),
    responses((status = 200, description = "accepted"), (status = 400, body = super::ErrorEnvelope), (status = 404, body = super::ErrorEnvelope)))]
pub async fn stripe_webhook(
    State(st): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    handle(&st, "stripe", inbound(&method, &uri, &headers, body)).await
}

/// MultiSafepay notifications (`Auth` header), as `/callbacks/multisafepay`.
#[utoipa::path(post, path = "/api/webhooks/multisafepay", tag = "callbacks",
    request_body(content = String, description = "MultiSafepay's notification, verbatim"),
    responses((status = 200, description = "accepted"), (status = 400, body = super::ErrorEnvelope), (status = 404, body = super::ErrorEnvelope)))]
pub async fn multisafepay_webhook(
    State(st): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    handle(&st, "multisafepay", inbound(&method, &uri, &headers, body)).await
}
