//! Locker carriers over HTTP: issuing a parcel's pickup code, the locker's pickup check, and
//! the consumer's view of its locker code. Carrier calls are signed with `X-IPAY-Signature`
//! (checked over the raw body before it is parsed); the rules live in `ipay_lastmile::lockers`.

use super::auth::AuthUser;
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, parse_json};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use ipay_engine::EngineError;
use ipay_lastmile::lockers::{
    self, ConsumerLocker, IssueCodeRequest, IssuedCode, PickedUp, PickupRequest, UnlockRequest,
    UnlockedCode,
};

fn signature(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(lockers::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
}

async fn issue(
    st: &AppState,
    path_carrier: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    // With the carrier in the path, nothing is parsed before its signature checks out.
    if let Some(p) = path_carrier {
        let carrier = lockers::carrier_of(p)?;
        st.lastmile
            .verify_locker_signature(carrier, body, signature(headers))?;
    }
    let req: IssueCodeRequest = parse_json(body)?;
    let named = match (path_carrier, req.carrier.as_deref()) {
        (Some(p), None) => p,
        (Some(p), Some(b)) if lockers::carrier_of(b)? == lockers::carrier_of(p)? => p,
        (Some(_), Some(_)) => {
            return Err(ApiError::from(EngineError::invalid(
                "parameter_invalid",
                "carrier",
                "carrier in the body differs from the path",
            )));
        }
        (None, Some(b)) => b,
        (None, None) => {
            return Err(ApiError::from(EngineError::invalid(
                "parameter_missing",
                "carrier",
                "name the carrier: dpd, ups, postnl, inpost or allegro_one",
            )));
        }
    };
    let carrier = lockers::carrier_of(named)?;
    st.lastmile
        .verify_locker_signature(carrier, body, signature(headers))?;
    let out = st.lastmile.issue_locker_code(carrier, req).await?;
    Ok(crate::routes::json(StatusCode::OK, &out))
}

/// A carrier put a paid parcel into a locker: issues its pickup code to the consumer
/// (`locker.code_issued`). The code is never in this answer.
#[utoipa::path(post, path = "/api/lockers/{carrier}/issue-code", tag = "lastmile-lockers",
    params(("carrier" = String, Path, description = "dpd | ups | postnl | inpost | allegro_one"),
           ("X-IPAY-Signature" = String, Header, description = "hex HMAC-SHA256 of the body with the carrier's secret")),
    request_body = IssueCodeRequest,
    responses((status = 200, body = IssuedCode),
              (status = 400, description = "reference_invalid | parameter_invalid | invalid_json", body = crate::routes::ErrorEnvelope),
              (status = 401, description = "webhook_signature_invalid", body = crate::routes::ErrorEnvelope),
              (status = 404, description = "unknown carrier or reference", body = crate::routes::ErrorEnvelope),
              (status = 409, description = "session_not_paid | parcel_not_picked_up | invalid_state_transition", body = crate::routes::ErrorEnvelope)))]
pub async fn issue_code(
    State(st): State<AppState>,
    Path(carrier): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    issue(&st, Some(&carrier), &headers, &body).await
}

/// The same, with the carrier named in the body (`carrier`).
#[utoipa::path(post, path = "/api/lockers/issue-code", tag = "lastmile-lockers",
    params(("X-IPAY-Signature" = String, Header, description = "hex HMAC-SHA256 of the body with the carrier's secret")),
    request_body = IssueCodeRequest,
    responses((status = 200, body = IssuedCode),
              (status = 400, description = "parameter_missing | reference_invalid | parameter_invalid", body = crate::routes::ErrorEnvelope),
              (status = 401, description = "webhook_signature_invalid", body = crate::routes::ErrorEnvelope),
              (status = 404, body = crate::routes::ErrorEnvelope),
              (status = 409, description = "session_not_paid | parcel_not_picked_up | invalid_state_transition", body = crate::routes::ErrorEnvelope)))]
pub async fn issue_code_any(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    issue(&st, None, &headers, &body).await
}

/// The locker checks the code the consumer typed. Right: the parcel is released and delivered
/// (`session.otp_verified`, `parcel.delivered`). Wrong: 400 `locker_code_incorrect`; the 5th
/// wrong code locks it (423 `locker_code_locked`).
#[utoipa::path(post, path = "/api/lockers/{carrier}/pickup", tag = "lastmile-lockers",
    params(("carrier" = String, Path, description = "dpd | ups | postnl | inpost | allegro_one"),
           ("X-IPAY-Signature" = String, Header, description = "hex HMAC-SHA256 of the body with the carrier's secret")),
    request_body = PickupRequest,
    responses((status = 200, body = PickedUp),
              (status = 400, description = "locker_code_incorrect | reference_invalid | parameter_invalid", body = crate::routes::ErrorEnvelope),
              (status = 401, description = "webhook_signature_invalid", body = crate::routes::ErrorEnvelope),
              (status = 404, body = crate::routes::ErrorEnvelope),
              (status = 409, description = "locker_code_not_issued | invalid_state_transition", body = crate::routes::ErrorEnvelope),
              (status = 423, description = "locker_code_locked", body = crate::routes::ErrorEnvelope)))]
pub async fn pickup(
    State(st): State<AppState>,
    Path(carrier): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let carrier = lockers::carrier_of(&carrier)?;
    st.lastmile
        .verify_locker_signature(carrier, &body, signature(&headers))?;
    let req: PickupRequest = parse_json(&body)?;
    let out = st.lastmile.locker_pickup(carrier, req).await?;
    Ok(crate::routes::json(StatusCode::OK, &out))
}

/// The consumer's locker: where the parcel waits and, while it waits, the pickup code.
#[utoipa::path(get, path = "/api/session/{token}/locker", tag = "lastmile-consumer",
    params(("token" = String, Path, description = "the pay token of the pay URL")),
    responses((status = 200, body = ConsumerLocker),
              (status = 404, description = "unknown token, or no locker assigned", body = crate::routes::ErrorEnvelope)))]
pub async fn consumer_locker(
    State(st): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let out = st
        .lastmile
        .consumer_locker(&token)
        .await?
        .ok_or_else(|| EngineError::not_found("locker assignment", "(token)"))?;
    Ok(crate::routes::json(StatusCode::OK, &out))
}

/// Operators: clears a parcel's wrong-code count and lock after `locker_code_locked`.
#[utoipa::path(post, path = "/api/lockers/unlock", tag = "lastmile-lockers",
    security(("bearer_jwt" = [])), request_body = UnlockRequest,
    responses((status = 200, body = UnlockedCode),
              (status = 400, body = crate::routes::ErrorEnvelope),
              (status = 401, body = crate::routes::ErrorEnvelope),
              (status = 403, description = "not an operator", body = crate::routes::ErrorEnvelope),
              (status = 404, description = "unknown reference, or no locker assigned", body = crate::routes::ErrorEnvelope)))]
pub async fn unlock(
    State(st): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<UnlockRequest>,
) -> Result<Response, ApiError> {
    user.require_operator()?;
    let out = st
        .lastmile
        .unlock_locker_code(body, &user.user_id.to_string())
        .await?;
    Ok(crate::routes::json(StatusCode::OK, &out))
}
