//! `/v1/webhook-endpoints` and `/v1/webhooks/…`: webhook endpoints, attempt logs, dropped
//! deliveries, replay and recovery. Thin: each handler calls one method of the engine's
//! [`ipay_engine::webhooks::Webhooks`].

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, Auth, OptionalJson};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use ipay_engine::webhooks::api::{
    CursorPage, DeletedEndpoint, DroppedParams, EndpointInput, LogParams, RecoverInput,
    RecoverOutcome, ReplayOutcome, RotateInput,
};
use ipay_engine::webhooks::model::{AttemptLog, Delivery, EndpointView, EndpointWithSecret};
use serde::Serialize;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/webhook-endpoints", post(create).get(list))
        .route("/v1/webhook-endpoints/{id}", get(fetch).delete(delete))
        .route("/v1/webhook-endpoints/{id}/rotate", post(rotate))
        .route("/v1/webhook-endpoints/{id}/enable", post(enable))
        .route("/v1/webhook-endpoints/{id}/recover", post(recover))
        .route("/v1/webhooks/logs", get(logs))
        .route("/v1/webhooks/dropped", get(dropped))
        .route("/v1/webhooks/{event_id}/replay", post(replay))
}

/// This module's part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        create, list, fetch, delete, rotate, enable, recover, logs, dropped, replay
    ),
    components(schemas(
        EndpointInput,
        EndpointView,
        EndpointWithSecret,
        RotateInput,
        RecoverInput,
        RecoverOutcome,
        ReplayOutcome,
        DeletedEndpoint,
        AttemptLog,
        Delivery
    ))
)]
pub struct Doc;

/// `pagination` of cursor-paged lists.
#[derive(Serialize)]
struct CursorPagination {
    limit: usize,
    has_more: bool,
    /// Pass as `starting_after` for the next page.
    next_starting_after: Option<String>,
}

#[derive(Serialize)]
struct CursorBody<T> {
    data: Vec<T>,
    pagination: CursorPagination,
}

fn cursor_list<T: Serialize>(p: CursorPage<T>) -> Response {
    super::json(
        StatusCode::OK,
        &CursorBody {
            data: p.data,
            pagination: CursorPagination {
                limit: p.limit,
                has_more: p.has_more,
                next_starting_after: p.next_starting_after,
            },
        },
    )
}

/// Creates an endpoint; the `secret` (`whsec_…`) is in this response only.
#[utoipa::path(post, path = "/v1/webhook-endpoints", tag = "webhooks", security(("bearer" = [])), request_body = EndpointInput,
    responses((status = 201, body = EndpointWithSecret), (status = 400, body = super::ErrorEnvelope), (status = 409, body = super::ErrorEnvelope)))]
pub async fn create(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    ApiJson(input): ApiJson<EndpointInput>,
) -> Result<Response, ApiError> {
    let e = st.webhooks.create_endpoint(&ctx, input).await?;
    Ok(super::json(StatusCode::CREATED, &e))
}

/// The caller's endpoints: API endpoints, then the `endpoint`s of its service manifests.
#[utoipa::path(get, path = "/v1/webhook-endpoints", tag = "webhooks", security(("bearer" = [])), params(super::PageParams),
    responses((status = 200, description = "`{data: [EndpointView], pagination}`")))]
pub async fn list(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    ApiQuery(p): ApiQuery<super::PageParams>,
) -> Result<Response, ApiError> {
    let (page, req) = st.webhooks.list_endpoints(&ctx, p.limit, p.offset).await?;
    Ok(super::list(page, req))
}

/// One endpoint (`we_…`, or a manifest's `svc_…`).
#[utoipa::path(get, path = "/v1/webhook-endpoints/{id}", tag = "webhooks", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = EndpointView), (status = 404, body = super::ErrorEnvelope)))]
pub async fn fetch(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let e = st.webhooks.get_endpoint(&ctx, &id).await?;
    Ok(super::json(StatusCode::OK, &e))
}

/// Deletes an API endpoint; its pending deliveries are cancelled.
#[utoipa::path(delete, path = "/v1/webhook-endpoints/{id}", tag = "webhooks", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = DeletedEndpoint), (status = 404, body = super::ErrorEnvelope), (status = 409, body = super::ErrorEnvelope)))]
pub async fn delete(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let e = st.webhooks.delete_endpoint(&ctx, &id).await?;
    Ok(super::json(StatusCode::OK, &e))
}

/// Issues a new secret; the old one keeps signing beside it for `overlap_seconds`.
#[utoipa::path(post, path = "/v1/webhook-endpoints/{id}/rotate", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path)), request_body(content = Option<RotateInput>),
    responses((status = 200, body = EndpointWithSecret), (status = 404, body = super::ErrorEnvelope)))]
pub async fn rotate(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<RotateInput>,
) -> Result<Response, ApiError> {
    let e = st.webhooks.rotate_secret(&ctx, &id, body).await?;
    Ok(super::json(StatusCode::OK, &e))
}

/// Enables an endpoint that was disabled by a 410 Gone.
#[utoipa::path(post, path = "/v1/webhook-endpoints/{id}/enable", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = EndpointView), (status = 404, body = super::ErrorEnvelope)))]
pub async fn enable(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let e = st.webhooks.enable_endpoint(&ctx, &id).await?;
    Ok(super::json(StatusCode::OK, &e))
}

/// Re-sends every event of `[since, until)` that the endpoint wants.
#[utoipa::path(post, path = "/v1/webhook-endpoints/{id}/recover", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = RecoverInput,
    responses((status = 202, body = RecoverOutcome), (status = 400, body = super::ErrorEnvelope), (status = 404, body = super::ErrorEnvelope)))]
pub async fn recover(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RecoverInput>,
) -> Result<Response, ApiError> {
    let r = st.webhooks.recover(&ctx, &id, body).await?;
    Ok(super::json(StatusCode::ACCEPTED, &r))
}

/// Delivery attempts, newest first (`{data: [AttemptLog], pagination}`).
#[utoipa::path(get, path = "/v1/webhooks/logs", tag = "webhooks", security(("bearer" = [])), params(LogParams),
    responses((status = 200, description = "`{data: [AttemptLog], pagination: {limit, has_more, next_starting_after}}`"),
              (status = 404, description = "`resource_missing`: `event_id` names no event of this merchant", body = crate::routes::ErrorEnvelope)))]
pub async fn logs(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    ApiQuery(p): ApiQuery<LogParams>,
) -> Result<Response, ApiError> {
    Ok(cursor_list(st.webhooks.logs(&ctx, p).await?))
}

/// Deliveries dropped on one day (`{data: [Delivery], pagination}`).
#[utoipa::path(get, path = "/v1/webhooks/dropped", tag = "webhooks", security(("bearer" = [])), params(DroppedParams),
    responses((status = 200, description = "`{data: [Delivery], pagination: {limit, has_more, next_starting_after}}`")))]
pub async fn dropped(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    ApiQuery(p): ApiQuery<DroppedParams>,
) -> Result<Response, ApiError> {
    Ok(cursor_list(st.webhooks.dropped(&ctx, p).await?))
}

/// Sends an event again to every endpoint that wants it, as a fresh attempt sequence.
#[utoipa::path(post, path = "/v1/webhooks/{event_id}/replay", tag = "webhooks", security(("bearer" = [])),
    params(("event_id" = String, Path)),
    responses((status = 202, body = ReplayOutcome), (status = 404, body = super::ErrorEnvelope), (status = 409, body = super::ErrorEnvelope)))]
pub async fn replay(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    Path(event_id): Path<String>,
) -> Result<Response, ApiError> {
    let r = st.webhooks.replay(&ctx, &event_id).await?;
    Ok(super::json(StatusCode::ACCEPTED, &r))
}
