//! `/v1/api-keys`: list, create, change the IP whitelist, revoke, rotate.

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, Auth, OptionalJson};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use ipay_engine::engine::ApiKeyUpdate;
use ipay_engine::model::{ApiKey, ApiKeyInput};
use serde::Deserialize;

/// The caller's keys (secrets are never shown again; `redacted` identifies a key).
#[utoipa::path(get, path = "/v1/api-keys", tag = "api_keys", security(("bearer" = [])), params(super::PageParams),
    responses((status = 200, description = "`{data: [ApiKey], pagination}`"), (status = 401, body = super::ErrorEnvelope)))]
pub async fn list(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    ApiQuery(p): ApiQuery<super::PageParams>,
) -> Result<Response, ApiError> {
    let (page, req) = st.engine.list_api_keys(&ctx, p.limit, p.offset).await?;
    Ok(super::list(page, req))
}

/// Creates a key in the caller's mode; the secret is in this response only.
#[utoipa::path(post, path = "/v1/api-keys", tag = "api_keys", security(("bearer" = [])), request_body = ApiKeyInput,
    responses((status = 201, body = ipay_engine::engine::ApiKeyWithSecret), (status = 400, body = super::ErrorEnvelope), (status = 403, body = super::ErrorEnvelope)))]
pub async fn create(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    ApiJson(input): ApiJson<ApiKeyInput>,
) -> Result<Response, ApiError> {
    let k = st.engine.create_api_key(&ctx, input).await?;
    Ok(super::json(StatusCode::CREATED, &k))
}

/// Replaces a key's IP whitelist; the next request with the key is checked against the new
/// list on every node. Needs `api_keys:write` and every permission the key carries.
#[utoipa::path(patch, path = "/v1/api-keys/{id}", tag = "api_keys", security(("bearer" = [])),
    params(("id" = String, Path, description = "key_…")), request_body = ApiKeyUpdate,
    responses((status = 200, body = ApiKey), (status = 400, body = super::ErrorEnvelope), (status = 401, body = super::ErrorEnvelope),
        (status = 403, body = super::ErrorEnvelope), (status = 404, body = super::ErrorEnvelope), (status = 409, body = super::ErrorEnvelope)))]
pub async fn update(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ApiKeyUpdate>,
) -> Result<Response, ApiError> {
    let k = st.engine.update_api_key(&ctx, &id, body).await?;
    Ok(super::json(StatusCode::OK, &k))
}

/// Revokes a key at once.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api_keys", security(("bearer" = [])),
    params(("id" = String, Path, description = "key_…")),
    responses((status = 200, body = ApiKey), (status = 404, body = super::ErrorEnvelope)))]
pub async fn revoke(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let k = st.engine.revoke_api_key(&ctx, &id).await?;
    Ok(super::json(StatusCode::OK, &k))
}

/// `POST /v1/api-keys/{id}/rotate` body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// How long the old key keeps working, 0 to 604800 s (default 0).
    pub grace_period_seconds: Option<i64>,
}

/// Issues a replacement key with the same settings and revokes the old one (after an optional
/// grace period).
#[utoipa::path(post, path = "/v1/api-keys/{id}/rotate", tag = "api_keys", security(("bearer" = [])),
    params(("id" = String, Path, description = "key_…")), request_body(content = Option<RotateBody>),
    responses((status = 201, body = ipay_engine::engine::ApiKeyWithSecret), (status = 404, body = super::ErrorEnvelope), (status = 409, body = super::ErrorEnvelope)))]
pub async fn rotate(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<RotateBody>,
) -> Result<Response, ApiError> {
    let k = st
        .engine
        .rotate_api_key(&ctx, &id, body.grace_period_seconds)
        .await?;
    Ok(super::json(StatusCode::CREATED, &k))
}
