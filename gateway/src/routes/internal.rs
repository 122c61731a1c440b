//! Node-to-node routes of cluster mode (`/internal/...`).
//!
//! A node that receives a command for a payment session another node owns forwards it here
//! (see `ipay_engine::session::ownership`). Both ends live in this file: the route that runs a
//! forwarded command, and [`HttpForwarder`], the engine's `SessionForwarder` port spoken over
//! that route. The route is authenticated by the shared `[cluster] node_token`; with no token
//! configured it answers 404 like any unknown route, so an embedded-mode server exposes
//! nothing. It is not part of the public API document.

use crate::app::AppState;
use crate::error::ApiError;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ipay_engine::ids::PaymentIntentId;
use ipay_engine::model::Applied;
use ipay_engine::session::ownership::{ForwardedCommand, ForwardedError, SessionForwarder};
use ipay_engine::{EngineError, EngineResult};
use std::time::Duration;
use subtle::ConstantTimeEq;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/internal/v1/sessions/{id}/command", post(command))
}

/// Bound on one forwarded call, connect to last byte.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on connecting to the owner: a dead node should cost the caller little.
const FORWARD_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Idle connections kept per owner node.
const FORWARD_IDLE_PER_NODE: usize = 64;

/// Forwards session commands to their owner's `POST /internal/v1/sessions/{id}/command`.
pub struct HttpForwarder {
    client: reqwest::Client,
    node_token: String,
}

impl HttpForwarder {
    /// A forwarder presenting `node_token` (the `[cluster] node_token` every node shares).
    pub fn new(node_token: String) -> Result<HttpForwarder, String> {
        let client = reqwest::Client::builder()
            .timeout(FORWARD_TIMEOUT)
            .connect_timeout(FORWARD_CONNECT_TIMEOUT)
            .pool_max_idle_per_host(FORWARD_IDLE_PER_NODE)
            .build()
            .map_err(|e| format!("cannot build the session-forwarding HTTP client: {e}"))?;
        Ok(HttpForwarder { client, node_token })
    }
}

#[async_trait::async_trait]
impl SessionForwarder for HttpForwarder {
    async fn forward(
        &self,
        owner: &str,
        id: PaymentIntentId,
        command: ForwardedCommand,
    ) -> EngineResult<Applied> {
        let url = format!(
            "{}/internal/v1/sessions/{id}/command",
            owner.trim_end_matches('/')
        );
        let body = serde_json::to_vec(&command).map_err(|e| {
            EngineError::Internal(format!("cannot encode a forwarded command: {e}"))
        })?;
        let resp = self
            .client
            .post(&url)
            .bearer_auth(&self.node_token)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(intent = %id, owner = %owner, error = %e, "session owner unreachable");
                EngineError::SessionUnavailable
            })?;
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .map_err(|_| EngineError::SessionUnavailable)?;
        if status == 200 {
            return serde_json::from_slice::<Applied>(&body)
                .map_err(|e| EngineError::Internal(format!("bad forwarded answer: {e}")));
        }
        match serde_json::from_slice::<ForwardedError>(&body) {
            Ok(e) => Err(EngineError::relayed(e.status, &e.code, e.message)),
            Err(_) => Err(EngineError::SessionUnavailable),
        }
    }
}

/// Nothing of this module is in the public OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi()]
pub struct Doc;

fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(own) = state.engine.sessions().ownership() else {
        return false;
    };
    let token = own.node_token();
    if token.is_empty() {
        return false;
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    given.len() == token.len() && bool::from(given.as_bytes().ct_eq(token.as_bytes()))
}

fn forwarded_error(e: EngineError) -> Response {
    let api = ApiError::from(e);
    let body = ForwardedError {
        status: api.status.as_u16(),
        code: api.code.to_string(),
        message: api.message.clone(),
    };
    (
        api.status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&body).unwrap_or_default(),
    )
        .into_response()
}

/// `POST /internal/v1/sessions/{id}/command`: runs a forwarded session command here.
async fn command(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&state, &headers) {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "route_not_found",
            "no such route; see /openapi.json for the API",
        )
        .into_response();
    }
    let Ok(id) = PaymentIntentId::parse(&id) else {
        return forwarded_error(EngineError::not_found("payment intent", id));
    };
    let fwd: ForwardedCommand = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => {
            return forwarded_error(EngineError::invalid(
                "parameter_invalid",
                "body",
                format!("not a forwarded command: {e}"),
            ));
        }
    };
    match state
        .engine
        .sessions()
        .command_forwarded(id, fwd.cmd, fwd.idem)
        .await
    {
        Ok(applied) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_vec(&applied).unwrap_or_default(),
        )
            .into_response(),
        Err(e) => forwarded_error(e),
    }
}
