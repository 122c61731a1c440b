//! What merchants, operators and consumers see of a session: the merchant's view with its pay
//! URL, the detail with the event log, and the consumer page's shapes. Reads only; nothing here
//! changes a session (reading may settle a payment, through `settle_from_intent`).

use super::{
    Actor, MAX_LOG_ENTRIES, ParcelStatus, PaymentSession, SESSION_LOG, SessionId, SessionStatus,
};
use crate::LastMile;
use crate::reference::IpayReference;
use ipay_engine::clock::Timestamp;
use ipay_engine::error::{EngineError, EngineResult};
use ipay_engine::ids::{MerchantId, PaymentIntentId};
use ipay_engine::store::EntryRange;
use serde::{Deserialize, Serialize};

/// A session as its merchant (and operators) see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    #[schema(value_type = String, example = "ps_01J7XZ1A2B3C4D5E6F7G8H9IKM")]
    pub id: SessionId,
    #[schema(value_type = String)]
    pub merchant_id: MerchantId,
    pub order_id: String,
    /// 18 digits, ISO 7064 MOD 97-10 check digits at the end.
    #[schema(value_type = String, example = "123456789012345678")]
    pub ipay_reference_18: IpayReference,
    /// The same, grouped by four for labels.
    pub ipay_reference_display: String,
    pub pay_url: String,
    /// What the QR code encodes (the pay URL).
    pub qr_payload: String,
    pub status: SessionStatus,
    pub parcel_status: ParcelStatus,
    pub amount: i64,
    pub currency: String,
    pub country: String,
    pub carrier_code: String,
    pub psp: Option<String>,
    pub payment_method: Option<String>,
    #[schema(value_type = Option<String>)]
    pub payment_intent: Option<PaymentIntentId>,
    pub otp_failures: u32,
    pub otp_locked: bool,
    pub livemode: bool,
    #[schema(value_type = String, format = DateTime)]
    pub created: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub paid_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub released_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub delivered_at: Option<Timestamp>,
}

/// One entry of a session's event log.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogEntry {
    /// The event id when the entry is a public event, else a log id.
    pub id: String,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// `session.created`, `payment.started`, `otp.attempt`, `parcel.status_changed`, …
    #[serde(rename = "type")]
    pub entry_type: String,
    /// What happened, never an OTP.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// `GET /api/payment-sessions/{id}`: the session and its log, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionDetail {
    #[serde(flatten)]
    pub session: SessionView,
    pub events: Vec<LogEntry>,
}

/// What the consumer's pay page may see: nothing internal, the OTP only once paid.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConsumerView {
    pub ipay_reference_18: String,
    pub ipay_reference_display: String,
    pub merchant_name: Option<String>,
    pub amount: i64,
    pub currency: String,
    pub status: SessionStatus,
    pub parcel_status: ParcelStatus,
    /// Channels the consumer may pay with.
    pub channels: Vec<String>,
    /// The open payment, while one is pending.
    pub payment: Option<ConsumerPayment>,
    /// The 4-digit code to give the driver; present only while PAID.
    pub otp: Option<String>,
}

/// The consumer's open payment.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConsumerPayment {
    pub channel: String,
    pub status: String,
    /// What to show or scan to pay (QR payload or checkout link).
    pub qr_code: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
}

impl LastMile {
    /// The pay URL of a token.
    pub fn session_pay_url(&self, token: &str) -> String {
        format!(
            "{}/pay/{token}",
            self.ps_scfg().pay_base_url.trim_end_matches('/')
        )
    }

    /// The merchant's view of a session.
    pub fn session_view(&self, s: &PaymentSession) -> SessionView {
        let pay_url = self.session_pay_url(&s.pay_token);
        SessionView {
            id: s.id,
            merchant_id: s.merchant_id,
            order_id: s.order_id.clone(),
            ipay_reference_18: s.reference,
            ipay_reference_display: s.reference.grouped(),
            qr_payload: pay_url.clone(),
            pay_url,
            status: s.status,
            parcel_status: s.parcel_status,
            amount: s.amount,
            currency: s.currency.clone(),
            country: s.country.clone(),
            carrier_code: s.carrier_code.clone(),
            psp: s.psp.clone(),
            payment_method: s.payment_method.clone(),
            payment_intent: s.payment_intent,
            otp_failures: s.otp_failures,
            otp_locked: s.otp_locked,
            livemode: s.livemode,
            created: s.created,
            updated: s.updated,
            paid_at: s.paid_at,
            released_at: s.released_at,
            delivered_at: s.delivered_at,
        }
    }

    /// The session `who` may see, else 404 (another merchant's session is not found).
    pub(super) async fn ps_visible(&self, who: Actor, id: &str) -> EngineResult<PaymentSession> {
        let nf = || EngineError::not_found("payment session", id);
        let sid = SessionId::parse(id).map_err(|_| nf())?;
        let s = self.ps_load(sid).await?.ok_or_else(nf)?;
        match who {
            Actor::Merchant(m) if m != s.merchant_id => Err(nf()),
            _ => Ok(s),
        }
    }

    /// A session with its event log (oldest first).
    pub async fn session_detail(&self, who: Actor, id: &str) -> EngineResult<SessionDetail> {
        let s = self.ps_visible(who, id).await?;
        let s = self.settle_from_intent(s).await?;
        let rows = self
            .engine
            .ledger()
            .scan_entries(
                SESSION_LOG,
                &s.id.to_string(),
                &EntryRange::all(MAX_LOG_ENTRIES as usize),
            )
            .await?;
        let mut events: Vec<LogEntry> = rows
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect();
        in_time_order(&mut events);
        Ok(SessionDetail {
            session: self.session_view(&s),
            events,
        })
    }
}

/// Sorts a session's log by time. Entries are indexed under their ids, `evt_…` for public
/// events and `log_…` for private notes, so the index groups them by kind; the ids' time-ordered
/// bodies (after the prefix) break ties between entries of the same millisecond.
fn in_time_order(entries: &mut [LogEntry]) {
    fn body(id: &str) -> &str {
        id.split_once('_').map_or(id, |(_, b)| b)
    }
    entries.sort_by(|a, b| (a.at, body(&a.id)).cmp(&(b.at, body(&b.id))));
}

#[cfg(test)]
mod log_order_tests {
    use super::*;

    fn entry(id: &str, at: i64) -> LogEntry {
        LogEntry {
            id: id.into(),
            at: Timestamp(at),
            entry_type: "x".into(),
            detail: serde_json::Value::Null,
        }
    }

    #[test]
    fn events_and_notes_interleave_by_time() {
        // Index order: every `evt_` before every `log_`.
        let mut log = vec![
            entry("evt_01MCC5RM00000000000000000B", 2),
            entry("evt_01MCC5RM00000000000000000D", 4),
            entry("log_01MCC5RM00000000000000000A", 1),
            entry("log_01MCC5RM00000000000000000C", 2),
        ];
        in_time_order(&mut log);
        let ids: Vec<&str> = log.iter().map(|e| &e.id[..]).collect();
        assert_eq!(
            ids,
            [
                "log_01MCC5RM00000000000000000A",
                "evt_01MCC5RM00000000000000000B",
                "log_01MCC5RM00000000000000000C",
                "evt_01MCC5RM00000000000000000D",
            ]
        );
    }
}
