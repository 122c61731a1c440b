//! The consumer's side of a payment session, without login: the pay page's data and starting a
//! payment. The pay token in the path (256 random bits) is the only credential, so responses
//! carry nothing internal (no ids, no merchant data beyond its name, no customer data) and the
//! OTP only once the session is paid.

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::ApiJson;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use ipay_lastmile::sessions::{ConsumerView, StartPaymentRequest};

/// What the consumer's pay page (`/pay/{token}`) shows. `otp` is present only while the session
/// is PAID: the consumer gives it to the driver at the door.
#[utoipa::path(get, path = "/api/session/{token}", tag = "lastmile-consumer",
    params(("token" = String, Path, description = "the pay token of the pay URL")),
    responses((status = 200, body = ConsumerView),
              (status = 404, body = crate::routes::ErrorEnvelope)))]
pub async fn get(
    State(st): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let view = st.lastmile.consumer_view(&token).await?;
    Ok(crate::routes::json(StatusCode::OK, &view))
}

/// Starts the payment on a channel (an open payment on the same channel is reused). In test
/// mode, `{"channel":"sandbox","simulate":"succeed"}` settles it at once.
#[utoipa::path(post, path = "/api/session/{token}/start-payment", tag = "lastmile-consumer",
    params(("token" = String, Path)), request_body = StartPaymentRequest,
    responses((status = 200, body = ConsumerView),
              (status = 400, body = crate::routes::ErrorEnvelope),
              (status = 404, body = crate::routes::ErrorEnvelope),
              (status = 409, description = "already paid", body = crate::routes::ErrorEnvelope)))]
pub async fn start_payment(
    State(st): State<AppState>,
    Path(token): Path<String>,
    ApiJson(body): ApiJson<StartPaymentRequest>,
) -> Result<Response, ApiError> {
    let view = st.lastmile.start_payment(&token, body).await?;
    Ok(crate::routes::json(StatusCode::OK, &view))
}
