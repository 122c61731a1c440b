//! What merchants can do with webhooks through the API: manage endpoints (create, list, delete,
//! rotate the secret, enable again), read attempt logs and dropped deliveries, replay one event,
//! and recover a time window for one endpoint. Validation and authorization live here; the
//! gateway only maps these calls to HTTP.

use super::Webhooks;
use super::model::{
    self, AttemptLog, AttemptStatus, DELIVERY, DROPPED, DUE, Delivery, DeliveryStatus, ENDPOINT,
    ENDPOINTS_BY_MERCHANT, EVENTS_BY_DAY, Endpoint, EndpointStatus, EndpointView,
    EndpointWithSecret, LOGS, LOGS_BY_EVENT, MANIFEST_DISABLED,
};
use super::outbox::DayEntry;
use super::resolve::{self, Target};
use crate::AuthContext;
use crate::clock::Timestamp;
use crate::error::{EngineError, EngineResult};
use crate::ids::EventId;
use crate::model::{Event, Permission, Secret};
use crate::store::{EntryRange, Page, PageRequest, WriteBatch, WriteOp};
use serde::{Deserialize, Serialize};
use std::ops::Bound;
use std::sync::Arc;

/// Longest accepted description.
const MAX_DESCRIPTION_LEN: usize = 500;
/// Most event types in an endpoint's filter.
const MAX_EVENT_TYPES: usize = 50;
/// Days of logs a listing looks back over.
const LOG_DAYS: i64 = 31;
/// Most log rows one listing reads (filters are applied to what was read).
const MAX_LOG_ROWS_READ: usize = 5_000;
/// Ops per batch when a replay or recovery writes many deliveries.
const OPS_PER_BATCH: usize = 1_000;

/// `POST /v1/webhook-endpoints` body.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointInput {
    /// `https://…` (http to loopback only with `[webhooks] allow_insecure_loopback`).
    pub url: String,
    /// Event types to receive; default `["*"]` (everything).
    pub enabled_events: Option<Vec<String>>,
    pub description: Option<String>,
}

/// `POST /v1/webhook-endpoints/{id}/rotate` body.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateInput {
    /// How long the old secret keeps signing next to the new one, s (default 86400, 0 = stop
    /// at once, at most 604800).
    pub overlap_seconds: Option<i64>,
}

/// `POST /v1/webhook-endpoints/{id}/recover` body.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverInput {
    /// RFC 3339 time or `YYYY-MM-DD` (inclusive).
    pub since: String,
    /// RFC 3339 time or `YYYY-MM-DD` (exclusive); default now.
    pub until: Option<String>,
}

/// Query of `GET /v1/webhooks/logs`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogParams {
    /// 1 to 100, default 20.
    pub limit: Option<usize>,
    /// `succeeded`, `failed` (will be retried) or `dropped`.
    pub status: Option<String>,
    /// Only attempts for this event.
    pub event_id: Option<String>,
    /// The last `id` of the previous page.
    pub starting_after: Option<String>,
}

/// Query of `GET /v1/webhooks/dropped`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DroppedParams {
    /// `YYYY-MM-DD` (UTC) the deliveries were dropped on; default today.
    pub date: Option<String>,
    /// 1 to 100, default 20.
    pub limit: Option<usize>,
    /// The last `id` of the previous page.
    pub starting_after: Option<String>,
}

/// A page read with a cursor.
#[derive(Debug, Serialize)]
pub struct CursorPage<T> {
    pub data: Vec<T>,
    pub has_more: bool,
    /// Pass as `starting_after` for the next page.
    pub next_starting_after: Option<String>,
    pub limit: usize,
}

/// `DELETE /v1/webhook-endpoints/{id}` response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeletedEndpoint {
    pub id: String,
    pub deleted: bool,
}

/// One delivery started by a replay or recovery.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StartedDelivery {
    pub id: String,
    pub event_id: String,
    pub endpoint_id: String,
}

/// `POST /v1/webhooks/{event_id}/replay` response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReplayOutcome {
    pub event_id: String,
    pub deliveries: Vec<StartedDelivery>,
}

/// `POST /v1/webhook-endpoints/{id}/recover` response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecoverOutcome {
    pub endpoint_id: String,
    #[schema(value_type = String, format = DateTime)]
    pub since: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub until: Timestamp,
    /// Events queued for delivery again.
    pub events: usize,
    /// More events were in the window than one call re-sends; call again from `next_since`.
    pub truncated: bool,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_since: Option<Timestamp>,
}

fn limit_of(limit: Option<usize>, max: usize) -> EngineResult<usize> {
    let l = limit.unwrap_or(20);
    if l == 0 || l > max {
        return Err(EngineError::invalid(
            "parameter_invalid",
            "limit",
            format!("limit must be between 1 and {max}"),
        ));
    }
    Ok(l)
}

fn endpoint_missing(id: &str) -> EngineError {
    EngineError::not_found("webhook endpoint", id)
}

fn manifest_managed(id: &str) -> EngineError {
    EngineError::Conflict {
        code: "endpoint_managed_by_manifest",
        message: format!(
            "`{id}` is a service manifest's endpoint; change or remove it with POST /v1/services"
        ),
    }
}

fn encode<T: Serialize>(v: &T) -> EngineResult<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| EngineError::Internal(e.to_string()))
}

impl Webhooks {
    fn ledger(&self) -> &Arc<dyn crate::store::Ledger> {
        &self.shared.ledger
    }

    fn now(&self) -> i64 {
        self.shared.clock.now_ms()
    }

    /// A stored API endpoint of the caller.
    async fn own_endpoint(&self, ctx: &AuthContext, id: &str) -> EngineResult<Endpoint> {
        if !id.starts_with("we_") || id.len() > 64 {
            return Err(endpoint_missing(id));
        }
        match resolve::get_endpoint(self.ledger().as_ref(), id).await? {
            Some(e) if e.merchant_id == ctx.merchant_id && e.livemode == ctx.livemode => Ok(e),
            _ => Err(endpoint_missing(id)),
        }
    }

    /// Any endpoint of the caller (API or manifest), freshly resolved.
    async fn own_target(&self, ctx: &AuthContext, id: &str) -> EngineResult<Arc<Target>> {
        self.shared
            .resolver
            .get(self.ledger().as_ref(), ctx.merchant_id, ctx.livemode, true)
            .await?
            .find(id)
            .ok_or_else(|| endpoint_missing(id))
    }

    async fn save_endpoint(&self, e: &Endpoint, index: bool) -> EngineResult<()> {
        let mut b = WriteBatch::new();
        b.push(WriteOp::PutRecord {
            kind: ENDPOINT,
            key: e.id.clone(),
            value: encode(e)?,
        });
        if index {
            b.push(WriteOp::PutEntry {
                index: ENDPOINTS_BY_MERCHANT,
                partition: model::merchant_partition(e.merchant_id, e.livemode),
                sort: e.id.clone(),
                value: Vec::new(),
            });
        }
        self.ledger().submit(b).await?;
        self.shared.resolver.invalidate(e.merchant_id, e.livemode);
        Ok(())
    }

    /// Creates an API endpoint; its secret is in this response only.
    pub async fn create_endpoint(
        &self,
        ctx: &AuthContext,
        input: EndpointInput,
    ) -> EngineResult<EndpointWithSecret> {
        ctx.require(Permission::WebhooksWrite)?;
        self.shared
            .url_policy
            .check_webhook_url(&input.url, "url")?;
        let events = input.enabled_events.unwrap_or_else(|| vec!["*".into()]);
        check_event_types(&events)?;
        check_description(input.description.as_deref())?;
        let existing = self
            .ledger()
            .scan_entries(
                ENDPOINTS_BY_MERCHANT,
                &model::merchant_partition(ctx.merchant_id, ctx.livemode),
                &EntryRange::all(self.shared.cfg.max_endpoints + 1),
            )
            .await?;
        if existing.len() >= self.shared.cfg.max_endpoints {
            return Err(EngineError::Conflict {
                code: "webhook_endpoint_limit",
                message: format!(
                    "at most {} webhook endpoints per mode; delete one first",
                    self.shared.cfg.max_endpoints
                ),
            });
        }
        let now = Timestamp(self.now());
        let secret = super::sign::generate_endpoint_secret();
        let e = Endpoint {
            id: model::new_id("we_", now.ms()),
            merchant_id: ctx.merchant_id,
            livemode: ctx.livemode,
            url: input.url,
            description: input.description,
            enabled_events: events,
            status: EndpointStatus::Enabled,
            disabled_reason: None,
            secret: Secret::new(secret.clone()),
            previous_secret: None,
            previous_secret_expires: None,
            created: now,
            updated: now,
        };
        self.save_endpoint(&e, true).await?;
        Ok(EndpointWithSecret {
            endpoint: resolve::view_of(&e),
            secret,
        })
    }

    /// The caller's endpoints: API endpoints first (oldest first), then manifest endpoints.
    pub async fn list_endpoints(
        &self,
        ctx: &AuthContext,
        limit: Option<usize>,
        offset: Option<usize>,
    ) -> EngineResult<(Page<EndpointView>, PageRequest)> {
        ctx.require(Permission::WebhooksRead)?;
        let limit = limit_of(limit, self.max_page_size)?;
        let offset = offset.unwrap_or(0);
        let r = self
            .shared
            .resolver
            .get(self.ledger().as_ref(), ctx.merchant_id, ctx.livemode, true)
            .await?;
        let total = r.targets.len() as u64;
        let data = r
            .targets
            .iter()
            .skip(offset)
            .take(limit)
            .map(|t| t.view.clone())
            .collect();
        Ok((Page { data, total }, PageRequest { limit, offset }))
    }

    /// One endpoint (`we_…` or a manifest's `svc_…`).
    pub async fn get_endpoint(&self, ctx: &AuthContext, id: &str) -> EngineResult<EndpointView> {
        ctx.require(Permission::WebhooksRead)?;
        Ok(self.own_target(ctx, id).await?.view.clone())
    }

    /// Deletes an API endpoint; its pending deliveries are cancelled.
    pub async fn delete_endpoint(
        &self,
        ctx: &AuthContext,
        id: &str,
    ) -> EngineResult<DeletedEndpoint> {
        ctx.require(Permission::WebhooksWrite)?;
        if id.starts_with("svc_") {
            return Err(manifest_managed(id));
        }
        let e = self.own_endpoint(ctx, id).await?;
        let mut b = WriteBatch::new();
        b.push(WriteOp::DeleteRecord {
            kind: ENDPOINT,
            key: e.id.clone(),
        });
        b.push(WriteOp::DeleteEntry {
            index: ENDPOINTS_BY_MERCHANT,
            partition: model::merchant_partition(e.merchant_id, e.livemode),
            sort: e.id.clone(),
        });
        self.ledger().submit(b).await?;
        self.shared.resolver.invalidate(e.merchant_id, e.livemode);
        Ok(DeletedEndpoint {
            id: e.id,
            deleted: true,
        })
    }

    /// Issues a new secret; the old one keeps signing (as a second `v1`) for the overlap.
    pub async fn rotate_secret(
        &self,
        ctx: &AuthContext,
        id: &str,
        input: RotateInput,
    ) -> EngineResult<EndpointWithSecret> {
        ctx.require(Permission::WebhooksWrite)?;
        if id.starts_with("svc_") {
            return Err(manifest_managed(id));
        }
        let overlap = input
            .overlap_seconds
            .unwrap_or(self.shared.cfg.rotation_overlap_secs);
        let max = self.shared.cfg.rotation_overlap_max_secs;
        if !(0..=max).contains(&overlap) {
            return Err(EngineError::invalid(
                "parameter_invalid",
                "overlap_seconds",
                format!("overlap_seconds must be between 0 and {max}"),
            ));
        }
        let mut e = self.own_endpoint(ctx, id).await?;
        let now = Timestamp(self.now());
        let secret = super::sign::generate_endpoint_secret();
        let old = std::mem::replace(&mut e.secret, Secret::new(secret.clone()));
        if overlap > 0 {
            e.previous_secret = Some(old);
            e.previous_secret_expires = Some(now.plus_secs(overlap));
        } else {
            e.previous_secret = None;
            e.previous_secret_expires = None;
        }
        e.updated = now;
        self.save_endpoint(&e, false).await?;
        Ok(EndpointWithSecret {
            endpoint: resolve::view_of(&e),
            secret,
        })
    }

    /// Enables an endpoint disabled by a 410 (or a manifest endpoint disabled the same way).
    pub async fn enable_endpoint(&self, ctx: &AuthContext, id: &str) -> EngineResult<EndpointView> {
        ctx.require(Permission::WebhooksWrite)?;
        if id.starts_with("svc_") {
            let t = self.own_target(ctx, id).await?;
            let mut b = WriteBatch::new();
            b.push(WriteOp::DeleteRecord {
                kind: MANIFEST_DISABLED,
                key: t.id.clone(),
            });
            self.ledger().submit(b).await?;
            self.shared
                .resolver
                .invalidate(ctx.merchant_id, ctx.livemode);
            return Ok(self.own_target(ctx, id).await?.view.clone());
        }
        let mut e = self.own_endpoint(ctx, id).await?;
        e.status = EndpointStatus::Enabled;
        e.disabled_reason = None;
        e.updated = Timestamp(self.now());
        self.save_endpoint(&e, false).await?;
        Ok(resolve::view_of(&e))
    }

    /// Delivery attempts, newest first.
    pub async fn logs(
        &self,
        ctx: &AuthContext,
        p: LogParams,
    ) -> EngineResult<CursorPage<AttemptLog>> {
        ctx.require(Permission::WebhooksRead)?;
        let limit = limit_of(p.limit, self.max_page_size)?;
        let status = log_status_filter(p.status.as_deref())?;
        let after = log_cursor(p.starting_after.as_ref())?;
        let partitions = self
            .log_partitions(ctx, p.event_id.as_deref(), after.as_ref())
            .await?;
        let after_id = after.map(|(a, _)| a);
        let (data, has_more) = self
            .scan_logs(partitions, after_id.as_ref(), status, limit)
            .await?;
        let next = has_more
            .then(|| data.last().map(|l: &AttemptLog| l.id.clone()))
            .flatten();
        Ok(CursorPage {
            data,
            has_more,
            next_starting_after: next,
            limit,
        })
    }

    /// The log partitions a listing reads, newest first: one event's, else the last
    /// `LOG_DAYS` days before the cursor.
    async fn log_partitions(
        &self,
        ctx: &AuthContext,
        event_id: Option<&str>,
        after: Option<&(String, i64)>,
    ) -> EngineResult<Vec<(&'static str, String)>> {
        let mut partitions = Vec::new();
        if let Some(eid) = event_id {
            let e = self.own_event(ctx, eid).await?;
            partitions.push((LOGS_BY_EVENT, e.id.to_string()));
        } else {
            let from = after.map_or(self.now(), |(_, t)| *t);
            for d in 0..LOG_DAYS {
                partitions.push((
                    LOGS,
                    model::day_partition(ctx.merchant_id, ctx.livemode, from - d * 86_400_000),
                ));
            }
        }
        Ok(partitions)
    }

    /// Collects up to `limit` logs with `status` from `partitions`, newest first, reading at
    /// most `MAX_LOG_ROWS_READ` rows; true when more may remain.
    async fn scan_logs(
        &self,
        partitions: Vec<(&'static str, String)>,
        after: Option<&String>,
        status: Option<AttemptStatus>,
        limit: usize,
    ) -> EngineResult<(Vec<AttemptLog>, bool)> {
        let mut data = Vec::new();
        let mut read = 0usize;
        for (index, part) in partitions {
            let mut end = match after {
                Some(a) => Bound::Excluded(a.clone()),
                None => Bound::Unbounded,
            };
            loop {
                let chunk = 200;
                let range = EntryRange {
                    start: Bound::Unbounded,
                    end: end.clone(),
                    limit: chunk,
                    descending: true,
                };
                let rows = self.ledger().scan_entries(index, &part, &range).await?;
                let n = rows.len();
                for (sort, v) in rows {
                    read += 1;
                    end = Bound::Excluded(sort);
                    let Ok(log) = serde_json::from_slice::<AttemptLog>(&v) else {
                        continue;
                    };
                    if status.is_some_and(|s| s != log.status) {
                        continue;
                    }
                    if data.len() == limit {
                        return Ok((data, true));
                    }
                    data.push(log);
                }
                if read >= MAX_LOG_ROWS_READ {
                    return Ok((data, true));
                }
                if n < chunk {
                    break;
                }
            }
        }
        Ok((data, false))
    }

    /// Deliveries dropped on one day.
    pub async fn dropped(
        &self,
        ctx: &AuthContext,
        p: DroppedParams,
    ) -> EngineResult<CursorPage<Delivery>> {
        ctx.require(Permission::WebhooksRead)?;
        let limit = limit_of(p.limit, self.max_page_size)?;
        let day = match &p.date {
            Some(d) => chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|d| d.and_utc().timestamp_millis())
                .ok_or_else(|| {
                    EngineError::invalid(
                        "parameter_invalid",
                        "date",
                        "date must be a day written YYYY-MM-DD",
                    )
                })?,
            None => self.now(),
        };
        let range = EntryRange {
            start: p
                .starting_after
                .clone()
                .map_or(Bound::Unbounded, Bound::Excluded),
            end: Bound::Unbounded,
            limit: limit + 1,
            descending: false,
        };
        let rows = self
            .ledger()
            .scan_entries(
                DROPPED,
                &model::day_partition(ctx.merchant_id, ctx.livemode, day),
                &range,
            )
            .await?;
        let has_more = rows.len() > limit;
        let data: Vec<Delivery> = rows
            .into_iter()
            .take(limit)
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect();
        let next = has_more
            .then(|| data.last().map(|d| d.id.clone()))
            .flatten();
        Ok(CursorPage {
            data,
            has_more,
            next_starting_after: next,
            limit,
        })
    }

    async fn own_event(&self, ctx: &AuthContext, id: &str) -> EngineResult<Event> {
        let eid = EventId::parse(id).map_err(|_| EngineError::not_found("event", id))?;
        match self.ledger().get_event(eid).await? {
            Some(e) if e.merchant_id == ctx.merchant_id && e.livemode == ctx.livemode => Ok(e),
            _ => Err(EngineError::not_found("event", id)),
        }
    }

    /// A fresh, unordered delivery of an event to an endpoint, due now; returns it and its
    /// shard (to wake once written).
    fn fresh_delivery(
        &self,
        ctx: &AuthContext,
        t: &Target,
        event_id: EventId,
        ev: &DayEntry,
        now: i64,
        b: &mut Vec<WriteOp>,
    ) -> EngineResult<(StartedDelivery, u32)> {
        let (event_type, object_id) = (&ev.event_type, &ev.object_id);
        let id = format!("{event_id}:{}:{}", t.id, model::new_id("r", now));
        let shard = model::shard_of(ctx.merchant_id, object_id);
        let d = Delivery {
            id: id.clone(),
            event_id,
            event_type: event_type.to_string(),
            endpoint_id: t.id.clone(),
            endpoint: t.url.clone(),
            merchant_id: ctx.merchant_id,
            livemode: ctx.livemode,
            object_id: object_id.to_string(),
            shard,
            ordered: false,
            status: DeliveryStatus::Pending,
            attempts: 0,
            due_ms: now,
            last_status_code: None,
            last_error: None,
            last_attempt: None,
            next_attempt: Some(Timestamp(now)),
            created: Timestamp(now),
        };
        b.push(WriteOp::PutRecord {
            kind: DELIVERY,
            key: id.clone(),
            value: encode(&d)?,
        });
        b.push(WriteOp::PutEntry {
            index: DUE,
            partition: model::due_partition(shard, model::minute_of(now)),
            sort: model::due_sort(now, 'd', &id),
            value: id.as_bytes().to_vec(),
        });
        Ok((
            StartedDelivery {
                id,
                event_id: event_id.to_string(),
                endpoint_id: t.id.clone(),
            },
            shard,
        ))
    }

    async fn write_ops(&self, ops: Vec<WriteOp>) -> EngineResult<()> {
        let mut ops = ops.into_iter().peekable();
        while ops.peek().is_some() {
            let mut b = WriteBatch::new();
            b.ops = ops.by_ref().take(OPS_PER_BATCH).collect();
            self.ledger().submit(b).await?;
        }
        Ok(())
    }

    /// Sends an event again to every enabled endpoint that wants it, as a fresh attempt
    /// sequence (the full retry schedule), outside per-object ordering.
    pub async fn replay(&self, ctx: &AuthContext, event_id: &str) -> EngineResult<ReplayOutcome> {
        ctx.require(Permission::WebhooksWrite)?;
        let e = self.own_event(ctx, event_id).await?;
        let r = self
            .shared
            .resolver
            .get(self.ledger().as_ref(), ctx.merchant_id, ctx.livemode, true)
            .await?;
        let now = self.now();
        let mut ops = Vec::new();
        let mut deliveries = Vec::new();
        let mut shards = Vec::new();
        for t in r
            .targets
            .iter()
            .filter(|t| t.enabled && t.wants(&e.event_type))
        {
            let ev = DayEntry {
                event_type: e.event_type.clone(),
                object_id: e.object_id.clone(),
            };
            let (d, shard) = self.fresh_delivery(ctx, t, e.id, &ev, now, &mut ops)?;
            shards.push(shard);
            deliveries.push(d);
        }
        if deliveries.is_empty() {
            return Err(EngineError::Conflict {
                code: "no_webhook_endpoints",
                message: "no enabled webhook endpoint wants this event; add one with POST \
                          /v1/webhook-endpoints or set `endpoint` on a service manifest"
                    .into(),
            });
        }
        self.write_ops(ops).await?;
        for s in shards {
            self.wake(s, now);
        }
        Ok(ReplayOutcome {
            event_id: e.id.to_string(),
            deliveries,
        })
    }

    /// Sends every event of `[since, until)` that the endpoint wants to it again.
    pub async fn recover(
        &self,
        ctx: &AuthContext,
        endpoint_id: &str,
        input: RecoverInput,
    ) -> EngineResult<RecoverOutcome> {
        ctx.require(Permission::WebhooksWrite)?;
        let now = self.now();
        let (since, until) = self.recover_window(&input, now)?;
        let t = self.recover_target(ctx, endpoint_id).await?;
        let scan = self.recovery_deliveries(ctx, &t, since, until, now).await?;
        self.write_ops(scan.ops).await?;
        for s in scan.shards {
            self.wake(s, now);
        }
        Ok(RecoverOutcome {
            endpoint_id: t.id.clone(),
            since,
            until,
            events: scan.count,
            truncated: scan.next_since.is_some(),
            next_since: scan.next_since,
        })
    }

    /// Reads the `[since, until)` window of a recovery and checks it spans at most
    /// `recover_max_days`.
    fn recover_window(
        &self,
        input: &RecoverInput,
        now: i64,
    ) -> EngineResult<(Timestamp, Timestamp)> {
        let parse = |s: &str, param: &'static str| {
            Timestamp::parse_flexible(s).ok_or_else(|| {
                EngineError::invalid(
                    "parameter_invalid",
                    param,
                    format!("{param} must be an RFC 3339 time or a YYYY-MM-DD date"),
                )
            })
        };
        let since = parse(&input.since, "since")?;
        let until = match &input.until {
            Some(u) => parse(u, "until")?,
            None => Timestamp(now),
        };
        let max_days = self.shared.cfg.recover_max_days;
        if since >= until || until.ms() - since.ms() > max_days * 86_400_000 {
            return Err(EngineError::invalid(
                "parameter_invalid",
                "since",
                format!("since must be before until, at most {max_days} days apart"),
            ));
        }
        Ok((since, until))
    }

    /// The endpoint a recovery sends to; a disabled one is refused.
    async fn recover_target(
        &self,
        ctx: &AuthContext,
        endpoint_id: &str,
    ) -> EngineResult<Arc<Target>> {
        let t = self.own_target(ctx, endpoint_id).await?;
        if !t.enabled {
            return Err(EngineError::Conflict {
                code: "endpoint_disabled",
                message: format!(
                    "endpoint `{endpoint_id}` is disabled; enable it with POST \
                     /v1/webhook-endpoints/{endpoint_id}/enable first"
                ),
            });
        }
        Ok(t)
    }

    /// Builds fresh deliveries to `t` of the window's events it wants, day by day, stopping
    /// at `recover_max_events`.
    async fn recovery_deliveries(
        &self,
        ctx: &AuthContext,
        t: &Target,
        since: Timestamp,
        until: Timestamp,
        now: i64,
    ) -> EngineResult<RecoveryScan> {
        let max = self.shared.cfg.recover_max_events;
        let lo = EventId::min_at(since.ms()).to_string();
        let hi = EventId::min_at(until.ms()).to_string();
        let mut scan = RecoveryScan::default();
        let mut day = since.ms() - since.ms().rem_euclid(86_400_000);
        while day < until.ms() {
            let part = model::day_partition(ctx.merchant_id, ctx.livemode, day);
            let mut start = Bound::Included(lo.clone());
            loop {
                let range = EntryRange {
                    start: start.clone(),
                    end: Bound::Excluded(hi.clone()),
                    limit: 500,
                    descending: false,
                };
                let rows = self
                    .ledger()
                    .scan_entries(EVENTS_BY_DAY, &part, &range)
                    .await?;
                let n = rows.len();
                for (sort, v) in rows {
                    start = Bound::Excluded(sort.clone());
                    let Ok(entry) = serde_json::from_slice::<DayEntry>(&v) else {
                        continue;
                    };
                    if !t.wants(&entry.event_type) {
                        continue;
                    }
                    let Ok(eid) = EventId::parse(&sort) else {
                        continue;
                    };
                    if scan.count == max {
                        scan.next_since = Some(Timestamp(eid.timestamp_ms()));
                        return Ok(scan);
                    }
                    let (_, shard) =
                        self.fresh_delivery(ctx, t, eid, &entry, now, &mut scan.ops)?;
                    scan.shards.insert(shard);
                    scan.count += 1;
                }
                if n < 500 {
                    break;
                }
            }
            day += 86_400_000;
        }
        Ok(scan)
    }
}

/// What a recovery found to send: the writes, the outbox shards to wake, how many events, and
/// where to resume when it stopped at the cap.
#[derive(Default)]
struct RecoveryScan {
    ops: Vec<WriteOp>,
    shards: std::collections::BTreeSet<u32>,
    count: usize,
    next_since: Option<Timestamp>,
}

/// Fails unless `events` is 1 to [`MAX_EVENT_TYPES`] well-formed event types (or `*`).
fn check_event_types(events: &[String]) -> EngineResult<()> {
    if events.is_empty()
        || events.len() > MAX_EVENT_TYPES
        || events.iter().any(|e| {
            e.is_empty()
                || e.len() > 100
                || !e
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._*".contains(&b))
        })
    {
        return Err(EngineError::invalid(
            "parameter_invalid",
            "enabled_events",
            format!(
                "enabled_events must be 1 to {MAX_EVENT_TYPES} event types such as \
                 `payment_intent.succeeded`, or [\"*\"] for all"
            ),
        ));
    }
    Ok(())
}

/// Fails when a description is longer than [`MAX_DESCRIPTION_LEN`] characters.
fn check_description(description: Option<&str>) -> EngineResult<()> {
    if description.is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_LEN) {
        return Err(EngineError::invalid(
            "parameter_invalid",
            "description",
            format!("description is limited to {MAX_DESCRIPTION_LEN} characters"),
        ));
    }
    Ok(())
}

/// The parts of an API endpoint that may change; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointUpdate {
    /// A new URL, checked against the same policy as on creation.
    pub url: Option<String>,
    /// New event types (replacing the old list).
    pub enabled_events: Option<Vec<String>>,
    /// A new description.
    pub description: Option<String>,
}

impl Webhooks {
    /// Changes an API endpoint's URL, event types or description; its secret stays. Manifest
    /// endpoints change through their manifest.
    pub async fn update_endpoint(
        &self,
        ctx: &AuthContext,
        id: &str,
        update: EndpointUpdate,
    ) -> EngineResult<EndpointView> {
        ctx.require(Permission::WebhooksWrite)?;
        if id.starts_with("svc_") {
            return Err(manifest_managed(id));
        }
        if let Some(url) = &update.url {
            self.shared.url_policy.check_webhook_url(url, "url")?;
        }
        if let Some(events) = &update.enabled_events {
            check_event_types(events)?;
        }
        check_description(update.description.as_deref())?;
        let mut e = self.own_endpoint(ctx, id).await?;
        if let Some(url) = update.url {
            e.url = url;
        }
        if let Some(events) = update.enabled_events {
            e.enabled_events = events;
        }
        if update.description.is_some() {
            e.description = update.description;
        }
        e.updated = Timestamp(self.now());
        self.save_endpoint(&e, false).await?;
        Ok(resolve::view_of(&e))
    }
}

/// Reads the `status` filter of a log listing.
fn log_status_filter(status: Option<&str>) -> EngineResult<Option<AttemptStatus>> {
    let Some(s) = status else {
        return Ok(None);
    };
    AttemptStatus::parse(s).map(Some).ok_or_else(|| {
        EngineError::invalid(
            "parameter_invalid",
            "status",
            "status must be one of succeeded, failed, dropped",
        )
    })
}

/// Reads the `starting_after` cursor of a log listing: the entry's id and its time.
fn log_cursor(starting_after: Option<&String>) -> EngineResult<Option<(String, i64)>> {
    let Some(a) = starting_after else {
        return Ok(None);
    };
    model::id_time(a, "wha_")
        .map(|t| Some((a.clone(), t)))
        .ok_or_else(|| {
            EngineError::invalid(
                "parameter_invalid",
                "starting_after",
                "starting_after must be the id (`wha_…`) of a log entry",
            )
        })
}
