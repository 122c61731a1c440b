//! Moving the parcel (merchant or operator) through its state machine, and delivering it:
//! the `parcel.delivered` event and the order's DELIVERED status. Also the narrow hooks the
//! returns and lockers modules use (finding a session by token, id or reference, adding an
//! event, releasing at a locker, the locker code), so their rules never reach into the
//! session's storage.

use super::store::{Change, token_key};
use super::{
    Actor, ParcelStatus, PaymentSession, SESSION_BY_REF, SESSION_BY_TOKEN, SessionAction,
    SessionId, SessionStatus, SessionView, parcel_transition, session_transition,
};
use crate::LastMile;
use crate::orders::OrderStatus;
use crate::reference::IpayReference;
use ipay_engine::clock::Timestamp;
use ipay_engine::error::{EngineError, EngineResult};
use serde::{Deserialize, Serialize};

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

/// Where a locker release came from, for the session's log and `parcel.delivered`.
#[derive(Debug, Clone, Serialize)]
pub struct LockerRelease {
    pub carrier: String,
    pub locker_id: String,
}

/// What the returns and lockers modules may do with sessions: find one the way the consumer,
/// the merchant or a carrier knows it, add a public event to its log, release it at a locker.
/// The rules stay here and in `driver.rs`; those modules only call these.
impl LastMile {
    /// The session of a pay token (404 otherwise).
    pub(crate) async fn session_by_token(&self, token: &str) -> EngineResult<PaymentSession> {
        let nf = || EngineError::not_found("payment session", "(token)");
        if token.len() > 100 {
            return Err(nf());
        }
        let s = self
            .ps_lookup(SESSION_BY_TOKEN, &token_key(token))
            .await?
            .ok_or_else(nf)?;
        self.settle_from_intent(s).await
    }

    /// The session `who` may see (404 otherwise).
    pub(crate) async fn session_for(&self, who: Actor, id: &str) -> EngineResult<PaymentSession> {
        let s = self.ps_visible(who, id).await?;
        self.settle_from_intent(s).await
    }

    /// The session of an 18-digit reference, if any.
    pub(crate) async fn session_by_reference(
        &self,
        r: &IpayReference,
    ) -> EngineResult<Option<PaymentSession>> {
        match self.ps_lookup(SESSION_BY_REF, &r.to_string()).await? {
            Some(s) => Ok(Some(self.settle_from_intent(s).await?)),
            None => Ok(None),
        }
    }

    /// Adds a public event about the session (webhooks, stream, its log) after `check` passes
    /// on the held session.
    pub(crate) async fn session_event(
        &self,
        id: SessionId,
        event_type: &str,
        data: serde_json::Value,
        check: impl FnOnce(&PaymentSession) -> EngineResult<()>,
    ) -> EngineResult<PaymentSession> {
        let (s, ()) = self
            .ps_mutate(id, async |s, c| {
                check(s)?;
                let now = self.engine.clock().now();
                c.event(s, now, event_type, &data);
                Ok(())
            })
            .await?;
        Ok(s)
    }

    /// Releases a paid parcel from a locker: the code was right, so it counts as the OTP at
    /// the door (`session.otp_verified`), and the parcel is delivered (`parcel.delivered`).
    pub(crate) async fn release_via_locker(
        &self,
        id: SessionId,
        via: &LockerRelease,
    ) -> EngineResult<PaymentSession> {
        let (s, ()) = self
            .ps_mutate(id, async |s, c| {
                let now = self.engine.clock().now();
                s.status = session_transition(s.status, SessionAction::ReleaseWithOtp)?;
                s.released_at = Some(now);
                c.note(s, now, "locker.picked_up", serde_json::json!(via));
                let view = self.session_view(s);
                c.event(s, now, "session.otp_verified", &view);
                let from = s.parcel_status;
                s.parcel_status =
                    parcel_transition(ParcelStatus::InDelivery, ParcelStatus::Delivered, true)?;
                c.note(
                    s,
                    now,
                    "parcel.status_changed",
                    serde_json::json!({"from": from, "to": s.parcel_status, "via": "locker"}),
                );
                self.ps_deliver(s, c, now).await;
                Ok(())
            })
            .await?;
        Ok(s)
    }
}

impl LastMile {
    /// The pickup code of a paid session's parcel in locker `locker_id`: the same derivation
    /// as the door OTP (`crate::otp`, the merchant's key), with `L:{paid intent}:{locker}` in
    /// place of the payment id, so it differs from the door OTP and from any other locker's
    /// code. `None` until the session is paid. Never stored.
    pub(crate) async fn locker_code(
        &self,
        s: &PaymentSession,
        locker_id: &str,
    ) -> EngineResult<Option<crate::otp::Otp>> {
        let Some(pi) = s.paid_intent else {
            return Ok(None);
        };
        let key = self.ps_otp_key(s.merchant_id).await?;
        Ok(Some(
            key.derive(&s.reference, &format!("L:{pi}:{locker_id}")),
        ))
    }
}
