//! Last-mile fee statements: what IPAY bills a merchant for a period under the fixed-fee
//! model, `net = gross − parcels × fee_per_parcel`, as JSON (totals and a daily breakdown),
//! CSV (one line per parcel, for the accountant) and PDF ([`pdf`]); the operator-set fee per
//! merchant with its history; and the check of a channel's settlement report against what the
//! engine expected, which emits `invoice.mismatch` ([`mismatch`]).
//!
//! A parcel is a payment session paid (`paid_at`) inside the period, in the statement's
//! currency (the fee's). Sessions are found through the sessions' day index: the days from
//! [`LOOKBACK_DAYS`] before the period up to its last day are scanned, so a session paid more
//! than that long after it was created is not billed. Money is integer minor units throughout;
//! sums are checked, never wrapped.
//!
//! It does not own sessions or payments (it only reads them) nor HTTP (the gateway's
//! `routes/lastmile/statements.rs`). Stored: `lm_fee/{merchant_id}` → [`MerchantFee`].

pub mod mismatch;
pub mod pdf;

use crate::LastMile;
use crate::sessions::{Actor, PaymentSession, SESSION_DAYS, SESSIONS_BY_DAY};
use ipay_engine::clock::Timestamp;
use ipay_engine::error::{EngineError, EngineResult};
use ipay_engine::ids::{MerchantId, UserId};
use ipay_engine::money::{Currency, MAX_MINOR_UNITS};
use ipay_engine::store::{EntryRange, WriteBatch, WriteOp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Bound;

const FEE: &str = "lm_fee";
const DAY_MS: i64 = 86_400_000;
/// Longest statement period, days.
pub const MAX_PERIOD_DAYS: i64 = 366;
/// How long before the period sessions are looked for (a session may be paid days after it
/// was created), days.
pub const LOOKBACK_DAYS: i64 = 92;
/// Most parcels one statement lists; a larger one must be split into shorter periods.
pub const MAX_PARCELS: usize = 200_000;
/// Most session entries one statement reads.
const MAX_SCANNED: usize = 2_000_000;
/// Fee changes kept in a merchant's history.
const MAX_HISTORY: usize = 100;

/// `PATCH /api/admin/merchants/{id}` body.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetFeeRequest {
    /// IPAY's fee per delivered-and-paid parcel, minor units (0 allowed).
    pub fee_per_parcel: i64,
    /// ISO 4217 code of the fee; statements are drawn in this currency.
    pub currency: String,
    /// When the merchant signed the contract that sets this fee (RFC 3339 or `YYYY-MM-DD`).
    #[serde(default)]
    pub contract_signed_at: Option<String>,
}

/// One fee as set at one time (the audit trail).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FeeChange {
    pub fee_per_parcel: i64,
    pub currency: String,
    #[schema(value_type = String, format = DateTime)]
    pub set_at: Timestamp,
    /// The operator who set it.
    pub set_by: String,
}

/// A merchant's fee per parcel, set by an operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MerchantFee {
    #[schema(value_type = String)]
    pub merchant_id: MerchantId,
    pub fee_per_parcel: i64,
    pub currency: String,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub contract_signed_at: Option<Timestamp>,
    /// Every fee set so far, oldest first (at most 100 kept).
    pub history: Vec<FeeChange>,
}

/// Query of the statement routes.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StatementQuery {
    /// First day, `YYYY-MM-DD` (UTC, inclusive).
    pub start: Option<String>,
    /// Last day, `YYYY-MM-DD` (UTC, inclusive); at most 366 days after `start`.
    pub end: Option<String>,
    /// Operators: whose statement. Merchants see their own.
    pub merchant_id: Option<String>,
    /// `json` (default) or `csv` (one line per parcel). The PDF has its own path.
    pub format: Option<String>,
}

/// One day of a statement.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StatementDay {
    /// `YYYY-MM-DD`
    pub date: String,
    pub parcels: u64,
    pub gross: i64,
    pub fees: i64,
    pub net: i64,
}

/// One billed parcel (a CSV line).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatementLine {
    pub session_id: String,
    pub reference: String,
    pub order_id: String,
    pub paid_at: Timestamp,
    pub gross: i64,
    pub fee: i64,
    pub net: i64,
}

/// A merchant's statement for a period. Amounts are minor units of `currency`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Statement {
    #[schema(value_type = String)]
    pub merchant_id: MerchantId,
    pub merchant_name: String,
    /// `YYYY-MM-DD`, inclusive.
    pub start: String,
    /// `YYYY-MM-DD`, inclusive.
    pub end: String,
    pub currency: String,
    /// Digits after the decimal point of `currency` (2 for EUR: 150 = 1.50).
    pub exponent: u8,
    pub fee_per_parcel: i64,
    /// `merchant` (set by an operator) or `none` (no fee set: 0).
    pub fee_source: String,
    pub parcels: u64,
    pub gross: i64,
    /// `parcels × fee_per_parcel`
    pub fees: i64,
    /// `gross − fees`
    pub net: i64,
    /// Parcels paid in the period in another currency (not billed on this statement).
    pub other_currency_parcels: u64,
    pub days: Vec<StatementDay>,
    #[serde(skip)]
    pub lines: Vec<StatementLine>,
    #[schema(value_type = String, format = DateTime)]
    pub generated_at: Timestamp,
}

impl LastMile {
    /// Sets merchant `merchant_id`'s fee per parcel (operators only; the gateway checks the
    /// role, `by` names the operator).
    pub async fn set_fee(
        &self,
        merchant_id: &str,
        req: SetFeeRequest,
        by: UserId,
    ) -> EngineResult<MerchantFee> {
        let merchant = self.statement_merchant(merchant_id).await?;
        if !(0..=MAX_MINOR_UNITS).contains(&req.fee_per_parcel) {
            return Err(EngineError::invalid(
                "parameter_invalid",
                "fee_per_parcel",
                format!("fee_per_parcel must be 0 to {MAX_MINOR_UNITS} minor units"),
            ));
        }
        let currency =
            Currency::parse(&req.currency).map_err(|e| EngineError::money("currency", e))?;
        let signed = match &req.contract_signed_at {
            None => None,
            Some(s) => Some(Timestamp::parse_flexible(s).ok_or_else(|| {
                EngineError::invalid(
                    "parameter_invalid",
                    "contract_signed_at",
                    "contract_signed_at must be an RFC 3339 time or YYYY-MM-DD",
                )
            })?),
        };
        let now = self.engine.clock().now();
        let mut fee = self.fee(merchant).await?.unwrap_or(MerchantFee {
            merchant_id: merchant,
            fee_per_parcel: 0,
            currency: currency.code().to_string(),
            contract_signed_at: None,
            history: Vec::new(),
        });
        fee.fee_per_parcel = req.fee_per_parcel;
        fee.currency = currency.code().to_string();
        fee.contract_signed_at = signed.or(fee.contract_signed_at);
        fee.history.push(FeeChange {
            fee_per_parcel: req.fee_per_parcel,
            currency: fee.currency.clone(),
            set_at: now,
            set_by: by.to_string(),
        });
        let extra = fee.history.len().saturating_sub(MAX_HISTORY);
        fee.history.drain(..extra);
        let value = serde_json::to_vec(&fee).map_err(|e| EngineError::Internal(e.to_string()))?;
        let mut b = WriteBatch::new();
        b.push(WriteOp::PutRecord {
            kind: FEE,
            key: merchant.to_string(),
            value,
        });
        self.engine.ledger().submit(b).await?;
        Ok(fee)
    }

    /// The fee set for `merchant`, if any.
    pub async fn fee(&self, merchant: MerchantId) -> EngineResult<Option<MerchantFee>> {
        let Some(bytes) = self
            .engine
            .ledger()
            .get_record(FEE, &merchant.to_string())
            .await?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| EngineError::Internal(format!("fee of {merchant} unreadable: {e}")))
    }

    /// A known last-mile merchant, or 404.
    async fn statement_merchant(&self, id: &str) -> EngineResult<MerchantId> {
        let m = MerchantId::parse(id).map_err(|_| EngineError::not_found("merchant", id))?;
        self.merchant(m).await.map(|lm| lm.id)
    }

    /// The statement of the merchant `who` may see, for the query's period.
    pub async fn statement(&self, who: Actor, q: &StatementQuery) -> EngineResult<Statement> {
        let merchant = match (who, q.merchant_id.as_deref()) {
            (Actor::Merchant(m), None) => m,
            (Actor::Merchant(m), Some(id)) if id == m.to_string() => m,
            (Actor::Merchant(_), Some(_)) => {
                return Err(EngineError::Forbidden {
                    code: "role_forbidden",
                    message: "merchants may only read their own statements".into(),
                });
            }
            (Actor::Operator, Some(id)) => self.statement_merchant(id).await?,
            (Actor::Operator, None) => {
                return Err(EngineError::invalid(
                    "parameter_missing",
                    "merchant_id",
                    "operators name the merchant: ?merchant_id=m_…",
                ));
            }
        };
        let (from, to) = period(q)?;
        let name = self.merchant(merchant).await?.name;
        let fee = self.fee(merchant).await?;
        let mut st = Statement {
            merchant_id: merchant,
            merchant_name: name,
            start: date_of(from),
            end: date_of(to - DAY_MS),
            currency: fee.as_ref().map_or("EUR".into(), |f| f.currency.clone()),
            exponent: 2,
            fee_per_parcel: fee.as_ref().map_or(0, |f| f.fee_per_parcel),
            fee_source: if fee.is_some() { "merchant" } else { "none" }.into(),
            parcels: 0,
            gross: 0,
            fees: 0,
            net: 0,
            other_currency_parcels: 0,
            days: Vec::new(),
            lines: Vec::new(),
            generated_at: self.engine.clock().now(),
        };
        st.exponent = Currency::parse(&st.currency).map_or(2, |c| c.exponent());
        let paid = self.paid_sessions(merchant, from, to).await?;
        add_up(&mut st, paid)?;
        Ok(st)
    }

    /// Sessions of `merchant` paid in `[from, to)`, oldest payment first.
    async fn paid_sessions(
        &self,
        merchant: MerchantId,
        from: i64,
        to: i64,
    ) -> EngineResult<Vec<PaymentSession>> {
        let ledger = self.engine.ledger();
        let owner = merchant.to_string();
        let days = EntryRange {
            start: Bound::Included(crate::daily::day(from - LOOKBACK_DAYS * DAY_MS)),
            end: Bound::Included(crate::daily::day(to - 1)),
            limit: (MAX_PERIOD_DAYS + LOOKBACK_DAYS + 1) as usize,
            descending: false,
        };
        let mut scanned = 0usize;
        let mut paid = Vec::new();
        for (d, _) in ledger.scan_entries(SESSION_DAYS, &owner, &days).await? {
            let partition = format!("{owner}:{d}");
            let mut after: Option<String> = None;
            loop {
                let range = match &after {
                    Some(a) => EntryRange::after(a, 1_000),
                    None => EntryRange::all(1_000),
                };
                let rows = ledger
                    .scan_entries(SESSIONS_BY_DAY, &partition, &range)
                    .await?;
                scanned += rows.len();
                if scanned > MAX_SCANNED || paid.len() > MAX_PARCELS {
                    return Err(too_large());
                }
                let n = rows.len();
                for (sort, value) in rows {
                    after = Some(sort);
                    let s: PaymentSession = serde_json::from_slice(&value)
                        .map_err(|e| EngineError::Internal(format!("session unreadable: {e}")))?;
                    if s.paid_at.is_some_and(|p| (from..to).contains(&p.ms())) {
                        paid.push(s);
                    }
                }
                if n < 1_000 {
                    break;
                }
            }
        }
        if paid.len() > MAX_PARCELS {
            return Err(too_large());
        }
        paid.sort_by_key(|s| (s.paid_at, s.id));
        Ok(paid)
    }
}

fn too_large() -> EngineError {
    EngineError::invalid(
        "statement_too_large",
        "start",
        format!("more than {MAX_PARCELS} parcels in this period; ask for a shorter period"),
    )
}

/// Adds the paid sessions to the statement: lines, days and totals, with checked arithmetic.
fn add_up(st: &mut Statement, paid: Vec<PaymentSession>) -> EngineResult<()> {
    let overflow = || EngineError::Internal("statement totals overflow i64".into());
    let mut days: BTreeMap<String, StatementDay> = BTreeMap::new();
    for s in paid {
        if s.currency != st.currency {
            st.other_currency_parcels += 1;
            continue;
        }
        let paid_at = s.paid_at.unwrap_or(s.updated);
        let net = s
            .amount
            .checked_sub(st.fee_per_parcel)
            .ok_or_else(overflow)?;
        let date = date_of(paid_at.ms());
        let day = days.entry(date.clone()).or_insert(StatementDay {
            date,
            parcels: 0,
            gross: 0,
            fees: 0,
            net: 0,
        });
        day.parcels += 1;
        day.gross = day.gross.checked_add(s.amount).ok_or_else(overflow)?;
        st.parcels += 1;
        st.gross = st.gross.checked_add(s.amount).ok_or_else(overflow)?;
        st.lines.push(StatementLine {
            session_id: s.id.to_string(),
            reference: s.reference.to_string(),
            order_id: s.order_id.clone(),
            paid_at,
            gross: s.amount,
            fee: st.fee_per_parcel,
            net,
        });
    }
    // The formula is applied to the totals (and to each day), not summed from rounded parts:
    // there is no rounding, so the two agree exactly.
    let fee = i128::from(st.fee_per_parcel);
    let apply = |parcels: u64, gross: i64| -> EngineResult<(i64, i64)> {
        let fees = i64::try_from(i128::from(parcels) * fee).map_err(|_| overflow())?;
        Ok((fees, gross.checked_sub(fees).ok_or_else(overflow)?))
    };
    (st.fees, st.net) = apply(st.parcels, st.gross)?;
    for d in days.values_mut() {
        (d.fees, d.net) = apply(d.parcels, d.gross)?;
    }
    st.days = days.into_values().collect();
    Ok(())
}

/// `[from, to)` in ms from the query's inclusive `YYYY-MM-DD` days.
fn period(q: &StatementQuery) -> EngineResult<(i64, i64)> {
    let parse = |v: &Option<String>, name: &'static str| -> EngineResult<i64> {
        let s = v.as_deref().ok_or_else(|| {
            EngineError::invalid(
                "parameter_missing",
                name,
                format!("{name} (YYYY-MM-DD) is required"),
            )
        })?;
        match Timestamp::parse_flexible(s) {
            Some(t) if s.len() == 10 => Ok(t.ms()),
            _ => Err(EngineError::invalid(
                "parameter_invalid",
                name,
                format!("{name} must be a date YYYY-MM-DD"),
            )),
        }
    };
    let from = parse(&q.start, "start")?;
    let to = parse(&q.end, "end")? + DAY_MS;
    if to <= from {
        return Err(EngineError::invalid(
            "parameter_invalid",
            "end",
            "end must not be before start",
        ));
    }
    if to - from > MAX_PERIOD_DAYS * DAY_MS {
        return Err(EngineError::invalid(
            "period_too_long",
            "end",
            format!("a statement covers at most {MAX_PERIOD_DAYS} days"),
        ));
    }
    Ok((from, to))
}

/// `YYYY-MM-DD` of `ms` (UTC).
fn date_of(ms: i64) -> String {
    Timestamp(ms).to_datetime().format("%Y-%m-%d").to_string()
}

/// `value` minor units as a decimal string with `exponent` digits (`-1234`, 2 → `-12.34`).
pub fn decimal(value: i64, exponent: u8) -> String {
    let sign = if value < 0 { "-" } else { "" };
    let v = value.unsigned_abs();
    if exponent == 0 {
        return format!("{sign}{v}");
    }
    let scale = 10u64.pow(u32::from(exponent));
    format!(
        "{sign}{}.{:0width$}",
        v / scale,
        v % scale,
        width = usize::from(exponent)
    )
}

/// The statement's parcels as CSV: a header, then one line per parcel. Text cells that a
/// spreadsheet would run as a formula are prefixed with `'`.
pub fn statement_csv(st: &Statement) -> EngineResult<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| EngineError::Internal(format!("csv: {e}"));
    w.write_record([
        "session_id",
        "reference",
        "order_id",
        "paid_at",
        "currency",
        "gross_minor",
        "fee_minor",
        "net_minor",
    ])
    .map_err(err)?;
    for l in &st.lines {
        w.write_record([
            l.session_id.clone(),
            l.reference.clone(),
            safe_cell(&l.order_id),
            l.paid_at.to_string(),
            st.currency.clone(),
            l.gross.to_string(),
            l.fee.to_string(),
            l.net.to_string(),
        ])
        .map_err(err)?;
    }
    w.into_inner()
        .map_err(|e| EngineError::Internal(format!("csv: {e}")))
}

fn safe_cell(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_written_without_floats() {
        assert_eq!(decimal(150, 2), "1.50");
        assert_eq!(decimal(-1234, 2), "-12.34");
        assert_eq!(decimal(5, 2), "0.05");
        assert_eq!(decimal(500, 0), "500");
        assert_eq!(decimal(1, 3), "0.001");
    }

    #[test]
    fn periods_are_whole_days_and_bounded() {
        let q = |s: &str, e: &str| StatementQuery {
            start: Some(s.into()),
            end: Some(e.into()),
            ..Default::default()
        };
        let (f, t) = period(&q("2026-05-01", "2026-05-31")).unwrap();
        assert_eq!((t - f) / DAY_MS, 31);
        assert_eq!(
            period(&q("2026-05-02", "2026-05-01")).unwrap_err().param(),
            Some("end")
        );
        assert_eq!(
            period(&q("2025-01-01", "2026-05-01")).unwrap_err().code(),
            "period_too_long"
        );
        assert_eq!(
            period(&q("yesterday", "2026-05-01")).unwrap_err().param(),
            Some("start")
        );
        assert_eq!(
            period(&q("2026-05-01T00:00:00Z", "2026-05-02"))
                .unwrap_err()
                .code(),
            "parameter_invalid"
        );
    }

    #[test]
    fn formula_cells_are_defused() {
        assert_eq!(safe_cell("=SUM(A1)"), "'=SUM(A1)");
        assert_eq!(safe_cell("ORD-1"), "ORD-1");
    }
}
