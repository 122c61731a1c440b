//! Service manifests: what a merchant sells, at what price, through which channels, and the
//! manifest lifecycle (draft → active ⇄ paused → deprecated → deleted).

use crate::clock::Timestamp;
use crate::error::{EngineError, EngineResult};
use crate::ids::{MerchantId, ServiceId};
use crate::money::{Currency, Money};
use crate::url_policy::UrlPolicy;
use serde::{Deserialize, Serialize};

/// Channels the engine knows by name. Only `sandbox` has an adapter until real channels land.
pub const KNOWN_CHANNELS: &[&str] = &[
    "alipay",
    "wechat",
    "promptpay",
    "stripe",
    "multisafepay",
    "sandbox",
];

/// Bounds on manifest fields.
pub const MAX_NAME_LEN: usize = 200;
pub const MAX_DESCRIPTION_LEN: usize = 2_000;
pub const MAX_TAGS: usize = 20;
pub const MAX_TAG_LEN: usize = 40;
pub const MAX_PRICES: usize = 50;
pub use crate::url_policy::MAX_URL_LEN;

/// Manifest lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServiceStatus {
    Draft,
    Active,
    Paused,
    Deprecated,
    Deleted,
}

impl ServiceStatus {
    /// Wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            ServiceStatus::Draft => "draft",
            ServiceStatus::Active => "active",
            ServiceStatus::Paused => "paused",
            ServiceStatus::Deprecated => "deprecated",
            ServiceStatus::Deleted => "deleted",
        }
    }

    /// Whether new payment intents may be created against a manifest in this state.
    pub fn accepts_payments(&self) -> bool {
        matches!(self, ServiceStatus::Active | ServiceStatus::Deprecated)
    }
}

/// Lifecycle actions (`PATCH /v1/services/{id}/{action}` and `DELETE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceAction {
    Activate,
    Pause,
    Resume,
    Deprecate,
    Delete,
}

impl ServiceAction {
    /// Parses the path segment.
    pub fn parse(s: &str) -> Option<ServiceAction> {
        Some(match s {
            "activate" => ServiceAction::Activate,
            "pause" => ServiceAction::Pause,
            "resume" => ServiceAction::Resume,
            "deprecate" => ServiceAction::Deprecate,
            "delete" => ServiceAction::Delete,
            _ => return None,
        })
    }

    fn verb(&self) -> &'static str {
        match self {
            ServiceAction::Activate => "activate",
            ServiceAction::Pause => "pause",
            ServiceAction::Resume => "resume",
            ServiceAction::Deprecate => "deprecate",
            ServiceAction::Delete => "delete",
        }
    }
}

/// The manifest lifecycle table.
pub fn next_service_status(
    from: ServiceStatus,
    action: ServiceAction,
) -> EngineResult<ServiceStatus> {
    use ServiceAction as A;
    use ServiceStatus as S;
    match (from, action) {
        (S::Draft, A::Activate) => Ok(S::Active),
        (S::Active, A::Pause) => Ok(S::Paused),
        (S::Paused, A::Resume) => Ok(S::Active),
        (S::Active | S::Paused, A::Deprecate) => Ok(S::Deprecated),
        (S::Draft | S::Deprecated, A::Delete) => Ok(S::Deleted),
        (from, action) => Err(EngineError::InvalidStateTransition {
            object: "service",
            from: from.as_str().to_string(),
            action: action.verb().to_string(),
        }),
    }
}

/// Which payment models the service offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentMethods {
    #[serde(default)]
    pub one_time: bool,
    #[serde(default)]
    pub cumulative: bool,
    #[serde(default)]
    pub subscription: bool,
}

impl Default for PaymentMethods {
    fn default() -> Self {
        PaymentMethods {
            one_time: true,
            cumulative: false,
            subscription: false,
        }
    }
}

/// One-time price point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PricePoint {
    /// Minor units.
    pub amount: i64,
    #[schema(value_type = String)]
    pub currency: Currency,
    #[serde(default)]
    pub label: Option<String>,
}

/// Billing interval of a subscription plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

/// Subscription plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub plan_id: String,
    pub name: String,
    /// Minor units.
    pub amount: i64,
    #[schema(value_type = String)]
    pub currency: Currency,
    pub interval: Interval,
    #[serde(default)]
    pub features: Vec<String>,
}

/// Price list.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Pricing {
    #[serde(default)]
    pub one_time: Vec<PricePoint>,
    #[serde(default)]
    pub subscription: Vec<Plan>,
}

/// Static QR (one code, payer enters amount) or dynamic (one code per intent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QrMode {
    Static,
    #[default]
    Dynamic,
}

/// A merchant's published service manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Service {
    #[schema(value_type = String, example = "svc_0690D5W2N3YJ6Q7HQZ8K3B9XAM")]
    pub id: ServiceId,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub payment_methods: PaymentMethods,
    pub pricing: Pricing,
    pub accepted_channels: Vec<String>,
    pub qr_mode: QrMode,
    #[schema(value_type = Option<String>)]
    #[serde(default)]
    pub settlement_currency: Option<Currency>,
    #[serde(default)]
    pub endpoint: Option<String>,
    pub tags: Vec<String>,
    pub status: ServiceStatus,
    pub livemode: bool,
    #[schema(value_type = String)]
    pub merchant_id: MerchantId,
    #[schema(value_type = String, format = DateTime)]
    pub created: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated: Timestamp,
}

/// Fields of a create-or-update request; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceInput {
    /// Present to update a manifest by id.
    #[schema(value_type = Option<String>)]
    pub id: Option<ServiceId>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub payment_methods: Option<PaymentMethods>,
    pub pricing: Option<Pricing>,
    pub accepted_channels: Option<Vec<String>>,
    pub qr_mode: Option<QrMode>,
    #[schema(value_type = Option<String>)]
    pub settlement_currency: Option<Currency>,
    pub endpoint: Option<String>,
    pub tags: Option<Vec<String>>,
}

impl ServiceInput {
    /// Checks every field given, independent of any stored manifest; `urls` decides which
    /// webhook `endpoint` URLs are accepted.
    pub fn validate(&self, urls: &UrlPolicy) -> EngineResult<()> {
        if let Some(name) = &self.name {
            let n = name.trim();
            if n.is_empty() || n.chars().count() > MAX_NAME_LEN {
                return Err(EngineError::invalid(
                    "parameter_invalid",
                    "name",
                    format!("name must be 1 to {MAX_NAME_LEN} characters"),
                ));
            }
        }
        if let Some(d) = &self.description
            && d.chars().count() > MAX_DESCRIPTION_LEN
        {
            return Err(EngineError::invalid(
                "parameter_invalid",
                "description",
                format!("description is limited to {MAX_DESCRIPTION_LEN} characters"),
            ));
        }
        if let Some(chs) = &self.accepted_channels {
            if chs.len() > KNOWN_CHANNELS.len() {
                return Err(EngineError::invalid(
                    "parameter_invalid",
                    "accepted_channels",
                    "too many channels",
                ));
            }
            for (i, c) in chs.iter().enumerate() {
                if !KNOWN_CHANNELS.contains(&c.as_str()) {
                    return Err(EngineError::invalid(
                        "channel_unknown",
                        format!("accepted_channels[{i}]"),
                        format!(
                            "unknown channel `{}`; known channels: {}",
                            c.chars().take(40).collect::<String>(),
                            KNOWN_CHANNELS.join(", ")
                        ),
                    ));
                }
            }
        }
        if let Some(p) = &self.pricing {
            if p.one_time.len() + p.subscription.len() > MAX_PRICES {
                return Err(EngineError::invalid(
                    "parameter_invalid",
                    "pricing",
                    format!("at most {MAX_PRICES} prices"),
                ));
            }
            for (i, pp) in p.one_time.iter().enumerate() {
                Money::new(pp.amount, pp.currency)
                    .map_err(|e| EngineError::money(&format!("pricing.one_time[{i}].amount"), e))?;
            }
            for (i, plan) in p.subscription.iter().enumerate() {
                Money::new(plan.amount, plan.currency).map_err(|e| {
                    EngineError::money(&format!("pricing.subscription[{i}].amount"), e)
                })?;
                if plan.plan_id.is_empty() || plan.plan_id.len() > 64 {
                    return Err(EngineError::invalid(
                        "parameter_invalid",
                        format!("pricing.subscription[{i}].plan_id"),
                        "plan_id must be 1 to 64 characters",
                    ));
                }
            }
        }
        if let Some(url) = &self.endpoint {
            urls.check_webhook_url(url, "endpoint")?;
        }
        if let Some(tags) = &self.tags
            && (tags.len() > MAX_TAGS
                || tags
                    .iter()
                    .any(|t| t.is_empty() || t.chars().count() > MAX_TAG_LEN))
        {
            return Err(EngineError::invalid(
                "parameter_invalid",
                "tags",
                format!("at most {MAX_TAGS} tags of 1 to {MAX_TAG_LEN} characters"),
            ));
        }
        Ok(())
    }

    /// Writes the given fields onto a manifest.
    pub fn apply_to(self, s: &mut Service, now: Timestamp) {
        if let Some(v) = self.name {
            s.name = v.trim().to_string();
        }
        if let Some(v) = self.description {
            s.description = Some(v);
        }
        if let Some(v) = self.payment_methods {
            s.payment_methods = v;
        }
        if let Some(v) = self.pricing {
            s.pricing = v;
        }
        if let Some(v) = self.accepted_channels {
            let mut seen = Vec::with_capacity(v.len());
            for c in v {
                if !seen.contains(&c) {
                    seen.push(c);
                }
            }
            s.accepted_channels = seen;
        }
        if let Some(v) = self.qr_mode {
            s.qr_mode = v;
        }
        if let Some(v) = self.settlement_currency {
            s.settlement_currency = Some(v);
        }
        if let Some(v) = self.endpoint {
            s.endpoint = Some(v);
        }
        if let Some(v) = self.tags {
            s.tags = v;
        }
        s.updated = now;
    }
}

/// Accepts absolute `http(s)` URLs of bounded length (kept here for callers that validate
/// URLs next to manifests; the rule itself is [`crate::url_policy::check_http_url`]).
pub fn validate_https_url(url: &str, param: &'static str) -> EngineResult<()> {
    crate::url_policy::check_http_url(url, param)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_follows_the_spec_diagram() {
        use ServiceAction as A;
        use ServiceStatus as S;
        assert_eq!(
            next_service_status(S::Draft, A::Activate).unwrap(),
            S::Active
        );
        assert_eq!(next_service_status(S::Active, A::Pause).unwrap(), S::Paused);
        assert_eq!(
            next_service_status(S::Paused, A::Resume).unwrap(),
            S::Active
        );
        assert_eq!(
            next_service_status(S::Paused, A::Deprecate).unwrap(),
            S::Deprecated
        );
        assert_eq!(
            next_service_status(S::Deprecated, A::Delete).unwrap(),
            S::Deleted
        );
        assert!(next_service_status(S::Active, A::Delete).is_err());
        assert!(next_service_status(S::Deleted, A::Activate).is_err());
        assert!(next_service_status(S::Active, A::Activate).is_err());
    }

    #[test]
    fn unknown_channels_and_bad_urls_are_rejected() {
        let i = ServiceInput {
            accepted_channels: Some(vec!["paypal".into()]),
            ..Default::default()
        };
        assert_eq!(
            i.validate(&UrlPolicy::default()).unwrap_err().code(),
            "channel_unknown"
        );
        let i = ServiceInput {
            endpoint: Some("ftp://x".into()),
            ..Default::default()
        };
        assert_eq!(
            i.validate(&UrlPolicy::default()).unwrap_err().param(),
            Some("endpoint")
        );
    }
}
