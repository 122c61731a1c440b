//! The operator desk: one merchant's payment sessions and parcels with the API's filters,
//! moving a parcel to its next state, unlocking a reference locked by wrong OTPs, and the
//! list of drivers. The
//! rules (state machines, who may do what, the unlock's log entry) are last-mile's; this page
//! calls the same methods as `/api/payment-sessions`.

use super::i18n::{Locale, format_money};
use super::login::Viewer;
use super::{PageError, PageResult, csrf, html, see_other};
use crate::app::AppState;
use crate::error::ApiError;
use askama::Template;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use ipay_lastmile::accounts::Role;
use ipay_lastmile::sessions::{Actor, ParcelStatusRequest, SessionListParams, SessionView};
use serde::{Deserialize, Serialize};

/// Sessions per page on the desk.
const ROWS: usize = 50;

/// Drivers listed on the desk.
const DRIVERS: usize = 200;

/// One driver row.
pub struct DriverRow {
    pub name: String,
    pub email: String,
    /// The merchant a driver is attached to; empty for a carrier's driver (any merchant).
    pub merchant: String,
    pub created: String,
}

/// The desk's filters (the list API's, without paging).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub struct DeskQuery {
    #[serde(default)]
    pub merchant_id: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub parcel_status: String,
    #[serde(default)]
    pub country: String,
    #[serde(default)]
    pub carrier: String,
    #[serde(default)]
    pub psp: String,
    #[serde(default)]
    pub notice: String,
}

/// One session row.
pub struct Row {
    pub id: String,
    pub reference: String,
    pub order: String,
    pub amount: String,
    pub status: String,
    pub parcel: String,
    /// The parcel's next state, if it has one the desk may set.
    pub next: Option<&'static str>,
    pub locked: bool,
    pub failures: u32,
    pub psp: String,
    pub country: String,
    pub carrier: String,
}

/// The desk.
#[derive(Template)]
#[template(path = "operator.html")]
pub struct DeskPage {
    pub csrf: String,
    pub q: DeskQuery,
    /// The filters as a query string, to come back to after an action.
    pub back: String,
    pub rows: Vec<Row>,
    pub drivers: Vec<DriverRow>,
    pub notice: Option<&'static str>,
}

fn wire<T: Serialize>(v: T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn row(s: SessionView) -> Row {
    let parcel = wire(s.parcel_status);
    let next = match parcel.as_str() {
        "AWAITING_PICKUP" => Some("PICKED_UP"),
        "PICKED_UP" => Some("IN_DELIVERY"),
        _ => None,
    };
    Row {
        id: s.id.to_string(),
        reference: s.ipay_reference_display,
        order: s.order_id,
        amount: format_money(s.amount, &s.currency, Locale::En),
        status: wire(s.status),
        parcel,
        next,
        locked: s.otp_locked,
        failures: s.otp_failures,
        psp: s.psp.unwrap_or_default(),
        country: s.country,
        carrier: s.carrier_code,
    }
}

fn opt(s: &str) -> Option<String> {
    Some(s.trim().to_string()).filter(|s| !s.is_empty())
}

fn require_operator(v: Viewer) -> Result<String, PageError> {
    match v {
        Viewer::Operator { user_id } => Ok(user_id),
        Viewer::Merchant { .. } => Err(PageError(ApiError::new(
            StatusCode::FORBIDDEN,
            "role_forbidden",
            "the desk is for operator accounts",
        ))),
    }
}

/// `GET /operator`.
pub async fn page(
    State(st): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Query(q): Query<DeskQuery>,
) -> PageResult {
    require_operator(viewer)?;
    let rows = match opt(&q.merchant_id) {
        None => vec![],
        Some(m) => {
            let p = SessionListParams {
                limit: Some(ROWS),
                merchant_id: Some(m),
                status: opt(&q.status),
                parcel_status: opt(&q.parcel_status),
                country: opt(&q.country),
                carrier: opt(&q.carrier),
                psp: opt(&q.psp),
                ..Default::default()
            };
            let page = st.lastmile.list_sessions(Actor::Operator, &p).await?;
            page.data.into_iter().map(row).collect()
        }
    };
    let notice = match q.notice.as_str() {
        "unlocked" => Some("The reference was unlocked; the driver may try the code again."),
        "moved" => Some("The parcel state was changed."),
        _ => None,
    };
    let drivers = st
        .lastmile
        .list_users_by_role(Role::Driver, DRIVERS)
        .await?
        .into_iter()
        .map(|d| DriverRow {
            name: d.name,
            email: d.email,
            merchant: d.merchant_id.map(|m| m.to_string()).unwrap_or_default(),
            created: d.created.to_string(),
        })
        .collect();
    let mut back_q = q.clone();
    back_q.notice.clear();
    let (token, fresh) = csrf::token(&headers);
    let page = DeskPage {
        csrf: token.clone(),
        back: query_string(&back_q),
        q,
        rows,
        drivers,
        notice,
    };
    let mut r = html(StatusCode::OK, &page);
    csrf::attach(&mut r, &token, fresh);
    Ok(r)
}

/// The filters as a query string (only the non-empty ones, percent-encoded).
fn query_string(q: &DeskQuery) -> String {
    let pairs = [
        ("merchant_id", &q.merchant_id),
        ("status", &q.status),
        ("parcel_status", &q.parcel_status),
        ("country", &q.country),
        ("carrier", &q.carrier),
        ("psp", &q.psp),
    ];
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A desk action's form: the CSRF token, the filters to return to, and for parcel moves the
/// target state.
#[derive(Deserialize)]
pub struct ActionForm {
    pub csrf: String,
    #[serde(default)]
    pub back: String,
    #[serde(default)]
    pub status: String,
}

fn back_to(back: &str, notice: &str) -> String {
    // Only a query string of this page: re-encode whatever came, so nothing can redirect away.
    let clean: String = back
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "=&%-_.~".contains(*c))
        .collect();
    format!("/operator?{clean}&notice={notice}")
}

/// `POST /operator/sessions/{id}/parcel`: moves the parcel (the API's state machine).
pub async fn parcel_status(
    State(st): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
    f: Result<axum::Form<ActionForm>, FormRejection>,
) -> PageResult {
    require_operator(viewer)?;
    let f = super::form(f)?;
    csrf::check(&headers, &f.csrf)?;
    let req = ParcelStatusRequest { status: f.status };
    st.lastmile
        .set_parcel_status(Actor::Operator, &id, req)
        .await?;
    Ok(see_other(&back_to(&f.back, "moved")))
}

/// `POST /operator/sessions/{id}/unlock`: clears the OTP lock (logged with the operator id).
pub async fn unlock(
    State(st): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
    f: Result<axum::Form<ActionForm>, FormRejection>,
) -> PageResult {
    let operator = require_operator(viewer)?;
    let f = super::form(f)?;
    csrf::check(&headers, &f.csrf)?;
    st.lastmile.unlock_otp(&id, &operator).await?;
    Ok(see_other(&back_to(&f.back, "unlocked")))
}
