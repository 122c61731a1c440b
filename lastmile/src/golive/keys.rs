//! A merchant user's engine API keys: list (both modes), create (the secret is in the answer
//! only; the engine keeps its hash) and revoke. The keys are ordinary engine keys and work on
//! `/v1` at once.

use crate::LastMile;
use ipay_engine::engine::ApiKeyWithSecret;
use ipay_engine::error::{EngineError, EngineResult};
use ipay_engine::ids::{ApiKeyId, MerchantId};
use ipay_engine::model::ApiKey;
use ipay_engine::model::merchant::ApiKeyInput;
use serde::{Deserialize, Serialize};

/// `POST /api/merchant/api-keys` body.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// `true` for a live key (`sk_live_…`), `false` for a test key (`sk_test_…`).
    pub livemode: bool,
    /// A name to recognise the key by (default `API key`).
    pub label: Option<String>,
    /// Permissions such as `payment_intents:write`; default all.
    pub permissions: Option<Vec<String>>,
    /// IPv4/IPv6 addresses or CIDRs the key may be used from; empty or absent: any.
    pub ip_whitelist: Option<Vec<String>>,
    /// Lifetime in days, 1 to 3650; default 365.
    pub expires_in_days: Option<i64>,
}

/// `GET /api/merchant/api-keys`: the keys of the modes asked for, newest first per mode.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKeyList {
    pub data: Vec<ApiKey>,
    /// More keys exist than one listing shows per mode (100).
    pub has_more: bool,
}

impl LastMile {
    /// The merchant's keys in the given modes (secrets are never stored, so never listed).
    pub async fn golive_keys(
        &self,
        merchant: MerchantId,
        modes: &[bool],
    ) -> EngineResult<ApiKeyList> {
        let mut out = ApiKeyList {
            data: Vec::new(),
            has_more: false,
        };
        for &livemode in modes {
            let ctx = self.owner_ctx(merchant, livemode);
            let (page, _) = self
                .engine
                .list_api_keys(&ctx, Some(self.golive_page()), None)
                .await?;
            out.has_more |= page.total > page.data.len() as u64;
            out.data.extend(page.data);
        }
        Ok(out)
    }

    /// Creates a key; its secret is in the answer and nowhere else.
    pub async fn golive_create_key(
        &self,
        merchant: MerchantId,
        req: NewApiKey,
    ) -> EngineResult<ApiKeyWithSecret> {
        let ctx = self.owner_ctx(merchant, req.livemode);
        let input = ApiKeyInput {
            label: req.label,
            permissions: req.permissions,
            ip_whitelist: req.ip_whitelist,
            expires_in_days: req.expires_in_days,
        };
        let k = self.engine.create_api_key(&ctx, input).await?;
        tracing::info!(merchant = %merchant, key = %k.key.id, livemode = req.livemode, "API key created");
        Ok(k)
    }

    /// Revokes one of the merchant's keys at once (404 for anyone else's).
    pub async fn golive_revoke_key(&self, merchant: MerchantId, id: &str) -> EngineResult<ApiKey> {
        let missing = || EngineError::not_found("API key", id);
        let kid = ApiKeyId::parse(id).map_err(|_| missing())?;
        let key = match self.engine.ledger().get_api_key(kid).await? {
            Some(k) if k.merchant_id == merchant => k,
            _ => return Err(missing()),
        };
        let ctx = self.owner_ctx(merchant, key.livemode);
        let k = self.engine.revoke_api_key(&ctx, id).await?;
        tracing::info!(merchant = %merchant, key = %k.id, "API key revoked");
        Ok(k)
    }

    /// Revokes the keys a new merchant was created with: their secrets were never shown to
    /// anyone, so they can never be used, and they would only count against the key limit.
    pub(crate) async fn golive_retire_unshown_keys(
        &self,
        merchant: MerchantId,
        keys: [(ApiKeyId, bool); 2],
    ) -> EngineResult<()> {
        for (id, livemode) in keys {
            let ctx = self.owner_ctx(merchant, livemode);
            self.engine.revoke_api_key(&ctx, &id.to_string()).await?;
        }
        Ok(())
    }
}
