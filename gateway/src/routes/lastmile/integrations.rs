//! Shop-platform integrations over HTTP: connect, status, simulate, and the inbound webhook
//! `POST /api/integrations/{provider}/webhook` (no login: the platform's signature is the
//! credential; the shop it names, or `?account={merchant_id}`, finds the connection). Signatures, mapping and de-duplication are the engine's
//! (`ipay_lastmile::shops`).

use super::auth::AuthUser;
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiQuery, OptionalJson};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use ipay_lastmile::shops::{ConnectRequest, ConnectionView, Delivery, WebhookOutcome};
use serde::Deserialize;

/// Largest webhook body accepted (a large Shopify order is tens of KiB).
pub const WEBHOOK_MAX_BYTES: usize = 1024 * 1024;

/// Saves the merchant's signing secret for a platform (generated when omitted, then shown
/// once); afterwards only a masked form is shown.
#[utoipa::path(post, path = "/api/integrations/{provider}/connect", tag = "lastmile-integrations",
    security(("bearer_jwt" = [])), params(("provider" = String, Path)), request_body = ConnectRequest,
    responses((status = 200, body = ConnectionView), (status = 400, description = "parameter_invalid", body = crate::routes::ErrorEnvelope),
              (status = 404, body = crate::routes::ErrorEnvelope),
              (status = 409, description = "shop_already_connected: another merchant holds this shop", body = crate::routes::ErrorEnvelope)))]
pub async fn connect(
    State(st): State<AppState>,
    user: AuthUser,
    Path(provider): Path<String>,
    OptionalJson(body): OptionalJson<ConnectRequest>,
) -> Result<Response, ApiError> {
    let merchant = user.require_merchant()?;
    let view = st.lastmile.connect_shop(merchant, &provider, body).await?;
    Ok(crate::routes::json(StatusCode::OK, &view))
}

/// Every platform with this merchant's connection state, webhook URL and signature scheme.
#[utoipa::path(get, path = "/api/integrations/status", tag = "lastmile-integrations",
    security(("bearer_jwt" = [])),
    responses((status = 200, description = "{data: [ConnectionView]}")))]
pub async fn status(State(st): State<AppState>, user: AuthUser) -> Result<Response, ApiError> {
    let merchant = user.require_merchant()?;
    let data = st.lastmile.shop_status(merchant).await?;
    Ok(crate::routes::json(
        StatusCode::OK,
        &serde_json::json!({ "data": data }),
    ))
}

fn outcome(o: WebhookOutcome) -> Response {
    let status = if o.result == "created" {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    crate::routes::json(status, &o)
}

/// Fires a realistic sample order of the platform through the webhook path, signed with the
/// stored secret.
#[utoipa::path(post, path = "/api/integrations/{provider}/simulate", tag = "lastmile-integrations",
    security(("bearer_jwt" = [])), params(("provider" = String, Path)),
    responses((status = 201, body = WebhookOutcome), (status = 409, description = "integration_not_connected", body = crate::routes::ErrorEnvelope)))]
pub async fn simulate(
    State(st): State<AppState>,
    user: AuthUser,
    Path(provider): Path<String>,
) -> Result<Response, ApiError> {
    let merchant = user.require_merchant()?;
    Ok(outcome(
        st.lastmile.simulate_shop(merchant, &provider).await?,
    ))
}

/// Query of the inbound webhook.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct WebhookQuery {
    /// The merchant id, from `webhook_url` in the status. Not needed when the delivery names a
    /// shop connected with `shop_domain` (all platforms but Magento, PrestaShop and Odoo).
    pub account: Option<String>,
    /// Odoo only: the connection secret.
    pub token: Option<String>,
}

/// Inbound order webhook of a shop platform. 401 (nothing stored) unless the signature checks
/// out; a repeated delivery answers 200 `duplicate_delivery`/`duplicate_order`.
#[utoipa::path(post, path = "/api/integrations/{provider}/webhook", tag = "lastmile-integrations",
    params(("provider" = String, Path), WebhookQuery),
    request_body(content = String, content_type = "application/json", description = "the platform's order JSON"),
    responses((status = 201, body = WebhookOutcome), (status = 200, body = WebhookOutcome),
              (status = 400, description = "webhook_payload_invalid", body = crate::routes::ErrorEnvelope),
              (status = 401, description = "webhook_signature_invalid", body = crate::routes::ErrorEnvelope)))]
pub async fn webhook(
    State(st): State<AppState>,
    Path(provider): Path<String>,
    ApiQuery(q): ApiQuery<WebhookQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let out = st
        .lastmile
        .shop_webhook(
            &provider,
            Delivery {
                account: q.account.as_deref(),
                token: q.token.as_deref(),
                headers: &headers,
                body: &body,
            },
        )
        .await?;
    Ok(outcome(out))
}
