//! The simulated PSP's daily settlement report per channel: every order of that channel
//! paid and created that UTC day, with the amount the PSP settled. Normally that is the
//! order's amount; a test (or a person, through `/_sim/settlement-skews`) can make the PSP
//! settle a different amount for one order, or leave it out, to play a discrepancy.
//!
//! The report's JSON shape is the one the engine's last-mile statements check takes
//! (`{channel, date, transactions: [{intent_id, amount, currency}]}`). It owns no comparison:
//! that is the engine's side.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::SimHandle;
use super::state::{OrderInfo, OrderStatus, SimState};

/// What the PSP settles differently from the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Skew {
    /// Settles the order's amount plus `delta` minor units (negative: less).
    Delta {
        /// Minor units added to the order's amount.
        delta: i64,
    },
    /// Leaves the order out of the report.
    Omit,
}

/// Skews per intent id, shared by the handle and the control API.
#[derive(Debug, Default)]
pub(crate) struct Skews(Mutex<HashMap<String, Skew>>);

/// One settled transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementLine {
    /// Our intent id.
    pub intent_id: String,
    /// Settled amount, minor units.
    pub amount: i64,
    /// Currency code (upper case).
    pub currency: String,
}

/// A channel's settlement report for one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementReport {
    /// Channel name.
    pub channel: String,
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    /// Settled transactions, in order of creation.
    pub transactions: Vec<SettlementLine>,
}

/// The report of `channel` for `date` from `orders` with `skews` applied. `None` when `date`
/// is not a `YYYY-MM-DD` day.
pub(crate) fn report(
    orders: &[OrderInfo],
    skews: &HashMap<String, Skew>,
    channel: &str,
    date: &str,
) -> Option<SettlementReport> {
    if date.len() != 10 {
        return None;
    }
    let from = ipay_engine::clock::Timestamp::parse_flexible(date)?.ms() / 1_000;
    let to = from + 86_400;
    let transactions = orders
        .iter()
        .filter(|o| o.channel == channel && o.status == OrderStatus::Paid)
        .filter(|o| (from..to).contains(&o.created_at))
        .filter_map(|o| {
            let amount = match skews.get(&o.intent_id) {
                None => o.amount,
                Some(Skew::Delta { delta }) => o.amount.saturating_add(*delta),
                Some(Skew::Omit) => return None,
            };
            Some(SettlementLine {
                intent_id: o.intent_id.clone(),
                amount,
                currency: o.currency.clone(),
            })
        })
        .collect();
    Some(SettlementReport {
        channel: channel.to_string(),
        date: date.to_string(),
        transactions,
    })
}

impl SimHandle {
    /// The settlement report of `channel` for `date` (`YYYY-MM-DD`); `None` for a bad date.
    pub fn settlement_report(&self, channel: &str, date: &str) -> Option<SettlementReport> {
        let skews = self.state.settlement_skews.0.lock().clone();
        report(&self.state.orders(), &skews, channel, date)
    }

    /// Makes the PSP settle `intent_id` differently from its order (a discrepancy).
    pub fn skew_settlement(&self, intent_id: &str, skew: Skew) {
        self.state
            .settlement_skews
            .0
            .lock()
            .insert(intent_id.to_string(), skew);
    }
}

/// `GET /_sim/settlement-report` query.
#[derive(Debug, Deserialize)]
struct ReportQuery {
    channel: String,
    date: String,
}

/// `POST /_sim/settlement-skews` body.
#[derive(Debug, Deserialize)]
struct SkewBody {
    intent_id: String,
    skew: Skew,
}

/// `/_sim/settlement-report` and `/_sim/settlement-skews`.
pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/_sim/settlement-report", get(get_report))
        .route("/_sim/settlement-skews", post(post_skew))
}

async fn get_report(State(s): State<Arc<SimState>>, Query(q): Query<ReportQuery>) -> Response {
    let skews = s.settlement_skews.0.lock().clone();
    match report(&s.orders(), &skews, &q.channel, &q.date) {
        Some(r) => Json(r).into_response(),
        None => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": "date must be YYYY-MM-DD"})),
        )
            .into_response(),
    }
}

async fn post_skew(State(s): State<Arc<SimState>>, Json(b): Json<SkewBody>) -> Response {
    s.settlement_skews.0.lock().insert(b.intent_id, b.skew);
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: &str, channel: &str, amount: i64, status: OrderStatus, at: i64) -> OrderInfo {
        OrderInfo {
            channel: channel.into(),
            intent_id: id.into(),
            amount,
            currency: "CNY".into(),
            notify_url: None,
            psp_reference: format!("psp-{id}"),
            qr_code: String::new(),
            status,
            created_at: at,
        }
    }

    #[test]
    fn the_report_lists_the_days_paid_orders_with_skews_applied() {
        // 2026-05-27T09:30:00Z
        let t = 1_779_874_200;
        let orders = vec![
            order("pi_a", "alipay", 699, OrderStatus::Paid, t),
            order("pi_b", "alipay", 100, OrderStatus::Paid, t + 60),
            order("pi_c", "alipay", 5, OrderStatus::Pending, t),
            order("pi_d", "wechat", 7, OrderStatus::Paid, t),
            order("pi_e", "alipay", 9, OrderStatus::Paid, t + 86_400),
            order("pi_f", "alipay", 11, OrderStatus::Paid, t),
        ];
        let mut skews = HashMap::new();
        skews.insert("pi_b".to_string(), Skew::Delta { delta: -30 });
        skews.insert("pi_f".to_string(), Skew::Omit);
        let r = report(&orders, &skews, "alipay", "2026-05-27").unwrap();
        let got: Vec<(&str, i64)> = r
            .transactions
            .iter()
            .map(|l| (l.intent_id.as_str(), l.amount))
            .collect();
        assert_eq!(got, vec![("pi_a", 699), ("pi_b", 70)]);
        assert!(report(&orders, &skews, "alipay", "27.05.2026").is_none());
    }
}
