//! Self-serve go-live: what a merchant user manages from `/api` to take real payments: its
//! engine API keys ([`keys`]), the webhook endpoints its last-mile events go to
//! ([`endpoints`]), its payment channels' credentials ([`channels`]), and its test / live
//! switch (this file).
//!
//! Each of these is the engine's own facility used on the merchant's behalf: keys are the
//! engine's API keys (hashed at rest, secret shown once), endpoints the engine's webhook
//! endpoints (signed, retried and held to the engine's URL policy exactly like `/v1` ones),
//! channel configurations the engine's (credentials sealed at rest, never returned). This
//! module adds who may act (a merchant user, on its own merchant only), the merchant's mode,
//! and the checks of last mile (its event types; going live needs a live channel). It does
//! not own HTTP (the gateway) nor the payment itself (`sessions::payment`, which asks
//! [`LastMile::session_channels`] what a consumer may pay with).
//!
//! Stored: `lm_golive/{merchant_id}` → [`ModeRecord`] (JSON), written when the merchant first
//! chooses; until then its mode is `[lastmile] events_livemode`.

pub mod channels;
pub mod endpoints;
pub mod keys;

use crate::LastMile;
use crate::accounts::UserId;
use ipay_engine::AuthContext;
use ipay_engine::clock::Timestamp;
use ipay_engine::error::{EngineError, EngineResult};
use ipay_engine::ids::{ApiKeyId, MerchantId};
use ipay_engine::model::{ApiKey, Permission};
use ipay_engine::store::{WriteBatch, WriteOp};
use serde::{Deserialize, Serialize};

const MODE: &str = "lm_golive";

/// A merchant's chosen mode, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModeRecord {
    pub livemode: bool,
    pub changed_at: Timestamp,
    pub changed_by: UserId,
}

/// `GET /api/merchant/mode`: the merchant's mode and what a consumer may pay with in each.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ModeView {
    /// Whether new sessions (and their events) are live.
    pub livemode: bool,
    /// `merchant` once the merchant chose, `server_default` before (`[lastmile]
    /// events_livemode`).
    pub source: &'static str,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub changed_at: Option<Timestamp>,
    /// Channels a consumer may pay a test session with.
    pub test_channels: Vec<String>,
    /// Channels a consumer may pay a live session with.
    pub live_channels: Vec<String>,
    /// Channels the merchant configured in live mode (going live needs one).
    pub configured_live_channels: Vec<String>,
}

/// `PUT /api/merchant/mode` body.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModeRequest {
    /// `true` to go live (needs a configured live channel), `false` for test mode.
    pub livemode: bool,
}

/// Query of the go-live listings: one mode, or both when absent.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ModeFilter {
    /// `true`: live objects only; `false`: test objects only; absent: both.
    pub livemode: Option<bool>,
}

impl ModeFilter {
    /// The modes to list, test first.
    pub fn modes(&self) -> Vec<bool> {
        match self.livemode {
            Some(m) => vec![m],
            None => vec![false, true],
        }
    }
}

impl LastMile {
    /// The merchant's mode: what it chose, else `[lastmile] events_livemode`. Decides the
    /// `livemode` of its new sessions and order events.
    pub async fn merchant_livemode(&self, merchant: MerchantId) -> EngineResult<bool> {
        Ok(match self.mode_record(merchant).await? {
            Some(r) => r.livemode,
            None => self.ps_livemode(),
        })
    }

    async fn mode_record(&self, merchant: MerchantId) -> EngineResult<Option<ModeRecord>> {
        let Some(raw) = self
            .engine
            .ledger()
            .get_record(MODE, &merchant.to_string())
            .await?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| EngineError::Internal(format!("stored mode of {merchant}: {e}")))
    }

    /// An engine caller acting for the merchant's owner in `livemode`: a merchant user owns
    /// its merchant, so it may do what the merchant's own keys may. Never stored, has no
    /// secret, cannot be presented as a key.
    pub fn owner_ctx(&self, merchant: MerchantId, livemode: bool) -> AuthContext {
        let now = self.engine.clock().now();
        AuthContext {
            merchant_id: merchant,
            livemode,
            key: ApiKey {
                id: ApiKeyId::from_u128(0),
                label: "merchant user".into(),
                redacted: "(account login)".into(),
                permissions: Permission::ALL.to_vec(),
                ip_whitelist: vec![],
                livemode,
                merchant_id: merchant,
                created: now,
                expires_at: now.plus_secs(3600),
                revoked_at: None,
            },
        }
    }

    /// How many objects one go-live listing asks the engine for per mode: 100, or the
    /// engine's `[limits] max_page_size` when that is lower.
    pub(crate) fn golive_page(&self) -> usize {
        self.engine.config().limits.max_page_size.clamp(1, 100)
    }

    /// The merchant's mode and the channels of each mode.
    pub async fn mode(&self, merchant: MerchantId) -> EngineResult<ModeView> {
        let rec = self.mode_record(merchant).await?;
        let configured = self.configured_channels(merchant, true).await?;
        Ok(ModeView {
            livemode: rec.as_ref().map_or(self.ps_livemode(), |r| r.livemode),
            source: if rec.is_some() {
                "merchant"
            } else {
                "server_default"
            },
            changed_at: rec.map(|r| r.changed_at),
            test_channels: self.session_channels(merchant, false).await?,
            live_channels: self.session_channels(merchant, true).await?,
            configured_live_channels: configured,
        })
    }

    /// Switches the merchant between test and live. Going live needs at least one channel
    /// configured in live mode (409 `live_channel_required`), so a live session can always be
    /// paid. Sessions keep the mode they were created in.
    pub async fn set_mode(
        &self,
        merchant: MerchantId,
        by: UserId,
        req: ModeRequest,
    ) -> EngineResult<ModeView> {
        if req.livemode && self.configured_channels(merchant, true).await?.is_empty() {
            return Err(EngineError::Conflict {
                code: "live_channel_required",
                message: "configure a payment channel in live mode first \
                          (PUT /api/merchant/channels/{channel} with \"livemode\": true)"
                    .into(),
            });
        }
        let rec = ModeRecord {
            livemode: req.livemode,
            changed_at: self.engine.clock().now(),
            changed_by: by,
        };
        let mut b = WriteBatch::new();
        b.push(WriteOp::PutRecord {
            kind: MODE,
            key: merchant.to_string(),
            value: serde_json::to_vec(&rec).map_err(|e| EngineError::Internal(e.to_string()))?,
        });
        self.engine.ledger().submit(b).await?;
        tracing::info!(merchant = %merchant, livemode = req.livemode, "merchant mode changed");
        self.mode(merchant).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_without_a_mode_lists_both_test_first() {
        assert_eq!(ModeFilter::default().modes(), vec![false, true]);
        let live = ModeFilter {
            livemode: Some(true),
        };
        assert_eq!(live.modes(), vec![true]);
    }
}
