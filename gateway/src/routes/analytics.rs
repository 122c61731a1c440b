//! `GET /v1/analytics/channels`: revenue and success rates per channel for today, this week
//! or this month, computed by the engine from the ledger's intents (not per-node counters), so
//! every node answers alike. The dashboard's charts draw from the same method.

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiQuery, Auth};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use ipay_engine::analytics::{ChannelAnalytics, ChannelStats, ReasonCount};
use serde::Deserialize;

/// Query of `GET /v1/analytics/channels`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsParams {
    /// `today` (default), `week` (since Monday) or `month` (since the 1st); UTC.
    pub period: Option<String>,
}

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/analytics/channels", get(channels))
}

/// Revenue (gross and net of refunds, per currency), counts by outcome, success rate and
/// failure reasons per channel over the period, for the caller's mode.
#[utoipa::path(get, path = "/v1/analytics/channels", tag = "analytics", security(("bearer" = [])),
    params(AnalyticsParams),
    responses((status = 200, body = ChannelAnalytics),
              (status = 400, description = "`parameter_invalid` (unknown period) or `parameter_unknown`", body = super::ErrorEnvelope),
              (status = 403, description = "`permission_denied`: the key lacks `payment_intents:read`", body = super::ErrorEnvelope)))]
pub async fn channels(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    ApiQuery(p): ApiQuery<AnalyticsParams>,
) -> Result<Response, ApiError> {
    let period = p.period.as_deref().unwrap_or("today");
    let a = st.engine.channel_analytics(&ctx, period).await?;
    Ok(super::json(StatusCode::OK, &a))
}

/// This module's part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(channels),
    components(schemas(ChannelAnalytics, ChannelStats, ReasonCount)),
    tags((name = "analytics", description = "Revenue and success rates per channel (dashboard)"))
)]
pub struct Doc;
