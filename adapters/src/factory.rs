//! [`AdapterFactory`]: the engine's `ChannelFactory` for the five real channels. It turns a
//! merchant's credential JSON into an adapter bound to the configured endpoint (the PSP in
//! production, the simulator in tests), sharing one HTTP client and one clock.
//!
//! It keeps no credentials and no adapters: the engine stores credentials (encrypted) and may
//! cache what [`AdapterFactory::build`] returns.

use std::sync::Arc;

use ipay_engine::channel::{ChannelAdapter, ChannelFactory, ChannelsConfig, InboundCallback};
use ipay_engine::clock::{Clock, SystemClock};

use crate::http::{HttpClient, HttpTimeouts};
use crate::{alipay, multisafepay, promptpay, stripe, wechat};

/// The channels this factory builds.
pub const CHANNELS: &[&str] = &[
    alipay::NAME,
    wechat::NAME,
    promptpay::NAME,
    stripe::NAME,
    multisafepay::NAME,
];

/// Builds channel adapters from credentials.
pub struct AdapterFactory {
    endpoints: std::collections::BTreeMap<String, String>,
    client: HttpClient,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for AdapterFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdapterFactory")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

fn unknown(channel: &str) -> String {
    let name: String = channel.chars().take(32).collect();
    format!(
        "unknown channel `{name}` (expected one of: {})",
        CHANNELS.join(", ")
    )
}

impl AdapterFactory {
    /// A factory using `config.endpoints` (production endpoints for channels not listed), the
    /// default timeouts and the system clock.
    pub fn new(config: &ChannelsConfig) -> Result<Self, String> {
        Self::with_options(config, HttpTimeouts::default(), Arc::new(SystemClock))
    }

    /// A factory with explicit timeouts and clock (tests shorten the timeouts and inject time).
    pub fn with_options(
        config: &ChannelsConfig,
        timeouts: HttpTimeouts,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, String> {
        for (channel, url) in &config.endpoints {
            if !CHANNELS.contains(&channel.as_str()) && channel != "sandbox" {
                return Err(format!("[channels.endpoints]: {}", unknown(channel)));
            }
            let ok = url::Url::parse(url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !ok {
                return Err(format!(
                    "[channels.endpoints]: `{channel}` is not an http(s) URL"
                ));
            }
        }
        Ok(AdapterFactory {
            endpoints: config.endpoints.clone(),
            client: HttpClient::new(timeouts)?,
            clock,
        })
    }

    /// The base URL used for `channel`.
    pub fn endpoint(&self, channel: &str) -> &str {
        if let Some(url) = self.endpoints.get(channel) {
            return url;
        }
        match channel {
            alipay::NAME => alipay::DEFAULT_BASE_URL,
            wechat::NAME => wechat::DEFAULT_BASE_URL,
            stripe::NAME => stripe::DEFAULT_BASE_URL,
            multisafepay::NAME => multisafepay::DEFAULT_BASE_URL,
            _ => "",
        }
    }
}

impl ChannelFactory for AdapterFactory {
    fn channels(&self) -> &'static [&'static str] {
        CHANNELS
    }

    fn validate(&self, channel: &str, credentials: &serde_json::Value) -> Result<(), String> {
        match channel {
            alipay::NAME => alipay::AlipayCredentials::from_json(credentials).map(drop),
            wechat::NAME => wechat::WechatCredentials::from_json(credentials).map(drop),
            promptpay::NAME => promptpay::PromptPayCredentials::from_json(credentials).map(drop),
            stripe::NAME => stripe::StripeCredentials::from_json(credentials).map(drop),
            multisafepay::NAME => {
                multisafepay::MultiSafepayCredentials::from_json(credentials).map(drop)
            }
            other => Err(unknown(other)),
        }
    }

    fn build(
        &self,
        channel: &str,
        credentials: &serde_json::Value,
        notify_url: &str,
    ) -> Result<Arc<dyn ChannelAdapter>, String> {
        let base = self.endpoint(channel);
        let client = self.client.clone();
        let clock = self.clock.clone();
        Ok(match channel {
            alipay::NAME => Arc::new(alipay::AlipayAdapter::new(
                alipay::AlipayCredentials::from_json(credentials)?,
                base,
                notify_url,
                client,
                clock,
            )),
            wechat::NAME => Arc::new(wechat::WechatAdapter::new(
                wechat::WechatCredentials::from_json(credentials)?,
                base,
                notify_url,
                client,
                clock,
            )?),
            promptpay::NAME => Arc::new(promptpay::PromptPayAdapter::new(
                promptpay::PromptPayCredentials::from_json(credentials)?,
            )),
            stripe::NAME => Arc::new(stripe::StripeAdapter::new(
                stripe::StripeCredentials::from_json(credentials)?,
                base,
                client,
            )),
            multisafepay::NAME => Arc::new(multisafepay::MultiSafepayAdapter::new(
                multisafepay::MultiSafepayCredentials::from_json(credentials)?,
                base,
                notify_url,
                client,
            )),
            other => return Err(unknown(other)),
        })
    }

    fn peek_intent(&self, channel: &str, cb: &InboundCallback) -> Option<String> {
        let body = &cb.body[..];
        match channel {
            alipay::NAME => alipay::peek_intent(body),
            wechat::NAME => wechat::peek_intent(cb),
            promptpay::NAME => promptpay::peek_intent(body),
            stripe::NAME => stripe::peek_intent(body),
            multisafepay::NAME => multisafepay::peek_intent(body),
            _ => None,
        }
    }
}
