//! `/v1/services`: service manifests and their lifecycle.

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, Auth};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use ipay_engine::model::{Service, ServiceAction, ServiceInput};

/// Creates a manifest, or updates the one with the same `id` or `name` (only fields given).
#[utoipa::path(post, path = "/v1/services", tag = "services", security(("bearer" = [])), request_body = ServiceInput,
    responses((status = 201, body = Service, description = "created"), (status = 200, body = Service, description = "updated"),
              (status = 400, body = super::ErrorEnvelope), (status = 404, body = super::ErrorEnvelope),
              (status = 409, description = "`service_name_taken`: another service of this merchant has that name", body = super::ErrorEnvelope)))]
pub async fn upsert(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    ApiJson(input): ApiJson<ServiceInput>,
) -> Result<Response, ApiError> {
    let (svc, created) = st.engine.upsert_service(&ctx, input).await?;
    Ok(super::json(
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        &svc,
    ))
}

/// The caller's manifests, newest first.
#[utoipa::path(get, path = "/v1/services", tag = "services", security(("bearer" = [])), params(super::PageParams),
    responses((status = 200, description = "`{data: [Service], pagination}`")))]
pub async fn list(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    ApiQuery(p): ApiQuery<super::PageParams>,
) -> Result<Response, ApiError> {
    let (page, req) = st.engine.list_services(&ctx, p.limit, p.offset).await?;
    Ok(super::list(page, req))
}

/// One manifest.
#[utoipa::path(get, path = "/v1/services/{id}", tag = "services", security(("bearer" = [])),
    params(("id" = String, Path, description = "svc_…, bare 26-character id, or UUID")),
    responses((status = 200, body = Service), (status = 404, body = super::ErrorEnvelope)))]
pub async fn get(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(super::json(
        StatusCode::OK,
        &st.engine.get_service(&ctx, &id).await?,
    ))
}

/// Lifecycle: `activate`, `pause`, `resume`, `deprecate`.
#[utoipa::path(patch, path = "/v1/services/{id}/{action}", tag = "services", security(("bearer" = [])),
    params(("id" = String, Path), ("action" = String, Path, description = "activate | pause | resume | deprecate")),
    responses((status = 200, body = Service), (status = 404, body = super::ErrorEnvelope), (status = 409, body = super::ErrorEnvelope)))]
pub async fn action(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    Path((id, action)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let action = match ServiceAction::parse(&action) {
        Some(a) if a != ServiceAction::Delete => a,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "route_not_found",
                "service actions are activate, pause, resume and deprecate (DELETE removes)",
            ));
        }
    };
    Ok(super::json(
        StatusCode::OK,
        &st.engine.service_action(&ctx, &id, action).await?,
    ))
}

/// Permanently removes a draft or deprecated manifest.
#[utoipa::path(delete, path = "/v1/services/{id}", tag = "services", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = Service), (status = 404, body = super::ErrorEnvelope), (status = 409, body = super::ErrorEnvelope)))]
pub async fn delete(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(super::json(
        StatusCode::OK,
        &st.engine
            .service_action(&ctx, &id, ServiceAction::Delete)
            .await?,
    ))
}
