//! `/v1/events`: the durable event log.

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiQuery, Auth};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use ipay_engine::store::Page;
use serde::Deserialize;

/// Query of `GET /v1/events`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Event type, e.g. `payment_intent.succeeded`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<String>,
    /// Only events about this object (e.g. a `pi_…`).
    pub object_id: Option<String>,
    pub limit: Option<usize>,
    pub offset: Option<usize>,
}

/// Events, newest first.
#[utoipa::path(get, path = "/v1/events", tag = "events", security(("bearer" = [])), params(ListParams),
    responses((status = 200, description = "`{data: [Event], pagination}`")))]
pub async fn list(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<Response, ApiError> {
    let (page, req) = st
        .engine
        .list_events(&ctx, p.event_type, p.object_id, p.limit, p.offset)
        .await?;
    let views: Vec<_> = page.data.iter().map(|e| e.view()).collect();
    Ok(super::list(
        Page {
            data: views,
            total: page.total,
        },
        req,
    ))
}

/// One event.
#[utoipa::path(get, path = "/v1/events/{id}", tag = "events", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = ipay_engine::model::EventView), (status = 404, body = super::ErrorEnvelope)))]
pub async fn get(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let e = st.engine.get_event(&ctx, &id).await?;
    Ok(super::json(StatusCode::OK, &e.view()))
}
