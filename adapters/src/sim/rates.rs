//! The simulator's daily exchange rates at `GET /rates`, in the rates document format the
//! engine's `settlement.rates_source` reads (see `docs/settlement.md`). The rates are fixed,
//! made up and marked `sample`; `as_of` is midnight UTC of the current day, as a daily
//! publisher's would be. It owns no conversion logic.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// `FROM/TO` pairs and their rates (decimal strings, never floats).
const RATES: &[(&str, &str)] = &[
    ("CNY/USD", "0.1416"),
    ("CNY/EUR", "0.1305"),
    ("THB/USD", "0.02884"),
    ("THB/EUR", "0.02658"),
    ("EUR/USD", "1.0850"),
    ("USD/EUR", "0.9217"),
    ("USD/CNY", "7.0620"),
    ("EUR/CNY", "7.6600"),
    ("GBP/EUR", "1.1834"),
    ("EUR/GBP", "0.8450"),
];

/// The route of this module.
pub(crate) fn router() -> Router {
    Router::new().route("/rates", get(rates))
}

/// Publisher name in the document's `source`.
pub const SOURCE: &str = "psp-sim";

async fn rates() -> impl IntoResponse {
    let today = chrono::Utc::now().format("%Y-%m-%d");
    let pairs: serde_json::Map<String, serde_json::Value> = RATES
        .iter()
        .map(|(p, r)| (p.to_string(), serde_json::Value::String(r.to_string())))
        .collect();
    let doc = serde_json::json!({
        "sample": true,
        "note": "PSP simulator rates: fixed, made up, for tests",
        "source": SOURCE,
        "as_of": format!("{today}T00:00:00Z"),
        "rates": pairs,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.to_string(),
    )
}
