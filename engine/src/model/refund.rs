//! Refunds: money returned against a succeeded payment intent.

use crate::clock::Timestamp;
use crate::ids::{MerchantId, PaymentIntentId, RefundId};
use crate::model::event::Event;
use crate::money::Money;
use serde::{Deserialize, Serialize};

/// Refund outcome. The sandbox channel settles refunds at once; real channels may report later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Pending,
    Succeeded,
    Failed,
}

/// A refund of part or all of a payment intent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Refund {
    #[schema(value_type = String, example = "re_01J7XZ1A2B3C4D5E6F7G8H9IKM")]
    pub id: RefundId,
    #[schema(value_type = String)]
    pub payment_intent: PaymentIntentId,
    pub amount: Money,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub status: RefundStatus,
    pub livemode: bool,
    #[schema(value_type = String)]
    pub merchant_id: MerchantId,
    #[schema(value_type = String, format = DateTime)]
    pub created: Timestamp,
}

impl Refund {
    /// `refund.succeeded`, whose data carries `refunded_payment_intent` as the spec says.
    pub fn succeeded_event(&self, now: Timestamp) -> Event {
        #[derive(Serialize)]
        struct Data<'a> {
            #[serde(flatten)]
            refund: &'a Refund,
            refunded_payment_intent: &'a PaymentIntentId,
        }
        let data = Data {
            refund: self,
            refunded_payment_intent: &self.payment_intent,
        };
        Event::new(
            self.merchant_id,
            self.livemode,
            "refund.succeeded",
            now,
            self.payment_intent.to_string(),
            &data,
        )
    }
}
