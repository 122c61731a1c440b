//! `/v1/refunds`.

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, Auth, IdempotencyKey};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use ipay_engine::engine::CreateRefundRequest;
use ipay_engine::model::Refund;
use serde::Deserialize;

/// Refunds part or all of a succeeded intent; never more than captured minus refunded.
#[utoipa::path(post, path = "/v1/refunds", tag = "refunds", security(("bearer" = [])), request_body = CreateRefundRequest,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Refund), (status = 400, body = super::ErrorEnvelope), (status = 409, body = super::ErrorEnvelope)))]
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
