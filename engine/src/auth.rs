//! Authentication: turns a bearer secret into an [`AuthContext`] (merchant, mode, key), with a
//! short-lived cache of looked-up keys and, in cluster mode, invalidation of that cache when
//! another node revokes or rotates a key.
//!
//! It does not issue, list or revoke keys (see [`crate::keys`]) and knows nothing of HTTP: the
//! gateway extracts the secret and the client address.

use crate::clock::Clock;
use crate::error::{EngineError, EngineResult};
use crate::ids::{ApiKeyId, MerchantId};
use crate::model::merchant::{self, hash_secret};
use crate::model::{ApiKey, Permission};
use crate::store::{HotState, Ledger};
use dashmap::DashMap;
use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Hot-state channel on which nodes announce revoked or rotated API keys (cluster mode).
const KEYS_CHANNEL: &str = "ipay:api-keys:changed";

/// Who is calling: the merchant, the key's mode and the key itself.
#[derive(Debug, Clone)]
pub struct AuthContext {
    /// The merchant the key belongs to.
    pub merchant_id: MerchantId,
    /// Whether the key is a live-mode key (`sk_live_…`).
    pub livemode: bool,
    /// The key used for this request.
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

    /// Whether an object of `merchant` in mode `livemode` is the caller's to see.
    pub(crate) fn owns(&self, merchant: MerchantId, livemode: bool) -> bool {
        self.merchant_id == merchant && self.livemode == livemode
    }
}

struct CachedKey {
    key: ApiKey,
    loaded: Instant,
}

/// Resolves secrets to keys and keeps the cache of recently used keys.
pub(crate) struct Authenticator {
    ledger: Arc<dyn Ledger>,
    hot: Arc<dyn HotState>,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    cache: DashMap<[u8; 32], CachedKey>,
}

impl Authenticator {
    /// An authenticator trusting a cached key for `ttl`.
    pub(crate) fn new(
        ledger: Arc<dyn Ledger>,
        hot: Arc<dyn HotState>,
        clock: Arc<dyn Clock>,
        ttl: Duration,
    ) -> Arc<Self> {
        let auth = Arc::new(Authenticator {
            ledger,
            hot,
            clock,
            ttl,
            cache: DashMap::new(),
        });
        spawn_invalidation(&auth);
        auth
    }

    /// Resolves a bearer secret to its key, checking revocation, expiry and IP whitelist.
    pub(crate) async fn authenticate(
        &self,
        secret: &str,
        ip: Option<IpAddr>,
    ) -> EngineResult<AuthContext> {
        if merchant::key_mode(secret).is_none() {
            return Err(EngineError::AuthInvalid);
        }
        let hash = hash_secret(secret);
        let cached = self
            .cache
            .get(&hash)
            .filter(|c| c.loaded.elapsed() < self.ttl)
            .map(|c| c.key.clone());
        let key = match cached {
            Some(k) => k,
            None => {
                let k = self
                    .ledger
                    .find_api_key_by_hash(hash)
                    .await?
                    .ok_or(EngineError::AuthInvalid)?;
                self.cache.insert(
                    hash,
                    CachedKey {
                        key: k.clone(),
                        loaded: Instant::now(),
                    },
                );
                k
            }
        };
        key.check_usable(self.clock.now(), ip)?;
        Ok(AuthContext {
            merchant_id: key.merchant_id,
            livemode: key.livemode,
            key,
        })
    }

    /// Drops a revoked or rotated key from this node's cache and, in cluster mode, from the
    /// other nodes' caches.
    pub(crate) fn forget(&self, id: ApiKeyId) {
        self.cache.retain(|_, c| c.key.id != id);
        if self.ledger.shared() {
            // Tell the other nodes at once; their cache TTL is the backstop if this is lost.
            let hot = self.hot.clone();
            tokio::spawn(async move {
                if let Err(e) = hot.publish(KEYS_CHANNEL, id.to_string().as_bytes()).await {
                    tracing::warn!(error = %e, "could not announce an API key change to other nodes");
                }
            });
        }
    }
}

/// Cluster mode: drops cached keys that another node revoked or rotated, for as long as the
/// authenticator lives.
fn spawn_invalidation(auth: &Arc<Authenticator>) {
    if !auth.ledger.shared() {
        return;
    }
    let weak: Weak<Authenticator> = Arc::downgrade(auth);
    let hot = auth.hot.clone();
    tokio::spawn(async move {
        loop {
            match hot.subscribe(KEYS_CHANNEL).await {
                Ok(mut sub) => {
                    while let Some(msg) = sub.recv().await {
                        let Some(auth) = weak.upgrade() else { return };
                        if let Some(id) = std::str::from_utf8(&msg)
                            .ok()
                            .and_then(|s| ApiKeyId::parse(s).ok())
                        {
                            auth.cache.retain(|_, c| c.key.id != id);
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
