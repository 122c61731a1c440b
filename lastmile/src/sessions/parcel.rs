//! Moving the parcel (merchant or operator) through its state machine, and delivering it:
//! the `parcel.delivered` event and the order's DELIVERED status.

use super::store::Change;
use super::{Actor, ParcelStatus, PaymentSession, SessionStatus, SessionView, parcel_transition};
use crate::LastMile;
use crate::orders::OrderStatus;
use ipay_engine::clock::Timestamp;
use ipay_engine::error::{EngineError, EngineResult};
use serde::Deserialize;

/// `POST /api/payment-sessions/{id}/parcel-status` body.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParcelStatusRequest {
    /// PICKED_UP | IN_DELIVERY | DELIVERED
    pub status: String,
}

impl LastMile {
    /// Moves the parcel (merchant or operator).
    pub async fn set_parcel_status(
        &self,
        who: Actor,
        id: &str,
        req: ParcelStatusRequest,
    ) -> EngineResult<SessionView> {
        let to = ParcelStatus::parse(&req.status).ok_or_else(|| {
            EngineError::invalid(
                "parameter_invalid",
                "status",
                "status must be one of PICKED_UP, IN_DELIVERY, DELIVERED",
            )
        })?;
        let s = self.ps_visible(who, id).await?;
        let (s, ()) = self
            .ps_mutate(s.id, async |s, c| {
                let released = s.status == SessionStatus::Released;
                let next = parcel_transition(s.parcel_status, to, released)?;
                if next == s.parcel_status {
                    return Ok(());
                }
                let now = self.engine.clock().now();
                let from = s.parcel_status;
                s.parcel_status = next;
                c.note(
                    s,
                    now,
                    "parcel.status_changed",
                    serde_json::json!({"from": from, "to": next}),
                );
                if next == ParcelStatus::Delivered {
                    self.ps_deliver(s, c, now).await;
                }
                Ok(())
            })
            .await?;
        Ok(self.session_view(&s))
    }

    /// Marks the parcel delivered: the event and the order's status join the change.
    pub(super) async fn ps_deliver(&self, s: &mut PaymentSession, c: &mut Change, now: Timestamp) {
        s.delivered_at = Some(now);
        let view = self.session_view(s);
        c.event(s, now, "parcel.delivered", &view);
        self.ps_order_status_ops(s, OrderStatus::Delivered, c).await;
    }
}
