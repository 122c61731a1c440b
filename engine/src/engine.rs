//! The engine facade: every business operation the gateway (or the CLI) can ask for. It knows
//! nothing about HTTP; callers parse, call one method here, and map the result.
//!
//! [`Engine`] only wires the concerns together and hands each call to the module that owns
//! it: `auth` (who is calling), `keys`, `merchants`, `services`, `intents`, `refunds`,
//! `callbacks` and `events`, with `idempotency`, `routing` (which adapter serves a channel)
//! and `paging` underneath. Their public types are re-exported here. An intent's state itself
//! changes only in its payment session ([`crate::session`]).

use crate::auth::Authenticator;
use crate::callbacks::Callbacks;
use crate::channel::{CallbackAck, ChannelAdapter, InboundCallback};
use crate::channels::{ChannelConfigInput, ChannelHub, ChannelSetup, ChannelView};
use crate::clock::Clock;
use crate::error::EngineResult;
use crate::events::Events;
use crate::idempotency::Idempotency;
use crate::intents::Intents;
use crate::keys::ApiKeys;
use crate::merchants::MerchantLocks;
use crate::model::merchant::ApiKeyInput;
use crate::model::{
    ApiKey, Event, IntentStatus, PaymentIntent, Refund, Service, ServiceAction, ServiceInput,
};
use crate::reconciliation::{ExportQuery, Reconciliation, Report, ReportStream};
use crate::refunds::{Refunds, RefundsDeps};
use crate::routing::ChannelRouter;
use crate::services::Services;
use crate::session::{SessionContext, SessionRegistry};
use crate::settlement::{
    Payout, Settlement, SettlementConfig, SettlementPrefs, SettlementPrefsInput,
};
use crate::store::{HotState, Ledger, Page, PageRequest};
use crate::subscriptions::{CreateSubscriptionRequest, Subscription, Subscriptions};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub use crate::auth::AuthContext;
pub use crate::config::{EngineConfig, Limits};
pub use crate::idempotency::IdempotentOutcome;
pub use crate::intents::{AmountInput, CreateIntentRequest, IntentListParams};
pub use crate::keys::{ApiKeyUpdate, ApiKeyWithSecret};
pub use crate::merchants::{MerchantCredentials, create_merchant};
pub use crate::refunds::{ConfirmRefundRequest, CreateRefundRequest};

/// The engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// The stores every concern shares, and the concerns.
struct Inner {
    ledger: Arc<dyn Ledger>,
    hot: Arc<dyn HotState>,
    clock: Arc<dyn Clock>,
    sessions: SessionRegistry,
    config: EngineConfig,
    auth: Arc<Authenticator>,
    keys: ApiKeys,
    services: Arc<Services>,
    routing: Arc<ChannelRouter>,
    intents: Arc<Intents>,
    refunds: Refunds,
    callbacks: Callbacks,
    events: Events,
    subscriptions: Arc<Subscriptions>,
    settlement: Arc<Settlement>,
    reconciliation: Reconciliation,
}

impl Engine {
    /// Starts the engine on the given stores: session shards, their timers, maintenance tasks.
    pub async fn start(
        ledger: Arc<dyn Ledger>,
        hot: Arc<dyn HotState>,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
    ) -> EngineResult<Engine> {
        let ctx = SessionContext::new(ledger.clone(), clock.clone(), config.sessions.clone());
        let sessions = SessionRegistry::start(ctx).await?;
        let counts = ledger.count_intents_by_status().await?;
        for s in IntentStatus::ALL {
            metrics::gauge!("ipay_intents", "status" => s.as_str())
                .set(counts[s.to_u8() as usize] as f64);
        }
        let inner = Arc::new(Inner::wire(ledger, hot, clock, sessions, config));
        spawn_refund_poller(Arc::downgrade(&inner));
        crate::subscriptions::spawn_timer(&inner.subscriptions);
        Ok(Engine { inner })
    }

    /// Registers a built-in channel adapter that every merchant may use without configuring
    /// it (replacing one of the same name).
    pub fn with_channel(self, adapter: Arc<dyn ChannelAdapter>) -> Self {
        self.inner.routing.add_builtin(adapter);
        self
    }

    /// Installs the channel subsystem: adapter factory, `[channels]`, master key, retry
    /// sleeper. Call it once, right after [`Engine::start`] and before serving requests.
    pub fn set_channels(&self, setup: ChannelSetup) -> EngineResult<()> {
        self.inner.routing.set_hub(setup)
    }

    /// [`Engine::set_channels`] as a builder step.
    pub fn with_channels(self, setup: ChannelSetup) -> EngineResult<Self> {
        self.set_channels(setup)?;
        Ok(self)
    }

    /// The channel subsystem (breakers, stored configurations).
    pub fn channels(&self) -> &Arc<ChannelHub> {
        self.inner.routing.hub()
    }

    /// Stops scheduled settlement runs and the session layer.
    pub async fn shutdown(&self) {
        self.inner.settlement.stop();
        self.inner.sessions.stop().await;
    }

    /// Applies `[settlement]` (rates, fees, T+N, run interval) and starts scheduled runs.
    pub async fn configure_settlement(&self, cfg: SettlementConfig) -> EngineResult<()> {
        self.inner.settlement.configure(cfg).await
    }

    /// Settlement: runs, preferences, payouts.
    pub fn settlement(&self) -> &Arc<Settlement> {
        &self.inner.settlement
    }

    /// The session registry (timers, tests).
    pub fn sessions(&self) -> &SessionRegistry {
        &self.inner.sessions
    }

    /// The engine's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// The ledger (health checks).
    pub fn ledger(&self) -> &Arc<dyn Ledger> {
        &self.inner.ledger
    }

    /// The shared fast state (reservations, counters, pub/sub) this engine uses.
    pub fn hot(&self) -> &Arc<dyn HotState> {
        &self.inner.hot
    }

    /// Settings in force.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    // ---------------------------------------------------------------- authentication

    /// Resolves a bearer secret to its key, checking revocation, expiry and IP whitelist.
    pub async fn authenticate(
        &self,
        secret: &str,
        ip: Option<IpAddr>,
    ) -> EngineResult<AuthContext> {
        self.inner.auth.authenticate(secret, ip).await
    }

    // ---------------------------------------------------------------- API keys

    /// Creates a key in the caller's mode. It may not carry permissions the caller lacks.
    pub async fn create_api_key(
        &self,
        ctx: &AuthContext,
        input: ApiKeyInput,
    ) -> EngineResult<ApiKeyWithSecret> {
        self.inner.keys.create(ctx, input).await
    }

    /// The caller's keys in the caller's mode, newest first.
    pub async fn list_api_keys(
        &self,
        ctx: &AuthContext,
        limit: Option<usize>,
        offset: Option<usize>,
    ) -> EngineResult<(Page<ApiKey>, PageRequest)> {
        self.inner.keys.list(ctx, limit, offset).await
    }

    /// Revokes a key at once. Revoking a revoked key returns it unchanged.
    pub async fn revoke_api_key(&self, ctx: &AuthContext, id: &str) -> EngineResult<ApiKey> {
        self.inner.keys.revoke(ctx, id).await
    }

    /// Replaces the IP whitelist of a usable key; the next request on any node is checked
    /// against the new list.
    pub async fn update_api_key(
        &self,
        ctx: &AuthContext,
        id: &str,
        update: ApiKeyUpdate,
    ) -> EngineResult<ApiKey> {
        self.inner.keys.update(ctx, id, update).await
    }

    /// Issues a new key with the same label, permissions and whitelist, and revokes the old one
    /// after `grace_secs` (0 to 7 days; default 0 = at once).
    pub async fn rotate_api_key(
        &self,
        ctx: &AuthContext,
        id: &str,
        grace_secs: Option<i64>,
    ) -> EngineResult<ApiKeyWithSecret> {
        self.inner.keys.rotate(ctx, id, grace_secs).await
    }

    // ---------------------------------------------------------------- services

    /// Creates a manifest, or updates the one named by `id` or by the same `name`: only the
    /// fields given change. Returns the manifest and whether it was created.
    pub async fn upsert_service(
        &self,
        ctx: &AuthContext,
        input: ServiceInput,
    ) -> EngineResult<(Service, bool)> {
        self.inner.services.upsert(ctx, input).await
    }

    /// One manifest.
    pub async fn get_service(&self, ctx: &AuthContext, id: &str) -> EngineResult<Service> {
        self.inner.services.get(ctx, id).await
    }

    /// The caller's manifests, newest first.
    pub async fn list_services(
        &self,
        ctx: &AuthContext,
        limit: Option<usize>,
        offset: Option<usize>,
    ) -> EngineResult<(Page<Service>, PageRequest)> {
        self.inner.services.list(ctx, limit, offset).await
    }

    /// Moves a manifest through its lifecycle.
    pub async fn service_action(
        &self,
        ctx: &AuthContext,
        id: &str,
        action: ServiceAction,
    ) -> EngineResult<Service> {
        self.inner.services.act(ctx, id, action).await
    }

    // ---------------------------------------------------------------- payment intents

    /// Creates a payment intent (idempotent when `idempotency_key` is given).
    pub async fn create_intent(
        &self,
        ctx: &AuthContext,
        req: CreateIntentRequest,
        idempotency_key: Option<&str>,
    ) -> EngineResult<IdempotentOutcome> {
        self.inner.intents.create(ctx, req, idempotency_key).await
    }

    /// One intent.
    pub async fn get_intent(&self, ctx: &AuthContext, id: &str) -> EngineResult<PaymentIntent> {
        self.inner.intents.get(ctx, id).await
    }

    /// Lists the caller's intents.
    pub async fn list_intents(
        &self,
        ctx: &AuthContext,
        p: IntentListParams,
    ) -> EngineResult<(Page<PaymentIntent>, PageRequest)> {
        self.inner.intents.list(ctx, p).await
    }

    /// Cancels a pending intent.
    pub async fn cancel_intent(
        &self,
        ctx: &AuthContext,
        id: &str,
        reason: Option<String>,
    ) -> EngineResult<PaymentIntent> {
        self.inner.intents.cancel(ctx, id, reason).await
    }

    /// Test mode only: settles a sandbox intent as the channel would.
    pub async fn sandbox_settle(
        &self,
        ctx: &AuthContext,
        id: &str,
        succeed: bool,
    ) -> EngineResult<PaymentIntent> {
        self.inner.intents.sandbox_settle(ctx, id, succeed).await
    }

    // ---------------------------------------------------------------- channels

    /// Stores the caller's configuration of a channel (credentials encrypted). Returns it and
    /// whether it is new.
    pub async fn configure_channel(
        &self,
        ctx: &AuthContext,
        input: ChannelConfigInput,
    ) -> EngineResult<(ChannelView, bool)> {
        self.inner.routing.configure(ctx, input).await
    }

    /// The caller's configured channels with their health.
    pub async fn list_channels(&self, ctx: &AuthContext) -> EngineResult<Vec<ChannelView>> {
        self.inner.routing.list(ctx).await
    }

    /// Handles a PSP callback: finds the intent it claims to be about, verifies it with that
    /// merchant's credentials, skips notifications applied before, and settles the intent
    /// through its payment session. Returns what to answer the PSP.
    pub async fn handle_callback(
        &self,
        channel: &str,
        cb: &InboundCallback,
    ) -> EngineResult<CallbackAck> {
        self.inner.callbacks.handle(channel, cb).await
    }

    // ---------------------------------------------------------------- refunds

    /// Refunds part or all of a succeeded intent (idempotent when a key is given).
    pub async fn create_refund(
        &self,
        ctx: &AuthContext,
        req: CreateRefundRequest,
        idempotency_key: Option<&str>,
    ) -> EngineResult<IdempotentOutcome> {
        self.inner.refunds.create(ctx, req, idempotency_key).await
    }

    /// Refunds, optionally of one intent, newest first.
    pub async fn list_refunds(
        &self,
        ctx: &AuthContext,
        intent: Option<&str>,
        limit: Option<usize>,
        offset: Option<usize>,
    ) -> EngineResult<(Page<Refund>, PageRequest)> {
        self.inner.refunds.list(ctx, intent, limit, offset).await
    }

    /// The merchant's confirmation that a manual refund (PromptPay) was returned, or not.
    pub async fn confirm_refund(
        &self,
        ctx: &AuthContext,
        id: &str,
        req: ConfirmRefundRequest,
    ) -> EngineResult<Refund> {
        self.inner.refunds.confirm(ctx, id, req).await
    }

    /// Runs one refund poller round now (the background poller does this every
    /// `refund_poll_interval_ms`); returns how many pending refunds were looked at.
    pub async fn poll_refunds(&self) -> EngineResult<usize> {
        self.inner.refunds.poll_due().await
    }

    /// One refund.
    pub async fn get_refund(&self, ctx: &AuthContext, id: &str) -> EngineResult<Refund> {
        self.inner.refunds.get(ctx, id).await
    }

    // ---------------------------------------------------------------- settlement

    /// The caller's settlement preferences.
    pub async fn settlement_prefs(&self, ctx: &AuthContext) -> EngineResult<SettlementPrefs> {
        self.inner.settlement.prefs(ctx).await
    }

    /// Changes the caller's settlement preferences.
    pub async fn update_settlement_prefs(
        &self,
        ctx: &AuthContext,
        input: SettlementPrefsInput,
    ) -> EngineResult<SettlementPrefs> {
        self.inner.settlement.update_prefs(ctx, input).await
    }

    /// The caller's payouts, newest first.
    pub async fn list_payouts(
        &self,
        ctx: &AuthContext,
        limit: Option<usize>,
    ) -> EngineResult<Vec<Payout>> {
        self.inner.settlement.payouts(ctx, limit).await
    }

    /// One day's reconciliation report (`format` csv or json).
    pub async fn reconciliation(
        &self,
        ctx: &AuthContext,
        date: Option<&str>,
        format: Option<&str>,
    ) -> EngineResult<Report> {
        self.inner.reconciliation.day(ctx, date, format).await
    }

    /// A date range's settled transactions, streamed.
    pub async fn reconciliation_export(
        &self,
        ctx: &AuthContext,
        q: ExportQuery,
    ) -> EngineResult<ReportStream> {
        self.inner.reconciliation.export(ctx, q).await
    }

    // ---------------------------------------------------------------- events

    /// Events, newest first, optionally of one type or about one object.
    pub async fn list_events(
        &self,
        ctx: &AuthContext,
        event_type: Option<String>,
        object_id: Option<String>,
        limit: Option<usize>,
        offset: Option<usize>,
    ) -> EngineResult<(Page<Event>, PageRequest)> {
        self.inner
            .events
            .list(ctx, event_type, object_id, limit, offset)
            .await
    }

    /// One event.
    pub async fn get_event(&self, ctx: &AuthContext, id: &str) -> EngineResult<Event> {
        self.inner.events.get(ctx, id).await
    }

    // ---------------------------------------------------------------- subscriptions

    /// Subscribes to a manifest plan (idempotent when `idempotency_key` is given); the body is
    /// a [`CreatedSubscription`]: the subscription and its first payment.
    pub async fn create_subscription(
        &self,
        ctx: &AuthContext,
        req: CreateSubscriptionRequest,
        idempotency_key: Option<&str>,
    ) -> EngineResult<IdempotentOutcome> {
        self.inner
            .subscriptions
            .create(ctx, req, idempotency_key)
            .await
    }

    /// One subscription.
    pub async fn get_subscription(
        &self,
        ctx: &AuthContext,
        id: &str,
    ) -> EngineResult<Subscription> {
        self.inner.subscriptions.get(ctx, id).await
    }

    /// The caller's subscriptions, newest first, optionally of one status.
    pub async fn list_subscriptions(
        &self,
        ctx: &AuthContext,
        status: Option<&str>,
        limit: Option<usize>,
        offset: Option<usize>,
    ) -> EngineResult<(Page<Subscription>, PageRequest)> {
        self.inner
            .subscriptions
            .list(ctx, status, limit, offset)
            .await
    }

    /// Cancels a subscription (at period end when it is paid up; see `docs/subscriptions.md`).
    pub async fn cancel_subscription(
        &self,
        ctx: &AuthContext,
        id: &str,
    ) -> EngineResult<Subscription> {
        self.inner.subscriptions.cancel(ctx, id).await
    }

    /// Advances every subscription due at the clock's now by one step (the background timer
    /// does this every second; tests call it after moving the clock). Returns how many were due.
    pub async fn run_subscription_timers(&self) -> EngineResult<usize> {
        self.inner.subscriptions.tick().await
    }
}

impl Inner {
    /// Builds every concern on the shared stores, each given only what it uses.
    fn wire(
        ledger: Arc<dyn Ledger>,
        hot: Arc<dyn HotState>,
        clock: Arc<dyn Clock>,
        sessions: SessionRegistry,
        config: EngineConfig,
    ) -> Inner {
        let limits = config.limits.clone();
        let locks = Arc::new(MerchantLocks::default());
        let auth = Authenticator::new(
            ledger.clone(),
            hot.clone(),
            clock.clone(),
            Duration::from_millis(limits.key_cache_ttl_ms),
        );
        let idempotency =
            Idempotency::new(ledger.clone(), hot.clone(), clock.clone(), limits.clone());
        let keys = ApiKeys::new(
            ledger.clone(),
            clock.clone(),
            limits.clone(),
            locks.clone(),
            auth.clone(),
        );
        let services = Arc::new(Services::new(
            ledger.clone(),
            clock.clone(),
            limits.clone(),
            locks.clone(),
            config.url_policy.clone(),
        ));
        let routing = Arc::new(ChannelRouter::new(ledger.clone(), clock.clone(), locks));
        let settlement = Arc::new(Settlement::new(ledger.clone(), hot.clone(), clock.clone()));
        let reconciliation = Reconciliation::new(ledger.clone(), clock.clone(), settlement.clone());
        let intents = Arc::new(
            Intents::new(
                ledger.clone(),
                clock.clone(),
                limits.clone(),
                sessions.clone(),
                services.clone(),
                routing.clone(),
                idempotency.clone(),
            )
            .with_settlement(settlement.clone()),
        );
        let refunds = Refunds::new(RefundsDeps {
            ledger: ledger.clone(),
            clock: clock.clone(),
            limits: limits.clone(),
            sessions: sessions.clone(),
            intents: intents.clone(),
            idempotency: idempotency.clone(),
            routing: routing.clone(),
        });
        let callbacks = Callbacks::new(
            ledger.clone(),
            clock.clone(),
            sessions.clone(),
            routing.clone(),
            settlement.clone(),
        );
        let subscriptions = Arc::new(Subscriptions::new(
            ledger.clone(),
            hot.clone(),
            clock.clone(),
            limits.clone(),
            services.clone(),
            intents.clone(),
            idempotency,
        ));
        let events = Events::new(ledger.clone(), limits);
        Inner {
            ledger,
            hot,
            clock,
            sessions,
            config,
            auth,
            keys,
            services,
            routing,
            intents,
            refunds,
            callbacks,
            events,
            subscriptions,
            settlement,
            reconciliation,
        }
    }
}

/// The background refund poller: every `[channels] refund_poll_interval_ms` of real time it
/// runs a round, which compares due dates with the engine's (injected) clock. Stops with the
/// engine.
fn spawn_refund_poller(inner: std::sync::Weak<Inner>) {
    tokio::spawn(async move {
        let mut every: Option<tokio::time::Interval> = None;
        loop {
            let Some(inner) = inner.upgrade() else { return };
            if inner
                .sessions
                .context()
                .stopping
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                return;
            }
            // Until the channel subsystem is installed (right after start) there is nothing to
            // poll with, and touching it would install the default one.
            let Some(hub) = inner.routing.hub_if_set().cloned() else {
                drop(inner);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            if every.is_some()
                && let Err(e) = inner.refunds.poll_due().await
            {
                tracing::warn!(error = %e, "refund poller round failed");
            }
            let ms = hub.config().refund_poll_interval_ms.max(100);
            drop(inner);
            let tick = every.get_or_insert_with(|| {
                let mut i = tokio::time::interval(Duration::from_millis(ms));
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                i
            });
            tick.tick().await;
        }
    });
}
