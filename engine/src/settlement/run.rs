//! Settlement runs: per merchant (and mode), take every transaction that is due — payments
//! that succeeded on or before `today − N` days (N = `live_delay_days` in live mode, 0 in
//! test mode) and succeeded refunds of those days — and settle them in **one batch**: the
//! lines, the markers that they are settled, the due entries removed, the payouts, the
//! balances and the `settlement.completed` event.
//!
//! A run is therefore idempotent per merchant-day: killed before its batch commits it wrote
//! nothing and the next run redoes it; killed after, the markers make the next run find
//! nothing left to pay. Runs of one process are serialised; across processes a hot-state
//! reservation per merchant keeps two nodes from settling the same merchant at once. It does
//! not compute conversions or fees itself ([`super::fx`], [`super::fees`]).

use super::amount::Centi;
use super::fx::{IntentSettlement, convert};
use super::payouts::{self, LineKind, Payout, PayoutStatus, Reversed, RunRecord, SettlementLine};
use super::{Settlement, SettlementPrefs, day_of};
use crate::clock::Timestamp;
use crate::error::{EngineError, EngineResult};
use crate::ids::{MerchantId, PaymentIntentId};
use crate::model::{Event, IntentStatus, PaymentIntent, Refund, RefundStatus};
use crate::money::Currency;
use crate::store::{EntryRange, PageRequest, WriteBatch, WriteOp};
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::time::Duration;

/// How long a node holds a merchant's run reservation at most.
const RUN_RESERVATION: Duration = Duration::from_secs(300);
/// Merchants read per page of the merchant index.
const MERCHANT_PAGE: usize = 500;
/// Refunds read per page while looking for due ones.
const REFUND_PAGE: usize = 100;

/// What [`Settlement::run_all`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Merchants (per mode) visited.
    pub merchants: usize,
    /// Payouts written.
    pub payouts: usize,
    /// Merchants whose run failed (retried at the next interval).
    pub failed: usize,
}

/// One run's working state for one merchant.
struct Work {
    merchant: MerchantId,
    livemode: bool,
    owner: String,
    now: Timestamp,
    date: String,
    run: u32,
    lines: Vec<SettlementLine>,
    ops: Vec<WriteOp>,
    intents: HashMap<PaymentIntentId, (PaymentIntent, IntentSettlement)>,
    reversed: HashMap<PaymentIntentId, Reversed>,
}

impl Settlement {
    /// Runs settlement for every merchant that ever had a settled payment. A merchant whose
    /// run fails is counted and skipped; the others still run.
    pub async fn run_all(&self) -> EngineResult<RunReport> {
        let _one = self.run_lock.lock().await;
        let mut report = RunReport::default();
        let mut after: Option<String> = None;
        loop {
            let range = match &after {
                Some(a) => EntryRange::after(a, MERCHANT_PAGE),
                None => EntryRange::all(MERCHANT_PAGE),
            };
            let page = self
                .ledger
                .scan_entries(
                    payouts::MERCHANTS_INDEX,
                    payouts::MERCHANTS_PARTITION,
                    &range,
                )
                .await?;
            for (owner, _) in &page {
                let Some((m, live)) = payouts::parse_owner(owner) else {
                    continue;
                };
                report.merchants += 1;
                match self.run_owner(m, live).await {
                    Ok(p) => report.payouts += p.len(),
                    Err(e) => {
                        report.failed += 1;
                        tracing::warn!(merchant = %m, livemode = live, error = %e, "settlement run of a merchant failed");
                    }
                }
            }
            if page.len() < MERCHANT_PAGE {
                return Ok(report);
            }
            after = page.last().map(|(k, _)| k.clone());
        }
    }

    /// Runs settlement for one merchant now (test mode reports call it so a day's sandbox
    /// payments reconcile that same day). Returns the payouts made.
    pub async fn run_merchant(
        &self,
        merchant: MerchantId,
        livemode: bool,
    ) -> EngineResult<Vec<Payout>> {
        let _one = self.run_lock.lock().await;
        self.run_owner(merchant, livemode).await
    }

    /// Runs batches until nothing due is left, under the merchant's reservation.
    async fn run_owner(&self, merchant: MerchantId, livemode: bool) -> EngineResult<Vec<Payout>> {
        let owner = payouts::owner(merchant, livemode);
        let scope = format!("settlement-run:{owner}");
        let Some(held) = self.hot.reserve(&scope, RUN_RESERVATION).await? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let result = loop {
            match self.run_batch(merchant, livemode).await {
                Ok((p, full)) => {
                    out.extend(p);
                    if !full {
                        break Ok(out);
                    }
                }
                Err(e) => break Err(e),
            }
        };
        let _ = self.hot.release(held).await;
        result
    }

    /// One batch: up to `max_lines_per_run` due transactions. Returns its payouts and whether
    /// the batch was full (more may be due).
    async fn run_batch(
        &self,
        merchant: MerchantId,
        livemode: bool,
    ) -> EngineResult<(Vec<Payout>, bool)> {
        let cfg = self.config();
        let now = self.clock.now();
        let delay = if livemode {
            i64::from(cfg.live_delay_days)
        } else {
            0
        };
        let cutoff = day_of(Timestamp(now.ms() - delay * 86_400_000));
        let owner = payouts::owner(merchant, livemode);
        let date = day_of(now);
        let runs = self.run_record(&owner, &date).await?;
        let mut w = Work {
            merchant,
            livemode,
            owner,
            now,
            date,
            run: runs.runs + 1,
            lines: Vec::new(),
            ops: Vec::new(),
            intents: HashMap::new(),
            reversed: HashMap::new(),
        };
        let max = cfg.max_lines_per_run.max(1);
        self.due_payments(&mut w, &cutoff, max).await?;
        if w.lines.len() < max {
            self.due_refunds(&mut w, &cutoff, max, cfg.refund_lookback_days)
                .await?;
        }
        let full = w.lines.len() >= max;
        if w.lines.is_empty() {
            if !w.ops.is_empty() {
                self.commit(w.ops).await?;
            }
            return Ok((Vec::new(), false));
        }
        let payouts = self.close(&mut w, runs).await?;
        self.commit(std::mem::take(&mut w.ops)).await?;
        metrics::counter!("ipay_settlement_lines_total").increment(w.lines.len() as u64);
        Ok((payouts, full))
    }

    async fn commit(&self, ops: Vec<WriteOp>) -> EngineResult<()> {
        let mut b = WriteBatch::new();
        b.ops = ops;
        self.ledger.submit(b).await?;
        Ok(())
    }

    async fn run_record(&self, owner: &str, date: &str) -> EngineResult<RunRecord> {
        Ok(
            match self
                .ledger
                .get_record(payouts::RUN_RECORD, &format!("{owner}:{date}"))
                .await?
            {
                Some(b) => serde_json::from_slice(&b).unwrap_or_default(),
                None => RunRecord::default(),
            },
        )
    }

    /// Payments due: entries of the due index up to the cutoff day.
    async fn due_payments(&self, w: &mut Work, cutoff: &str, max: usize) -> EngineResult<()> {
        // Sort keys are `{day}:{id}`; `;` sorts right after `:`, so this takes the cutoff day.
        let range = EntryRange {
            start: Bound::Unbounded,
            end: Bound::Excluded(format!("{cutoff};")),
            limit: max,
            descending: false,
        };
        let due = self
            .ledger
            .scan_entries(payouts::DUE_INDEX, &w.owner, &range)
            .await?;
        for (sort, value) in due {
            let delete = WriteOp::DeleteEntry {
                index: payouts::DUE_INDEX,
                partition: w.owner.clone(),
                sort: sort.clone(),
            };
            let id = sort
                .rsplit(':')
                .next()
                .and_then(|s| PaymentIntentId::parse(s).ok());
            let at = std::str::from_utf8(&value)
                .ok()
                .and_then(|s| s.parse().ok())
                .map(Timestamp);
            let Some(id) = id else {
                w.ops.push(delete);
                continue;
            };
            let mark = format!("pi:{id}");
            if self
                .ledger
                .get_record(payouts::LINE_MARK, &mark)
                .await?
                .is_some()
            {
                w.ops.push(delete);
                continue;
            }
            let Some((pi, s)) = self.settled_intent(w, id).await? else {
                if self.ledger.get_intent(id).await?.is_none() {
                    w.ops.push(delete);
                }
                continue;
            };
            w.ops.push(delete);
            let line = self.payment_line(w, &pi, &s, at.unwrap_or(pi.updated));
            w.lines.push(line);
        }
        Ok(())
    }

    /// The intent and its settlement (quoted now if it succeeded without one); `None` when
    /// it is missing, not succeeded, or no rate is known yet.
    async fn settled_intent(
        &self,
        w: &mut Work,
        id: PaymentIntentId,
    ) -> EngineResult<Option<(PaymentIntent, IntentSettlement)>> {
        if let Some(v) = w.intents.get(&id) {
            return Ok(Some(v.clone()));
        }
        let Some(pi) = self.ledger.get_intent(id).await? else {
            return Ok(None);
        };
        if pi.status != IntentStatus::Succeeded
            || pi.merchant_id != w.merchant
            || pi.livemode != w.livemode
        {
            return Ok(None);
        }
        let s = match &pi.settlement {
            Some(s) => s.clone(),
            None => match self.quote(&pi).await? {
                Some(s) => s,
                None => {
                    tracing::warn!(intent = %id, "no exchange rate to settle this payment; held until one is published");
                    return Ok(None);
                }
            },
        };
        w.intents.insert(id, (pi.clone(), s.clone()));
        Ok(Some((pi, s)))
    }

    fn payment_line(
        &self,
        w: &Work,
        pi: &PaymentIntent,
        s: &IntentSettlement,
        at: Timestamp,
    ) -> SettlementLine {
        let fee = self.fee(&w.merchant.to_string(), &pi.channel).on(s.value);
        SettlementLine {
            kind: LineKind::Payment,
            payment_intent_id: pi.id,
            refund_id: None,
            channel: pi.channel.clone(),
            payer_amount: pi.amount.value,
            payer_currency: pi.amount.currency,
            settlement: s.value,
            settlement_currency: s.currency,
            rate: s.rate,
            rate_source: s.rate_source.clone(),
            rate_timestamp: s.rate_timestamp,
            fee,
            payout: Centi::from_minor(s.value) - fee,
            transaction_at: at,
            settled_at: w.now,
            date: w.date.clone(),
            payout_id: String::new(),
        }
    }

    /// Refunds due: succeeded, made on or before the cutoff day, not settled yet, until the
    /// run holds `max` lines. Refunds are read newest first; the scan stops at `lookback_days`.
    async fn due_refunds(
        &self,
        w: &mut Work,
        cutoff: &str,
        max: usize,
        lookback_days: u32,
    ) -> EngineResult<()> {
        let oldest = w.now.ms() - i64::from(lookback_days) * 86_400_000;
        let mut offset = 0;
        loop {
            let page = self
                .ledger
                .list_refunds(
                    w.merchant,
                    w.livemode,
                    None,
                    PageRequest {
                        limit: REFUND_PAGE,
                        offset,
                    },
                )
                .await?;
            for r in &page.data {
                if r.created.ms() < oldest || w.lines.len() >= max {
                    return Ok(());
                }
                if r.status != RefundStatus::Succeeded || day_of(r.created).as_str() > cutoff {
                    continue;
                }
                if self
                    .ledger
                    .get_record(payouts::LINE_MARK, &format!("re:{}", r.id))
                    .await?
                    .is_some()
                {
                    continue;
                }
                self.refund_line(w, r).await?;
            }
            offset += page.data.len();
            if page.data.len() < REFUND_PAGE {
                return Ok(());
            }
        }
    }

    /// Reverses the settlement of the refunded part: `convert(refunded so far) − reversed so
    /// far`, so a full refund reverses exactly what the payment settled.
    async fn refund_line(&self, w: &mut Work, r: &Refund) -> EngineResult<()> {
        let Some((pi, s)) = self.settled_intent(w, r.payment_intent).await? else {
            return Ok(());
        };
        let mut rev = match w.reversed.get(&pi.id) {
            Some(v) => *v,
            None => match self
                .ledger
                .get_record(payouts::REVERSED_RECORD, &pi.id.to_string())
                .await?
            {
                Some(b) => serde_json::from_slice(&b).unwrap_or_default(),
                None => Reversed::default(),
            },
        };
        let refunded = (rev.refunded + r.amount.value).min(pi.amount.value);
        let total = convert(refunded, pi.amount.currency, s.currency, s.rate)
            .ok_or_else(|| EngineError::Internal("settlement overflow".into()))?
            .min(s.value);
        let reversal = total - rev.settlement;
        rev = Reversed {
            refunded,
            settlement: total,
        };
        w.reversed.insert(pi.id, rev);
        w.lines.push(SettlementLine {
            kind: LineKind::Refund,
            payment_intent_id: pi.id,
            refund_id: Some(r.id),
            channel: pi.channel.clone(),
            payer_amount: -r.amount.value,
            payer_currency: pi.amount.currency,
            settlement: -reversal,
            settlement_currency: s.currency,
            rate: s.rate,
            rate_source: s.rate_source.clone(),
            rate_timestamp: s.rate_timestamp,
            fee: Centi(0),
            payout: Centi::from_minor(-reversal),
            transaction_at: r.created,
            settled_at: w.now,
            date: w.date.clone(),
            payout_id: String::new(),
        });
        Ok(())
    }

    /// Turns the lines into payouts (one per currency), moves balances, and adds every write
    /// of the run to `w.ops`.
    async fn close(&self, w: &mut Work, runs: RunRecord) -> EngineResult<Vec<Payout>> {
        let prefs = self.prefs_of(&w.owner, w.livemode).await?;
        let mut by_currency: BTreeMap<Currency, Vec<usize>> = BTreeMap::new();
        for (i, l) in w.lines.iter().enumerate() {
            by_currency
                .entry(l.settlement_currency)
                .or_default()
                .push(i);
        }
        let mut out = Vec::with_capacity(by_currency.len());
        for (cur, idx) in by_currency {
            let payout = self.payout(w, &prefs, cur, &idx).await?;
            for &i in &idx {
                w.lines[i].payout_id = payout.id.clone();
            }
            out.push(payout);
        }
        self.line_ops(w)?;
        let record = RunRecord {
            runs: w.run,
            lines: runs.lines + w.lines.len() as u64,
        };
        w.ops.push(put_record(
            payouts::RUN_RECORD,
            format!("{}:{}", w.owner, w.date),
            &record,
        )?);
        // A struct, not `json!`: payout amounts are exact decimals and must not pass through
        // a `serde_json::Value` (which would hold them as floats).
        let data = Completed {
            merchant_id: w.merchant,
            livemode: w.livemode,
            date: &w.date,
            run: w.run,
            transactions: w.lines.len(),
            payouts: &out,
        };
        let object = out.first().map(|p| p.id.clone()).unwrap_or_default();
        w.ops.push(WriteOp::PutEvent(Event::new(
            w.merchant,
            w.livemode,
            "settlement.completed",
            w.now,
            object,
            &data,
        )));
        Ok(out)
    }

    /// The payout of one currency, and its balance write.
    async fn payout(
        &self,
        w: &mut Work,
        prefs: &SettlementPrefs,
        cur: Currency,
        idx: &[usize],
    ) -> EngineResult<Payout> {
        let lines: Vec<&SettlementLine> = idx.iter().map(|&i| &w.lines[i]).collect();
        let total_settlement: Centi = lines.iter().map(|l| Centi::from_minor(l.settlement)).sum();
        let total_fees: Centi = lines.iter().map(|l| l.fee).sum();
        let net: Centi = lines.iter().map(|l| l.payout).sum();
        debug_assert_eq!(total_settlement - total_fees, net);
        let key = format!("{}:{cur}", w.owner);
        let before: Centi = match self
            .ledger
            .get_record(payouts::BALANCE_RECORD, &key)
            .await?
        {
            Some(b) => serde_json::from_slice(&b).unwrap_or_default(),
            None => Centi(0),
        };
        let balance = before + net;
        let (pay, withdrawn, left) = withdraw(prefs, cur, balance);
        let p = Payout {
            id: format!("po_{}_{}_{}_{cur}", w.merchant, w.date, w.run),
            merchant_id: w.merchant,
            livemode: w.livemode,
            date: w.date.clone(),
            run: w.run,
            currency: cur,
            transactions: lines.len() as u32,
            total_settlement,
            total_fees,
            net,
            withdrawn,
            balance: left,
            status: if pay {
                PayoutStatus::Paid
            } else {
                PayoutStatus::Held
            },
            created: w.now,
        };
        w.ops.push(put_record(payouts::BALANCE_RECORD, key, &left)?);
        w.ops.push(WriteOp::PutEntry {
            index: payouts::PAYOUTS_INDEX,
            partition: w.owner.clone(),
            sort: format!("{}:{:04}:{cur}", w.date, w.run),
            value: to_json(&p)?,
        });
        Ok(p)
    }

    /// Lines, their settled markers, and the refund reversal totals.
    fn line_ops(&self, w: &mut Work) -> EngineResult<()> {
        let partition = format!("{}:{}", w.owner, w.date);
        for l in &w.lines {
            let kind = match l.kind {
                LineKind::Payment => "pi",
                LineKind::Refund => "re",
            };
            let id = l
                .refund_id
                .map_or(l.payment_intent_id.to_string(), |r| r.to_string());
            w.ops.push(WriteOp::PutEntry {
                index: payouts::LINES_INDEX,
                partition: partition.clone(),
                sort: format!("{:04}:{kind}:{id}", w.run),
                value: to_json(l)?,
            });
            w.ops.push(WriteOp::PutRecord {
                kind: payouts::LINE_MARK,
                key: l.mark_key(),
                value: w.date.clone().into_bytes(),
            });
        }
        for (id, rev) in &w.reversed {
            w.ops
                .push(put_record(payouts::REVERSED_RECORD, id.to_string(), rev)?);
        }
        Ok(())
    }
}

/// Whether the balance is paid out under `prefs`, the whole minor units withdrawn, and the
/// balance left (the hundredths always stay).
fn withdraw(prefs: &SettlementPrefs, cur: Currency, balance: Centi) -> (bool, i64, Centi) {
    let threshold = prefs
        .withdrawal_threshold
        .filter(|t| t.currency == cur)
        .map_or(Centi(0), |t| Centi::from_minor(t.value));
    if prefs.auto_withdrawal && balance >= threshold && balance >= Centi(100) {
        let (whole, rest) = balance.split_minor();
        (true, whole, rest)
    } else {
        (false, 0, balance)
    }
}

/// Data of the `settlement.completed` event.
#[derive(serde::Serialize)]
struct Completed<'a> {
    merchant_id: MerchantId,
    livemode: bool,
    date: &'a str,
    run: u32,
    transactions: usize,
    payouts: &'a [Payout],
}

fn to_json<T: serde::Serialize>(v: &T) -> EngineResult<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| EngineError::Internal(e.to_string()))
}

fn put_record<T: serde::Serialize>(
    kind: &'static str,
    key: String,
    v: &T,
) -> EngineResult<WriteOp> {
    Ok(WriteOp::PutRecord {
        kind,
        key,
        value: to_json(v)?,
    })
}
