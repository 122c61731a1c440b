//! Liveness, readiness and metrics.
//!
//! Readiness checks every backend the node really uses, each bounded in time and all at once:
//! the ledger answers a read and takes writes (embedded: it has not stopped after an I/O error;
//! cluster: a small probe record is written, since a CQL cluster can answer reads while
//! refusing writes), and the hot state answers a round trip (Redis `PING`; the in-process one
//! always does). Not here: what a failing backend means for requests (docs/cluster.md).

use crate::app::AppState;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use ipay_engine::ids::MerchantId;
use ipay_engine::store::{HotState, Ledger, WriteBatch, WriteOp};
use serde_json::{Value, json};
use std::time::Duration;

/// Longest any one readiness probe may take (the backends' own bounds are 1 s).
const PROBE_BOUND: Duration = Duration::from_millis(1500);

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "alive")))]
pub async fn healthz() -> Response {
    super::json(StatusCode::OK, &json!({"status": "ok"}))
}

/// Readiness: every backend this node uses answers (ledger readable and writable, hot state
/// reachable). 503 with the reason, and the same per-backend report, when one does not.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, description = "ready: every backend answers"), (status = 503, description = "not ready: a backend is down (see `reason` and the per-backend fields)")))]
pub async fn readyz(State(st): State<AppState>) -> Response {
    let ledger = st.engine.ledger();
    let hot = st.engine.hot();
    let (read, write, ping) = tokio::join!(
        bounded(probe_read(ledger.as_ref())),
        bounded(probe_write(ledger.as_ref())),
        bounded(probe_hot(hot.as_ref())),
    );
    let reason = [
        read.as_ref()
            .err()
            .map(|e| format!("ledger read failed: {e}")),
        write
            .as_ref()
            .err()
            .map(|e| format!("ledger write failed: {e}")),
        ping.as_ref()
            .err()
            .map(|e| format!("hot state unreachable: {e}")),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>();
    let mut body = json!({
        "storage": if ledger.shared() { "cluster" } else { "embedded" },
        "ledger": {"backend": ledger.backend(), "readable": read.is_ok(), "writable": write.is_ok()},
        "hot_state": {"backend": hot.backend(), "reachable": ping.is_ok()},
        "live_sessions": st.engine.sessions().context().live_sessions(),
    });
    if reason.is_empty() {
        body["status"] = Value::from("ready");
        return super::json(StatusCode::OK, &body);
    }
    body["status"] = Value::from("not_ready");
    body["reason"] = Value::from(reason.join("; "));
    let mut r = super::json(StatusCode::SERVICE_UNAVAILABLE, &body);
    r.headers_mut().insert(header::RETRY_AFTER, 1.into());
    r
}

/// Runs a probe within [`PROBE_BOUND`].
async fn bounded(probe: impl Future<Output = Result<(), String>>) -> Result<(), String> {
    tokio::time::timeout(PROBE_BOUND, probe)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} ms", PROBE_BOUND.as_millis())))
}

async fn probe_read(ledger: &dyn Ledger) -> Result<(), String> {
    ledger
        .get_merchant(MerchantId::from_u128(0))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Embedded: the writer's own flag (a probe write would cost an fsync per probe). Shared
/// ledgers: one small record, overwritten by every probe of every node.
async fn probe_write(ledger: &dyn Ledger) -> Result<(), String> {
    if !ledger.writable() {
        return Err(
            "the ledger stopped taking writes after an I/O error; restart the engine".into(),
        );
    }
    if !ledger.shared() {
        return Ok(());
    }
    let mut b = WriteBatch::new();
    b.push(WriteOp::PutRecord {
        kind: "readiness_probe",
        key: "last".into(),
        value: b"1".to_vec(),
    });
    ledger.submit(b).await.map_err(|e| e.to_string())
}

async fn probe_hot(hot: &dyn HotState) -> Result<(), String> {
    hot.ping().await.map_err(|e| e.to_string())
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
