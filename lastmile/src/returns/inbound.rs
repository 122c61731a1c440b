//! Sendcloud's inbound webhooks (`POST /api/webhooks/sendcloud/returns` and
//! `/api/integrations/sendcloud/webhook`): the `Sendcloud-Signature` check, then a
//! `parcel_status_changed` about a return's parcel moves the return — in transit, or received
//! (delivered back to the merchant), which refunds it.
//!
//! Sendcloud retries a delivery until it gets a 2xx, and may deliver out of order, so anything
//! that cannot move the return (another account's parcel, a status older than the return's,
//! a repeat) is answered 200 with `handled: false` and the reason, never an error.

use super::{RETURN_BY_PARCEL, ReturnAction, ReturnStatus};
use crate::LastMile;
use ipay_adapters::sendcloud::{self, StatusClass, Webhook};
use ipay_engine::error::{EngineError, EngineResult};
use serde::Serialize;

/// What a Sendcloud webhook did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SendcloudOutcome {
    /// Whether a return moved.
    pub handled: bool,
    pub action: String,
    pub return_id: Option<String>,
    /// The return's status after the webhook.
    pub status: Option<ReturnStatus>,
    /// Why nothing moved, when `handled` is false.
    pub note: Option<String>,
}

impl SendcloudOutcome {
    fn ignored(action: &str, note: &str) -> SendcloudOutcome {
        SendcloudOutcome {
            handled: false,
            action: action.into(),
            return_id: None,
            status: None,
            note: Some(note.into()),
        }
    }
}

fn bad_signature() -> EngineError {
    EngineError::Unauthenticated {
        code: "webhook_signature_invalid",
        message: "missing or wrong Sendcloud-Signature (hex HMAC-SHA256 of the body with the \
                  Sendcloud secret key)"
            .into(),
    }
}

impl LastMile {
    /// Handles one Sendcloud webhook delivery: `body` as received, `signature` the
    /// `Sendcloud-Signature` header.
    pub async fn sendcloud_webhook(
        &self,
        body: &[u8],
        signature: Option<&str>,
    ) -> EngineResult<SendcloudOutcome> {
        let secret = self.ret_cfg().sendcloud_secret_key.as_deref();
        if !secret.is_some_and(|s| sendcloud::verify(s, body, signature)) {
            tracing::info!("Sendcloud webhook with a missing or wrong signature refused");
            return Err(bad_signature());
        }
        let hook: Webhook = serde_json::from_slice(body).map_err(|e| {
            EngineError::invalid(
                "body_invalid",
                "body",
                format!("not a Sendcloud webhook: {e}"),
            )
        })?;
        let Some(parcel) = hook
            .parcel
            .as_ref()
            .filter(|_| hook.action == "parcel_status_changed")
        else {
            return Ok(SendcloudOutcome::ignored(
                &hook.action,
                "not a parcel status change",
            ));
        };
        let Some(r) = self
            .ret_lookup(RETURN_BY_PARCEL, &parcel.id.to_string())
            .await?
        else {
            return Ok(SendcloudOutcome::ignored(
                &hook.action,
                "not the parcel of a return",
            ));
        };
        let action = match sendcloud::classify(parcel.status.id) {
            StatusClass::InTransit => ReturnAction::CarrierInTransit,
            StatusClass::Delivered => ReturnAction::CarrierDelivered,
            StatusClass::Cancelled | StatusClass::Other => {
                return Ok(SendcloudOutcome {
                    return_id: Some(r.id),
                    status: Some(r.status),
                    ..SendcloudOutcome::ignored(&hook.action, "status does not move a return")
                });
            }
        };
        let note = format!("sendcloud:{} {}", parcel.status.id, parcel.status.message);
        let (r, moved) = self
            .ret_mutate(&r.id, async |r, c| {
                let now = self.engine.clock().now();
                if r.apply(action, now, note.clone()).is_err() {
                    return Ok(false);
                }
                if r.status == ReturnStatus::Received {
                    r.received_at = Some(now);
                }
                c.touch();
                Ok(true)
            })
            .await?;
        // Received: refund now. A refund that cannot be asked for yet leaves it `received`
        // (the next read or the merchant's retry asks again); Sendcloud has nothing to retry.
        let r = self.settle_refund(r).await?;
        Ok(SendcloudOutcome {
            handled: moved,
            action: hook.action,
            return_id: Some(r.id.clone()),
            status: Some(r.status),
            note: (!moved).then(|| "the return is already past this status".into()),
        })
    }
}
