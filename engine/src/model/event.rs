//! Events: the append-only record of every state change, in the shape merchants receive.

use crate::clock::Timestamp;
use crate::ids::{EventId, MerchantId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// One thing that happened. `object_id` is the intent (or other object) it is about.
///
/// `data` is kept as raw JSON: the object is serialized once when the event is made, and that
/// text is stored, listed and (later) delivered without being parsed or re-encoded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub id: EventId,
    #[serde(rename = "type")]
    pub event_type: String,
    pub created: Timestamp,
    pub data: Box<RawValue>,
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
    pub data: &'a RawValue,
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
        let json = serde_json::to_string(object).unwrap_or_else(|_| "null".into());
        Event::with_json(merchant_id, livemode, event_type, at, object_id, json)
    }

    /// An event whose data is already-serialized JSON (must be valid JSON; `null` otherwise).
    pub fn with_json(
        merchant_id: MerchantId,
        livemode: bool,
        event_type: &str,
        at: Timestamp,
        object_id: String,
        json: String,
    ) -> Event {
        let data = RawValue::from_string(json)
            .unwrap_or_else(|_| RawValue::from_string("null".into()).unwrap_or_default());
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
