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
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &str = "whsec_ipay_test_5WbX5kEWLlfzsGNjH64I8lOOqUB6e8FH";
    const T: i64 = 1_492_774_577;
    const BODY: &[u8] =
        br#"{"id":"evt_1ipayTestEvent","object":"event","type":"payment_intent.succeeded"}"#;

    /// Stripe publishes the scheme, not a test vector, so this one was computed
    /// independently when the test was written, with Python 3.11's standard library:
    /// `hmac.new(SECRET.encode(), b"1492774577." + BODY, hashlib.sha256).hexdigest()`.
    const PYTHON_V1: &str = "d2b7db4f7ea3779eeb594b7d128b1df93b63005b29f4dd39b09488f6ffd2cd2f";
    /// The same payload under the secret `whsec_other` (same Python one-liner).
    const PYTHON_V1_OTHER_SECRET: &str =
        "a883535c15ce79ac035cc8352aec55331bf18f035d549fd767343bae0d3a30bd";

    fn header_with(v1s: &[&str]) -> String {
        let mut header = format!("t={T}");
        for v1 in v1s {
            header.push_str(",v1=");
            header.push_str(v1);
        }
        header
    }

    #[test]
    fn independent_python_vector_signs_and_verifies() {
        assert_eq!(sign(BODY, SECRET, T), format!("t={T},v1={PYTHON_V1}"));
        assert_eq!(
            verify(&header_with(&[PYTHON_V1]), BODY, SECRET, T, 300),
            Ok(T)
        );
        assert_eq!(
            verify(
                &header_with(&[PYTHON_V1_OTHER_SECRET]),
                BODY,
                "whsec_other",
                T,
                300
            ),
            Ok(T)
        );
    }

    #[test]
    fn v0_and_unknown_schemes_are_ignored() {
        let header = format!(
            "t={T},v1={PYTHON_V1},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39,v9=whatever,foo=bar"
        );
        assert_eq!(verify(&header, BODY, SECRET, T, 300), Ok(T));
        // Schemes may come in any order, t included.
        let header = format!("v0=abc,v1={PYTHON_V1},t={T}");
        assert_eq!(verify(&header, BODY, SECRET, T, 300), Ok(T));
    }

    #[test]
    fn only_v0_is_no_v1_signature() {
        let header = format!("t={T},v0={PYTHON_V1}");
        assert_eq!(
            verify(&header, BODY, SECRET, T, 300),
            Err(StripeSignatureError::NoV1Signature)
        );
        assert_eq!(
            verify(&format!("t={T}"), BODY, SECRET, T, 300),
            Err(StripeSignatureError::NoV1Signature)
        );
    }

    #[test]
    fn any_matching_v1_among_several_is_accepted() {
        let other = PYTHON_V1_OTHER_SECRET;
        for v1s in [
            [PYTHON_V1, other, other],
            [other, PYTHON_V1, other],
            [other, other, PYTHON_V1],
        ] {
            assert_eq!(verify(&header_with(&v1s), BODY, SECRET, T, 300), Ok(T));
        }
        // A secret roll: the header carries signatures under the old and the new secret,
        // and either secret verifies.
        let header = header_with(&[PYTHON_V1, other]);
        assert_eq!(verify(&header, BODY, SECRET, T, 300), Ok(T));
        assert_eq!(verify(&header, BODY, "whsec_other", T, 300), Ok(T));
    }

    #[test]
    fn non_hex_or_wrong_length_v1_cannot_match_but_does_not_hide_a_good_one() {
        let bad = [
            "zz",
            "",
            "d2b7",
            &PYTHON_V1[..63],
            &format!("{PYTHON_V1}00"),
        ];
        for b in bad {
            assert_eq!(
                verify(&header_with(&[b]), BODY, SECRET, T, 300),
                Err(StripeSignatureError::SignatureMismatch),
                "{b:?}"
            );
            assert_eq!(
                verify(&header_with(&[b, PYTHON_V1]), BODY, SECRET, T, 300),
                Ok(T)
            );
        }
    }

    #[test]
    fn tolerance_applies_on_both_sides() {
        let header = sign(BODY, SECRET, T);
        assert_eq!(verify(&header, BODY, SECRET, T + 300, 300), Ok(T));
        assert_eq!(verify(&header, BODY, SECRET, T - 300, 300), Ok(T));
        assert_eq!(
            verify(&header, BODY, SECRET, T + 301, 300),
            Err(StripeSignatureError::TimestampOutsideTolerance {
                timestamp: T,
                now: T + 301,
                tolerance_secs: 300
            })
        );
        assert!(matches!(
            verify(&header, BODY, SECRET, T - 301, 300),
            Err(StripeSignatureError::TimestampOutsideTolerance { .. })
        ));
        // The tolerance is a parameter.
        assert_eq!(verify(&header, BODY, SECRET, T + 3600, 3600), Ok(T));
        assert!(verify(&header, BODY, SECRET, T + 3601, 3600).is_err());
        assert_eq!(verify(&header, BODY, SECRET, T, 0), Ok(T));
        assert!(verify(&header, BODY, SECRET, T + 1, 0).is_err());
        // A negative tolerance behaves as zero.
        assert_eq!(verify(&header, BODY, SECRET, T, -5), Ok(T));
        assert!(verify(&header, BODY, SECRET, T + 1, -5).is_err());
        // Extreme clocks do not overflow.
        assert!(verify(&header, BODY, SECRET, 0, i64::MAX).is_ok());
        assert!(verify(&header, BODY, SECRET, i64::MAX, 300).is_err());
        assert!(verify(&header, BODY, SECRET, i64::MIN, i64::MAX).is_err());
    }

    #[test]
    fn signature_is_checked_before_timestamp() {
        let header = sign(BODY, SECRET, T);
        assert_eq!(
            verify(&header, b"forged", SECRET, T + 10_000, 300),
            Err(StripeSignatureError::SignatureMismatch)
        );
    }

    #[test]
    fn tampered_body_and_wrong_secret_are_rejected() {
        let header = sign(BODY, SECRET, T);
        let mismatch = Err(StripeSignatureError::SignatureMismatch);
        let mut tampered = BODY.to_vec();
        tampered[10] ^= 1;
        assert_eq!(verify(&header, &tampered, SECRET, T, 300), mismatch);
        assert_eq!(
            verify(&header, &BODY[..BODY.len() - 1], SECRET, T, 300),
            mismatch
        );
        let mut extended = BODY.to_vec();
        extended.push(b'\n');
        assert_eq!(verify(&header, &extended, SECRET, T, 300), mismatch);
        assert_eq!(verify(&header, b"", SECRET, T, 300), mismatch);
        assert_eq!(verify(&header, BODY, "whsec_other", T, 300), mismatch);
        assert_eq!(verify(&header, BODY, "", T, 300), mismatch);
        // The secret is the whole string, prefix included.
        let unprefixed = SECRET.trim_start_matches("whsec_");
        assert_eq!(verify(&header, BODY, unprefixed, T, 300), mismatch);
        // Changing t changes the signed payload.
        let moved = header.replacen(&format!("t={T}"), &format!("t={}", T + 1), 1);
        assert_eq!(verify(&moved, BODY, SECRET, T, 300), mismatch);
    }

    #[test]
    fn whitespace_around_items_is_tolerated() {
        let header = format!(" t = {T} , v1 = {PYTHON_V1} ");
        assert_eq!(verify(&header, BODY, SECRET, T, 300), Ok(T));
    }

    #[test]
    fn malformed_headers_are_rejected() {
        let long = format!("t={T},v1={PYTHON_V1},{}", "v0=00,".repeat(1000));
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "empty"),
            ("   ".into(), "empty"),
            ("garbage".into(), "without '='"),
            (PYTHON_V1.to_string(), "without '='"),
            (format!("v1={PYTHON_V1}"), "no timestamp"),
            (format!("t=,v1={PYTHON_V1}"), "timestamp"),
            (format!("t=abc,v1={PYTHON_V1}"), "timestamp"),
            (format!("t=-1,v1={PYTHON_V1}"), "timestamp"),
            (format!("t=+{T},v1={PYTHON_V1}"), "timestamp"),
            (format!("t=0{T},v1={PYTHON_V1}"), "timestamp"),
            (format!("t={T}.5,v1={PYTHON_V1}"), "timestamp"),
            (
                format!("t=99999999999999999999,v1={PYTHON_V1}"),
                "timestamp",
            ),
            (format!("t={T},t={T},v1={PYTHON_V1}"), "more than one"),
            (format!("t={T},,v1={PYTHON_V1}"), "empty item"),
            (format!("t={T},v1={PYTHON_V1},"), "empty item"),
            (format!("t={T};v1={PYTHON_V1}"), "timestamp"),
            (format!("t={T},=x,v1={PYTHON_V1}"), "empty key"),
            (format!("t={T},v1"), "without '='"),
            (long, "too long"),
        ];
        for (header, reason) in cases {
            match verify(&header, BODY, SECRET, T, 300) {
                Err(StripeSignatureError::MalformedHeader(r)) => {
                    assert!(r.contains(reason), "{header:?}: {r:?} lacks {reason:?}")
                }
                other => panic!("{header:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn error_messages_are_clear_and_never_carry_the_secret() {
        let header = sign(BODY, SECRET, T);
        for err in [
            verify(&header, b"x", SECRET, T, 300).unwrap_err(),
            verify(&header, BODY, SECRET, T + 999, 300).unwrap_err(),
            verify("nonsense", BODY, SECRET, T, 300).unwrap_err(),
            verify(&format!("t={T}"), BODY, SECRET, T, 300).unwrap_err(),
        ] {
            let text = format!("{err} {err:?}");
            assert!(
                text.contains("Stripe") || text.contains("Mismatch"),
                "{text}"
            );
            assert!(!text.contains(SECRET));
        }
        assert_eq!(
            StripeSignatureError::TimestampOutsideTolerance {
                timestamp: 1,
                now: 400,
                tolerance_secs: 300
            }
            .to_string(),
            "Stripe-Signature timestamp 1 is more than 300 s away from now (400)"
        );
    }

    proptest! {
        #[test]
        fn sign_then_verify_round_trips(
            body in proptest::collection::vec(any::<u8>(), 0..512),
            secret in "whsec_[A-Za-z0-9]{0,40}",
            t in 0i64..=4_102_444_800,
            skew in -300i64..=300,
        ) {
            let header = sign(&body, &secret, t);
            prop_assert_eq!(verify(&header, &body, &secret, t + skew, 300), Ok(t));
        }

        #[test]
        fn any_single_byte_change_in_the_body_fails(
            body in proptest::collection::vec(any::<u8>(), 1..256),
            index in any::<proptest::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let header = sign(&body, SECRET, T);
            let mut tampered = body.clone();
            tampered[index.index(body.len())] ^= flip;
            prop_assert_eq!(
                verify(&header, &tampered, SECRET, T, 300),
                Err(StripeSignatureError::SignatureMismatch)
            );
        }
    }
}
