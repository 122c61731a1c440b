//! MultiSafepay notification authenticity: checking the `Auth` header of a POST notification
//! (webhook) against the raw request body with HMAC-SHA512 in constant time, enforcing the
//! timestamp tolerance, and producing such headers for our PSP simulator and tests.
//!
//! This module does not own anything around that check: it never parses the order JSON,
//! never fetches the order status from the API, never deduplicates resent notifications (the
//! engine's idempotency layer does), never stores API keys (the caller passes the website's
//! key) and does no HTTP, IP allow-listing or acknowledgement (`OK` body). It never prints or
//! keeps the key.
//!
//! The scheme, as MultiSafepay documents it (<https://docs.multisafepay.com/docs/handle-notifications>,
//! "Validate with your own solution"): the `Auth` header is the base64 encoding of
//! `"{timestamp}:{signature}"`, where the timestamp is Unix seconds and the signature is the
//! lowercase hex of HMAC-SHA512 keyed with the website API key over
//! `"{timestamp}:{raw body}"`. The docs ask to also check that the timestamp is recent;
//! MultiSafepay's PHP SDK uses a 600 s window (`verifyNotification`, `$validationTimeInSeconds
//! = 600`) and trims the API key, and so do we.
//!
//! Verification allocates nothing: the header is base64-decoded into a stack buffer, split in
//! place, and the MAC is fed the timestamp, `:` and the body incrementally.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use sha2::Sha512;

type HmacSha512 = Hmac<Sha512>;

/// Name of the HTTP header that carries the signature.
pub const HEADER_NAME: &str = "Auth";

/// Default tolerance between the signed timestamp and now, in seconds (the PHP SDK's).
pub const DEFAULT_TOLERANCE_SECS: i64 = 600;

/// Length in bytes of an HMAC-SHA512 signature (128 hex characters on the wire).
const SIGNATURE_LEN: usize = 64;

/// Largest number of digits accepted in the timestamp (keeps the value inside `i64`).
const MAX_TIMESTAMP_DIGITS: usize = 18;

/// Longest decoded header: 18 timestamp digits, `:`, 128 hex digits.
const MAX_DECODED_LEN: usize = MAX_TIMESTAMP_DIGITS + 1 + 2 * SIGNATURE_LEN;

/// Longest `Auth` header accepted: base64 (padded) of an 18-digit timestamp, `:` and 128 hex
/// digits.
pub const MAX_HEADER_LEN: usize = MAX_DECODED_LEN.div_ceil(3) * 4;

/// Standard base64 that accepts the header with or without `=` padding (as PHP's
/// `base64_decode` does) and emits it padded.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a MultiSafepay `Auth` header was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultiSafepayAuthError {
    /// The header is not base64 of `"{timestamp}:{128 hex digits}"`; the text says what is
    /// wrong.
    #[error("malformed MultiSafepay Auth header: {0}")]
    MalformedHeader(&'static str),
    /// The signature matched, but the signed timestamp is too far from now.
    #[error(
        "MultiSafepay Auth timestamp {timestamp} is more than {tolerance_secs} s away from now ({now})"
    )]
    TimestampOutsideTolerance {
        /// The signed timestamp from the header (Unix seconds).
        timestamp: i64,
        /// The verifier's clock (Unix seconds).
        now: i64,
        /// The tolerance that was applied (seconds).
        tolerance_secs: i64,
    },
    /// The signature does not match the body under this API key.
    #[error("MultiSafepay Auth signature does not match the payload")]
    SignatureMismatch,
}

/// Verifies a MultiSafepay POST notification: `auth_header` is the `Auth` header value,
/// `body` the raw request body exactly as received, `api_key` the website API key
/// (surrounding whitespace is ignored, as in MultiSafepay's PHP SDK).
///
/// Accepts when the HMAC-SHA512 signature matches (compared in constant time) and
/// `|now_unix - timestamp| <= tolerance_secs` (a negative tolerance is treated as 0).
/// Returns the signed timestamp on success. The signature is checked first, so
/// [`MultiSafepayAuthError::TimestampOutsideTolerance`] is only reported for authentic but
/// stale (or future-dated) notifications.
pub fn verify(
    auth_header: &str,
    body: &[u8],
    api_key: &str,
    now_unix: i64,
    tolerance_secs: i64,
) -> Result<i64, MultiSafepayAuthError> {
    use MultiSafepayAuthError::MalformedHeader;

    let encoded = auth_header.trim();
    if encoded.is_empty() {
        return Err(MalformedHeader("header is empty"));
    }
    if encoded.len() > MAX_HEADER_LEN {
        return Err(MalformedHeader("header is too long"));
    }

    // Base64 decoding may need up to a few bytes of slack past the decoded length.
    let mut decoded_buf = [0u8; MAX_HEADER_LEN];
    let decoded_len = BASE64
        .decode_slice(encoded, &mut decoded_buf)
        .map_err(|_| MalformedHeader("header is not valid base64"))?;
    let decoded = &decoded_buf[..decoded_len];

    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or(MalformedHeader("decoded header has no ':' separator"))?;
    let (timestamp_text, signature_hex) = (&decoded[..colon], &decoded[colon + 1..]);

    let timestamp = parse_timestamp(timestamp_text).ok_or(MalformedHeader(
        "timestamp is not a non-negative decimal integer",
    ))?;
    let mut signature = [0u8; SIGNATURE_LEN];
    hex::decode_to_slice(signature_hex, &mut signature)
        .map_err(|_| MalformedHeader("signature is not 128 hex digits"))?;

    mac_over(api_key, timestamp_text, body)
        .verify_slice(&signature)
        .map_err(|_| MultiSafepayAuthError::SignatureMismatch)?;

    let tolerance = tolerance_secs.max(0).unsigned_abs();
    if now_unix.abs_diff(timestamp) > tolerance {
        return Err(MultiSafepayAuthError::TimestampOutsideTolerance {
            timestamp,
            now: now_unix,
            tolerance_secs: tolerance_secs.max(0),
        });
    }
    Ok(timestamp)
}

/// Produces the `Auth` header value MultiSafepay would send for `body` at Unix time
/// `timestamp`, signed with `api_key`. Used by the PSP simulator and tests.
///
/// `timestamp` should be non-negative: [`verify`] rejects negative timestamps as malformed.
pub fn sign(body: &[u8], api_key: &str, timestamp: i64) -> String {
    let timestamp = timestamp.to_string();
    let signature = mac_over(api_key, timestamp.as_bytes(), body)
        .finalize()
        .into_bytes();
    BASE64.encode(format!("{timestamp}:{}", hex::encode(signature)))
}

/// HMAC-SHA512(trimmed api_key) fed with "{timestamp}:{body}", ready to finalize or verify.
fn mac_over(api_key: &str, timestamp: &[u8], body: &[u8]) -> HmacSha512 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac =
        HmacSha512::new_from_slice(api_key.trim().as_bytes()).expect("HMAC accepts any key length");
    mac.update(timestamp);
    mac.update(b":");
    mac.update(body);
    mac
}

/// Parses 1 to 18 ASCII digits (no sign).
fn parse_timestamp(text: &[u8]) -> Option<i64> {
    if text.is_empty() || text.len() > MAX_TIMESTAMP_DIGITS {
        return None;
    }
    text.iter().try_fold(0i64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
    })
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
