//! API keys after a merchant exists: issuing, listing, revoking and rotating them and changing
//! their IP whitelist, within the caller's own permissions and the per-mode key limit.
//!
//! It does not check a presented secret (see [`crate::auth`]); it only tells the
//! authenticator to forget keys it revokes.

use crate::auth::{AuthContext, Authenticator};
use crate::clock::Clock;
use crate::config::Limits;
use crate::error::{EngineError, EngineResult};
use crate::ids::ApiKeyId;
use crate::merchants::MerchantLocks;
use crate::model::merchant::{self, ApiKeyInput, generate_api_secret};
use crate::model::{ApiKey, Permission};
use crate::paging::page;
use crate::store::{Ledger, Page, PageRequest, WriteBatch, WriteOp};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Longest grace period of a rotation: seven days, in seconds.
const MAX_GRACE_SECS: i64 = 7 * 86_400;

/// A new or rotated API key with its secret, shown once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKeyWithSecret {
    /// The key as listed later (secret redacted).
    #[serde(flatten)]
    pub key: ApiKey,
    /// The secret. Shown only in this response; store it now.
    pub secret: String,
}

/// The parts of an existing key that may change (`PATCH /v1/api-keys/{id}`).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyUpdate {
    /// The new IP whitelist, replacing the old one: IPv4/IPv6 addresses or CIDRs (at most 50);
    /// an empty list allows any address.
    pub ip_whitelist: Vec<String>,
}

/// Key management of one engine.
pub(crate) struct ApiKeys {
    ledger: Arc<dyn Ledger>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    locks: Arc<MerchantLocks>,
    auth: Arc<Authenticator>,
}

/// What a new key is made of.
struct NewKey {
    label: String,
    permissions: Vec<Permission>,
    ip_whitelist: Vec<ipnet::IpNet>,
    days: i64,
}

impl ApiKeys {
    /// Key management on these stores.
    pub(crate) fn new(
        ledger: Arc<dyn Ledger>,
        clock: Arc<dyn Clock>,
        limits: Limits,
        locks: Arc<MerchantLocks>,
        auth: Arc<Authenticator>,
    ) -> Self {
        ApiKeys {
            ledger,
            clock,
            limits,
            locks,
            auth,
        }
    }

    /// Creates a key in the caller's mode. It may not carry permissions the caller lacks.
    pub(crate) async fn create(
        &self,
        ctx: &AuthContext,
        input: ApiKeyInput,
    ) -> EngineResult<ApiKeyWithSecret> {
        ctx.require(Permission::ApiKeysWrite)?;
        let parsed = input.parse()?;
        let permissions = parsed
            .permissions
            .clone()
            .unwrap_or_else(|| ctx.key.permissions.clone());
        require_all(ctx, &permissions)?;
        let _guard = self.locks.lock(ctx.merchant_id).await;
        self.check_key_limit(ctx).await?;
        self.insert(
            ctx,
            NewKey {
                label: parsed.label,
                permissions,
                ip_whitelist: parsed.ip_whitelist,
                days: parsed.expires_in_days,
            },
        )
        .await
    }

    /// Refuses a new key when the merchant already has the maximum of usable (neither revoked
    /// nor expired) keys in this mode.
    async fn check_key_limit(&self, ctx: &AuthContext) -> EngineResult<()> {
        let now = self.clock.now();
        let keys = self
            .ledger
            .list_api_keys(ctx.merchant_id, ctx.livemode)
            .await?;
        let usable = keys.iter().filter(|k| k.is_live(now)).count();
        if usable >= merchant::MAX_KEYS_PER_MERCHANT {
            return Err(EngineError::Conflict {
                code: "too_many_keys",
                message: format!(
                    "at most {} usable keys per mode; revoke unused keys first",
                    merchant::MAX_KEYS_PER_MERCHANT
                ),
            });
        }
        Ok(())
    }

    async fn insert(&self, ctx: &AuthContext, new: NewKey) -> EngineResult<ApiKeyWithSecret> {
        let now = self.clock.now();
        let s = generate_api_secret(ctx.livemode);
        let key = ApiKey {
            id: ApiKeyId::new_at(now.ms()),
            label: new.label,
            redacted: s.redacted,
            permissions: new.permissions,
            ip_whitelist: new.ip_whitelist,
            livemode: ctx.livemode,
            merchant_id: ctx.merchant_id,
            created: now,
            expires_at: now.plus_secs(new.days * 86_400),
            revoked_at: None,
        };
        let mut b = WriteBatch::new();
        b.push(WriteOp::PutApiKey {
            key: key.clone(),
            secret_hash: Some(s.hash),
        });
        self.ledger.submit(b).await?;
        Ok(ApiKeyWithSecret {
            key,
            secret: s.secret.expose().to_string(),
        })
    }

    /// The caller's keys in the caller's mode, newest first.
    pub(crate) async fn list(
        &self,
        ctx: &AuthContext,
        limit: Option<usize>,
        offset: Option<usize>,
    ) -> EngineResult<(Page<ApiKey>, PageRequest)> {
        ctx.require(Permission::ApiKeysRead)?;
        let p = page(&self.limits, limit, offset)?;
        // A merchant has at most a few hundred keys per mode, so paging in memory is fine.
        let all = self
            .ledger
            .list_api_keys(ctx.merchant_id, ctx.livemode)
            .await?;
        let total = all.len() as u64;
        let data = all.into_iter().skip(p.offset).take(p.limit).collect();
        Ok((Page { data, total }, p))
    }

    async fn owned(&self, ctx: &AuthContext, id: &str) -> EngineResult<ApiKey> {
        let kid = ApiKeyId::parse(id).map_err(|_| EngineError::not_found("API key", id))?;
        match self.ledger.get_api_key(kid).await? {
            Some(k) if ctx.owns(k.merchant_id, k.livemode) => Ok(k),
            _ => Err(EngineError::not_found("API key", id)),
        }
    }

    /// Stores a changed key (never its secret hash again) and drops it from every cache.
    async fn put_changed(&self, key: &ApiKey) -> EngineResult<()> {
        let mut b = WriteBatch::new();
        b.push(WriteOp::PutApiKey {
            key: key.clone(),
            secret_hash: None,
        });
        self.ledger.submit(b).await?;
        self.auth.forget(key.id);
        Ok(())
    }

    /// Revokes a key at once. Revoking a revoked key returns it unchanged.
    pub(crate) async fn revoke(&self, ctx: &AuthContext, id: &str) -> EngineResult<ApiKey> {
        ctx.require(Permission::ApiKeysWrite)?;
        let _guard = self.locks.lock(ctx.merchant_id).await;
        let mut key = self.owned(ctx, id).await?;
        let now = self.clock.now();
        if key.revoked_at.is_some_and(|r| r <= now) {
            return Ok(key);
        }
        key.revoked_at = Some(now);
        self.put_changed(&key).await?;
        Ok(key)
    }

    /// Replaces the IP whitelist of a usable key. The change applies to the next request on
    /// every node: the key is dropped from every authentication cache.
    pub(crate) async fn update(
        &self,
        ctx: &AuthContext,
        id: &str,
        update: ApiKeyUpdate,
    ) -> EngineResult<ApiKey> {
        ctx.require(Permission::ApiKeysWrite)?;
        let nets = merchant::parse_ip_whitelist(&update.ip_whitelist)?;
        let _guard = self.locks.lock(ctx.merchant_id).await;
        let mut key = self.owned(ctx, id).await?;
        if key.revoked_at.is_some_and(|r| r <= self.clock.now()) {
            return Err(EngineError::InvalidStateTransition {
                object: "API key",
                from: "revoked".into(),
                action: "update".into(),
            });
        }
        // Widening a stronger key's whitelist would let the caller's network use rights the
        // caller does not hold.
        require_all(ctx, &key.permissions)?;
        key.ip_whitelist = nets;
        self.put_changed(&key).await?;
        Ok(key)
    }

    /// Issues a new key with the same label, permissions and whitelist, and revokes the old one
    /// after `grace_secs` (0 to 7 days; default 0 = at once).
    pub(crate) async fn rotate(
        &self,
        ctx: &AuthContext,
        id: &str,
        grace_secs: Option<i64>,
    ) -> EngineResult<ApiKeyWithSecret> {
        ctx.require(Permission::ApiKeysWrite)?;
        let grace = grace_secs.unwrap_or(0);
        if !(0..=MAX_GRACE_SECS).contains(&grace) {
            return Err(EngineError::invalid(
                "parameter_invalid",
                "grace_period_seconds",
                "grace_period_seconds must be between 0 and 604800",
            ));
        }
        let _guard = self.locks.lock(ctx.merchant_id).await;
        let mut old = self.owned(ctx, id).await?;
        let now = self.clock.now();
        if old.revoked_at.is_some_and(|r| r <= now) {
            return Err(EngineError::InvalidStateTransition {
                object: "API key",
                from: "revoked".into(),
                action: "rotate".into(),
            });
        }
        // Rotation issues a new secret with the old key's permissions: the caller must hold
        // them all, or rotating a stronger key would hand out more than the caller has.
        require_all(ctx, &old.permissions)?;
        if grace > 0 {
            self.check_key_limit(ctx).await?;
        }
        let fresh = self
            .insert(
                ctx,
                NewKey {
                    label: old.label.clone(),
                    permissions: old.permissions.clone(),
                    ip_whitelist: old.ip_whitelist.clone(),
                    days: merchant::DEFAULT_KEY_TTL_DAYS,
                },
            )
            .await?;
        old.revoked_at = Some(now.plus_secs(grace));
        self.put_changed(&old).await?;
        Ok(fresh)
    }
}

/// Fails with `permission_denied` naming the first of `permissions` the caller lacks.
fn require_all(ctx: &AuthContext, permissions: &[Permission]) -> EngineResult<()> {
    match permissions.iter().find(|p| !ctx.key.allows(**p)) {
        Some(p) => Err(EngineError::PermissionDenied {
            permission: p.as_str().to_string(),
        }),
        None => Ok(()),
    }
}
