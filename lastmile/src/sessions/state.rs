//! The two state machines of a payment session, each with its one transition function: where
//! the payment stands ([`session_transition`]) and where the parcel is ([`parcel_transition`]).
//! Pure rules, no storage: the callers apply the answer to the record and log it.

use ipay_engine::error::{EngineError, EngineResult};
use serde::{Deserialize, Serialize};

/// Where a session's payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SessionStatus {
    /// Reference and pay link exist; no payment started (or the last one failed).
    Created,
    /// The consumer started a payment; waiting for the channel.
    PaymentPending,
    /// Paid: the OTP is derivable and shown to the consumer.
    Paid,
    /// The driver verified the OTP at the door; the parcel was handed over.
    Released,
}

impl SessionStatus {
    /// Wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            SessionStatus::Created => "CREATED",
            SessionStatus::PaymentPending => "PAYMENT_PENDING",
            SessionStatus::Paid => "PAID",
            SessionStatus::Released => "RELEASED",
        }
    }

    /// Parses a wire name (any case).
    pub fn parse(s: &str) -> Option<SessionStatus> {
        serde_json::from_value(serde_json::Value::String(s.trim().to_ascii_uppercase())).ok()
    }
}

/// What can happen to a session's payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAction {
    StartPayment,
    PaymentFailed,
    PaymentSucceeded,
    ReleaseWithOtp,
}

impl SessionAction {
    fn verb(&self) -> &'static str {
        match self {
            SessionAction::StartPayment => "start a payment",
            SessionAction::PaymentFailed => "record a failed payment",
            SessionAction::PaymentSucceeded => "record a payment",
            SessionAction::ReleaseWithOtp => "release the parcel",
        }
    }
}

/// The session state machine, the one place its moves are decided.
///
/// | from            | StartPayment    | PaymentFailed | PaymentSucceeded | ReleaseWithOtp |
/// |-----------------|-----------------|---------------|------------------|----------------|
/// | CREATED         | PAYMENT_PENDING | –             | –                | –              |
/// | PAYMENT_PENDING | PAYMENT_PENDING | CREATED       | PAID             | –              |
/// | PAID            | –               | –             | –                | RELEASED       |
/// | RELEASED        | –               | –             | –                | –              |
pub fn session_transition(
    from: SessionStatus,
    action: SessionAction,
) -> EngineResult<SessionStatus> {
    use SessionAction as A;
    use SessionStatus as S;
    match (from, action) {
        (S::Created | S::PaymentPending, A::StartPayment) => Ok(S::PaymentPending),
        (S::PaymentPending, A::PaymentFailed) => Ok(S::Created),
        (S::PaymentPending, A::PaymentSucceeded) => Ok(S::Paid),
        (S::Paid, A::ReleaseWithOtp) => Ok(S::Released),
        (from, action) => Err(EngineError::InvalidStateTransition {
            object: "payment session",
            from: from.as_str().into(),
            action: action.verb().into(),
        }),
    }
}

/// Where the parcel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ParcelStatus {
    /// Label made, not yet with the carrier.
    AwaitingPickup,
    PickedUp,
    InDelivery,
    /// Final.
    Delivered,
}

impl ParcelStatus {
    /// Wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            ParcelStatus::AwaitingPickup => "AWAITING_PICKUP",
            ParcelStatus::PickedUp => "PICKED_UP",
            ParcelStatus::InDelivery => "IN_DELIVERY",
            ParcelStatus::Delivered => "DELIVERED",
        }
    }

    /// Parses a wire name (any case).
    pub fn parse(s: &str) -> Option<ParcelStatus> {
        serde_json::from_value(serde_json::Value::String(s.trim().to_ascii_uppercase())).ok()
    }
}

/// The parcel state machine, the one place its moves are decided. `released` says whether the
/// driver has verified the consumer's OTP: pay-on-delivery parcels are only delivered after.
///
/// AWAITING_PICKUP → PICKED_UP → IN_DELIVERY → DELIVERED (only once released). Asking for the
/// current state again is accepted and changes nothing; every other move is a 409.
pub fn parcel_transition(
    from: ParcelStatus,
    to: ParcelStatus,
    released: bool,
) -> EngineResult<ParcelStatus> {
    use ParcelStatus as P;
    match (from, to) {
        (a, b) if a == b => Ok(a),
        (P::AwaitingPickup, P::PickedUp) | (P::PickedUp, P::InDelivery) => Ok(to),
        (P::InDelivery, P::Delivered) if released => Ok(to),
        (P::InDelivery, P::Delivered) => Err(EngineError::Conflict {
            code: "otp_not_verified",
            message: "a pay-on-delivery parcel is delivered when the driver verifies the \
                      consumer's OTP (POST /api/driver/verify-otp)"
                .into(),
        }),
        (from, to) => Err(EngineError::InvalidStateTransition {
            object: "parcel",
            from: from.as_str().into(),
            action: format!("move it to {}", to.as_str()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parcel_moves_forward_one_step_at_a_time() {
        use ParcelStatus as P;
        assert_eq!(
            parcel_transition(P::AwaitingPickup, P::PickedUp, false).unwrap(),
            P::PickedUp
        );
        assert_eq!(
            parcel_transition(P::PickedUp, P::InDelivery, false).unwrap(),
            P::InDelivery
        );
        assert_eq!(
            parcel_transition(P::InDelivery, P::Delivered, true).unwrap(),
            P::Delivered
        );
        assert_eq!(
            parcel_transition(P::InDelivery, P::InDelivery, false).unwrap(),
            P::InDelivery
        );
        for (a, b) in [
            (P::AwaitingPickup, P::InDelivery),
            (P::AwaitingPickup, P::Delivered),
            (P::PickedUp, P::Delivered),
            (P::InDelivery, P::PickedUp),
            (P::Delivered, P::InDelivery),
            (P::PickedUp, P::AwaitingPickup),
        ] {
            let e = parcel_transition(a, b, true).unwrap_err();
            assert_eq!(e.kind(), ipay_engine::ErrorKind::Conflict, "{a:?} -> {b:?}");
        }
        let e = parcel_transition(P::InDelivery, P::Delivered, false).unwrap_err();
        assert_eq!(e.code(), "otp_not_verified");
    }

    #[test]
    fn session_table_allows_only_its_moves() {
        use SessionAction as A;
        use SessionStatus as S;
        let all_s = [S::Created, S::PaymentPending, S::Paid, S::Released];
        let all_a = [
            A::StartPayment,
            A::PaymentFailed,
            A::PaymentSucceeded,
            A::ReleaseWithOtp,
        ];
        let allowed = [
            (S::Created, A::StartPayment, S::PaymentPending),
            (S::PaymentPending, A::StartPayment, S::PaymentPending),
            (S::PaymentPending, A::PaymentFailed, S::Created),
            (S::PaymentPending, A::PaymentSucceeded, S::Paid),
            (S::Paid, A::ReleaseWithOtp, S::Released),
        ];
        for s in all_s {
            for a in all_a {
                let want = allowed
                    .iter()
                    .find(|(f, x, _)| *f == s && *x == a)
                    .map(|t| t.2);
                match (session_transition(s, a), want) {
                    (Ok(got), Some(w)) => assert_eq!(got, w),
                    (Err(e), None) => assert_eq!(e.code(), "invalid_state_transition"),
                    (got, want) => panic!("{s:?} {a:?}: got {got:?}, want {want:?}"),
                }
            }
        }
    }
}
