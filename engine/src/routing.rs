//! Channel routing: which adapter serves a merchant's channel (its own configuration first,
//! then a built-in channel such as `sandbox`), the channel subsystem ([`ChannelHub`]) the
//! engine was given, and opening a payment with a channel, offering healthy alternatives when
//! it is down.
//!
//! It does not speak any PSP's wire format (adapters do) and does not change intents (the
//! session layer does).

use crate::auth::AuthContext;
use crate::channel::{
    ChannelAdapter, ChannelError, ChannelPayment, ChannelPaymentRequest, SandboxChannel,
};
use crate::channels::{ChannelConfigInput, ChannelHub, ChannelSetup, ChannelView};
use crate::clock::Clock;
use crate::error::{EngineError, EngineResult};
use crate::ids::MerchantId;
use crate::merchants::MerchantLocks;
use crate::model::{Permission, Service};
use crate::money::Money;
use crate::store::Ledger;
use dashmap::DashMap;
use std::sync::{Arc, OnceLock};

/// Channel routing of one engine.
pub(crate) struct ChannelRouter {
    ledger: Arc<dyn Ledger>,
    clock: Arc<dyn Clock>,
    locks: Arc<MerchantLocks>,
    /// Built-in channels every merchant may use without configuring them (`sandbox`).
    builtin: DashMap<&'static str, Arc<dyn ChannelAdapter>>,
    /// Merchant-configured channels, breakers and callbacks; set once (see
    /// [`ChannelRouter::set_hub`]), or defaulted without adapters on first use.
    hub: OnceLock<Arc<ChannelHub>>,
}

impl ChannelRouter {
    /// Routing with only the built-in `sandbox` channel.
    pub(crate) fn new(
        ledger: Arc<dyn Ledger>,
        clock: Arc<dyn Clock>,
        locks: Arc<MerchantLocks>,
    ) -> Self {
        let builtin: DashMap<&'static str, Arc<dyn ChannelAdapter>> = DashMap::new();
        builtin.insert("sandbox", Arc::new(SandboxChannel));
        ChannelRouter {
            ledger,
            clock,
            locks,
            builtin,
            hub: OnceLock::new(),
        }
    }

    /// Registers a built-in channel (replacing one of the same name).
    pub(crate) fn add_builtin(&self, adapter: Arc<dyn ChannelAdapter>) {
        self.builtin.insert(adapter.name(), adapter);
    }

    /// Installs the channel subsystem; fails if it is already in place.
    pub(crate) fn set_hub(&self, setup: ChannelSetup) -> EngineResult<()> {
        let hub = Arc::new(ChannelHub::new(
            self.ledger.clone(),
            self.clock.clone(),
            setup,
        ));
        self.hub
            .set(hub)
            .map_err(|_| EngineError::Internal("the channel subsystem is already set up".into()))
    }

    /// The channel subsystem, if one was installed or defaulted already (never defaults it).
    pub(crate) fn hub_if_set(&self) -> Option<&Arc<ChannelHub>> {
        self.hub.get()
    }

    /// The channel subsystem (breakers, stored configurations), defaulted without adapters
    /// when none was installed.
    pub(crate) fn hub(&self) -> &Arc<ChannelHub> {
        self.hub.get_or_init(|| {
            Arc::new(ChannelHub::new(
                self.ledger.clone(),
                self.clock.clone(),
                ChannelSetup::default(),
            ))
        })
    }

    /// Stores the caller's configuration of a channel (credentials encrypted). Returns it and
    /// whether it is new.
    pub(crate) async fn configure(
        &self,
        ctx: &AuthContext,
        input: ChannelConfigInput,
    ) -> EngineResult<(ChannelView, bool)> {
        ctx.require(Permission::ChannelsWrite)?;
        let _guard = self.locks.lock(ctx.merchant_id).await;
        self.hub()
            .configure(ctx.merchant_id, ctx.livemode, input)
            .await
    }

    /// The caller's configured channels with their health.
    pub(crate) async fn list(&self, ctx: &AuthContext) -> EngineResult<Vec<ChannelView>> {
        ctx.require(Permission::ChannelsRead)?;
        self.hub().list(ctx.merchant_id, ctx.livemode).await
    }

    /// The adapter `channel` resolves to for this merchant and mode: its own configuration
    /// first, then a built-in channel.
    pub(crate) async fn adapter_for(
        &self,
        merchant: MerchantId,
        livemode: bool,
        channel: &str,
    ) -> EngineResult<Option<Arc<dyn ChannelAdapter>>> {
        if let Some(a) = self
            .hub()
            .configured_adapter(merchant, livemode, channel)
            .await?
        {
            return Ok(Some(a));
        }
        Ok(self.builtin.get(channel).map(|a| a.clone()))
    }

    /// The adapter that collects `money` through `channel` for the caller: configured (or
    /// built in), allowed in the caller's mode, able to collect the currency.
    pub(crate) async fn usable_adapter(
        &self,
        ctx: &AuthContext,
        channel: &str,
        money: Money,
    ) -> EngineResult<Arc<dyn ChannelAdapter>> {
        let adapter = self
            .adapter_for(ctx.merchant_id, ctx.livemode, channel)
            .await?
            .ok_or_else(|| {
                EngineError::invalid(
                    "channel_not_configured",
                    "channel",
                    format!(
                        "channel `{channel}` is not configured for this merchant in {} mode; configure it with POST /v1/channels",
                        if ctx.livemode { "live" } else { "test" }
                    ),
                )
            })?;
        if ctx.livemode && !adapter.allows_livemode() {
            return Err(EngineError::invalid(
                "channel_not_configured",
                "channel",
                format!("channel `{channel}` accepts test-mode keys only"),
            ));
        }
        if !adapter.supports_currency(money.currency) {
            return Err(EngineError::invalid(
                "currency_not_supported",
                "amount.currency",
                format!("channel `{channel}` cannot collect {}", money.currency),
            ));
        }
        Ok(adapter)
    }

    /// Opens the payment with the channel (breaker and retries around the PSP call). When the
    /// channel is unavailable the error names the service's healthy alternatives.
    pub(crate) async fn open_payment(
        &self,
        ctx: &AuthContext,
        service: &Service,
        adapter: &Arc<dyn ChannelAdapter>,
        req: &ChannelPaymentRequest,
        channel: &str,
    ) -> EngineResult<ChannelPayment> {
        let hub = self.hub();
        match hub.create_payment(channel, adapter, req).await {
            Ok(p) => Ok(p),
            Err(ChannelError::Unavailable(why)) => {
                tracing::warn!(channel = %channel, reason = %why, "channel unavailable");
                Err(EngineError::ChannelUnavailable {
                    channel: channel.to_string(),
                    message: format!(
                        "{} is currently unavailable. Please try again later or use an alternative channel.",
                        display_name(channel)
                    ),
                    retry_after_secs: hub.config().retry_after_secs,
                    alternatives: self
                        .healthy_alternatives(service, channel, req.amount, ctx)
                        .await,
                })
            }
            Err(ChannelError::Rejected(why)) => {
                Err(EngineError::invalid("channel_rejected", "channel", why))
            }
        }
    }

    /// The service's other accepted channels that this merchant can use now for this amount:
    /// configured (or built in), breaker closed, currency supported, mode allowed.
    async fn healthy_alternatives(
        &self,
        service: &Service,
        exclude: &str,
        money: Money,
        ctx: &AuthContext,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for c in service.accepted_channels.iter().filter(|c| *c != exclude) {
            if !self.hub().healthy(c) {
                continue;
            }
            let Ok(Some(a)) = self.adapter_for(ctx.merchant_id, ctx.livemode, c).await else {
                continue;
            };
            if a.supports_currency(money.currency) && (!ctx.livemode || a.allows_livemode()) {
                out.push(c.clone());
            }
        }
        out
    }
}

/// A channel's name as people write it, for messages (`alipay` → `Alipay`).
fn display_name(channel: &str) -> String {
    match channel {
        "wechat" => "WeChat Pay".into(),
        "promptpay" => "PromptPay".into(),
        "multisafepay" => "MultiSafepay".into(),
        other => {
            let mut c = other.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect())
                .unwrap_or_default()
        }
    }
}
