//! Last-mile orders over HTTP: create, list, get, bulk upload and the sample CSV. Handlers
//! extract, call `LastMile` and map; validation and storage live in the engine.

use super::auth::AuthUser;
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ipay_lastmile::orders::{Order, OrderInput, OrderListParams};
use ipay_lastmile::upload::{UploadFormat, UploadReport};

/// Creates one order (source `api`). Emits `order.created`.
#[utoipa::path(post, path = "/api/orders", tag = "lastmile-orders",
    security(("bearer_jwt" = [])), request_body = OrderInput,
    responses((status = 201, body = Order),
              (status = 400, body = crate::routes::ErrorEnvelope),
              (status = 409, description = "order_duplicate: external_id already used", body = crate::routes::ErrorEnvelope)))]
pub async fn create(
    State(st): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<OrderInput>,
) -> Result<Response, ApiError> {
    let merchant = user.require_merchant()?;
    let order = st.lastmile.create_order(merchant, body, "api").await?;
    Ok(crate::routes::json(StatusCode::CREATED, &order))
}

/// The merchant's orders, newest first, filtered, keyset-paginated (`next_cursor`).
#[utoipa::path(get, path = "/api/orders", tag = "lastmile-orders",
    security(("bearer_jwt" = [])), params(OrderListParams),
    responses((status = 200, description = "{data: [Order], pagination: {limit, next_cursor, has_more}}"),
              (status = 400, body = crate::routes::ErrorEnvelope)))]
pub async fn list(
    State(st): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<OrderListParams>,
) -> Result<Response, ApiError> {
    let merchant = user.require_merchant()?;
    let page = st.lastmile.list_orders(merchant, &q).await?;
    Ok(crate::routes::json(StatusCode::OK, &page))
}

/// One of the merchant's orders (404 for anyone else's).
#[utoipa::path(get, path = "/api/orders/{id}", tag = "lastmile-orders",
    security(("bearer_jwt" = [])), params(("id" = String, Path)),
    responses((status = 200, body = Order), (status = 404, body = crate::routes::ErrorEnvelope)))]
pub async fn get(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let merchant = user.require_merchant()?;
    let order = st.lastmile.get_order(merchant, &id).await?;
    Ok(crate::routes::json(StatusCode::OK, &order))
}

/// Query of `POST /api/orders/upload`.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UploadParams {
    /// `csv` or `xlsx`, when neither the content type nor the file name says.
    pub format: Option<String>,
    /// Currency of rows when the file has no currency column (ISO 4217).
    pub currency: Option<String>,
}

fn unsupported() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "upload_format_unsupported",
        "send a CSV (text/csv) or XLSX file, as the raw body or as the multipart field `file`; \
         or say ?format=csv|xlsx",
    )
}

fn format_of(
    q: &UploadParams,
    content_type: Option<&str>,
    file_name: Option<&str>,
) -> Result<UploadFormat, ApiError> {
    match q.format.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("csv") => Ok(UploadFormat::Csv),
        Some("xlsx") => Ok(UploadFormat::Xlsx),
        Some(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
            "format must be csv or xlsx",
        )
        .param("format")),
        None => UploadFormat::detect(content_type, file_name).ok_or_else(unsupported),
    }
}

/// Bulk-creates orders from a CSV or XLSX (raw body, or multipart field `file`). Columns are
/// mapped from header synonyms; valid rows are stored, bad rows reported as
/// `{row, column, reason}`, rows with a known external id skipped. CSV is streamed.
#[utoipa::path(post, path = "/api/orders/upload", tag = "lastmile-orders",
    security(("bearer_jwt" = [])), params(UploadParams),
    request_body(content = String, content_type = "text/csv",
        description = "CSV or XLSX bytes, or multipart/form-data with field `file`"),
    responses((status = 200, body = UploadReport),
              (status = 400, description = "upload_columns_missing, upload_empty, upload_unreadable, upload_too_large", body = crate::routes::ErrorEnvelope),
              (status = 415, body = crate::routes::ErrorEnvelope)))]
pub async fn upload(
    State(st): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<UploadParams>,
    req: Request,
) -> Result<Response, ApiError> {
    let merchant = user.require_merchant()?;
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let currency = q.currency.clone();
    let report = if ct
        .as_deref()
        .is_some_and(|c| c.to_ascii_lowercase().starts_with("multipart/form-data"))
    {
        let mut mp = Multipart::from_request(req, &st).await.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("malformed multipart body: {e}"),
            )
        })?;
        let mut found = None;
        while let Some(field) = mp.next_field().await.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("malformed multipart body: {e}"),
            )
        })? {
            if field.name() == Some("file") || field.file_name().is_some() {
                let format = format_of(&q, field.content_type(), field.file_name())?;
                found = Some(
                    st.lastmile
                        .upload_orders(merchant, format, currency.as_deref(), field)
                        .await?,
                );
                break;
            }
        }
        found.ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "parameter_missing",
                "the multipart body has no `file` field",
            )
            .param("file")
        })?
    } else {
        let format = format_of(&q, ct.as_deref(), None)?;
        let body = req.into_body().into_data_stream();
        st.lastmile
            .upload_orders(merchant, format, currency.as_deref(), body)
            .await?
    };
    Ok(crate::routes::json(StatusCode::OK, &report))
}

/// A CSV template with every recognised column and two example rows.
#[utoipa::path(get, path = "/api/orders/sample.csv", tag = "lastmile-orders",
    responses((status = 200, content_type = "text/csv", body = String)))]
pub async fn sample_csv() -> Response {
    let mut r = SAMPLE_CSV.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    r.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"ipay-orders-sample.csv\""),
    );
    r
}

const SAMPLE_CSV: &str = "\
external_id,customer_name,email,phone,address_line1,address_line2,postal_code,city,region,country,amount,currency,carrier_code,ipay_flag,sku,item_name,qty,unit_price
SHOP-10001,Jan de Vries,jan@example.nl,+31 6 12345678,Damrak 1,,1012 LG,Amsterdam,,NL,24.95,EUR,POSTNL,true,TSHIRT-M,T-shirt size M,1,24.95
SHOP-10002,Lena Müller,lena@example.de,+49 30 1234567,Unter den Linden 5,2. OG,10117,Berlin,Berlin,DE,59.90,EUR,DHL,true,SNEAKER-42,Sneakers size 42,2,29.95
";
