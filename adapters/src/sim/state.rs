//! The simulator's memory: orders by intent id, active faults, Stripe webhook endpoints, the
//! log of delivered callbacks, and callback delivery itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::{Fault, FaultKind, Outcome, PayOverrides, SimError, callbacks};

/// Largest number of orders kept; the oldest are forgotten beyond it.
const MAX_ORDERS: usize = 100_000;
/// Largest number of delivered callbacks kept in the log.
const MAX_LOG: usize = 10_000;
/// Longest response body kept from a callback receiver.
const MAX_RESPONSE_KEPT: usize = 4096;

/// Where an order stands at the simulated PSP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Created, waiting for the payer.
    Pending,
    /// Paid.
    Paid,
    /// Failed.
    Failed,
    /// Expired unpaid.
    Expired,
}

/// An order as the simulated PSP sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderInfo {
    /// Channel name.
    pub channel: String,
    /// Our intent id (the merchant order number).
    pub intent_id: String,
    /// Amount in minor units.
    pub amount: i64,
    /// Currency code (upper case).
    pub currency: String,
    /// Where callbacks go, as given at creation.
    pub notify_url: Option<String>,
    /// The PSP's own id (trade number, transaction id, PaymentIntent id, …).
    pub psp_reference: String,
    /// What the PSP answered for the payer to scan.
    pub qr_code: String,
    /// Current status.
    pub status: OrderStatus,
    /// Creation time, Unix seconds.
    pub created_at: i64,
}

/// A callback ready to send: URL, headers and body exactly as they go on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedCallback {
    /// Channel name.
    pub channel: String,
    /// The intent it is about.
    pub intent_id: String,
    /// The PSP's notification id.
    pub notification_id: String,
    /// Target URL.
    pub url: String,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
}

impl PreparedCallback {
    /// The headers as an `http::HeaderMap` (what a receiver would see).
    pub fn header_map(&self) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (k, v) in &self.headers {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::try_from(k.as_str()),
                http::HeaderValue::try_from(v.as_str()),
            ) {
                map.append(k, v);
            }
        }
        map
    }
}

/// A callback that was sent, with what the receiver answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveredCallback {
    /// What was sent.
    pub callback: PreparedCallback,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// The receiver's answer (first 4 KiB).
    pub response_body: String,
    /// Transport error, if it did not answer.
    pub error: Option<String>,
}

impl DeliveredCallback {
    /// Whether the receiver answered 2xx.
    pub fn acknowledged(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

struct ActiveFault {
    fault: Fault,
    remaining: Option<u32>,
    until: Option<Instant>,
}

#[derive(Default)]
struct Orders {
    by_intent: HashMap<String, (OrderInfo, Option<PreparedCallback>)>,
    order: std::collections::VecDeque<String>,
}

pub(crate) struct SimState {
    client: reqwest::Client,
    orders: Mutex<Orders>,
    faults: Mutex<Vec<ActiveFault>>,
    webhook_urls: Mutex<HashMap<String, String>>,
    log: Mutex<Vec<DeliveredCallback>>,
    log_changed: tokio::sync::Notify,
    hang_release: tokio::sync::watch::Sender<u64>,
    requests: Mutex<HashMap<String, u64>>,
    seq: AtomicU64,
    /// Refunds and each channel's refund mode.
    pub(crate) refunds: super::refunds::RefundBook,
    /// Settlement differences to play (`settlement.rs`).
    pub(crate) settlement_skews: super::settlement::Skews,
}

pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl SimState {
    pub(crate) fn new(callback_timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(callback_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        SimState {
            client,
            orders: Mutex::new(Orders::default()),
            faults: Mutex::new(Vec::new()),
            webhook_urls: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
            log_changed: tokio::sync::Notify::new(),
            hang_release: tokio::sync::watch::channel(0).0,
            requests: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(1),
            refunds: Default::default(),
            settlement_skews: Default::default(),
        }
    }

    /// A number unique within this simulator (ids, nonces).
    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    // --- faults --------------------------------------------------------------------------

    pub(crate) fn inject(&self, fault: Fault) {
        let until = fault
            .duration_ms
            .map(|ms| Instant::now() + Duration::from_millis(ms));
        self.faults.lock().push(ActiveFault {
            remaining: fault.count,
            until,
            fault,
        });
    }

    pub(crate) fn clear_faults(&self) {
        self.faults.lock().clear();
        self.release_hangs();
    }

    pub(crate) fn release_hangs(&self) {
        self.hang_release.send_modify(|g| *g += 1);
    }

    /// Counts a request to `channel` and returns the fault that applies to it, if any.
    pub(crate) fn take_fault(&self, channel: &str) -> Option<FaultKind> {
        *self.requests.lock().entry(channel.to_owned()).or_default() += 1;
        let now = Instant::now();
        let mut faults = self.faults.lock();
        faults.retain(|f| f.remaining != Some(0) && f.until.is_none_or(|u| u > now));
        let hit = faults
            .iter_mut()
            .find(|f| f.fault.channel.as_deref().is_none_or(|c| c == channel))?;
        if let Some(n) = hit.remaining.as_mut() {
            *n -= 1;
        }
        Some(hit.fault.kind)
    }

    /// Resolves when hanging requests are released (clear or stop).
    pub(crate) async fn hang(&self) {
        let mut rx = self.hang_release.subscribe();
        let _ = rx.changed().await;
    }

    pub(crate) fn request_count(&self, channel: &str) -> u64 {
        self.requests.lock().get(channel).copied().unwrap_or(0)
    }

    // --- orders --------------------------------------------------------------------------

    /// Records a new order, or returns the existing one for this intent (PSPs answer a repeated
    /// creation with the same order).
    pub(crate) fn upsert_order(&self, info: OrderInfo) -> OrderInfo {
        let mut orders = self.orders.lock();
        if let Some((existing, _)) = orders.by_intent.get(&info.intent_id) {
            return existing.clone();
        }
        if orders.order.len() >= MAX_ORDERS
            && let Some(old) = orders.order.pop_front()
        {
            orders.by_intent.remove(&old);
        }
        orders.order.push_back(info.intent_id.clone());
        orders
            .by_intent
            .insert(info.intent_id.clone(), (info.clone(), None));
        info
    }

    pub(crate) fn order(&self, intent_id: &str) -> Option<OrderInfo> {
        self.orders
            .lock()
            .by_intent
            .get(intent_id)
            .map(|(o, _)| o.clone())
    }

    pub(crate) fn orders(&self) -> Vec<OrderInfo> {
        let orders = self.orders.lock();
        orders
            .order
            .iter()
            .filter_map(|id| orders.by_intent.get(id).map(|(o, _)| o.clone()))
            .collect()
    }

    /// Where `channel`'s account-level webhooks go, if set.
    pub(crate) fn webhook_url(&self, channel: &str) -> Option<String> {
        self.webhook_urls.lock().get(channel).cloned()
    }

    pub(crate) fn set_webhook_url(&self, channel: &str, url: &str) {
        self.webhook_urls
            .lock()
            .insert(channel.to_owned(), url.to_owned());
    }

    pub(crate) fn promptpay_scan(
        &self,
        intent_id: &str,
        qr_code: &str,
        notify_url: &str,
    ) -> Result<OrderInfo, SimError> {
        ipay_engine::ids::PaymentIntentId::parse(intent_id)
            .map_err(|e| SimError::Invalid(e.to_string()))?;
        let parsed = crate::promptpay::parse(qr_code)
            .map_err(|e| SimError::Invalid(format!("not a PromptPay QR: {e}")))?;
        let amount = parsed
            .amount_satang
            .ok_or_else(|| SimError::Invalid("the PromptPay QR carries no amount".into()))?;
        let seq = self.next_seq();
        Ok(self.upsert_order(OrderInfo {
            channel: "promptpay".into(),
            intent_id: intent_id.to_owned(),
            amount: amount as i64,
            currency: "THB".into(),
            notify_url: Some(notify_url.to_owned()),
            psp_reference: format!("BNK{}{seq:08}", now_secs()),
            qr_code: qr_code.to_owned(),
            status: OrderStatus::Pending,
            created_at: now_secs(),
        }))
    }

    /// Builds a callback for the order's current data.
    pub(crate) fn prepare(
        &self,
        intent_id: &str,
        outcome: Outcome,
        overrides: &PayOverrides,
    ) -> Result<PreparedCallback, SimError> {
        let order = self
            .order(intent_id)
            .ok_or_else(|| SimError::UnknownOrder(intent_id.to_owned()))?;
        self.build(&order, outcome, overrides, now_secs())
    }

    fn build(
        &self,
        order: &OrderInfo,
        outcome: Outcome,
        overrides: &PayOverrides,
        at: i64,
    ) -> Result<PreparedCallback, SimError> {
        let webhook = self.webhook_urls.lock().get(&order.channel).cloned();
        let url = match (&order.channel[..], webhook, &order.notify_url) {
            (_, Some(url), _) => url,
            ("stripe", None, _) => {
                return Err(SimError::NoCallbackUrl(
                    order.intent_id.clone(),
                    "Stripe sends events to the account's webhook endpoint: call set_webhook_url(\"stripe\", url) or POST /_sim/webhook-endpoints",
                ));
            }
            (_, None, Some(url)) => url.clone(),
            (_, None, None) => {
                return Err(SimError::NoCallbackUrl(
                    order.intent_id.clone(),
                    "the order was created without one",
                ));
            }
        };
        callbacks::build(order, outcome, overrides, at, self.next_seq(), &url)
    }

    /// Moves the order to `to` if it is pending.
    fn transition(&self, intent_id: &str, to: OrderStatus) -> Result<OrderInfo, SimError> {
        let mut orders = self.orders.lock();
        let (order, _) = orders
            .by_intent
            .get_mut(intent_id)
            .ok_or_else(|| SimError::UnknownOrder(intent_id.to_owned()))?;
        if order.status != OrderStatus::Pending {
            return Err(SimError::InvalidState {
                intent: intent_id.to_owned(),
                status: order.status,
                action: match to {
                    OrderStatus::Paid => "pay",
                    OrderStatus::Failed => "fail",
                    _ => "expire",
                },
            });
        }
        order.status = to;
        Ok(order.clone())
    }

    fn remember(&self, intent_id: &str, callback: &PreparedCallback) {
        if let Some((_, last)) = self.orders.lock().by_intent.get_mut(intent_id) {
            *last = Some(callback.clone());
        }
    }

    pub(crate) async fn settle(
        self: &Arc<Self>,
        intent_id: &str,
        outcome: Outcome,
        overrides: &PayOverrides,
    ) -> Result<DeliveredCallback, SimError> {
        let to = match outcome {
            Outcome::Paid => OrderStatus::Paid,
            Outcome::Failed => OrderStatus::Failed,
            Outcome::Expired => OrderStatus::Expired,
        };
        // Build first, so a missing callback URL leaves the order untouched.
        let order = self
            .order(intent_id)
            .ok_or_else(|| SimError::UnknownOrder(intent_id.to_owned()))?;
        let callback = self.build(&order, outcome, overrides, now_secs())?;
        self.transition(intent_id, to)?;
        self.remember(intent_id, &callback);
        Ok(self.deliver(callback).await)
    }

    pub(crate) fn settle_after(
        self: &Arc<Self>,
        intent_id: &str,
        outcome: Outcome,
        delay: Duration,
    ) -> Result<(), SimError> {
        let order = self
            .order(intent_id)
            .ok_or_else(|| SimError::UnknownOrder(intent_id.to_owned()))?;
        if order.status != OrderStatus::Pending {
            return Err(SimError::InvalidState {
                intent: intent_id.to_owned(),
                status: order.status,
                action: "pay",
            });
        }
        let state = self.clone();
        let intent = intent_id.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Err(e) = state
                .settle(&intent, outcome, &PayOverrides::default())
                .await
            {
                tracing::warn!(intent = %intent, error = %e, "delayed settlement failed");
            }
        });
        Ok(())
    }

    pub(crate) async fn duplicate(&self, intent_id: &str) -> Result<DeliveredCallback, SimError> {
        let last = {
            let orders = self.orders.lock();
            let (_, last) = orders
                .by_intent
                .get(intent_id)
                .ok_or_else(|| SimError::UnknownOrder(intent_id.to_owned()))?;
            last.clone()
        };
        let last = last.ok_or_else(|| SimError::NothingToRepeat(intent_id.to_owned()))?;
        Ok(self.deliver(last).await)
    }

    pub(crate) async fn out_of_order(
        self: &Arc<Self>,
        intent_id: &str,
    ) -> Result<Vec<DeliveredCallback>, SimError> {
        let order = self
            .order(intent_id)
            .ok_or_else(|| SimError::UnknownOrder(intent_id.to_owned()))?;
        let now = now_secs();
        let none = PayOverrides::default();
        // The failure happened first (a declined attempt), the success after it; they arrive
        // the other way round.
        let earlier = self.build(&order, Outcome::Failed, &none, now - 30)?;
        let paid = self.build(&order, Outcome::Paid, &none, now)?;
        self.transition(intent_id, OrderStatus::Paid)?;
        self.remember(intent_id, &paid);
        let first = self.deliver(paid).await;
        let second = self.deliver(earlier).await;
        Ok(vec![first, second])
    }

    // --- delivery ------------------------------------------------------------------------

    pub(crate) async fn deliver(&self, callback: PreparedCallback) -> DeliveredCallback {
        let mut request = self.client.post(&callback.url).body(callback.body.clone());
        for (k, v) in &callback.headers {
            request = request.header(k, v);
        }
        let delivered = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let mut body = response.text().await.unwrap_or_default();
                if body.len() > MAX_RESPONSE_KEPT {
                    let mut cut = MAX_RESPONSE_KEPT;
                    while !body.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    body.truncate(cut);
                }
                DeliveredCallback {
                    callback,
                    status: Some(status),
                    response_body: body,
                    error: None,
                }
            }
            Err(e) => DeliveredCallback {
                callback,
                status: None,
                response_body: String::new(),
                error: Some(e.without_url().to_string()),
            },
        };
        {
            let mut log = self.log.lock();
            if log.len() >= MAX_LOG {
                log.remove(0);
            }
            log.push(delivered.clone());
        }
        self.log_changed.notify_waiters();
        delivered
    }

    pub(crate) fn callbacks(&self) -> Vec<DeliveredCallback> {
        self.log.lock().clone()
    }

    pub(crate) async fn wait_for_callbacks(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.log_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.log.lock().len() >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.log.lock().len() >= n;
            }
        }
    }
}
