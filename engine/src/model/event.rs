//! Events: the append-only record of every state change, in the shape merchants receive.

use crate::clock::Timestamp;
use crate::ids::{EventId, MerchantId};
use serde::{Deserialize, Serialize};

/// One thing that happened. `object_id` is the intent (or other object) it is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: EventId,
    #[serde(rename = "type")]
    pub event_type: String,
    pub created: Timestamp,
    pub data: serde_json::Value,
    pub livemode: bool,
    pub merchant_id: MerchantId,
    pub object_id: String,
}

/// The public form: `id`, `type`, `created`, `data` (as in the spec's webhook payload) plus
/// `livemode`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventView<'a> {
    #[schema(value_type = String, example = "evt_01J7XZ1A2B3C4D5E6F7G8H9IKM")]
    pub id: &'a EventId,
    #[serde(rename = "type")]
    #[schema(example = "payment_intent.succeeded")]
    pub event_type: &'a str,
    #[schema(value_type = String, format = DateTime)]
    pub created: &'a Timestamp,
    #[schema(value_type = Object)]
    pub data: &'a serde_json::Value,
    pub livemode: bool,
}

impl Event {
    /// An event whose data is the serialized object.
    pub fn new<T: Serialize>(
        merchant_id: MerchantId,
        livemode: bool,
        event_type: &str,
        at: Timestamp,
        object_id: String,
        object: &T,
    ) -> Event {
        let data = serde_json::to_value(object).unwrap_or_default();
        Event::with_data(merchant_id, livemode, event_type, at, object_id, data)
    }

    /// An event with explicit data.
    pub fn with_data(
        merchant_id: MerchantId,
        livemode: bool,
        event_type: &str,
        at: Timestamp,
        object_id: String,
        data: serde_json::Value,
    ) -> Event {
        Event {
            id: EventId::new_at(at.ms()),
            event_type: event_type.to_string(),
            created: at,
            data,
            livemode,
            merchant_id,
            object_id,
        }
    }

    /// The public view.
    pub fn view(&self) -> EventView<'_> {
        EventView {
            id: &self.id,
            event_type: &self.event_type,
            created: &self.created,
            data: &self.data,
            livemode: self.livemode,
        }
    }
}
