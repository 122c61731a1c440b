//! The control API under `/_sim/`: what tests in other processes, the load generator and
//! people use to play the payer and the PSP (pay, fail, expire, duplicate, out-of-order) and to
//! inject faults. Every route mirrors a [`super::SimHandle`] method.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::state::SimState;
use super::{Fault, Outcome, PayOverrides, SimError, SimRefundMode, keys};

type St = State<Arc<SimState>>;

pub(crate) fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/_sim/health", get(|| async { "ok" }))
        .route("/_sim/credentials/{channel}", get(credentials))
        .route("/_sim/orders", get(orders))
        .route("/_sim/orders/{intent}", get(order))
        .route("/_sim/orders/{intent}/pay", post(pay))
        .route("/_sim/orders/{intent}/fail", post(fail))
        .route("/_sim/orders/{intent}/expire", post(expire))
        .route("/_sim/orders/{intent}/duplicate", post(duplicate))
        .route("/_sim/orders/{intent}/out-of-order", post(out_of_order))
        .route("/_sim/promptpay/scan", post(promptpay_scan))
        .route("/_sim/faults", post(inject).delete(clear))
        .route("/_sim/webhook-endpoints", post(webhook_endpoint))
        .route("/_sim/callbacks", get(callbacks))
        .merge(super::settlement::routes())
        .route("/_sim/refund-modes", post(refund_mode))
        .route("/_sim/refunds", get(refunds))
        .route("/_sim/refunds/{refund}/complete", post(complete_refund))
        .route(
            "/_sim/orders/{intent}/dashboard-refund",
            post(dashboard_refund),
        )
        .with_state(state)
}

fn error(e: SimError) -> Response {
    let status = match e {
        SimError::UnknownOrder(_) => StatusCode::NOT_FOUND,
        SimError::InvalidState { .. } | SimError::NothingToRepeat(_) => StatusCode::CONFLICT,
        SimError::Build(_) => StatusCode::INTERNAL_SERVER_ERROR,
        SimError::NoCallbackUrl(..) | SimError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
    };
    (status, Json(json!({"error": e.to_string()}))).into_response()
}

async fn credentials(Path(channel): Path<String>) -> Response {
    match keys::credentials(&channel) {
        Some(v) => Json(v).into_response(),
        None => error(SimError::Invalid(format!("unknown channel `{channel}`"))),
    }
}

async fn orders(State(s): St) -> Response {
    Json(s.orders()).into_response()
}

async fn order(State(s): St, Path(intent): Path<String>) -> Response {
    match s.order(&intent) {
        Some(o) => Json(o).into_response(),
        None => error(SimError::UnknownOrder(intent)),
    }
}

/// Body of `pay`: optional delay and reported-amount overrides.
#[derive(Debug, Default, Deserialize)]
struct PayBody {
    #[serde(default)]
    delay_ms: Option<u64>,
    #[serde(flatten)]
    overrides: PayOverrides,
}

async fn pay(State(s): St, Path(intent): Path<String>, body: Option<Json<PayBody>>) -> Response {
    let Json(body) = body.unwrap_or_default();
    if let Some(ms) = body.delay_ms {
        return match s.settle_after(&intent, Outcome::Paid, Duration::from_millis(ms)) {
            Ok(()) => (StatusCode::ACCEPTED, Json(json!({"scheduled_in_ms": ms}))).into_response(),
            Err(e) => error(e),
        };
    }
    settle(&s, &intent, Outcome::Paid, &body.overrides).await
}

async fn settle(s: &Arc<SimState>, intent: &str, outcome: Outcome, o: &PayOverrides) -> Response {
    match s.settle(intent, outcome, o).await {
        Ok(d) => Json(d).into_response(),
        Err(e) => error(e),
    }
}

async fn fail(State(s): St, Path(intent): Path<String>) -> Response {
    settle(&s, &intent, Outcome::Failed, &PayOverrides::default()).await
}

async fn expire(State(s): St, Path(intent): Path<String>) -> Response {
    settle(&s, &intent, Outcome::Expired, &PayOverrides::default()).await
}

async fn duplicate(State(s): St, Path(intent): Path<String>) -> Response {
    match s.duplicate(&intent).await {
        Ok(d) => Json(d).into_response(),
        Err(e) => error(e),
    }
}

async fn out_of_order(State(s): St, Path(intent): Path<String>) -> Response {
    match s.out_of_order(&intent).await {
        Ok(d) => Json(d).into_response(),
        Err(e) => error(e),
    }
}

#[derive(Deserialize)]
struct ScanBody {
    intent_id: String,
    qr_code: String,
    notify_url: String,
}

async fn promptpay_scan(State(s): St, Json(b): Json<ScanBody>) -> Response {
    match s.promptpay_scan(&b.intent_id, &b.qr_code, &b.notify_url) {
        Ok(o) => (StatusCode::CREATED, Json(o)).into_response(),
        Err(e) => error(e),
    }
}

async fn inject(State(s): St, Json(f): Json<Fault>) -> Response {
    s.inject(f.clone());
    (StatusCode::CREATED, Json(f)).into_response()
}

async fn clear(State(s): St) -> StatusCode {
    s.clear_faults();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct WebhookBody {
    channel: String,
    url: String,
}

async fn webhook_endpoint(State(s): St, Json(b): Json<WebhookBody>) -> StatusCode {
    s.set_webhook_url(&b.channel, &b.url);
    StatusCode::NO_CONTENT
}

async fn callbacks(State(s): St) -> Response {
    Json(s.callbacks()).into_response()
}

#[derive(Deserialize)]
struct RefundModeBody {
    channel: String,
    mode: SimRefundMode,
}

async fn refund_mode(State(s): St, Json(b): Json<RefundModeBody>) -> StatusCode {
    s.refunds.set_mode(&b.channel, b.mode);
    StatusCode::NO_CONTENT
}

async fn refunds(State(s): St) -> Response {
    Json(s.refunds.all()).into_response()
}

#[derive(Deserialize)]
struct CompleteBody {
    succeed: bool,
}

async fn complete_refund(
    State(s): St,
    Path(refund): Path<String>,
    Json(b): Json<CompleteBody>,
) -> Response {
    match super::refunds::complete(&s, &refund, b.succeed).await {
        Ok(d) => Json(json!({ "callback": d })).into_response(),
        Err(e) => error(e),
    }
}

#[derive(Deserialize)]
struct DashboardBody {
    amount: i64,
}

async fn dashboard_refund(
    State(s): St,
    Path(intent): Path<String>,
    Json(b): Json<DashboardBody>,
) -> Response {
    match super::refunds::dashboard(&s, &intent, b.amount).await {
        Ok(d) => Json(d).into_response(),
        Err(e) => error(e),
    }
}
