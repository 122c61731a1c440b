//! Revenue and success rates per channel over a calendar period (today, this week, this
//! month; UTC, on the engine's clock), computed from the ledger's intents of the caller's
//! merchant and mode. Every node answers the same because nothing here is a per-node counter:
//! the figures are re-read from durable data on each call, bounded by [`MAX_INTENTS`].
//!
//! This module does not draw charts (the gateway's pages do) and does not settle, convert or
//! net fees: amounts are in the currency the payer paid, one total per currency.

use crate::clock::Timestamp;
use crate::engine::{AuthContext, Engine};
use crate::error::{EngineError, EngineResult};
use crate::intents::IntentListParams;
use crate::model::{IntentStatus, PaymentIntent};
use crate::money::Money;
use chrono::{Datelike, Duration, NaiveDate};
use serde::Serialize;
use std::collections::BTreeMap;

/// At most this many intents are read for one answer; past it the answer says `truncated`.
/// A month of a busy merchant can exceed it: the dashboard is a view, reconciliation is the
/// complete account.
pub const MAX_INTENTS: usize = 20_000;

/// Intents read per ledger page.
const PAGE: usize = 100;

/// A calendar period ending now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// Since 00:00 UTC today.
    Today,
    /// Since Monday 00:00 UTC of this ISO week.
    Week,
    /// Since the first of this month, 00:00 UTC.
    Month,
}

impl Period {
    /// Parses `today`, `week` or `month`.
    pub fn parse(s: &str) -> EngineResult<Period> {
        match s {
            "today" => Ok(Period::Today),
            "week" => Ok(Period::Week),
            "month" => Ok(Period::Month),
            _ => Err(EngineError::invalid(
                "parameter_invalid",
                "period",
                format!("unknown period `{s}`; use today, week or month"),
            )),
        }
    }

    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Period::Today => "today",
            Period::Week => "week",
            Period::Month => "month",
        }
    }

    /// The period's first instant for a period containing `now`.
    pub fn start(&self, now: Timestamp) -> Timestamp {
        let day = now.to_datetime().date_naive();
        let first: NaiveDate = match self {
            Period::Today => day,
            Period::Week => day - Duration::days(i64::from(day.weekday().num_days_from_monday())),
            Period::Month => day.with_day(1).unwrap_or(day),
        };
        let ms = first
            .and_hms_opt(0, 0, 0)
            .map(|d| d.and_utc().timestamp_millis())
            .unwrap_or(now.ms());
        Timestamp(ms)
    }
}

/// How often one failure reason occurred.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ReasonCount {
    /// The intent's `failure_reason` (`unknown` when the channel gave none).
    pub reason: String,
    pub count: u64,
}

/// One channel's figures over the period.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ChannelStats {
    pub channel: String,
    /// Σ amount of succeeded intents, one entry per currency.
    pub gross: Vec<Money>,
    /// Σ (amount − amount_refunded) of succeeded intents, one entry per currency.
    pub net: Vec<Money>,
    pub succeeded: u64,
    pub failed: u64,
    pub expired: u64,
    pub cancelled: u64,
    pub pending: u64,
    /// succeeded ÷ (succeeded + failed + expired) in basis points (10 000 = 100 %), rounded
    /// down; `null` while no intent of the channel has finished.
    pub success_rate_bps: Option<u32>,
    /// Failure reasons of failed intents, most frequent first.
    pub errors: Vec<ReasonCount>,
}

/// `GET /v1/analytics/channels`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ChannelAnalytics {
    /// today | week | month
    pub period: String,
    #[schema(value_type = String, format = DateTime)]
    pub from: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub to: Timestamp,
    pub livemode: bool,
    /// Intents counted.
    pub intents: u64,
    /// True when the period held more than the read bound and later intents were left out.
    pub truncated: bool,
    /// Σ gross of all channels, one entry per currency.
    pub gross: Vec<Money>,
    /// Channels with at least one intent in the period, by name.
    pub channels: Vec<ChannelStats>,
}

#[derive(Default)]
struct Acc {
    gross: BTreeMap<String, Money>,
    net: BTreeMap<String, Money>,
    counts: [u64; 5],
    errors: BTreeMap<String, u64>,
}

fn add(map: &mut BTreeMap<String, Money>, m: Money, value: i64) {
    let e = map.entry(m.currency.code().to_string()).or_insert(Money {
        value: 0,
        currency: m.currency,
    });
    e.value = e.value.saturating_add(value);
}

impl Acc {
    fn push(&mut self, i: &PaymentIntent) {
        let slot = match i.status {
            IntentStatus::Succeeded => 0,
            IntentStatus::Failed => 1,
            IntentStatus::Expired => 2,
            IntentStatus::Cancelled => 3,
            IntentStatus::Pending => 4,
        };
        self.counts[slot] += 1;
        match i.status {
            IntentStatus::Succeeded => {
                add(&mut self.gross, i.amount, i.amount.value);
                let net = i.amount.value.saturating_sub(i.amount_refunded);
                add(&mut self.net, i.amount, net);
            }
            IntentStatus::Failed => {
                let reason = i.failure_reason.clone().unwrap_or_else(|| "unknown".into());
                *self.errors.entry(reason).or_default() += 1;
            }
            _ => {}
        }
    }

    fn finish(self, channel: String) -> ChannelStats {
        let [succeeded, failed, expired, cancelled, pending] = self.counts;
        let finished = succeeded + failed + expired;
        let success_rate_bps = (finished > 0)
            .then(|| u32::try_from(succeeded.saturating_mul(10_000) / finished).unwrap_or(10_000));
        let mut errors: Vec<ReasonCount> = self
            .errors
            .into_iter()
            .map(|(reason, count)| ReasonCount { reason, count })
            .collect();
        errors.sort_by(|a, b| b.count.cmp(&a.count).then(a.reason.cmp(&b.reason)));
        ChannelStats {
            channel,
            gross: self.gross.into_values().collect(),
            net: self.net.into_values().collect(),
            succeeded,
            failed,
            expired,
            cancelled,
            pending,
            success_rate_bps,
            errors,
        }
    }
}

/// Aggregates intents per channel (pure; the caller chose the intents of the period).
pub fn aggregate<'a>(intents: impl IntoIterator<Item = &'a PaymentIntent>) -> Vec<ChannelStats> {
    let mut per: BTreeMap<String, Acc> = BTreeMap::new();
    for i in intents {
        per.entry(i.channel.clone()).or_default().push(i);
    }
    per.into_iter().map(|(c, acc)| acc.finish(c)).collect()
}

/// Σ gross over channels, one entry per currency.
fn total(channels: &[ChannelStats]) -> Vec<Money> {
    let mut map = BTreeMap::new();
    for m in channels.iter().flat_map(|c| c.gross.iter()) {
        add(&mut map, *m, m.value);
    }
    map.into_values().collect()
}

impl Engine {
    /// Revenue and success rates per channel for `period` (`today`, `week`, `month`), from the
    /// caller's intents in the ledger. Needs `payment_intents:read`.
    pub async fn channel_analytics(
        &self,
        ctx: &AuthContext,
        period: &str,
    ) -> EngineResult<ChannelAnalytics> {
        let period = Period::parse(period)?;
        let to = self.clock().now();
        let from = period.start(to);
        let intents = self.intents_between(ctx, from, to).await?;
        let truncated = intents.len() >= MAX_INTENTS;
        let channels = aggregate(intents.iter());
        Ok(ChannelAnalytics {
            period: period.as_str().to_string(),
            from,
            to,
            livemode: ctx.livemode,
            intents: intents.len() as u64,
            truncated,
            gross: total(&channels),
            channels,
        })
    }

    /// The caller's intents created in `[from, to]`, oldest first, at most [`MAX_INTENTS`].
    async fn intents_between(
        &self,
        ctx: &AuthContext,
        from: Timestamp,
        to: Timestamp,
    ) -> EngineResult<Vec<PaymentIntent>> {
        let mut out = Vec::new();
        while out.len() < MAX_INTENTS {
            let params = IntentListParams {
                limit: Some(PAGE),
                offset: Some(out.len()),
                created_after: Some(from.to_string()),
                created_before: Some(to.plus_secs(1).to_string()),
                sort: Some("created:asc".into()),
                ..Default::default()
            };
            let (page, _) = self.list_intents(ctx, params).await?;
            let n = page.data.len();
            out.extend(page.data);
            if n < PAGE {
                break;
            }
        }
        out.truncate(MAX_INTENTS);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_start_at_utc_midnight_of_day_week_and_month() {
        // Thursday 2026-05-28 13:45 UTC.
        let now = Timestamp::parse_flexible("2026-05-28T13:45:00Z").unwrap();
        let at = |s| Timestamp::parse_flexible(s).unwrap();
        assert_eq!(Period::Today.start(now), at("2026-05-28"));
        assert_eq!(Period::Week.start(now), at("2026-05-25"));
        assert_eq!(Period::Month.start(now), at("2026-05-01"));
        assert!(Period::parse("year").is_err());
    }
}
