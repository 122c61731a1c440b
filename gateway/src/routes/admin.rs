//! Operator endpoints, behind the admin token from config.

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, bearer};
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use serde::Deserialize;
use subtle::ConstantTimeEq;

/// Proof that the caller presented the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        if st.admin_token.is_empty() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "admin_disabled",
                "the admin API is disabled; set admin.token (IPAY_ADMIN__TOKEN) to enable it",
            ));
        }
        let given = bearer(parts).unwrap_or_default();
        if given.as_bytes().ct_eq(st.admin_token.as_bytes()).into() {
            Ok(Admin)
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "auth_invalid",
                "missing or wrong admin token",
            ))
        }
    }
}

/// `POST /v1/admin/merchants` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMerchant {
    pub name: String,
}

/// Creates a merchant with test and live keys and a webhook secret, shown once.
#[utoipa::path(post, path = "/v1/admin/merchants", tag = "admin", request_body = CreateMerchant,
    security(("admin_token" = [])),
    responses((status = 201, description = "merchant id, sk_test_…, sk_live_…, whsec_… (shown once)"),
              (status = 401, body = super::ErrorEnvelope), (status = 403, body = super::ErrorEnvelope)))]
pub async fn create_merchant(
    State(st): State<AppState>,
    _admin: Admin,
    ApiJson(body): ApiJson<CreateMerchant>,
) -> Result<Response, ApiError> {
    let creds = ipay_engine::engine::create_merchant(
        st.engine.ledger().as_ref(),
        st.engine.clock().as_ref(),
        &body.name,
    )
    .await?;
    Ok(super::json(StatusCode::CREATED, &creds))
}
