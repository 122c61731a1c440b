//! Payment sessions over HTTP for merchants and operators: create a session for an order (with
//! its QR code), list and read sessions, move the parcel, unlock a locked OTP. Handlers extract,
//! call `LastMile` and map; the rules live in `ipay_lastmile::sessions`. QR images are
//! rendered here (`ipay_adapters::qr`) because the engine does not draw pictures.

use super::auth::{AuthUser, Role};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use ipay_engine::EngineError;
use ipay_lastmile::sessions::{
    Actor, ParcelStatusRequest, SessionDetail, SessionListParams, SessionPage, SessionView,
};
use serde::Serialize;

/// Pixels per QR module in rendered images.
const QR_MODULE_PX: u32 = 8;

/// Who the caller is for session reads and parcel moves: a merchant (its own sessions) or an
/// operator (any merchant's). Drivers use `/api/driver/verify-otp` only.
fn actor(user: &AuthUser) -> Result<Actor, ApiError> {
    match user.role {
        Role::Operator => Ok(Actor::Operator),
        _ => user.require_merchant().map(Actor::Merchant),
    }
}

/// A new session with its QR code.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedSession {
    #[serde(flatten)]
    pub session: SessionView,
    /// `data:image/png;base64,…` of the QR code of `qr_payload`.
    pub qr_png_data_url: String,
    /// The same QR code as an SVG document.
    pub qr_svg: String,
}

fn qr_error(e: ipay_adapters::qr::QrError) -> ApiError {
    ApiError::from(EngineError::Internal(format!("QR rendering failed: {e}")))
}

/// Creates the payment session of an order: an 18-digit IPAY reference, a pay URL
/// (`/pay/{token}`, 256-bit token) and its QR code. Emits `session.created`. A second call for
/// the same order returns the existing session with 200.
#[utoipa::path(post, path = "/api/orders/{id}/create-session", tag = "lastmile-sessions",
    security(("bearer_jwt" = [])), params(("id" = String, Path, description = "order id")),
    responses((status = 201, body = CreatedSession),
              (status = 200, description = "the order's existing session", body = CreatedSession),
              (status = 404, body = crate::routes::ErrorEnvelope),
              (status = 409, description = "order_not_ipay | order_cancelled", body = crate::routes::ErrorEnvelope)))]
pub async fn create(
    State(st): State<AppState>,
    user: AuthUser,
    Path(order_id): Path<String>,
) -> Result<Response, ApiError> {
    let merchant = user.require_merchant()?;
    let (session, created) = st.lastmile.create_session(merchant, &order_id).await?;
    let png = ipay_adapters::qr::png(&session.qr_payload, QR_MODULE_PX).map_err(qr_error)?;
    let qr_svg = ipay_adapters::qr::svg(&session.qr_payload, QR_MODULE_PX).map_err(qr_error)?;
    let body = CreatedSession {
        qr_png_data_url: format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(png)
        ),
        qr_svg,
        session,
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(crate::routes::json(status, &body))
}

/// The caller's sessions, newest first, filtered by country, carrier, PSP, payment method,
/// status and parcel status; keyset-paginated (`next_cursor`). Operators pass `merchant_id`.
#[utoipa::path(get, path = "/api/payment-sessions", tag = "lastmile-sessions",
    security(("bearer_jwt" = [])), params(SessionListParams),
    responses((status = 200, body = SessionPage),
              (status = 400, body = crate::routes::ErrorEnvelope)))]
pub async fn list(
    State(st): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<SessionListParams>,
) -> Result<Response, ApiError> {
    let page = st.lastmile.list_sessions(actor(&user)?, &q).await?;
    Ok(crate::routes::json(StatusCode::OK, &page))
}

/// One session with its event log (every state change and OTP attempt; never an OTP).
#[utoipa::path(get, path = "/api/payment-sessions/{id}", tag = "lastmile-sessions",
    security(("bearer_jwt" = [])), params(("id" = String, Path)),
    responses((status = 200, body = SessionDetail),
              (status = 404, body = crate::routes::ErrorEnvelope)))]
pub async fn get(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let detail = st.lastmile.session_detail(actor(&user)?, &id).await?;
    Ok(crate::routes::json(StatusCode::OK, &detail))
}

/// Moves the parcel: AWAITING_PICKUP → PICKED_UP → IN_DELIVERY → DELIVERED (DELIVERED needs
/// the driver's OTP check first). Repeating the current state changes nothing; other moves 409.
#[utoipa::path(post, path = "/api/payment-sessions/{id}/parcel-status", tag = "lastmile-sessions",
    security(("bearer_jwt" = [])), params(("id" = String, Path)),
    request_body = ParcelStatusRequest,
    responses((status = 200, body = SessionView),
              (status = 409, description = "invalid_state_transition | otp_not_verified", body = crate::routes::ErrorEnvelope)))]
pub async fn parcel_status(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ParcelStatusRequest>,
) -> Result<Response, ApiError> {
    let view = st
        .lastmile
        .set_parcel_status(actor(&user)?, &id, body)
        .await?;
    Ok(crate::routes::json(StatusCode::OK, &view))
}

/// Operators: clears the wrong-OTP count and the lock of a session (after 5 wrong OTPs the
/// reference answers 423 until this is called). Logged in the session's event log.
#[utoipa::path(post, path = "/api/payment-sessions/{id}/unlock-otp", tag = "lastmile-sessions",
    security(("bearer_jwt" = [])), params(("id" = String, Path)),
    responses((status = 200, body = SessionView),
              (status = 403, body = crate::routes::ErrorEnvelope),
              (status = 404, body = crate::routes::ErrorEnvelope)))]
pub async fn unlock_otp(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    user.require_operator()?;
    let view = st
        .lastmile
        .unlock_otp(&id, &user.user_id.to_string())
        .await?;
    Ok(crate::routes::json(StatusCode::OK, &view))
}

async fn qr_image(
    st: &AppState,
    user: &AuthUser,
    id: &str,
    svg: bool,
) -> Result<Response, ApiError> {
    let detail = st.lastmile.session_detail(actor(user)?, id).await?;
    let payload = &detail.session.qr_payload;
    let (body, ctype) = if svg {
        (
            ipay_adapters::qr::svg(payload, QR_MODULE_PX)
                .map_err(qr_error)?
                .into_bytes(),
            "image/svg+xml",
        )
    } else {
        (
            ipay_adapters::qr::png(payload, QR_MODULE_PX).map_err(qr_error)?,
            "image/png",
        )
    };
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    Ok(r)
}

/// The session's QR code (the pay URL) as a PNG.
#[utoipa::path(get, path = "/api/payment-sessions/{id}/qr.png", tag = "lastmile-sessions",
    security(("bearer_jwt" = [])), params(("id" = String, Path)),
    responses((status = 200, content_type = "image/png", description = "QR code"),
              (status = 404, body = crate::routes::ErrorEnvelope)))]
pub async fn qr_png(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    qr_image(&st, &user, &id, false).await
}

/// The session's QR code (the pay URL) as an SVG.
#[utoipa::path(get, path = "/api/payment-sessions/{id}/qr.svg", tag = "lastmile-sessions",
    security(("bearer_jwt" = [])), params(("id" = String, Path)),
    responses((status = 200, content_type = "image/svg+xml", description = "QR code"),
              (status = 404, body = crate::routes::ErrorEnvelope)))]
pub async fn qr_svg(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    qr_image(&st, &user, &id, true).await
}
