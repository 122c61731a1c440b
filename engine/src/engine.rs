//! The engine facade: every business operation the gateway (or the CLI) can ask for, with
//! authorization, validation, idempotency and routing to payment sessions. It knows nothing
//! about HTTP; callers parse, call one method here, and map the result.

use crate::channel::{
    CallbackAck, CallbackError, CallbackOutcome, ChannelAdapter, ChannelError,
    ChannelPaymentRequest, SandboxChannel,
};
use crate::channels::{
    ChannelConfigInput, ChannelHub, ChannelSetup, ChannelView, MAX_NOTIFICATION_ID_LEN,
};
use crate::clock::{Clock, Timestamp};
use crate::error::{EngineError, EngineResult};
use crate::ids::{ApiKeyId, EventId, MerchantId, PaymentIntentId, RefundId, ServiceId};
use crate::model::merchant::{
    self, ApiKeyInput, generate_api_secret, generate_webhook_secret, hash_secret,
};
use crate::model::service::{KNOWN_CHANNELS, next_service_status};
use crate::model::{
    ApiKey, Event, IntentCommand, IntentStatus, Merchant, PaymentIntent, Permission, Refund,
    Service, ServiceAction, ServiceInput, ServiceStatus,
};
use crate::money::Money;
use crate::session::{Created, IdempotencySpec, SessionConfig, SessionContext, SessionRegistry};
use crate::store::{
    EventQuery, HotState, IntentQuery, Ledger, Page, PageRequest, WriteBatch, WriteOp,
};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Limits on request content (`[limits]` in `ipay.toml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Most metadata keys on an intent.
    pub metadata_max_keys: usize,
    /// Longest metadata key, characters.
    pub metadata_max_key_len: usize,
    /// Longest metadata value (a string), characters.
    pub metadata_max_value_len: usize,
    /// Shortest allowed `expires_in`, seconds.
    pub expires_in_min_secs: i64,
    /// Longest allowed `expires_in`, seconds.
    pub expires_in_max_secs: i64,
    /// `expires_in` when the request gives none, seconds.
    pub expires_in_default_secs: i64,
    /// How long an idempotency key and its stored response are kept, hours.
    pub idempotency_ttl_hours: i64,
    /// Longest a request waits for another request holding the same idempotency key, ms.
    pub idempotency_wait_ms: u64,
    /// Largest `limit` a list accepts.
    pub max_page_size: usize,
    /// How long a looked-up API key is trusted before it is read again, ms.
    pub key_cache_ttl_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            metadata_max_keys: 50,
            metadata_max_key_len: 40,
            metadata_max_value_len: 500,
            expires_in_min_secs: 60,
            expires_in_max_secs: 86_400,
            expires_in_default_secs: 900,
            idempotency_ttl_hours: 24,
            idempotency_wait_ms: 10_000,
            max_page_size: 100,
            key_cache_ttl_ms: 30_000,
        }
    }
}

/// Engine settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    pub sessions: SessionConfig,
    pub limits: Limits,
    /// Which webhook URLs manifests may name; built from `[webhooks]`, not a section of its own.
    #[serde(skip)]
    pub url_policy: crate::url_policy::UrlPolicy,
}

/// Who is calling: the merchant, the key's mode and the key itself.
#[derive(Debug, Clone)]
pub struct AuthContext {
    pub merchant_id: MerchantId,
    pub livemode: bool,
    pub key: ApiKey,
}

impl AuthContext {
    /// Fails with `permission_denied` unless the key carries `p`.
    pub fn require(&self, p: Permission) -> EngineResult<()> {
        if self.key.allows(p) {
            Ok(())
        } else {
            Err(EngineError::PermissionDenied {
                permission: p.as_str().to_string(),
            })
        }
    }

    fn owns(&self, merchant: MerchantId, livemode: bool) -> bool {
        self.merchant_id == merchant && self.livemode == livemode
    }
}

/// A new merchant's credentials, shown once.
#[derive(Debug, Serialize)]
pub struct MerchantCredentials {
    pub merchant_id: MerchantId,
    pub name: String,
    pub test_key_id: ApiKeyId,
    pub test_secret_key: String,
    pub live_key_id: ApiKeyId,
    pub live_secret_key: String,
    pub webhook_secret: String,
}

/// A new or rotated API key with its secret, shown once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKeyWithSecret {
    #[serde(flatten)]
    pub key: ApiKey,
    /// The secret. Shown only in this response; store it now.
    pub secret: String,
}

/// An amount as it arrives on the wire, validated into [`Money`] by the engine.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AmountInput {
    /// Minor units, a positive integer.
    pub value: i64,
    /// ISO 4217 code.
    pub currency: String,
}

/// `POST /v1/payment-intents` body.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIntentRequest {
    pub service_id: String,
    pub amount: AmountInput,
    pub channel: String,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// Seconds until the intent expires (default 900).
    #[serde(default)]
    pub expires_in: Option<i64>,
}

impl CreateIntentRequest {
    /// The same request in one canonical spelling, for comparing idempotent retries: empty
    /// metadata equals no metadata, and a service id written bare, with `svc_` or as a UUID is
    /// one id.
    fn normalized(&self) -> CreateIntentRequest {
        let mut n = self.clone();
        if n.metadata.as_ref().is_some_and(|m| m.is_empty()) {
            n.metadata = None;
        }
        if let Ok(id) = ServiceId::parse(&n.service_id) {
            n.service_id = id.to_string();
        }
        n
    }
}

/// `POST /v1/refunds` body.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefundRequest {
    pub payment_intent: String,
    /// Defaults to everything still refundable.
    #[serde(default)]
    pub amount: Option<AmountInput>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// The response of an idempotent create: fresh, or replayed from the first request.
#[derive(Debug, Clone)]
pub struct IdempotentOutcome {
    pub status: u16,
    pub body: String,
    pub replayed: bool,
}

/// Hot-state channel on which nodes announce revoked or rotated API keys (cluster mode).
const KEYS_CHANNEL: &str = "ipay:api-keys:changed";

struct CachedKey {
    key: ApiKey,
    loaded: Instant,
}

/// The engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    ledger: Arc<dyn Ledger>,
    hot: Arc<dyn HotState>,
    clock: Arc<dyn Clock>,
    sessions: SessionRegistry,
    /// Built-in channels every merchant may use without configuring them (`sandbox`).
    channels: DashMap<&'static str, Arc<dyn ChannelAdapter>>,
    /// Merchant-configured channels, breakers and callbacks; set once (see
    /// [`Engine::set_channels`]), or defaulted without adapters on first use.
    hub: OnceLock<Arc<ChannelHub>>,
    config: EngineConfig,
    key_cache: DashMap<[u8; 32], CachedKey>,
    /// Manifests by id, used only when the ledger is not shared: then every manifest write goes
    /// through this engine and updates the entry after its commit, so the cache is never stale.
    service_cache: DashMap<ServiceId, Arc<Service>>,
    merchant_locks: DashMap<MerchantId, Arc<tokio::sync::Mutex<()>>>,
}

/// Creates a merchant with a test key, a live key and a webhook secret. Works on a ledger with
/// no engine running (the `ipay merchants create` command).
pub async fn create_merchant(
    ledger: &dyn Ledger,
    clock: &dyn Clock,
    name: &str,
) -> EngineResult<MerchantCredentials> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(EngineError::invalid(
            "parameter_invalid",
            "name",
            "merchant name must be 1 to 200 characters",
        ));
    }
    let now = clock.now();
    let merchant = Merchant {
        id: MerchantId::new_at(now.ms()),
        name: name.to_string(),
        webhook_secret: generate_webhook_secret(),
        created: now,
    };
    let mut batch = WriteBatch::new();
    let mut keys = Vec::new();
    for livemode in [false, true] {
        let s = generate_api_secret(livemode);
        let key = ApiKey {
            id: ApiKeyId::new_at(now.ms()),
            label: if livemode {
                "default live key".into()
            } else {
                "default test key".into()
            },
            redacted: s.redacted,
            permissions: Permission::ALL.to_vec(),
            ip_whitelist: vec![],
            livemode,
            merchant_id: merchant.id,
            created: now,
            expires_at: now.plus_secs(merchant::DEFAULT_KEY_TTL_DAYS * 86_400),
            revoked_at: None,
        };
        keys.push((key.id, s.secret));
        batch.push(WriteOp::PutApiKey {
            key,
            secret_hash: Some(s.hash),
        });
    }
    batch.push(WriteOp::PutMerchant(merchant.clone()));
    ledger.submit(batch).await?;
    let (test, live) = (&keys[0], &keys[1]);
    Ok(MerchantCredentials {
        merchant_id: merchant.id,
        name: merchant.name,
        test_key_id: test.0,
        test_secret_key: test.1.expose().to_string(),
        live_key_id: live.0,
        live_secret_key: live.1.expose().to_string(),
        webhook_secret: merchant.webhook_secret.expose().to_string(),
    })
}

fn page(limits: &Limits, limit: Option<usize>, offset: Option<usize>) -> EngineResult<PageRequest> {
    let limit = limit.unwrap_or(20);
    if limit == 0 || limit > limits.max_page_size {
        return Err(EngineError::invalid(
            "parameter_invalid",
            "limit",
            format!("limit must be between 1 and {}", limits.max_page_size),
        ));
    }
    let offset = offset.unwrap_or(0);
    if offset > 1_000_000 {
        return Err(EngineError::invalid(
            "parameter_invalid",
            "offset",
            "offset must be at most 1000000",
        ));
    }
    Ok(PageRequest { limit, offset })
}

/// Query of `GET /v1/payment-intents`; validated by [`Engine::list_intents`].
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct IntentListParams {
    /// 1 to 100, default 20.
    pub limit: Option<usize>,
    /// Default 0.
    pub offset: Option<usize>,
    /// pending | succeeded | failed | expired | cancelled
    pub status: Option<String>,
    pub channel: Option<String>,
    /// RFC 3339 time or `YYYY-MM-DD` (inclusive).
    pub created_after: Option<String>,
    /// RFC 3339 time or `YYYY-MM-DD` (exclusive).
    pub created_before: Option<String>,
    /// `created:desc` (default) or `created:asc`.
    pub sort: Option<String>,
}

/// A channel's name as people write it, for messages (`alipay` → `Alipay`).
fn display_name(channel: &str) -> String {
    match channel {
        "wechat" => "WeChat Pay".into(),
        "promptpay" => "PromptPay".into(),
        "multisafepay" => "MultiSafepay".into(),
        other => {
            let mut c = other.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect())
                .unwrap_or_default()
        }
    }
}

fn callback_error(e: CallbackError) -> EngineError {
    match e {
        CallbackError::SignatureMismatch(m) => {
            EngineError::invalid("signature_mismatch", "signature", m)
        }
        CallbackError::Stale(m) => EngineError::invalid("timestamp_stale", "timestamp", m),
        CallbackError::Malformed(m) => EngineError::Invalid {
            code: "parameter_invalid",
            message: m,
            param: None,
        },
    }
}

fn canonical_hash<T: Serialize>(body: &T) -> String {
    // serde_json maps are ordered by key, so equal requests serialize to equal bytes.
    let v = serde_json::to_value(body).unwrap_or_default();
    hex::encode(Sha256::digest(serde_json::to_vec(&v).unwrap_or_default()))
}

fn validate_idempotency_key(k: &str) -> EngineResult<()> {
    if k.is_empty() || k.len() > 255 || !k.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(EngineError::invalid(
            "parameter_invalid",
            "Idempotency-Key",
            "Idempotency-Key must be 1 to 255 printable ASCII characters without spaces",
        ));
    }
    Ok(())
}

impl Engine {
    /// Starts the engine on the given stores: session shards, their timers, maintenance tasks.
    pub async fn start(
        ledger: Arc<dyn Ledger>,
        hot: Arc<dyn HotState>,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
    ) -> EngineResult<Engine> {
        let ctx = SessionContext::new(ledger.clone(), clock.clone(), config.sessions.clone());
        let sessions = SessionRegistry::start(ctx).await?;
        let channels: DashMap<&'static str, Arc<dyn ChannelAdapter>> = DashMap::new();
        channels.insert("sandbox", Arc::new(SandboxChannel));
        let counts = ledger.count_intents_by_status().await?;
        for s in IntentStatus::ALL {
            metrics::gauge!("ipay_intents", "status" => s.as_str())
                .set(counts[s.to_u8() as usize] as f64);
        }
        let engine = Engine {
            inner: Arc::new(Inner {
                ledger,
                hot,
                clock,
                sessions,
                channels,
                hub: OnceLock::new(),
                config,
                key_cache: DashMap::new(),
                service_cache: DashMap::new(),
                merchant_locks: DashMap::new(),
            }),
        };
        engine.spawn_maintenance();
        engine.spawn_key_invalidation();
        Ok(engine)
    }

    /// Registers a built-in channel adapter that every merchant may use without configuring
    /// it (replacing one of the same name).
    pub fn with_channel(self, adapter: Arc<dyn ChannelAdapter>) -> Self {
        self.inner.channels.insert(adapter.name(), adapter);
        self
    }

    /// Installs the channel subsystem: adapter factory, `[channels]`, master key, retry
    /// sleeper. Call it once, right after [`Engine::start`] and before serving requests.
    pub fn set_channels(&self, setup: ChannelSetup) -> EngineResult<()> {
        let hub = Arc::new(ChannelHub::new(
            self.inner.ledger.clone(),
            self.inner.clock.clone(),
            setup,
        ));
        self.inner
            .hub
            .set(hub)
            .map_err(|_| EngineError::Internal("the channel subsystem is already set up".into()))
    }

    /// [`Engine::set_channels`] as a builder step.
    pub fn with_channels(self, setup: ChannelSetup) -> EngineResult<Self> {
        self.set_channels(setup)?;
        Ok(self)
    }

    /// The channel subsystem (breakers, stored configurations).
    pub fn channels(&self) -> &Arc<ChannelHub> {
        self.inner.hub.get_or_init(|| {
            Arc::new(ChannelHub::new(
                self.inner.ledger.clone(),
                self.inner.clock.clone(),
                ChannelSetup::default(),
            ))
        })
    }

    /// Stops the session layer.
    pub async fn shutdown(&self) {
        self.inner.sessions.stop().await;
    }

    /// The session registry (timers, tests).
    pub fn sessions(&self) -> &SessionRegistry {
        &self.inner.sessions
    }

    /// The engine's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// The ledger (health checks).
    pub fn ledger(&self) -> &Arc<dyn Ledger> {
        &self.inner.ledger
    }

    /// The shared fast state (reservations, counters, pub/sub) this engine uses.
    pub fn hot(&self) -> &Arc<dyn HotState> {
        &self.inner.hot
    }

    /// Settings in force.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    fn spawn_maintenance(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(600));
            loop {
                every.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let cutoff = inner
                    .clock
                    .now()
                    .plus_secs(-inner.config.limits.idempotency_ttl_hours * 3600);
                let mut b = WriteBatch::new();
                b.push(WriteOp::PurgeIdempotencyBefore(cutoff));
                if let Err(e) = inner.ledger.submit(b).await {
                    tracing::warn!(error = %e, "idempotency purge failed");
                }
            }
        });
    }

    fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    async fn merchant_lock(&self, m: MerchantId) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self.inner.merchant_locks.entry(m).or_default().clone();
        lock.lock_owned().await
    }

    // ---------------------------------------------------------------- authentication

    /// Resolves a bearer secret to its key, checking revocation, expiry and IP whitelist.
    pub async fn authenticate(
        &self,
        secret: &str,
        ip: Option<IpAddr>,
    ) -> EngineResult<AuthContext> {
        if merchant::key_mode(secret).is_none() {
            return Err(EngineError::AuthInvalid);
        }
        let hash = hash_secret(secret);
        let ttl = Duration::from_millis(self.inner.config.limits.key_cache_ttl_ms);
        let cached = self
            .inner
            .key_cache
            .get(&hash)
            .filter(|c| c.loaded.elapsed() < ttl)
            .map(|c| c.key.clone());
        let key = match cached {
            Some(k) => k,
            None => {
                let k = self
                    .inner
                    .ledger
                    .find_api_key_by_hash(hash)
                    .await?
                    .ok_or(EngineError::AuthInvalid)?;
                self.inner.key_cache.insert(
                    hash,
                    CachedKey {
                        key: k.clone(),
                        loaded: Instant::now(),
                    },
                );
                k
            }
        };
        key.check_usable(self.now(), ip)?;
        Ok(AuthContext {
            merchant_id: key.merchant_id,
            livemode: key.livemode,
            key,
        })
    }

    fn forget_cached_key(&self, id: ApiKeyId) {
        self.inner.key_cache.retain(|_, c| c.key.id != id);
        if self.inner.ledger.shared() {
            // Tell the other nodes at once; their cache TTL is the backstop if this is lost.
            let hot = self.inner.hot.clone();
            tokio::spawn(async move {
                if let Err(e) = hot.publish(KEYS_CHANNEL, id.to_string().as_bytes()).await {
                    tracing::warn!(error = %e, "could not announce an API key change to other nodes");
                }
            });
        }
    }

    /// Cluster mode: drops cached keys that another node revoked or rotated.
    fn spawn_key_invalidation(&self) {
        if !self.inner.ledger.shared() {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let hot = self.inner.hot.clone();
        tokio::spawn(async move {
            loop {
                match hot.subscribe(KEYS_CHANNEL).await {
                    Ok(mut sub) => {
                        while let Some(msg) = sub.recv().await {
                            let Some(inner) = weak.upgrade() else { return };
                            if let Some(id) = std::str::from_utf8(&msg)
                                .ok()
                                .and_then(|s| ApiKeyId::parse(s).ok())
                            {
                                inner.key_cache.retain(|_, c| c.key.id != id);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot subscribe to API key changes; retrying");
                    }
                }
                if weak.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    // ---------------------------------------------------------------- API keys

    /// Creates a key in the caller's mode. It may not carry permissions the caller lacks.
    pub async fn create_api_key(
        &self,
        ctx: &AuthContext,
        input: ApiKeyInput,
    ) -> EngineResult<ApiKeyWithSecret> {
        ctx.require(Permission::ApiKeysWrite)?;
        let parsed = input.parse()?;
        let perms = parsed
            .permissions
            .clone()
            .unwrap_or_else(|| ctx.key.permissions.clone());
        if let Some(p) = perms.iter().find(|p| !ctx.key.allows(**p)) {
            return Err(EngineError::PermissionDenied {
                permission: p.as_str().to_string(),
            });
        }
        let _guard = self.merchant_lock(ctx.merchant_id).await;
        self.check_key_limit(ctx).await?;
        self.insert_key(
            ctx,
            parsed.label,
            perms,
            parsed.ip_whitelist,
            parsed.expires_in_days,
        )
        .await
    }

    /// Refuses a new key when the merchant already has the maximum of usable (neither revoked
    /// nor expired) keys in this mode.
    async fn check_key_limit(&self, ctx: &AuthContext) -> EngineResult<()> {
        let now = self.now();
        let keys = self
            .inner
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

    async fn insert_key(
        &self,
        ctx: &AuthContext,
        label: String,
        permissions: Vec<Permission>,
        ip_whitelist: Vec<ipnet::IpNet>,
        days: i64,
    ) -> EngineResult<ApiKeyWithSecret> {
        let now = self.now();
        let s = generate_api_secret(ctx.livemode);
        let key = ApiKey {
            id: ApiKeyId::new_at(now.ms()),
            label,
            redacted: s.redacted,
            permissions,
            ip_whitelist,
            livemode: ctx.livemode,
            merchant_id: ctx.merchant_id,
            created: now,
            expires_at: now.plus_secs(days * 86_400),
            revoked_at: None,
        };
        let mut b = WriteBatch::new();
        b.push(WriteOp::PutApiKey {
            key: key.clone(),
            secret_hash: Some(s.hash),
        });
        self.inner.ledger.submit(b).await?;
        Ok(ApiKeyWithSecret {
            key,
            secret: s.secret.expose().to_string(),
        })
    }

    /// The caller's keys in the caller's mode, newest first.
    pub async fn list_api_keys(
        &self,
        ctx: &AuthContext,
        limit: Option<usize>,
        offset: Option<usize>,
    ) -> EngineResult<(Page<ApiKey>, PageRequest)> {
        ctx.require(Permission::ApiKeysRead)?;
        let p = page(&self.inner.config.limits, limit, offset)?;
        // A merchant has at most a few hundred keys per mode, so paging in memory is fine.
        let all = self
            .inner
            .ledger
            .list_api_keys(ctx.merchant_id, ctx.livemode)
            .await?;
        let total = all.len() as u64;
        let data = all.into_iter().skip(p.offset).take(p.limit).collect();
        Ok((Page { data, total }, p))
    }

    async fn owned_key(&self, ctx: &AuthContext, id: &str) -> EngineResult<ApiKey> {
        let kid = ApiKeyId::parse(id).map_err(|_| EngineError::not_found("API key", id))?;
        match self.inner.ledger.get_api_key(kid).await? {
            Some(k) if ctx.owns(k.merchant_id, k.livemode) => Ok(k),
            _ => Err(EngineError::not_found("API key", id)),
        }
    }

    /// Revokes a key at once. Revoking a revoked key returns it unchanged.
    pub async fn revoke_api_key(&self, ctx: &AuthContext, id: &str) -> EngineResult<ApiKey> {
        ctx.require(Permission::ApiKeysWrite)?;
        let _guard = self.merchant_lock(ctx.merchant_id).await;
        let mut key = self.owned_key(ctx, id).await?;
        let now = self.now();
        if key.revoked_at.is_some_and(|r| r <= now) {
            return Ok(key);
        }
        key.revoked_at = Some(now);
        let mut b = WriteBatch::new();
        b.push(WriteOp::PutApiKey {
            key: key.clone(),
            secret_hash: None,
        });
        self.inner.ledger.submit(b).await?;
        self.forget_cached_key(key.id);
        Ok(key)
    }

    /// Issues a new key with the same label, permissions and whitelist, and revokes the old one
    /// after `grace_secs` (0 to 7 days; default 0 = at once).
    pub async fn rotate_api_key(
        &self,
        ctx: &AuthContext,
        id: &str,
        grace_secs: Option<i64>,
    ) -> EngineResult<ApiKeyWithSecret> {
        ctx.require(Permission::ApiKeysWrite)?;
        let grace = grace_secs.unwrap_or(0);
        if !(0..=7 * 86_400).contains(&grace) {
            return Err(EngineError::invalid(
                "parameter_invalid",
                "grace_period_seconds",
                "grace_period_seconds must be between 0 and 604800",
            ));
        }
        let _guard = self.merchant_lock(ctx.merchant_id).await;
        let mut old = self.owned_key(ctx, id).await?;
        let now = self.now();
        if old.revoked_at.is_some_and(|r| r <= now) {
            return Err(EngineError::InvalidStateTransition {
                object: "API key",
                from: "revoked".into(),
                action: "rotate".into(),
            });
        }
        // Rotation issues a new secret with the old key's permissions: the caller must hold
        // them all, or rotating a stronger key would hand out more than the caller has.
        if let Some(p) = old.permissions.iter().find(|p| !ctx.key.allows(**p)) {
            return Err(EngineError::PermissionDenied {
                permission: p.as_str().to_string(),
            });
        }
        if grace > 0 {
            self.check_key_limit(ctx).await?;
        }
        let fresh = self
            .insert_key(
                ctx,
                old.label.clone(),
                old.permissions.clone(),
                old.ip_whitelist.clone(),
                merchant::DEFAULT_KEY_TTL_DAYS,
            )
            .await?;
        old.revoked_at = Some(now.plus_secs(grace));
        let mut b = WriteBatch::new();
        b.push(WriteOp::PutApiKey {
            key: old.clone(),
            secret_hash: None,
        });
        self.inner.ledger.submit(b).await?;
        self.forget_cached_key(old.id);
        Ok(fresh)
    }

    // ---------------------------------------------------------------- services

    /// Creates a manifest, or updates the one named by `id` or by the same `name`: only the
    /// fields given change. Returns the manifest and whether it was created.
    pub async fn upsert_service(
        &self,
        ctx: &AuthContext,
        input: ServiceInput,
    ) -> EngineResult<(Service, bool)> {
        ctx.require(Permission::ServicesWrite)?;
        input.validate(&self.inner.config.url_policy)?;
        let _guard = self.merchant_lock(ctx.merchant_id).await;
        let now = self.now();
        let existing = match (&input.id, &input.name) {
            (Some(id), _) => Some(self.owned_service(ctx, *id).await?),
            (None, Some(name)) => {
                self.inner
                    .ledger
                    .find_service_by_name(ctx.merchant_id, ctx.livemode, name.trim())
                    .await?
            }
            (None, None) => {
                return Err(EngineError::invalid(
                    "parameter_missing",
                    "name",
                    "name is required to create a service",
                ));
            }
        };
        let (service, created) = match existing {
            Some(mut s) => {
                if let Some(new_name) = input.name.as_deref().map(str::trim)
                    && new_name != s.name
                    && let Some(other) = self
                        .inner
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
        self.put_service(&service).await?;
        Ok((service, created))
    }

    async fn put_service(&self, s: &Service) -> EngineResult<()> {
        let mut b = WriteBatch::new();
        b.push(WriteOp::PutService(s.clone()));
        self.inner.ledger.submit(b).await?;
        self.inner.service_cache.insert(s.id, Arc::new(s.clone()));
        Ok(())
    }

    /// A manifest by id, from the cache or the ledger. The cache is used only when this process
    /// is the ledger's sole writer: with a shared ledger another node may have changed it.
    async fn load_service(&self, id: ServiceId) -> EngineResult<Option<Arc<Service>>> {
        let cache = !self.inner.ledger.shared();
        if cache && let Some(s) = self.inner.service_cache.get(&id) {
            return Ok(Some(s.clone()));
        }
        let Some(s) = self.inner.ledger.get_service(id).await? else {
            return Ok(None);
        };
        let s = Arc::new(s);
        if cache {
            self.inner.service_cache.insert(id, s.clone());
        }
        Ok(Some(s))
    }

    async fn owned_service(&self, ctx: &AuthContext, id: ServiceId) -> EngineResult<Service> {
        match self.load_service(id).await? {
            Some(s)
                if ctx.owns(s.merchant_id, s.livemode) && s.status != ServiceStatus::Deleted =>
            {
                Ok((*s).clone())
            }
            _ => Err(EngineError::not_found("service", id)),
        }
    }

    /// One manifest.
    pub async fn get_service(&self, ctx: &AuthContext, id: &str) -> EngineResult<Service> {
        ctx.require(Permission::ServicesRead)?;
        let sid = ServiceId::parse(id).map_err(|_| EngineError::not_found("service", id))?;
        self.owned_service(ctx, sid).await
    }

    /// The caller's manifests, newest first.
    pub async fn list_services(
        &self,
        ctx: &AuthContext,
        limit: Option<usize>,
        offset: Option<usize>,
    ) -> EngineResult<(Page<Service>, PageRequest)> {
        ctx.require(Permission::ServicesRead)?;
        let p = page(&self.inner.config.limits, limit, offset)?;
        Ok((
            self.inner
                .ledger
                .list_services(ctx.merchant_id, ctx.livemode, p)
                .await?,
            p,
        ))
    }

    /// Moves a manifest through its lifecycle.
    pub async fn service_action(
        &self,
        ctx: &AuthContext,
        id: &str,
        action: ServiceAction,
    ) -> EngineResult<Service> {
        ctx.require(Permission::ServicesWrite)?;
        let sid = ServiceId::parse(id).map_err(|_| EngineError::not_found("service", id))?;
        let _guard = self.merchant_lock(ctx.merchant_id).await;
        let mut s = self.owned_service(ctx, sid).await?;
        s.status = next_service_status(s.status, action)?;
        s.updated = self.now();
        self.put_service(&s).await?;
        Ok(s)
    }

    // ---------------------------------------------------------------- payment intents

    async fn idempotent<F, Fut>(
        &self,
        ctx: &AuthContext,
        what: &str,
        key: Option<&str>,
        hash: String,
        run: F,
    ) -> EngineResult<IdempotentOutcome>
    where
        F: FnOnce(Option<IdempotencySpec>) -> Fut,
        Fut: std::future::Future<Output = EngineResult<IdempotentOutcome>>,
    {
        let Some(key) = key else {
            return run(None).await;
        };
        validate_idempotency_key(key)?;
        let scope = format!(
            "{}:{}:{}:{}",
            ctx.merchant_id,
            if ctx.livemode { "live" } else { "test" },
            what,
            key
        );
        let limits = &self.inner.config.limits;
        let ttl_ms = limits.idempotency_ttl_hours * 3_600_000;
        let wait = Duration::from_millis(limits.idempotency_wait_ms);
        let deadline = Instant::now() + wait;
        let stored = |rec: crate::store::IdempotencyRecord| -> EngineResult<IdempotentOutcome> {
            if rec.request_hash != hash {
                return Err(EngineError::IdempotencyKeyReused);
            }
            Ok(IdempotentOutcome {
                status: rec.status,
                body: rec.body,
                replayed: true,
            })
        };
        let fresh = |rec: &crate::store::IdempotencyRecord, now: Timestamp| {
            now.ms() - rec.created.ms() < ttl_ms
        };
        // Reserve first, then look: whoever holds the reservation is the only one who can be
        // writing this key's record, so one look-up under the reservation is enough.
        let reservation = loop {
            if let Some(r) = self.inner.hot.reserve(&scope, wait * 3).await? {
                break r;
            }
            if Instant::now() >= deadline {
                return Err(EngineError::IdempotencyInProgress);
            }
            self.inner
                .hot
                .wait_released(&scope, deadline.saturating_duration_since(Instant::now()))
                .await;
        };
        let result = match self.inner.ledger.get_idempotency(&scope).await {
            Ok(Some(rec)) if fresh(&rec, self.now()) => stored(rec),
            Ok(_) => {
                run(Some(IdempotencySpec {
                    scope: scope.clone(),
                    request_hash: hash,
                }))
                .await
            }
            Err(e) => Err(e.into()),
        };
        let _ = self.inner.hot.release(reservation).await;
        result
    }

    /// Creates a payment intent (idempotent when `idempotency_key` is given).
    pub async fn create_intent(
        &self,
        ctx: &AuthContext,
        req: CreateIntentRequest,
        idempotency_key: Option<&str>,
    ) -> EngineResult<IdempotentOutcome> {
        ctx.require(Permission::PaymentIntentsWrite)?;
        let hash = canonical_hash(&req.normalized());
        self.idempotent(
            ctx,
            "payment_intents",
            idempotency_key,
            hash,
            |spec| async move {
                let created = self.create_intent_now(ctx, req, spec).await?;
                Ok(IdempotentOutcome {
                    status: 201,
                    body: created.json,
                    replayed: false,
                })
            },
        )
        .await
    }

    fn validate_metadata(
        &self,
        m: &serde_json::Map<String, serde_json::Value>,
    ) -> EngineResult<()> {
        let l = &self.inner.config.limits;
        if m.len() > l.metadata_max_keys {
            return Err(EngineError::invalid(
                "metadata_invalid",
                "metadata",
                format!("at most {} metadata keys", l.metadata_max_keys),
            ));
        }
        for (k, v) in m {
            if k.is_empty() || k.chars().count() > l.metadata_max_key_len {
                return Err(EngineError::invalid(
                    "metadata_invalid",
                    "metadata",
                    format!(
                        "metadata keys must be 1 to {} characters",
                        l.metadata_max_key_len
                    ),
                ));
            }
            let ok = match v {
                serde_json::Value::String(s) => s.chars().count() <= l.metadata_max_value_len,
                serde_json::Value::Number(_)
                | serde_json::Value::Bool(_)
                | serde_json::Value::Null => true,
                _ => false,
            };
            if !ok {
                return Err(EngineError::invalid(
                    "metadata_invalid",
                    format!("metadata.{}", k.chars().take(40).collect::<String>()),
                    format!(
                        "metadata values must be strings of at most {} characters, numbers, booleans or null",
                        l.metadata_max_value_len
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The adapter `channel` resolves to for this merchant and mode: its own configuration
    /// first, then a built-in channel.
    async fn adapter_for(
        &self,
        merchant: MerchantId,
        livemode: bool,
        channel: &str,
    ) -> EngineResult<Option<Arc<dyn ChannelAdapter>>> {
        if let Some(a) = self
            .channels()
            .configured_adapter(merchant, livemode, channel)
            .await?
        {
            return Ok(Some(a));
        }
        Ok(self.inner.channels.get(channel).map(|a| a.clone()))
    }

    /// The service's other accepted channels that this merchant can use now for this amount:
    /// configured (or built in), breaker closed, currency supported, mode allowed.
    async fn healthy_alternatives(
        &self,
        service: &Service,
        exclude: &str,
        money: Money,
        ctx: &AuthContext,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for c in service.accepted_channels.iter().filter(|c| *c != exclude) {
            if !self.channels().healthy(c) {
                continue;
            }
            let Ok(Some(a)) = self.adapter_for(ctx.merchant_id, ctx.livemode, c).await else {
                continue;
            };
            if a.supports_currency(money.currency) && (!ctx.livemode || a.allows_livemode()) {
                out.push(c.clone());
            }
        }
        out
    }

    async fn create_intent_now(
        &self,
        ctx: &AuthContext,
        req: CreateIntentRequest,
        idem: Option<IdempotencySpec>,
    ) -> EngineResult<Created> {
        let limits = &self.inner.config.limits;
        let money = Money::from_parts(req.amount.value, &req.amount.currency)
            .map_err(|e| EngineError::money("amount", e))?;
        let expires_in = req.expires_in.unwrap_or(limits.expires_in_default_secs);
        if !(limits.expires_in_min_secs..=limits.expires_in_max_secs).contains(&expires_in) {
            return Err(EngineError::invalid(
                "parameter_invalid",
                "expires_in",
                format!(
                    "expires_in must be between {} and {} seconds",
                    limits.expires_in_min_secs, limits.expires_in_max_secs
                ),
            ));
        }
        let metadata = req.metadata.unwrap_or_default();
        self.validate_metadata(&metadata)?;
        if !KNOWN_CHANNELS.contains(&req.channel.as_str()) {
            return Err(EngineError::invalid(
                "channel_unknown",
                "channel",
                format!(
                    "unknown channel `{}`; known channels: {}",
                    req.channel.chars().take(40).collect::<String>(),
                    KNOWN_CHANNELS.join(", ")
                ),
            ));
        }
        let sid = ServiceId::parse(&req.service_id)
            .map_err(|e| EngineError::invalid("parameter_invalid", "service_id", e.to_string()))?;
        let service = match self.load_service(sid).await? {
            Some(s)
                if ctx.owns(s.merchant_id, s.livemode) && s.status != ServiceStatus::Deleted =>
            {
                s
            }
            _ => {
                return Err(EngineError::Invalid {
                    code: "resource_missing",
                    message: format!(
                        "no service with id `{}`",
                        req.service_id.chars().take(60).collect::<String>()
                    ),
                    param: Some("service_id".into()),
                });
            }
        };
        if !service.status.accepts_payments() {
            return Err(EngineError::Conflict {
                code: "service_not_active",
                message: format!(
                    "service {} is {}; activate it before taking payments",
                    service.id,
                    service.status.as_str()
                ),
            });
        }
        if !service.accepted_channels.contains(&req.channel) {
            return Err(EngineError::invalid(
                "channel_not_accepted",
                "channel",
                format!(
                    "service {} does not accept `{}`; it accepts: {}",
                    service.id,
                    req.channel,
                    service.accepted_channels.join(", ")
                ),
            ));
        }
        let adapter = self
            .adapter_for(ctx.merchant_id, ctx.livemode, &req.channel)
            .await?
            .ok_or_else(|| {
                EngineError::invalid(
                    "channel_not_configured",
                    "channel",
                    format!(
                        "channel `{}` is not configured for this merchant in {} mode; configure it with POST /v1/channels",
                        req.channel,
                        if ctx.livemode { "live" } else { "test" }
                    ),
                )
            })?;
        if ctx.livemode && !adapter.allows_livemode() {
            return Err(EngineError::invalid(
                "channel_not_configured",
                "channel",
                format!("channel `{}` accepts test-mode keys only", req.channel),
            ));
        }
        if !adapter.supports_currency(money.currency) {
            return Err(EngineError::invalid(
                "currency_not_supported",
                "amount.currency",
                format!(
                    "channel `{}` cannot collect {}",
                    req.channel, money.currency
                ),
            ));
        }
        let now = self.now();
        let id = PaymentIntentId::new_at(now.ms());
        let expires_at = now.plus_secs(expires_in);
        let creq = ChannelPaymentRequest {
            intent_id: id,
            amount: money,
            expires_at,
            livemode: ctx.livemode,
        };
        let hub = self.channels();
        let payment = match hub.create_payment(&req.channel, &adapter, &creq).await {
            Ok(p) => p,
            Err(ChannelError::Unavailable(why)) => {
                tracing::warn!(channel = %req.channel, reason = %why, "channel unavailable");
                return Err(EngineError::ChannelUnavailable {
                    channel: req.channel.clone(),
                    message: format!(
                        "{} is currently unavailable. Please try again later or use an alternative channel.",
                        display_name(&req.channel)
                    ),
                    retry_after_secs: hub.config().retry_after_secs,
                    alternatives: self
                        .healthy_alternatives(&service, &req.channel, money, ctx)
                        .await,
                });
            }
            Err(ChannelError::Rejected(why)) => {
                return Err(EngineError::invalid("channel_rejected", "channel", why));
            }
        };
        let intent = PaymentIntent {
            id,
            status: IntentStatus::Pending,
            amount: money,
            amount_refunded: 0,
            channel: req.channel,
            service_id: service.id,
            qr_code: payment.qr_code,
            channel_reference: payment.channel_reference,
            metadata,
            failure_reason: None,
            cancellation_reason: None,
            livemode: ctx.livemode,
            merchant_id: ctx.merchant_id,
            expires_at,
            created: now,
            updated: now,
        };
        self.inner.sessions.create(intent, idem).await
    }

    async fn owned_intent(&self, ctx: &AuthContext, id: &str) -> EngineResult<PaymentIntent> {
        let pid =
            PaymentIntentId::parse(id).map_err(|_| EngineError::not_found("payment intent", id))?;
        match self.inner.ledger.get_intent(pid).await? {
            Some(pi) if ctx.owns(pi.merchant_id, pi.livemode) => Ok(pi),
            _ => Err(EngineError::not_found("payment intent", id)),
        }
    }

    /// One intent.
    pub async fn get_intent(&self, ctx: &AuthContext, id: &str) -> EngineResult<PaymentIntent> {
        ctx.require(Permission::PaymentIntentsRead)?;
        self.owned_intent(ctx, id).await
    }

    /// Lists the caller's intents.
    pub async fn list_intents(
        &self,
        ctx: &AuthContext,
        p: IntentListParams,
    ) -> EngineResult<(Page<PaymentIntent>, PageRequest)> {
        ctx.require(Permission::PaymentIntentsRead)?;
        let pg = page(&self.inner.config.limits, p.limit, p.offset)?;
        let status = match p.status.as_deref() {
            None => None,
            Some(s) => Some(IntentStatus::parse(s).ok_or_else(|| {
                EngineError::invalid(
                    "parameter_invalid",
                    "status",
                    "status must be one of pending, succeeded, failed, expired, cancelled",
                )
            })?),
        };
        let ts = |v: &Option<String>, name: &'static str| -> EngineResult<Option<i64>> {
            match v {
                None => Ok(None),
                Some(s) => Timestamp::parse_flexible(s)
                    .map(|t| Some(t.ms()))
                    .ok_or_else(|| {
                        EngineError::invalid(
                            "parameter_invalid",
                            name,
                            format!("{name} must be an RFC 3339 time or a YYYY-MM-DD date"),
                        )
                    }),
            }
        };
        let descending = match p.sort.as_deref() {
            None | Some("created:desc") => true,
            Some("created:asc") => false,
            Some(_) => {
                return Err(EngineError::invalid(
                    "parameter_invalid",
                    "sort",
                    "sort must be created:desc or created:asc",
                ));
            }
        };
        let q = IntentQuery {
            status,
            channel: p.channel,
            created_after: ts(&p.created_after, "created_after")?,
            created_before: ts(&p.created_before, "created_before")?,
            descending,
            page: pg,
        };
        Ok((
            self.inner
                .ledger
                .list_intents(ctx.merchant_id, ctx.livemode, &q)
                .await?,
            pg,
        ))
    }

    /// Cancels a pending intent.
    pub async fn cancel_intent(
        &self,
        ctx: &AuthContext,
        id: &str,
        reason: Option<String>,
    ) -> EngineResult<PaymentIntent> {
        ctx.require(Permission::PaymentIntentsWrite)?;
        if reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
            return Err(EngineError::invalid(
                "parameter_invalid",
                "cancellation_reason",
                "cancellation_reason is limited to 500 characters",
            ));
        }
        let pi = self.owned_intent(ctx, id).await?;
        Ok(self
            .inner
            .sessions
            .command(pi.id, IntentCommand::Cancel { reason }, None)
            .await?
            .intent)
    }

    /// Test mode only: settles a sandbox intent as the channel would.
    pub async fn sandbox_settle(
        &self,
        ctx: &AuthContext,
        id: &str,
        succeed: bool,
    ) -> EngineResult<PaymentIntent> {
        ctx.require(Permission::PaymentIntentsWrite)?;
        if ctx.livemode {
            return Err(EngineError::Forbidden {
                code: "test_mode_only",
                message: "sandbox endpoints accept test-mode keys (sk_test_…) only".into(),
            });
        }
        let pi = self.owned_intent(ctx, id).await?;
        if pi.channel != "sandbox" {
            return Err(EngineError::Conflict {
                code: "channel_mismatch",
                message: format!(
                    "payment intent {} uses channel `{}`, not `sandbox`",
                    pi.id, pi.channel
                ),
            });
        }
        let cmd = if succeed {
            IntentCommand::Succeed {
                channel_reference: None,
            }
        } else {
            IntentCommand::Fail {
                reason: "sandbox_declined".into(),
            }
        };
        Ok(self.inner.sessions.command(pi.id, cmd, None).await?.intent)
    }

    // ---------------------------------------------------------------- channels

    /// Stores the caller's configuration of a channel (credentials encrypted). Returns it and
    /// whether it is new.
    pub async fn configure_channel(
        &self,
        ctx: &AuthContext,
        input: ChannelConfigInput,
    ) -> EngineResult<(ChannelView, bool)> {
        ctx.require(Permission::ChannelsWrite)?;
        let _guard = self.merchant_lock(ctx.merchant_id).await;
        self.channels()
            .configure(ctx.merchant_id, ctx.livemode, input)
            .await
    }

    /// The caller's configured channels with their health.
    pub async fn list_channels(&self, ctx: &AuthContext) -> EngineResult<Vec<ChannelView>> {
        ctx.require(Permission::ChannelsRead)?;
        self.channels().list(ctx.merchant_id, ctx.livemode).await
    }

    /// Handles a PSP callback: finds the intent it claims to be about, verifies it with that
    /// merchant's credentials, skips notifications applied before, and settles the intent
    /// through its payment session. Returns what to answer the PSP.
    pub async fn handle_callback(
        &self,
        channel: &str,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> EngineResult<CallbackAck> {
        let hub = self.channels();
        let unknown = || EngineError::not_found("channel", channel);
        if !hub.knows(channel) {
            return Err(unknown());
        }
        hub.check_provider_rate(channel)?;
        let factory = hub.factory().ok_or_else(unknown)?;
        let claimed =
            factory
                .peek_intent(channel, headers, body)
                .ok_or_else(|| EngineError::Invalid {
                    code: "parameter_invalid",
                    message: format!("the callback names no payment intent `{channel}` knows"),
                    param: None,
                })?;
        let missing = || EngineError::not_found("payment intent", &claimed);
        let pid = PaymentIntentId::parse(&claimed).map_err(|_| missing())?;
        let intent = match self.inner.ledger.get_intent(pid).await? {
            Some(pi) if pi.channel == channel => pi,
            _ => return Err(missing()),
        };
        hub.check_merchant_rate(intent.merchant_id)?;
        let adapter = hub
            .configured_adapter(intent.merchant_id, intent.livemode, channel)
            .await?
            .ok_or_else(|| {
                EngineError::invalid(
                    "signature_mismatch",
                    "signature",
                    "the merchant of this payment intent has no credentials for this channel to verify with",
                )
            })?;
        let outcome_label = |o: &str| {
            metrics::counter!("ipay_channel_callbacks_total", "channel" => channel.to_string(), "outcome" => o.to_string()).increment(1);
        };
        let notice = match adapter.verify_callback(headers, body, self.now()) {
            Ok(n) => n,
            Err(e) => {
                outcome_label("rejected");
                tracing::warn!(channel, intent = %pid, error = %e, "callback refused");
                return Err(callback_error(e));
            }
        };
        if notice.intent_id != pid {
            outcome_label("rejected");
            return Err(EngineError::invalid(
                "signature_mismatch",
                "signature",
                "the signed notification is about another payment intent",
            ));
        }
        let nid = notice.notification_id.as_str();
        if nid.is_empty() || nid.len() > MAX_NOTIFICATION_ID_LEN || nid.contains('\0') {
            return Err(EngineError::Invalid {
                code: "parameter_invalid",
                message: format!(
                    "the notification id must be 1 to {MAX_NOTIFICATION_ID_LEN} bytes"
                ),
                param: None,
            });
        }
        if hub.notification_seen(channel, nid).await? {
            outcome_label("duplicate");
            return Ok(adapter.callback_ack());
        }
        let flag = |event_type: &str, detail: serde_json::Value| {
            Event::new(
                intent.merchant_id,
                intent.livemode,
                event_type,
                self.now(),
                intent.id.to_string(),
                &serde_json::json!({
                    "payment_intent": intent.id.to_string(),
                    "channel": channel,
                    "notification_id": nid,
                    "detail": detail,
                }),
            )
        };
        let (cmd, mut label) = match notice.outcome {
            CallbackOutcome::Paid {
                amount,
                channel_reference,
            } => {
                if amount != intent.amount {
                    // Money moved, but not the amount asked for: a person must look at it.
                    tracing::warn!(channel, intent = %pid, "callback amount differs from the intent");
                    let ev = flag(
                        "payment_intent.amount_mismatch",
                        serde_json::json!({"expected": intent.amount, "received": amount}),
                    );
                    let mut b = WriteBatch::new();
                    b.push(WriteOp::PutEvent(ev));
                    b.push(hub.notification_op(channel, nid, &claimed, "amount_mismatch"));
                    self.inner.ledger.submit(b).await?;
                    outcome_label("amount_mismatch");
                    return Ok(adapter.callback_ack());
                }
                (
                    Some(IntentCommand::Succeed { channel_reference }),
                    "succeeded",
                )
            }
            CallbackOutcome::Failed { reason } => {
                let reason: String = reason.chars().take(500).collect();
                (Some(IntentCommand::Fail { reason }), "failed")
            }
            CallbackOutcome::Ignored => (None, "ignored"),
        };
        let mut extra = None;
        if let Some(cmd) = cmd {
            let paid = matches!(cmd, IntentCommand::Succeed { .. });
            match self.inner.sessions.command(pid, cmd, None).await {
                Ok(_) => {}
                Err(EngineError::InvalidStateTransition { from, .. }) => {
                    // Out of order or late: the intent already left `pending`. Money collected
                    // for an intent that is no longer payable must be flagged, not lost.
                    label = "no_change";
                    if paid && from != IntentStatus::Succeeded.as_str() {
                        extra = Some(flag(
                            "payment_intent.paid_after_close",
                            serde_json::json!({"status": from}),
                        ));
                        label = "paid_after_close";
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let mut b = WriteBatch::new();
        if let Some(ev) = extra {
            b.push(WriteOp::PutEvent(ev));
        }
        b.push(hub.notification_op(channel, nid, &claimed, label));
        self.inner.ledger.submit(b).await?;
        outcome_label(label);
        Ok(adapter.callback_ack())
    }

    // ---------------------------------------------------------------- refunds

    /// Refunds part or all of a succeeded intent (idempotent when a key is given).
    pub async fn create_refund(
        &self,
        ctx: &AuthContext,
        req: CreateRefundRequest,
        idempotency_key: Option<&str>,
    ) -> EngineResult<IdempotentOutcome> {
        ctx.require(Permission::RefundsWrite)?;
        if req.reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
            return Err(EngineError::invalid(
                "parameter_invalid",
                "reason",
                "reason is limited to 500 characters",
            ));
        }
        let hash = canonical_hash(&req);
        self.idempotent(ctx, "refunds", idempotency_key, hash, |spec| async move {
            let pi = match self.owned_intent(ctx, &req.payment_intent).await {
                Ok(pi) => pi,
                Err(EngineError::NotFound { .. }) => {
                    return Err(EngineError::Invalid {
                        code: "resource_missing",
                        message: format!(
                            "no payment intent with id `{}`",
                            req.payment_intent.chars().take(60).collect::<String>()
                        ),
                        param: Some("payment_intent".into()),
                    });
                }
                Err(e) => return Err(e),
            };
            let amount = match &req.amount {
                None => None,
                Some(a) => Some(
                    Money::from_parts(a.value, &a.currency)
                        .map_err(|e| EngineError::money("amount", e))?,
                ),
            };
            let cmd = IntentCommand::Refund {
                refund_id: RefundId::new_at(self.now().ms()),
                amount,
                reason: req.reason.clone(),
            };
            let applied = self.inner.sessions.command(pi.id, cmd, spec).await?;
            let refund = applied
                .refund
                .ok_or_else(|| EngineError::Internal("refund command produced no refund".into()))?;
            Ok(IdempotentOutcome {
                status: 201,
                body: serde_json::to_string(&refund)
                    .map_err(|e| EngineError::Internal(e.to_string()))?,
                replayed: false,
            })
        })
        .await
    }

    /// Refunds, optionally of one intent, newest first.
    pub async fn list_refunds(
        &self,
        ctx: &AuthContext,
        intent: Option<&str>,
        limit: Option<usize>,
        offset: Option<usize>,
    ) -> EngineResult<(Page<Refund>, PageRequest)> {
        ctx.require(Permission::RefundsRead)?;
        let p = page(&self.inner.config.limits, limit, offset)?;
        let pid = match intent {
            None => None,
            Some(s) => Some(PaymentIntentId::parse(s).map_err(|e| {
                EngineError::invalid("parameter_invalid", "payment_intent", e.to_string())
            })?),
        };
        Ok((
            self.inner
                .ledger
                .list_refunds(ctx.merchant_id, ctx.livemode, pid, p)
                .await?,
            p,
        ))
    }

    /// One refund.
    pub async fn get_refund(&self, ctx: &AuthContext, id: &str) -> EngineResult<Refund> {
        ctx.require(Permission::RefundsRead)?;
        let rid = RefundId::parse(id).map_err(|_| EngineError::not_found("refund", id))?;
        match self.inner.ledger.get_refund(rid).await? {
            Some(r) if ctx.owns(r.merchant_id, r.livemode) => Ok(r),
            _ => Err(EngineError::not_found("refund", id)),
        }
    }

    // ---------------------------------------------------------------- events

    /// Events, newest first, optionally of one type or about one object.
    pub async fn list_events(
        &self,
        ctx: &AuthContext,
        event_type: Option<String>,
        object_id: Option<String>,
        limit: Option<usize>,
        offset: Option<usize>,
    ) -> EngineResult<(Page<Event>, PageRequest)> {
        ctx.require(Permission::EventsRead)?;
        let p = page(&self.inner.config.limits, limit, offset)?;
        for (name, v) in [("type", &event_type), ("object_id", &object_id)] {
            if v.as_ref().is_some_and(|t| t.len() > 100) {
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
            self.inner
                .ledger
                .list_events(ctx.merchant_id, ctx.livemode, &q)
                .await?,
            p,
        ))
    }

    /// One event.
    pub async fn get_event(&self, ctx: &AuthContext, id: &str) -> EngineResult<Event> {
        ctx.require(Permission::EventsRead)?;
        let eid = EventId::parse(id).map_err(|_| EngineError::not_found("event", id))?;
        match self.inner.ledger.get_event(eid).await? {
            Some(e) if ctx.owns(e.merchant_id, e.livemode) => Ok(e),
            _ => Err(EngineError::not_found("event", id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_retries_compare_requests_in_one_canonical_spelling() {
        let svc = ServiceId::new_at(1_800_000_000_000);
        let base = CreateIntentRequest {
            service_id: svc.to_string(),
            amount: AmountInput {
                value: 100,
                currency: "EUR".into(),
            },
            channel: "sandbox".into(),
            metadata: None,
            expires_in: None,
        };
        let mut empty_meta = base.clone();
        empty_meta.metadata = Some(Default::default());
        let mut bare = base.clone();
        bare.service_id = svc.to_string().trim_start_matches("svc_").to_string();
        let mut uuid = base.clone();
        uuid.service_id = svc.as_uuid().to_string();
        let h = canonical_hash(&base.normalized());
        for other in [empty_meta, bare, uuid] {
            assert_eq!(canonical_hash(&other.normalized()), h);
        }
        let mut different = base.clone();
        different.amount.value = 101;
        assert_ne!(canonical_hash(&different.normalized()), h);
    }
}
