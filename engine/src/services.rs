//! Service manifests: creating, updating, reading, listing and moving them through their
//! lifecycle, and the cache of manifests that payment creation reads.
//!
//! The manifest's own rules (field validation, lifecycle table) live in
//! [`crate::model::service`]; this module adds ownership, name uniqueness and storage.

use crate::auth::AuthContext;
use crate::clock::Clock;
use crate::config::Limits;
use crate::error::{EngineError, EngineResult};
use crate::ids::ServiceId;
use crate::merchants::MerchantLocks;
use crate::model::service::next_service_status;
use crate::model::{Permission, Service, ServiceAction, ServiceInput, ServiceStatus};
use crate::paging::page;
use crate::store::{Ledger, Page, PageRequest, WriteBatch, WriteOp};
use crate::url_policy::UrlPolicy;
use dashmap::DashMap;
use std::sync::Arc;

/// Manifest management of one engine.
pub(crate) struct Services {
    ledger: Arc<dyn Ledger>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    locks: Arc<MerchantLocks>,
    /// Which webhook URLs a manifest may name.
    url_policy: UrlPolicy,
    /// Manifests by id, used only when the ledger is not shared: then every manifest write goes
    /// through this engine and updates the entry after its commit, so the cache is never stale.
    cache: DashMap<ServiceId, Arc<Service>>,
}

impl Services {
    /// Manifest management on these stores.
    pub(crate) fn new(
        ledger: Arc<dyn Ledger>,
        clock: Arc<dyn Clock>,
        limits: Limits,
        locks: Arc<MerchantLocks>,
        url_policy: UrlPolicy,
    ) -> Self {
        Services {
            ledger,
            clock,
            limits,
            locks,
            url_policy,
            cache: DashMap::new(),
        }
    }

    /// Creates a manifest, or updates the one named by `id` or by the same `name`: only the
    /// fields given change. Returns the manifest and whether it was created.
    pub(crate) async fn upsert(
        &self,
        ctx: &AuthContext,
        input: ServiceInput,
    ) -> EngineResult<(Service, bool)> {
        ctx.require(Permission::ServicesWrite)?;
        input.validate(&self.url_policy)?;
        let _guard = self.locks.lock(ctx.merchant_id).await;
        let now = self.clock.now();
        let (service, created) = match self.existing(ctx, &input).await? {
            Some(mut s) => {
                self.check_rename(ctx, &s, &input).await?;
                input.apply_to(&mut s, now);
                (s, false)
            }
            None => {
                let mut s = Service {
                    id: ServiceId::new_at(now.ms()),
                    name: String::new(),
                    description: None,
                    payment_methods: Default::default(),
                    pricing: Default::default(),
                    accepted_channels: vec![],
                    qr_mode: Default::default(),
                    settlement_currency: None,
                    endpoint: None,
                    tags: vec![],
                    status: ServiceStatus::Draft,
                    livemode: ctx.livemode,
                    merchant_id: ctx.merchant_id,
                    created: now,
                    updated: now,
                };
                input.apply_to(&mut s, now);
                (s, true)
            }
        };
        self.put(&service).await?;
        Ok((service, created))
    }

    /// The manifest an upsert changes: the one with the given id, else the one with the given
    /// name, else none (a create, which needs a name).
    async fn existing(
        &self,
        ctx: &AuthContext,
        input: &ServiceInput,
    ) -> EngineResult<Option<Service>> {
        match (&input.id, &input.name) {
            (Some(id), _) => Ok(Some(self.owned(ctx, *id).await?)),
            (None, Some(name)) => Ok(self
                .ledger
                .find_service_by_name(ctx.merchant_id, ctx.livemode, name.trim())
                .await?),
            (None, None) => Err(EngineError::invalid(
                "parameter_missing",
                "name",
                "name is required to create a service",
            )),
        }
    }

    /// Refuses renaming `s` to a name another of the merchant's manifests already has.
    async fn check_rename(
        &self,
        ctx: &AuthContext,
        s: &Service,
        input: &ServiceInput,
    ) -> EngineResult<()> {
        if let Some(new_name) = input.name.as_deref().map(str::trim)
            && new_name != s.name
            && let Some(other) = self
                .ledger
                .find_service_by_name(ctx.merchant_id, ctx.livemode, new_name)
                .await?
            && other.id != s.id
        {
            return Err(EngineError::Conflict {
                code: "service_name_taken",
                message: format!("another service is already named `{new_name}`"),
            });
        }
        Ok(())
    }

    async fn put(&self, s: &Service) -> EngineResult<()> {
        let mut b = WriteBatch::new();
        b.push(WriteOp::PutService(s.clone()));
        self.ledger.submit(b).await?;
        self.cache.insert(s.id, Arc::new(s.clone()));
        Ok(())
    }

    /// A manifest by id, from the cache or the ledger. The cache is used only when this process
    /// is the ledger's sole writer: with a shared ledger another node may have changed it.
    pub(crate) async fn load(&self, id: ServiceId) -> EngineResult<Option<Arc<Service>>> {
        let cache = !self.ledger.shared();
        if cache && let Some(s) = self.cache.get(&id) {
            return Ok(Some(s.clone()));
        }
        let Some(s) = self.ledger.get_service(id).await? else {
            return Ok(None);
        };
        let s = Arc::new(s);
        if cache {
            self.cache.insert(id, s.clone());
        }
        Ok(Some(s))
    }

    /// The caller's manifest `id`, unless deleted.
    pub(crate) async fn owned_arc(
        &self,
        ctx: &AuthContext,
        id: ServiceId,
    ) -> EngineResult<Option<Arc<Service>>> {
        Ok(self
            .load(id)
            .await?
            .filter(|s| ctx.owns(s.merchant_id, s.livemode) && s.status != ServiceStatus::Deleted))
    }

    async fn owned(&self, ctx: &AuthContext, id: ServiceId) -> EngineResult<Service> {
        match self.owned_arc(ctx, id).await? {
            Some(s) => Ok((*s).clone()),
            None => Err(EngineError::not_found("service", id)),
        }
    }

    /// One manifest.
    pub(crate) async fn get(&self, ctx: &AuthContext, id: &str) -> EngineResult<Service> {
        ctx.require(Permission::ServicesRead)?;
        let sid = ServiceId::parse(id).map_err(|_| EngineError::not_found("service", id))?;
        self.owned(ctx, sid).await
    }

    /// The caller's manifests, newest first.
    pub(crate) async fn list(
        &self,
        ctx: &AuthContext,
        limit: Option<usize>,
        offset: Option<usize>,
    ) -> EngineResult<(Page<Service>, PageRequest)> {
        ctx.require(Permission::ServicesRead)?;
        let p = page(&self.limits, limit, offset)?;
        Ok((
            self.ledger
                .list_services(ctx.merchant_id, ctx.livemode, p)
                .await?,
            p,
        ))
    }

    /// Moves a manifest through its lifecycle.
    pub(crate) async fn act(
        &self,
        ctx: &AuthContext,
        id: &str,
        action: ServiceAction,
    ) -> EngineResult<Service> {
        ctx.require(Permission::ServicesWrite)?;
        let sid = ServiceId::parse(id).map_err(|_| EngineError::not_found("service", id))?;
        let _guard = self.locks.lock(ctx.merchant_id).await;
        let mut s = self.owned(ctx, sid).await?;
        s.status = next_service_status(s.status, action)?;
        s.updated = self.clock.now();
        self.put(&s).await?;
        Ok(s)
    }
}
