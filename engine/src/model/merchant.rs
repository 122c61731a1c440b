//! Merchants and their API keys. Key secrets are shown once and stored only as SHA-256 hashes
//! (they are 190-bit random strings, so a fast hash is enough: there is nothing to brute-force).

use crate::clock::Timestamp;
use crate::error::{EngineError, EngineResult};
use crate::ids::{ApiKeyId, MerchantId};
use ipnet::IpNet;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::net::IpAddr;

/// Default key lifetime.
pub const DEFAULT_KEY_TTL_DAYS: i64 = 365;
/// Bounds.
pub const MAX_KEY_LABEL_LEN: usize = 100;
pub const MAX_WHITELIST_ENTRIES: usize = 50;
pub const MAX_KEYS_PER_MERCHANT: usize = 200;

/// A string that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: String) -> Self {
        Secret(s)
    }

    /// The value, for the few places that must use it (signing, showing once at creation).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A merchant account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Merchant {
    pub id: MerchantId,
    pub name: String,
    /// Signs outbound webhooks; needed in clear to compute HMACs, never returned after creation.
    pub webhook_secret: Secret,
    pub created: Timestamp,
}

/// What an API key may do.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum Permission {
    #[serde(rename = "api_keys:read")]
    ApiKeysRead,
    #[serde(rename = "api_keys:write")]
    ApiKeysWrite,
    #[serde(rename = "services:read")]
    ServicesRead,
    #[serde(rename = "services:write")]
    ServicesWrite,
    #[serde(rename = "payment_intents:read")]
    PaymentIntentsRead,
    #[serde(rename = "payment_intents:write")]
    PaymentIntentsWrite,
    #[serde(rename = "refunds:read")]
    RefundsRead,
    #[serde(rename = "refunds:write")]
    RefundsWrite,
    #[serde(rename = "events:read")]
    EventsRead,
    #[serde(rename = "webhooks:read")]
    WebhooksRead,
    #[serde(rename = "webhooks:write")]
    WebhooksWrite,
    #[serde(rename = "channels:read")]
    ChannelsRead,
    #[serde(rename = "channels:write")]
    ChannelsWrite,
}

impl Permission {
    /// Every permission: what the bootstrap keys carry.
    pub const ALL: [Permission; 13] = [
        Permission::ApiKeysRead,
        Permission::ApiKeysWrite,
        Permission::ServicesRead,
        Permission::ServicesWrite,
        Permission::PaymentIntentsRead,
        Permission::PaymentIntentsWrite,
        Permission::RefundsRead,
        Permission::RefundsWrite,
        Permission::EventsRead,
        Permission::WebhooksRead,
        Permission::WebhooksWrite,
        Permission::ChannelsRead,
        Permission::ChannelsWrite,
    ];

    /// Wire name (`payment_intents:write`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Permission::ApiKeysRead => "api_keys:read",
            Permission::ApiKeysWrite => "api_keys:write",
            Permission::ServicesRead => "services:read",
            Permission::ServicesWrite => "services:write",
            Permission::PaymentIntentsRead => "payment_intents:read",
            Permission::PaymentIntentsWrite => "payment_intents:write",
            Permission::RefundsRead => "refunds:read",
            Permission::RefundsWrite => "refunds:write",
            Permission::EventsRead => "events:read",
            Permission::WebhooksRead => "webhooks:read",
            Permission::WebhooksWrite => "webhooks:write",
            Permission::ChannelsRead => "channels:read",
            Permission::ChannelsWrite => "channels:write",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// A stored API key: everything but the secret, which exists only as a hash in an index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiKey {
    #[schema(value_type = String, example = "key_01J7XYKZ1A2B3C4D5E6F7G8H9J")]
    pub id: ApiKeyId,
    pub label: String,
    /// `sk_test_…abcd`: enough to recognise a key, not to use it.
    pub redacted: String,
    pub permissions: Vec<Permission>,
    #[schema(value_type = Vec<String>, example = json!(["203.0.113.0/24"]))]
    pub ip_whitelist: Vec<IpNet>,
    pub livemode: bool,
    #[schema(value_type = String)]
    pub merchant_id: MerchantId,
    #[schema(value_type = String, format = DateTime)]
    pub created: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    #[serde(default)]
    pub revoked_at: Option<Timestamp>,
}

impl ApiKey {
    /// Neither revoked nor expired at `now`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none_or(|r| r > now) && now < self.expires_at
    }

    /// Checks revocation, expiry and the IP whitelist for a request at `now` from `ip`.
    pub fn check_usable(&self, now: Timestamp, ip: Option<IpAddr>) -> EngineResult<()> {
        if self.revoked_at.is_some_and(|r| r <= now) {
            return Err(EngineError::AuthRevoked);
        }
        if now >= self.expires_at {
            return Err(EngineError::AuthExpired);
        }
        if !self.ip_whitelist.is_empty() {
            let ip = ip.map(canonical_ip);
            let allowed = ip.is_some_and(|ip| self.ip_whitelist.iter().any(|n| n.contains(&ip)));
            if !allowed {
                return Err(EngineError::IpNotAllowed {
                    ip: ip
                        .map(|i| i.to_string())
                        .unwrap_or_else(|| "unknown".into()),
                });
            }
        }
        Ok(())
    }

    /// Whether the key carries a permission.
    pub fn allows(&self, p: Permission) -> bool {
        self.permissions.contains(&p)
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) are matched as IPv4.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// A freshly generated secret with its hash and display form.
pub struct NewSecret {
    pub secret: Secret,
    pub hash: [u8; 32],
    pub redacted: String,
}

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Random base62 string of `len` characters (≈5.95 bits each).
pub fn random_token(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| BASE62[rng.random_range(0..BASE62.len())] as char)
        .collect()
}

/// A new API key secret: `sk_test_` or `sk_live_` + 32 base62 characters (≈190 bits).
pub fn generate_api_secret(livemode: bool) -> NewSecret {
    let prefix = if livemode { "sk_live_" } else { "sk_test_" };
    let body = random_token(32);
    let secret = format!("{prefix}{body}");
    let hash = hash_secret(&secret);
    let redacted = format!("{prefix}…{}", &body[body.len() - 4..]);
    NewSecret {
        secret: Secret(secret),
        hash,
        redacted,
    }
}

/// A webhook signing secret: `whsec_` + 32 base62 characters.
pub fn generate_webhook_secret() -> Secret {
    Secret(format!("whsec_{}", random_token(32)))
}

/// SHA-256 of a presented secret.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Whether a bearer token looks like one of our keys, and its mode.
pub fn key_mode(secret: &str) -> Option<bool> {
    if secret.len() > 128 {
        return None;
    }
    if secret.starts_with("sk_live_") {
        Some(true)
    } else if secret.starts_with("sk_test_") {
        Some(false)
    } else {
        None
    }
}

/// An [`ApiKeyInput`] after validation.
#[derive(Debug, Clone)]
pub struct ParsedKeyInput {
    pub label: String,
    /// `None`: inherit the creating key's permissions.
    pub permissions: Option<Vec<Permission>>,
    pub ip_whitelist: Vec<IpNet>,
    pub expires_in_days: i64,
}

/// Validated input for a new key.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyInput {
    pub label: Option<String>,
    /// Defaults to the permissions of the key making the request.
    #[schema(value_type = Option<Vec<String>>)]
    pub permissions: Option<Vec<String>>,
    /// IPv4/IPv6 CIDRs (or single addresses); empty means any address.
    pub ip_whitelist: Option<Vec<String>>,
    /// Lifetime in days, 1 to 3650; default 365.
    pub expires_in_days: Option<i64>,
}

impl ApiKeyInput {
    /// Parses permissions and CIDRs; errors name the offending entry.
    pub fn parse(&self) -> EngineResult<ParsedKeyInput> {
        let label = self.label.clone().unwrap_or_else(|| "API key".into());
        if label.trim().is_empty() || label.chars().count() > MAX_KEY_LABEL_LEN {
            return Err(EngineError::invalid(
                "parameter_invalid",
                "label",
                format!("label must be 1 to {MAX_KEY_LABEL_LEN} characters"),
            ));
        }
        let perms = match &self.permissions {
            None => None,
            Some(list) => Some(parse_permissions(list)?),
        };
        let nets = parse_ip_whitelist(self.ip_whitelist.as_deref().unwrap_or_default())?;
        let days = self.expires_in_days.unwrap_or(DEFAULT_KEY_TTL_DAYS);
        if !(1..=3650).contains(&days) {
            return Err(EngineError::invalid(
                "parameter_invalid",
                "expires_in_days",
                "expires_in_days must be between 1 and 3650",
            ));
        }
        Ok(ParsedKeyInput {
            label: label.trim().to_string(),
            permissions: perms,
            ip_whitelist: nets,
            expires_in_days: days,
        })
    }
}

/// Parses a key's permission names into a sorted, de-duplicated, non-empty set.
fn parse_permissions(list: &[String]) -> EngineResult<Vec<Permission>> {
    let mut out = Vec::with_capacity(list.len());
    for (i, p) in list.iter().enumerate() {
        let perm = Permission::parse(p).ok_or_else(|| {
            EngineError::invalid(
                "permission_unknown",
                format!("permissions[{i}]"),
                format!(
                    "unknown permission `{}`; known: {}",
                    p.chars().take(40).collect::<String>(),
                    Permission::ALL
                        .iter()
                        .map(|p| p.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        if !out.contains(&perm) {
            out.push(perm);
        }
    }
    if out.is_empty() {
        return Err(EngineError::invalid(
            "parameter_invalid",
            "permissions",
            "a key needs at least one permission",
        ));
    }
    out.sort();
    Ok(out)
}

/// Parses a key's IP whitelist (addresses or CIDRs, bounded in number) into networks.
pub(crate) fn parse_ip_whitelist(list: &[String]) -> EngineResult<Vec<IpNet>> {
    if list.len() > MAX_WHITELIST_ENTRIES {
        return Err(EngineError::invalid(
            "parameter_invalid",
            "ip_whitelist",
            format!("at most {MAX_WHITELIST_ENTRIES} entries"),
        ));
    }
    let mut nets = Vec::with_capacity(list.len());
    for (i, s) in list.iter().enumerate() {
        let net = s
            .parse::<IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| {
                EngineError::invalid(
                    "parameter_invalid",
                    format!("ip_whitelist[{i}]"),
                    format!(
                        "`{}` is not an IPv4/IPv6 address or CIDR",
                        s.chars().take(60).collect::<String>()
                    ),
                )
            })?;
        nets.push(net.trunc());
    }
    Ok(nets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(whitelist: &[&str]) -> ApiKey {
        ApiKey {
            id: ApiKeyId::new_at(0),
            label: "k".into(),
            redacted: "sk_test_…abcd".into(),
            permissions: Permission::ALL.to_vec(),
            ip_whitelist: whitelist.iter().map(|s| s.parse().unwrap()).collect(),
            livemode: false,
            merchant_id: MerchantId::new_at(0),
            created: Timestamp(0),
            expires_at: Timestamp(1000),
            revoked_at: None,
        }
    }

    #[test]
    fn whitelist_matches_v4_v6_and_mapped_addresses() {
        let k = key(&["203.0.113.0/24", "2001:db8::/32"]);
        assert!(
            k.check_usable(Timestamp(1), Some("203.0.113.7".parse().unwrap()))
                .is_ok()
        );
        assert!(
            k.check_usable(Timestamp(1), Some("::ffff:203.0.113.7".parse().unwrap()))
                .is_ok()
        );
        assert!(
            k.check_usable(Timestamp(1), Some("2001:db8::1".parse().unwrap()))
                .is_ok()
        );
        let e = k
            .check_usable(Timestamp(1), Some("198.51.100.1".parse().unwrap()))
            .unwrap_err();
        assert_eq!(e.code(), "ip_not_allowed");
    }

    #[test]
    fn expired_and_revoked_keys_are_refused_with_their_codes() {
        let mut k = key(&[]);
        assert_eq!(
            k.check_usable(Timestamp(1000), None).unwrap_err().code(),
            "auth_expired"
        );
        k.revoked_at = Some(Timestamp(5));
        assert_eq!(
            k.check_usable(Timestamp(6), None).unwrap_err().code(),
            "auth_revoked"
        );
    }

    #[test]
    fn secrets_are_long_random_and_never_debug_printed() {
        let s = generate_api_secret(true);
        assert!(s.secret.expose().starts_with("sk_live_") && s.secret.expose().len() == 40);
        assert_eq!(format!("{:?}", s.secret), "***");
        assert_eq!(hash_secret(s.secret.expose()), s.hash);
        assert_ne!(generate_api_secret(true).secret, s.secret);
    }

    #[test]
    fn key_input_rejects_unknown_permissions_and_bad_cidrs() {
        let i = ApiKeyInput {
            permissions: Some(vec!["root".into()]),
            ..Default::default()
        };
        assert_eq!(i.parse().unwrap_err().code(), "permission_unknown");
        let i = ApiKeyInput {
            ip_whitelist: Some(vec!["10.0.0.0/33".into()]),
            ..Default::default()
        };
        assert_eq!(i.parse().unwrap_err().param(), Some("ip_whitelist[0]"));
        let i = ApiKeyInput {
            ip_whitelist: Some(vec!["10.1.2.3".into(), "::1/128".into()]),
            ..Default::default()
        };
        assert_eq!(i.parse().unwrap().ip_whitelist.len(), 2);
    }
}
