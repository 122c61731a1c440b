//! Reconciliation reports: a day's settled transactions with their summary
//! (`GET /v1/reconciliation`, CSV or JSON exactly as the merchant API shows them) and the
//! streamed export of a date range (`GET /v1/reconciliation/export`).
//!
//! Reports read the lines settlement runs wrote ([`crate::settlement::run`]); the date is the
//! settlement date. In test mode a report first runs the caller's settlement (T+0), so a
//! day's sandbox payments reconcile that same day. Refunds appear as negative lines and net
//! out of the totals. It computes no conversion or fee itself.

use crate::auth::AuthContext;
use crate::clock::{Clock, Timestamp};
use crate::error::{EngineError, EngineResult};
use crate::ids::{MerchantId, RefundId};
use crate::model::Permission;
use crate::model::service::KNOWN_CHANNELS;
use crate::money::Currency;
use crate::settlement::amount::{Centi, Dec};
use crate::settlement::payouts::{self, LineKind, SettlementLine};
use crate::settlement::{Settlement, day_of};
use crate::store::{EntryRange, Ledger};
use bytes::Bytes;
use chrono::NaiveDate;
use futures::Stream;
use serde::Serialize;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

/// The CSV header, exactly as the merchant API documents it.
pub const CSV_HEADER: &str = "date,payment_intent_id,channel,payer_amount,payer_currency,settlement_amount,settlement_currency,fx_rate,fee,payout";
/// Lines read per page (and per streamed chunk of an export).
const PAGE: usize = 500;
/// Most lines one day's report holds; beyond it use the export, which streams.
const MAX_DAY_LINES: usize = 100_000;

/// `csv` or `json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    Csv,
    Json,
}

impl ReportFormat {
    /// Parses `format` (default `json`).
    pub fn parse(s: Option<&str>) -> EngineResult<ReportFormat> {
        match s {
            None | Some("json") => Ok(ReportFormat::Json),
            Some("csv") => Ok(ReportFormat::Csv),
            Some(_) => Err(EngineError::invalid(
                "format_unsupported",
                "format",
                "format must be csv or json",
            )),
        }
    }

    /// The response's content type.
    pub fn content_type(&self) -> &'static str {
        match self {
            ReportFormat::Csv => "text/csv; charset=utf-8",
            ReportFormat::Json => "application/json",
        }
    }
}

/// A rendered report.
pub struct Report {
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// A report streamed in chunks (long export ranges).
pub struct ReportStream {
    pub content_type: &'static str,
    pub stream: Pin<Box<dyn Stream<Item = Result<Bytes, EngineError>> + Send>>,
}

/// Query of the export.
#[derive(Debug, Clone, Default)]
pub struct ExportQuery {
    pub start: Option<String>,
    pub end: Option<String>,
    /// Comma-separated channel names.
    pub channels: Option<String>,
    pub format: Option<String>,
}

/// Reports of one engine.
pub(crate) struct Reconciliation {
    ledger: Arc<dyn Ledger>,
    clock: Arc<dyn Clock>,
    settlement: Arc<Settlement>,
}

impl Reconciliation {
    pub(crate) fn new(
        ledger: Arc<dyn Ledger>,
        clock: Arc<dyn Clock>,
        settlement: Arc<Settlement>,
    ) -> Self {
        Reconciliation {
            ledger,
            clock,
            settlement,
        }
    }

    /// One day's report.
    pub(crate) async fn day(
        &self,
        ctx: &AuthContext,
        date: Option<&str>,
        format: Option<&str>,
    ) -> EngineResult<Report> {
        ctx.require(Permission::PaymentIntentsRead)?;
        let date = date.ok_or_else(|| {
            EngineError::invalid("parameter_missing", "date", "date is required (YYYY-MM-DD)")
        })?;
        let day = self.parse_date(date, "date")?;
        let format = ReportFormat::parse(format)?;
        self.catch_up(ctx).await?;
        let lines = read_day(
            self.ledger.as_ref(),
            &payouts::owner(ctx.merchant_id, ctx.livemode),
            &day,
            MAX_DAY_LINES,
        )
        .await?;
        let body = match format {
            ReportFormat::Csv => {
                let mut out = String::with_capacity(64 + lines.len() * 96);
                out.push_str(CSV_HEADER);
                out.push('\n');
                for l in &lines {
                    out.push_str(&csv_row(l));
                }
                out.into_bytes()
            }
            ReportFormat::Json => day_json(ctx.merchant_id, ctx.livemode, &day, &lines)?,
        };
        Ok(Report {
            content_type: format.content_type(),
            body,
        })
    }

    /// The streamed export of `start..=end`, optionally of some channels only.
    pub(crate) async fn export(
        &self,
        ctx: &AuthContext,
        q: ExportQuery,
    ) -> EngineResult<ReportStream> {
        ctx.require(Permission::PaymentIntentsRead)?;
        let missing = |p: &'static str| {
            EngineError::invalid(
                "parameter_missing",
                p,
                format!("{p} is required (YYYY-MM-DD)"),
            )
        };
        let start =
            self.parse_date(q.start.as_deref().ok_or_else(|| missing("start"))?, "start")?;
        let end = self.parse_date(q.end.as_deref().ok_or_else(|| missing("end"))?, "end")?;
        let format = ReportFormat::parse(q.format.as_deref())?;
        let channels = parse_channels(q.channels.as_deref())?;
        let days = day_range(&start, &end, self.settlement.config().max_export_days)?;
        self.catch_up(ctx).await?;
        let state = Export {
            ledger: self.ledger.clone(),
            owner: payouts::owner(ctx.merchant_id, ctx.livemode),
            header: export_header(format, ctx.merchant_id, &start, &end),
            days,
            day: 0,
            after: None,
            channels,
            format,
            stage: Stage::Header,
            first: true,
        };
        Ok(ReportStream {
            content_type: format.content_type(),
            stream: Box::pin(futures::stream::unfold(state, Export::next)),
        })
    }

    /// Test mode settles at once: run the caller's settlement before reading.
    async fn catch_up(&self, ctx: &AuthContext) -> EngineResult<()> {
        if !ctx.livemode {
            self.settlement.run_merchant(ctx.merchant_id, false).await?;
        }
        Ok(())
    }

    /// A `YYYY-MM-DD` date, not in the future.
    fn parse_date(&self, s: &str, param: &'static str) -> EngineResult<String> {
        let d = NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .filter(|d| s.len() == 10 && d.format("%Y-%m-%d").to_string() == s)
            .ok_or_else(|| {
                EngineError::invalid(
                    "parameter_invalid",
                    param,
                    format!("{param} must be a date written YYYY-MM-DD"),
                )
            })?;
        if d.format("%Y-%m-%d").to_string() > day_of(self.clock.now()) {
            return Err(EngineError::invalid(
                "date_unknown",
                param,
                format!("{param} {s} is in the future: no settlement has happened on it"),
            ));
        }
        Ok(s.to_string())
    }
}

/// Every date from `start` to `end`, at most `max` of them.
fn day_range(start: &str, end: &str, max: u32) -> EngineResult<Vec<String>> {
    let parse = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
    let (Some(a), Some(b)) = (parse(start), parse(end)) else {
        return Err(EngineError::invalid(
            "parameter_invalid",
            "start",
            "start and end must be YYYY-MM-DD",
        ));
    };
    if b < a {
        return Err(EngineError::invalid(
            "parameter_invalid",
            "end",
            "end must not be before start",
        ));
    }
    let n = (b - a).num_days() + 1;
    if n > i64::from(max) {
        return Err(EngineError::invalid(
            "range_too_long",
            "end",
            format!("the range covers {n} days; at most {max} per export"),
        ));
    }
    Ok(a.iter_days()
        .take(n as usize)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .collect())
}

/// Known channel names from a comma-separated list; `None` means every channel.
fn parse_channels(s: Option<&str>) -> EngineResult<Option<Vec<String>>> {
    let Some(s) = s else { return Ok(None) };
    let mut out = Vec::new();
    for c in s.split(',').map(str::trim) {
        if !KNOWN_CHANNELS.contains(&c) {
            let shown: String = c.chars().take(40).collect();
            return Err(EngineError::invalid(
                "channel_unknown",
                "channels",
                format!(
                    "unknown channel `{shown}`; known: {}",
                    KNOWN_CHANNELS.join(", ")
                ),
            ));
        }
        out.push(c.to_string());
    }
    Ok(Some(out))
}

/// A day's lines, in run order, up to `max`.
pub async fn read_day(
    ledger: &dyn Ledger,
    owner: &str,
    date: &str,
    max: usize,
) -> EngineResult<Vec<SettlementLine>> {
    let partition = format!("{owner}:{date}");
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (page, last) = read_page(ledger, &partition, after.as_deref()).await?;
        let n = page.len();
        out.extend(page);
        if n < PAGE || out.len() >= max {
            out.truncate(max);
            return Ok(out);
        }
        after = last;
    }
}

async fn read_page(
    ledger: &dyn Ledger,
    partition: &str,
    after: Option<&str>,
) -> EngineResult<(Vec<SettlementLine>, Option<String>)> {
    let range = match after {
        Some(a) => EntryRange::after(a, PAGE),
        None => EntryRange::all(PAGE),
    };
    let rows = ledger
        .scan_entries(payouts::LINES_INDEX, partition, &range)
        .await?;
    let last = rows.last().map(|(k, _)| k.clone());
    let mut out = Vec::with_capacity(rows.len());
    for (_, v) in rows {
        out.push(
            serde_json::from_slice(&v)
                .map_err(|e| EngineError::Internal(format!("settlement line: {e}")))?,
        );
    }
    Ok((out, last))
}

/// One CSV row (ids and channel names hold no commas or quotes).
pub fn csv_row(l: &SettlementLine) -> String {
    format!(
        "{},{},{},{},{},{},{},{},{},{}\n",
        l.date,
        l.payment_intent_id,
        l.channel,
        l.payer_amount,
        l.payer_currency,
        l.settlement,
        l.settlement_currency,
        l.rate,
        l.fee.to_report(),
        l.payout.to_report()
    )
}

#[derive(Serialize)]
struct MinorAmount {
    value: i64,
    currency: Currency,
}

#[derive(Serialize)]
struct CentiAmount {
    value: Centi,
    currency: Currency,
}

#[derive(Serialize)]
struct SettlementJson {
    value: i64,
    currency: Currency,
    rate: Dec,
}

/// One transaction as reports show it.
#[derive(Serialize)]
struct TxJson<'a> {
    #[serde(rename = "type")]
    kind: LineKind,
    payment_intent_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refund_id: Option<RefundId>,
    channel: &'a str,
    payer_amount: MinorAmount,
    settlement: SettlementJson,
    fee: CentiAmount,
    payout: CentiAmount,
    settled_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    date: Option<&'a str>,
}

fn tx_json(l: &SettlementLine, with_date: bool) -> TxJson<'_> {
    let cur = l.settlement_currency;
    TxJson {
        kind: l.kind,
        payment_intent_id: l.payment_intent_id.to_string(),
        refund_id: l.refund_id,
        channel: &l.channel,
        payer_amount: MinorAmount {
            value: l.payer_amount,
            currency: l.payer_currency,
        },
        settlement: SettlementJson {
            value: l.settlement,
            currency: cur,
            rate: l.rate,
        },
        fee: CentiAmount {
            value: l.fee,
            currency: cur,
        },
        payout: CentiAmount {
            value: l.payout,
            currency: cur,
        },
        settled_at: l.settled_at,
        date: with_date.then_some(l.date.as_str()),
    }
}

/// Totals of one settlement currency.
#[derive(Serialize)]
struct Summary {
    total_transactions: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_payer_amount: Option<MinorAmount>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    total_payer_amounts: Vec<MinorAmount>,
    total_settlement: Option<CentiAmount>,
    total_fees: Option<CentiAmount>,
    net_payout: Option<CentiAmount>,
}

/// Σ of the given lines (all of one settlement currency, or none).
fn summary(lines: &[&SettlementLine]) -> Summary {
    let mut payer: BTreeMap<Currency, i64> = BTreeMap::new();
    for l in lines {
        *payer.entry(l.payer_currency).or_default() += l.payer_amount;
    }
    let mut payer: Vec<MinorAmount> = payer
        .into_iter()
        .map(|(currency, value)| MinorAmount { value, currency })
        .collect();
    let single = if payer.len() == 1 { payer.pop() } else { None };
    let cur = lines.first().map(|l| l.settlement_currency);
    let total = |f: &dyn Fn(&SettlementLine) -> Centi| {
        cur.map(|currency| CentiAmount {
            value: lines.iter().map(|l| f(l)).sum(),
            currency,
        })
    };
    Summary {
        total_transactions: lines.len() as u64,
        total_payer_amount: single,
        total_payer_amounts: payer,
        total_settlement: total(&|l| Centi::from_minor(l.settlement)),
        total_fees: total(&|l| l.fee),
        net_payout: total(&|l| l.payout),
    }
}

#[derive(Serialize)]
struct DayJson<'a> {
    date: &'a str,
    merchant_id: MerchantId,
    livemode: bool,
    summary: Summary,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    other_currency_summaries: Vec<Summary>,
    transactions: Vec<TxJson<'a>>,
}

/// The day report as JSON: `summary` covers the settlement currency with the most lines;
/// lines settled in other currencies are summed in `other_currency_summaries`.
fn day_json(
    merchant: MerchantId,
    livemode: bool,
    date: &str,
    lines: &[SettlementLine],
) -> EngineResult<Vec<u8>> {
    let mut groups: BTreeMap<Currency, Vec<&SettlementLine>> = BTreeMap::new();
    for l in lines {
        groups.entry(l.settlement_currency).or_default().push(l);
    }
    let mut groups: Vec<Vec<&SettlementLine>> = groups.into_values().collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g.len()));
    let mut sums = groups.iter().map(|g| summary(g));
    let body = DayJson {
        date,
        merchant_id: merchant,
        livemode,
        summary: sums.next().unwrap_or_else(|| summary(&[])),
        other_currency_summaries: sums.collect(),
        transactions: lines.iter().map(|l| tx_json(l, false)).collect(),
    };
    serde_json::to_vec(&body).map_err(|e| EngineError::Internal(e.to_string()))
}

fn export_header(format: ReportFormat, merchant: MerchantId, start: &str, end: &str) -> String {
    match format {
        ReportFormat::Csv => format!("{CSV_HEADER}\n"),
        ReportFormat::Json => format!(
            "{{\"merchant_id\":\"{merchant}\",\"start\":\"{start}\",\"end\":\"{end}\",\"transactions\":["
        ),
    }
}

enum Stage {
    Header,
    Body,
    Done,
}

/// State of a streamed export: the day being read and where in it.
struct Export {
    ledger: Arc<dyn Ledger>,
    owner: String,
    header: String,
    days: Vec<String>,
    day: usize,
    after: Option<String>,
    channels: Option<Vec<String>>,
    format: ReportFormat,
    stage: Stage,
    first: bool,
}

impl Export {
    /// The next chunk: the header, then one page of lines at a time, then the footer.
    async fn next(mut self) -> Option<(Result<Bytes, EngineError>, Export)> {
        match self.stage {
            Stage::Header => {
                self.stage = Stage::Body;
                let h = std::mem::take(&mut self.header);
                Some((Ok(Bytes::from(h)), self))
            }
            Stage::Done => None,
            Stage::Body => {
                loop {
                    let Some(date) = self.days.get(self.day).cloned() else {
                        self.stage = Stage::Done;
                        let end = if self.format == ReportFormat::Json {
                            "]}"
                        } else {
                            ""
                        };
                        return Some((Ok(Bytes::from_static(end.as_bytes())), self));
                    };
                    let partition = format!("{}:{date}", self.owner);
                    let (page, last) =
                        match read_page(self.ledger.as_ref(), &partition, self.after.as_deref())
                            .await
                        {
                            Ok(p) => p,
                            Err(e) => {
                                self.stage = Stage::Done;
                                return Some((Err(e), self));
                            }
                        };
                    if page.len() < PAGE {
                        self.day += 1;
                        self.after = None;
                    } else {
                        self.after = last;
                    }
                    let chunk = self.render(&page);
                    if !chunk.is_empty() {
                        return Some((Ok(Bytes::from(chunk)), self));
                    }
                }
            }
        }
    }

    fn render(&mut self, lines: &[SettlementLine]) -> String {
        let mut out = String::new();
        for l in lines {
            if self
                .channels
                .as_ref()
                .is_some_and(|c| !c.contains(&l.channel))
            {
                continue;
            }
            match self.format {
                ReportFormat::Csv => out.push_str(&csv_row(l)),
                ReportFormat::Json => {
                    if !std::mem::take(&mut self.first) {
                        out.push(',');
                    }
                    if let Ok(s) = serde_json::to_string(&tx_json(l, true)) {
                        out.push_str(&s);
                    }
                }
            }
        }
        out
    }
}
