//! `/v1/refunds`: create (through the intent's channel), list, read, and confirm a manual
//! refund. Thin: the engine decides everything.

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, Auth, IdempotencyKey};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use ipay_engine::engine::{ConfirmRefundRequest, CreateRefundRequest};
use ipay_engine::model::Refund;
use serde::Deserialize;

/// Refunds part or all of a succeeded intent through its channel; never more than captured
/// minus refunded (pending refunds count). Answers the refund as the PSP left it: `succeeded`,
/// `failed` (the PSP refused), or `pending` (the PSP confirms later by callback or the poller
/// asks; manual refunds wait for `POST /v1/refunds/{id}/confirm`).
#[utoipa::path(post, path = "/v1/refunds", tag = "refunds", security(("bearer" = [])), request_body = CreateRefundRequest,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Refund), (status = 400, body = super::ErrorEnvelope), (status = 401, body = super::ErrorEnvelope),
        (status = 403, body = super::ErrorEnvelope), (status = 409, body = super::ErrorEnvelope), (status = 422, body = super::ErrorEnvelope),
        (status = 503, body = super::ErrorEnvelope)))]
pub async fn create(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(req): ApiJson<CreateRefundRequest>,
) -> Result<Response, ApiError> {
    Ok(super::idempotent(
        st.engine.create_refund(&ctx, req, key.as_deref()).await?,
    ))
}

/// Query of `GET /v1/refunds`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only refunds of this intent.
    pub payment_intent: Option<String>,
    pub limit: Option<usize>,
    pub offset: Option<usize>,
}

/// Refunds, newest first.
#[utoipa::path(get, path = "/v1/refunds", tag = "refunds", security(("bearer" = [])), params(ListParams),
    responses((status = 200, description = "`{data: [Refund], pagination}`")))]
pub async fn list(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<Response, ApiError> {
    let (page, req) = st
        .engine
        .list_refunds(&ctx, p.payment_intent.as_deref(), p.limit, p.offset)
        .await?;
    Ok(super::list(page, req))
}

/// One refund.
#[utoipa::path(get, path = "/v1/refunds/{id}", tag = "refunds", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = Refund), (status = 404, body = super::ErrorEnvelope)))]
pub async fn get(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(super::json(
        StatusCode::OK,
        &st.engine.get_refund(&ctx, &id).await?,
    ))
}

/// Confirms how a manual refund ended (channels without a refund API, such as PromptPay: the
/// merchant returns the money by bank transfer). `succeeded` emits `refund.succeeded`; `failed`
/// emits `refund.failed` and makes the amount refundable again.
#[utoipa::path(post, path = "/v1/refunds/{id}/confirm", tag = "refunds", security(("bearer" = [])), params(("id" = String, Path)),
    request_body = ConfirmRefundRequest,
    responses((status = 200, body = Refund), (status = 400, body = super::ErrorEnvelope), (status = 401, body = super::ErrorEnvelope),
        (status = 403, body = super::ErrorEnvelope), (status = 404, body = super::ErrorEnvelope), (status = 409, body = super::ErrorEnvelope)))]
pub async fn confirm(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ConfirmRefundRequest>,
) -> Result<Response, ApiError> {
    Ok(super::json(
        StatusCode::OK,
        &st.engine.confirm_refund(&ctx, &id, req).await?,
    ))
}
