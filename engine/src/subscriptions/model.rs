//! The subscription record, its status table (one transition function) and the billing
//! period arithmetic. No I/O here: [`super::Subscriptions`] loads, decides with these and
//! commits.

use crate::clock::Timestamp;
use crate::error::{EngineError, EngineResult};
use crate::ids::{MerchantId, PaymentIntentId, ServiceId, SubscriptionId};
use crate::model::service::Interval;
use crate::money::Money;
use chrono::{Days, Months};
use serde::{Deserialize, Serialize};

/// Where a subscription is in its life.
///
/// | from | action | to |
/// |---|---|---|
/// | incomplete | first payment succeeded (`Activate`) | active |
/// | incomplete | first payment failed / expired / cancelled (`Expire`) | incomplete_expired |
/// | active, past_due | renewal paid (`Renew`) | active |
/// | active, past_due | renewal attempt failed, attempts left (`MissRenewal`) | past_due |
/// | incomplete, active, past_due | cancelled now, or at period end, or out of attempts (`End`) | cancelled |
///
/// `cancelled` and `incomplete_expired` are final. Asking to cancel an `active` subscription
/// only sets `cancel_at_period_end` (no status change); the period end then applies `End`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    /// Created; the first payment is open.
    Incomplete,
    /// The first payment never succeeded. Final.
    IncompleteExpired,
    /// Paid for the current period.
    Active,
    /// A renewal payment failed; retries remain. Access continues until they run out.
    PastDue,
    /// Ended; access revoked (or never granted). Final.
    Cancelled,
}

impl SubscriptionStatus {
    /// Wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            SubscriptionStatus::Incomplete => "incomplete",
            SubscriptionStatus::IncompleteExpired => "incomplete_expired",
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::PastDue => "past_due",
            SubscriptionStatus::Cancelled => "cancelled",
        }
    }

    /// Parses the wire name (list filters).
    pub fn parse(s: &str) -> Option<SubscriptionStatus> {
        [
            SubscriptionStatus::Incomplete,
            SubscriptionStatus::IncompleteExpired,
            SubscriptionStatus::Active,
            SubscriptionStatus::PastDue,
            SubscriptionStatus::Cancelled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// What moves a subscription (see the table on [`SubscriptionStatus`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionAction {
    Activate,
    Expire,
    Renew,
    MissRenewal,
    End,
}

impl SubscriptionAction {
    fn verb(&self) -> &'static str {
        match self {
            SubscriptionAction::Activate => "activate",
            SubscriptionAction::Expire => "expire",
            SubscriptionAction::Renew => "renew",
            SubscriptionAction::MissRenewal => "miss a renewal of",
            SubscriptionAction::End => "cancel",
        }
    }
}

/// The subscription status table; illegal moves are 409 `invalid_state_transition`.
pub fn subscription_transition(
    from: SubscriptionStatus,
    action: SubscriptionAction,
) -> EngineResult<SubscriptionStatus> {
    use SubscriptionAction as A;
    use SubscriptionStatus as S;
    match (from, action) {
        (S::Incomplete, A::Activate) => Ok(S::Active),
        (S::Incomplete, A::Expire) => Ok(S::IncompleteExpired),
        (S::Active | S::PastDue, A::Renew) => Ok(S::Active),
        (S::Active | S::PastDue, A::MissRenewal) => Ok(S::PastDue),
        (S::Incomplete | S::Active | S::PastDue, A::End) => Ok(S::Cancelled),
        (from, action) => Err(EngineError::InvalidStateTransition {
            object: "subscription",
            from: from.as_str().to_string(),
            action: action.verb().to_string(),
        }),
    }
}

/// A stored subscription; also its public form and the `data` of its events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Subscription {
    #[schema(value_type = String, example = "sub_01J7XZ1A2B3C4D5E6F7G8H9IKM")]
    pub id: SubscriptionId,
    #[schema(value_type = String)]
    pub service_id: ServiceId,
    /// The manifest plan subscribed to (`pricing.subscription[].plan_id`).
    pub plan_id: String,
    /// Price of one period, copied from the plan at subscription time (later plan edits do
    /// not reprice existing subscribers).
    pub amount: Money,
    #[schema(value_type = String, example = "monthly")]
    pub interval: Interval,
    /// The channel every payment of this subscription is collected through.
    pub channel: String,
    /// The merchant's reference for the subscriber.
    #[serde(default)]
    pub customer: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub status: SubscriptionStatus,
    /// Set by a cancellation of an active subscription: it ends when the period ends.
    pub cancel_at_period_end: bool,
    /// Start of the first paid period; every period boundary is computed from it, so monthly
    /// periods that start on the 31st do not drift.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub billing_anchor: Option<Timestamp>,
    /// Periods paid so far.
    pub periods_paid: u32,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub current_period_start: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub current_period_end: Option<Timestamp>,
    /// When the next renewal payment is requested (`null` once no renewal will happen).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_billing_date: Option<Timestamp>,
    /// The most recent payment intent of this subscription.
    #[schema(value_type = Option<String>)]
    pub latest_intent: Option<PaymentIntentId>,
    /// The payment whose outcome is awaited (first payment or a renewal attempt).
    #[schema(value_type = Option<String>)]
    pub open_intent: Option<PaymentIntentId>,
    /// Failed attempts at the current renewal.
    pub renewal_attempts: u32,
    /// When the engine looks at this subscription next (its place in the due index).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub due_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub cancelled_at: Option<Timestamp>,
    /// `requested` (by the merchant) or `payment_failed` (renewal attempts ran out).
    pub cancellation_reason: Option<String>,
    /// When access ended (`revocation.succeeded`).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<Timestamp>,
    pub livemode: bool,
    #[schema(value_type = String)]
    pub merchant_id: MerchantId,
    #[schema(value_type = String, format = DateTime)]
    pub created: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated: Timestamp,
}

impl Subscription {
    /// Applies `action` through the status table.
    pub fn apply(&mut self, action: SubscriptionAction) -> EngineResult<()> {
        self.status = subscription_transition(self.status, action)?;
        Ok(())
    }

    /// End of period `n` (1-based): the anchor plus `n` intervals.
    pub fn period_end(&self, n: u32) -> Option<Timestamp> {
        period_boundary(self.billing_anchor?, self.interval, n)
    }

    /// Sets the current period to period `periods_paid` and schedules its renewal.
    pub(crate) fn set_current_period(&mut self) {
        let n = self.periods_paid;
        self.current_period_start = if n <= 1 {
            self.billing_anchor
        } else {
            self.period_end(n - 1)
        };
        self.current_period_end = self.period_end(n);
        self.next_billing_date = self.current_period_end;
        self.due_at = self.current_period_end;
    }
}

/// `anchor` plus `n` intervals; calendar months for monthly and yearly plans (the day is
/// clamped to the month's last day: Jan 31 + 1 month = Feb 28/29, + 2 months = Mar 31).
pub fn period_boundary(anchor: Timestamp, interval: Interval, n: u32) -> Option<Timestamp> {
    let start = anchor.to_datetime();
    let end = match interval {
        Interval::Daily => start.checked_add_days(Days::new(u64::from(n)))?,
        Interval::Weekly => start.checked_add_days(Days::new(7 * u64::from(n)))?,
        Interval::Monthly => start.checked_add_months(Months::new(n))?,
        Interval::Yearly => start.checked_add_months(Months::new(n.checked_mul(12)?))?,
    };
    Some(Timestamp(end.timestamp_millis()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table_allows_only_listed_moves() {
        use SubscriptionAction as A;
        use SubscriptionStatus as S;
        assert_eq!(
            subscription_transition(S::Incomplete, A::Activate).unwrap(),
            S::Active
        );
        assert_eq!(
            subscription_transition(S::PastDue, A::Renew).unwrap(),
            S::Active
        );
        assert_eq!(
            subscription_transition(S::Active, A::MissRenewal).unwrap(),
            S::PastDue
        );
        assert!(subscription_transition(S::Cancelled, A::End).is_err());
        assert!(subscription_transition(S::Active, A::Activate).is_err());
        assert!(subscription_transition(S::IncompleteExpired, A::Renew).is_err());
    }

    #[test]
    fn monthly_periods_are_counted_from_the_anchor_without_drift() {
        let anchor = Timestamp::parse_flexible("2026-01-31T10:00:00Z").unwrap();
        let at = |n| {
            period_boundary(anchor, Interval::Monthly, n)
                .unwrap()
                .to_string()
        };
        assert_eq!(at(1), "2026-02-28T10:00:00Z");
        assert_eq!(at(2), "2026-03-31T10:00:00Z");
        assert_eq!(at(12), "2027-01-31T10:00:00Z");
        let weekly = period_boundary(anchor, Interval::Weekly, 2).unwrap();
        assert_eq!(weekly.to_string(), "2026-02-14T10:00:00Z");
        let yearly = period_boundary(anchor, Interval::Yearly, 1).unwrap();
        assert_eq!(yearly.to_string(), "2027-01-31T10:00:00Z");
    }
}
