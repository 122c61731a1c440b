//! The PSP simulator: one HTTP server on loopback that speaks each channel's API the way the
//! real PSP does (Alipay gateway, WeChat Pay v3 Native, Stripe PaymentIntents, MultiSafepay
//! orders, and a PromptPay acquiring bank), checks the merchant's request signatures, answers
//! signed responses, and sends real signed (and for WeChat Pay encrypted) callbacks to the
//! `notify_url` given at creation.
//!
//! It runs in-process ([`Simulator::start`]) for tests, or as the `psp-sim` binary. Tests drive
//! it through [`SimHandle`] methods; other processes through the control API under `/_sim/`
//! (see `docs/psp-simulator.md`). It owns no engine logic: it is the world outside.
//!
//! Paths: each channel lives under its own prefix, so [`SimHandle::channels_config`] gives the
//! engine `{base}/alipay`, `{base}/wechat`, `{base}/stripe`, `{base}/multisafepay`.

mod callbacks;
mod control;
pub mod keys;
mod psp;
pub mod rates;
mod refunds;
mod settlement;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ipay_engine::channel::ChannelsConfig;
use serde::{Deserialize, Serialize};

pub use refunds::{SimRefund, SimRefundMode, SimRefundStatus};
pub use settlement::{SettlementLine, SettlementReport, Skew};
pub use state::{DeliveredCallback, OrderInfo, OrderStatus, PreparedCallback};

/// Channels the simulator serves.
pub const CHANNELS: &[&str] = crate::factory::CHANNELS;

/// How to start the simulator.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Where to listen; port 0 picks a free one.
    pub bind: SocketAddr,
    /// Time allowed to deliver one callback.
    pub callback_timeout: Duration,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            callback_timeout: Duration::from_secs(10),
        }
    }
}

/// What a fault does to the channel API requests it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FaultKind {
    /// Answer 503 with the channel's error shape.
    Unavailable,
    /// Never answer (until the simulator stops).
    Hang,
    /// Answer normally after this delay.
    Slow {
        /// The delay, in milliseconds.
        delay_ms: u64,
    },
    /// Answer 200 with a body that is not what the channel sends.
    Malformed,
}

/// A fault on a channel's API: applies to the next `count` requests, for `duration`, or until
/// cleared when neither is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// Channel name, or `None` for all channels.
    #[serde(default)]
    pub channel: Option<String>,
    /// What happens.
    #[serde(flatten)]
    pub kind: FaultKind,
    /// How many requests it applies to.
    #[serde(default)]
    pub count: Option<u32>,
    /// For how long, in milliseconds from injection.
    #[serde(default)]
    pub duration_ms: Option<u64>,
}

impl Fault {
    /// A fault on `channel` until cleared.
    pub fn new(channel: &str, kind: FaultKind) -> Self {
        Fault {
            channel: Some(channel.to_owned()),
            kind,
            count: None,
            duration_ms: None,
        }
    }

    /// Limits it to the next `n` requests.
    pub fn times(mut self, n: u32) -> Self {
        self.count = Some(n);
        self
    }

    /// Limits it to a window starting now.
    pub fn for_duration(mut self, d: Duration) -> Self {
        self.duration_ms = Some(d.as_millis().try_into().unwrap_or(u64::MAX));
        self
    }
}

/// What a simulated payer or PSP does to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The payer paid.
    Paid,
    /// The payment failed.
    Failed,
    /// The order expired unpaid.
    Expired,
}

/// Overrides for a payment notification (to test amount or currency mismatches).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayOverrides {
    /// Amount reported, in minor units, instead of the order's.
    #[serde(default)]
    pub amount: Option<i64>,
    /// Currency reported instead of the order's.
    #[serde(default)]
    pub currency: Option<String>,
}

/// Why a simulator operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// No order was created for this intent.
    #[error("no order for intent `{0}`")]
    UnknownOrder(String),
    /// The order is not in a state that allows this.
    #[error("order `{intent}` is {status:?}: {action} is not possible")]
    InvalidState {
        /// The intent.
        intent: String,
        /// Its status.
        status: OrderStatus,
        /// What was asked.
        action: &'static str,
    },
    /// Nothing to send to: no notify URL (for Stripe, set one with `set_webhook_url`).
    #[error("no callback URL for `{0}`: {1}")]
    NoCallbackUrl(String, &'static str),
    /// Nothing was delivered for this order yet.
    #[error("no callback sent yet for `{0}`")]
    NothingToRepeat(String),
    /// Bad input (unknown channel, unparsable QR payload, …).
    #[error("{0}")]
    Invalid(String),
    /// The simulator failed to build a callback (signing or encryption).
    #[error("cannot build the callback: {0}")]
    Build(String),
}

/// Starts simulators.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Binds, starts serving on the current tokio runtime and returns a handle.
    pub async fn start(opts: SimOptions) -> std::io::Result<SimHandle> {
        let listener = tokio::net::TcpListener::bind(opts.bind).await?;
        let addr = listener.local_addr()?;
        let base_url = format!("http://{addr}");
        // Parse the embedded keys before the first request needs them.
        let _ = keys::keys();
        let state = Arc::new(state::SimState::new(opts.callback_timeout));
        let app = psp::router(state.clone())
            .merge(control::router(state.clone()))
            .merge(rates::router());
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let hang_state = state.clone();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop_rx.wait_for(|stopped| *stopped).await;
                hang_state.release_hangs();
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::warn!(error = %e, "psp simulator stopped with an error");
            }
        });
        Ok(SimHandle {
            addr,
            base_url,
            state,
            stop_tx,
            task: parking_lot::Mutex::new(Some(task)),
        })
    }
}

/// A running simulator. Dropping it stops the server (without waiting); [`SimHandle::stop`]
/// waits for it.
pub struct SimHandle {
    addr: SocketAddr,
    base_url: String,
    state: Arc<state::SimState>,
    stop_tx: tokio::sync::watch::Sender<bool>,
    task: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl SimHandle {
    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The daily exchange rates document (`settlement.rates_source`).
    pub fn rates_url(&self) -> String {
        format!("{}/rates", self.base_url)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL the engine should use for `channel` (`{base}/{channel}`).
    pub fn endpoint(&self, channel: &str) -> String {
        format!("{}/{channel}", self.base_url)
    }

    /// `[channels]` pointing every channel at this simulator.
    pub fn channels_config(&self) -> ChannelsConfig {
        ChannelsConfig {
            endpoints: CHANNELS
                .iter()
                .filter(|c| **c != "promptpay")
                .map(|c| (c.to_string(), self.endpoint(c)))
                .collect(),
            ..Default::default()
        }
    }

    /// The simulated merchant's credential JSON for `channel` (what `POST /v1/channels`
    /// takes). Panics on an unknown channel name (a test bug).
    pub fn credentials(&self, channel: &str) -> serde_json::Value {
        keys::credentials(channel)
            .unwrap_or_else(|| panic!("the simulator has no channel `{channel}`"))
    }

    /// Where Stripe events go (Stripe sends webhooks to account-level endpoints, not to a URL
    /// given per payment). Other channels use the URL given when the order was created.
    pub fn set_webhook_url(&self, channel: &str, url: &str) {
        self.state.set_webhook_url(channel, url);
    }

    /// Registers a PromptPay payment: the payer scanned `qr_code` (which must be a valid
    /// PromptPay payload with an amount) for `intent_id`, and the bank will notify
    /// `notify_url`.
    pub fn promptpay_scan(
        &self,
        intent_id: &str,
        qr_code: &str,
        notify_url: &str,
    ) -> Result<OrderInfo, SimError> {
        self.state.promptpay_scan(intent_id, qr_code, notify_url)
    }

    /// The order created for an intent.
    pub fn order(&self, intent_id: &str) -> Option<OrderInfo> {
        self.state.order(intent_id)
    }

    /// All orders, oldest first.
    pub fn orders(&self) -> Vec<OrderInfo> {
        self.state.orders()
    }

    /// Channel API requests received per channel (including refused and faulted ones).
    pub fn request_count(&self, channel: &str) -> u64 {
        self.state.request_count(channel)
    }

    /// The payer pays now; returns the delivered callback.
    pub async fn pay(&self, intent_id: &str) -> Result<DeliveredCallback, SimError> {
        self.settle(intent_id, Outcome::Paid, PayOverrides::default())
            .await
    }

    /// The payer pays, but the callback reports `overrides` (amount or currency mismatch).
    pub async fn pay_with(
        &self,
        intent_id: &str,
        overrides: PayOverrides,
    ) -> Result<DeliveredCallback, SimError> {
        self.settle(intent_id, Outcome::Paid, overrides).await
    }

    /// The payer pays after `delay`; the callback is sent in the background (see
    /// [`SimHandle::callbacks`]).
    pub fn pay_after(&self, intent_id: &str, delay: Duration) -> Result<(), SimError> {
        self.state.settle_after(intent_id, Outcome::Paid, delay)
    }

    /// The payment fails.
    pub async fn fail(&self, intent_id: &str) -> Result<DeliveredCallback, SimError> {
        self.settle(intent_id, Outcome::Failed, PayOverrides::default())
            .await
    }

    /// The order expires unpaid.
    pub async fn expire(&self, intent_id: &str) -> Result<DeliveredCallback, SimError> {
        self.settle(intent_id, Outcome::Expired, PayOverrides::default())
            .await
    }

    /// Moves an order to `outcome` and delivers the matching callback.
    pub async fn settle(
        &self,
        intent_id: &str,
        outcome: Outcome,
        overrides: PayOverrides,
    ) -> Result<DeliveredCallback, SimError> {
        state::SimState::settle(&self.state, intent_id, outcome, &overrides).await
    }

    /// Sends the last callback of an order again, byte for byte (same notification id).
    pub async fn duplicate(&self, intent_id: &str) -> Result<DeliveredCallback, SimError> {
        self.state.duplicate(intent_id).await
    }

    /// Out-of-order delivery: the order is paid, and the success callback is delivered first,
    /// then a failure notification dated before it. Returns both deliveries, in sending order.
    pub async fn out_of_order(&self, intent_id: &str) -> Result<Vec<DeliveredCallback>, SimError> {
        state::SimState::out_of_order(&self.state, intent_id).await
    }

    /// Builds the callback an outcome would send, without sending it or changing the order
    /// (tests tamper with it, or deliver it themselves).
    pub fn prepare(
        &self,
        intent_id: &str,
        outcome: Outcome,
        overrides: &PayOverrides,
    ) -> Result<PreparedCallback, SimError> {
        self.state.prepare(intent_id, outcome, overrides)
    }

    /// Delivers a prepared (possibly modified) callback.
    pub async fn deliver(&self, callback: PreparedCallback) -> DeliveredCallback {
        self.state.deliver(callback).await
    }

    /// Every callback delivered so far, in order.
    pub fn callbacks(&self) -> Vec<DeliveredCallback> {
        self.state.callbacks()
    }

    /// Waits until at least `n` callbacks were delivered (for [`SimHandle::pay_after`]), at
    /// most `timeout`; returns whether they were.
    pub async fn wait_for_callbacks(&self, n: usize, timeout: Duration) -> bool {
        self.state.wait_for_callbacks(n, timeout).await
    }

    /// How `channel` answers refund requests from now on (see [`SimRefundMode`]).
    pub fn set_refund_mode(&self, channel: &str, mode: SimRefundMode) {
        self.state.refunds.set_mode(channel, mode);
    }

    /// Every refund the simulated PSPs booked, oldest first.
    pub fn refunds(&self) -> Vec<SimRefund> {
        self.state.refunds.all()
    }

    /// Ends a pending refund (named by the merchant's refund id) and sends the channel's refund
    /// notification where it has one (WeChat Pay, Stripe): the "late callback". `None` for
    /// channels that are asked instead (Alipay, MultiSafepay).
    pub async fn complete_refund(
        &self,
        merchant_refund_id: &str,
        succeed: bool,
    ) -> Result<Option<DeliveredCallback>, SimError> {
        refunds::complete(&self.state, merchant_refund_id, succeed).await
    }

    /// A refund made in the PSP's own dashboard, notified as the PSP does (Stripe
    /// `charge.refunded`, MultiSafepay `partial_refunded`/`refunded`, Alipay `refund_fee`).
    pub async fn dashboard_refund(
        &self,
        intent_id: &str,
        amount: i64,
    ) -> Result<DeliveredCallback, SimError> {
        refunds::dashboard(&self.state, intent_id, amount).await
    }

    /// Adds a fault to the channel APIs.
    pub fn inject(&self, fault: Fault) {
        self.state.inject(fault);
    }

    /// Removes all faults (and releases hanging requests).
    pub fn clear_faults(&self) {
        self.state.clear_faults();
    }

    /// Stops the server and waits for it; hanging requests are released.
    pub async fn stop(&self) {
        let _ = self.stop_tx.send(true);
        let task = self.task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let _ = self.stop_tx.send(true);
    }
}
