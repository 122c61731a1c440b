//! Settlement: what a merchant receives for the payments the engine collected. It owns the
//! rate table and fee rules in force (`[settlement]`), the [`IntentSettlement`] quoted when
//! an intent succeeds, merchants' settlement preferences (`PATCH /v1/merchant/settlement`),
//! and the daily settlement runs that turn succeeded payments and refunds into lines and
//! payouts ([`run`]).
//!
//! It does not change intents (their sessions do: the quote rides on the `Succeed` command),
//! move money at a bank, or render reports ([`crate::reconciliation`] reads what runs wrote).
//! Formulas and a worked example: `docs/settlement.md`.

pub mod amount;
pub mod fees;
pub mod fx;
pub mod payouts;
pub mod run;

use crate::auth::AuthContext;
use crate::clock::{Clock, Timestamp};
use crate::error::{EngineError, EngineResult};
use crate::intents::AmountInput;
use crate::model::{PaymentIntent, Permission};
use crate::money::{Currency, Money};
use crate::store::{HotState, Ledger, WriteOp};
use fees::{Fee, FeeRule, FeeSchedule};
pub use fx::IntentSettlement;
use fx::RateTable;
use parking_lot::RwLock;
pub use payouts::{LineKind, Payout, PayoutStatus, SettlementLine};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// The sample rates shipped in `config/rates.sample.json`, used when `rates_source = "sample"`.
pub const SAMPLE_RATES: &str = include_str!("../../../config/rates.sample.json");

/// `[settlement]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SettlementConfig {
    /// Where daily rates come from: `sample` (the made-up rates of
    /// `config/rates.sample.json`, built in), a file path, or an `http(s)://` URL serving the
    /// same JSON (the PSP simulator serves one at `/rates`).
    pub rates_source: String,
    /// How often a URL or file source is read again, seconds.
    pub rates_refresh_secs: u64,
    /// Live mode settles a day's transactions this many days later (T+N); test mode always
    /// settles at once (T+0).
    pub live_delay_days: u32,
    /// How often settlement runs look for due transactions, seconds (0: never on their own).
    pub run_interval_secs: u64,
    /// Most transactions one run batch settles; more are settled by further runs at once.
    pub max_lines_per_run: usize,
    /// Refunds older than this are not looked at by runs any more, days.
    pub refund_lookback_days: u32,
    /// Longest range `GET /v1/reconciliation/export` accepts, days.
    pub max_export_days: u32,
    /// Fee percentage where no rule matches (decimal string, `"2.9"` = 2.9 %).
    pub default_fee_percent: String,
    /// Fixed fee where no rule matches, minor units of the settlement currency.
    pub default_fee_fixed_minor: i64,
    /// Fee rules per channel and/or merchant; the most specific match wins.
    pub fees: Vec<FeeRule>,
}

impl Default for SettlementConfig {
    fn default() -> Self {
        SettlementConfig {
            rates_source: "sample".into(),
            rates_refresh_secs: 3_600,
            live_delay_days: 1,
            run_interval_secs: 60,
            max_lines_per_run: 200,
            refund_lookback_days: 90,
            max_export_days: 366,
            default_fee_percent: "0".into(),
            default_fee_fixed_minor: 0,
            fees: Vec::new(),
        }
    }
}

/// A merchant's settlement preferences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SettlementPrefs {
    /// Settlement currency for services whose manifest names none.
    #[schema(value_type = Option<String>, example = "USD")]
    pub preferred_settlement_currency: Option<Currency>,
    /// Pay the balance out after each run (when at least `withdrawal_threshold`).
    pub auto_withdrawal: bool,
    /// Smallest balance paid out automatically; applies to balances in its currency.
    pub withdrawal_threshold: Option<Money>,
    pub livemode: bool,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub updated: Option<Timestamp>,
}

impl SettlementPrefs {
    fn defaults(livemode: bool) -> Self {
        SettlementPrefs {
            preferred_settlement_currency: None,
            auto_withdrawal: true,
            withdrawal_threshold: None,
            livemode,
            updated: None,
        }
    }
}

/// `PATCH /v1/merchant/settlement` body: fields given change, others stay.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettlementPrefsInput {
    /// ISO 4217 code.
    pub preferred_settlement_currency: Option<String>,
    pub auto_withdrawal: Option<bool>,
    pub withdrawal_threshold: Option<AmountInput>,
}

/// Rates, fees and settings in force (swapped whole on reload).
struct Loaded {
    cfg: SettlementConfig,
    rates: Arc<RateTable>,
    fees: FeeSchedule,
}

/// Settlement of one engine. Cheap to share.
pub struct Settlement {
    ledger: Arc<dyn Ledger>,
    hot: Arc<dyn HotState>,
    clock: Arc<dyn Clock>,
    loaded: RwLock<Arc<Loaded>>,
    /// One run at a time in this process (the scheduler and report requests share it).
    run_lock: tokio::sync::Mutex<()>,
    task: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Settlement {
    /// Settlement with the built-in sample rates, no fees and no scheduled runs, until
    /// [`Settlement::configure`] is called.
    pub(crate) fn new(
        ledger: Arc<dyn Ledger>,
        hot: Arc<dyn HotState>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let rates =
            RateTable::from_json(SAMPLE_RATES.as_bytes()).unwrap_or_else(|_| RateTable::empty());
        let loaded = Loaded {
            cfg: SettlementConfig::default(),
            rates: Arc::new(rates),
            fees: FeeSchedule::none(),
        };
        Settlement {
            ledger,
            hot,
            clock,
            loaded: RwLock::new(Arc::new(loaded)),
            run_lock: tokio::sync::Mutex::new(()),
            task: parking_lot::Mutex::new(None),
        }
    }

    /// Applies `[settlement]`: checks the fee rules, reads the rates, and (when
    /// `run_interval_secs > 0`) starts the scheduled runs and rate refreshes.
    pub async fn configure(self: &Arc<Self>, cfg: SettlementConfig) -> EngineResult<()> {
        let bad = |m: String| EngineError::Internal(format!("[settlement]: {m}"));
        let default =
            Fee::parse(&cfg.default_fee_percent, cfg.default_fee_fixed_minor).map_err(bad)?;
        let fees = FeeSchedule::new(default, &cfg.fees).map_err(bad)?;
        let rates = load_rates(&cfg.rates_source).await.map_err(bad)?;
        if rates.is_sample() {
            tracing::warn!(source = %cfg.rates_source, "settling with SAMPLE exchange rates; set settlement.rates_source for real ones");
        }
        let interval = cfg.run_interval_secs;
        *self.loaded.write() = Arc::new(Loaded {
            cfg,
            rates: Arc::new(rates),
            fees,
        });
        if interval > 0 {
            self.spawn_scheduler(Duration::from_secs(interval));
        }
        Ok(())
    }

    /// Stops scheduled runs (engine shutdown).
    pub fn stop(&self) {
        if let Some(t) = self.task.lock().take() {
            t.abort();
        }
    }

    fn spawn_scheduler(self: &Arc<Self>, every: Duration) {
        let weak = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            let mut last_refresh = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(every).await;
                let Some(s) = weak.upgrade() else { return };
                let cfg = s.config();
                let refresh = Duration::from_secs(cfg.rates_refresh_secs.max(60));
                if cfg.rates_source != "sample" && last_refresh.elapsed() >= refresh {
                    last_refresh = tokio::time::Instant::now();
                    s.reload_rates().await;
                }
                if let Err(e) = s.run_all().await {
                    tracing::warn!(error = %e, "settlement run failed; it is retried at the next interval");
                }
            }
        });
        if let Some(old) = self.task.lock().replace(task) {
            old.abort();
        }
    }

    async fn reload_rates(&self) {
        let src = self.config().rates_source;
        match load_rates(&src).await {
            Ok(r) => {
                let cur = self.loaded.read().clone();
                *self.loaded.write() = Arc::new(Loaded {
                    cfg: cur.cfg.clone(),
                    rates: Arc::new(r),
                    fees: cur.fees.clone(),
                });
            }
            Err(e) => {
                tracing::warn!(source = %src, error = %e, "cannot refresh exchange rates; keeping the previous ones")
            }
        }
    }

    /// Settings in force.
    pub fn config(&self) -> SettlementConfig {
        self.loaded.read().cfg.clone()
    }

    fn rates(&self) -> Arc<RateTable> {
        self.loaded.read().rates.clone()
    }

    fn fee(&self, merchant: &str, channel: &str) -> Fee {
        self.loaded.read().fees.fee_for(merchant, channel)
    }

    /// What `intent` settles as: in its manifest's settlement currency, else the merchant's
    /// preferred one, else its own currency. `None` when no rate is known for the pair (the
    /// run tries again with the rates in force then).
    pub(crate) async fn quote(
        &self,
        intent: &PaymentIntent,
    ) -> EngineResult<Option<IntentSettlement>> {
        let manifest = self
            .ledger
            .get_service(intent.service_id)
            .await?
            .and_then(|s| s.settlement_currency);
        let to = match manifest {
            Some(c) => c,
            None => self
                .prefs_of(
                    &payouts::owner(intent.merchant_id, intent.livemode),
                    intent.livemode,
                )
                .await?
                .preferred_settlement_currency
                .unwrap_or(intent.amount.currency),
        };
        Ok(self.rates().settle(intent.amount, to))
    }

    /// Writes that go with an intent's success, in its batch: it is due for settlement, and
    /// its merchant is one the runs visit.
    pub(crate) fn success_ops(&self, intent: &PaymentIntent) -> Vec<WriteOp> {
        let now = self.clock.now();
        let owner = payouts::owner(intent.merchant_id, intent.livemode);
        vec![
            WriteOp::PutEntry {
                index: payouts::DUE_INDEX,
                partition: owner.clone(),
                sort: format!("{}:{}", day_of(now), intent.id),
                value: now.ms().to_string().into_bytes(),
            },
            WriteOp::PutEntry {
                index: payouts::MERCHANTS_INDEX,
                partition: payouts::MERCHANTS_PARTITION.into(),
                sort: owner,
                value: Vec::new(),
            },
        ]
    }

    async fn prefs_of(&self, owner: &str, livemode: bool) -> EngineResult<SettlementPrefs> {
        Ok(
            match self.ledger.get_record(payouts::PREFS_RECORD, owner).await? {
                Some(b) => serde_json::from_slice(&b)
                    .map_err(|e| EngineError::Internal(format!("settlement preferences: {e}")))?,
                None => SettlementPrefs::defaults(livemode),
            },
        )
    }

    /// The caller's settlement preferences.
    pub async fn prefs(&self, ctx: &AuthContext) -> EngineResult<SettlementPrefs> {
        ctx.require(Permission::ServicesRead)?;
        self.prefs_of(&payouts::owner(ctx.merchant_id, ctx.livemode), ctx.livemode)
            .await
    }

    /// Changes the caller's settlement preferences (fields given only).
    pub async fn update_prefs(
        &self,
        ctx: &AuthContext,
        input: SettlementPrefsInput,
    ) -> EngineResult<SettlementPrefs> {
        ctx.require(Permission::ServicesWrite)?;
        let owner = payouts::owner(ctx.merchant_id, ctx.livemode);
        let mut p = self.prefs_of(&owner, ctx.livemode).await?;
        if let Some(c) = &input.preferred_settlement_currency {
            p.preferred_settlement_currency = Some(
                Currency::parse(c)
                    .map_err(|e| EngineError::money("preferred_settlement_currency", e))?,
            );
        }
        if let Some(a) = input.auto_withdrawal {
            p.auto_withdrawal = a;
        }
        if let Some(t) = &input.withdrawal_threshold {
            p.withdrawal_threshold = Some(
                Money::from_parts(t.value, &t.currency)
                    .map_err(|e| EngineError::money("withdrawal_threshold", e))?,
            );
        }
        p.updated = Some(self.clock.now());
        let value = serde_json::to_vec(&p).map_err(|e| EngineError::Internal(e.to_string()))?;
        let mut b = crate::store::WriteBatch::new();
        b.push(WriteOp::PutRecord {
            kind: payouts::PREFS_RECORD,
            key: owner,
            value,
        });
        self.ledger.submit(b).await?;
        Ok(p)
    }
}

impl Settlement {
    /// The caller's payouts, newest first (1 to 100, default 20).
    pub async fn payouts(
        &self,
        ctx: &AuthContext,
        limit: Option<usize>,
    ) -> EngineResult<Vec<Payout>> {
        ctx.require(Permission::PaymentIntentsRead)?;
        let limit = limit.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(EngineError::invalid(
                "parameter_invalid",
                "limit",
                "limit must be between 1 and 100",
            ));
        }
        let owner = payouts::owner(ctx.merchant_id, ctx.livemode);
        let rows = self
            .ledger
            .scan_entries(
                payouts::PAYOUTS_INDEX,
                &owner,
                &crate::store::EntryRange::all(limit).rev(),
            )
            .await?;
        rows.into_iter()
            .map(|(_, v)| {
                serde_json::from_slice(&v)
                    .map_err(|e| EngineError::Internal(format!("payout: {e}")))
            })
            .collect()
    }
}

/// Reads a rates document from `sample`, a file or an `http(s)://` URL.
async fn load_rates(source: &str) -> Result<RateTable, String> {
    if source == "sample" {
        return RateTable::from_json(SAMPLE_RATES.as_bytes());
    }
    if source.starts_with("http://") || source.starts_with("https://") {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        let resp = client
            .get(source)
            .send()
            .await
            .map_err(|e| format!("cannot fetch rates from {source}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("rates URL {source} answered {}", resp.status()));
        }
        let body = resp.bytes().await.map_err(|e| e.to_string())?;
        return RateTable::from_json(&body);
    }
    let bytes = tokio::fs::read(source)
        .await
        .map_err(|e| format!("cannot read rates file {source}: {e}"))?;
    RateTable::from_json(&bytes)
}

/// `YYYY-MM-DD` (UTC) of a time.
pub fn day_of(t: Timestamp) -> String {
    t.to_datetime().format("%Y-%m-%d").to_string()
}

#[cfg(test)]
mod tests;
