//! Engine settings: `[limits]` and `[sessions]` of `ipay.toml` as the engine reads them.
//!
//! Only the shapes and their documented defaults live here; the modules that enforce a limit
//! read it from [`EngineConfig`] (the request rate limits are enforced by the HTTP gateway,
//! after authentication). Channel, webhook and store settings have their own structs
//! next to the code that uses them.

use crate::session::SessionConfig;
use serde::{Deserialize, Serialize};

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
    /// Requests per second one API key may make, sustained (0: no per-key limit).
    pub rate_per_key_per_sec: u32,
    /// Requests one API key may make at once above the sustained rate (the bucket size).
    pub rate_per_key_burst: u32,
    /// Requests per second one merchant may make with all its keys together (0: no limit).
    pub rate_per_merchant_per_sec: u32,
    /// Requests one merchant may make at once above its sustained rate.
    pub rate_per_merchant_burst: u32,
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
            // Generous: a safety net against a runaway client, far above what one node serves
            // (a few thousand creates per second), so load tests and normal traffic never see it.
            rate_per_key_per_sec: 10_000,
            rate_per_key_burst: 20_000,
            rate_per_merchant_per_sec: 20_000,
            rate_per_merchant_burst: 40_000,
        }
    }
}

/// Engine settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// The payment-session layer (`[sessions]`).
    pub sessions: SessionConfig,
    /// Request content limits (`[limits]`).
    pub limits: Limits,
    /// Which webhook URLs manifests may name; built from `[webhooks]`, not a section of its own.
    #[serde(skip)]
    pub url_policy: crate::url_policy::UrlPolicy,
}
