//! Settlement runs over a real embedded ledger: the seed's worked example, T+N, refunds
//! across runs, and properties over arbitrary payments, refunds, rates and fees.

use super::amount::{Centi, Dec};
use super::fees::{Fee, FeeSchedule};
use super::fx::{RateTable, convert};
use super::payouts::LineKind;
use super::*;
use crate::clock::ManualClock;
use crate::ids::{MerchantId, RefundId, ServiceId};
use crate::model::{IntentStatus, Refund, RefundStatus};
use crate::reconciliation::read_day;
use crate::store::WriteBatch;
use crate::store::embedded::{EmbeddedLedger, EmbeddedOptions};
use crate::store::memory_hot::MemoryHotState;
use proptest::prelude::*;

/// 2026-05-27T09:00:00Z
const T0: i64 = 1_779_872_400_000;
const DAY: i64 = 86_400_000;

struct Fixture {
    s: Arc<Settlement>,
    ledger: Arc<EmbeddedLedger>,
    clock: ManualClock,
    merchant: MerchantId,
    _dir: tempfile::TempDir,
}

fn fixture(rate: &str, to: &str, fee: Fee, live_delay_days: u32) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ledger = EmbeddedLedger::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let clock = ManualClock::new(T0);
    let s = Arc::new(Settlement::new(
        ledger.clone(),
        Arc::new(MemoryHotState::new()),
        Arc::new(clock.clone()),
    ));
    let doc = format!(
        r#"{{"source":"test-rates","as_of":"2026-05-27T00:00:00Z","rates":{{"CNY/{to}":"{rate}"}}}}"#
    );
    let cfg = SettlementConfig {
        live_delay_days,
        run_interval_secs: 0,
        max_lines_per_run: 7,
        ..Default::default()
    };
    *s.loaded.write() = Arc::new(Loaded {
        cfg,
        rates: Arc::new(RateTable::from_json(doc.as_bytes()).unwrap()),
        fees: FeeSchedule::new(fee, &[]).unwrap(),
    });
    Fixture {
        s,
        ledger,
        clock,
        merchant: MerchantId::new_at(T0),
        _dir: dir,
    }
}

impl Fixture {
    /// A succeeded CNY intent, committed as its session would (with its success writes).
    async fn pay(&self, value: i64, to: &str, livemode: bool) -> PaymentIntent {
        let now = self.clock.now();
        let amount = Money::from_parts(value, "CNY").unwrap();
        let mut pi = crate::model::intent::tests::sample(now.ms());
        pi.amount = amount;
        pi.status = IntentStatus::Succeeded;
        pi.merchant_id = self.merchant;
        pi.livemode = livemode;
        pi.service_id = ServiceId::new_at(now.ms());
        pi.settlement = self.s.rates().settle(amount, Currency::parse(to).unwrap());
        let mut b = WriteBatch::new();
        b.push(WriteOp::PutIntent(pi.clone()));
        for op in self.s.success_ops(&pi) {
            b.push(op);
        }
        self.ledger.submit(b).await.unwrap();
        pi
    }

    async fn refund(&self, pi: &PaymentIntent, value: i64) -> Refund {
        let r = Refund {
            id: RefundId::new_at(self.clock.now_ms()),
            payment_intent: pi.id,
            amount: Money {
                value,
                currency: pi.amount.currency,
            },
            reason: None,
            status: RefundStatus::Succeeded,
            livemode: pi.livemode,
            merchant_id: pi.merchant_id,
            created: self.clock.now(),
        };
        let mut b = WriteBatch::new();
        b.push(WriteOp::PutRefund(r.clone()));
        self.ledger.submit(b).await.unwrap();
        r
    }

    async fn lines(&self, livemode: bool) -> Vec<SettlementLine> {
        let owner = payouts::owner(self.merchant, livemode);
        read_day(
            self.ledger.as_ref(),
            &owner,
            &day_of(self.clock.now()),
            100_000,
        )
        .await
        .unwrap()
    }
}

#[tokio::test]
async fn the_seed_example_settles_99_cents_with_a_2_97_fee_and_a_96_03_payout() {
    let f = fixture("0.1416", "USD", Fee::parse("3", 0).unwrap(), 1);
    let pi = f.pay(699, "USD", false).await;
    let s = pi.settlement.clone().unwrap();
    assert_eq!(
        (s.value, s.currency.code(), s.rate.to_string()),
        (99, "USD", "0.1416".into())
    );
    let payouts = f.s.run_merchant(f.merchant, false).await.unwrap();
    assert_eq!(payouts.len(), 1);
    let lines = f.lines(false).await;
    assert_eq!(lines.len(), 1);
    let row = crate::reconciliation::csv_row(&lines[0]);
    assert_eq!(
        row,
        format!(
            "2026-05-27,{},sandbox,699,CNY,99,USD,0.1416,2.97,96.03\n",
            pi.id
        )
    );
    let p = &payouts[0];
    assert_eq!((p.net, p.withdrawn, p.balance), (Centi(9603), 96, Centi(3)));
    assert_eq!(p.status, PayoutStatus::Paid);
    // The same day again: nothing left to settle, nothing paid twice.
    assert!(
        f.s.run_merchant(f.merchant, false)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(f.lines(false).await.len(), 1);
}

#[tokio::test]
async fn live_mode_settles_a_day_later_and_test_mode_at_once() {
    let f = fixture("0.1416", "USD", Fee::zero(), 1);
    f.pay(1000, "USD", true).await;
    f.pay(1000, "USD", false).await;
    assert!(f.s.run_merchant(f.merchant, true).await.unwrap().is_empty());
    assert_eq!(f.s.run_merchant(f.merchant, false).await.unwrap().len(), 1);
    f.clock.advance_ms(DAY);
    let p = f.s.run_merchant(f.merchant, true).await.unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].date, "2026-05-28");
    let lines = f.lines(true).await;
    assert_eq!((lines.len(), lines[0].settlement), (1, 142));
}

#[tokio::test]
async fn refunds_in_later_runs_reverse_exactly_what_the_payment_settled() {
    let f = fixture("0.1416", "USD", Fee::parse("3", 0).unwrap(), 1);
    let pi = f.pay(699, "USD", false).await;
    f.s.run_merchant(f.merchant, false).await.unwrap();
    f.refund(&pi, 350).await;
    f.s.run_merchant(f.merchant, false).await.unwrap();
    f.refund(&pi, 349).await;
    let last = f.s.run_merchant(f.merchant, false).await.unwrap();
    assert_eq!(last.len(), 1);
    let lines = f.lines(false).await;
    assert_eq!(lines.len(), 3);
    let settled: i64 = lines.iter().map(|l| l.settlement).sum();
    let payer: i64 = lines.iter().map(|l| l.payer_amount).sum();
    assert_eq!((settled, payer), (0, 0), "a full refund nets to nothing");
    let fees: Centi = lines.iter().map(|l| l.fee).sum();
    let paid: Centi = lines.iter().map(|l| l.payout).sum();
    assert_eq!(fees, Centi(297), "fees are not returned on refunds");
    assert_eq!(paid, Centi(-297));
    assert!(
        lines
            .iter()
            .filter(|l| l.kind == LineKind::Refund)
            .all(|l| l.fee == Centi(0))
    );
}

/// The exact value of `minor × rate` in settlement minor units, as a fraction `num / den`.
fn exact(minor: i64, rate: Dec, from_exp: u8, to_exp: u8) -> (i128, i128) {
    let shift = i32::from(to_exp) - i32::from(from_exp);
    let mut num = i128::from(minor) * rate.units();
    let mut den = 10i128.pow(rate.scale());
    if shift >= 0 {
        num *= 10i128.pow(shift as u32);
    } else {
        den *= 10i128.pow((-shift) as u32);
    }
    (num, den)
}

fn any_rate() -> impl Strategy<Value = String> {
    (1u64..=2_000_000, 0usize..=6).prop_map(|(u, scale)| {
        let padded = format!("{u:0>w$}", w = scale + 1);
        let (int, frac) = padded.split_at(padded.len() - scale);
        if scale == 0 {
            int.to_string()
        } else {
            format!("{int}.{frac}")
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn settlement_converts_nets_and_neither_creates_nor_loses_a_minor_unit(
        rate in any_rate(),
        to in prop_oneof![Just("USD"), Just("JPY"), Just("KWD")],
        pct in 0u32..=1_000,
        fixed in 0i64..=50,
        pays in proptest::collection::vec((1i64..=5_000_000, proptest::collection::vec(1u32..=100, 0..3)), 1..12),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let pct = format!("{}.{:02}", pct / 100, pct % 100);
            let f = fixture(&rate, to, Fee::parse(&pct, fixed).unwrap(), 1);
            let (cny, cur) = (Currency::parse("CNY").unwrap(), Currency::parse(to).unwrap());
            let rate = Dec::parse(&rate).unwrap();
            let mut expected_refunds = 0;
            let mut intents = Vec::new();
            for (value, parts) in &pays {
                let pi = f.pay(*value, to, false).await;
                let mut left = *value;
                for p in parts {
                    let r = (*value * i64::from(*p) / 100).min(left);
                    if r > 0 {
                        f.refund(&pi, r).await;
                        left -= r;
                        expected_refunds += 1;
                    }
                }
                intents.push((pi, *value - left));
            }
            // Several batches (max 7 lines each), all in one call.
            let payouts = f.s.run_merchant(f.merchant, false).await.unwrap();
            let lines = f.lines(false).await;
            let pays_n = lines.iter().filter(|l| l.kind == LineKind::Payment).count();
            assert_eq!(pays_n, pays.len(), "every payment settled once");
            assert_eq!(lines.len() - pays_n, expected_refunds, "every refund settled once");

            // Σ payer amounts converted = Σ settlement, within half a unit per line of exact.
            let (mut num, den) = (0i128, exact(1, rate, cny.exponent(), cur.exponent()).1);
            let mut settled_sales = 0i128;
            for l in lines.iter().filter(|l| l.kind == LineKind::Payment) {
                num += exact(l.payer_amount, rate, cny.exponent(), cur.exponent()).0;
                settled_sales += i128::from(l.settlement);
                assert_eq!(Some(l.settlement), convert(l.payer_amount, cny, cur, rate));
            }
            assert!((settled_sales * den - num).abs() * 2 <= den * pays.len() as i128);

            // Σ settlement = Σ fees + Σ payouts, exactly, line by line and in total.
            for l in &lines {
                assert_eq!(Centi::from_minor(l.settlement), l.fee + l.payout);
            }
            let settlement: Centi = lines.iter().map(|l| Centi::from_minor(l.settlement)).sum();
            let fees: Centi = lines.iter().map(|l| l.fee).sum();
            let paid: Centi = lines.iter().map(|l| l.payout).sum();
            assert_eq!(settlement, fees + paid);

            // Refunds net out: per intent, what stays settled is the conversion of what was kept.
            for (pi, refunded) in &intents {
                let net: i64 = lines.iter().filter(|l| l.payment_intent_id == pi.id).map(|l| l.settlement).sum();
                let kept = convert(pi.amount.value, cny, cur, rate).unwrap() - convert(*refunded, cny, cur, rate).unwrap();
                assert_eq!(net, kept);
                assert!(net >= 0);
            }

            // Payouts carry every hundredth: withdrawn + balance = Σ line payouts.
            let net: Centi = payouts.iter().map(|p| p.net).sum();
            assert_eq!(net, paid);
            let last = payouts.last().unwrap();
            let withdrawn: i64 = payouts.iter().map(|p| p.withdrawn).sum();
            assert_eq!(Centi::from_minor(withdrawn) + last.balance, paid);

            // A second run settles nothing again.
            assert!(f.s.run_merchant(f.merchant, false).await.unwrap().is_empty());
        });
    }
}
