//! `/v1/subscriptions`: subscribe to a manifest plan, read, list, cancel. Thin handlers; the
//! rules are in `ipay_engine::subscriptions`.

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, Auth, IdempotencyKey};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use ipay_engine::subscriptions::{
    CreateSubscriptionRequest, CreatedSubscription, Subscription, SubscriptionStatus,
};
use serde::Deserialize;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/subscriptions", get(list).post(create))
        .route("/v1/subscriptions/{id}", get(get_one))
        .route("/v1/subscriptions/{id}/cancel", post(cancel))
}

/// Subscribes to one of a manifest's `pricing.subscription` plans and opens the first
/// payment; the subscription is `incomplete` until that payment succeeds.
///
/// With `Idempotency-Key`, a repeat of the same body returns the original response (marked
/// `Idempotent-Replayed: true`) and a different body is refused with 422.
#[utoipa::path(post, path = "/v1/subscriptions", tag = "subscriptions", security(("bearer" = [])), request_body = CreateSubscriptionRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "1–255 printable ASCII characters; kept 24 h")),
    responses((status = 201, body = CreatedSubscription),
              (status = 422, body = super::ErrorEnvelope, description = "`idempotency_key_reused`"),
              (status = 400, body = super::ErrorEnvelope, description = "`plan_unknown`, `subscriptions_not_offered`, `channel_unknown`, `channel_not_accepted`, `resource_missing`, `parameter_invalid`"),
              (status = 403, body = super::ErrorEnvelope, description = "`permission_denied`: the key lacks `payment_intents:write`"),
              (status = 409, body = super::ErrorEnvelope, description = "`service_not_active`"),
              (status = 503, body = super::ErrorEnvelope, description = "`channel_unavailable` or a backend unavailable")))]
pub async fn create(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(req): ApiJson<CreateSubscriptionRequest>,
) -> Result<Response, ApiError> {
    let out = st
        .engine
        .create_subscription(&ctx, req, key.as_deref())
        .await?;
    Ok(super::idempotent(out))
}

/// Query of `GET /v1/subscriptions`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// incomplete | incomplete_expired | active | past_due | cancelled
    pub status: Option<String>,
    /// 1 to 100, default 20.
    pub limit: Option<usize>,
    /// Default 0.
    pub offset: Option<usize>,
}

/// The caller's subscriptions, newest first.
#[utoipa::path(get, path = "/v1/subscriptions", tag = "subscriptions", security(("bearer" = [])), params(ListParams),
    responses((status = 200, description = "`{data: [Subscription], pagination}`"),
              (status = 400, body = super::ErrorEnvelope, description = "`parameter_invalid` (`status`, `limit`, `offset`)"),
              (status = 403, body = super::ErrorEnvelope, description = "`permission_denied`")))]
pub async fn list(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<Response, ApiError> {
    let (page, req) = st
        .engine
        .list_subscriptions(&ctx, p.status.as_deref(), p.limit, p.offset)
        .await?;
    Ok(super::list(page, req))
}

/// One subscription.
#[utoipa::path(get, path = "/v1/subscriptions/{id}", tag = "subscriptions", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = Subscription), (status = 403, body = super::ErrorEnvelope), (status = 404, body = super::ErrorEnvelope)))]
pub async fn get_one(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(super::json(
        StatusCode::OK,
        &st.engine.get_subscription(&ctx, &id).await?,
    ))
}

/// Cancels a subscription. Paid up (`active`): it stays active until `current_period_end`
/// (`cancel_at_period_end: true`, `subscription.cancelled` now, `revocation.succeeded` at the
/// period end). Otherwise it ends at once and its open payment is cancelled.
#[utoipa::path(post, path = "/v1/subscriptions/{id}/cancel", tag = "subscriptions", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = Subscription), (status = 403, body = super::ErrorEnvelope), (status = 404, body = super::ErrorEnvelope),
              (status = 409, body = super::ErrorEnvelope, description = "`invalid_state_transition`: already ended; `subscription_busy`: retry")))]
pub async fn cancel(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(super::json(
        StatusCode::OK,
        &st.engine.cancel_subscription(&ctx, &id).await?,
    ))
}

/// This module's part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(create, list, get_one, cancel),
    components(schemas(Subscription, SubscriptionStatus, CreatedSubscription, CreateSubscriptionRequest)),
    tags((name = "subscriptions", description = "Recurring payments of a manifest's plans"))
)]
pub struct Doc;
