//! Events as callers read them: listing (newest first, by type or object) and fetching one.
//!
//! Events are written by the code whose change they record, in the same batch (intents and
//! refunds by their payment session, callback anomalies by [`crate::callbacks`]); delivering
//! them to merchants is [`crate::webhooks`]' job.

use crate::auth::AuthContext;
use crate::config::Limits;
use crate::error::{EngineError, EngineResult};
use crate::ids::EventId;
use crate::model::{Event, Permission};
use crate::paging::page;
use crate::store::{EventQuery, Ledger, Page, PageRequest};
use std::sync::Arc;

/// Longest `type` or `object_id` filter, characters.
const MAX_FILTER_LEN: usize = 100;

/// Event reads of one engine.
pub(crate) struct Events {
    ledger: Arc<dyn Ledger>,
    limits: Limits,
}

impl Events {
    /// Event reads on this ledger.
    pub(crate) fn new(ledger: Arc<dyn Ledger>, limits: Limits) -> Self {
        Events { ledger, limits }
    }

    /// Events, newest first, optionally of one type or about one object.
    pub(crate) async fn list(
        &self,
        ctx: &AuthContext,
        event_type: Option<String>,
        object_id: Option<String>,
        limit: Option<usize>,
        offset: Option<usize>,
    ) -> EngineResult<(Page<Event>, PageRequest)> {
        ctx.require(Permission::EventsRead)?;
        let p = page(&self.limits, limit, offset)?;
        for (name, v) in [("type", &event_type), ("object_id", &object_id)] {
            if v.as_ref().is_some_and(|t| t.len() > MAX_FILTER_LEN) {
                return Err(EngineError::invalid(
                    "parameter_invalid",
                    name,
                    format!("{name} is limited to 100 characters"),
                ));
            }
        }
        let q = EventQuery {
            event_type,
            object_id,
            page: p,
        };
        Ok((
            self.ledger
                .list_events(ctx.merchant_id, ctx.livemode, &q)
                .await?,
            p,
        ))
    }

    /// One event.
    pub(crate) async fn get(&self, ctx: &AuthContext, id: &str) -> EngineResult<Event> {
        ctx.require(Permission::EventsRead)?;
        let eid = EventId::parse(id).map_err(|_| EngineError::not_found("event", id))?;
        match self.ledger.get_event(eid).await? {
            Some(e) if ctx.owns(e.merchant_id, e.livemode) => Ok(e),
            _ => Err(EngineError::not_found("event", id)),
        }
    }
}
