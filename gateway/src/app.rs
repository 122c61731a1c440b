//! Assembles the HTTP application: state, routes, middleware (request id + error envelope,
//! metrics, body limit, timeout, concurrency limit) and the server lifecycle. Connections
//! themselves (caps, timeouts, accept errors) are `server.rs`'s.

use crate::config::Config;
use crate::error::{ApiError, request_id};
use crate::routes;
use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use ipay_engine::Engine;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tower::ServiceBuilder;
use utoipa_swagger_ui::SwaggerUi;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub webhooks: Arc<ipay_engine::webhooks::Webhooks>,
    pub lastmile: Arc<ipay_lastmile::LastMile>,
    pub metrics: PrometheusHandle,
    pub admin_token: Arc<str>,
    /// Request rate limits per API key and per merchant (`[limits] rate_per_…`).
    pub rate_limits: Arc<crate::ratelimit::RateLimits>,
}

/// The process-wide Prometheus recorder (installed once, shared by every server in a process).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("ipay_ledger_group_size".into()),
                        &[
                            1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                            2048.0,
                        ],
                    )
                });
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                Err(_) => PrometheusBuilder::new().build_recorder(),
            };
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

async fn track_metrics(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_owned();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("ipay_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status).increment(1);
    metrics::histogram!("ipay_http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    resp
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        "no such route; see /openapi.json for the API",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that HTTP method; see /openapi.json",
    )
}

async fn overloaded(err: tower::BoxError) -> Response {
    if err.is::<tower::timeout::error::Elapsed>() {
        return ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request took too long and was abandoned; retry it",
        )
        .into_response();
    }
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "the server is at its concurrency limit; retry shortly",
    );
    e.retry_after = Some(1);
    e.into_response()
}

/// The full router.
pub fn router(state: AppState, cfg: &Config) -> Router {
    let api = Router::new()
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/metrics", get(routes::health::metrics))
        .route("/v1/admin/merchants", post(routes::admin::create_merchant))
        .route(
            "/v1/api-keys",
            get(routes::api_keys::list).post(routes::api_keys::create),
        )
        .route(
            "/v1/api-keys/{id}",
            delete(routes::api_keys::revoke).patch(routes::api_keys::update),
        )
        .route("/v1/api-keys/{id}/rotate", post(routes::api_keys::rotate))
        .route(
            "/v1/services",
            get(routes::services::list).post(routes::services::upsert),
        )
        .route(
            "/v1/services/{id}",
            get(routes::services::get).delete(routes::services::delete),
        )
        .route(
            "/v1/services/{id}/{action}",
            patch(routes::services::action),
        )
        .route(
            "/v1/payment-intents",
            get(routes::intents::list).post(routes::intents::create),
        )
        .route("/v1/payment-intents/{id}", get(routes::intents::get))
        .route(
            "/v1/payment-intents/{id}/cancel",
            post(routes::intents::cancel),
        )
        .route(
            "/v1/refunds",
            get(routes::refunds::list).post(routes::refunds::create),
        )
        .route("/v1/refunds/{id}", get(routes::refunds::get))
        .route("/v1/refunds/{id}/confirm", post(routes::refunds::confirm))
        .route("/v1/events", get(routes::events::list))
        .route("/v1/events/{id}", get(routes::events::get))
        .route(
            "/v1/sandbox/payment-intents/{id}/succeed",
            post(routes::sandbox::succeed),
        )
        .route(
            "/v1/sandbox/payment-intents/{id}/fail",
            post(routes::sandbox::fail),
        )
        .merge(routes::channels::router())
        .merge(routes::subscriptions::router())
        .merge(routes::webhooks::router())
        .merge(routes::settlement::router())
        .merge(routes::lastmile::router())
        .merge(routes::internal::router())
        .merge(routes::analytics::router())
        .merge(crate::pages::router())
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone());
    // Bulk upload streams files of up to `lastmile.upload_max_bytes` for minutes: it sits
    // outside the global timeout and concurrency limit, with bounds of its own.
    let upload = routes::lastmile::upload_router()
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn(request_id))
                .layer(HandleErrorLayer::new(overloaded))
                .load_shed()
                .concurrency_limit(cfg.lastmile.upload_max_concurrent.max(1))
                .timeout(Duration::from_millis(cfg.lastmile.upload_timeout_ms.max(1)))
                .layer(tower_http::catch_panic::CatchPanicLayer::new())
                .layer(middleware::from_fn(track_metrics)),
        );
    let docs: Router = SwaggerUi::new("/docs")
        .url("/openapi.json", crate::openapi::document())
        .into();
    api.merge(docs)
        .fallback(not_found)
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn(request_id))
                .layer(HandleErrorLayer::new(overloaded))
                .load_shed()
                .concurrency_limit(cfg.server.max_concurrent_requests.max(1))
                .timeout(Duration::from_millis(cfg.server.request_timeout_ms.max(1)))
                .layer(tower_http::catch_panic::CatchPanicLayer::new())
                .layer(DefaultBodyLimit::max(cfg.server.max_body_bytes))
                .layer(middleware::from_fn(track_metrics)),
        )
        .merge(upload)
}

/// A server running in the background.
pub struct RunningServer {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish, waits for the server task.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = self.task.await;
    }

    /// Waits until the server ends (after a shutdown signal).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Starts this node's webhook subsystem on the engine's ledger, hot state and clock. The
/// ledger's outbox is attached here if the caller did not attach it before starting the engine
/// (the `ipay` binary does; test harnesses that write no events before this may rely on this).
async fn start_webhooks(
    engine: &Engine,
    cfg: &Config,
) -> Result<Arc<ipay_engine::webhooks::Webhooks>, String> {
    use ipay_engine::webhooks::{Outbox, WebhookDeps, Webhooks};
    let outbox = Outbox::attach(engine.ledger().as_ref()).map_err(|e| e.to_string())?;
    let deps = WebhookDeps {
        ledger: engine.ledger().clone(),
        hot: engine.hot().clone(),
        clock: engine.clock().clone(),
        outbox,
        url_policy: cfg.webhooks.url_policy(),
        max_page_size: engine.config().limits.max_page_size,
    };
    Webhooks::start(deps, cfg.webhooks.clone())
        .await
        .map_err(|e| e.to_string())
}

/// Binds `cfg.server.listen` and serves the API on the given engine until `shutdown` resolves
/// or [`RunningServer::stop`] is called.
pub async fn start(engine: Engine, cfg: &Config) -> std::io::Result<RunningServer> {
    let webhooks = start_webhooks(&engine, cfg)
        .await
        .map_err(std::io::Error::other)?;
    let lastmile = ipay_lastmile::LastMile::start(&engine, cfg.lastmile.clone())
        .await
        .map_err(std::io::Error::other)?;
    // Cluster nodes share one budget per key and merchant through the hot state.
    let rate_limits = if engine.ledger().shared() {
        crate::ratelimit::RateLimits::shared(&cfg.limits, engine.hot().clone())
    } else {
        crate::ratelimit::RateLimits::new(&cfg.limits)
    };
    let state = AppState {
        engine,
        webhooks,
        lastmile,
        metrics: metrics_handle(),
        admin_token: Arc::from(cfg.admin.token.as_str()),
        rate_limits: Arc::new(rate_limits),
    };
    let app = router(state, cfg);
    let limits = crate::server::ConnLimits::from_config(&cfg.server);
    let listener = tokio::net::TcpListener::bind(cfg.server.listen).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        crate::server::serve(listener, app, limits, async move {
            let _ = rx.await;
        })
        .await;
    });
    Ok(RunningServer {
        addr,
        shutdown: Some(tx),
        task,
    })
}
