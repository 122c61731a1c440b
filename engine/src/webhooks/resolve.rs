//! Which endpoints a merchant's events go to: its API endpoints plus the distinct `endpoint`
//! URLs of its service manifests in that mode. Resolved from the ledger and cached for
//! `endpoint_cache_ms` (changes made through this node's API drop the entry at once). Each
//! resolution carries the outbox's endpoint epoch from before its read, so the outbox can tell
//! whether "no endpoint" is still current.

use super::Outbox;
use super::model::{
    self, ENDPOINT, ENDPOINTS_BY_MERCHANT, Endpoint, EndpointSource, EndpointStatus, EndpointView,
    MANIFEST_DISABLED,
};
use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::ids::MerchantId;
use crate::model::{Secret, ServiceStatus};
use crate::store::{EntryRange, Ledger, PageRequest};
use dashmap::DashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most manifests looked at per merchant and mode.
const MAX_MANIFESTS: usize = 1_000;
/// Most API endpoints read per merchant and mode (the create limit is lower).
const MAX_ENDPOINTS_READ: usize = 256;

/// One place events can be sent, with what is needed to sign for it.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: String,
    pub url: String,
    pub source: EndpointSource,
    pub enabled_events: Vec<String>,
    pub enabled: bool,
    pub secret: Secret,
    pub previous_secret: Option<(Secret, i64)>,
    pub view: EndpointView,
}

impl Target {
    /// Whether this endpoint wants events of `event_type`.
    pub fn wants(&self, event_type: &str) -> bool {
        self.enabled_events
            .iter()
            .any(|e| e == "*" || e == event_type)
    }

    /// The secrets that sign at `now_ms`, oldest first.
    pub fn signing_secrets(&self, now_ms: i64) -> Vec<&str> {
        let mut v = Vec::with_capacity(2);
        if let Some((s, until)) = &self.previous_secret
            && *until > now_ms
        {
            v.push(s.expose());
        }
        v.push(self.secret.expose());
        v
    }
}

/// The endpoints of one merchant and mode.
#[derive(Debug, Default)]
pub struct Resolved {
    pub targets: Vec<Arc<Target>>,
    /// [`Outbox::endpoint_epoch`] when the read started.
    pub epoch: u64,
}

impl Resolved {
    /// The endpoint with this id.
    pub fn find(&self, id: &str) -> Option<Arc<Target>> {
        self.targets.iter().find(|t| t.id == id).cloned()
    }
}

/// The cache.
pub struct Resolver {
    ttl: Duration,
    cache: DashMap<(MerchantId, bool), (Instant, Arc<Resolved>)>,
    outbox: Arc<Outbox>,
}

impl Resolver {
    /// A cache keeping resolutions for `ttl`, stamped with `outbox`'s endpoint epoch.
    pub fn new(ttl: Duration, outbox: Arc<Outbox>) -> Self {
        Resolver {
            ttl,
            cache: DashMap::new(),
            outbox,
        }
    }

    /// Forgets a merchant's endpoints (after a change on this node).
    pub fn invalidate(&self, merchant: MerchantId, livemode: bool) {
        self.cache.remove(&(merchant, livemode));
    }

    /// The endpoints, from the cache unless `fresh`.
    pub async fn get(
        &self,
        ledger: &dyn Ledger,
        merchant: MerchantId,
        livemode: bool,
        fresh: bool,
    ) -> Result<Arc<Resolved>, StoreError> {
        if !fresh
            && let Some(e) = self.cache.get(&(merchant, livemode))
            && e.0.elapsed() < self.ttl
        {
            return Ok(e.1.clone());
        }
        let epoch = self.outbox.endpoint_epoch();
        let mut r = load(ledger, merchant, livemode).await?;
        r.epoch = epoch;
        let r = Arc::new(r);
        self.cache
            .insert((merchant, livemode), (Instant::now(), r.clone()));
        Ok(r)
    }
}

/// Reads one API endpoint record.
pub async fn get_endpoint(ledger: &dyn Ledger, id: &str) -> Result<Option<Endpoint>, StoreError> {
    match ledger.get_record(ENDPOINT, id).await? {
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| StoreError(format!("bad webhook endpoint record {id}: {e}"))),
        None => Ok(None),
    }
}

/// The API view of a stored endpoint.
pub fn view_of(e: &Endpoint) -> EndpointView {
    EndpointView {
        id: e.id.clone(),
        url: e.url.clone(),
        source: EndpointSource::Api,
        description: e.description.clone(),
        enabled_events: e.enabled_events.clone(),
        status: e.status,
        disabled_reason: e.disabled_reason.clone(),
        previous_secret_expires: e.previous_secret_expires,
        livemode: e.livemode,
        created: Some(e.created),
    }
}

async fn load(
    ledger: &dyn Ledger,
    merchant: MerchantId,
    livemode: bool,
) -> Result<Resolved, StoreError> {
    let mut targets = Vec::new();
    let part = model::merchant_partition(merchant, livemode);
    for (id, _) in ledger
        .scan_entries(
            ENDPOINTS_BY_MERCHANT,
            &part,
            &EntryRange::all(MAX_ENDPOINTS_READ),
        )
        .await?
    {
        if let Some(e) = get_endpoint(ledger, &id).await? {
            targets.push(Arc::new(Target {
                id: e.id.clone(),
                url: e.url.clone(),
                source: EndpointSource::Api,
                enabled_events: e.enabled_events.clone(),
                enabled: e.status == EndpointStatus::Enabled,
                secret: e.secret.clone(),
                previous_secret: e
                    .previous_secret
                    .clone()
                    .zip(e.previous_secret_expires.map(|t| t.ms())),
                view: view_of(&e),
            }));
        }
    }
    let mut offset = 0;
    let mut manifests: Vec<(String, String, Timestamp)> = Vec::new();
    while offset < MAX_MANIFESTS {
        let page = ledger
            .list_services(merchant, livemode, PageRequest { limit: 100, offset })
            .await?;
        let n = page.data.len();
        for s in page.data {
            if s.status == ServiceStatus::Deleted {
                continue;
            }
            if let Some(url) = s.endpoint
                && !manifests.iter().any(|(_, u, _)| *u == url)
            {
                manifests.push((s.id.to_string(), url, s.created));
            }
        }
        offset += n;
        if n == 0 || offset as u64 >= page.total {
            break;
        }
    }
    if !manifests.is_empty() {
        let Some(m) = ledger.get_merchant(merchant).await? else {
            return Ok(Resolved { targets, epoch: 0 });
        };
        for (id, url, created) in manifests {
            let disabled = ledger
                .get_record(MANIFEST_DISABLED, &id)
                .await?
                .is_some_and(|u| u == url.as_bytes());
            targets.push(Arc::new(Target {
                id: id.clone(),
                url: url.clone(),
                source: EndpointSource::Manifest,
                enabled_events: vec!["*".into()],
                enabled: !disabled,
                secret: m.webhook_secret.clone(),
                previous_secret: None,
                view: EndpointView {
                    id,
                    url,
                    source: EndpointSource::Manifest,
                    description: None,
                    enabled_events: vec!["*".into()],
                    status: if disabled {
                        EndpointStatus::Disabled
                    } else {
                        EndpointStatus::Enabled
                    },
                    disabled_reason: disabled.then(|| "answered 410 Gone".to_string()),
                    previous_secret_expires: None,
                    livemode,
                    created: Some(created),
                },
            }));
        }
    }
    Ok(Resolved { targets, epoch: 0 })
}
