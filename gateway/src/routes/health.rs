//! Liveness, readiness and metrics.

use crate::app::AppState;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use ipay_engine::ids::MerchantId;
use serde_json::json;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "alive")))]
pub async fn healthz() -> Response {
    super::json(StatusCode::OK, &json!({"status": "ok"}))
}

/// Readiness: the ledger answers reads and the session layer is up.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, description = "ready"), (status = 503, description = "not ready")))]
pub async fn readyz(State(st): State<AppState>) -> Response {
    match st
        .engine
        .ledger()
        .get_merchant(MerchantId::from_u128(0))
        .await
    {
        Ok(_) => super::json(
            StatusCode::OK,
            &json!({"status": "ready", "storage": "embedded", "live_sessions": st.engine.sessions().context().live_sessions()}),
        ),
        Err(e) => {
            let mut r = super::json(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": "not_ready", "reason": e.to_string()}),
            );
            r.headers_mut().insert(header::RETRY_AFTER, 1.into());
            r
        }
    }
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(st): State<AppState>) -> Response {
    metrics::gauge!("ipay_live_sessions")
        .set(st.engine.sessions().context().live_sessions() as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
        .into_response()
}
