//! Stripe webhook signatures: parsing the `Stripe-Signature` header, checking its `v1`
//! HMAC-SHA256 signatures in constant time against the raw request body, enforcing the
//! timestamp tolerance, and producing such headers for our PSP simulator and tests.
//!
//! This module does not own anything around that check: it never parses the event JSON,
//! never deduplicates event ids or replays (the engine's idempotency layer does), never
//! stores or looks up endpoint secrets (the caller passes the right `whsec_…` secret per
//! endpoint, and during a secret roll may call [`verify`] once per candidate secret), and
//! does no HTTP. It never prints or keeps the secret.
//!
//! The scheme, as Stripe documents it (<https://docs.stripe.com/webhooks#verify-manually>):
//! the header is a comma-separated list of `key=value` items, `t=<unix seconds>` plus one or
//! more `v1=<hex>` signatures (several during a secret roll) and possibly other schemes
//! (`v0`, used for test-mode events), which are ignored. The signed payload is
//! `"{t}.{raw body}"`, and the expected signature is the lowercase hex of
//! HMAC-SHA256 keyed with the endpoint secret — the whole `whsec_…` string taken as raw
//! bytes, not base64-decoded. The event is authentic when any `v1` matches; it is then
//! rejected if `t` is further than the tolerance from now (Stripe's libraries default to
//! 300 s).
//!
//! Verification allocates nothing: the header is split in place, each candidate `v1` is hex
//! decoded into a stack buffer, and the MAC is fed `t`, `.` and the body incrementally.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

type HmacSha256 = Hmac<Sha256>;

/// Name of the HTTP header that carries the signature.
pub const HEADER_NAME: &str = "Stripe-Signature";

/// Default tolerance between the signed timestamp and now, in seconds (Stripe's default).
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// Longest header accepted; real headers are well under 1 KiB even during a secret roll.
pub const MAX_HEADER_LEN: usize = 4096;

/// Length in bytes of an HMAC-SHA256 signature (64 hex characters on the wire).
const SIGNATURE_LEN: usize = 32;

/// Largest number of digits accepted in `t` (keeps the value far inside `i64`).
const MAX_TIMESTAMP_DIGITS: usize = 18;

/// Why a `Stripe-Signature` header was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripeSignatureError {
    /// The header does not have the documented `t=…,v1=…` shape; the text says what is wrong.
    #[error("malformed Stripe-Signature header: {0}")]
    MalformedHeader(&'static str),
    /// The header is well formed but carries no `v1` signature (e.g. only `v0`).
    #[error("Stripe-Signature header has no v1 signature")]
    NoV1Signature,
    /// A `v1` signature matched, but the signed timestamp is too far from now.
    #[error(
        "Stripe-Signature timestamp {timestamp} is more than {tolerance_secs} s away from now ({now})"
    )]
    TimestampOutsideTolerance {
        /// The signed timestamp from the header (Unix seconds).
        timestamp: i64,
        /// The verifier's clock (Unix seconds).
        now: i64,
        /// The tolerance that was applied (seconds).
        tolerance_secs: i64,
    },
    /// No `v1` signature in the header matches the body under this secret.
    #[error("no v1 signature in the Stripe-Signature header matches the payload")]
    SignatureMismatch,
}

/// Verifies a Stripe webhook: `header` is the `Stripe-Signature` value, `body` the raw
/// request body exactly as received, `secret` the endpoint's signing secret (`whsec_…`).
///
/// Accepts when any `v1` signature matches (compared in constant time) and
/// `|now_unix - t| <= tolerance_secs` (a negative tolerance is treated as 0). Other schemes
/// (`v0`, unknown ones) are ignored; a `v1` value that is not 64 hex digits simply cannot
/// match. Returns the signed timestamp `t` on success.
///
/// As in Stripe's own libraries the signature is checked before the timestamp, so
/// [`StripeSignatureError::TimestampOutsideTolerance`] is only reported for authentic but
/// stale (or future-dated) events.
pub fn verify(
    header: &str,
    body: &[u8],
    secret: &str,
    now_unix: i64,
    tolerance_secs: i64,
) -> Result<i64, StripeSignatureError> {
    let parsed = parse_header(header)?;
    if !parsed.has_v1 {
        return Err(StripeSignatureError::NoV1Signature);
    }

    let expected = compute_signature(secret.as_bytes(), parsed.timestamp_text, body);

    let mut matched = Choice::from(0u8);
    let mut candidate = [0u8; SIGNATURE_LEN];
    for (key, value) in items(header) {
        if key == "v1" && hex::decode_to_slice(value, &mut candidate).is_ok() {
            matched |= candidate.ct_eq(&expected);
        }
    }
    if !bool::from(matched) {
        return Err(StripeSignatureError::SignatureMismatch);
    }

    let tolerance = tolerance_secs.max(0).unsigned_abs();
    if now_unix.abs_diff(parsed.timestamp) > tolerance {
        return Err(StripeSignatureError::TimestampOutsideTolerance {
            timestamp: parsed.timestamp,
            now: now_unix,
            tolerance_secs: tolerance_secs.max(0),
        });
    }
    Ok(parsed.timestamp)
}

/// Produces a `Stripe-Signature` header value `t={t},v1={hex}` for `body`, signed with
/// `secret` at Unix time `t` — what Stripe would send. Used by the PSP simulator and tests.
///
/// `t` should be non-negative: [`verify`] rejects negative timestamps as malformed, as no
/// real webhook carries one.
pub fn sign(body: &[u8], secret: &str, t: i64) -> String {
    let timestamp = t.to_string();
    let signature = compute_signature(secret.as_bytes(), &timestamp, body);
    format!("t={timestamp},v1={}", hex::encode(signature))
}

/// HMAC-SHA256(secret, "{timestamp}.{body}"), fed incrementally.
fn compute_signature(secret: &[u8], timestamp: &str, body: &[u8]) -> [u8; SIGNATURE_LEN] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// What the first pass over the header found.
struct ParsedHeader<'a> {
    /// `t` exactly as it appears in the header (canonical decimal digits).
    timestamp_text: &'a str,
    /// `t` as a number.
    timestamp: i64,
    /// Whether at least one `v1` item is present.
    has_v1: bool,
}

/// The header's `key=value` items, split in place with surrounding whitespace trimmed. Only
/// used after [`parse_header`] accepted the header, so every item has an `=`.
fn items(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header.split(',').map(|item| {
        let item = item.trim();
        match item.split_once('=') {
            Some((key, value)) => (key.trim(), value.trim()),
            None => (item, ""),
        }
    })
}

/// Validates the header's structure and extracts `t`, without allocating.
fn parse_header(header: &str) -> Result<ParsedHeader<'_>, StripeSignatureError> {
    use StripeSignatureError::MalformedHeader;

    if header.len() > MAX_HEADER_LEN {
        return Err(MalformedHeader("header is too long"));
    }
    if header.trim().is_empty() {
        return Err(MalformedHeader("header is empty"));
    }

    let mut timestamp: Option<&str> = None;
    let mut has_v1 = false;
    for item in header.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(MalformedHeader("empty item"));
        }
        let Some((key, value)) = item.split_once('=') else {
            return Err(MalformedHeader("item without '='"));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(MalformedHeader("item with an empty key"));
        }
        match key {
            "t" => {
                if timestamp.is_some() {
                    return Err(MalformedHeader("more than one timestamp"));
                }
                timestamp = Some(value.trim());
            }
            "v1" => has_v1 = true,
            _ => {} // v0 and unknown schemes are ignored, as Stripe documents.
        }
    }

    let Some(timestamp_text) = timestamp else {
        return Err(MalformedHeader("no timestamp (t=)"));
    };
    let timestamp = parse_timestamp(timestamp_text).ok_or(MalformedHeader(
        "timestamp is not a non-negative decimal integer",
    ))?;
    Ok(ParsedHeader {
        timestamp_text,
        timestamp,
        has_v1,
    })
}

/// Parses canonical decimal digits (no sign, no leading zeros, at most 18 digits), so the
/// header text is exactly what Stripe signed for that number.
fn parse_timestamp(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.is_empty()
        || bytes.len() > MAX_TIMESTAMP_DIGITS
        || !bytes.iter().all(u8::is_ascii_digit)
        || (bytes.len() > 1 && bytes[0] == b'0')
    {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
