//! What the webhook subsystem stores, and where: record kinds, index names, partition and sort
//! keys, and the retry schedule. Everything lives in the ledger's generic records and sorted
//! indexes, so it works unchanged on every backend.

use crate::clock::Timestamp;
use crate::ids::{EventId, MerchantId};
use crate::model::merchant::Secret;
use serde::{Deserialize, Serialize};

/// Fixed number of dispatch shards. Fan-out markers and due entries are partitioned by shard, so
/// changing it would orphan stored entries; it is a constant, not a setting.
pub const SHARDS: u32 = 16;

/// Delays before retry 1..6 after a failed attempt, seconds (the spec's schedule). After the
/// 6th retry fails the delivery is dropped: at most 7 attempts.
pub const RETRY_SCHEDULE_SECS: [i64; 6] = [10, 60, 600, 3_600, 21_600, 86_400];

/// Attempts a delivery gets before it is dropped (the first plus six retries).
pub const MAX_ATTEMPTS: u32 = RETRY_SCHEDULE_SECS.len() as u32 + 1;

/// Endpoint records (`we_…` → [`Endpoint`]).
pub const ENDPOINT: &str = "wh_endpoint";
/// Endpoints of a merchant and mode: partition `{merchant}:{l|t}`, sort = endpoint id.
pub const ENDPOINTS_BY_MERCHANT: &str = "wh_endpoints";
/// A manifest endpoint disabled by a 410: key = endpoint id (`svc_…`), value = the URL that
/// answered 410 (a manifest with another URL is enabled again).
pub const MANIFEST_DISABLED: &str = "wh_svc_disabled";
/// Delivery records (delivery id → [`Delivery`]).
pub const DELIVERY: &str = "wh_delivery";
/// The due-time index: partition `{shard:02}:{minute}`, sort `{due_ms:013}:{f|d}:{ref}`;
/// `f` entries are fan-out markers (value = the event JSON), `d` entries are deliveries
/// (value = delivery id).
pub const DUE: &str = "wh_due";
/// Per-object ordering chains: partition `{endpoint}:{object}`, sort = delivery id (which starts
/// with the event id, so the chain is in event order). Only unfinished ordered deliveries.
pub const CHAIN: &str = "wh_chain";
/// Events by merchant and day, for recovery: partition `{merchant}:{l|t}:{YYYYMMDD}`,
/// sort = event id, value = `{type, object_id}` JSON.
pub const EVENTS_BY_DAY: &str = "wh_events";
/// Attempt logs: partition `{merchant}:{l|t}:{YYYYMMDD}`, sort = log id, value = [`AttemptLog`].
pub const LOGS: &str = "wh_log";
/// Attempt logs of one event: partition = event id, sort = log id, value = [`AttemptLog`].
pub const LOGS_BY_EVENT: &str = "wh_log_evt";
/// Dropped deliveries: partition `{merchant}:{l|t}:{YYYYMMDD}` (day dropped), sort = delivery
/// id, value = [`Delivery`].
pub const DROPPED: &str = "wh_dropped";
/// Per-shard scan cursor (shard → minute before which every partition was found empty).
pub const CURSOR: &str = "wh_cursor";

/// `l` or `t`.
pub fn mode(livemode: bool) -> char {
    if livemode { 'l' } else { 't' }
}

/// `{merchant}:{l|t}`.
pub fn merchant_partition(merchant: MerchantId, livemode: bool) -> String {
    format!("{merchant}:{}", mode(livemode))
}

/// `{merchant}:{l|t}:{YYYYMMDD}` of the UTC day of `ms`.
pub fn day_partition(merchant: MerchantId, livemode: bool, ms: i64) -> String {
    format!(
        "{merchant}:{}:{}",
        mode(livemode),
        Timestamp(ms).to_datetime().format("%Y%m%d")
    )
}

/// The minute bucket of a time.
pub fn minute_of(ms: i64) -> i64 {
    ms.div_euclid(60_000)
}

/// The due-index partition of a shard and minute.
pub fn due_partition(shard: u32, minute: i64) -> String {
    format!("{shard:02}:{minute}")
}

/// The due-index sort key.
pub fn due_sort(due_ms: i64, kind: char, reference: &str) -> String {
    format!("{:013}:{kind}:{reference}", due_ms.max(0))
}

/// The shard of an object: all events about one object land in one shard, so one dispatcher
/// sees them in order.
pub fn shard_of(merchant: MerchantId, object_id: &str) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&merchant.to_bytes());
    h.update(object_id.as_bytes());
    h.finalize() % SHARDS
}

/// Where an endpoint came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndpointSource {
    /// Created with `POST /v1/webhook-endpoints`.
    Api,
    /// The `endpoint` of a service manifest (signed with the merchant's webhook secret).
    Manifest,
}

/// Whether an endpoint receives deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndpointStatus {
    Enabled,
    /// Answered 410 Gone (or was disabled by hand); nothing is sent until it is enabled again.
    Disabled,
}

/// A managed endpoint as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: String,
    pub merchant_id: MerchantId,
    pub livemode: bool,
    pub url: String,
    pub description: Option<String>,
    /// Event types delivered; `["*"]` is all.
    pub enabled_events: Vec<String>,
    pub status: EndpointStatus,
    pub disabled_reason: Option<String>,
    pub secret: Secret,
    /// The secret before the last rotation, still signing until `previous_secret_expires`.
    pub previous_secret: Option<Secret>,
    pub previous_secret_expires: Option<Timestamp>,
    pub created: Timestamp,
    pub updated: Timestamp,
}

/// An endpoint as the API shows it (never a secret).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EndpointView {
    /// `we_…` for API endpoints, the manifest's `svc_…` for manifest endpoints.
    pub id: String,
    pub url: String,
    pub source: EndpointSource,
    pub description: Option<String>,
    pub enabled_events: Vec<String>,
    pub status: EndpointStatus,
    pub disabled_reason: Option<String>,
    /// Until when the previous secret still signs (after a rotation).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub previous_secret_expires: Option<Timestamp>,
    pub livemode: bool,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub created: Option<Timestamp>,
}

/// A new or rotated endpoint with its secret, shown once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EndpointWithSecret {
    #[serde(flatten)]
    pub endpoint: EndpointView,
    /// The signing secret (`whsec_…`). Shown only in this response; store it now.
    pub secret: String,
}

/// The lifecycle of one delivery (one event to one endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Has a due entry; will be attempted when it is due.
    Pending,
    /// Waits for an earlier event of the same object to this endpoint to finish.
    Waiting,
    Succeeded,
    /// Failed its last attempt, or the endpoint answered 410.
    Dropped,
    /// Its endpoint was deleted.
    Cancelled,
}

impl DeliveryStatus {
    /// Whether nothing more will happen to it.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeliveryStatus::Succeeded | DeliveryStatus::Dropped | DeliveryStatus::Cancelled
        )
    }
}

/// One event to one endpoint, with its attempt count and schedule.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Delivery {
    /// `{event_id}:{endpoint_id}` for the original delivery, `…:r{ulid}` for replays.
    pub id: String,
    #[schema(value_type = String)]
    pub event_id: EventId,
    #[serde(rename = "type")]
    pub event_type: String,
    pub endpoint_id: String,
    /// The URL of the last attempt (or the endpoint's when none was made yet).
    pub endpoint: String,
    #[schema(value_type = String)]
    pub merchant_id: MerchantId,
    pub livemode: bool,
    pub object_id: String,
    pub shard: u32,
    /// Part of the per-object ordering chain (false for replays and recoveries).
    pub ordered: bool,
    pub status: DeliveryStatus,
    pub attempts: u32,
    /// Where its due entry is (meaningful while pending).
    pub due_ms: i64,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_attempt: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt: Option<Timestamp>,
    #[schema(value_type = String, format = DateTime)]
    pub created: Timestamp,
}

/// The outcome of one attempt, as logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptStatus {
    /// 2xx.
    Succeeded,
    /// Failed; another attempt is scheduled (`next_attempt`).
    Failed,
    /// Failed and no attempt follows (6th retry failed, 410 Gone, endpoint disabled).
    Dropped,
}

impl AttemptStatus {
    /// Parses a `status` filter.
    pub fn parse(s: &str) -> Option<AttemptStatus> {
        match s {
            "succeeded" => Some(AttemptStatus::Succeeded),
            "failed" => Some(AttemptStatus::Failed),
            "dropped" => Some(AttemptStatus::Dropped),
            _ => None,
        }
    }
}

/// One delivery attempt.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptLog {
    /// `wha_…`, time-ordered.
    pub id: String,
    pub delivery_id: String,
    #[schema(value_type = String)]
    pub event_id: EventId,
    #[serde(rename = "type")]
    pub event_type: String,
    pub endpoint_id: String,
    pub endpoint: String,
    /// 1 for the first attempt, up to 7.
    pub attempt: u32,
    pub status: AttemptStatus,
    /// The receiver's HTTP status, when it answered.
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    /// What went wrong (`timeout`, `connect: …`, `HTTP 500`, …).
    pub error: Option<String>,
    /// The `X-ItPay-Request-Id` sent.
    pub request_id: String,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt: Option<Timestamp>,
    #[schema(value_type = String, format = DateTime)]
    pub created: Timestamp,
}

/// The body sent to receivers: exactly the spec's four fields.
#[derive(Serialize)]
pub struct Payload<'a> {
    pub id: &'a EventId,
    #[serde(rename = "type")]
    pub event_type: &'a str,
    pub created: &'a Timestamp,
    pub data: &'a serde_json::value::RawValue,
}

/// A fresh time-ordered id with a prefix.
pub fn new_id(prefix: &str, ms: i64) -> String {
    let r: u128 = rand::random::<u128>() >> 48;
    let u = ulid::Ulid::from_parts(u64::try_from(ms).unwrap_or(0), r);
    format!("{prefix}{u}")
}

/// The time embedded in an id made by [`new_id`].
pub fn id_time(id: &str, prefix: &str) -> Option<i64> {
    let u = ulid::Ulid::from_string(id.strip_prefix(prefix)?).ok()?;
    Some(u.timestamp_ms() as i64)
}
