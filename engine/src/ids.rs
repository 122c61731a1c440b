//! Typed, prefixed, sortable identifiers.
//!
//! Every object id is a short prefix (`pi_`, `re_`, `evt_`, …) followed by a 26-character
//! Crockford base32 ULID. The ULID's leading 48 bits are the creation time in milliseconds, so
//! ids sort by creation time and storage indexes keyed by id are also ordered by time.
//! Manifests (`svc_`) carry a UUIDv7 in the same 26-character form, as the merchant spec asks
//! for UUIDv7 service ids; the canonical hyphenated UUID is accepted on input too.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use ulid::Ulid;

/// Why a string is not an id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{value}` is not a valid {kind} id (expected `{prefix}` followed by 26 base32 characters)"
)]
pub struct IdError {
    pub kind: &'static str,
    pub prefix: &'static str,
    pub value: String,
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Ulid);

        impl $name {
            /// The textual prefix of this kind of id.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh id for the given creation time (milliseconds since the Unix epoch).
            pub fn new_at(unix_ms: i64) -> Self {
                $name(monotonic_ulid(unix_ms))
            }

            /// The underlying 128-bit value (time-ordered).
            pub fn as_u128(&self) -> u128 {
                self.0.0
            }

            /// Rebuilds an id from its 128-bit value (storage keys).
            pub fn from_u128(v: u128) -> Self {
                $name(Ulid(v))
            }

            /// Big-endian bytes: byte order equals time order.
            pub fn to_bytes(&self) -> [u8; 16] {
                self.0.0.to_be_bytes()
            }

            /// Creation time embedded in the id, in milliseconds.
            pub fn timestamp_ms(&self) -> i64 {
                self.0.timestamp_ms() as i64
            }

            /// The smallest id created at `unix_ms` (for time-bounded range scans).
            pub fn min_at(unix_ms: i64) -> Self {
                $name(Ulid::from_parts(u64::try_from(unix_ms).unwrap_or(0), 0))
            }

            /// Parses `prefix` + 26 base32 characters.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                let err = || IdError { kind: $kind, prefix: $prefix, value: s.chars().take(64).collect() };
                let rest = s.strip_prefix($prefix).ok_or_else(err)?;
                parse_ulid(rest).map($name).ok_or_else(err)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str($prefix)?;
                f.write_str(&self.0.to_string())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A ULID for `unix_ms`, strictly greater than the previous one issued for the same millisecond,
/// so ids (and the events they name) created within one millisecond still sort in creation order.
fn monotonic_ulid(unix_ms: i64) -> Ulid {
    use parking_lot::Mutex;
    // The last id issued per millisecond, in a small table indexed by ms: one clock only ever
    // needs one slot, and several clocks (tests run many engines in one process) rarely collide.
    const SLOTS: usize = 1024;
    static LAST: Mutex<[(u64, u128); SLOTS]> = Mutex::new([(u64::MAX, 0); SLOTS]);
    let ms = u64::try_from(unix_ms).unwrap_or(0).min((1 << 48) - 1);
    let mut table = LAST.lock();
    let slot = &mut table[(ms as usize) % SLOTS];
    let next = if slot.0 == ms && (slot.1 & ((1u128 << 80) - 1)) < (1u128 << 80) - 1 {
        slot.1 + 1
    } else {
        // Leave the top random bit clear so increments within the millisecond cannot overflow.
        Ulid::from_parts(ms, rand::random::<u128>() >> 49).0
    };
    *slot = (ms, next);
    Ulid(next)
}

fn parse_ulid(s: &str) -> Option<Ulid> {
    if s.len() != 26 {
        return None;
    }
    Ulid::from_string(s).ok()
}

typed_id!(
    /// A merchant account (`m_…`).
    MerchantId, "m_", "merchant"
);
typed_id!(
    /// A payment intent (`pi_…`).
    PaymentIntentId, "pi_", "payment intent"
);
typed_id!(
    /// A refund (`re_…`).
    RefundId, "re_", "refund"
);
typed_id!(
    /// An event (`evt_…`).
    EventId, "evt_", "event"
);
typed_id!(
    /// An API key (`key_…`); the id, never the secret.
    ApiKeyId, "key_", "API key"
);
typed_id!(
    /// A request, for tracing (`req_…`).
    RequestId, "req_", "request"
);
typed_id!(
    /// A last-mile order (`ord_…`).
    OrderId, "ord_", "order"
);
typed_id!(
    /// A last-mile payment session (`ps_…`).
    PaymentSessionId, "ps_", "payment session"
);
typed_id!(
    /// A last-mile user account (`usr_…`).
    UserId, "usr_", "user"
);
typed_id!(
    /// A subscription to a manifest's plan (`sub_…`).
    SubscriptionId, "sub_", "subscription"
);

/// A service manifest (`svc_…`): a UUIDv7 written as 26 base32 characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId(Ulid);

impl ServiceId {
    /// The textual prefix.
    pub const PREFIX: &'static str = "svc_";

    /// A fresh UUIDv7-based id.
    pub fn new_at(unix_ms: i64) -> Self {
        let ms = u64::try_from(unix_ms).unwrap_or(0);
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            ms / 1000,
            ((ms % 1000) * 1_000_000) as u32,
        );
        ServiceId(Ulid(uuid::Uuid::new_v7(ts).as_u128()))
    }

    /// The id as a hyphenated UUID (the v7 it was generated from).
    pub fn as_uuid(&self) -> uuid::Uuid {
        uuid::Uuid::from_u128(self.0.0)
    }

    /// Big-endian bytes for storage keys.
    pub fn to_bytes(&self) -> [u8; 16] {
        self.0.0.to_be_bytes()
    }

    /// Rebuilds from storage bytes.
    pub fn from_u128(v: u128) -> Self {
        ServiceId(Ulid(v))
    }

    /// Accepts `svc_` + 26 base32, bare 26 base32 (as the spec's examples show), or a UUID.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let err = || IdError {
            kind: "service",
            prefix: "svc_",
            value: s.chars().take(64).collect(),
        };
        let rest = s.strip_prefix("svc_").unwrap_or(s);
        if let Some(u) = parse_ulid(rest) {
            return Ok(ServiceId(u));
        }
        if rest.len() == 36
            && let Ok(u) = uuid::Uuid::parse_str(rest)
        {
            return Ok(ServiceId(Ulid(u.as_u128())));
        }
        Err(err())
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("svc_")?;
        f.write_str(&self.0.to_string())
    }
}

impl fmt::Debug for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for ServiceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ServiceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A fresh random node id (`node_` + 26 base32 characters), new on every process start.
pub fn new_node_id() -> String {
    format!("node_{}", ulid::Ulid::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_have_prefix_and_26_chars() {
        let id = PaymentIntentId::new_at(1_700_000_000_000);
        let s = id.to_string();
        assert!(s.starts_with("pi_"));
        assert_eq!(s.len(), 3 + 26);
        assert_eq!(PaymentIntentId::parse(&s).unwrap(), id);
        assert_eq!(id.timestamp_ms(), 1_700_000_000_000);
    }

    #[test]
    fn wrong_prefix_or_length_is_rejected() {
        let s = PaymentIntentId::new_at(1).to_string();
        assert!(RefundId::parse(&s).is_err());
        assert!(PaymentIntentId::parse("pi_123").is_err());
        assert!(PaymentIntentId::parse("pi_01J7XZ1A2B3C4D5E6F7G8H9IK!").is_err());
        assert!(PaymentIntentId::parse("").is_err());
    }

    #[test]
    fn service_ids_are_uuid_v7_and_accept_three_spellings() {
        let id = ServiceId::new_at(1_700_000_000_123);
        assert_eq!(id.as_uuid().get_version_num(), 7);
        let s = id.to_string();
        assert!(s.starts_with("svc_") && s.len() == 30);
        assert_eq!(ServiceId::parse(&s).unwrap(), id);
        assert_eq!(ServiceId::parse(&s[4..]).unwrap(), id);
        assert_eq!(ServiceId::parse(&id.as_uuid().to_string()).unwrap(), id);
    }

    #[test]
    fn ids_made_in_one_millisecond_sort_in_creation_order() {
        let ids: Vec<EventId> = (0..1000).map(|_| EventId::new_at(1_234_567)).collect();
        assert!(
            ids.windows(2)
                .all(|w| w[0] < w[1] && w[0].to_string() < w[1].to_string())
        );
        assert!(ids.iter().all(|i| i.timestamp_ms() == 1_234_567));
    }

    proptest! {
        #[test]
        fn ids_sort_by_creation_time(a in 0i64..(1i64 << 47), b in 0i64..(1i64 << 47)) {
            prop_assume!(a != b);
            let (x, y) = (EventId::new_at(a), EventId::new_at(b));
            prop_assert_eq!(a < b, x.to_string() < y.to_string());
            prop_assert_eq!(a < b, x.to_bytes() < y.to_bytes());
        }

        #[test]
        fn parse_never_panics(s in ".{0,40}") {
            let _ = PaymentIntentId::parse(&s);
            let _ = ServiceId::parse(&s);
        }
    }
}
