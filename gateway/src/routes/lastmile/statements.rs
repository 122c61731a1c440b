//! Fee statements and settlement checks over HTTP: the operator sets a merchant's fee per
//! parcel and posts channel settlement reports; merchants (their own) and operators (any)
//! read statements as JSON, CSV or PDF. Handlers extract, call `LastMile` and map; the rules
//! live in `ipay_lastmile::statements`.

use super::auth::{AuthUser, Role};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ipay_engine::EngineError;
use ipay_lastmile::sessions::Actor;
use ipay_lastmile::statements::mismatch::{MismatchCheck, SettlementReport};
use ipay_lastmile::statements::{
    MerchantFee, SetFeeRequest, Statement, StatementQuery, pdf, statement_csv,
};

fn actor(user: &AuthUser) -> Result<Actor, ApiError> {
    match user.role {
        Role::Operator => Ok(Actor::Operator),
        _ => user.require_merchant().map(Actor::Merchant),
    }
}

/// Sets a merchant's IPAY fee per parcel (operators). Each change is kept in `history`.
#[utoipa::path(patch, path = "/api/admin/merchants/{id}", tag = "lastmile-statements",
    security(("bearer_jwt" = [])), params(("id" = String, Path, description = "merchant id")),
    request_body = SetFeeRequest,
    responses((status = 200, body = MerchantFee),
              (status = 400, description = "parameter_invalid | currency_unknown", body = crate::routes::ErrorEnvelope),
              (status = 403, description = "role_forbidden: operators only", body = crate::routes::ErrorEnvelope),
              (status = 404, body = crate::routes::ErrorEnvelope)))]
pub async fn set_fee(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SetFeeRequest>,
) -> Result<Response, ApiError> {
    user.require_operator()?;
    let fee = st.lastmile.set_fee(&id, req, user.user_id).await?;
    Ok(crate::routes::json(StatusCode::OK, &fee))
}

/// A merchant's statement for a period: totals, fee per parcel and its source, and a daily
/// breakdown (`format=json`), or one CSV line per parcel (`format=csv`).
#[utoipa::path(get, path = "/api/merchant-portal/ipay/settlement", tag = "lastmile-statements",
    security(("bearer_jwt" = [])), params(StatementQuery),
    responses((status = 200, body = Statement, description = "JSON, or `text/csv` with `format=csv`"),
              (status = 400, description = "parameter_missing | parameter_invalid | period_too_long | statement_too_large", body = crate::routes::ErrorEnvelope),
              (status = 403, description = "role_forbidden", body = crate::routes::ErrorEnvelope),
              (status = 404, body = crate::routes::ErrorEnvelope)))]
pub async fn statement(
    State(st): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<StatementQuery>,
) -> Result<Response, ApiError> {
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => {
            return Err(EngineError::invalid(
                "parameter_invalid",
                "format",
                "format must be json or csv (the PDF is at /api/merchant-portal/ipay/settlement/pdf)",
            )
            .into());
        }
    };
    let s = st.lastmile.statement(actor(&user)?, &q).await?;
    if !csv {
        return Ok(crate::routes::json(StatusCode::OK, &s));
    }
    let body = statement_csv(&s)?;
    Ok(file(body, "text/csv; charset=utf-8", &s, "csv"))
}

/// The statement as a PDF document (same query; `format` is ignored).
#[utoipa::path(get, path = "/api/merchant-portal/ipay/settlement/pdf", tag = "lastmile-statements",
    security(("bearer_jwt" = [])), params(StatementQuery),
    responses((status = 200, content_type = "application/pdf", description = "the statement"),
              (status = 400, description = "parameter_missing | parameter_invalid | period_too_long | statement_too_large", body = crate::routes::ErrorEnvelope),
              (status = 403, description = "role_forbidden", body = crate::routes::ErrorEnvelope),
              (status = 404, body = crate::routes::ErrorEnvelope)))]
pub async fn statement_pdf(
    State(st): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<StatementQuery>,
) -> Result<Response, ApiError> {
    let s = st.lastmile.statement(actor(&user)?, &q).await?;
    let body = pdf::statement_pdf(&s)?;
    Ok(file(body, "application/pdf", &s, "pdf"))
}

fn file(body: Vec<u8>, content_type: &'static str, s: &Statement, ext: &str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let name = format!(
        "attachment; filename=\"ipay-statement-{}-{}-{}.{ext}\"",
        s.merchant_id, s.start, s.end
    );
    if let Ok(v) = HeaderValue::from_str(&name) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

/// Checks a channel's settlement report for a day against the engine's succeeded intents;
/// emits `invoice.mismatch` to each merchant whose settled amount differs (operators).
#[utoipa::path(post, path = "/api/admin/settlement-reports", tag = "lastmile-statements",
    security(("bearer_jwt" = [])), request_body = SettlementReport,
    responses((status = 200, body = MismatchCheck),
              (status = 400, description = "channel_unknown | parameter_invalid | amount_invalid | currency_unknown", body = crate::routes::ErrorEnvelope),
              (status = 403, description = "role_forbidden: operators only", body = crate::routes::ErrorEnvelope)))]
pub async fn check_settlement(
    State(st): State<AppState>,
    user: AuthUser,
    ApiJson(report): ApiJson<SettlementReport>,
) -> Result<Response, ApiError> {
    user.require_operator()?;
    let out = st.lastmile.check_settlement(report).await?;
    Ok(crate::routes::json(StatusCode::OK, &out))
}
