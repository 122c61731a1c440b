//! Server-rendered HTML pages: the consumer's pay page ([`pay`]), the merchant dashboard
//! ([`dashboard`]) with its reconciliation downloads ([`reconciliation`]), the operator desk
//! ([`operator`]), their login ([`login`]) and the few same-origin static files they use
//! ([`assets`]). Templates live in `gateway/templates/`
//! (askama, checked at compile time, HTML-escaped by default).
//!
//! Pages call the same engine and last-mile methods as the JSON API, with the same
//! authentication (the last-mile JWT or an API key, kept in an HttpOnly cookie), the same
//! error codes (rendered as an HTML page), and the application's limits (the router is mounted
//! inside the global body, timeout and concurrency layers). Every response carries a strict
//! Content-Security-Policy: scripts and styles only from this origin's `/static/`, nothing
//! inline. Forms are protected by a double-submit CSRF token ([`csrf`]). No business rule
//! lives here.

pub mod assets;
pub mod charts;
pub mod csrf;
pub mod dashboard;
pub mod feed;
pub mod i18n;
pub mod login;
pub mod operator;
pub mod pay;
pub mod reconciliation;

use crate::app::AppState;
use crate::error::ApiError;
use askama::Template;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

/// The Content-Security-Policy of every page: same-origin scripts, styles and connections
/// only; images from this origin or `data:`; no plugins, no framing, no foreign form targets.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// The routes of the pages.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/pay/{token}", get(pay::page))
        .route("/pay/{token}/start", post(pay::start))
        .route("/login", get(login::page).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/dashboard", get(dashboard::page))
        .route("/dashboard/revenue", get(dashboard::revenue_fragment))
        .route("/dashboard/feed", get(dashboard::feed))
        .route("/dashboard/reconciliation", get(reconciliation::day))
        .route(
            "/dashboard/reconciliation/export",
            get(reconciliation::export),
        )
        .route("/dashboard/keys", post(dashboard::create_key))
        .route("/dashboard/keys/{id}/rotate", post(dashboard::rotate_key))
        .route("/dashboard/keys/{id}/revoke", post(dashboard::revoke_key))
        .route(
            "/dashboard/keys/{id}/whitelist",
            post(dashboard::update_whitelist),
        )
        .route(
            "/dashboard/webhooks/{event_id}/replay",
            post(dashboard::replay_webhook),
        )
        .route("/operator", get(operator::page))
        .route(
            "/operator/sessions/{id}/parcel",
            post(operator::parcel_status),
        )
        .route("/operator/sessions/{id}/unlock", post(operator::unlock))
        .route("/static/{file}", get(assets::serve))
        .layer(middleware::from_fn(security_headers))
}

/// Adds the CSP and its companions to every page response.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// A rendered template as `text/html`.
pub fn html<T: Template>(status: StatusCode, t: &T) -> Response {
    match t.render() {
        Ok(body) => {
            let mut r = (status, body).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        Err(e) => ApiError::from(ipay_engine::EngineError::Internal(format!(
            "template rendering failed: {e}"
        )))
        .into_response(),
    }
}

/// The error page: the API's status and error code, as HTML.
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub status: u16,
    pub code: String,
    pub message: String,
}

/// An error of a page handler: rendered as the error page with the API's status and code.
pub struct PageError(pub ApiError);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        PageError(e)
    }
}

impl From<ipay_engine::EngineError> for PageError {
    fn from(e: ipay_engine::EngineError) -> Self {
        PageError(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let e = self.0;
        let page = ErrorPage {
            status: e.status.as_u16(),
            code: e.code.to_string(),
            message: e.message.clone(),
        };
        let mut r = html(e.status, &page);
        if let Some(secs) = e.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        r
    }
}

/// Result of a page handler.
pub type PageResult = Result<Response, PageError>;

/// A `303 See Other` to `to` (after a form post).
pub fn see_other(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Parses an `application/x-www-form-urlencoded` body with the API's error codes.
pub fn form<T: serde::de::DeserializeOwned>(
    f: Result<axum::Form<T>, axum::extract::rejection::FormRejection>,
) -> Result<T, PageError> {
    f.map(|axum::Form(v)| v).map_err(|e| {
        let err = match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body is larger than the server accepts",
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the form as `application/x-www-form-urlencoded`",
            ),
            _ => ApiError::new(
                StatusCode::BAD_REQUEST,
                "parameter_invalid",
                format!("invalid form: {}", e.body_text()),
            ),
        };
        PageError(err)
    })
}
