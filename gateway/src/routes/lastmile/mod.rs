//! Last-mile routes under `/api/...`: accounts ([`auth`]), orders and bulk upload
//! ([`orders`]), shop integrations ([`integrations`]), self-serve go-live ([`golive`]). Each submodule holds thin handlers; the
//! engine's `lastmile` module holds the rules.

pub mod auth;
pub mod integrations;
pub mod orders;

pub mod consumer;
pub mod driver;
pub mod golive;
pub mod lockers;
pub mod returns;
pub mod sessions;
pub mod statements;
pub mod stream;

use crate::app::AppState;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, patch, post, put};

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/register", post(auth::register))
        .route("/api/auth/login", post(auth::login))
        .route("/api/auth/me", get(auth::me))
        .route("/api/orders", get(orders::list).post(orders::create))
        .route("/api/orders/sample.csv", get(orders::sample_csv))
        .route("/api/orders/{id}", get(orders::get))
        .route("/api/integrations/status", get(integrations::status))
        .route(
            "/api/integrations/{provider}/connect",
            post(integrations::connect),
        )
        .route(
            "/api/integrations/{provider}/simulate",
            post(integrations::simulate),
        )
        .route(
            "/api/integrations/{provider}/",
            get(integrations::provider_status),
        )
        .route(
            "/api/integrations/{provider}",
            get(integrations::provider_status_no_slash),
        )
        .route(
            "/api/integrations/{provider}/setup-info",
            get(integrations::setup_info),
        )
        .route(
            "/api/integrations/{provider}/sync",
            post(integrations::sync),
        )
        .route(
            "/api/integrations/{provider}/disconnect",
            post(integrations::disconnect),
        )
        .route("/api/admin/scheduler/sync-log", get(integrations::sync_log))
        .route(
            "/api/admin/scheduler/status",
            get(integrations::scheduler_status),
        )
        .route("/api/admin/scheduler/run-now", post(integrations::run_now))
        .route(
            "/api/integrations/{provider}/webhook",
            post(integrations::webhook)
                .layer(DefaultBodyLimit::max(integrations::WEBHOOK_MAX_BYTES)),
        )
        .route("/api/orders/{id}/create-session", post(sessions::create))
        .route("/api/payment-sessions", get(sessions::list))
        .route("/api/payment-sessions/{id}", get(sessions::get))
        .route(
            "/api/payment-sessions/{id}/parcel-status",
            post(sessions::parcel_status),
        )
        .route(
            "/api/payment-sessions/{id}/unlock-otp",
            post(sessions::unlock_otp),
        )
        .route("/api/payment-sessions/{id}/qr.png", get(sessions::qr_png))
        .route("/api/payment-sessions/{id}/qr.svg", get(sessions::qr_svg))
        .route("/api/session/{token}", get(consumer::get))
        .route(
            "/api/session/{token}/start-payment",
            post(consumer::start_payment),
        )
        .route("/api/driver/verify-otp", post(driver::verify_otp))
        .route("/api/events/stream", get(stream::stream))
        .route("/api/admin/merchants/{id}", patch(statements::set_fee))
        .route(
            "/api/admin/settlement-reports",
            post(statements::check_settlement),
        )
        .route(
            "/api/merchant-portal/ipay/settlement",
            get(statements::statement),
        )
        .route(
            "/api/merchant-portal/ipay/settlement/pdf",
            get(statements::statement_pdf),
        )
        // Returns (Sendcloud labels, refunds on receipt) and locker pickup codes.
        .route("/api/returns", get(returns::list))
        .route("/api/returns/open", post(returns::open))
        .route("/api/returns/{id}", get(returns::portal))
        .route("/api/returns/{id}/reject", post(returns::reject))
        .route("/api/returns/{id}/refund", post(returns::refund))
        .route("/api/labels/create", post(returns::create_label))
        .route(
            "/api/webhooks/sendcloud/returns",
            post(returns::sendcloud_webhook),
        )
        .route(
            "/api/integrations/sendcloud/webhook",
            post(returns::sendcloud_integration_webhook),
        )
        .route("/api/lockers/issue-code", post(lockers::issue_code_any))
        .route("/api/lockers/unlock", post(lockers::unlock))
        .route(
            "/api/lockers/{carrier}/issue-code",
            post(lockers::issue_code),
        )
        .route("/api/lockers/{carrier}/pickup", post(lockers::pickup))
        .route("/api/session/{token}/locker", get(lockers::consumer_locker))
        .merge(golive_router())
}

/// Self-serve go-live: the merchant's API keys, event endpoints, channels and mode.
fn golive_router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/merchant/mode",
            get(golive::get_mode).put(golive::set_mode),
        )
        .route(
            "/api/merchant/api-keys",
            get(golive::list_keys).post(golive::create_key),
        )
        .route(
            "/api/merchant/api-keys/{id}",
            axum::routing::delete(golive::revoke_key),
        )
        .route(
            "/api/merchant/webhook-endpoints",
            get(golive::list_endpoints).post(golive::create_endpoint),
        )
        .route(
            "/api/merchant/webhook-endpoints/{id}",
            patch(golive::update_endpoint).delete(golive::delete_endpoint),
        )
        .route(
            "/api/merchant/webhook-endpoints/{id}/rotate",
            post(golive::rotate_endpoint),
        )
        .route("/api/merchant/channels", get(golive::list_channels))
        .route(
            "/api/merchant/channels/{channel}",
            put(golive::configure_channel),
        )
}

/// `POST /api/orders/upload` alone: the application mounts it outside the global request
/// timeout and concurrency limit and gives it its own (`lastmile.upload_timeout_ms`,
/// `lastmile.upload_max_concurrent`), since a large file takes minutes.
pub fn upload_router() -> Router<AppState> {
    Router::new().route(
        "/api/orders/upload",
        // The body is streamed with its own limit (`lastmile.upload_max_bytes`).
        post(orders::upload).layer(DefaultBodyLimit::disable()),
    )
}

/// This module's part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        auth::register,
        auth::login,
        auth::me,
        orders::create,
        orders::list,
        orders::get,
        orders::upload,
        orders::sample_csv,
        integrations::connect,
        integrations::status,
        integrations::simulate,
        integrations::webhook,
        integrations::provider_status,
        integrations::provider_status_no_slash,
        integrations::setup_info,
        integrations::sync,
        integrations::disconnect,
        integrations::sync_log,
        integrations::scheduler_status,
        integrations::run_now,
        sessions::create,
        sessions::list,
        sessions::get,
        sessions::parcel_status,
        sessions::unlock_otp,
        sessions::qr_png,
        sessions::qr_svg,
        consumer::get,
        consumer::start_payment,
        driver::verify_otp,
        stream::stream,
        statements::set_fee,
        statements::statement,
        statements::statement_pdf,
        statements::check_settlement,
        golive::get_mode,
        golive::set_mode,
        golive::list_keys,
        golive::create_key,
        golive::revoke_key,
        golive::list_endpoints,
        golive::create_endpoint,
        golive::update_endpoint,
        golive::delete_endpoint,
        golive::rotate_endpoint,
        golive::list_channels,
        golive::configure_channel,
        returns::open,
        returns::portal,
        returns::list,
        returns::reject,
        returns::refund,
        returns::create_label,
        returns::sendcloud_webhook,
        returns::sendcloud_integration_webhook,
        lockers::issue_code,
        lockers::issue_code_any,
        lockers::pickup,
        lockers::consumer_locker,
        lockers::unlock,
    ),
    components(schemas(
        ipay_lastmile::accounts::Role,
        ipay_lastmile::accounts::RegisterRequest,
        ipay_lastmile::accounts::LoginRequest,
        ipay_lastmile::accounts::TokenResponse,
        ipay_lastmile::accounts::UserView,
        ipay_lastmile::orders::Order,
        ipay_lastmile::orders::OrderInput,
        ipay_lastmile::orders::OrderStatus,
        ipay_lastmile::orders::Customer,
        ipay_lastmile::orders::Address,
        ipay_lastmile::orders::OrderItem,
        ipay_lastmile::upload::UploadReport,
        ipay_lastmile::upload::RowError,
        ipay_lastmile::upload::DuplicateRow,
        ipay_lastmile::shops::ConnectRequest,
        ipay_lastmile::shops::ConnectionView,
        ipay_lastmile::shops::WebhookOutcome,
        ipay_lastmile::sync::MarketConnectRequest,
        ipay_lastmile::sync::MarketView,
        integrations::ProviderState,
        ipay_lastmile::sync::SetupInfo,
        ipay_lastmile::sync::SyncOutcome,
        ipay_lastmile::sync::SyncRowError,
        ipay_lastmile::sync::SyncLogEntry,
        ipay_lastmile::sync::scheduler::PassReport,
        ipay_lastmile::sync::scheduler::SchedulerStatus,
        sessions::CreatedSession,
        ipay_lastmile::sessions::SessionView,
        ipay_lastmile::sessions::SessionDetail,
        ipay_lastmile::sessions::SessionPage,
        ipay_lastmile::sessions::SessionStatus,
        ipay_lastmile::sessions::ParcelStatus,
        ipay_lastmile::sessions::LogEntry,
        ipay_lastmile::sessions::ConsumerView,
        ipay_lastmile::sessions::ConsumerPayment,
        ipay_lastmile::sessions::StartPaymentRequest,
        ipay_lastmile::sessions::VerifyOtpRequest,
        ipay_lastmile::sessions::VerifyOtpResponse,
        ipay_lastmile::sessions::ParcelStatusRequest,
        ipay_lastmile::orders::CursorPagination,
        ipay_lastmile::statements::SetFeeRequest,
        ipay_lastmile::statements::MerchantFee,
        ipay_lastmile::statements::FeeChange,
        ipay_lastmile::statements::Statement,
        ipay_lastmile::statements::StatementDay,
        ipay_lastmile::statements::mismatch::SettlementReport,
        ipay_lastmile::statements::mismatch::ReportLine,
        ipay_lastmile::statements::mismatch::MismatchCheck,
        ipay_lastmile::statements::mismatch::Mismatch,
        ipay_lastmile::statements::mismatch::LineDifference,
        ipay_lastmile::golive::ModeView,
        ipay_lastmile::golive::ModeRequest,
        ipay_lastmile::golive::keys::NewApiKey,
        ipay_lastmile::golive::keys::ApiKeyList,
        ipay_lastmile::golive::endpoints::NewEndpoint,
        ipay_lastmile::golive::endpoints::EndpointChange,
        ipay_lastmile::golive::endpoints::EndpointList,
        ipay_lastmile::golive::channels::ChannelCredentials,
        ipay_lastmile::golive::channels::ChannelList,
        ipay_lastmile::returns::OpenReturnRequest,
        ipay_lastmile::returns::ReturnView,
        ipay_lastmile::returns::ReturnPortal,
        ipay_lastmile::returns::ReturnPage,
        ipay_lastmile::returns::ReturnStatus,
        ipay_lastmile::returns::Opener,
        ipay_lastmile::returns::ReturnHistory,
        ipay_lastmile::returns::open::OpenedByConsumer,
        ipay_lastmile::returns::label::CreateLabelRequest,
        ipay_lastmile::returns::label::ReturnLabel,
        ipay_lastmile::returns::inbound::SendcloudOutcome,
        returns::LabelResponse,
        ipay_lastmile::lockers::IssueCodeRequest,
        ipay_lastmile::lockers::IssuedCode,
        ipay_lastmile::lockers::PickupRequest,
        ipay_lastmile::lockers::PickedUp,
        ipay_lastmile::lockers::ConsumerLocker,
        ipay_lastmile::lockers::UnlockRequest,
        ipay_lastmile::lockers::UnlockedCode,
    )),
    tags((name = "lastmile-auth", description = "Last-mile accounts (JWT)"),
         (name = "lastmile-orders", description = "Last-mile orders and bulk upload"),
         (name = "lastmile-sessions", description = "Payment sessions (18-digit reference), parcel states, event stream"),
         (name = "lastmile-consumer", description = "The consumer's pay page (no login)"),
         (name = "lastmile-driver", description = "Driver OTP check at the door"),
         (name = "lastmile-statements", description = "Fee statements (gross - parcels x fee = net) and channel settlement checks"),
         (name = "lastmile-golive", description = "Self-serve go-live: API keys, event endpoints, channel credentials, test / live mode"),
         (name = "lastmile-returns", description = "Returns: Sendcloud labels with the IPAY composite PDF, Sendcloud webhooks, refunds on receipt"),
         (name = "lastmile-lockers", description = "Locker carriers: pickup codes and pickup checks (X-IPAY-Signature)"))
)]
pub struct Doc;
