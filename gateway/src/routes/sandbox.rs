//! `/v1/sandbox/…`: settle sandbox-channel intents as a payer and PSP would (test keys only).

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::Auth;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use ipay_engine::model::PaymentIntent;

/// Marks a pending sandbox intent as paid.
#[utoipa::path(post, path = "/v1/sandbox/payment-intents/{id}/succeed", tag = "sandbox", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = PaymentIntent), (status = 403, body = super::ErrorEnvelope), (status = 409, body = super::ErrorEnvelope)))]
pub async fn succeed(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(super::json(
        StatusCode::OK,
        &st.engine.sandbox_settle(&ctx, &id, true).await?,
    ))
}

/// Marks a pending sandbox intent as failed.
#[utoipa::path(post, path = "/v1/sandbox/payment-intents/{id}/fail", tag = "sandbox", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = PaymentIntent), (status = 403, body = super::ErrorEnvelope), (status = 409, body = super::ErrorEnvelope)))]
pub async fn fail(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(super::json(
        StatusCode::OK,
        &st.engine.sandbox_settle(&ctx, &id, false).await?,
    ))
}
