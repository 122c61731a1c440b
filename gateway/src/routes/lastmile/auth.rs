//! Last-mile accounts over HTTP: register, login, me, and the [`AuthUser`] extractor every
//! `/api` route that needs a logged-in user takes (`Authorization: Bearer <jwt>`).
//! Passwords, hashes and tokens are the engine's business (`ipay_lastmile::accounts`).

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, bearer};
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use ipay_engine::EngineError;
use ipay_engine::ids::MerchantId;
use ipay_lastmile::accounts::{
    LoginRequest, RegisterRequest, Registrar, TokenResponse, UserId, UserView,
};
use subtle::ConstantTimeEq;

pub use ipay_lastmile::accounts::Role;

/// The logged-in user of a request, from a verified account JWT.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser {
    pub user_id: UserId,
    /// The merchant of a merchant user (and of a driver attached to one).
    pub merchant_id: Option<MerchantId>,
    pub role: Role,
}

fn forbidden(role: &str) -> ApiError {
    ApiError::from(EngineError::Forbidden {
        code: "role_forbidden",
        message: format!("this endpoint is for {role} accounts"),
    })
}

impl AuthUser {
    /// The caller's merchant; 403 unless the caller is a merchant user.
    pub fn require_merchant(&self) -> Result<MerchantId, ApiError> {
        match (self.role, self.merchant_id) {
            (Role::Merchant, Some(m)) => Ok(m),
            _ => Err(forbidden("merchant")),
        }
    }

    /// 403 unless the caller is an operator.
    pub fn require_operator(&self) -> Result<(), ApiError> {
        if self.role == Role::Operator {
            Ok(())
        } else {
            Err(forbidden("operator"))
        }
    }

    /// 403 unless the caller is a driver.
    pub fn require_driver(&self) -> Result<(), ApiError> {
        if self.role == Role::Driver {
            Ok(())
        } else {
            Err(forbidden("driver"))
        }
    }
}

fn missing_token() -> ApiError {
    ApiError::from(EngineError::Unauthenticated {
        code: "token_missing",
        message: "send `Authorization: Bearer <token>` with the token from POST /api/auth/login"
            .into(),
    })
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(missing_token)?;
        let p = st.lastmile.verify_token(token)?;
        Ok(AuthUser {
            user_id: p.user_id,
            merchant_id: p.merchant_id,
            role: p.role,
        })
    }
}

/// Who registers: the admin token or an operator's JWT make an operator; nothing makes an
/// anonymous caller; anything else presented is refused (401), not silently ignored.
async fn registrar(parts: &Parts, st: &AppState) -> Result<Registrar, ApiError> {
    let Some(token) = bearer(parts) else {
        return Ok(Registrar::Anonymous);
    };
    if !st.admin_token.is_empty() && bool::from(token.as_bytes().ct_eq(st.admin_token.as_bytes())) {
        return Ok(Registrar::Operator);
    }
    let p = st.lastmile.verify_token(token)?;
    Ok(if p.role == Role::Operator {
        Registrar::Operator
    } else {
        Registrar::Anonymous
    })
}

/// The registrar of a request, as an extractor.
pub struct By(Registrar);

impl FromRequestParts<AppState> for By {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        registrar(parts, st).await.map(By)
    }
}

/// Registers an account and returns a token for it. Anyone may register a merchant account
/// (which creates the merchant); operators and drivers need an operator token or the admin
/// token.
#[utoipa::path(post, path = "/api/auth/register", tag = "lastmile-auth",
    request_body = RegisterRequest,
    responses((status = 201, body = TokenResponse),
              (status = 400, body = crate::routes::ErrorEnvelope),
              (status = 401, description = "`token_invalid`: a bearer token was sent and is neither the admin token nor a valid JWT", body = crate::routes::ErrorEnvelope),
              (status = 403, body = crate::routes::ErrorEnvelope),
              (status = 409, description = "email_taken", body = crate::routes::ErrorEnvelope)))]
pub async fn register(
    State(st): State<AppState>,
    By(by): By,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<Response, ApiError> {
    let out = st.lastmile.register(body, by).await?;
    Ok(crate::routes::json(StatusCode::CREATED, &out))
}

/// Exchanges email and password for a token (valid 7 days by default).
#[utoipa::path(post, path = "/api/auth/login", tag = "lastmile-auth",
    request_body = LoginRequest,
    responses((status = 200, body = TokenResponse),
              (status = 401, description = "invalid_credentials", body = crate::routes::ErrorEnvelope)))]
pub async fn login(
    State(st): State<AppState>,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let out = st.lastmile.login(body).await?;
    Ok(crate::routes::json(StatusCode::OK, &out))
}

/// The logged-in user.
#[utoipa::path(get, path = "/api/auth/me", tag = "lastmile-auth",
    security(("bearer_jwt" = [])),
    responses((status = 200, body = UserView),
              (status = 401, body = crate::routes::ErrorEnvelope)))]
pub async fn me(State(st): State<AppState>, user: AuthUser) -> Result<Response, ApiError> {
    let u = st.lastmile.user(user.user_id).await?;
    let view = st.lastmile.user_view(&u).await?;
    Ok(crate::routes::json(StatusCode::OK, &view))
}
