//! Self-serve go-live over HTTP, for merchant users (JWT): the merchant's engine API keys,
//! outbound event endpoints, channel credentials, and its test / live mode, all under
//! `/api/merchant/...`. Handlers extract, call `ipay_lastmile::golive` and map; another
//! merchant's objects answer 404, operators and drivers 403.

use super::auth::AuthUser;
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, OptionalJson};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use ipay_lastmile::golive::channels::{ChannelCredentials, ChannelList};
use ipay_lastmile::golive::endpoints::{EndpointChange, EndpointList, NewEndpoint};
use ipay_lastmile::golive::keys::{ApiKeyList, NewApiKey};
use ipay_lastmile::golive::{ModeFilter, ModeRequest, ModeView};

type Envelope = crate::routes::ErrorEnvelope;

/// The merchant's mode and the channels a consumer may pay with in each mode.
#[utoipa::path(get, path = "/api/merchant/mode", tag = "lastmile-golive",
    security(("bearer_jwt" = [])),
    responses((status = 200, body = ModeView),
              (status = 403, description = "`role_forbidden`: merchant accounts only", body = Envelope)))]
pub async fn get_mode(State(st): State<AppState>, user: AuthUser) -> Result<Response, ApiError> {
    let m = user.require_merchant()?;
    let v = st.lastmile.mode(m).await?;
    Ok(crate::routes::json(StatusCode::OK, &v))
}

/// Switches between test and live. New sessions (and their events) take the new mode; going
/// live needs a channel configured in live mode.
#[utoipa::path(put, path = "/api/merchant/mode", tag = "lastmile-golive",
    security(("bearer_jwt" = [])), request_body = ModeRequest,
    responses((status = 200, body = ModeView),
              (status = 403, description = "`role_forbidden`: merchant accounts only", body = Envelope),
              (status = 409, description = "`live_channel_required`: no channel is configured in live mode", body = Envelope)))]
pub async fn set_mode(
    State(st): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<ModeRequest>,
) -> Result<Response, ApiError> {
    let m = user.require_merchant()?;
    let v = st.lastmile.set_mode(m, user.user_id, req).await?;
    Ok(crate::routes::json(StatusCode::OK, &v))
}

/// The merchant's API keys (never their secrets), test then live, newest first.
#[utoipa::path(get, path = "/api/merchant/api-keys", tag = "lastmile-golive",
    security(("bearer_jwt" = [])), params(ModeFilter),
    responses((status = 200, body = ApiKeyList),
              (status = 403, description = "`role_forbidden`", body = Envelope)))]
pub async fn list_keys(
    State(st): State<AppState>,
    user: AuthUser,
    ApiQuery(f): ApiQuery<ModeFilter>,
) -> Result<Response, ApiError> {
    let m = user.require_merchant()?;
    let v = st.lastmile.golive_keys(m, &f.modes()).await?;
    Ok(crate::routes::json(StatusCode::OK, &v))
}

/// Creates an API key for `/v1`. Its `secret` is in this answer only; store it now.
#[utoipa::path(post, path = "/api/merchant/api-keys", tag = "lastmile-golive",
    security(("bearer_jwt" = [])), request_body = NewApiKey,
    responses((status = 201, body = ipay_engine::engine::ApiKeyWithSecret),
              (status = 400, description = "`parameter_invalid`: label, permission, address or lifetime", body = Envelope),
              (status = 403, description = "`role_forbidden`", body = Envelope),
              (status = 409, description = "`too_many_keys`", body = Envelope)))]
pub async fn create_key(
    State(st): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<NewApiKey>,
) -> Result<Response, ApiError> {
    let m = user.require_merchant()?;
    let k = st.lastmile.golive_create_key(m, req).await?;
    Ok(crate::routes::json(StatusCode::CREATED, &k))
}

/// Revokes an API key at once (revoking it again answers the same).
#[utoipa::path(delete, path = "/api/merchant/api-keys/{id}", tag = "lastmile-golive",
    security(("bearer_jwt" = [])), params(("id" = String, Path, description = "`key_…`")),
    responses((status = 200, body = ipay_engine::model::ApiKey),
              (status = 403, description = "`role_forbidden`", body = Envelope),
              (status = 404, description = "no such key of this merchant", body = Envelope)))]
pub async fn revoke_key(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let m = user.require_merchant()?;
    let k = st.lastmile.golive_revoke_key(m, &id).await?;
    Ok(crate::routes::json(StatusCode::OK, &k))
}

/// The merchant's outbound event endpoints, test then live.
#[utoipa::path(get, path = "/api/merchant/webhook-endpoints", tag = "lastmile-golive",
    security(("bearer_jwt" = [])), params(ModeFilter),
    responses((status = 200, body = EndpointList),
              (status = 403, description = "`role_forbidden`", body = Envelope)))]
pub async fn list_endpoints(
    State(st): State<AppState>,
    user: AuthUser,
    ApiQuery(f): ApiQuery<ModeFilter>,
) -> Result<Response, ApiError> {
    let m = user.require_merchant()?;
    let v = st
        .lastmile
        .golive_endpoints(&st.webhooks, m, &f.modes())
        .await?;
    Ok(crate::routes::json(StatusCode::OK, &v))
}

/// Adds an endpoint for last-mile events, signed like every merchant webhook. Its `secret`
/// (`whsec_…`) is in this answer only.
#[utoipa::path(post, path = "/api/merchant/webhook-endpoints", tag = "lastmile-golive",
    security(("bearer_jwt" = [])), request_body = NewEndpoint,
    responses((status = 201, body = ipay_engine::webhooks::model::EndpointWithSecret),
              (status = 400, description = "`url_not_allowed` (a private or loopback address), `event_type_unknown` or `parameter_invalid` (url, events, description)", body = Envelope),
              (status = 403, description = "`role_forbidden`", body = Envelope),
              (status = 409, description = "`webhook_endpoint_limit`", body = Envelope)))]
pub async fn create_endpoint(
    State(st): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<NewEndpoint>,
) -> Result<Response, ApiError> {
    let m = user.require_merchant()?;
    let e = st
        .lastmile
        .golive_create_endpoint(&st.webhooks, m, req)
        .await?;
    Ok(crate::routes::json(StatusCode::CREATED, &e))
}

/// Changes an endpoint's URL, event types or description; its secret stays.
#[utoipa::path(patch, path = "/api/merchant/webhook-endpoints/{id}", tag = "lastmile-golive",
    security(("bearer_jwt" = [])), params(("id" = String, Path, description = "`we_…`")),
    request_body = EndpointChange,
    responses((status = 200, body = ipay_engine::webhooks::model::EndpointView),
              (status = 400, description = "`url_not_allowed`, `event_type_unknown` or `parameter_invalid`", body = Envelope),
              (status = 403, description = "`role_forbidden`", body = Envelope),
              (status = 404, description = "no such endpoint of this merchant", body = Envelope)))]
pub async fn update_endpoint(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<EndpointChange>,
) -> Result<Response, ApiError> {
    let m = user.require_merchant()?;
    let e = st
        .lastmile
        .golive_update_endpoint(&st.webhooks, m, &id, req)
        .await?;
    Ok(crate::routes::json(StatusCode::OK, &e))
}

/// Deletes an endpoint; its pending deliveries are cancelled.
#[utoipa::path(delete, path = "/api/merchant/webhook-endpoints/{id}", tag = "lastmile-golive",
    security(("bearer_jwt" = [])), params(("id" = String, Path, description = "`we_…`")),
    responses((status = 200, body = ipay_engine::webhooks::api::DeletedEndpoint),
              (status = 403, description = "`role_forbidden`", body = Envelope),
              (status = 404, description = "no such endpoint of this merchant", body = Envelope)))]
pub async fn delete_endpoint(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let m = user.require_merchant()?;
    let d = st
        .lastmile
        .golive_delete_endpoint(&st.webhooks, m, &id)
        .await?;
    Ok(crate::routes::json(StatusCode::OK, &d))
}

/// Issues a new signing secret (in this answer only); the old one keeps signing next to it
/// for `overlap_seconds` (default one day).
#[utoipa::path(post, path = "/api/merchant/webhook-endpoints/{id}/rotate", tag = "lastmile-golive",
    security(("bearer_jwt" = [])), params(("id" = String, Path, description = "`we_…`")),
    request_body(content = ipay_engine::webhooks::api::RotateInput, description = "optional"),
    responses((status = 200, body = ipay_engine::webhooks::model::EndpointWithSecret),
              (status = 400, description = "`parameter_invalid`: overlap_seconds", body = Envelope),
              (status = 403, description = "`role_forbidden`", body = Envelope),
              (status = 404, description = "no such endpoint of this merchant", body = Envelope)))]
pub async fn rotate_endpoint(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<ipay_engine::webhooks::api::RotateInput>,
) -> Result<Response, ApiError> {
    let m = user.require_merchant()?;
    let e = st
        .lastmile
        .golive_rotate_endpoint(&st.webhooks, m, &id, req)
        .await?;
    Ok(crate::routes::json(StatusCode::OK, &e))
}

/// The merchant's configured payment channels, test then live (never their credentials).
#[utoipa::path(get, path = "/api/merchant/channels", tag = "lastmile-golive",
    security(("bearer_jwt" = [])), params(ModeFilter),
    responses((status = 200, body = ChannelList),
              (status = 403, description = "`role_forbidden`", body = Envelope)))]
pub async fn list_channels(
    State(st): State<AppState>,
    user: AuthUser,
    ApiQuery(f): ApiQuery<ModeFilter>,
) -> Result<Response, ApiError> {
    let m = user.require_merchant()?;
    let v = st.lastmile.golive_channels(m, &f.modes()).await?;
    Ok(crate::routes::json(StatusCode::OK, &v))
}

/// Stores the credentials of one channel in one mode (replacing older ones): 201 when new,
/// 200 when replaced. The answer never holds the credentials.
#[utoipa::path(put, path = "/api/merchant/channels/{channel}", tag = "lastmile-golive",
    security(("bearer_jwt" = [])),
    params(("channel" = String, Path, description = "`stripe`, `multisafepay`, `alipay`, `wechat` or `promptpay`")),
    request_body = ChannelCredentials,
    responses((status = 201, body = ipay_engine::channels::ChannelView, description = "configured"),
              (status = 200, body = ipay_engine::channels::ChannelView, description = "replaced"),
              (status = 400, description = "`channel_unknown`, `credentials_invalid` (the channel's fields) or `parameter_invalid` (credentials shape, notify_url)", body = Envelope),
              (status = 403, description = "`role_forbidden`", body = Envelope),
              (status = 409, description = "`channels_not_available` or `master_key_missing`: the server cannot store channel credentials", body = Envelope)))]
pub async fn configure_channel(
    State(st): State<AppState>,
    user: AuthUser,
    Path(channel): Path<String>,
    ApiJson(req): ApiJson<ChannelCredentials>,
) -> Result<Response, ApiError> {
    let m = user.require_merchant()?;
    let (v, new) = st
        .lastmile
        .golive_configure_channel(m, &channel, req)
        .await?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(crate::routes::json(status, &v))
}
