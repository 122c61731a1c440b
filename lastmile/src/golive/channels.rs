//! A merchant user's payment channels: credentials for Stripe, MultiSafepay, Alipay, WeChat
//! Pay and PromptPay stored through the engine's channel configuration (the same records
//! `/v1/channels` writes, sealed at rest, never returned), and which channels a consumer may
//! pay a session with.
//!
//! The shape of each channel's credentials is checked by the channel's adapter (the engine's
//! `credentials_invalid`); this file checks what can be told before that: a known channel and
//! a flat object of non-empty strings.

use crate::LastMile;
use ipay_engine::channels::{ChannelConfigInput, ChannelView};
use ipay_engine::error::{EngineError, EngineResult};
use ipay_engine::ids::MerchantId;
use serde::{Deserialize, Serialize};

/// The channels a merchant may configure.
pub const CONFIGURABLE: &[&str] = &["stripe", "multisafepay", "alipay", "wechat", "promptpay"];
/// Most fields in one channel's credentials.
const MAX_FIELDS: usize = 20;

/// `PUT /api/merchant/channels/{channel}` body. `Debug` leaves the credentials out.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelCredentials {
    /// `true` for live credentials, `false` for test ones.
    pub livemode: bool,
    /// The channel's credentials as the channel names them (e.g. MultiSafepay `api_key`;
    /// Stripe `secret_key`, `webhook_secret`). Stored encrypted; never returned.
    #[schema(value_type = Object)]
    pub credentials: serde_json::Value,
    /// Where the PSP sends its callbacks: this server's callback route for the channel.
    pub notify_url: String,
}

impl std::fmt::Debug for ChannelCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelCredentials")
            .field("livemode", &self.livemode)
            .field("credentials", &"***")
            .field("notify_url", &self.notify_url)
            .finish()
    }
}

/// `GET /api/merchant/channels`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChannelList {
    /// Configured channels (never with credentials).
    pub data: Vec<ChannelView>,
}

/// Checks the channel name and that the credentials are a flat object of non-empty strings.
fn check_input(channel: &str, c: &ChannelCredentials) -> EngineResult<()> {
    if !CONFIGURABLE.contains(&channel) {
        return Err(EngineError::invalid(
            "channel_unknown",
            "channel",
            format!(
                "`{}` cannot be configured; channels: {}",
                channel.chars().take(40).collect::<String>(),
                CONFIGURABLE.join(", ")
            ),
        ));
    }
    let Some(fields) = c.credentials.as_object() else {
        return Err(EngineError::invalid(
            "parameter_invalid",
            "credentials",
            "credentials must be a JSON object of strings",
        ));
    };
    if fields.is_empty() || fields.len() > MAX_FIELDS {
        return Err(EngineError::invalid(
            "parameter_invalid",
            "credentials",
            format!("credentials must have 1 to {MAX_FIELDS} fields"),
        ));
    }
    for (k, v) in fields {
        if v.as_str().is_none_or(|s| s.trim().is_empty()) {
            // Name the field, never its value: it may be a secret.
            return Err(EngineError::invalid(
                "parameter_invalid",
                format!("credentials.{}", k.chars().take(40).collect::<String>()),
                "every credential must be a non-empty string",
            ));
        }
    }
    Ok(())
}

impl LastMile {
    /// Stores the merchant's credentials of one channel in one mode (replacing older ones);
    /// the answer and whether the configuration is new.
    pub async fn golive_configure_channel(
        &self,
        merchant: MerchantId,
        channel: &str,
        req: ChannelCredentials,
    ) -> EngineResult<(ChannelView, bool)> {
        check_input(channel, &req)?;
        let ctx = self.owner_ctx(merchant, req.livemode);
        let input = ChannelConfigInput {
            channel: channel.to_string(),
            credentials: req.credentials,
            notify_url: req.notify_url,
        };
        self.engine.configure_channel(&ctx, input).await
    }

    /// The merchant's configured channels in the given modes.
    pub async fn golive_channels(
        &self,
        merchant: MerchantId,
        modes: &[bool],
    ) -> EngineResult<ChannelList> {
        let mut data = Vec::new();
        for &livemode in modes {
            let ctx = self.owner_ctx(merchant, livemode);
            data.extend(self.engine.list_channels(&ctx).await?);
        }
        Ok(ChannelList { data })
    }

    /// Names of the channels the merchant configured in one mode.
    pub(crate) async fn configured_channels(
        &self,
        merchant: MerchantId,
        livemode: bool,
    ) -> EngineResult<Vec<String>> {
        let ctx = self.owner_ctx(merchant, livemode);
        let list = self.engine.list_channels(&ctx).await?;
        Ok(list.into_iter().map(|c| c.channel).collect())
    }

    /// The channels a consumer may pay a session of `merchant` in `livemode` with: the
    /// server's `[lastmile.sessions] channels` (without `sandbox` in live mode: it settles
    /// nothing real) followed by the channels the merchant configured in that mode.
    pub async fn session_channels(
        &self,
        merchant: MerchantId,
        livemode: bool,
    ) -> EngineResult<Vec<String>> {
        let mut out: Vec<String> = self
            .cfg
            .sessions
            .channels
            .iter()
            .filter(|c| !(livemode && c.as_str() == "sandbox"))
            .cloned()
            .collect();
        for c in self.configured_channels(merchant, livemode).await? {
            if !out.contains(&c) {
                out.push(c);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(credentials: serde_json::Value) -> ChannelCredentials {
        ChannelCredentials {
            livemode: true,
            credentials,
            notify_url: "https://example.com/api/webhooks/multisafepay".into(),
        }
    }

    #[test]
    fn credentials_must_be_a_flat_object_of_strings_for_a_known_channel() {
        let good = input(json!({"api_key": "k"}));
        assert!(check_input("multisafepay", &good).is_ok());
        assert_eq!(
            check_input("paypal", &good).unwrap_err().code(),
            "channel_unknown"
        );
        for bad in [
            json!("k"),
            json!({}),
            json!({"api_key": 5}),
            json!({"api_key": " "}),
        ] {
            let e = check_input("multisafepay", &input(bad.clone())).unwrap_err();
            assert_eq!(e.code(), "parameter_invalid", "{bad}");
        }
    }

    #[test]
    fn debug_never_shows_credentials() {
        let s = format!("{:?}", input(json!({"api_key": "very-secret"})));
        assert!(!s.contains("very-secret"), "{s}");
    }
}
