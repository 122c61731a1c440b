//! A merchant user's outbound event endpoints: the engine webhook endpoints of its merchant,
//! managed from `/api`. Deliveries are the engine's (signed `X-ItPay-Signature` with the
//! endpoint's secret, retried, logged), and so is the URL policy (https, no private
//! addresses unless the operator allowed them). This file adds the last-mile event catalogue:
//! an endpoint made here subscribes to last-mile event types (or `*`), never to unknown names
//! that would silently receive nothing.

use crate::LastMile;
use ipay_engine::error::{EngineError, EngineResult};
use ipay_engine::ids::MerchantId;
use ipay_engine::webhooks::Webhooks;
use ipay_engine::webhooks::api::{DeletedEndpoint, EndpointInput, EndpointUpdate, RotateInput};
use ipay_engine::webhooks::model::{EndpointView, EndpointWithSecret};
use serde::{Deserialize, Serialize};

/// The last-mile event types an endpoint may subscribe to (the spec's outbound list, plus
/// `order.updated`). `*` subscribes to everything, engine events included.
pub const EVENT_TYPES: &[&str] = &[
    "order.created",
    "order.updated",
    "session.created",
    "session.paid",
    "session.otp_verified",
    "parcel.delivered",
    "return.opened",
    "return.refunded",
    "locker.code_issued",
    "invoice.mismatch",
];

/// `POST /api/merchant/webhook-endpoints` body.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    /// Which events: `true` for live sessions' events, `false` for test ones.
    pub livemode: bool,
    /// `https://…`, reachable from the internet.
    pub url: String,
    /// Event types (see the catalogue in the docs) or `["*"]`; default every last-mile type.
    pub enabled_events: Option<Vec<String>>,
    pub description: Option<String>,
}

/// `PATCH /api/merchant/webhook-endpoints/{id}` body; absent fields stay.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointChange {
    pub url: Option<String>,
    pub enabled_events: Option<Vec<String>>,
    pub description: Option<String>,
}

/// `GET /api/merchant/webhook-endpoints`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EndpointList {
    pub data: Vec<EndpointView>,
    /// More endpoints exist than listed.
    pub has_more: bool,
}

/// Fails unless every entry is a last-mile event type or `*`.
fn check_event_types(events: &[String]) -> EngineResult<()> {
    if events.is_empty() {
        return Err(EngineError::invalid(
            "parameter_invalid",
            "enabled_events",
            "enabled_events needs at least one event type, or [\"*\"] for all",
        ));
    }
    for (i, e) in events.iter().enumerate() {
        if e != "*" && !EVENT_TYPES.contains(&e.as_str()) {
            return Err(EngineError::invalid(
                "event_type_unknown",
                format!("enabled_events[{i}]"),
                format!(
                    "`{}` is not a last-mile event; use `*` or one of: {}",
                    e.chars().take(60).collect::<String>(),
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

impl LastMile {
    /// The merchant's endpoints in the given modes.
    pub async fn golive_endpoints(
        &self,
        hooks: &Webhooks,
        merchant: MerchantId,
        modes: &[bool],
    ) -> EngineResult<EndpointList> {
        let mut out = EndpointList {
            data: Vec::new(),
            has_more: false,
        };
        for &livemode in modes {
            let ctx = self.owner_ctx(merchant, livemode);
            let (page, _) = hooks
                .list_endpoints(&ctx, Some(self.golive_page()), None)
                .await?;
            out.has_more |= page.total > page.data.len() as u64;
            out.data.extend(page.data);
        }
        Ok(out)
    }

    /// Creates an endpoint; its signing secret is in the answer only.
    pub async fn golive_create_endpoint(
        &self,
        hooks: &Webhooks,
        merchant: MerchantId,
        req: NewEndpoint,
    ) -> EngineResult<EndpointWithSecret> {
        let events = req
            .enabled_events
            .unwrap_or_else(|| EVENT_TYPES.iter().map(|e| e.to_string()).collect());
        check_event_types(&events)?;
        let ctx = self.owner_ctx(merchant, req.livemode);
        let input = EndpointInput {
            url: req.url,
            enabled_events: Some(events),
            description: req.description,
        };
        hooks.create_endpoint(&ctx, input).await
    }

    /// Changes an endpoint's URL, events or description (its secret stays).
    pub async fn golive_update_endpoint(
        &self,
        hooks: &Webhooks,
        merchant: MerchantId,
        id: &str,
        req: EndpointChange,
    ) -> EngineResult<EndpointView> {
        if let Some(events) = &req.enabled_events {
            check_event_types(events)?;
        }
        let livemode = self.endpoint_mode(hooks, merchant, id).await?;
        let ctx = self.owner_ctx(merchant, livemode);
        let update = EndpointUpdate {
            url: req.url,
            enabled_events: req.enabled_events,
            description: req.description,
        };
        hooks.update_endpoint(&ctx, id, update).await
    }

    /// Deletes an endpoint; its pending deliveries are cancelled.
    pub async fn golive_delete_endpoint(
        &self,
        hooks: &Webhooks,
        merchant: MerchantId,
        id: &str,
    ) -> EngineResult<DeletedEndpoint> {
        let livemode = self.endpoint_mode(hooks, merchant, id).await?;
        hooks
            .delete_endpoint(&self.owner_ctx(merchant, livemode), id)
            .await
    }

    /// Issues a new signing secret (shown once); the old one keeps signing for the overlap.
    pub async fn golive_rotate_endpoint(
        &self,
        hooks: &Webhooks,
        merchant: MerchantId,
        id: &str,
        req: RotateInput,
    ) -> EngineResult<EndpointWithSecret> {
        let livemode = self.endpoint_mode(hooks, merchant, id).await?;
        hooks
            .rotate_secret(&self.owner_ctx(merchant, livemode), id, req)
            .await
    }

    /// The mode of one of the merchant's endpoints; 404 when it has none with this id.
    async fn endpoint_mode(
        &self,
        hooks: &Webhooks,
        merchant: MerchantId,
        id: &str,
    ) -> EngineResult<bool> {
        for livemode in [false, true] {
            match hooks
                .get_endpoint(&self.owner_ctx(merchant, livemode), id)
                .await
            {
                Ok(_) => return Ok(livemode),
                Err(EngineError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Err(EngineError::not_found("webhook endpoint", id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_last_mile_event_types_or_everything_are_accepted() {
        let ok =
            |v: &[&str]| check_event_types(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(ok(&["session.paid", "parcel.delivered"]).is_ok());
        assert!(ok(&["*"]).is_ok());
        let e = ok(&["session.paid", "session.payd"]).unwrap_err();
        assert_eq!(e.code(), "event_type_unknown");
        assert!(ok(&[]).is_err());
    }
}
