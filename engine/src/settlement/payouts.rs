//! Settlement records as stored: the lines of a run (one per settled payment or refund), the
//! payouts a run makes, a merchant's balance per currency, and the storage names they live
//! under (generic ledger records and sorted entries).
//!
//! Everything a run writes goes into one batch ([`super::run`]), so a line, the marker that
//! its transaction is settled, the payout that pays it and the balance it moves are durable
//! together or not at all. Reading reports is [`crate::reconciliation`]'s job.

use super::amount::{Centi, Dec};
use crate::clock::Timestamp;
use crate::ids::{MerchantId, PaymentIntentId, RefundId};
use crate::money::Currency;
use serde::{Deserialize, Serialize};

/// Index of transactions waiting to be settled; partition [`owner`], sort `{day}:{intent id}`.
pub const DUE_INDEX: &str = "settlement_due";
/// Index of every merchant that ever had a settled payment; partition [`MERCHANTS_PARTITION`],
/// sort [`owner`].
pub const MERCHANTS_INDEX: &str = "settlement_merchants";
/// The single partition of [`MERCHANTS_INDEX`].
pub const MERCHANTS_PARTITION: &str = "all";
/// Index of settlement lines; partition `{owner}:{date}`, sort `{run:04}:{kind}:{id}`.
pub const LINES_INDEX: &str = "settlement_lines";
/// Index of payouts; partition [`owner`], sort `{date}:{run:04}:{currency}`.
pub const PAYOUTS_INDEX: &str = "settlement_payouts";
/// Record per settled transaction (`pi:{id}` / `re:{id}`): the date it was settled on.
pub const LINE_MARK: &str = "settlement_line";
/// Record per merchant-day (`{owner}:{date}`): runs made that day.
pub const RUN_RECORD: &str = "settlement_run";
/// Record per merchant and currency (`{owner}:{currency}`): the balance not yet paid out.
pub const BALANCE_RECORD: &str = "settlement_balance";
/// Record per intent (`{intent id}`): how much of its refunds has been reversed so far.
pub const REVERSED_RECORD: &str = "settlement_reversed";
/// Record per merchant (`{owner}`): settlement preferences.
pub const PREFS_RECORD: &str = "settlement_prefs";

/// `test:{merchant}` or `live:{merchant}`: one merchant in one mode.
pub fn owner(merchant: MerchantId, livemode: bool) -> String {
    format!("{}:{merchant}", if livemode { "live" } else { "test" })
}

/// Parses [`owner`] back.
pub fn parse_owner(s: &str) -> Option<(MerchantId, bool)> {
    let (mode, m) = s.split_once(':')?;
    let live = match mode {
        "live" => true,
        "test" => false,
        _ => return None,
    };
    Some((MerchantId::parse(m).ok()?, live))
}

/// Whether a line settles a payment or reverses part of one for a refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    Payment,
    Refund,
}

/// One settled transaction. Amounts of a refund line are negative.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementLine {
    pub kind: LineKind,
    pub payment_intent_id: PaymentIntentId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<RefundId>,
    pub channel: String,
    /// Payer-currency minor units (negative for a refund).
    pub payer_amount: i64,
    pub payer_currency: Currency,
    /// Settlement-currency minor units (negative for a refund).
    pub settlement: i64,
    pub settlement_currency: Currency,
    pub rate: Dec,
    pub rate_source: String,
    pub rate_timestamp: Timestamp,
    /// Hundredths of a settlement minor unit.
    pub fee: Centi,
    /// `settlement × 100 − fee`, hundredths of a settlement minor unit.
    pub payout: Centi,
    /// When the payment succeeded or the refund was made.
    pub transaction_at: Timestamp,
    pub settled_at: Timestamp,
    /// Settlement date, `YYYY-MM-DD` (UTC).
    pub date: String,
    pub payout_id: String,
}

impl SettlementLine {
    /// The `{kind}:{id}` key of its settled-marker record.
    pub fn mark_key(&self) -> String {
        match self.refund_id {
            Some(r) => format!("re:{r}"),
            None => format!("pi:{}", self.payment_intent_id),
        }
    }
}

/// Whether a payout left the balance or stayed in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PayoutStatus {
    /// Whole minor units were paid out to the merchant.
    Paid,
    /// The run's net stayed in the balance (auto withdrawal off, below the threshold, or the
    /// balance is negative).
    Held,
}

/// What one run settled for one merchant in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Payout {
    /// `po_{merchant}_{date}_{run}_{currency}`: the same run never yields two ids.
    pub id: String,
    #[schema(value_type = String)]
    pub merchant_id: MerchantId,
    pub livemode: bool,
    /// Settlement date, `YYYY-MM-DD`.
    pub date: String,
    /// Run of that day (1, 2, … in test mode; normally 1 in live mode).
    pub run: u32,
    #[schema(value_type = String, example = "USD")]
    pub currency: Currency,
    /// Lines settled.
    pub transactions: u32,
    /// Σ settlement, hundredths of a minor unit (decimal number).
    #[schema(value_type = f64)]
    pub total_settlement: Centi,
    /// Σ fees, hundredths of a minor unit.
    #[schema(value_type = f64)]
    pub total_fees: Centi,
    /// Σ payouts of the lines = total_settlement − total_fees.
    #[schema(value_type = f64)]
    pub net: Centi,
    /// Whole minor units paid to the merchant by this run (0 when held).
    pub withdrawn: i64,
    /// Balance left after the run, hundredths of a minor unit (sub-unit rests carry over).
    #[schema(value_type = f64)]
    pub balance: Centi,
    pub status: PayoutStatus,
    #[schema(value_type = String, format = DateTime)]
    pub created: Timestamp,
}

/// Stored per merchant-day: how many runs happened.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunRecord {
    pub runs: u32,
    pub lines: u64,
}

/// Stored per intent: refunds reversed so far (payer minor units) and their settlement value.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Reversed {
    pub refunded: i64,
    pub settlement: i64,
}
