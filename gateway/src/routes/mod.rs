//! HTTP handlers, one module per resource. Each handler extracts, calls one engine method and
//! maps the result; no business rule lives here.

pub mod admin;
pub mod analytics;
pub mod api_keys;
pub mod channels;
pub mod events;
pub mod health;
pub mod intents;
pub mod internal;
pub mod lastmile;
pub mod refunds;
pub mod sandbox;
pub mod services;
pub mod settlement;
pub mod subscriptions;
pub mod webhooks;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ipay_engine::engine::IdempotentOutcome;
use ipay_engine::store::{Page, PageRequest};
use serde::{Deserialize, Serialize};

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(body) => raw(status, body),
        Err(e) => crate::error::ApiError::from(ipay_engine::EngineError::Internal(e.to_string()))
            .into_response(),
    }
}

fn raw(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The response of an idempotent create; a replay carries `Idempotent-Replayed: true`.
pub fn idempotent(out: IdempotentOutcome) -> Response {
    let status = StatusCode::from_u16(out.status).unwrap_or(StatusCode::OK);
    let mut r = raw(status, out.body.into_bytes());
    r.headers_mut().insert(
        "idempotent-replayed",
        HeaderValue::from_static(if out.replayed { "true" } else { "false" }),
    );
    r
}

/// `pagination` of every list response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Pagination {
    pub total: u64,
    pub limit: usize,
    pub offset: usize,
    /// Offset of the next page; `null` on the last page.
    pub next_offset: Option<usize>,
}

/// `{data, pagination}`.
#[derive(Debug, Serialize)]
pub struct ListBody<T> {
    pub data: Vec<T>,
    pub pagination: Pagination,
}

/// A page as a list response.
pub fn list<T: Serialize>(page: Page<T>, req: PageRequest) -> Response {
    let end = req.offset + page.data.len();
    let next_offset = ((end as u64) < page.total && !page.data.is_empty()).then_some(end);
    let body = ListBody {
        data: page.data,
        pagination: Pagination {
            total: page.total,
            limit: req.limit,
            offset: req.offset,
            next_offset,
        },
    };
    json(StatusCode::OK, &body)
}

/// `limit` and `offset`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    /// 1 to 100, default 20.
    pub limit: Option<usize>,
    /// Default 0.
    pub offset: Option<usize>,
}

/// The error envelope, for the OpenAPI document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

/// Fields of an error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `parameter_invalid`.
    pub code: String,
    /// What went wrong and what to do.
    pub message: String,
    /// The offending parameter, when there is one.
    pub param: Option<String>,
    /// Quote it to support.
    pub request_id: String,
}
