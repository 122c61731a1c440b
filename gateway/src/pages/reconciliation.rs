//! Reconciliation downloads for a merchant logged in to the dashboard: one day's report
//! (`GET /dashboard/reconciliation`) and a date range's export
//! (`GET /dashboard/reconciliation/export`).
//!
//! A browser sends the login cookie, which is not an API credential, so links to
//! `/v1/reconciliation` fail there. These routes take the same query parameters as the `/v1`
//! ones and call the same engine methods with the login's merchant, so the files are
//! byte-for-byte the API's and bad input gets the same status and error code (as the error
//! page). They compute nothing themselves and do not replace the API for machines.

use super::PageResult;
use super::dashboard::merchant_of;
use super::login::Viewer;
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::routes::settlement::{DayParams, ExportParams};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use ipay_engine::reconciliation::ExportQuery;

/// `GET /dashboard/reconciliation?date=&format=csv|json`: the day's report as a download.
pub async fn day(
    State(st): State<AppState>,
    viewer: Viewer,
    q: Result<ApiQuery<DayParams>, ApiError>,
) -> PageResult {
    let (ctx, _) = merchant_of(viewer)?;
    let ApiQuery(p) = q?;
    let report = st
        .engine
        .reconciliation(&ctx, p.date.as_deref(), p.format.as_deref())
        .await?;
    let name = format!("reconciliation-{}", p.date.unwrap_or_default());
    Ok(download(
        Body::from(report.body).into_response(),
        report.content_type,
        &name,
    ))
}

/// `GET /dashboard/reconciliation/export?start=&end=&channels=&format=`: the range's settled
/// transactions, streamed as a download. An empty `channels` (a blank form field) means every
/// channel, as leaving it out does.
pub async fn export(
    State(st): State<AppState>,
    viewer: Viewer,
    q: Result<ApiQuery<ExportParams>, ApiError>,
) -> PageResult {
    let (ctx, _) = merchant_of(viewer)?;
    let ApiQuery(p) = q?;
    let name = format!(
        "reconciliation-{}-to-{}",
        p.start.as_deref().unwrap_or_default(),
        p.end.as_deref().unwrap_or_default()
    );
    let q = ExportQuery {
        start: p.start,
        end: p.end,
        channels: p.channels.filter(|c| !c.trim().is_empty()),
        format: p.format,
    };
    let report = st.engine.reconciliation_export(&ctx, q).await?;
    Ok(download(
        Body::from_stream(report.stream).into_response(),
        report.content_type,
        &name,
    ))
}

/// Sets the report's type and asks the browser to save it as `stem` plus the format's
/// extension. Only letters, digits and `-` reach the file name (the engine has already
/// checked the dates, but the header must never carry quotes or line breaks).
fn download(mut r: Response, content_type: &'static str, stem: &str) -> Response {
    let ext = if content_type.starts_with("text/csv") {
        "csv"
    } else {
        "json"
    };
    let stem: String = stem
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{stem}.{ext}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}
