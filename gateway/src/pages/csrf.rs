//! CSRF protection of the pages' forms by double submit: a random token lives in a
//! `SameSite=Strict`, HttpOnly cookie and in a hidden field of every form; a post is accepted
//! only when both are present and equal (compared in constant time). Another site can make a
//! browser send the cookie (not with `Strict`, but older browsers ignore it) yet can neither
//! read it nor set it, so it cannot fill in the field.
//!
//! This module does not authenticate anybody: the login cookie does that ([`super::login`]).

use super::{PageError, cookie};
use crate::error::ApiError;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use rand::RngCore;
use subtle::ConstantTimeEq;

/// The cookie's name.
pub const COOKIE: &str = "ipay_csrf";

/// Random bytes per token (256 bits).
const TOKEN_BYTES: usize = 32;

/// The request's token, or a fresh one to set (the caller adds the cookie with [`attach`]).
pub fn token(headers: &HeaderMap) -> (String, bool) {
    match cookie(headers, COOKIE).filter(|t| valid_shape(t)) {
        Some(t) => (t, false),
        None => {
            let mut b = [0u8; TOKEN_BYTES];
            rand::rng().fill_bytes(&mut b);
            (
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b),
                true,
            )
        }
    }
}

fn valid_shape(t: &str) -> bool {
    t.len() == 43
        && t.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// Sets the token cookie on a response when it is new.
pub fn attach(resp: &mut Response, token: &str, fresh: bool) {
    if !fresh {
        return;
    }
    let v = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
    if let Ok(v) = HeaderValue::from_str(&v) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// Accepts a form post only if its `csrf` field equals the cookie.
pub fn check(headers: &HeaderMap, submitted: &str) -> Result<(), PageError> {
    let ok = cookie(headers, COOKIE)
        .filter(|c| valid_shape(c))
        .is_some_and(|c| bool::from(c.as_bytes().ct_eq(submitted.as_bytes())));
    if ok {
        Ok(())
    } else {
        Err(PageError(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf_invalid",
            "the form's CSRF token is missing or does not match; reload the page and submit again",
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_post_needs_the_cookie_and_the_same_field() {
        let (t, fresh) = token(&HeaderMap::new());
        assert!(fresh && valid_shape(&t));
        let mut h = HeaderMap::new();
        assert!(check(&h, &t).is_err());
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=b; {COOKIE}={t}")).unwrap(),
        );
        assert!(check(&h, &t).is_ok());
        assert!(check(&h, "x").is_err());
        assert_eq!(token(&h), (t, false));
    }
}
