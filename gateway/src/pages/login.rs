//! Logging in to the dashboard and the operator desk, and who the logged-in viewer is.
//!
//! The login form takes either a last-mile account (email + password → the account JWT) or an
//! API key (for merchants who only use `/v1`). The credential is kept in an HttpOnly,
//! `SameSite=Strict` cookie and checked on every request exactly as the API checks it:
//! [`ipay_lastmile::LastMile::verify_token`] for a JWT, [`ipay_engine::Engine::authenticate`]
//! (revocation, expiry, IP whitelist) plus the per-key rate limits for a key. Nothing is kept
//! on the server, so any node can serve any page.

use super::{PageError, PageResult, csrf, html, see_other};
use crate::app::AppState;
use crate::error::ApiError;
use askama::Template;
use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ipay_engine::AuthContext;
use ipay_engine::clock::Timestamp;
use ipay_engine::ids::{ApiKeyId, MerchantId};
use ipay_engine::model::{ApiKey, Permission};
use ipay_lastmile::accounts::{LoginRequest, Role};
use serde::Deserialize;
use std::net::SocketAddr;

/// The login cookie's name.
pub const COOKIE: &str = "ipay_session";

/// Lifetime of a cookie holding an API key (a JWT's cookie lives as long as the JWT).
const KEY_COOKIE_SECS: i64 = 8 * 3600;

/// Who is looking at a page.
pub enum Viewer {
    /// A merchant: an engine caller for its own data, and the JWT when it logged in with one
    /// (the live feed is the last-mile stream, which takes the JWT).
    Merchant {
        ctx: Box<AuthContext>,
        jwt: Option<String>,
    },
    /// An operator of the last-mile desk.
    Operator { user_id: String },
}

/// An engine caller acting for a logged-in merchant user in the merchant's mode (see
/// `PUT /api/merchant/mode`): the user owns the merchant, so it may do what the merchant's own
/// keys may. Never stored, no secret.
fn merchant_ctx(merchant: MerchantId, livemode: bool) -> AuthContext {
    AuthContext {
        merchant_id: merchant,
        livemode,
        key: ApiKey {
            id: ApiKeyId::new_at(0),
            label: "dashboard login".into(),
            redacted: "(dashboard)".into(),
            permissions: Permission::ALL.to_vec(),
            ip_whitelist: vec![],
            livemode,
            merchant_id: merchant,
            created: Timestamp(0),
            expires_at: Timestamp(i64::MAX / 2),
            revoked_at: None,
        },
    }
}

async fn viewer_of(st: &AppState, parts: &Parts) -> Result<Viewer, Response> {
    let to_login = || see_other("/login");
    let raw = super::cookie(&parts.headers, COOKIE).ok_or_else(to_login)?;
    if let Some(jwt) = raw.strip_prefix("j.") {
        let p = st.lastmile.verify_token(jwt).map_err(|_| to_login())?;
        return match (p.role, p.merchant_id) {
            (Role::Operator, _) => Ok(Viewer::Operator {
                user_id: p.user_id.to_string(),
            }),
            (Role::Merchant, Some(m)) => Ok(Viewer::Merchant {
                ctx: Box::new(merchant_ctx(
                    m,
                    st.lastmile
                        .merchant_livemode(m)
                        .await
                        .map_err(|e| PageError(e.into()).into_response())?,
                )),
                jwt: Some(jwt.to_string()),
            }),
            _ => Err(PageError(ApiError::new(
                StatusCode::FORBIDDEN,
                "role_forbidden",
                "these pages are for merchant and operator accounts",
            ))
            .into_response()),
        };
    }
    let key = raw.strip_prefix("k.").ok_or_else(to_login)?;
    let ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let ctx = st
        .engine
        .authenticate(key, ip)
        .await
        .map_err(|e| PageError(e.into()).into_response())?;
    st.rate_limits.check(&ctx, parts).await.map_err(|r| *r)?;
    Ok(Viewer::Merchant {
        ctx: Box::new(ctx),
        jwt: None,
    })
}

impl FromRequestParts<AppState> for Viewer {
    /// A redirect to the login page, or the error page.
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Response> {
        viewer_of(st, parts).await
    }
}

/// The login page.
#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub csrf: String,
    pub error: Option<String>,
}

/// `GET /login`.
pub async fn page(headers: HeaderMap) -> Response {
    render(&headers, None, StatusCode::OK)
}

fn render(headers: &HeaderMap, error: Option<String>, status: StatusCode) -> Response {
    let (token, fresh) = csrf::token(headers);
    let mut r = html(
        status,
        &LoginPage {
            csrf: token.clone(),
            error,
        },
    );
    csrf::attach(&mut r, &token, fresh);
    r
}

/// The login form.
#[derive(Deserialize)]
pub struct LoginForm {
    pub csrf: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub api_key: String,
}

fn session_cookie(value: &str, max_age: i64) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}"
    ))
    .ok()
}

/// `POST /login`: checks the credential like the API does, sets the cookie and goes to the
/// dashboard (merchants) or the desk (operators). A refused login shows the form again with
/// the API's message and status.
pub async fn submit(
    State(st): State<AppState>,
    headers: HeaderMap,
    f: Result<axum::Form<LoginForm>, FormRejection>,
) -> PageResult {
    let f = super::form(f)?;
    csrf::check(&headers, &f.csrf)?;
    let outcome = if !f.api_key.trim().is_empty() {
        let key = f.api_key.trim().to_string();
        match st.engine.authenticate(&key, None).await {
            Ok(_) => Ok(("/dashboard", format!("k.{key}"), KEY_COOKIE_SECS)),
            Err(e) => Err(ApiError::from(e)),
        }
    } else {
        let req = LoginRequest {
            email: f.email,
            password: f.password,
        };
        match st.lastmile.login(req).await {
            Ok(t) if t.user.role == Role::Driver => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "role_forbidden",
                "drivers use the driver app, not these pages",
            )),
            Ok(t) => {
                let to = if t.user.role == Role::Operator {
                    "/operator"
                } else {
                    "/dashboard"
                };
                Ok((to, format!("j.{}", t.token), t.expires_in))
            }
            Err(e) => Err(ApiError::from(e)),
        }
    };
    match outcome {
        Ok((to, value, max_age)) => {
            let mut r = see_other(to);
            if let Some(c) = session_cookie(&value, max_age) {
                r.headers_mut().append(header::SET_COOKIE, c);
            }
            Ok(r)
        }
        Err(e) => Ok(render(
            &headers,
            Some(format!("{} ({})", e.message, e.code)),
            e.status,
        )),
    }
}

/// The logout form.
#[derive(Deserialize)]
pub struct LogoutForm {
    pub csrf: String,
}

/// `POST /logout`: clears the cookie.
pub async fn logout(
    headers: HeaderMap,
    f: Result<axum::Form<LogoutForm>, FormRejection>,
) -> PageResult {
    let f = super::form(f)?;
    csrf::check(&headers, &f.csrf)?;
    let mut r = see_other("/login");
    if let Some(c) = session_cookie("", 0) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(r)
}
