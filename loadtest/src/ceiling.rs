//! The "ceiling" server: the cheapest possible answer to
//! `POST /v1/payment-intents`, used to measure what the machine, the HTTP
//! stack and the load generator can do without any payment logic.

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio::net::TcpListener;

use crate::error::{Error, Result};
use crate::scenarios::CREATE_INTENTS_PATH;
use crate::target::require_loopback;

/// Fixed body of every create-intent answer.
pub const CREATED_BODY: &str = r#"{"id":"pi_ceiling","status":"pending"}"#;

/// Binds a listener on `addr`, which must be a loopback address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    require_loopback(addr)?;
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::new(format!("cannot listen on {addr}: {e}")))
}

/// The routes: `POST /v1/payment-intents` (201 with [`CREATED_BODY`]) and
/// `GET /healthz` (200).
pub fn router() -> Router {
    Router::new()
        .route(CREATE_INTENTS_PATH, post(create_intent))
        .route("/healthz", get(healthz))
}

/// Serves [`router`] on `listener` until `shutdown` completes, then lets
/// in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    axum::serve(listener, router())
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::new(format!("ceiling server failed: {e}")))
}

/// Completes on ctrl-c or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Reads (and ignores) the whole body, answers 201 with a fixed intent.
async fn create_intent(_body: Bytes) -> impl IntoResponse {
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        CREATED_BODY,
    )
}

async fn healthz() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
}
