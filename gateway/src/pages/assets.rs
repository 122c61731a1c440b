//! The pages' static files (`gateway/static/`), compiled into the binary so a node needs no
//! file tree and a page never loads anything from another origin. Served with a short cache
//! lifetime; the set is closed (anything else is 404).

use super::PageError;
use crate::error::ApiError;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// (name, content type, body).
const FILES: &[(&str, &str, &str)] = &[
    (
        "site.css",
        "text/css; charset=utf-8",
        include_str!("../../static/site.css"),
    ),
    (
        "pay.js",
        "text/javascript; charset=utf-8",
        include_str!("../../static/pay.js"),
    ),
    (
        "dashboard.js",
        "text/javascript; charset=utf-8",
        include_str!("../../static/dashboard.js"),
    ),
];

/// `GET /static/{file}`.
pub async fn serve(Path(file): Path<String>) -> Result<Response, PageError> {
    let (_, ctype, body) = FILES
        .iter()
        .find(|(name, _, _)| *name == file)
        .ok_or_else(|| {
            PageError(ApiError::new(
                StatusCode::NOT_FOUND,
                "resource_missing",
                format!("no static file `{file}`"),
            ))
        })?;
    let mut r = (StatusCode::OK, *body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    Ok(r)
}
