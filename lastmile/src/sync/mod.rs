//! Order sync from marketplaces that are pulled, not pushed (bol.com, AliExpress, Temu):
//! connecting (credentials checked against the platform before anything is stored), status,
//! setup information, disconnecting, one sync (recent orders, limit 50, imported once per
//! platform order id) and the sync log. The durable scheduler that runs syncs per connection
//! lives in [`scheduler`]; each platform's signing and wire format in
//! `ipay_adapters::marketplaces`. Webhook-pushed shops stay in [`crate::shops`].
//!
//! Stored (generic ledger records and indexes):
//! - `lm_sync_conn/{merchant}:{provider}`: the connection (credentials in clear because every
//!   request is signed with them; never returned);
//! - `lm_sync_state/{merchant}:{provider}`: cursor (placing time of the newest order
//!   imported), next run, failures, last error — written only after the orders it covers
//!   have committed, so a crash in between repeats work and never skips it;
//! - `lm_sync_conns` partition `all`, sort key `{merchant}:{provider}`: the connections the
//!   scheduler visits;
//! - `lm_sync_log` partition `{YYYYMMDD}`, sort key `{ms}:{merchant}:{provider}:{rand}`: one
//!   entry per sync run.
//!
//! Exactly-once import: each order is stored under its platform order id through the same
//! duplicate check as every other order (a HotState reservation across nodes and the
//! `lm_order_ext` record), so a repeated fetch is a no-op; a per-connection lease in
//! HotState keeps two nodes from syncing one connection at the same time.

pub mod scheduler;

use crate::LastMile;
use crate::orders::{Address, Customer, Inserted, OrderInput, OrderItem, validate};
use ipay_adapters::marketplaces::{
    Credentials, MarketClient, MarketError, MarketOrder, MarketUrls, Marketplace, SYNC_LIMIT,
};
use ipay_engine::clock::Timestamp;
use ipay_engine::engine::AmountInput;
use ipay_engine::error::{EngineError, EngineResult};
use ipay_engine::ids::MerchantId;
use ipay_engine::model::merchant::Secret;
use ipay_engine::store::{EntryRange, WriteBatch, WriteOp};
use serde::{Deserialize, Serialize};
use std::time::Duration;

const CONN: &str = "lm_sync_conn";
const STATE: &str = "lm_sync_state";
const CONNS: &str = "lm_sync_conns";
const LOG: &str = "lm_sync_log";
/// The one partition of [`CONNS`].
const CONNS_PART: &str = "all";
/// Longest credential field accepted.
const MAX_FIELD: usize = 512;
/// Carrier of orders whose platform and connection name none.
const FALLBACK_CARRIER: &str = "POSTNL";
/// Sync-log entries shown at most.
pub const LOG_MAX: usize = 100;
/// Days of sync log examined for the latest entries.
const LOG_DAYS: i64 = 30;

/// `[lastmile.sync]` in `ipay.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// Where each platform's API lives (`[lastmile.sync.urls]`); tests point them at the
    /// simulator. Operator configuration only: merchants never supply these.
    pub urls: MarketUrls,
    /// Default time between two scheduled syncs of a connection, seconds (15 minutes).
    pub interval_secs: u64,
    /// Bounds of a connection's own `sync_interval_minutes`, seconds.
    pub min_interval_secs: u64,
    /// Upper bound of a connection's interval, seconds (1 day).
    pub max_interval_secs: u64,
    /// How often this node's scheduler looks for due connections, ms; 0 turns the background
    /// loop off (`POST /api/admin/scheduler/run-now` still runs a pass).
    pub tick_ms: u64,
    /// First retry delay after a failed sync, seconds; doubled per further failure.
    pub backoff_base_secs: u64,
    /// Longest retry delay, seconds.
    pub backoff_max_secs: u64,
    /// Lifetime of the per-connection sync lease, seconds (a crashed node's lease lapses).
    pub lease_ttl_secs: u64,
    /// How far back the first sync of a connection looks, seconds (7 days).
    pub initial_lookback_secs: u64,
    /// Connections one scheduler pass visits at most.
    pub max_connections_per_pass: usize,
    /// Time allowed for one platform call, ms.
    pub request_timeout_ms: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            urls: MarketUrls::default(),
            interval_secs: 15 * 60,
            min_interval_secs: 60,
            max_interval_secs: 86_400,
            tick_ms: 5_000,
            backoff_base_secs: 60,
            backoff_max_secs: 3_600,
            lease_ttl_secs: 120,
            initial_lookback_secs: 7 * 86_400,
            max_connections_per_pass: 1_000,
            request_timeout_ms: 10_000,
        }
    }
}

/// Per-node sync machinery: the platform client, this node's lease owner name and the
/// scheduler's last pass.
pub(crate) struct SyncState {
    client: MarketClient,
    node: String,
    last_pass: parking_lot::Mutex<Option<scheduler::PassReport>>,
}

impl SyncState {
    pub(crate) fn new(cfg: &SyncConfig) -> EngineResult<SyncState> {
        let timeouts = ipay_adapters::http::HttpTimeouts {
            connect: Duration::from_secs(3),
            request: Duration::from_millis(cfg.request_timeout_ms.max(100)),
        };
        Ok(SyncState {
            client: MarketClient::new(cfg.urls.clone(), timeouts).map_err(EngineError::Internal)?,
            node: format!("sync-{}", hex::encode(rand::random::<[u8; 8]>())),
            last_pass: parking_lot::Mutex::new(None),
        })
    }
}

/// `POST /api/integrations/{bol|aliexpress|temu}/connect` body.
#[derive(Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarketConnectRequest {
    /// bol.com: the Retailer API client id.
    #[serde(default)]
    pub client_id: Option<String>,
    /// bol.com: the client secret.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// AliExpress, Temu: the app key.
    #[serde(default)]
    pub app_key: Option<String>,
    /// AliExpress, Temu: the app secret.
    #[serde(default)]
    pub app_secret: Option<String>,
    /// AliExpress, Temu: the seller's access token (from authorising the app).
    #[serde(default)]
    pub access_token: Option<String>,
    /// Carrier code for orders whose platform names none (default: the platform's, else
    /// POSTNL).
    #[serde(default)]
    pub default_carrier: Option<String>,
    /// Minutes between scheduled syncs (default 15).
    #[serde(default)]
    pub sync_interval_minutes: Option<u64>,
}

impl std::fmt::Debug for MarketConnectRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MarketConnectRequest")
            .field("client_id", &self.client_id)
            .field("app_key", &self.app_key)
            .finish_non_exhaustive()
    }
}

/// A stored marketplace connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Connection {
    provider: Marketplace,
    credentials: Credentials,
    default_carrier: Option<String>,
    interval_secs: u64,
    connected_at: Timestamp,
}

/// A connection's sync progress.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SyncProgress {
    /// Placing time (ms) of the newest order imported; the next sync asks from here.
    cursor_ms: Option<i64>,
    next_run_ms: i64,
    failures: u32,
    last_run_ms: Option<i64>,
    last_success_ms: Option<i64>,
    last_error: Option<String>,
    imported_total: u64,
}

/// A marketplace connection as shown to its merchant.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MarketView {
    pub provider: &'static str,
    pub connected: bool,
    /// `pull`: IPAY fetches orders (the platform sends no webhooks).
    pub mode: &'static str,
    /// Client id or app key, first and last 4 characters.
    pub key_masked: Option<String>,
    pub default_carrier: Option<String>,
    pub sync_interval_secs: Option<u64>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub connected_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_sync_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_success_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_sync_at: Option<Timestamp>,
    /// Failed syncs in a row (the scheduler backs off while this grows).
    pub failures: u32,
    pub last_error: Option<String>,
    /// Placing time of the newest order imported.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub cursor: Option<Timestamp>,
    pub imported_total: u64,
}

/// Where to get credentials for a platform and what connect needs.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SetupInfo {
    pub provider: &'static str,
    /// `pull` (IPAY fetches orders) or `push` (the platform sends webhooks).
    pub mode: &'static str,
    /// Where the merchant finds or creates the credentials.
    pub credentials_from: &'static str,
    /// Permissions the credentials need.
    pub scopes: &'static [&'static str],
    /// Fields `POST .../connect` requires.
    pub required_fields: &'static [&'static str],
    /// Optional fields of `POST .../connect`.
    pub optional_fields: &'static [&'static str],
    /// How requests (pull) or deliveries (push) are authenticated.
    pub signing: &'static str,
    /// Push only: the path to configure in the platform.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Pull only: the default seconds between scheduled syncs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_interval_secs: Option<u64>,
}

/// One order a sync could not import.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SyncRowError {
    /// The platform's order id.
    pub external_id: String,
    pub reason: String,
}

/// What one sync did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SyncOutcome {
    pub provider: String,
    /// Orders the platform returned (at most 50).
    pub fetched: usize,
    /// Orders stored now.
    pub created: usize,
    /// Orders already imported earlier (same platform order id).
    pub duplicates: usize,
    /// Orders that failed validation (listed in `errors`).
    pub failed: usize,
    pub errors: Vec<SyncRowError>,
    /// Ids of the orders created.
    pub order_ids: Vec<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub cursor: Option<Timestamp>,
    #[schema(value_type = String, format = DateTime)]
    pub next_sync_at: Timestamp,
}

/// One sync run in the log.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SyncLogEntry {
    #[schema(value_type = String)]
    pub merchant_id: MerchantId,
    pub provider: String,
    /// `manual` or `scheduled`.
    pub trigger: String,
    /// `ok` or `error`.
    pub status: String,
    #[schema(value_type = String, format = DateTime)]
    pub started_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub finished_at: Timestamp,
    pub fetched: usize,
    pub created: usize,
    pub duplicates: usize,
    pub failed: usize,
    pub error: Option<String>,
}

/// Who started a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `POST /api/integrations/{provider}/sync`.
    Manual,
    /// The scheduler.
    Scheduled,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Scheduled => "scheduled",
        }
    }
}

fn json<T: Serialize>(v: &T) -> EngineResult<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| EngineError::Internal(e.to_string()))
}

fn mask(s: &str) -> String {
    let n = s.chars().count();
    if n <= 8 {
        return "****".into();
    }
    let head: String = s.chars().take(4).collect();
    let tail: String = s.chars().skip(n - 4).collect();
    format!("{head}…{tail}")
}

fn conn_key(merchant: MerchantId, m: Marketplace) -> String {
    format!("{merchant}:{}", m.as_str())
}

/// Setup information for a pulled marketplace.
pub fn market_setup(m: Marketplace, cfg: &SyncConfig) -> SetupInfo {
    let (from, scopes): (&'static str, &'static [&'static str]) = match m {
        Marketplace::Bol => (
            "bol.com seller account > Settings > API settings > Client credentials for the \
             Retailer API > Create (copy the client id and, with Show secret, the secret)",
            &["RETAILER (orders: read)"],
        ),
        Marketplace::Aliexpress => (
            "AliExpress open platform console (open.aliexpress.com): your app's App Key and \
             App Secret; the seller authorises the app to obtain the access_token",
            &["aliexpress.solution.order.get"],
        ),
        Marketplace::Temu => (
            "Temu Partner Platform (partner.temu.com, EU region): the app's app_key and \
             app_secret; the seller authorises the app in Seller Central for the access_token",
            &["bg.order.list.v2.get"],
        ),
    };
    SetupInfo {
        provider: m.as_str(),
        mode: "pull",
        credentials_from: from,
        scopes,
        required_fields: m.required_fields(),
        optional_fields: &["default_carrier", "sync_interval_minutes"],
        signing: m.signing(),
        webhook_url: None,
        sync_interval_secs: Some(cfg.interval_secs),
    }
}

/// Setup information for a platform that pushes orders by webhook (`crate::shops`).
pub fn shop_setup(p: ipay_adapters::shops::Provider, merchant: MerchantId) -> SetupInfo {
    use ipay_adapters::shops::Scheme;
    let mut url = format!(
        "/api/integrations/{}/webhook?account={merchant}",
        p.as_str()
    );
    if p.scheme() == Scheme::UrlToken {
        url.push_str("&token=<secret>");
    }
    SetupInfo {
        provider: p.as_str(),
        mode: "push",
        credentials_from: "the platform's webhook settings: create a webhook to `webhook_url` \
                           and give its signing secret to connect (or let connect generate one \
                           and paste it into the platform)",
        scopes: p.topics(),
        required_fields: &[],
        optional_fields: &[
            "secret",
            "shop_domain",
            "default_carrier",
            "default_currency",
        ],
        signing: p.signature(),
        webhook_url: Some(url),
        sync_interval_secs: None,
    }
}

/// A required credential field, trimmed and bounded.
fn field(v: &Option<String>, name: &'static str) -> EngineResult<String> {
    let s = v.as_deref().map(str::trim).unwrap_or("");
    if s.is_empty() {
        return Err(EngineError::invalid(
            "parameter_missing",
            name,
            format!("{name} is required"),
        ));
    }
    if s.len() > MAX_FIELD || s.chars().any(char::is_control) {
        return Err(EngineError::invalid(
            "parameter_invalid",
            name,
            format!("{name} must be 1 to {MAX_FIELD} printable characters"),
        ));
    }
    Ok(s.to_string())
}

/// The credentials a connect body gives for `m`.
fn credentials(m: Marketplace, req: &MarketConnectRequest) -> EngineResult<Credentials> {
    Ok(match m {
        Marketplace::Bol => Credentials {
            key: field(&req.client_id, "client_id")?,
            secret: Secret::new(field(&req.client_secret, "client_secret")?),
            access_token: None,
        },
        Marketplace::Aliexpress | Marketplace::Temu => Credentials {
            key: field(&req.app_key, "app_key")?,
            secret: Secret::new(field(&req.app_secret, "app_secret")?),
            access_token: Some(Secret::new(field(&req.access_token, "access_token")?)),
        },
    })
}

/// A platform failure as the API's error: refusals are the caller's to fix (400), the rest
/// is the platform's (503, retry later).
fn market_error(m: Marketplace, e: MarketError) -> EngineError {
    match e {
        MarketError::Refused(msg) => EngineError::invalid(
            "integration_credentials_rejected",
            "credentials",
            format!("{} refused the credentials: {msg}", m.as_str()),
        ),
        MarketError::Unavailable(msg) => EngineError::ChannelUnavailable {
            channel: m.as_str().to_string(),
            message: format!(
                "{} could not be reached or failed: {msg}; retry later",
                m.as_str()
            ),
            retry_after_secs: 60,
            alternatives: vec![],
        },
    }
}

/// A platform order as our order input.
fn order_input(o: MarketOrder, default_carrier: Option<&str>) -> OrderInput {
    let carrier = default_carrier
        .map(str::to_string)
        .or_else(|| {
            o.carrier
                .as_deref()
                .and_then(ipay_adapters::shops::carrier_code)
        })
        .unwrap_or_else(|| FALLBACK_CARRIER.to_string());
    OrderInput {
        external_id: Some(o.id),
        customer: Customer {
            name: o.name,
            email: o.email,
            phone: o.phone,
            address: Address {
                line1: o.line1,
                line2: o.line2,
                city: o.city,
                postal_code: o.postal_code,
                region: None,
                country: o.country,
            },
        },
        items: o
            .items
            .into_iter()
            .map(|i| OrderItem {
                sku: i.sku,
                name: i.name,
                qty: i.qty,
                unit_price: i.unit_price,
            })
            .collect(),
        amount: AmountInput {
            value: o.amount,
            currency: o.currency,
        },
        carrier_code: carrier,
        ipay_flag: Some(true),
    }
}

impl LastMile {
    /// Connects a merchant to a pulled marketplace after the platform accepted the
    /// credentials; a refusal stores nothing. A reconnect keeps the sync cursor.
    pub async fn connect_market(
        &self,
        merchant: MerchantId,
        m: Marketplace,
        req: MarketConnectRequest,
    ) -> EngineResult<MarketView> {
        let creds = credentials(m, &req)?;
        let default_carrier = match req.default_carrier.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(c) => Some(ipay_adapters::shops::carrier_code(c).ok_or_else(|| {
                EngineError::invalid(
                    "parameter_invalid",
                    "default_carrier",
                    "default_carrier must be a carrier code such as DHL or POSTNL",
                )
            })?),
        };
        let cfg = &self.cfg.sync;
        let interval_secs = match req.sync_interval_minutes {
            None => cfg.interval_secs,
            Some(min) => {
                let secs = min.saturating_mul(60);
                if secs < cfg.min_interval_secs || secs > cfg.max_interval_secs {
                    return Err(EngineError::invalid(
                        "parameter_invalid",
                        "sync_interval_minutes",
                        format!(
                            "sync_interval_minutes must be between {} and {}",
                            cfg.min_interval_secs.div_ceil(60),
                            cfg.max_interval_secs / 60
                        ),
                    ));
                }
                secs
            }
        };
        let now = self.engine.clock().now();
        self.sync
            .client
            .verify(m, &creds, now.ms())
            .await
            .map_err(|e| market_error(m, e))?;
        let conn = Connection {
            provider: m,
            credentials: creds,
            default_carrier,
            interval_secs,
            connected_at: now,
        };
        // A reconnect with the same client id or app key keeps the cursor; another account's
        // cursor says nothing about this one's orders.
        let same_account = self
            .market_connection(merchant, m)
            .await?
            .is_some_and(|old| old.credentials.key == conn.credentials.key);
        let mut progress = match self.progress(merchant, m).await? {
            Some(p) if same_account => p,
            _ => SyncProgress::default(),
        };
        progress.failures = 0;
        progress.last_error = None;
        progress.next_run_ms = now.ms();
        let key = conn_key(merchant, m);
        let mut b = WriteBatch::new();
        b.push(WriteOp::PutRecord {
            kind: CONN,
            key: key.clone(),
            value: json(&conn)?,
        });
        b.push(WriteOp::PutRecord {
            kind: STATE,
            key: key.clone(),
            value: json(&progress)?,
        });
        b.push(WriteOp::PutEntry {
            index: CONNS,
            partition: CONNS_PART.into(),
            sort: key,
            value: Vec::new(),
        });
        self.engine.ledger().submit(b).await?;
        tracing::info!(provider = m.as_str(), merchant = %merchant, "marketplace connected");
        Ok(market_view(m, Some(&conn), Some(&progress)))
    }

    /// Removes a marketplace connection (its orders stay). 404 when there is none.
    pub async fn disconnect_market(
        &self,
        merchant: MerchantId,
        m: Marketplace,
    ) -> EngineResult<MarketView> {
        if self.market_connection(merchant, m).await?.is_none() {
            return Err(not_connected(m));
        }
        let key = conn_key(merchant, m);
        let mut b = WriteBatch::new();
        b.push(WriteOp::DeleteRecord {
            kind: CONN,
            key: key.clone(),
        });
        b.push(WriteOp::DeleteEntry {
            index: CONNS,
            partition: CONNS_PART.into(),
            sort: key,
        });
        self.engine.ledger().submit(b).await?;
        Ok(market_view(m, None, None))
    }

    /// A marketplace connection's status.
    pub async fn market_status(
        &self,
        merchant: MerchantId,
        m: Marketplace,
    ) -> EngineResult<MarketView> {
        let conn = self.market_connection(merchant, m).await?;
        let progress = match &conn {
            Some(_) => self.progress(merchant, m).await?,
            None => None,
        };
        Ok(market_view(m, conn.as_ref(), progress.as_ref()))
    }

    /// Every marketplace with this merchant's connection state.
    pub async fn market_statuses(&self, merchant: MerchantId) -> EngineResult<Vec<MarketView>> {
        let mut out = Vec::with_capacity(Marketplace::ALL.len());
        for m in Marketplace::ALL {
            out.push(self.market_status(merchant, *m).await?);
        }
        Ok(out)
    }

    /// Pulls recent orders now (limit 50), importing each platform order once. 409
    /// `sync_in_progress` while another sync of the connection runs (on any node).
    pub async fn sync_market(
        &self,
        merchant: MerchantId,
        m: Marketplace,
    ) -> EngineResult<SyncOutcome> {
        match self.sync_leased(merchant, m, Trigger::Manual).await? {
            Some(out) => Ok(out),
            None => Err(EngineError::Conflict {
                code: "sync_in_progress",
                message: format!(
                    "a sync of {} for this merchant is running; retry when it ends",
                    m.as_str()
                ),
            }),
        }
    }

    /// Runs one sync under the connection's lease; `None` when another holds it (or, for a
    /// scheduled run, when the connection is no longer due).
    pub(crate) async fn sync_leased(
        &self,
        merchant: MerchantId,
        m: Marketplace,
        trigger: Trigger,
    ) -> EngineResult<Option<SyncOutcome>> {
        let hot = self.engine.hot();
        let lease = format!("lm:sync:{merchant}:{}", m.as_str());
        let ttl = Duration::from_secs(self.cfg.sync.lease_ttl_secs.max(5));
        if !hot.acquire_lease(&lease, &self.sync.node, ttl).await? {
            return Ok(None);
        }
        let out = self.sync_once(merchant, m, trigger).await;
        if let Err(e) = hot.release_lease(&lease, &self.sync.node).await {
            tracing::warn!(error = %e, "releasing a sync lease failed; it lapses at its TTL");
        }
        out
    }

    async fn sync_once(
        &self,
        merchant: MerchantId,
        m: Marketplace,
        trigger: Trigger,
    ) -> EngineResult<Option<SyncOutcome>> {
        let conn = self
            .market_connection(merchant, m)
            .await?
            .ok_or_else(|| not_connected(m))?;
        let mut progress = self.progress(merchant, m).await?.unwrap_or_default();
        let started = self.engine.clock().now();
        // Re-read under the lease: another node may have just run it.
        if trigger == Trigger::Scheduled && progress.next_run_ms > started.ms() {
            return Ok(None);
        }
        let lookback = i64::try_from(self.cfg.sync.initial_lookback_secs).unwrap_or(0) * 1000;
        let since = progress.cursor_ms.unwrap_or(started.ms() - lookback);
        let fetched = self
            .sync
            .client
            .recent_orders(m, &conn.credentials, since, SYNC_LIMIT, started.ms())
            .await;
        let orders = match fetched {
            Ok(o) => o,
            Err(e) => {
                let err = market_error(m, e);
                self.record_failure(merchant, m, &mut progress, trigger, started, &err)
                    .await?;
                return Err(err);
            }
        };
        let mut out = self.import(merchant, m, &conn, orders).await?;
        let now = self.engine.clock().now();
        if let Some(c) = out.cursor {
            progress.cursor_ms = Some(progress.cursor_ms.unwrap_or(i64::MIN).max(c.ms()));
        }
        progress.failures = 0;
        progress.last_error = None;
        progress.last_run_ms = Some(now.ms());
        progress.last_success_ms = Some(now.ms());
        progress.next_run_ms = now.ms() + conn.interval_secs as i64 * 1000;
        progress.imported_total += out.created as u64;
        out.cursor = progress.cursor_ms.map(Timestamp);
        out.next_sync_at = Timestamp(progress.next_run_ms);
        // The cursor is written after the orders committed (`import`): a crash in between
        // refetches them, and the duplicate check makes that a no-op.
        let entry = log_entry(merchant, m, trigger, started, now, Some(&out), None);
        self.save_progress(merchant, m, &progress, &entry).await?;
        Ok(Some(out))
    }

    /// Validates and stores fetched orders (one ledger batch).
    async fn import(
        &self,
        merchant: MerchantId,
        m: Marketplace,
        conn: &Connection,
        orders: Vec<MarketOrder>,
    ) -> EngineResult<SyncOutcome> {
        let fetched = orders.len();
        let cursor = orders.iter().map(|o| o.placed_at_ms).max().map(Timestamp);
        let mut valid = Vec::with_capacity(fetched);
        let mut errors = Vec::new();
        for o in orders {
            let id = o.id.clone();
            match validate(order_input(o, conn.default_carrier.as_deref())) {
                Ok(v) => valid.push(v),
                Err(e) => errors.push(SyncRowError {
                    external_id: id,
                    reason: format!("`{}` {}", e.field, e.reason),
                }),
            }
        }
        let inserted = if valid.is_empty() {
            Vec::new()
        } else {
            self.insert_orders(merchant, m.as_str(), m.as_str(), valid, &|_| Vec::new())
                .await?
        };
        let mut out = SyncOutcome {
            provider: m.as_str().into(),
            fetched,
            created: 0,
            duplicates: 0,
            failed: errors.len(),
            errors,
            order_ids: Vec::new(),
            cursor,
            next_sync_at: Timestamp(0),
        };
        for i in inserted {
            match i {
                Inserted::Created(o) => {
                    out.created += 1;
                    out.order_ids.push(o.id.to_string());
                }
                Inserted::Duplicate { .. } => out.duplicates += 1,
            }
        }
        Ok(out)
    }

    async fn record_failure(
        &self,
        merchant: MerchantId,
        m: Marketplace,
        progress: &mut SyncProgress,
        trigger: Trigger,
        started: Timestamp,
        err: &EngineError,
    ) -> EngineResult<()> {
        let now = self.engine.clock().now();
        progress.failures = progress.failures.saturating_add(1);
        progress.last_error = Some(err.to_string());
        progress.last_run_ms = Some(now.ms());
        progress.next_run_ms =
            now.ms() + scheduler::backoff_secs(&self.cfg.sync, progress.failures) * 1000;
        tracing::info!(provider = m.as_str(), merchant = %merchant, failures = progress.failures,
            error = %err, "marketplace sync failed; backing off");
        let entry = log_entry(
            merchant,
            m,
            trigger,
            started,
            now,
            None,
            Some(err.to_string()),
        );
        self.save_progress(merchant, m, progress, &entry).await
    }

    async fn save_progress(
        &self,
        merchant: MerchantId,
        m: Marketplace,
        progress: &SyncProgress,
        entry: &SyncLogEntry,
    ) -> EngineResult<()> {
        let at = entry.finished_at;
        let mut b = WriteBatch::new();
        b.push(WriteOp::PutRecord {
            kind: STATE,
            key: conn_key(merchant, m),
            value: json(progress)?,
        });
        b.push(WriteOp::PutEntry {
            index: LOG,
            partition: crate::daily::day(at.ms()),
            sort: format!(
                "{:013}:{merchant}:{}:{}",
                at.ms().max(0),
                m.as_str(),
                hex::encode(rand::random::<[u8; 4]>())
            ),
            value: json(entry)?,
        });
        self.engine.ledger().submit(b).await?;
        Ok(())
    }

    /// The latest sync runs, newest first (at most [`LOG_MAX`]).
    pub async fn sync_log(&self, limit: usize) -> EngineResult<Vec<SyncLogEntry>> {
        let limit = limit.clamp(1, LOG_MAX);
        let now = self.engine.clock().now();
        let mut out = Vec::with_capacity(limit);
        for d in 0..LOG_DAYS {
            let day = crate::daily::day(now.ms() - d * 86_400_000);
            let rows = self
                .engine
                .ledger()
                .scan_entries(LOG, &day, &EntryRange::all(limit - out.len()).rev())
                .await?;
            for (_, v) in rows {
                if let Ok(e) = serde_json::from_slice::<SyncLogEntry>(&v) {
                    out.push(e);
                }
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    async fn market_connection(
        &self,
        merchant: MerchantId,
        m: Marketplace,
    ) -> EngineResult<Option<Connection>> {
        let raw = self
            .engine
            .ledger()
            .get_record(CONN, &conn_key(merchant, m))
            .await?;
        raw.map(|r| serde_json::from_slice(&r).map_err(|e| EngineError::Internal(e.to_string())))
            .transpose()
    }

    async fn progress(
        &self,
        merchant: MerchantId,
        m: Marketplace,
    ) -> EngineResult<Option<SyncProgress>> {
        let raw = self
            .engine
            .ledger()
            .get_record(STATE, &conn_key(merchant, m))
            .await?;
        raw.map(|r| serde_json::from_slice(&r).map_err(|e| EngineError::Internal(e.to_string())))
            .transpose()
    }
}

fn not_connected(m: Marketplace) -> EngineError {
    EngineError::Conflict {
        code: "integration_not_connected",
        message: format!(
            "connect {0} first: POST /api/integrations/{0}/connect",
            m.as_str()
        ),
    }
}

fn market_view(m: Marketplace, conn: Option<&Connection>, p: Option<&SyncProgress>) -> MarketView {
    MarketView {
        provider: m.as_str(),
        connected: conn.is_some(),
        mode: "pull",
        key_masked: conn.map(|c| mask(&c.credentials.key)),
        default_carrier: conn.and_then(|c| c.default_carrier.clone()),
        sync_interval_secs: conn.map(|c| c.interval_secs),
        connected_at: conn.map(|c| c.connected_at),
        last_sync_at: p.and_then(|p| p.last_run_ms).map(Timestamp),
        last_success_at: p.and_then(|p| p.last_success_ms).map(Timestamp),
        next_sync_at: p
            .filter(|_| conn.is_some())
            .map(|p| Timestamp(p.next_run_ms)),
        failures: p.map_or(0, |p| p.failures),
        last_error: p.and_then(|p| p.last_error.clone()),
        cursor: p.and_then(|p| p.cursor_ms).map(Timestamp),
        imported_total: p.map_or(0, |p| p.imported_total),
    }
}

fn log_entry(
    merchant: MerchantId,
    m: Marketplace,
    trigger: Trigger,
    started: Timestamp,
    finished: Timestamp,
    out: Option<&SyncOutcome>,
    error: Option<String>,
) -> SyncLogEntry {
    SyncLogEntry {
        merchant_id: merchant,
        provider: m.as_str().into(),
        trigger: trigger.as_str().into(),
        status: if error.is_some() { "error" } else { "ok" }.into(),
        started_at: started,
        finished_at: finished,
        fetched: out.map_or(0, |o| o.fetched),
        created: out.map_or(0, |o| o.created),
        duplicates: out.map_or(0, |o| o.duplicates),
        failed: out.map_or(0, |o| o.failed),
        error,
    }
}
