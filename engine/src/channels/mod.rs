//! Channels inside the engine: each merchant's stored channel configurations (credentials
//! encrypted at rest, see [`vault`]), the adapters built from them (cached per merchant, mode
//! and channel), the per-channel circuit breakers ([`breaker`]) and retries ([`retry`]) around
//! PSP calls, the callback rate limits and the callback de-duplication records.
//!
//! It does not speak any PSP's wire format (the `ipay-adapters` crate does, behind
//! [`ChannelFactory`]) and it does not change intents: the [`Engine`](crate::Engine) routes
//! verified callbacks to payment sessions.
//!
//! Storage (generic ledger records, so embedded and cluster mode work alike):
//! - record `channel_config` / `{merchant}:{test|live}:{channel}`: [`StoredChannel`] JSON,
//!   credentials sealed with AES-256-GCM;
//! - index `channel_configs`, partition `{merchant}:{test|live}`, sort key = channel: the same
//!   minus the credentials, for listing;
//! - record `channel_notification` / `{channel}:{notification id}`: a callback already applied.

pub mod breaker;
pub mod retry;
pub mod vault;

use crate::channel::{
    ChannelAdapter, ChannelError, ChannelFactory, ChannelPayment, ChannelPaymentRequest,
    ChannelRefund, ChannelRefundRequest, ChannelsConfig,
};
use crate::clock::{Clock, Timestamp};
use crate::error::{EngineError, EngineResult};
use crate::ids::MerchantId;
use crate::store::{EntryRange, Ledger, WriteBatch, WriteOp};
use breaker::{Breaker, BreakerSettings, BreakerSnapshot};
use dashmap::DashMap;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use retry::{Sleeper, TokioSleeper};
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vault::{MasterKey, Sealed};

const RECORD_KIND: &str = "channel_config";
const INDEX: &str = "channel_configs";
const NOTIFICATION_KIND: &str = "channel_notification";
/// Most retries of one PSP call, whatever the configuration says.
const MAX_RETRIES: usize = 5;
/// Longest single retry delay.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);
/// Most configured channels listed per merchant and mode (there are five channels).
const MAX_LISTED: usize = 100;
/// Longest PSP notification id kept for de-duplication.
pub const MAX_NOTIFICATION_ID_LEN: usize = 200;

/// Default request timeout the PSP budget is derived from when the caller names none, ms
/// (`[server] request_timeout_ms`'s default).
const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;
/// Shortest attempt worth making: a retry whose call would get less than this (or less than
/// `call_timeout_ms`, if smaller) is not made.
const MIN_ATTEMPT: Duration = Duration::from_secs(1);

/// What the engine needs to run real channels: the adapter factory, `[channels]`, the master
/// key, how to wait between retries, and how long one request may spend on PSP calls.
pub struct ChannelSetup {
    /// Builds adapters from stored credentials; without one only built-in channels work.
    pub factory: Option<Arc<dyn ChannelFactory>>,
    pub config: ChannelsConfig,
    /// Encrypts stored credentials; without one `POST /v1/channels` is refused.
    pub master_key: Option<MasterKey>,
    pub sleeper: Arc<dyn Sleeper>,
    /// Longest one request may spend calling a PSP, retries and the waits between them
    /// included; see [`ChannelSetup::psp_budget`].
    pub psp_budget: Duration,
}

impl ChannelSetup {
    /// The PSP budget that fits a request timeout of `request_timeout_ms`: four fifths of it,
    /// so that the store writes around the call and the answer itself still fit and an outage
    /// ends in `503 channel_unavailable`, never in the server's `408 request_timeout`.
    pub fn psp_budget(request_timeout_ms: u64) -> Duration {
        Duration::from_millis(request_timeout_ms.max(1).saturating_mul(4) / 5)
    }
}

impl Default for ChannelSetup {
    fn default() -> Self {
        ChannelSetup {
            factory: None,
            config: ChannelsConfig::default(),
            master_key: None,
            sleeper: Arc::new(TokioSleeper),
            psp_budget: ChannelSetup::psp_budget(DEFAULT_REQUEST_TIMEOUT_MS),
        }
    }
}

/// `POST /v1/channels` body. `Debug` leaves the credentials out.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfigInput {
    /// `alipay`, `wechat`, `promptpay`, `stripe` or `multisafepay`.
    pub channel: String,
    /// The channel's credentials (keys and ids as the channel names them). Stored encrypted;
    /// never returned.
    #[schema(value_type = Object)]
    pub credentials: serde_json::Value,
    /// Where the PSP sends callbacks (our `/callbacks/{channel}` as reachable by the PSP).
    pub notify_url: String,
}

impl std::fmt::Debug for ChannelConfigInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelConfigInput")
            .field("channel", &self.channel)
            .field("credentials", &"***")
            .field("notify_url", &self.notify_url)
            .finish()
    }
}

/// A stored channel configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredChannel {
    pub channel: String,
    pub merchant_id: MerchantId,
    pub livemode: bool,
    pub notify_url: String,
    pub created: Timestamp,
    pub updated: Timestamp,
    /// The credentials JSON, sealed; absent in the listing index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Sealed>,
}

/// A configured channel as `GET /v1/channels` shows it (never with credentials).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChannelView {
    pub channel: String,
    pub livemode: bool,
    pub notify_url: String,
    #[schema(value_type = String, format = DateTime)]
    pub created: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated: Timestamp,
    /// The channel's circuit breaker on this node.
    pub health: BreakerSnapshot,
}

struct CachedAdapter {
    adapter: Arc<dyn ChannelAdapter>,
    loaded: Instant,
}

fn mode(livemode: bool) -> &'static str {
    if livemode { "live" } else { "test" }
}

fn record_key(m: MerchantId, livemode: bool, channel: &str) -> String {
    format!("{m}:{}:{channel}", mode(livemode))
}

fn quota(per_sec: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(per_sec.max(1)).unwrap_or(NonZeroU32::MIN))
}

/// The channel subsystem of one engine.
pub struct ChannelHub {
    ledger: Arc<dyn Ledger>,
    clock: Arc<dyn Clock>,
    setup: ChannelSetup,
    retry_delays: Vec<Duration>,
    breakers: DashMap<String, Arc<Breaker>>,
    adapters: DashMap<String, CachedAdapter>,
    provider_limiter: DefaultKeyedRateLimiter<String>,
    merchant_limiter: DefaultKeyedRateLimiter<MerchantId>,
}

impl ChannelHub {
    /// The subsystem on these stores.
    pub fn new(ledger: Arc<dyn Ledger>, clock: Arc<dyn Clock>, setup: ChannelSetup) -> Self {
        let cfg = &setup.config;
        let retry_delays = cfg
            .retry_delays_ms
            .iter()
            .take(MAX_RETRIES)
            .map(|ms| Duration::from_millis(*ms).min(MAX_RETRY_DELAY))
            .collect();
        let provider_limiter =
            DefaultKeyedRateLimiter::keyed(quota(cfg.callback_rate_per_provider));
        let merchant_limiter =
            DefaultKeyedRateLimiter::keyed(quota(cfg.callback_rate_per_merchant));
        ChannelHub {
            ledger,
            clock,
            retry_delays,
            setup,
            breakers: DashMap::new(),
            adapters: DashMap::new(),
            provider_limiter,
            merchant_limiter,
        }
    }

    /// `[channels]` in force.
    pub fn config(&self) -> &ChannelsConfig {
        &self.setup.config
    }

    /// The adapter factory, when one was installed.
    pub fn factory(&self) -> Option<&Arc<dyn ChannelFactory>> {
        self.setup.factory.as_ref()
    }

    /// Whether the factory builds `channel`.
    pub fn knows(&self, channel: &str) -> bool {
        self.factory()
            .is_some_and(|f| f.channels().contains(&channel))
    }

    /// The breaker of `channel` (created closed on first use).
    pub fn breaker(&self, channel: &str) -> Arc<Breaker> {
        if let Some(b) = self.breakers.get(channel) {
            return b.clone();
        }
        let cfg = &self.setup.config;
        let settings = BreakerSettings {
            failure_threshold: cfg.breaker_failure_threshold,
            cooldown_ms: i64::try_from(cfg.breaker_cooldown_ms).unwrap_or(i64::MAX),
        };
        self.breakers
            .entry(channel.to_string())
            .or_insert_with(|| Arc::new(Breaker::new(channel, settings)))
            .clone()
    }

    /// True when `channel`'s breaker is closed (never-used channels are healthy).
    pub fn healthy(&self, channel: &str) -> bool {
        self.breakers.get(channel).is_none_or(|b| b.is_closed())
    }

    // ------------------------------------------------------------ configurations

    /// Validates and stores a merchant's configuration of one channel (replacing an older
    /// one). Returns its view and whether it is new.
    pub async fn configure(
        &self,
        merchant: MerchantId,
        livemode: bool,
        input: ChannelConfigInput,
    ) -> EngineResult<(ChannelView, bool)> {
        let factory = self.factory().ok_or_else(|| EngineError::Conflict {
            code: "channels_not_available",
            message: "this engine runs without channel adapters; only the sandbox channel works"
                .into(),
        })?;
        let plain = self.checked_credentials(factory.as_ref(), &input)?;
        let adapter = checked_adapter(factory.as_ref(), livemode, &input)?;
        let rkey = record_key(merchant, livemode, &input.channel);
        let sealed = self.seal(&rkey, &plain)?;
        let now = self.clock.now();
        let previous = self.load_stored(&rkey).await?;
        let stored = StoredChannel {
            channel: input.channel.clone(),
            merchant_id: merchant,
            livemode,
            notify_url: input.notify_url,
            created: previous.as_ref().map_or(now, |p| p.created),
            updated: now,
            credentials: Some(sealed),
        };
        let listed = self.store(&rkey, stored).await?;
        self.adapters.insert(
            rkey,
            CachedAdapter {
                adapter,
                loaded: Instant::now(),
            },
        );
        tracing::info!(merchant = %merchant, livemode, channel = %listed.channel, "channel configured");
        Ok((self.view(&listed), previous.is_none()))
    }

    /// Checks the channel name, the notify URL and the credentials' shape and size; returns
    /// the credentials as the JSON bytes to seal.
    fn checked_credentials(
        &self,
        factory: &dyn ChannelFactory,
        input: &ChannelConfigInput,
    ) -> EngineResult<Vec<u8>> {
        if !factory.channels().contains(&input.channel.as_str()) {
            return Err(EngineError::invalid(
                "channel_unknown",
                "channel",
                format!(
                    "channel `{}` cannot be configured; configurable channels: {}",
                    input.channel.chars().take(40).collect::<String>(),
                    factory.channels().join(", ")
                ),
            ));
        }
        crate::model::service::validate_https_url(&input.notify_url, "notify_url")?;
        if !input.credentials.is_object() {
            return Err(EngineError::invalid(
                "parameter_invalid",
                "credentials",
                "credentials must be a JSON object",
            ));
        }
        let plain = serde_json::to_vec(&input.credentials)
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        let max = self.setup.config.max_credentials_bytes;
        if plain.len() > max {
            return Err(EngineError::invalid(
                "parameter_invalid",
                "credentials",
                format!("credentials are limited to {max} bytes of JSON"),
            ));
        }
        Ok(plain)
    }

    /// Encrypts the credentials with the master key, bound to the record they are stored in.
    fn seal(&self, rkey: &str, plain: &[u8]) -> EngineResult<Sealed> {
        let key = self
            .setup
            .master_key
            .as_ref()
            .ok_or_else(|| EngineError::Conflict {
                code: "master_key_missing",
                message: "no channels master key is configured; the operator must set \
                          IPAY_CHANNELS__MASTER_KEY (base64 of 32 bytes)"
                    .into(),
            })?;
        key.seal(plain, rkey.as_bytes())
            .map_err(EngineError::Internal)
    }

    /// Writes the configuration and its list entry (without credentials) in one batch;
    /// returns the list entry.
    async fn store(&self, rkey: &str, stored: StoredChannel) -> EngineResult<StoredChannel> {
        let listed = StoredChannel {
            credentials: None,
            ..stored.clone()
        };
        let to_vec = |v: &StoredChannel| {
            serde_json::to_vec(v).map_err(|e| EngineError::Internal(e.to_string()))
        };
        let mut b = WriteBatch::new();
        b.push(WriteOp::PutRecord {
            kind: RECORD_KIND,
            key: rkey.to_string(),
            value: to_vec(&stored)?,
        });
        b.push(WriteOp::PutEntry {
            index: INDEX,
            partition: format!("{}:{}", stored.merchant_id, mode(stored.livemode)),
            sort: stored.channel.clone(),
            value: to_vec(&listed)?,
        });
        self.ledger.submit(b).await?;
        Ok(listed)
    }

    fn view(&self, s: &StoredChannel) -> ChannelView {
        ChannelView {
            channel: s.channel.clone(),
            livemode: s.livemode,
            notify_url: s.notify_url.clone(),
            created: s.created,
            updated: s.updated,
            health: self.breaker(&s.channel).snapshot(),
        }
    }

    async fn load_stored(&self, rkey: &str) -> EngineResult<Option<StoredChannel>> {
        let Some(bytes) = self.ledger.get_record(RECORD_KIND, rkey).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| EngineError::Internal(format!("stored channel config {rkey}: {e}")))
    }

    /// A merchant's configured channels in one mode, by name.
    pub async fn list(
        &self,
        merchant: MerchantId,
        livemode: bool,
    ) -> EngineResult<Vec<ChannelView>> {
        let rows = self
            .ledger
            .scan_entries(
                INDEX,
                &format!("{merchant}:{}", mode(livemode)),
                &EntryRange::all(MAX_LISTED),
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (_, bytes) in rows {
            let s: StoredChannel = serde_json::from_slice(&bytes)
                .map_err(|e| EngineError::Internal(format!("channel index entry: {e}")))?;
            out.push(self.view(&s));
        }
        Ok(out)
    }

    /// The adapter built from the merchant's stored configuration of `channel`, if any.
    pub async fn configured_adapter(
        &self,
        merchant: MerchantId,
        livemode: bool,
        channel: &str,
    ) -> EngineResult<Option<Arc<dyn ChannelAdapter>>> {
        let Some(factory) = self.factory() else {
            return Ok(None);
        };
        if !factory.channels().contains(&channel) {
            return Ok(None);
        }
        let rkey = record_key(merchant, livemode, channel);
        // With a shared (cluster) ledger another node may replace the configuration: trust a
        // cached adapter only for a while. Alone, this node made every change itself.
        let ttl = Duration::from_millis(self.setup.config.adapter_cache_ttl_ms);
        let shared = self.ledger.shared();
        if let Some(c) = self.adapters.get(&rkey)
            && (!shared || c.loaded.elapsed() < ttl)
        {
            return Ok(Some(c.adapter.clone()));
        }
        let Some(stored) = self.load_stored(&rkey).await? else {
            return Ok(None);
        };
        let key = self.setup.master_key.as_ref().ok_or_else(|| {
            EngineError::Internal("stored channel credentials but no master key".into())
        })?;
        let sealed = stored
            .credentials
            .as_ref()
            .ok_or_else(|| EngineError::Internal(format!("{rkey}: no credentials stored")))?;
        let plain = key
            .open(sealed, rkey.as_bytes())
            .map_err(|e| EngineError::Internal(format!("{rkey}: {e}")))?;
        let creds: serde_json::Value = serde_json::from_slice(&plain)
            .map_err(|e| EngineError::Internal(format!("{rkey}: {e}")))?;
        let adapter = factory
            .build(channel, &creds, &stored.notify_url)
            .map_err(|e| EngineError::Internal(format!("{rkey}: cannot build adapter: {e}")))?;
        self.adapters.insert(
            rkey,
            CachedAdapter {
                adapter: adapter.clone(),
                loaded: Instant::now(),
            },
        );
        Ok(Some(adapter))
    }

    // ------------------------------------------------------------ PSP calls

    /// Opens a payment with the channel behind its breaker, retrying after each configured
    /// delay while the channel is unavailable and the breaker lets calls through.
    ///
    /// Everything happens within [`ChannelSetup::psp_budget`]: each attempt's timeout is
    /// `call_timeout_ms` cut to what is left of the budget, a retry is made only when its delay
    /// and a useful attempt still fit, and the breaker is looked at before each wait, so an
    /// outage ends in [`ChannelError::Unavailable`] (the caller's `503`) before the request
    /// times out.
    pub async fn create_payment(
        &self,
        channel: &str,
        adapter: &Arc<dyn ChannelAdapter>,
        req: &ChannelPaymentRequest,
    ) -> Result<ChannelPayment, ChannelError> {
        self.call_psp(channel, || adapter.create_payment(req)).await
    }

    /// Asks the channel to refund, behind the same breaker, retries and budget as
    /// [`ChannelHub::create_payment`] (the PSP de-duplicates on our refund id, so a retry of a
    /// refund that did reach it pays nothing twice).
    pub async fn refund(
        &self,
        channel: &str,
        adapter: &Arc<dyn ChannelAdapter>,
        req: &ChannelRefundRequest,
    ) -> Result<ChannelRefund, ChannelError> {
        self.call_psp(channel, || adapter.refund(req)).await
    }

    /// Asks the channel where a refund stands, behind the breaker and retries.
    pub async fn refund_status(
        &self,
        channel: &str,
        adapter: &Arc<dyn ChannelAdapter>,
        req: &ChannelRefundRequest,
    ) -> Result<ChannelRefund, ChannelError> {
        self.call_psp(channel, || adapter.refund_status(req)).await
    }

    /// One PSP operation behind `channel`'s breaker, retried while unavailable (see
    /// [`ChannelHub::create_payment`] for the budget rules).
    async fn call_psp<T, F, Fut>(&self, channel: &str, op: F) -> Result<T, ChannelError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, ChannelError>>,
    {
        let breaker = self.breaker(channel);
        let call_timeout = Duration::from_millis(self.setup.config.call_timeout_ms.max(1));
        let min_attempt = call_timeout.min(MIN_ATTEMPT);
        let budget = self.setup.psp_budget;
        // Time spent so far: attempts as measured, waits as asked for (a test sleeper returns
        // at once but stands for the whole delay).
        let mut spent = Duration::ZERO;
        let mut delays = self.retry_delays.iter();
        loop {
            let Some(permit) = breaker.try_acquire(self.clock.now_ms()) else {
                metrics::counter!("ipay_channel_calls_total", "channel" => channel.to_string(), "outcome" => "short_circuited").increment(1);
                return Err(ChannelError::Unavailable("circuit breaker open".into()));
            };
            let timeout = call_timeout
                .min(budget.saturating_sub(spent))
                .max(min_attempt);
            let started = tokio::time::Instant::now();
            let outcome = match tokio::time::timeout(timeout, op()).await {
                Ok(r) => r,
                Err(_) => Err(ChannelError::Unavailable(format!(
                    "no answer within {} ms",
                    timeout.as_millis()
                ))),
            };
            spent += started.elapsed();
            let label = match &outcome {
                Ok(_) => "ok",
                Err(ChannelError::Rejected(_)) => "rejected",
                Err(ChannelError::Unavailable(_)) => "unavailable",
            };
            metrics::counter!("ipay_channel_calls_total", "channel" => channel.to_string(), "outcome" => label).increment(1);
            let why = match outcome {
                Err(ChannelError::Unavailable(why)) => why,
                other => {
                    // A refusal is an answer: the channel is up.
                    breaker.on_success();
                    return other;
                }
            };
            breaker.on_failure(permit, self.clock.now_ms());
            tracing::warn!(channel, error = %why, "PSP call failed");
            let Some(delay) = delays.next().copied() else {
                return Err(ChannelError::Unavailable(why));
            };
            // Waiting for a breaker that is already open only delays the same answer.
            if !breaker.is_closed() {
                return Err(ChannelError::Unavailable(format!(
                    "{why}; circuit breaker open"
                )));
            }
            if spent + delay + min_attempt > budget {
                return Err(ChannelError::Unavailable(format!(
                    "{why}; no time left for another attempt within {} ms",
                    budget.as_millis()
                )));
            }
            self.setup.sleeper.sleep(delay).await;
            spent += delay;
        }
    }

    // ------------------------------------------------------------ callbacks

    fn limited(what: &str, wait: Duration) -> EngineError {
        EngineError::RateLimited {
            message: format!("too many callbacks for this {what}; retry later"),
            retry_after_secs: u32::try_from(wait.as_secs().max(1)).unwrap_or(u32::MAX),
        }
    }

    /// Counts a callback from `channel` against the per-provider limit.
    pub fn check_provider_rate(&self, channel: &str) -> EngineResult<()> {
        if self.provider_limiter.len() > 10_000 {
            self.provider_limiter.retain_recent();
        }
        self.provider_limiter
            .check_key(&channel.to_string())
            .map_err(|n| Self::limited("provider", n.wait_time_from(DefaultClock::default().now())))
    }

    /// Counts a callback for `merchant` against the per-merchant limit.
    pub fn check_merchant_rate(&self, merchant: MerchantId) -> EngineResult<()> {
        if self.merchant_limiter.len() > 100_000 {
            self.merchant_limiter.retain_recent();
        }
        self.merchant_limiter
            .check_key(&merchant)
            .map_err(|n| Self::limited("merchant", n.wait_time_from(DefaultClock::default().now())))
    }

    fn notification_key(channel: &str, id: &str) -> String {
        format!("{channel}:{id}")
    }

    /// Whether this PSP notification was applied before.
    pub async fn notification_seen(&self, channel: &str, id: &str) -> EngineResult<bool> {
        Ok(self
            .ledger
            .get_record(NOTIFICATION_KIND, &Self::notification_key(channel, id))
            .await?
            .is_some())
    }

    /// The write that marks a notification applied.
    pub fn notification_op(&self, channel: &str, id: &str, intent: &str, outcome: &str) -> WriteOp {
        let value = serde_json::json!({
            "intent": intent,
            "outcome": outcome,
            "at": self.clock.now(),
        });
        WriteOp::PutRecord {
            kind: NOTIFICATION_KIND,
            key: Self::notification_key(channel, id),
            value: value.to_string().into_bytes(),
        }
    }

    /// The stored configuration record of one channel, as bytes (tests check it holds no
    /// secret in clear).
    pub async fn raw_record(
        &self,
        merchant: MerchantId,
        livemode: bool,
        channel: &str,
    ) -> EngineResult<Option<Vec<u8>>> {
        Ok(self
            .ledger
            .get_record(RECORD_KIND, &record_key(merchant, livemode, channel))
            .await?)
    }
}

/// Lets the factory validate the credentials and build the adapter; live mode needs
/// credentials that allow it.
fn checked_adapter(
    factory: &dyn ChannelFactory,
    livemode: bool,
    input: &ChannelConfigInput,
) -> EngineResult<Arc<dyn ChannelAdapter>> {
    let bad_credentials =
        |why: String| EngineError::invalid("credentials_invalid", "credentials", why);
    factory
        .validate(&input.channel, &input.credentials)
        .map_err(bad_credentials)?;
    let adapter = factory
        .build(&input.channel, &input.credentials, &input.notify_url)
        .map_err(bad_credentials)?;
    if livemode && !adapter.allows_livemode() {
        return Err(bad_credentials(format!(
            "these {} credentials are for test mode; configure them with a test key (sk_test_…)",
            input.channel
        )));
    }
    Ok(adapter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::ids::PaymentIntentId;
    use crate::money::{Currency, Money};
    use crate::store::embedded::{EmbeddedLedger, EmbeddedOptions};
    use retry::RecordingSleeper;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A PSP that never answers, or answers 503 at once; counts its calls either way.
    struct Psp {
        hang: bool,
        calls: AtomicU32,
    }

    #[async_trait::async_trait]
    impl ChannelAdapter for Psp {
        fn name(&self) -> &'static str {
            "wechat"
        }

        fn supports_currency(&self, _currency: Currency) -> bool {
            true
        }

        fn allows_livemode(&self) -> bool {
            true
        }

        async fn create_payment(
            &self,
            _req: &ChannelPaymentRequest,
        ) -> Result<ChannelPayment, ChannelError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.hang {
                std::future::pending::<()>().await;
            }
            Err(ChannelError::Unavailable("HTTP 503 from the PSP".into()))
        }
    }

    struct Setup {
        hub: ChannelHub,
        sleeper: RecordingSleeper,
        adapter: Arc<dyn ChannelAdapter>,
        psp: Arc<Psp>,
        _dir: tempfile::TempDir,
    }

    fn setup(hang: bool, request_timeout_ms: u64, config: ChannelsConfig) -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = EmbeddedLedger::open(dir.path(), EmbeddedOptions::default()).expect("ledger");
        let clock = ManualClock::new(1_800_000_000_000);
        let sleeper = RecordingSleeper::with_clock(clock.clone());
        let setup = ChannelSetup {
            config,
            sleeper: Arc::new(sleeper.clone()),
            psp_budget: ChannelSetup::psp_budget(request_timeout_ms),
            ..Default::default()
        };
        let psp = Arc::new(Psp {
            hang,
            calls: AtomicU32::new(0),
        });
        Setup {
            hub: ChannelHub::new(ledger, Arc::new(clock), setup),
            sleeper,
            adapter: psp.clone(),
            psp,
            _dir: dir,
        }
    }

    fn request() -> ChannelPaymentRequest {
        ChannelPaymentRequest {
            intent_id: PaymentIntentId::new_at(1_800_000_000_000),
            amount: Money::new(699, Currency::parse("CNY").expect("CNY")).expect("money"),
            expires_at: Timestamp(1_800_000_900_000),
            livemode: false,
        }
    }

    // Paused tokio time: the call timeouts elapse at once, and the elapsed time is exact.
    #[tokio::test(start_paused = true)]
    async fn a_hanging_channel_gives_up_within_the_request_budget() {
        // The defaults of the outage report: 10 s calls, retries after 1 s and 5 s, 30 s
        // requests. Three full attempts and both delays (36 s) cannot fit.
        let s = setup(true, 30_000, ChannelsConfig::default());
        let started = tokio::time::Instant::now();
        let r = s.hub.create_payment("wechat", &s.adapter, &request()).await;
        let took = started.elapsed() + s.sleeper.delays().iter().sum::<Duration>();
        assert!(
            matches!(r, Err(ChannelError::Unavailable(_))),
            "{:?}",
            r.map(|p| p.qr_code)
        );
        assert!(
            took <= ChannelSetup::psp_budget(30_000),
            "gave up after {took:?}"
        );
        assert_eq!(s.psp.calls.load(Ordering::SeqCst), 2);
        assert_eq!(s.sleeper.delays(), vec![Duration::from_secs(1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn each_attempt_is_cut_to_what_is_left_of_the_budget() {
        // A 5 s request: 4 s of budget, so the first (10 s) attempt is cut to 4 s and no retry
        // fits after it.
        let s = setup(true, 5_000, ChannelsConfig::default());
        let started = tokio::time::Instant::now();
        let r = s.hub.create_payment("wechat", &s.adapter, &request()).await;
        assert!(r.is_err());
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(4) && took < Duration::from_millis(4_100),
            "{took:?}"
        );
        assert_eq!(s.psp.calls.load(Ordering::SeqCst), 1);
        assert!(s.sleeper.delays().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_breaker_opening_between_attempts_ends_without_the_next_delay() {
        let config = ChannelsConfig {
            breaker_failure_threshold: 2,
            ..Default::default()
        };
        let s = setup(false, 30_000, config);
        let r = s.hub.create_payment("wechat", &s.adapter, &request()).await;
        assert!(matches!(r, Err(ChannelError::Unavailable(_))));
        // The second failure opened the breaker: the 5 s delay is not slept.
        assert_eq!(s.psp.calls.load(Ordering::SeqCst), 2);
        assert_eq!(s.sleeper.delays(), vec![Duration::from_secs(1)]);
        assert!(!s.hub.healthy("wechat"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_channel_still_gets_every_retry_that_fits() {
        let s = setup(false, 30_000, ChannelsConfig::default());
        let r = s.hub.create_payment("wechat", &s.adapter, &request()).await;
        assert!(r.is_err());
        assert_eq!(s.psp.calls.load(Ordering::SeqCst), 3);
        assert_eq!(
            s.sleeper.delays(),
            vec![Duration::from_secs(1), Duration::from_secs(5)]
        );
    }
}
