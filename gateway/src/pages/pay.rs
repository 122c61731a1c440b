//! The consumer's pay page `/pay/{token}`: merchant, amount, reference and parcel; the
//! session's channels to choose from; the open payment's QR code (an SVG drawn here from the
//! channel's QR payload) or its checkout link; and the paid state with the delivery code. The
//! page polls `GET /api/session/{token}` (`/static/pay.js`) and turns paid, delivered, expired
//! or failed without a reload. Mobile first and small: one HTML document, one stylesheet and
//! one script, all from this origin, well under 50 KB together.
//!
//! The pay token is the only credential, as for the JSON consumer API; what the page shows is
//! exactly [`ipay_lastmile::sessions::ConsumerView`]. Payment rules are last-mile's.

use super::i18n::{self, Locale, Strings};
use super::{PageResult, csrf, html, see_other};
use crate::app::AppState;
use askama::Template;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine as _;
use ipay_lastmile::sessions::{ConsumerView, SessionStatus, StartPaymentRequest};
use serde::Deserialize;

/// Pixels per QR module on the pay page (the image scales down on small screens).
const QR_MODULE_PX: u32 = 4;

/// Query of the pay page.
#[derive(Debug, Default, Deserialize)]
pub struct PayQuery {
    /// en | nl | de | fr | zh (default: the browser's `Accept-Language`, then English).
    pub lang: Option<String>,
    /// `failed` or `expired`: why the consumer is choosing again.
    pub notice: Option<String>,
}

/// A language link.
pub struct LangLink {
    pub code: &'static str,
    pub name: &'static str,
    pub current: bool,
}

/// A channel button.
pub struct ChannelChoice {
    pub value: String,
    pub name: String,
}

/// The open payment as the page shows it.
pub struct PaymentBox {
    pub channel_name: String,
    /// `data:image/svg+xml;base64,…` of the QR code, for QR channels.
    pub qr_data_url: Option<String>,
    /// The checkout link, for redirect channels.
    pub link: Option<String>,
    pub expires_at: String,
}

/// The pay page.
#[derive(Template)]
#[template(path = "pay.html")]
pub struct PayPage {
    pub lang: &'static str,
    pub t: &'static Strings,
    pub langs: Vec<LangLink>,
    pub token: String,
    pub csrf: String,
    pub merchant: String,
    pub amount: String,
    pub reference: String,
    pub parcel: String,
    pub status: String,
    pub channels: Vec<ChannelChoice>,
    pub payment: Option<PaymentBox>,
    pub otp: Option<String>,
    pub notice: Option<&'static str>,
}

impl PayPage {
    /// Whether the channel choice is shown.
    pub fn choosing(&self) -> bool {
        self.status == "CREATED"
    }
    /// Whether the paid box is shown.
    pub fn paid(&self) -> bool {
        self.status == "PAID"
    }
    /// Whether the delivered box is shown.
    pub fn delivered(&self) -> bool {
        self.status == "RELEASED"
    }
}

fn status_name(s: SessionStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn payment_box(view: &ConsumerView) -> Option<PaymentBox> {
    let p = view.payment.as_ref()?;
    let payload = p.qr_code.clone().unwrap_or_default();
    // QR channels' payloads are often URLs too (Alipay's `https://qr.alipay.com/…`): the
    // channel, not the payload's shape, says whether to scan or to follow a link.
    let scan = matches!(
        p.channel.as_str(),
        "alipay" | "wechat" | "promptpay" | "sandbox"
    );
    let is_link = !scan && (payload.starts_with("https://") || payload.starts_with("http://"));
    let qr_data_url = (scan && !payload.is_empty())
        .then(|| ipay_adapters::qr::svg(&payload, QR_MODULE_PX).ok())
        .flatten()
        .map(|svg| {
            format!(
                "data:image/svg+xml;base64,{}",
                base64::engine::general_purpose::STANDARD.encode(svg)
            )
        });
    Some(PaymentBox {
        channel_name: i18n::channel_name(&p.channel).to_string(),
        qr_data_url,
        link: is_link.then_some(payload),
        expires_at: p.expires_at.to_string(),
    })
}

fn build(view: ConsumerView, token: String, csrf: String, locale: Locale, q: &PayQuery) -> PayPage {
    let t = locale.strings();
    let notice = match q.notice.as_deref() {
        Some("failed") => Some(t.failed),
        Some("expired") => Some(t.expired),
        _ => None,
    };
    let parcel = serde_json::to_value(view.parcel_status)
        .ok()
        .and_then(|v| v.as_str().map(|w| t.parcel_state(w).to_string()))
        .unwrap_or_default();
    PayPage {
        lang: locale.code(),
        t,
        langs: i18n::ALL
            .iter()
            .map(|l| LangLink {
                code: l.code(),
                name: l.name(),
                current: *l == locale,
            })
            .collect(),
        csrf,
        merchant: view.merchant_name.clone().unwrap_or_default(),
        amount: i18n::format_money(view.amount, &view.currency, locale),
        reference: view.ipay_reference_display.clone(),
        parcel,
        status: status_name(view.status),
        channels: view
            .channels
            .iter()
            .map(|c| ChannelChoice {
                value: c.clone(),
                name: i18n::channel_name(c).to_string(),
            })
            .collect(),
        payment: payment_box(&view),
        otp: view.otp.clone(),
        notice,
        token,
    }
}

/// `GET /pay/{token}`.
pub async fn page(
    State(st): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<PayQuery>,
    headers: HeaderMap,
) -> PageResult {
    let view = st.lastmile.consumer_view(&token).await?;
    let accept = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok());
    let locale = Locale::negotiate(q.lang.as_deref(), accept);
    let (csrf_token, fresh) = csrf::token(&headers);
    let page = build(view, token, csrf_token.clone(), locale, &q);
    let mut r = html(StatusCode::OK, &page);
    csrf::attach(&mut r, &csrf_token, fresh);
    Ok(r)
}

/// The channel form.
#[derive(Deserialize)]
pub struct StartForm {
    pub csrf: String,
    pub channel: String,
    #[serde(default)]
    pub lang: Option<String>,
}

/// `POST /pay/{token}/start`: starts (or reuses) the payment on the chosen channel, then shows
/// the page again with its QR code or link.
pub async fn start(
    State(st): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    f: Result<axum::Form<StartForm>, FormRejection>,
) -> PageResult {
    let f = super::form(f)?;
    csrf::check(&headers, &f.csrf)?;
    let req = StartPaymentRequest {
        channel: f.channel,
        simulate: None,
    };
    st.lastmile.start_payment(&token, req).await?;
    let lang = f
        .lang
        .as_deref()
        .and_then(Locale::from_tag)
        .map(|l| format!("?lang={}", l.code()))
        .unwrap_or_default();
    Ok(see_other(&format!("/pay/{token}{lang}")))
}
