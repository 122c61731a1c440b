//! The merchant dashboard (spec §5): revenue today / this week / this month by channel with
//! charts, active channels, recent transactions and the live feed, per-channel success rates
//! and errors, webhook logs with replay, API keys (create with an IP whitelist, change a key's
//! whitelist, rotate, revoke) and the reconciliation downloads.
//!
//! Every figure comes from the engine's durable data through the same methods as the API
//! (`channel_analytics` for revenue and success rates, never a per-node counter). The live
//! feed is the last-mile event stream (`/api/events/stream`), proxied here so the JWT stays in
//! its HttpOnly cookie. Forms post back here with a CSRF token; actions are the API's.

use super::charts::{self, Bar};
use super::i18n::{Locale, channel_name, format_money};
use super::login::Viewer;
use super::{PageError, PageResult, csrf, html, see_other};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::routes::lastmile::stream::StreamParams;
use askama::Template;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use ipay_engine::AuthContext;
use ipay_engine::analytics::ChannelAnalytics;
use ipay_engine::engine::{ApiKeyUpdate, IntentListParams};
use ipay_engine::model::ApiKeyInput;
use ipay_engine::money::Money;
use ipay_engine::webhooks::api::LogParams;
use serde::Deserialize;

/// Rows shown in each table.
const ROWS: usize = 20;

/// One KPI: a period's revenue.
pub struct Kpi {
    pub label: &'static str,
    pub value: String,
}

/// The revenue section (also served alone for the live refresh).
pub struct RevenueView {
    pub kpis: Vec<Kpi>,
    pub active: usize,
    pub configured: usize,
    pub chart: String,
}

/// A channel's health row.
pub struct HealthRow {
    pub channel: String,
    pub rate: String,
    pub succeeded: u64,
    pub failed: u64,
    pub expired: u64,
    pub errors: String,
}

/// A transaction row.
pub struct TxRow {
    pub id: String,
    pub amount: String,
    pub channel: String,
    pub status: String,
    pub created: String,
}

/// A webhook attempt row.
pub struct HookRow {
    pub event_id: String,
    pub event_type: String,
    pub endpoint: String,
    pub attempt: u32,
    pub status: String,
    pub code: String,
    pub created: String,
}

/// An API key row.
pub struct KeyRow {
    pub id: String,
    pub label: String,
    pub redacted: String,
    pub whitelist: String,
    pub state: &'static str,
    pub created: String,
}

/// The dashboard.
#[derive(Template)]
#[template(path = "dashboard.html")]
pub struct DashboardPage {
    pub csrf: String,
    pub merchant: String,
    pub mode: &'static str,
    pub notice: Option<String>,
    pub secret: Option<String>,
    pub revenue: RevenueView,
    pub health_chart: String,
    pub health: Vec<HealthRow>,
    pub transactions: Vec<TxRow>,
    pub hooks: Vec<HookRow>,
    pub keys: Vec<KeyRow>,
    pub today: String,
}

/// The revenue section alone.
#[derive(Template)]
#[template(path = "revenue_fragment.html")]
pub struct RevenueFragment {
    pub revenue: RevenueView,
}

/// The merchant caller of a dashboard request; operators are refused.
pub(super) fn merchant_of(v: Viewer) -> Result<(Box<AuthContext>, Option<String>), PageError> {
    match v {
        Viewer::Merchant { ctx, jwt } => Ok((ctx, jwt)),
        Viewer::Operator { .. } => Err(PageError(ApiError::new(
            StatusCode::FORBIDDEN,
            "role_forbidden",
            "the dashboard is for merchants; operators use /operator",
        ))),
    }
}

fn money_text(list: &[Money]) -> String {
    if list.is_empty() {
        return format_money(0, "EUR", Locale::En);
    }
    list.iter()
        .map(|m| format_money(m.value, m.currency.code(), Locale::En))
        .collect::<Vec<_>>()
        .join(" + ")
}

async fn revenue(st: &AppState, ctx: &AuthContext) -> Result<RevenueView, PageError> {
    let today = st.engine.channel_analytics(ctx, "today").await?;
    let mut kpis = vec![Kpi {
        label: "Today",
        value: money_text(&today.gross),
    }];
    for (period, label) in [("week", "This week"), ("month", "This month")] {
        let a = st.engine.channel_analytics(ctx, period).await?;
        kpis.push(Kpi {
            label,
            value: money_text(&a.gross),
        });
    }
    let configured = st
        .engine
        .list_channels(ctx)
        .await
        .map(|c| c.len())
        .unwrap_or(0);
    Ok(RevenueView {
        kpis,
        active: today.channels.iter().filter(|c| c.succeeded > 0).count(),
        configured: configured.max(today.channels.len()),
        chart: charts::bars("Revenue today by channel", &revenue_bars(&today), None),
    })
}

fn revenue_bars(a: &ChannelAnalytics) -> Vec<Bar> {
    a.channels
        .iter()
        .flat_map(|c| {
            c.gross.iter().map(move |m| Bar {
                label: channel_name(&c.channel).to_string(),
                amount: m.value.unsigned_abs(),
                text: format_money(m.value, m.currency.code(), Locale::En),
            })
        })
        .collect()
}

async fn health(st: &AppState, ctx: &AuthContext) -> Result<(String, Vec<HealthRow>), PageError> {
    let month = st.engine.channel_analytics(ctx, "month").await?;
    let pct = |bps: Option<u32>| match bps {
        Some(b) => format!("{}.{:02} %", b / 100, b % 100),
        None => "–".into(),
    };
    let bars: Vec<Bar> = month
        .channels
        .iter()
        .map(|c| Bar {
            label: channel_name(&c.channel).to_string(),
            amount: u64::from(c.success_rate_bps.unwrap_or(0)),
            text: pct(c.success_rate_bps),
        })
        .collect();
    let rows = month
        .channels
        .iter()
        .map(|c| HealthRow {
            channel: channel_name(&c.channel).to_string(),
            rate: pct(c.success_rate_bps),
            succeeded: c.succeeded,
            failed: c.failed,
            expired: c.expired,
            errors: c
                .errors
                .iter()
                .map(|e| format!("{} × {}", e.count, e.reason))
                .collect::<Vec<_>>()
                .join(", "),
        })
        .collect();
    let chart = charts::bars("Success rate this month by channel", &bars, Some(10_000));
    Ok((chart, rows))
}

async fn transactions(st: &AppState, ctx: &AuthContext) -> Result<Vec<TxRow>, PageError> {
    let p = IntentListParams {
        limit: Some(ROWS),
        ..Default::default()
    };
    let (page, _) = st.engine.list_intents(ctx, p).await?;
    Ok(page
        .data
        .into_iter()
        .map(|i| TxRow {
            id: i.id.to_string(),
            amount: format_money(i.amount.value, i.amount.currency.code(), Locale::En),
            channel: channel_name(&i.channel).to_string(),
            status: i.status.as_str().to_string(),
            created: i.created.to_string(),
        })
        .collect())
}

async fn hooks(st: &AppState, ctx: &AuthContext) -> Result<Vec<HookRow>, PageError> {
    let p = LogParams {
        limit: Some(ROWS),
        ..Default::default()
    };
    let page = st.webhooks.logs(ctx, p).await?;
    Ok(page
        .data
        .into_iter()
        .map(|a| HookRow {
            event_id: a.event_id.to_string(),
            event_type: a.event_type,
            endpoint: a.endpoint,
            attempt: a.attempt,
            status: serde_json::to_value(a.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            code: a.status_code.map(|c| c.to_string()).unwrap_or("–".into()),
            created: a.created.to_string(),
        })
        .collect())
}

async fn keys(st: &AppState, ctx: &AuthContext) -> Result<Vec<KeyRow>, PageError> {
    let (page, _) = st.engine.list_api_keys(ctx, Some(ROWS), None).await?;
    let now = st.engine.clock().now();
    Ok(page
        .data
        .into_iter()
        .map(|k| KeyRow {
            state: if k.revoked_at.is_some_and(|r| r <= now) {
                "revoked"
            } else if k.expires_at <= now {
                "expired"
            } else {
                "active"
            },
            id: k.id.to_string(),
            label: k.label,
            redacted: k.redacted,
            whitelist: k
                .ip_whitelist
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            created: k.created.to_string(),
        })
        .collect())
}

/// What the dashboard says after an action.
pub struct Flash {
    pub notice: Option<String>,
    pub secret: Option<String>,
}

async fn render(st: &AppState, headers: &HeaderMap, ctx: &AuthContext, flash: Flash) -> PageResult {
    let (token, fresh) = csrf::token(headers);
    let merchant = st
        .engine
        .ledger()
        .get_merchant(ctx.merchant_id)
        .await
        .ok()
        .flatten()
        .map(|m| m.name)
        .unwrap_or_else(|| ctx.merchant_id.to_string());
    let (health_chart, health) = health(st, ctx).await?;
    let page = DashboardPage {
        csrf: token.clone(),
        merchant,
        mode: if ctx.livemode { "live" } else { "test" },
        notice: flash.notice,
        secret: flash.secret,
        revenue: revenue(st, ctx).await?,
        health_chart,
        health,
        transactions: transactions(st, ctx).await?,
        hooks: hooks(st, ctx).await?,
        keys: keys(st, ctx).await?,
        today: st
            .engine
            .clock()
            .now()
            .to_datetime()
            .format("%Y-%m-%d")
            .to_string(),
    };
    let mut r = html(StatusCode::OK, &page);
    csrf::attach(&mut r, &token, fresh);
    Ok(r)
}

/// Query of the dashboard: the outcome of the last action.
#[derive(Debug, Default, Deserialize)]
pub struct DashQuery {
    pub notice: Option<String>,
}

fn notice_text(code: &str) -> Option<String> {
    Some(
        match code {
            "revoked" => "The key was revoked.",
            "replayed" => "The event was queued for delivery again.",
            "whitelist" => "The key's IP whitelist was saved; it applies from the next request.",
            _ => return None,
        }
        .to_string(),
    )
}

/// `GET /dashboard`.
pub async fn page(
    State(st): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Query(q): Query<DashQuery>,
) -> PageResult {
    let (ctx, _) = merchant_of(viewer)?;
    let flash = Flash {
        notice: q.notice.as_deref().and_then(notice_text),
        secret: None,
    };
    render(&st, &headers, &ctx, flash).await
}

/// `GET /dashboard/revenue`: the revenue section alone, for the live refresh.
pub async fn revenue_fragment(State(st): State<AppState>, viewer: Viewer) -> PageResult {
    let (ctx, _) = merchant_of(viewer)?;
    let revenue = revenue(&st, &ctx).await?;
    Ok(html(StatusCode::OK, &RevenueFragment { revenue }))
}

/// `GET /dashboard/feed`: the merchant's live event stream (SSE). Accounts logged in with the
/// last-mile JWT get the last-mile stream (`Last-Event-ID` is passed through, so a reconnect
/// loses nothing); API-key logins get the engine's events ([`super::feed`]).
pub async fn feed(State(st): State<AppState>, viewer: Viewer, headers: HeaderMap) -> PageResult {
    let (ctx, jwt) = merchant_of(viewer)?;
    let Some(jwt) = jwt else {
        return Ok(super::feed::stream(st, *ctx));
    };
    let params = StreamParams {
        token: Some(jwt),
        last_event_id: None,
        merchant_id: None,
    };
    crate::routes::lastmile::stream::stream(State(st), headers, ApiQuery(params))
        .await
        .map_err(PageError)
}

/// The new-key form.
#[derive(Deserialize)]
pub struct KeyForm {
    pub csrf: String,
    #[serde(default)]
    pub label: String,
    /// Comma- or space-separated IPs or CIDR ranges; empty for none.
    #[serde(default)]
    pub ip_whitelist: String,
}

/// `POST /dashboard/keys`: creates a key and shows its secret once.
pub async fn create_key(
    State(st): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    f: Result<axum::Form<KeyForm>, FormRejection>,
) -> PageResult {
    let (ctx, _) = merchant_of(viewer)?;
    let f = super::form(f)?;
    csrf::check(&headers, &f.csrf)?;
    let list = split_list(&f.ip_whitelist);
    let input = ApiKeyInput {
        label: Some(f.label).filter(|l| !l.trim().is_empty()),
        ip_whitelist: (!list.is_empty()).then_some(list),
        ..Default::default()
    };
    let k = st.engine.create_api_key(&ctx, input).await?;
    let flash = Flash {
        notice: Some(format!(
            "Key {} created. Copy its secret now; it is not shown again.",
            k.key.id
        )),
        secret: Some(k.secret),
    };
    render(&st, &headers, &ctx, flash).await
}

/// A whitelist typed into a form: entries separated by commas, spaces or line breaks.
fn split_list(text: &str) -> Vec<String> {
    text.split([',', ' ', '\n', '\r', '\t'])
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The form changing a key's IP whitelist.
#[derive(Deserialize)]
pub struct WhitelistForm {
    pub csrf: String,
    /// Comma- or space-separated IPs or CIDR ranges; empty allows any address.
    #[serde(default)]
    pub ip_whitelist: String,
}

/// `POST /dashboard/keys/{id}/whitelist`: replaces the key's IP whitelist (the API's
/// `PATCH /v1/api-keys/{id}`, with its errors).
pub async fn update_whitelist(
    State(st): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
    f: Result<axum::Form<WhitelistForm>, FormRejection>,
) -> PageResult {
    let (ctx, _) = merchant_of(viewer)?;
    let f = super::form(f)?;
    csrf::check(&headers, &f.csrf)?;
    let update = ApiKeyUpdate {
        ip_whitelist: split_list(&f.ip_whitelist),
    };
    st.engine.update_api_key(&ctx, &id, update).await?;
    Ok(see_other("/dashboard?notice=whitelist#keys"))
}

/// A form carrying only the CSRF token.
#[derive(Deserialize)]
pub struct CsrfForm {
    pub csrf: String,
}

/// `POST /dashboard/keys/{id}/rotate`: a replacement key (shown once); the old one is revoked.
pub async fn rotate_key(
    State(st): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
    f: Result<axum::Form<CsrfForm>, FormRejection>,
) -> PageResult {
    let (ctx, _) = merchant_of(viewer)?;
    csrf::check(&headers, &super::form(f)?.csrf)?;
    let k = st.engine.rotate_api_key(&ctx, &id, None).await?;
    let flash = Flash {
        notice: Some(format!(
            "Key {id} rotated: it is revoked and replaced by {}. Copy the new secret now.",
            k.key.id
        )),
        secret: Some(k.secret),
    };
    render(&st, &headers, &ctx, flash).await
}

/// `POST /dashboard/keys/{id}/revoke`.
pub async fn revoke_key(
    State(st): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
    f: Result<axum::Form<CsrfForm>, FormRejection>,
) -> PageResult {
    let (ctx, _) = merchant_of(viewer)?;
    csrf::check(&headers, &super::form(f)?.csrf)?;
    st.engine.revoke_api_key(&ctx, &id).await?;
    Ok(see_other("/dashboard?notice=revoked#keys"))
}

/// `POST /dashboard/webhooks/{event_id}/replay`: sends the event again to every endpoint.
pub async fn replay_webhook(
    State(st): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(event_id): Path<String>,
    f: Result<axum::Form<CsrfForm>, FormRejection>,
) -> Result<Response, PageError> {
    let (ctx, _) = merchant_of(viewer)?;
    csrf::check(&headers, &super::form(f)?.csrf)?;
    st.webhooks.replay(&ctx, &event_id).await?;
    Ok(see_other("/dashboard?notice=replayed#webhooks"))
}
