//! A channel's settlement report for one day, checked against what the engine expected, and
//! `invoice.mismatch` for each merchant whose settled amount differs.
//!
//! What the engine expected of `channel` on `date`: every succeeded intent of that channel
//! created that UTC day, with its amount. What the channel settled: the report's lines (intent
//! id, amount, currency). Each merchant named by a line (through its intent) is compared per
//! currency, line by line: an intent missing from the report, a line for an intent the engine
//! has not seen succeed that day, or a different amount is a difference. Any difference emits
//! one `invoice.mismatch` event for that merchant and currency, whose data is the
//! [`Mismatch`]. Lines naming no intent of that channel cannot be attributed to a merchant;
//! they are returned as `unknown_transactions` and emit nothing.
//!
//! It reads intents only; it does not fetch reports (the operator, or a job, posts them).

use crate::LastMile;
use ipay_engine::clock::Timestamp;
use ipay_engine::error::{EngineError, EngineResult};
use ipay_engine::ids::{MerchantId, PaymentIntentId};
use ipay_engine::model::service::KNOWN_CHANNELS;
use ipay_engine::model::{Event, IntentStatus};
use ipay_engine::money::Currency;
use ipay_engine::store::{IntentQuery, PageRequest, WriteBatch, WriteOp};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Most lines one report may carry.
pub const MAX_REPORT_LINES: usize = 100_000;
/// Most succeeded intents of one merchant, channel and day compared.
const MAX_EXPECTED: usize = 100_000;
const DAY_MS: i64 = 86_400_000;

/// One settled transaction as the channel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportLine {
    /// The engine's intent id (the merchant order number the PSP knows).
    pub intent_id: String,
    /// Settled amount, minor units.
    pub amount: i64,
    /// ISO 4217 code.
    pub currency: String,
}

/// A channel's settlement report for one day (the PSP simulator serves this shape at
/// `/_sim/settlement-report`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettlementReport {
    pub channel: String,
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    pub transactions: Vec<ReportLine>,
}

/// One transaction whose amounts differ (0 = absent on that side).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LineDifference {
    pub intent_id: String,
    pub expected: i64,
    pub settled: i64,
}

/// A merchant's difference for one channel, day and currency (the `invoice.mismatch` data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Mismatch {
    #[schema(value_type = String)]
    pub merchant_id: MerchantId,
    pub livemode: bool,
    pub channel: String,
    pub date: String,
    pub currency: String,
    /// Σ amounts the engine expected, minor units.
    pub expected: i64,
    /// Σ amounts the channel settled, minor units.
    pub settled: i64,
    /// `settled − expected`
    pub difference: i64,
    pub transactions: Vec<LineDifference>,
}

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MismatchCheck {
    pub channel: String,
    pub date: String,
    /// Merchant and currency pairs compared.
    pub compared: usize,
    /// Those that differ; one `invoice.mismatch` event was emitted for each.
    pub mismatches: Vec<Mismatch>,
    /// Lines naming no intent of this channel.
    pub unknown_transactions: Vec<ReportLine>,
}

/// Amounts per intent id on one side, per currency.
type Side = BTreeMap<String, BTreeMap<String, i64>>;

impl LastMile {
    /// Checks `report` against the engine's succeeded intents and emits `invoice.mismatch`
    /// per merchant and currency that differs.
    pub async fn check_settlement(&self, report: SettlementReport) -> EngineResult<MismatchCheck> {
        let from = validate(&report)?;
        let mut settled: BTreeMap<(MerchantId, bool), Side> = BTreeMap::new();
        let mut unknown = Vec::new();
        for line in &report.transactions {
            let intent = match PaymentIntentId::parse(&line.intent_id) {
                Ok(id) => self.engine.ledger().get_intent(id).await?,
                Err(_) => None,
            };
            match intent {
                Some(pi) if pi.channel == report.channel => {
                    let side = settled.entry((pi.merchant_id, pi.livemode)).or_default();
                    let amt = side
                        .entry(line.currency.clone())
                        .or_default()
                        .entry(line.intent_id.clone())
                        .or_default();
                    *amt = amt.checked_add(line.amount).ok_or_else(overflow)?;
                }
                _ => unknown.push(line.clone()),
            }
        }
        let mut out = MismatchCheck {
            channel: report.channel.clone(),
            date: report.date.clone(),
            compared: 0,
            mismatches: Vec::new(),
            unknown_transactions: unknown,
        };
        for ((merchant, livemode), got) in settled {
            let want = self
                .expected(merchant, livemode, &report.channel, from)
                .await?;
            for m in compare(merchant, livemode, &report, &want, &got)? {
                out.compared += 1;
                if let Some(m) = m {
                    self.emit_mismatch(&m).await?;
                    out.mismatches.push(m);
                }
            }
        }
        Ok(out)
    }

    /// The merchant's succeeded intents of `channel` created on the day starting at `from`.
    async fn expected(
        &self,
        merchant: MerchantId,
        livemode: bool,
        channel: &str,
        from: i64,
    ) -> EngineResult<Side> {
        let mut side = Side::new();
        let mut offset = 0;
        loop {
            let q = IntentQuery {
                status: Some(IntentStatus::Succeeded),
                channel: Some(channel.to_string()),
                created_after: Some(from),
                created_before: Some(from + DAY_MS),
                descending: false,
                page: PageRequest { limit: 100, offset },
            };
            let page = self
                .engine
                .ledger()
                .list_intents(merchant, livemode, &q)
                .await?;
            let n = page.data.len();
            for pi in page.data {
                side.entry(pi.amount.currency.code().to_string())
                    .or_default()
                    .insert(pi.id.to_string(), pi.amount.value);
            }
            offset += n;
            if n < 100 || offset >= MAX_EXPECTED {
                return Ok(side);
            }
        }
    }

    async fn emit_mismatch(&self, m: &Mismatch) -> EngineResult<()> {
        let now = self.engine.clock().now();
        let object = format!("{}:{}", m.channel, m.date);
        let event = Event::new(
            m.merchant_id,
            m.livemode,
            "invoice.mismatch",
            now,
            object,
            m,
        );
        let mut b = WriteBatch::new();
        b.push(WriteOp::PutEvent(event));
        self.engine.ledger().submit(b).await?;
        tracing::warn!(merchant = %m.merchant_id, channel = %m.channel, date = %m.date,
            difference = m.difference, "channel settlement differs from the engine's");
        Ok(())
    }
}

fn overflow() -> EngineError {
    EngineError::Internal("settlement sums overflow i64".into())
}

/// Checks the report's fields; returns the day's start (ms).
fn validate(r: &SettlementReport) -> EngineResult<i64> {
    if !KNOWN_CHANNELS.contains(&r.channel.as_str()) {
        return Err(EngineError::invalid(
            "channel_unknown",
            "channel",
            format!(
                "unknown channel; known channels: {}",
                KNOWN_CHANNELS.join(", ")
            ),
        ));
    }
    let from = match Timestamp::parse_flexible(&r.date) {
        Some(t) if r.date.len() == 10 => t.ms(),
        _ => {
            return Err(EngineError::invalid(
                "parameter_invalid",
                "date",
                "date must be a day YYYY-MM-DD",
            ));
        }
    };
    if r.transactions.len() > MAX_REPORT_LINES {
        return Err(EngineError::invalid(
            "parameter_invalid",
            "transactions",
            format!("at most {MAX_REPORT_LINES} transactions per report"),
        ));
    }
    for (i, l) in r.transactions.iter().enumerate() {
        if !(0..=ipay_engine::money::MAX_MINOR_UNITS).contains(&l.amount) {
            return Err(EngineError::invalid(
                "amount_invalid",
                format!("transactions[{i}].amount"),
                "amounts are non-negative minor units",
            ));
        }
        Currency::parse(&l.currency)
            .map_err(|e| EngineError::money(&format!("transactions[{i}].currency"), e))?;
    }
    Ok(from)
}

/// Per currency: `None` when expected and settled agree line by line, else the mismatch.
fn compare(
    merchant: MerchantId,
    livemode: bool,
    r: &SettlementReport,
    want: &Side,
    got: &Side,
) -> EngineResult<Vec<Option<Mismatch>>> {
    let currencies: BTreeSet<&String> = want.keys().chain(got.keys()).collect();
    let empty = BTreeMap::new();
    let mut out = Vec::new();
    for cur in currencies {
        let w = want.get(cur).unwrap_or(&empty);
        let g = got.get(cur).unwrap_or(&empty);
        let ids: BTreeSet<&String> = w.keys().chain(g.keys()).collect();
        let mut diffs = Vec::new();
        for id in ids {
            let (e, s) = (*w.get(id).unwrap_or(&0), *g.get(id).unwrap_or(&0));
            if e != s || !w.contains_key(id) || !g.contains_key(id) {
                diffs.push(LineDifference {
                    intent_id: id.clone(),
                    expected: e,
                    settled: s,
                });
            }
        }
        let sum = |m: &BTreeMap<String, i64>| {
            m.values()
                .try_fold(0i64, |a, v| a.checked_add(*v))
                .ok_or_else(overflow)
        };
        let (expected, settled) = (sum(w)?, sum(g)?);
        out.push((!diffs.is_empty()).then(|| Mismatch {
            merchant_id: merchant,
            livemode,
            channel: r.channel.clone(),
            date: r.date.clone(),
            currency: cur.clone(),
            expected,
            settled,
            difference: settled - expected,
            transactions: diffs,
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(cur: &str, lines: &[(&str, i64)]) -> Side {
        let mut s = Side::new();
        for (id, v) in lines {
            s.entry(cur.into()).or_default().insert(id.to_string(), *v);
        }
        s
    }

    fn report() -> SettlementReport {
        SettlementReport {
            channel: "alipay".into(),
            date: "2026-05-27".into(),
            transactions: vec![],
        }
    }

    #[test]
    fn equal_sides_match_and_any_line_difference_is_reported() {
        let m = MerchantId::new_at(1);
        let want = side("CNY", &[("pi_a", 699), ("pi_b", 100)]);
        let same = compare(m, true, &report(), &want, &want).unwrap();
        assert_eq!(same, vec![None]);
        // Same total, different lines: still a mismatch.
        let swapped = side("CNY", &[("pi_a", 100), ("pi_b", 699)]);
        let got = compare(m, true, &report(), &want, &swapped).unwrap();
        let mm = got[0].as_ref().unwrap();
        assert_eq!((mm.expected, mm.settled, mm.difference), (799, 799, 0));
        assert_eq!(mm.transactions.len(), 2);
        // A line missing from the report.
        let short = side("CNY", &[("pi_a", 699)]);
        let mm = compare(m, true, &report(), &want, &short).unwrap()[0]
            .clone()
            .unwrap();
        assert_eq!(mm.difference, -100);
        assert_eq!(
            mm.transactions,
            vec![LineDifference {
                intent_id: "pi_b".into(),
                expected: 100,
                settled: 0
            }]
        );
    }

    #[test]
    fn bad_reports_are_refused_with_codes() {
        let mut r = report();
        r.channel = "paypal".into();
        assert_eq!(validate(&r).unwrap_err().code(), "channel_unknown");
        let mut r = report();
        r.date = "27/05/2026".into();
        assert_eq!(validate(&r).unwrap_err().param(), Some("date"));
        let mut r = report();
        r.transactions.push(ReportLine {
            intent_id: "pi_x".into(),
            amount: -1,
            currency: "CNY".into(),
        });
        assert_eq!(validate(&r).unwrap_err().code(), "amount_invalid");
    }
}
