//! `GET /api/events/stream` — the live event stream (Server-Sent Events) of one merchant's
//! orders and payment sessions, for dashboards.
//!
//! Browsers' `EventSource` cannot send headers, so the account JWT may come as `?token=`
//! (or as `Authorization: Bearer`). Each SSE message is `id: evt_…`, `event: <type>`,
//! `data: {id, type, created, data}`. A reconnect with `Last-Event-ID` (header, or
//! `?last_event_id=`) first replays what the client missed from the ledger, then continues live;
//! live events arrive through `HotState` pub/sub, so in cluster mode a client on any node sees
//! events committed on every node. A `:heartbeat` comment is sent whenever the stream has been
//! idle for `lastmile.sessions.heartbeat_ms` (15 s by default). Streams are bounded in number
//! and in lifetime (`stream_max_clients`, `stream_max_secs`); a client that is cut off
//! reconnects with `Last-Event-ID` and loses nothing.

use super::auth::Role;
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use ipay_engine::EngineError;
use ipay_engine::ids::MerchantId;
use ipay_lastmile::stream::{StreamItem, parse_last_event_id};
use std::convert::Infallible;
use std::time::Duration;

/// Query of `GET /api/events/stream`.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    /// The account JWT (for `EventSource`, which cannot send headers).
    pub token: Option<String>,
    /// Resume after this event id (the `Last-Event-ID` header wins when both are sent).
    pub last_event_id: Option<String>,
    /// Operators only: whose events to stream.
    pub merchant_id: Option<String>,
}

fn to_sse(item: &StreamItem) -> SseEvent {
    SseEvent::default()
        .id(item.id.to_string())
        .event(item.event_type.clone())
        .data(item.to_json())
}

fn header_token(headers: &HeaderMap) -> Option<String> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// Opens the caller's live event stream (`text/event-stream`).
#[utoipa::path(get, path = "/api/events/stream", tag = "lastmile-sessions",
    params(StreamParams, ("Last-Event-ID" = Option<String>, Header, description = "resume after this event id")),
    responses((status = 200, content_type = "text/event-stream",
               description = "SSE: `id`, `event` (session.created, session.paid, session.otp_verified, parcel.delivered), `data`; `:heartbeat` comments"),
              (status = 400, description = "`Last-Event-ID` not an event id, or from the future", body = crate::routes::ErrorEnvelope),
              (status = 401, body = crate::routes::ErrorEnvelope),
              (status = 403, body = crate::routes::ErrorEnvelope)))]
pub async fn stream(
    State(st): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<StreamParams>,
) -> Result<Response, ApiError> {
    let token = q
        .token
        .clone()
        .or_else(|| header_token(&headers))
        .ok_or_else(|| {
            ApiError::from(EngineError::Unauthenticated {
                code: "token_missing",
                message: "pass the account JWT as ?token= (or Authorization: Bearer)".into(),
            })
        })?;
    let p = st.lastmile.verify_token(&token)?;
    let merchant: MerchantId = match (p.role, p.merchant_id, q.merchant_id.as_deref()) {
        (Role::Merchant, Some(m), None) => m,
        (Role::Operator, _, Some(m)) => MerchantId::parse(m).map_err(|e| {
            ApiError::from(EngineError::invalid(
                "parameter_invalid",
                "merchant_id",
                e.to_string(),
            ))
        })?,
        (Role::Operator, _, None) => {
            return Err(EngineError::invalid(
                "parameter_missing",
                "merchant_id",
                "operators stream one merchant at a time: pass merchant_id",
            )
            .into());
        }
        (Role::Merchant, _, Some(_)) => {
            return Err(EngineError::invalid(
                "parameter_unknown",
                "merchant_id",
                "merchant_id is for operators; merchants see their own events",
            )
            .into());
        }
        _ => {
            return Err(EngineError::Forbidden {
                code: "role_forbidden",
                message: "the event stream is for merchant and operator accounts".into(),
            }
            .into());
        }
    };
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(q.last_event_id.clone());
    let last = match last.as_deref() {
        None | Some("") => None,
        Some(s) => Some(parse_last_event_id(s).ok_or_else(|| {
            ApiError::from(EngineError::invalid(
                "parameter_invalid",
                "Last-Event-ID",
                "Last-Event-ID must be an event id (evt_…) this stream sent",
            ))
        })?),
    };
    let permit = st.lastmile.stream_permit()?;
    let cfg = st.lastmile.sessions_config().clone();
    // Subscribe first, then replay: an event committed in between is in both, and the live
    // side drops what the replay already sent.
    let live = st.lastmile.stream_subscribe(merchant).await?;
    let replay = match last {
        Some(after) => st.lastmile.stream_replay(merchant, after).await?,
        None => Vec::new(),
    };
    let floor = replay.last().map(|i| i.id).or(last);
    let replayed = futures::stream::iter(
        replay
            .iter()
            .map(|i| Ok::<_, Infallible>(to_sse(i)))
            .collect::<Vec<_>>(),
    );
    let live = live.into_stream().filter_map(move |msg| {
        let item = serde_json::from_slice::<StreamItem>(&msg)
            .ok()
            .filter(|i| floor.is_none_or(|f| i.id > f));
        futures::future::ready(item.map(|i| Ok(to_sse(&i))))
    });
    let deadline = tokio::time::sleep(Duration::from_secs(cfg.stream_max_secs.max(1)));
    let events = replayed.chain(live).take_until(deadline).map(move |e| {
        // The stream holds its slot until it ends.
        let _slot = &permit;
        e
    });
    let keep_alive = KeepAlive::new()
        .interval(Duration::from_millis(cfg.heartbeat_ms.max(10)))
        .text("heartbeat");
    Ok(Sse::new(events).keep_alive(keep_alive).into_response())
}
