//! Shop and marketplace integrations over HTTP: connect, status, setup-info, sync, disconnect,
//! simulate, the inbound webhook `POST /api/integrations/{provider}/webhook` (no login: the
//! platform's signature is the credential; the shop it names, or `?account={merchant_id}`, finds
//! the connection) and the sync scheduler's admin routes. Webhook shops' rules are
//! `ipay_lastmile::shops`; pulled marketplaces' (bol.com, AliExpress, Temu) and the scheduler's
//! are `ipay_lastmile::sync`.

use super::auth::AuthUser;
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiQuery, parse_json};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use ipay_adapters::marketplaces::Marketplace;
use ipay_adapters::shops::Provider;
use ipay_lastmile::shops::{ConnectRequest, ConnectionView, Delivery, WebhookOutcome};
use ipay_lastmile::sync::scheduler::{PassReport, SchedulerStatus};
use ipay_lastmile::sync::{self, MarketConnectRequest, MarketView, SetupInfo, SyncOutcome};
use serde::{Deserialize, Serialize};

/// Largest webhook body accepted (a large Shopify order is tens of KiB).
pub const WEBHOOK_MAX_BYTES: usize = 1024 * 1024;

/// Connects a platform. Webhook shops: saves the signing secret (generated when omitted,
/// then shown once; afterwards masked). Pulled marketplaces (`bol`, `aliexpress`, `temu`):
/// checks the credentials against the platform first; a refusal stores nothing.
#[utoipa::path(post, path = "/api/integrations/{provider}/connect", tag = "lastmile-integrations",
    security(("bearer_jwt" = [])), params(("provider" = String, Path)),
    request_body(content = ConnectRequest, description = "webhook shops: ConnectRequest; bol, aliexpress, temu: MarketConnectRequest"),
    responses((status = 200, description = "ConnectionView (webhook shops) or MarketView (marketplaces)", body = ProviderState),
              (status = 400, description = "parameter_missing | parameter_invalid | parameter_unknown | invalid_json | integration_credentials_rejected (the platform refused the credentials; nothing stored)", body = crate::routes::ErrorEnvelope),
              (status = 401, description = "token_missing | token_invalid", body = crate::routes::ErrorEnvelope),
              (status = 403, description = "role_forbidden", body = crate::routes::ErrorEnvelope),
              (status = 404, description = "unknown provider", body = crate::routes::ErrorEnvelope),
              (status = 409, description = "shop_already_connected: another merchant holds this shop", body = crate::routes::ErrorEnvelope),
              (status = 503, description = "channel_unavailable: the platform could not be reached; nothing stored", body = crate::routes::ErrorEnvelope)))]
pub async fn connect(
    State(st): State<AppState>,
    user: AuthUser,
    Path(provider): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let merchant = user.require_merchant()?;
    let empty = body.iter().all(u8::is_ascii_whitespace);
    if let Some(m) = Marketplace::parse(&provider) {
        let req: MarketConnectRequest = if empty {
            MarketConnectRequest::default()
        } else {
            parse_json(&body)?
        };
        let view = st.lastmile.connect_market(merchant, m, req).await?;
        return Ok(crate::routes::json(StatusCode::OK, &view));
    }
    let req: ConnectRequest = if empty {
        ConnectRequest::default()
    } else {
        parse_json(&body)?
    };
    let view = st.lastmile.connect_shop(merchant, &provider, req).await?;
    Ok(crate::routes::json(StatusCode::OK, &view))
}

/// One platform's connection state for this merchant.
#[utoipa::path(get, path = "/api/integrations/{provider}/", tag = "lastmile-integrations",
    security(("bearer_jwt" = [])), params(("provider" = String, Path)),
    responses((status = 200, description = "ConnectionView (webhook shops) or MarketView (marketplaces)", body = ProviderState),
              (status = 401, description = "token_missing | token_invalid", body = crate::routes::ErrorEnvelope),
              (status = 403, description = "role_forbidden", body = crate::routes::ErrorEnvelope),
              (status = 404, description = "unknown provider", body = crate::routes::ErrorEnvelope)))]
pub async fn provider_status(
    State(st): State<AppState>,
    user: AuthUser,
    Path(provider): Path<String>,
) -> Result<Response, ApiError> {
    let merchant = user.require_merchant()?;
    if let Some(m) = Marketplace::parse(&provider) {
        let view = st.lastmile.market_status(merchant, m).await?;
        return Ok(crate::routes::json(StatusCode::OK, &view));
    }
    let p = Provider::parse(&provider)?;
    let view = st
        .lastmile
        .shop_status(merchant)
        .await?
        .into_iter()
        .find(|v| v.provider == p.as_str())
        .ok_or_else(|| ipay_engine::EngineError::not_found("provider", &provider))?;
    Ok(crate::routes::json(StatusCode::OK, &view))
}

/// One platform's connection state (the same as `GET /api/integrations/{provider}/`).
#[utoipa::path(get, path = "/api/integrations/{provider}", tag = "lastmile-integrations",
    security(("bearer_jwt" = [])), params(("provider" = String, Path)),
    responses((status = 200, description = "ConnectionView (webhook shops) or MarketView (marketplaces)", body = ProviderState),
              (status = 401, description = "token_missing | token_invalid", body = crate::routes::ErrorEnvelope),
              (status = 403, description = "role_forbidden", body = crate::routes::ErrorEnvelope),
              (status = 404, description = "unknown provider", body = crate::routes::ErrorEnvelope)))]
pub async fn provider_status_no_slash(
    st: State<AppState>,
    user: AuthUser,
    provider: Path<String>,
) -> Result<Response, ApiError> {
    provider_status(st, user, provider).await
}

/// Where to obtain a platform's credentials, the scopes they need, the fields connect
/// requires and how requests or deliveries are signed.
#[utoipa::path(get, path = "/api/integrations/{provider}/setup-info", tag = "lastmile-integrations",
    security(("bearer_jwt" = [])), params(("provider" = String, Path)),
    responses((status = 200, body = SetupInfo),
              (status = 401, description = "token_missing | token_invalid", body = crate::routes::ErrorEnvelope),
              (status = 403, description = "role_forbidden", body = crate::routes::ErrorEnvelope),
              (status = 404, description = "unknown provider", body = crate::routes::ErrorEnvelope)))]
pub async fn setup_info(
    State(st): State<AppState>,
    user: AuthUser,
    Path(provider): Path<String>,
) -> Result<Response, ApiError> {
    let merchant = user.require_merchant()?;
    let info = match Marketplace::parse(&provider) {
        Some(m) => sync::market_setup(m, &st.lastmile.config().sync),
        None => sync::shop_setup(Provider::parse(&provider)?, merchant),
    };
    Ok(crate::routes::json(StatusCode::OK, &info))
}

/// Pulls recent orders from a marketplace now (limit 50); each platform order is imported
/// once, so repeating a sync imports nothing new. Webhook shops push instead (409).
#[utoipa::path(post, path = "/api/integrations/{provider}/sync", tag = "lastmile-integrations",
    security(("bearer_jwt" = [])), params(("provider" = String, Path)),
    responses((status = 200, body = SyncOutcome),
              (status = 400, description = "integration_credentials_rejected: the platform refused the stored credentials (reconnect)", body = crate::routes::ErrorEnvelope),
              (status = 401, description = "token_missing | token_invalid", body = crate::routes::ErrorEnvelope),
              (status = 403, description = "role_forbidden", body = crate::routes::ErrorEnvelope),
              (status = 404, description = "unknown provider", body = crate::routes::ErrorEnvelope),
              (status = 409, description = "integration_not_connected | sync_in_progress | sync_not_supported (webhook shops push their orders)", body = crate::routes::ErrorEnvelope),
              (status = 503, description = "channel_unavailable: the platform failed; the scheduler retries with back-off", body = crate::routes::ErrorEnvelope)))]
pub async fn sync(
    State(st): State<AppState>,
    user: AuthUser,
    Path(provider): Path<String>,
) -> Result<Response, ApiError> {
    let merchant = user.require_merchant()?;
    let Some(m) = Marketplace::parse(&provider) else {
        let p = Provider::parse(&provider)?;
        return Err(ipay_engine::EngineError::Conflict {
            code: "sync_not_supported",
            message: format!(
                "{} pushes its orders by webhook; configure the webhook_url from \
                 GET /api/integrations/{}/setup-info",
                p.as_str(),
                p.as_str()
            ),
        }
        .into());
    };
    let out = st.lastmile.sync_market(merchant, m).await?;
    Ok(crate::routes::json(StatusCode::OK, &out))
}

/// Removes the merchant's connection to a platform; orders already imported stay.
#[utoipa::path(post, path = "/api/integrations/{provider}/disconnect", tag = "lastmile-integrations",
    security(("bearer_jwt" = [])), params(("provider" = String, Path)),
    responses((status = 200, description = "the connection state afterwards (ConnectionView or MarketView)", body = ProviderState),
              (status = 401, description = "token_missing | token_invalid", body = crate::routes::ErrorEnvelope),
              (status = 403, description = "role_forbidden", body = crate::routes::ErrorEnvelope),
              (status = 404, description = "unknown provider", body = crate::routes::ErrorEnvelope),
              (status = 409, description = "integration_not_connected", body = crate::routes::ErrorEnvelope)))]
pub async fn disconnect(
    State(st): State<AppState>,
    user: AuthUser,
    Path(provider): Path<String>,
) -> Result<Response, ApiError> {
    let merchant = user.require_merchant()?;
    if let Some(m) = Marketplace::parse(&provider) {
        let view = st.lastmile.disconnect_market(merchant, m).await?;
        return Ok(crate::routes::json(StatusCode::OK, &view));
    }
    let view = st.lastmile.disconnect_shop(merchant, &provider).await?;
    Ok(crate::routes::json(StatusCode::OK, &view))
}

/// What the per-provider routes answer: a webhook shop's connection or a pulled
/// marketplace's (documentation only; the handlers serialize the views themselves).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ProviderState {
    /// Webhook shops (Shopify, WooCommerce, …).
    Shop(ConnectionView),
    /// Pulled marketplaces (bol.com, AliExpress, Temu).
    Market(MarketView),
}

/// Query of `GET /api/admin/scheduler/sync-log`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SyncLogQuery {
    /// Entries to return, newest first (1 to 100, default 100).
    pub limit: Option<usize>,
}

/// The latest sync runs of every merchant and provider, newest first (operators).
#[utoipa::path(get, path = "/api/admin/scheduler/sync-log", tag = "lastmile-integrations",
    security(("bearer_jwt" = [])), params(SyncLogQuery),
    responses((status = 200, description = "{data: [SyncLogEntry]}"),
              (status = 400, description = "parameter_invalid", body = crate::routes::ErrorEnvelope),
              (status = 401, description = "token_missing | token_invalid", body = crate::routes::ErrorEnvelope),
              (status = 403, description = "role_forbidden: operators only", body = crate::routes::ErrorEnvelope)))]
pub async fn sync_log(
    State(st): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<SyncLogQuery>,
) -> Result<Response, ApiError> {
    user.require_operator()?;
    let limit = q.limit.unwrap_or(sync::LOG_MAX);
    if limit == 0 || limit > sync::LOG_MAX {
        return Err(ipay_engine::EngineError::invalid(
            "parameter_invalid",
            "limit",
            "limit must be between 1 and 100",
        )
        .into());
    }
    let data = st.lastmile.sync_log(limit).await?;
    Ok(crate::routes::json(
        StatusCode::OK,
        &serde_json::json!({ "data": data }),
    ))
}

/// Whether this node's scheduler runs, the connections it serves and its last pass
/// (operators).
#[utoipa::path(get, path = "/api/admin/scheduler/status", tag = "lastmile-integrations",
    security(("bearer_jwt" = [])),
    responses((status = 200, body = SchedulerStatus),
              (status = 401, description = "token_missing | token_invalid", body = crate::routes::ErrorEnvelope),
              (status = 403, description = "role_forbidden: operators only", body = crate::routes::ErrorEnvelope)))]
pub async fn scheduler_status(
    State(st): State<AppState>,
    user: AuthUser,
) -> Result<Response, ApiError> {
    user.require_operator()?;
    let s = st.lastmile.scheduler_status().await?;
    Ok(crate::routes::json(StatusCode::OK, &s))
}

/// Runs a scheduler pass now: every connection due on the engine clock is synced
/// (operators).
#[utoipa::path(post, path = "/api/admin/scheduler/run-now", tag = "lastmile-integrations",
    security(("bearer_jwt" = [])),
    responses((status = 200, body = PassReport),
              (status = 401, description = "token_missing | token_invalid", body = crate::routes::ErrorEnvelope),
              (status = 403, description = "role_forbidden: operators only", body = crate::routes::ErrorEnvelope)))]
pub async fn run_now(State(st): State<AppState>, user: AuthUser) -> Result<Response, ApiError> {
    user.require_operator()?;
    let r = st.lastmile.run_scheduler_pass().await?;
    Ok(crate::routes::json(StatusCode::OK, &r))
}

/// Every platform with this merchant's connection state, webhook URL and signature scheme.
#[utoipa::path(get, path = "/api/integrations/status", tag = "lastmile-integrations",
    security(("bearer_jwt" = [])),
    responses((status = 200, description = "{data: [ConnectionView]}")))]
pub async fn status(State(st): State<AppState>, user: AuthUser) -> Result<Response, ApiError> {
    let merchant = user.require_merchant()?;
    let mut data: Vec<serde_json::Value> = Vec::new();
    for v in st.lastmile.shop_status(merchant).await? {
        data.push(
            serde_json::to_value(v)
                .map_err(|e| ApiError::from(ipay_engine::EngineError::Internal(e.to_string())))?,
        );
    }
    for v in st.lastmile.market_statuses(merchant).await? {
        data.push(
            serde_json::to_value(v)
                .map_err(|e| ApiError::from(ipay_engine::EngineError::Internal(e.to_string())))?,
        );
    }
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
