//! The return state machine: one enum, one transition function, every illegal move a 409.

use ipay_engine::error::{EngineError, EngineResult};
use serde::{Deserialize, Serialize};

/// Where a return is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReturnStatus {
    /// Opened by the consumer or the merchant; no label yet.
    Opened,
    /// A Sendcloud return label exists.
    LabelCreated,
    /// The carrier has the parcel.
    InTransit,
    /// Delivered back to the merchant; the refund is due.
    Received,
    /// The refund was made but the PSP (or, for PromptPay, the merchant) has not confirmed it.
    RefundPending,
    /// Final: the money went back (`return.refunded`).
    Refunded,
    /// The PSP refused the refund; the merchant may retry.
    RefundFailed,
    /// Final: the merchant refused the return.
    Rejected,
}

impl ReturnStatus {
    /// Wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReturnStatus::Opened => "opened",
            ReturnStatus::LabelCreated => "label_created",
            ReturnStatus::InTransit => "in_transit",
            ReturnStatus::Received => "received",
            ReturnStatus::RefundPending => "refund_pending",
            ReturnStatus::Refunded => "refunded",
            ReturnStatus::RefundFailed => "refund_failed",
            ReturnStatus::Rejected => "rejected",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<ReturnStatus> {
        serde_json::from_value(serde_json::Value::String(s.trim().to_ascii_lowercase())).ok()
    }
}

/// What can happen to a return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnAction {
    CreateLabel,
    CarrierInTransit,
    CarrierDelivered,
    Reject,
    RefundStarted,
    RefundSucceeded,
    RefundFailed,
}

impl ReturnAction {
    fn verb(&self) -> &'static str {
        match self {
            ReturnAction::CreateLabel => "create a label",
            ReturnAction::CarrierInTransit => "mark it in transit",
            ReturnAction::CarrierDelivered => "mark it received",
            ReturnAction::Reject => "reject it",
            ReturnAction::RefundStarted => "refund it",
            ReturnAction::RefundSucceeded => "record a refund",
            ReturnAction::RefundFailed => "record a failed refund",
        }
    }
}

/// The return state machine, the one place its moves are decided.
///
/// | from           | CreateLabel   | CarrierInTransit | CarrierDelivered | Reject   | RefundStarted  | RefundSucceeded | RefundFailed  |
/// |----------------|---------------|------------------|------------------|----------|----------------|-----------------|---------------|
/// | opened         | label_created | –                | –                | rejected | –              | –               | –             |
/// | label_created  | –             | in_transit       | received         | rejected | –              | –               | –             |
/// | in_transit     | –             | in_transit       | received         | rejected | –              | –               | –             |
/// | received       | –             | –                | –                | rejected | refund_pending | refunded        | refund_failed |
/// | refund_pending | –             | –                | –                | –        | –              | refunded        | refund_failed |
/// | refund_failed  | –             | –                | –                | –        | refund_pending | refunded        | refund_failed |
/// | refunded       | –             | –                | –                | –        | –              | –               | –             |
/// | rejected       | –             | –                | –                | –        | –              | –               | –             |
pub fn return_transition(from: ReturnStatus, action: ReturnAction) -> EngineResult<ReturnStatus> {
    use ReturnAction as A;
    use ReturnStatus as S;
    match (from, action) {
        (S::Opened, A::CreateLabel) => Ok(S::LabelCreated),
        (S::LabelCreated | S::InTransit, A::CarrierInTransit) => Ok(S::InTransit),
        (S::LabelCreated | S::InTransit, A::CarrierDelivered) => Ok(S::Received),
        (S::Opened | S::LabelCreated | S::InTransit | S::Received, A::Reject) => Ok(S::Rejected),
        (S::Received | S::RefundFailed, A::RefundStarted) => Ok(S::RefundPending),
        (S::Received | S::RefundPending | S::RefundFailed, A::RefundSucceeded) => Ok(S::Refunded),
        (S::Received | S::RefundPending | S::RefundFailed, A::RefundFailed) => Ok(S::RefundFailed),
        (from, action) => Err(EngineError::InvalidStateTransition {
            object: "return",
            from: from.as_str().into(),
            action: action.verb().into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_allows_only_its_moves() {
        use ReturnAction as A;
        use ReturnStatus as S;
        let all_s = [
            S::Opened,
            S::LabelCreated,
            S::InTransit,
            S::Received,
            S::RefundPending,
            S::Refunded,
            S::RefundFailed,
            S::Rejected,
        ];
        let all_a = [
            A::CreateLabel,
            A::CarrierInTransit,
            A::CarrierDelivered,
            A::Reject,
            A::RefundStarted,
            A::RefundSucceeded,
            A::RefundFailed,
        ];
        let allowed = [
            (S::Opened, A::CreateLabel, S::LabelCreated),
            (S::LabelCreated, A::CarrierInTransit, S::InTransit),
            (S::InTransit, A::CarrierInTransit, S::InTransit),
            (S::LabelCreated, A::CarrierDelivered, S::Received),
            (S::InTransit, A::CarrierDelivered, S::Received),
            (S::Opened, A::Reject, S::Rejected),
            (S::LabelCreated, A::Reject, S::Rejected),
            (S::InTransit, A::Reject, S::Rejected),
            (S::Received, A::Reject, S::Rejected),
            (S::Received, A::RefundStarted, S::RefundPending),
            (S::RefundFailed, A::RefundStarted, S::RefundPending),
            (S::Received, A::RefundSucceeded, S::Refunded),
            (S::RefundPending, A::RefundSucceeded, S::Refunded),
            (S::RefundFailed, A::RefundSucceeded, S::Refunded),
            (S::Received, A::RefundFailed, S::RefundFailed),
            (S::RefundPending, A::RefundFailed, S::RefundFailed),
            (S::RefundFailed, A::RefundFailed, S::RefundFailed),
        ];
        for s in all_s {
            for a in all_a {
                let want = allowed
                    .iter()
                    .find(|(f, x, _)| *f == s && *x == a)
                    .map(|t| t.2);
                match (return_transition(s, a), want) {
                    (Ok(got), Some(w)) => assert_eq!(got, w),
                    (Err(e), None) => assert_eq!(e.code(), "invalid_state_transition"),
                    (got, want) => panic!("{s:?} {a:?}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    #[test]
    fn wire_names_round_trip() {
        for s in ["opened", "label_created", "refund_pending", "rejected"] {
            assert_eq!(ReturnStatus::parse(s).map(|x| x.as_str()), Some(s));
        }
        assert_eq!(ReturnStatus::parse("nope"), None);
    }
}
