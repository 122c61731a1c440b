//! Time, injected. Everything that expires, retries or schedules asks a [`Clock`], so tests move
//! time forward instead of sleeping.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// A source of the current time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// Now, in milliseconds.
    fn now_ms(&self) -> i64;

    /// Now, as a [`Timestamp`].
    fn now(&self) -> Timestamp {
        Timestamp(self.now_ms())
    }
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        Utc::now().timestamp_millis()
    }
}

/// A clock that only moves when told to (tests).
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// Starts at the given time.
    pub fn new(start_ms: i64) -> Self {
        ManualClock(Arc::new(AtomicI64::new(start_ms)))
    }

    /// Moves time forward.
    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A point in time with millisecond precision; on the wire an RFC 3339 UTC string
/// (`2026-05-27T09:30:00Z`, with `.mmm` only when the milliseconds are not zero).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Milliseconds since the Unix epoch.
    pub fn ms(&self) -> i64 {
        self.0
    }

    /// `self` plus a number of seconds (saturating).
    pub fn plus_secs(&self, secs: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(secs.saturating_mul(1000)))
    }

    /// As a chrono date-time.
    pub fn to_datetime(&self) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(self.0)
            .single()
            .unwrap_or_default()
    }

    /// Parses RFC 3339, or a bare date `YYYY-MM-DD` (midnight UTC), as query filters allow.
    pub fn parse_flexible(s: &str) -> Option<Timestamp> {
        if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
            return Some(Timestamp(dt.timestamp_millis()));
        }
        let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
        Some(Timestamp(
            d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis(),
        ))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            &self
                .to_datetime()
                .to_rfc3339_opts(SecondsFormat::AutoSi, true),
        )
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|dt| Timestamp(dt.timestamp_millis()))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_render_like_the_spec_and_round_trip() {
        let t = Timestamp::parse_flexible("2026-05-27T09:30:00Z").unwrap();
        assert_eq!(t.to_string(), "2026-05-27T09:30:00Z");
        let t2 = Timestamp(t.0 + 5);
        assert_eq!(t2.to_string(), "2026-05-27T09:30:00.005Z");
        let back: Timestamp = serde_json::from_str(&serde_json::to_string(&t2).unwrap()).unwrap();
        assert_eq!(back, t2);
        assert_eq!(
            Timestamp::parse_flexible("2026-05-01").unwrap().to_string(),
            "2026-05-01T00:00:00Z"
        );
        assert!(Timestamp::parse_flexible("yesterday").is_none());
    }
}
