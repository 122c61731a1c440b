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

/// Readiness: the ledger answers reads and still takes writes (it stops after an I/O error).
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, description = "ready"), (status = 503, description = "not ready")))]
pub async fn readyz(State(st): State<AppState>) -> Response {
    let ledger = st.engine.ledger();
    let probe = match ledger.get_merchant(MerchantId::from_u128(0)).await {
        Ok(_) if !ledger.writable() => Err(
            "the ledger stopped taking writes after an I/O error; restart the engine".to_string(),
        ),
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    };
    match probe {
        Ok(()) => super::json(
            StatusCode::OK,
            &json!({"status": "ready", "storage": "embedded", "live_sessions": st.engine.sessions().context().live_sessions()}),
        ),
        Err(reason) => {
            let mut r = super::json(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": "not_ready", "reason": reason}),
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
