//! Settlement preferences (`/v1/merchant/settlement`), payouts (`/v1/payouts`) and
//! reconciliation reports (`/v1/reconciliation`, `/v1/reconciliation/export`). Thin: each
//! handler extracts, calls one engine method and maps the result; the report formats are the
//! engine's ([`ipay_engine::reconciliation`]).

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, Auth};
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ipay_engine::reconciliation::ExportQuery;
use ipay_engine::settlement::{Payout, PayoutStatus, SettlementPrefs, SettlementPrefsInput};
use serde::{Deserialize, Serialize};

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/merchant/settlement",
            get(get_prefs).patch(update_prefs),
        )
        .route("/v1/payouts", get(list_payouts))
        .route("/v1/reconciliation", get(reconciliation))
        .route("/v1/reconciliation/export", get(export))
}

/// This module's part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(get_prefs, update_prefs, list_payouts, reconciliation, export),
    components(schemas(SettlementPrefs, SettlementPrefsInput, Payout, PayoutStatus, PayoutList)),
    tags((name = "settlement", description = "Settlement preferences, payouts and reconciliation reports"))
)]
pub struct Doc;

/// The caller's settlement preferences.
#[utoipa::path(get, path = "/v1/merchant/settlement", tag = "settlement", security(("bearer" = [])),
    responses((status = 200, body = SettlementPrefs), (status = 403, body = super::ErrorEnvelope)))]
pub async fn get_prefs(State(st): State<AppState>, Auth(ctx): Auth) -> Result<Response, ApiError> {
    Ok(super::json(
        StatusCode::OK,
        &st.engine.settlement_prefs(&ctx).await?,
    ))
}

/// Changes the settlement currency preferred for manifests that name none, automatic
/// withdrawal, and the withdrawal threshold. Fields not given stay as they are.
#[utoipa::path(patch, path = "/v1/merchant/settlement", tag = "settlement", security(("bearer" = [])),
    request_body = SettlementPrefsInput,
    responses((status = 200, body = SettlementPrefs), (status = 400, body = super::ErrorEnvelope), (status = 403, body = super::ErrorEnvelope)))]
pub async fn update_prefs(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    ApiJson(input): ApiJson<SettlementPrefsInput>,
) -> Result<Response, ApiError> {
    Ok(super::json(
        StatusCode::OK,
        &st.engine.update_settlement_prefs(&ctx, input).await?,
    ))
}

/// Query of `GET /v1/payouts`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PayoutParams {
    /// 1 to 100, default 20.
    pub limit: Option<usize>,
}

/// `{data: [Payout]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PayoutList {
    pub data: Vec<Payout>,
}

/// The caller's payouts, newest first: one per settlement run and currency.
#[utoipa::path(get, path = "/v1/payouts", tag = "settlement", security(("bearer" = [])), params(PayoutParams),
    responses((status = 200, body = PayoutList), (status = 400, body = super::ErrorEnvelope), (status = 403, body = super::ErrorEnvelope)))]
pub async fn list_payouts(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    ApiQuery(p): ApiQuery<PayoutParams>,
) -> Result<Response, ApiError> {
    let data = st.engine.list_payouts(&ctx, p.limit).await?;
    Ok(super::json(StatusCode::OK, &PayoutList { data }))
}

/// Query of `GET /v1/reconciliation`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DayParams {
    /// Settlement date, `YYYY-MM-DD` (UTC); not in the future.
    pub date: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// A day's reconciliation report: every transaction settled on `date` with its payer amount,
/// settlement, FX rate, fee and payout; refunds as negative lines. JSON adds the summary.
#[utoipa::path(get, path = "/v1/reconciliation", tag = "settlement", security(("bearer" = [])), params(DayParams),
    responses(
        (status = 200, description = "JSON `{date, merchant_id, summary, transactions}` or CSV `date,payment_intent_id,channel,payer_amount,payer_currency,settlement_amount,settlement_currency,fx_rate,fee,payout`"),
        (status = 400, description = "`parameter_missing`, `parameter_invalid`, `date_unknown` (a future date), `format_unsupported`", body = super::ErrorEnvelope),
        (status = 403, body = super::ErrorEnvelope)))]
pub async fn reconciliation(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    ApiQuery(p): ApiQuery<DayParams>,
) -> Result<Response, ApiError> {
    let report = st
        .engine
        .reconciliation(&ctx, p.date.as_deref(), p.format.as_deref())
        .await?;
    Ok(with_type(
        Body::from(report.body).into_response(),
        report.content_type,
    ))
}

/// Query of `GET /v1/reconciliation/export`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// First settlement date, `YYYY-MM-DD`.
    pub start: Option<String>,
    /// Last settlement date (inclusive); at most `settlement.max_export_days` after `start`.
    pub end: Option<String>,
    /// Comma-separated channels (`alipay,wechat`); default every channel.
    pub channels: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// Every transaction settled from `start` to `end`, streamed day by day (CSV with the report's
/// columns, or JSON `{merchant_id, start, end, transactions}` whose lines carry their `date`).
#[utoipa::path(get, path = "/v1/reconciliation/export", tag = "settlement", security(("bearer" = [])), params(ExportParams),
    responses(
        (status = 200, description = "Streamed CSV or JSON"),
        (status = 400, description = "`parameter_missing`, `parameter_invalid`, `date_unknown`, `range_too_long`, `channel_unknown`, `format_unsupported`", body = super::ErrorEnvelope),
        (status = 403, body = super::ErrorEnvelope)))]
pub async fn export(
    State(st): State<AppState>,
    Auth(ctx): Auth,
    ApiQuery(p): ApiQuery<ExportParams>,
) -> Result<Response, ApiError> {
    let q = ExportQuery {
        start: p.start,
        end: p.end,
        channels: p.channels,
        format: p.format,
    };
    let report = st.engine.reconciliation_export(&ctx, q).await?;
    Ok(with_type(
        Body::from_stream(report.stream).into_response(),
        report.content_type,
    ))
}

fn with_type(mut r: Response, content_type: &'static str) -> Response {
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
