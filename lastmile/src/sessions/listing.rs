//! Listing a merchant's sessions newest first: the query, its filters and the keyset page
//! over the day-partitioned index.

use super::store::internal;
use super::{
    Actor, ParcelStatus, PaymentSession, SESSION_DAYS, SESSIONS_BY_DAY, SessionId, SessionStatus,
    SessionView,
};
use crate::LastMile;
use crate::daily::{self, day};
use crate::orders::CursorPagination;
use ipay_engine::error::{EngineError, EngineResult};
use ipay_engine::ids::MerchantId;
use serde::{Deserialize, Serialize};

/// Query of `GET /api/payment-sessions`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SessionListParams {
    /// 1 to 100, default 20.
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// ISO 3166-1 alpha-2 country of the delivery address.
    pub country: Option<String>,
    /// Carrier code (`DHL`, `POSTNL`, …).
    pub carrier: Option<String>,
    /// Channel of the payment (`sandbox`, `stripe`, …).
    pub psp: Option<String>,
    pub payment_method: Option<String>,
    /// CREATED | PAYMENT_PENDING | PAID | RELEASED
    pub status: Option<String>,
    /// AWAITING_PICKUP | PICKED_UP | IN_DELIVERY | DELIVERED
    pub parcel_status: Option<String>,
    /// Operators only: whose sessions to list.
    pub merchant_id: Option<String>,
}

/// One page of sessions, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionPage {
    pub data: Vec<SessionView>,
    pub pagination: CursorPagination,
}

impl LastMile {
    /// A merchant's sessions (operators: any merchant's, given `merchant_id`), newest first,
    /// filtered, keyset-paginated. A page may hold fewer than `limit` sessions while
    /// `has_more` is true when the scan budget ran out; follow `next_cursor`.
    pub async fn list_sessions(
        &self,
        who: Actor,
        p: &SessionListParams,
    ) -> EngineResult<SessionPage> {
        let merchant = list_owner(who, p.merchant_id.as_deref())?;
        let limit = p.limit.unwrap_or(20);
        if limit == 0 || limit > 100 {
            return Err(EngineError::invalid(
                "parameter_invalid",
                "limit",
                "limit must be between 1 and 100",
            ));
        }
        let cursor = parse_cursor(p.cursor.as_deref())?;
        let filter = Filter::parse(p)?;
        let owner = merchant.to_string();
        let page = daily::newest_first(
            self.engine.ledger().as_ref(),
            daily::DailyScan {
                days_index: SESSION_DAYS,
                items_index: SESSIONS_BY_DAY,
                owner: &owner,
                lower: None,
                upper: cursor.map(|c| c.to_string()),
                first_day: None,
                last_day: cursor.map(|c| day(c.timestamp_ms())),
                limit,
                budget: self.ps_scfg().list_scan_budget.max(100),
            },
            |value| {
                let s: PaymentSession = serde_json::from_slice(value).map_err(internal)?;
                Ok(filter.matches(&s).then_some(s))
            },
            |s| s.id.to_string(),
        )
        .await?;
        Ok(SessionPage {
            data: page.data.iter().map(|s| self.session_view(s)).collect(),
            pagination: CursorPagination {
                limit,
                next_cursor: page.next_cursor,
                has_more: page.has_more,
            },
        })
    }
}

/// Whose sessions a listing shows: a merchant its own, an operator the one it names.
fn list_owner(who: Actor, merchant_id: Option<&str>) -> EngineResult<MerchantId> {
    match (who, merchant_id) {
        (Actor::Merchant(m), None) => Ok(m),
        (Actor::Merchant(_), Some(_)) => Err(EngineError::invalid(
            "parameter_unknown",
            "merchant_id",
            "merchant_id is for operators; merchants see their own sessions",
        )),
        (Actor::Operator, Some(m)) => MerchantId::parse(m)
            .map_err(|e| EngineError::invalid("parameter_invalid", "merchant_id", e.to_string())),
        (Actor::Operator, None) => Err(EngineError::invalid(
            "parameter_missing",
            "merchant_id",
            "operators list one merchant's sessions at a time: pass merchant_id",
        )),
    }
}

/// The session a page continues after.
fn parse_cursor(cursor: Option<&str>) -> EngineResult<Option<SessionId>> {
    cursor
        .map(|c| {
            SessionId::parse(c).map_err(|_| {
                EngineError::invalid(
                    "parameter_invalid",
                    "cursor",
                    "cursor must be the next_cursor of a previous page",
                )
            })
        })
        .transpose()
}

/// A listing's filters, normalised the way the session fields are stored (country and
/// carrier upper case, channel and method lower case).
struct Filter {
    status: Option<SessionStatus>,
    parcel: Option<ParcelStatus>,
    country: Option<String>,
    carrier: Option<String>,
    psp: Option<String>,
    method: Option<String>,
}

impl Filter {
    fn parse(p: &SessionListParams) -> EngineResult<Filter> {
        let status = p
            .status
            .as_deref()
            .map(|v| {
                SessionStatus::parse(v).ok_or_else(|| {
                    EngineError::invalid(
                        "parameter_invalid",
                        "status",
                        "status must be one of CREATED, PAYMENT_PENDING, PAID, RELEASED",
                    )
                })
            })
            .transpose()?;
        let parcel = p
            .parcel_status
            .as_deref()
            .map(|v| {
                ParcelStatus::parse(v).ok_or_else(|| {
                    EngineError::invalid(
                        "parameter_invalid",
                        "parcel_status",
                        "parcel_status must be one of AWAITING_PICKUP, PICKED_UP, IN_DELIVERY, DELIVERED",
                    )
                })
            })
            .transpose()?;
        let upper_case = |v: &Option<String>| v.as_deref().map(|c| c.trim().to_ascii_uppercase());
        let lower_case = |v: &Option<String>| v.as_deref().map(|c| c.trim().to_ascii_lowercase());
        Ok(Filter {
            status,
            parcel,
            country: upper_case(&p.country),
            carrier: upper_case(&p.carrier),
            psp: lower_case(&p.psp),
            method: lower_case(&p.payment_method),
        })
    }

    fn matches(&self, s: &PaymentSession) -> bool {
        self.status.is_none_or(|x| s.status == x)
            && self.parcel.is_none_or(|x| s.parcel_status == x)
            && self.country.as_deref().is_none_or(|x| s.country == x)
            && self.carrier.as_deref().is_none_or(|x| s.carrier_code == x)
            && self
                .psp
                .as_deref()
                .is_none_or(|x| s.psp.as_deref() == Some(x))
            && self
                .method
                .as_deref()
                .is_none_or(|x| s.payment_method.as_deref() == Some(x))
    }
}
