//! Returns over HTTP: opening a return (consumer with the pay token, or the merchant), the
//! consumer's return portal, the merchant's listing, rejection and refund retry, the Sendcloud
//! label with the IPAY composite PDF, and Sendcloud's signed webhooks. Handlers extract, call
//! `LastMile` and map; the rules live in `ipay_lastmile::returns`.

use super::auth::{AuthUser, Role};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, bearer};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use ipay_adapters::sendcloud::SIGNATURE_HEADER;
use ipay_lastmile::returns::inbound::SendcloudOutcome;
use ipay_lastmile::returns::label::{CreateLabelRequest, LabelCaller, ReturnLabel};
use ipay_lastmile::returns::open::OpenedByConsumer;
use ipay_lastmile::returns::{
    OpenReturnRequest, ReturnListParams, ReturnPage, ReturnPortal, ReturnView,
};
use ipay_lastmile::sessions::Actor;
use serde::Serialize;

/// The caller of a route open to consumers: a logged-in user when a bearer token is sent
/// (a wrong one is 401, never silently ignored), else the consumer.
pub struct MaybeUser(pub Option<AuthUser>);

impl axum::extract::FromRequestParts<AppState> for MaybeUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        if bearer(parts).is_none() {
            return Ok(MaybeUser(None));
        }
        AuthUser::from_request_parts(parts, st)
            .await
            .map(|u| MaybeUser(Some(u)))
    }
}

fn actor(user: &AuthUser) -> Result<Actor, ApiError> {
    match user.role {
        Role::Operator => Ok(Actor::Operator),
        _ => user.require_merchant().map(Actor::Merchant),
    }
}

fn created_or_ok(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

/// Opens a return for a paid, delivered parcel. A consumer (no login) gives `session_token`,
/// the pay token of its pay link, and gets the portal token; a merchant (JWT) gives
/// `session_id`. Emits `return.opened`. Opening again answers the open return with 200.
#[utoipa::path(post, path = "/api/returns/open", tag = "lastmile-returns",
    security((), ("bearer_jwt" = [])), request_body = OpenReturnRequest,
    responses((status = 201, description = "consumer: the portal; merchant: the return", body = OpenedByConsumer),
              (status = 200, description = "the parcel's open return", body = ReturnView),
              (status = 400, description = "parameter_missing | parameter_invalid", body = crate::routes::ErrorEnvelope),
              (status = 401, body = crate::routes::ErrorEnvelope),
              (status = 403, body = crate::routes::ErrorEnvelope),
              (status = 404, body = crate::routes::ErrorEnvelope),
              (status = 409, description = "parcel_not_delivered | return_window_closed", body = crate::routes::ErrorEnvelope)))]
pub async fn open(
    State(st): State<AppState>,
    MaybeUser(user): MaybeUser,
    ApiJson(body): ApiJson<OpenReturnRequest>,
) -> Result<Response, ApiError> {
    match user {
        None => {
            let (out, created) = st.lastmile.open_return_consumer(body).await?;
            Ok(crate::routes::json(created_or_ok(created), &out))
        }
        Some(u) => {
            let merchant = u.require_merchant()?;
            let (out, created) = st.lastmile.open_return_merchant(merchant, body).await?;
            Ok(crate::routes::json(created_or_ok(created), &out))
        }
    }
}

/// The consumer's return portal (no login: the return token is the credential). The path's
/// `{id}` is the return token, the spec's `/api/returns/{token}` (one name per path position).
#[utoipa::path(get, path = "/api/returns/{id}", tag = "lastmile-returns",
    params(("id" = String, Path, description = "the return token (`return_token` from opening the return)")),
    responses((status = 200, body = ReturnPortal),
              (status = 404, body = crate::routes::ErrorEnvelope)))]
pub async fn portal(
    State(st): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let view = st.lastmile.return_portal_view(&token).await?;
    Ok(crate::routes::json(StatusCode::OK, &view))
}

/// The merchant's returns, newest first, optionally of one status; keyset-paginated.
#[utoipa::path(get, path = "/api/returns", tag = "lastmile-returns",
    security(("bearer_jwt" = [])), params(ReturnListParams),
    responses((status = 200, body = ReturnPage),
              (status = 400, body = crate::routes::ErrorEnvelope),
              (status = 401, body = crate::routes::ErrorEnvelope),
              (status = 403, body = crate::routes::ErrorEnvelope)))]
pub async fn list(
    State(st): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<ReturnListParams>,
) -> Result<Response, ApiError> {
    let merchant = user.require_merchant()?;
    let page = st.lastmile.list_returns(merchant, &q).await?;
    Ok(crate::routes::json(StatusCode::OK, &page))
}

/// The merchant refuses a return (before its refund was started).
#[utoipa::path(post, path = "/api/returns/{id}/reject", tag = "lastmile-returns",
    security(("bearer_jwt" = [])), params(("id" = String, Path, description = "return id")),
    responses((status = 200, body = ReturnView),
              (status = 401, body = crate::routes::ErrorEnvelope),
              (status = 403, body = crate::routes::ErrorEnvelope),
              (status = 404, body = crate::routes::ErrorEnvelope),
              (status = 409, description = "invalid_state_transition", body = crate::routes::ErrorEnvelope)))]
pub async fn reject(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let view = st.lastmile.reject_return(actor(&user)?, &id).await?;
    Ok(crate::routes::json(StatusCode::OK, &view))
}

/// Refunds a received return now: checks a pending refund with the engine, or retries a
/// failed one. 409 before the return is received or once it is refunded or rejected.
#[utoipa::path(post, path = "/api/returns/{id}/refund", tag = "lastmile-returns",
    security(("bearer_jwt" = [])), params(("id" = String, Path, description = "return id")),
    responses((status = 200, body = ReturnView),
              (status = 401, body = crate::routes::ErrorEnvelope),
              (status = 403, body = crate::routes::ErrorEnvelope),
              (status = 404, body = crate::routes::ErrorEnvelope),
              (status = 409, description = "invalid_state_transition", body = crate::routes::ErrorEnvelope),
              (status = 503, body = crate::routes::ErrorEnvelope)))]
pub async fn refund(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let view = st.lastmile.retry_return_refund(actor(&user)?, &id).await?;
    Ok(crate::routes::json(StatusCode::OK, &view))
}

/// A created (or re-fetched) label with the return it belongs to.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LabelResponse {
    #[serde(flatten)]
    pub label: ReturnLabel,
    /// The return after the label (absent for consumers, who see the portal).
    #[serde(rename = "return")]
    #[schema(rename = "return")]
    pub return_view: Option<ReturnView>,
}

/// Creates the return's Sendcloud label (a return parcel with `request_label`) and answers it
/// with the IPAY composite PDF (the label with an emerald band: QR code and warning). The
/// merchant names `return_id`; a consumer gives `return_token`. A return that has its label
/// answers it again (200).
#[utoipa::path(post, path = "/api/labels/create", tag = "lastmile-returns",
    security((), ("bearer_jwt" = [])), request_body = CreateLabelRequest,
    responses((status = 201, body = LabelResponse),
              (status = 200, description = "the return's existing label", body = LabelResponse),
              (status = 400, body = crate::routes::ErrorEnvelope),
              (status = 401, body = crate::routes::ErrorEnvelope),
              (status = 404, body = crate::routes::ErrorEnvelope),
              (status = 409, description = "invalid_state_transition", body = crate::routes::ErrorEnvelope),
              (status = 503, description = "channel_unavailable (Sendcloud)", body = crate::routes::ErrorEnvelope)))]
pub async fn create_label(
    State(st): State<AppState>,
    MaybeUser(user): MaybeUser,
    ApiJson(body): ApiJson<CreateLabelRequest>,
) -> Result<Response, ApiError> {
    let caller = match &user {
        None => LabelCaller::Consumer,
        Some(u) if u.role == Role::Operator => LabelCaller::Operator,
        Some(u) => LabelCaller::Merchant(u.require_merchant()?),
    };
    let consumer = matches!(caller, LabelCaller::Consumer);
    let (label, view, created) = st.lastmile.create_return_label(caller, body).await?;
    let out = LabelResponse {
        label,
        return_view: (!consumer).then_some(view),
    };
    Ok(crate::routes::json(created_or_ok(created), &out))
}

/// Sendcloud's webhook (`parcel_status_changed`), signed with `Sendcloud-Signature`: moves
/// the return to in transit or received (which refunds it). 401 unless the signature checks
/// out; deliveries that move nothing answer 200 with `handled: false`.
#[utoipa::path(post, path = "/api/webhooks/sendcloud/returns", tag = "lastmile-returns",
    params(("Sendcloud-Signature" = String, Header, description = "hex HMAC-SHA256 of the body with the Sendcloud secret key")),
    request_body(content = String, content_type = "application/json", description = "Sendcloud's webhook JSON"),
    responses((status = 200, body = SendcloudOutcome),
              (status = 400, description = "body_invalid", body = crate::routes::ErrorEnvelope),
              (status = 401, description = "webhook_signature_invalid", body = crate::routes::ErrorEnvelope)))]
pub async fn sendcloud_webhook(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let sig = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let out = st.lastmile.sendcloud_webhook(&body, sig).await?;
    Ok(crate::routes::json(StatusCode::OK, &out))
}

/// The same webhook at the integrations path the webhook directory names.
#[utoipa::path(post, path = "/api/integrations/sendcloud/webhook", tag = "lastmile-returns",
    params(("Sendcloud-Signature" = String, Header, description = "hex HMAC-SHA256 of the body with the Sendcloud secret key")),
    request_body(content = String, content_type = "application/json", description = "Sendcloud's webhook JSON"),
    responses((status = 200, body = SendcloudOutcome),
              (status = 400, description = "body_invalid", body = crate::routes::ErrorEnvelope),
              (status = 401, description = "webhook_signature_invalid", body = crate::routes::ErrorEnvelope)))]
pub async fn sendcloud_integration_webhook(
    st: State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    sendcloud_webhook(st, headers, body).await
}
