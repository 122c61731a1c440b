//! `/v1/payment-intents`.

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, Auth, IdempotencyKey, OptionalJson};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use ipay_engine::engine::{CreateIntentRequest, IntentListParams};
use ipay_engine::model::PaymentIntent;
use serde::Deserialize;

/// Creates a payment intent and asks its channel for a QR payload.
///
/// With `Idempotency-Key`, a repeat of the same body returns the original response (marked
/// `Idempotent-Replayed: true`) and a different body is refused with 422.
#[utoipa::path(post, path = "/v1/payment-intents", tag = "payment_intents", security(("bearer" = [])), request_body = CreateIntentRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "1–255 printable ASCII characters; kept 24 h")),
    responses((status = 201, body = PaymentIntent), (status = 400, body = super::ErrorEnvelope), (status = 409, body = super::ErrorEnvelope),
              (status = 422, body = super::ErrorEnvelope), (status = 503, body = super::ErrorEnvelope)))]
pub async fn create(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(req): ApiJson<CreateIntentRequest>,
) -> Result<Response, ApiError> {
    let out = st.engine.create_intent(&ctx, req, key.as_deref()).await?;
    Ok(super::idempotent(out))
}

/// The caller's intents.
#[utoipa::path(get, path = "/v1/payment-intents", tag = "payment_intents", security(("bearer" = [])), params(IntentListParams),
    responses((status = 200, description = "`{data: [PaymentIntent], pagination}`"), (status = 400, body = super::ErrorEnvelope)))]
pub async fn list(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    ApiQuery(params): ApiQuery<IntentListParams>,
) -> Result<Response, ApiError> {
    let (page, req) = st.engine.list_intents(&ctx, params).await?;
    Ok(super::list(page, req))
}

/// One intent.
#[utoipa::path(get, path = "/v1/payment-intents/{id}", tag = "payment_intents", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = PaymentIntent), (status = 404, body = super::ErrorEnvelope)))]
pub async fn get(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(super::json(
        StatusCode::OK,
        &st.engine.get_intent(&ctx, &id).await?,
    ))
}

/// `POST /v1/payment-intents/{id}/cancel` body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    pub cancellation_reason: Option<String>,
}

/// Cancels a pending intent.
#[utoipa::path(post, path = "/v1/payment-intents/{id}/cancel", tag = "payment_intents", security(("bearer" = [])), params(("id" = String, Path)),
    request_body(content = Option<CancelBody>),
    responses((status = 200, body = PaymentIntent), (status = 404, body = super::ErrorEnvelope), (status = 409, body = super::ErrorEnvelope)))]
pub async fn cancel(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    OptionalJson(b): OptionalJson<CancelBody>,
) -> Result<Response, ApiError> {
    Ok(super::json(
        StatusCode::OK,
        &st.engine
            .cancel_intent(&ctx, &id, b.cancellation_reason)
            .await?,
    ))
}
