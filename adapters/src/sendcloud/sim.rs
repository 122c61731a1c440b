//! A Sendcloud on loopback for tests: `POST /api/v2/parcels` (HTTP Basic checked against the
//! account's keys, return parcels with a requested label only) and the label download, which
//! answers a small real PDF. [`SendcloudSim::send_status`] plays Sendcloud's side of a
//! `parcel_status_changed` webhook, signed with the secret key as Sendcloud signs it.
//!
//! It owns no IPAY logic: it is the world outside, kept to what the return flow exercises.

use super::{SIGNATURE_HEADER, SendcloudKeys, sign};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;

/// A parcel the simulator created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimParcel {
    pub id: u64,
    pub tracking_number: String,
    /// What the client sent as `order_number`.
    pub order_number: String,
    pub is_return: bool,
}

#[derive(Default)]
struct Inner {
    parcels: Vec<SimParcel>,
    auth_failures: u32,
    next_id: u64,
}

#[derive(Clone)]
struct Shared {
    keys: SendcloudKeys,
    base: String,
    inner: Arc<Mutex<Inner>>,
}

/// A running simulated Sendcloud. Dropping it stops the server.
pub struct SendcloudSim {
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
    http: reqwest::Client,
}

impl Drop for SendcloudSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SendcloudSim {
    /// Starts on a free loopback port, accepting `keys`.
    pub async fn start(keys: SendcloudKeys) -> std::io::Result<SendcloudSim> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let base = format!("http://{}", listener.local_addr()?);
        let shared = Shared {
            keys,
            base,
            inner: Arc::new(Mutex::new(Inner {
                next_id: 40_000_001,
                ..Default::default()
            })),
        };
        let app = Router::new()
            .route("/api/v2/parcels", post(create_parcel))
            .route("/api/v2/labels/label_printer/{id}", get(label))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(SendcloudSim {
            shared,
            task,
            http: reqwest::Client::new(),
        })
    }

    /// Base URL (`http://127.0.0.1:port`), what the client is configured with.
    pub fn base_url(&self) -> &str {
        &self.shared.base
    }

    /// Parcels created so far.
    pub fn parcels(&self) -> Vec<SimParcel> {
        self.shared.inner.lock().parcels.clone()
    }

    /// Requests refused for wrong or missing credentials.
    pub fn auth_failures(&self) -> u32 {
        self.shared.inner.lock().auth_failures
    }

    /// The body Sendcloud posts when a parcel's status changes.
    pub fn status_body(parcel: &SimParcel, status_id: i64, message: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "action": "parcel_status_changed",
            "timestamp": 1_700_000_000_000_i64,
            "parcel": {
                "id": parcel.id,
                "tracking_number": parcel.tracking_number,
                "external_reference": parcel.order_number,
                "is_return": parcel.is_return,
                "status": {"id": status_id, "message": message}
            }
        }))
        .unwrap_or_default()
    }

    /// Posts a signed `parcel_status_changed` webhook to `url`; answers the HTTP status.
    pub async fn send_status(
        &self,
        url: &str,
        parcel: &SimParcel,
        status_id: i64,
        message: &str,
    ) -> u16 {
        let body = Self::status_body(parcel, status_id, message);
        let sig = sign(&self.shared.keys.secret_key, &body);
        match self
            .http
            .post(url)
            .header(SIGNATURE_HEADER, sig)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
        {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }
}

fn authorised(s: &Shared, headers: &HeaderMap) -> bool {
    let ok = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == s.keys.basic_auth());
    if !ok {
        s.inner.lock().auth_failures += 1;
    }
    ok
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {"code": status.as_u16(), "request": "api/v2/parcels", "message": message}});
    (status, axum::Json(body)).into_response()
}

async fn create_parcel(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorised(&s, &headers) {
        return error(StatusCode::UNAUTHORIZED, "Invalid username/password.");
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "Invalid JSON");
    };
    let p = &v["parcel"];
    for field in ["name", "address", "city", "postal_code", "country"] {
        if p[field].as_str().is_none_or(|x| x.trim().is_empty()) {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("{field}: This field is required."),
            );
        }
    }
    if p["is_return"] != true || p["request_label"] != true {
        return error(
            StatusCode::BAD_REQUEST,
            "only return parcels with a label are simulated",
        );
    }
    let parcel = {
        let mut g = s.inner.lock();
        let id = g.next_id;
        g.next_id += 1;
        let parcel = SimParcel {
            id,
            tracking_number: format!("3SRET{id:010}"),
            order_number: p["order_number"].as_str().unwrap_or_default().to_string(),
            is_return: true,
        };
        g.parcels.push(parcel.clone());
        parcel
    };
    let label = format!("{}/api/v2/labels/label_printer/{}", s.base, parcel.id);
    let out = json!({"parcel": {
        "id": parcel.id,
        "name": p["name"], "address": p["address"], "city": p["city"],
        "postal_code": p["postal_code"], "country": {"iso_2": p["country"]},
        "order_number": parcel.order_number,
        "tracking_number": parcel.tracking_number,
        "is_return": true,
        "status": {"id": 1000, "message": "Ready to send"},
        "label": {"label_printer": label, "normal_printer": [label]}
    }});
    (StatusCode::OK, axum::Json(out)).into_response()
}

async fn label(State(s): State<Shared>, headers: HeaderMap, Path(id): Path<u64>) -> Response {
    if !authorised(&s, &headers) {
        return error(StatusCode::UNAUTHORIZED, "Invalid username/password.");
    }
    let Some(p) = s.inner.lock().parcels.iter().find(|p| p.id == id).cloned() else {
        return error(StatusCode::NOT_FOUND, "No Parcel matches the given query.");
    };
    let pdf = label_pdf(&p.tracking_number);
    ([(header::CONTENT_TYPE, "application/pdf")], pdf).into_response()
}

/// A one-page A6 label PDF with the tracking number, written by hand (with a correct xref
/// table) so the simulator needs no PDF library.
pub fn label_pdf(tracking: &str) -> Vec<u8> {
    let text: String = tracking
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let content = format!(
        "BT /F1 14 Tf 20 380 Td (RETURN LABEL) Tj 0 -24 Td ({text}) Tj ET\n0 0 0 RG 10 10 277 400 re S\n"
    );
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 297 420] /Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>".to_string(),
        format!("<< /Length {} >>\nstream\n{content}endstream", content.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::with_capacity(objects.len());
    for (i, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{o}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for off in offsets {
        out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}
