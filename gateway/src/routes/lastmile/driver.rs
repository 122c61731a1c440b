//! The driver's OTP check at the door. Rate limits, lock-out and the attempt log are the
//! engine's (`ipay_lastmile::sessions`); this handler only extracts and maps. The OTP
//! in the body is never logged: [`VerifyOtpRequest`]'s `Debug` masks it.

use super::auth::AuthUser;
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::ApiJson;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use ipay_lastmile::sessions::{Driver, VerifyOtpRequest, VerifyOtpResponse};

/// Checks the consumer's 4-digit OTP for an 18-digit reference. Correct: the parcel is
/// released and delivered (`session.otp_verified`, `parcel.delivered`). Wrong: 400
/// `otp_incorrect`; the 5th wrong OTP locks the reference (423 `otp_locked`) until an operator
/// unlocks it. Each driver may try `driver_attempts_per_minute` times a minute (429 +
/// `Retry-After`).
#[utoipa::path(post, path = "/api/driver/verify-otp", tag = "lastmile-driver",
    security(("bearer_jwt" = [])), request_body = VerifyOtpRequest,
    responses((status = 200, body = VerifyOtpResponse),
              (status = 400, description = "otp_incorrect | reference_invalid", body = crate::routes::ErrorEnvelope),
              (status = 403, description = "not a driver", body = crate::routes::ErrorEnvelope),
              (status = 404, body = crate::routes::ErrorEnvelope),
              (status = 409, description = "session_not_paid | parcel_not_picked_up", body = crate::routes::ErrorEnvelope),
              (status = 423, description = "otp_locked", body = crate::routes::ErrorEnvelope),
              (status = 429, description = "rate_limited", body = crate::routes::ErrorEnvelope)))]
pub async fn verify_otp(
    State(st): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<VerifyOtpRequest>,
) -> Result<Response, ApiError> {
    user.require_driver()?;
    let driver = Driver {
        user_id: user.user_id.to_string(),
        merchant_id: user.merchant_id,
    };
    let out = st.lastmile.verify_otp(&driver, body).await?;
    Ok(crate::routes::json(StatusCode::OK, &out))
}
