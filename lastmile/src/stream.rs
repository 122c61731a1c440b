//! The per-merchant live event stream behind `GET /api/events/stream` (SSE).
//!
//! Owns how a committed last-mile event becomes streamable: a durable copy in a sorted index
//! (for `Last-Event-ID` replay) written in the same batch as the event, and a live
//! notification through [`HotState`] pub/sub after the batch commits (in cluster mode that is
//! Redis, so a client connected to any node sees events committed on every node). It does not
//! own HTTP framing, heartbeats or authentication (the gateway), nor webhook delivery (the
//! outbox delivers every committed event independently of this stream).
//!
//! ```text
//! index `lm_stream`, partition `{merchant}:{YYYYMMDD}` (UTC day of the event)
//!                    sort key  = event id (ULID: time order)
//!                    value     = the event's public JSON
//! pub/sub channel    `lm:stream:{merchant}`, message = the same JSON
//! ```
//!
//! A subscriber first subscribes, then replays from the index after its last id, then forwards
//! live messages whose id is greater than the last one it sent, so nothing falls between the
//! replay and the live feed and nothing is sent twice.

use ipay_engine::clock::Timestamp;
use ipay_engine::error::{EngineError, EngineResult};
use ipay_engine::ids::{EventId, MerchantId};
use ipay_engine::model::Event;
use ipay_engine::store::{EntryRange, HotState, Ledger, Subscription, WriteOp};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Sorted index holding every streamable event.
pub const STREAM_INDEX: &str = "lm_stream";

/// How many days back a `Last-Event-ID` may point; older ids replay from this far back.
pub const MAX_REPLAY_DAYS: i64 = 7;

/// One streamable event: what an SSE client receives.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamItem {
    pub id: EventId,
    #[serde(rename = "type")]
    pub event_type: String,
    pub created: Timestamp,
    pub data: Box<RawValue>,
}

impl StreamItem {
    /// The item of a committed event.
    pub fn of(event: &Event) -> StreamItem {
        StreamItem {
            id: event.id,
            event_type: event.event_type.clone(),
            created: event.created,
            data: event.data.clone(),
        }
    }

    /// The item as JSON (what is indexed, published and sent as the SSE `data:` line).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

fn day_of(ms: i64) -> String {
    Timestamp(ms).to_datetime().format("%Y%m%d").to_string()
}

fn partition(merchant: MerchantId, ms: i64) -> String {
    format!("{merchant}:{}", day_of(ms))
}

/// The pub/sub channel of a merchant's stream.
pub fn channel(merchant: MerchantId) -> String {
    format!("lm:stream:{merchant}")
}

/// The index entry that makes `event` replayable; put it in the event's own batch.
pub fn index_op(event: &Event) -> WriteOp {
    WriteOp::PutEntry {
        index: STREAM_INDEX,
        partition: partition(event.merchant_id, event.id.timestamp_ms()),
        sort: event.id.to_string(),
        value: StreamItem::of(event).to_json().into_bytes(),
    }
}

/// Tells live subscribers (on every node) about committed events. Best effort: a lost
/// notification is recovered by the client's next reconnect with `Last-Event-ID`.
pub async fn publish(hot: &dyn HotState, events: &[Event]) {
    for e in events {
        let msg = StreamItem::of(e).to_json();
        if let Err(err) = hot.publish(&channel(e.merchant_id), msg.as_bytes()).await {
            tracing::warn!(error = %err, event = %e.id, "stream publish failed");
        }
    }
}

/// Starts listening to a merchant's live events (call before [`replay_after`]).
pub async fn subscribe(hot: &dyn HotState, merchant: MerchantId) -> EngineResult<Subscription> {
    Ok(hot.subscribe(&channel(merchant)).await?)
}

/// Up to `limit` events of `merchant` with ids greater than `after`, oldest first. Ids older
/// than [`MAX_REPLAY_DAYS`] replay from that horizon.
pub async fn replay_after(
    ledger: &dyn Ledger,
    merchant: MerchantId,
    after: EventId,
    now: Timestamp,
    limit: usize,
) -> EngineResult<Vec<StreamItem>> {
    const DAY: i64 = 86_400_000;
    check_resume_point(after, now)?;
    let horizon = now.ms() - MAX_REPLAY_DAYS * DAY;
    let mut day_ms = after.timestamp_ms().max(horizon);
    let after_s = after.to_string();
    let mut out = Vec::new();
    // One partition per day from the id's day to today: at most MAX_REPLAY_DAYS + 1 of them.
    let last_day = now.ms().div_euclid(DAY);
    while out.len() < limit && day_ms.div_euclid(DAY) <= last_day {
        let range = EntryRange::after(&after_s, limit - out.len());
        let rows = ledger
            .scan_entries(STREAM_INDEX, &partition(merchant, day_ms), &range)
            .await?;
        for (_, v) in rows {
            match serde_json::from_slice::<StreamItem>(&v) {
                Ok(item) => out.push(item),
                Err(e) => tracing::warn!(error = %e, "unreadable stream entry skipped"),
            }
        }
        day_ms += DAY;
    }
    Ok(out)
}

/// How far ahead of this node's clock a resume point may be (clock skew between nodes).
const MAX_RESUME_SKEW_MS: i64 = 60_000;

/// Refuses a resume point this stream cannot have sent: an id from the future would hide every
/// live event older than it (the stream drops what is not newer than the resume point).
pub fn check_resume_point(after: EventId, now: Timestamp) -> EngineResult<()> {
    if after.timestamp_ms() > now.ms().saturating_add(MAX_RESUME_SKEW_MS) {
        return Err(EngineError::invalid(
            "parameter_invalid",
            "Last-Event-ID",
            "Last-Event-ID names an event from the future; send an id this stream sent",
        ));
    }
    Ok(())
}

/// Parses a `Last-Event-ID` header value (an event id).
pub fn parse_last_event_id(s: &str) -> Option<EventId> {
    EventId::parse(s.trim()).ok()
}

impl crate::LastMile {
    /// Starts listening to a merchant's live events; call before [`LastMile::stream_replay`].
    ///
    /// [`LastMile::stream_replay`]: crate::LastMile::stream_replay
    pub async fn stream_subscribe(&self, merchant: MerchantId) -> EngineResult<Subscription> {
        subscribe(self.engine().hot().as_ref(), merchant).await
    }

    /// The merchant's events after `after` (at most `replay_max_events`), oldest first.
    pub async fn stream_replay(
        &self,
        merchant: MerchantId,
        after: EventId,
    ) -> EngineResult<Vec<StreamItem>> {
        let now = self.engine().clock().now();
        let max = self.sessions_config().replay_max_events.max(1);
        replay_after(self.engine().ledger().as_ref(), merchant, after, now, max).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_per_merchant_and_day() {
        let m = MerchantId::new_at(0);
        let p = partition(m, 1_700_000_000_000);
        assert_eq!(p, format!("{m}:20231114"));
        assert_eq!(channel(m), format!("lm:stream:{m}"));
    }

    #[test]
    fn resume_points_from_the_future_are_refused() {
        let now = Timestamp(1_800_000_000_000);
        let past = EventId::new_at(now.ms() - 86_400_000);
        assert!(check_resume_point(past, now).is_ok());
        let skewed = EventId::new_at(now.ms() + 30_000);
        assert!(check_resume_point(skewed, now).is_ok());
        let year_2100 = EventId::new_at(4_102_444_800_000);
        let err = check_resume_point(year_2100, now).unwrap_err();
        assert_eq!(err.code(), "parameter_invalid");
        let last_ulid = parse_last_event_id("evt_7ZZZZZZZZZZZZZZZZZZZZZZZZZ").unwrap();
        assert!(check_resume_point(last_ulid, now).is_err());
    }

    #[test]
    fn items_round_trip_through_json() {
        let m = MerchantId::new_at(0);
        let e = Event::new(
            m,
            false,
            "session.paid",
            Timestamp(1_700_000_000_000),
            "ps_x".into(),
            &serde_json::json!({"a": 1}),
        );
        let item: StreamItem = serde_json::from_str(&StreamItem::of(&e).to_json()).unwrap();
        assert_eq!(item.id, e.id);
        assert_eq!(item.event_type, "session.paid");
        assert_eq!(item.data.get(), r#"{"a":1}"#);
    }
}
