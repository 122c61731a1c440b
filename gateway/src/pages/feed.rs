//! The dashboard's live feed for merchants logged in with an API key: the engine's events of
//! the key's merchant and mode, read from the ledger every [`POLL`] and sent as Server-Sent
//! Events. Reading durable data (not a node's memory) means a browser on any node sees events
//! committed on every node. Merchants logged in with the last-mile account get the last-mile
//! stream instead (`/api/events/stream`, push-based); this module does not serve them.
//!
//! Bounds: each poll reads the newest [`PAGE`] events (a burst larger than that within one poll
//! shows only its newest part; the transactions table and `/v1/events` have everything), and a
//! stream ends after `lastmile.sessions.stream_max_secs` like the last-mile stream (the
//! browser's `EventSource` reconnects by itself), with the same heartbeat.

use crate::app::AppState;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use ipay_engine::AuthContext;
use ipay_engine::ids::EventId;
use ipay_engine::model::Event;
use std::convert::Infallible;
use std::time::{Duration, Instant};

/// How often the ledger is read.
pub const POLL: Duration = Duration::from_millis(1_000);
/// Events read per poll.
pub const PAGE: usize = 50;

struct Cursor {
    st: AppState,
    ctx: AuthContext,
    /// The newest event already seen; `None` until the first read set the starting point.
    last: Option<Option<EventId>>,
    started: Instant,
    lifetime: Duration,
}

fn to_sse(e: &Event) -> SseEvent {
    SseEvent::default()
        .id(e.id.to_string())
        .event(e.event_type.clone())
        .data(serde_json::to_string(&e.view()).unwrap_or_default())
}

/// Events newer than the cursor, oldest first; moves the cursor. The first read only sets it
/// and answers a `:ready` comment.
async fn next_batch(c: &mut Cursor) -> Vec<Result<SseEvent, Infallible>> {
    let Ok((page, _)) =
        c.st.engine
            .list_events(&c.ctx, None, None, Some(PAGE), None)
            .await
    else {
        return vec![];
    };
    let newest = page.data.first().map(|e| e.id);
    let Some(last) = c.last else {
        // Tells the client (and the tests) that everything from now on will be streamed.
        c.last = Some(newest);
        return vec![Ok(SseEvent::default().comment("ready"))];
    };
    let fresh: Vec<_> = page
        .data
        .iter()
        .filter(|e| last.is_none_or(|l| e.id > l))
        .rev()
        .map(|e| Ok(to_sse(e)))
        .collect();
    if !fresh.is_empty() {
        c.last = Some(newest);
    }
    fresh
}

/// The SSE response.
pub fn stream(st: AppState, ctx: AuthContext) -> Response {
    let cfg = st.lastmile.config().sessions.clone();
    let cursor = Cursor {
        st,
        ctx,
        last: None,
        started: Instant::now(),
        lifetime: Duration::from_secs(cfg.stream_max_secs.max(1)),
    };
    let events = futures::stream::unfold(cursor, |mut c| async move {
        if c.started.elapsed() > c.lifetime {
            return None;
        }
        if c.last.is_some() {
            tokio::time::sleep(POLL).await;
        }
        let batch = next_batch(&mut c).await;
        Some((futures::stream::iter(batch), c))
    })
    .flatten();
    let keep_alive = KeepAlive::new().interval(Duration::from_millis(cfg.heartbeat_ms.max(10)));
    Sse::new(events).keep_alive(keep_alive).into_response()
}
