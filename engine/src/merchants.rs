//! Merchants: creating one with its first keys and webhook secret, and the per-merchant lock
//! that serializes changes to a merchant's configuration (keys, manifests, channels).
//!
//! It does not authenticate (see [`crate::auth`]) or manage keys after creation (see
//! [`crate::keys`]).

use crate::clock::Clock;
use crate::error::{EngineError, EngineResult};
use crate::ids::{ApiKeyId, MerchantId};
use crate::model::merchant::{self, generate_api_secret, generate_webhook_secret};
use crate::model::{ApiKey, Merchant, Permission};
use crate::store::{Ledger, WriteBatch, WriteOp};
use dashmap::DashMap;
use serde::Serialize;
use std::sync::Arc;

/// Longest merchant name, characters.
const MAX_NAME_CHARS: usize = 200;

/// A new merchant's credentials, shown once.
#[derive(Debug, Serialize)]
pub struct MerchantCredentials {
    /// The new merchant.
    pub merchant_id: MerchantId,
    /// Its name, trimmed.
    pub name: String,
    /// The test-mode key.
    pub test_key_id: ApiKeyId,
    /// The test-mode key's secret (`sk_test_…`).
    pub test_secret_key: String,
    /// The live-mode key.
    pub live_key_id: ApiKeyId,
    /// The live-mode key's secret (`sk_live_…`).
    pub live_secret_key: String,
    /// The secret outbound webhooks are signed with.
    pub webhook_secret: String,
}

/// Creates a merchant with a test key, a live key and a webhook secret. Works on a ledger with
/// no engine running (the `ipay merchants create` command).
pub async fn create_merchant(
    ledger: &dyn Ledger,
    clock: &dyn Clock,
    name: &str,
) -> EngineResult<MerchantCredentials> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
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

/// One lock per merchant, held while a change to its configuration reads, checks and writes,
/// so two concurrent changes cannot both pass a check (a key limit, a unique name).
#[derive(Default)]
pub(crate) struct MerchantLocks {
    locks: DashMap<MerchantId, Arc<tokio::sync::Mutex<()>>>,
}

impl MerchantLocks {
    /// Waits for and takes the merchant's lock.
    pub(crate) async fn lock(&self, m: MerchantId) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self.locks.entry(m).or_default().clone();
        lock.lock_owned().await
    }
}
