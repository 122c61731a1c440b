//! MultiSafepay notification-auth vectors: MultiSafepay's published worked examples
//! (`tests/fixtures/multisafepay`), header decoding edge cases and tolerance. No I/O.

use super::*;
use proptest::prelude::*;

/// Published worked example, https://docs.multisafepay.com/docs/handle-notifications
/// ("Validate with your own solution"): HMAC key, timestamp, payload (fixture file,
/// byte for byte) and the resulting base64 `Auth` header.
const DOCS_API_KEY: &str = "8HHhGgRWrA3O7NswjmgwyH7buPPCGnR5AkwAQyqI";
const DOCS_TIMESTAMP: i64 = 1_641_218_884;
const DOCS_PAYLOAD: &[u8] =
    include_bytes!("../../tests/fixtures/multisafepay/docs_handle_notifications_payload.json");
const DOCS_AUTH: &str = "MTY0MTIxODg4NDowNmNiZjIyNmU3Yzg3M2VmZjk2OTIxZDdmZGUzOTk4ZWI2YmUwZGU3OTE1ZWUxYzFiNTE0OTUxMWZjYTgyZTI2YmIwYWIyZTZkMGUwYWQ5OTdjYmFiMTUxZTRiYTU2MTU0MThkOGUxMjUyODMwMTcyNjE0M2VkMTE0NjI4N2Y5Mw==";
const DOCS_SIGNATURE: &str = "06cbf226e7c873eff96921d7fde3998eb6be0de7915ee1c1b5149511fca82e26bb0ab2e6d0e0ad997cbab151e4ba5615418d8e12528301726143ed1146287f93";

/// Second published example, MultiSafepay docs page "Validate HMAC signatures"
/// (/integrations/self-made/handle-notifications/validate-hmac-signatures/, in the
/// MultiSafepay/docs GitHub repository): same key and timestamp; its payload differs by a
/// typographic quote (U+201D) before `payment_details`, and the published signature covers
/// exactly those bytes.
const DOCS2_PAYLOAD: &[u8] =
    include_bytes!("../../tests/fixtures/multisafepay/docs_validate_hmac_payload.json");
const DOCS2_AUTH: &str = "MTY0MTIxODg4NDowMzI3ZjUyODBlYjI5ZmNiMzE0OTAyYjYxZmMzN2E5MTExZjRjMDMxZDMxZjg1OTc4MTFlY2RjMTRjOGM4ZjM1NjkwNGM2NDgwOTY2MWMzY2ViOWZkMjczN2Y1MmUxNGU5NDJjMzJkZGIwN2E2ZDZhNzZhMDAwNDI2ZDY1ZDc4Yg==";

fn auth(timestamp: &str, signature: &str) -> String {
    BASE64.encode(format!("{timestamp}:{signature}"))
}

#[test]
fn published_docs_example_verifies_and_is_reproduced_by_sign() {
    assert_eq!(
        verify(DOCS_AUTH, DOCS_PAYLOAD, DOCS_API_KEY, DOCS_TIMESTAMP, 600),
        Ok(DOCS_TIMESTAMP)
    );
    assert_eq!(sign(DOCS_PAYLOAD, DOCS_API_KEY, DOCS_TIMESTAMP), DOCS_AUTH);
    assert_eq!(auth("1641218884", DOCS_SIGNATURE), DOCS_AUTH);
}

#[test]
fn second_published_example_verifies() {
    assert_eq!(
        verify(DOCS2_AUTH, DOCS2_PAYLOAD, DOCS_API_KEY, DOCS_TIMESTAMP, 600),
        Ok(DOCS_TIMESTAMP)
    );
    assert_eq!(
        sign(DOCS2_PAYLOAD, DOCS_API_KEY, DOCS_TIMESTAMP),
        DOCS2_AUTH
    );
    // The two payloads differ by one character, and so the signatures do not cross.
    assert_eq!(DOCS2_PAYLOAD.len(), DOCS_PAYLOAD.len() + 2);
    let mismatch = Err(MultiSafepayAuthError::SignatureMismatch);
    assert_eq!(
        verify(DOCS_AUTH, DOCS2_PAYLOAD, DOCS_API_KEY, DOCS_TIMESTAMP, 600),
        mismatch
    );
    assert_eq!(
        verify(DOCS2_AUTH, DOCS_PAYLOAD, DOCS_API_KEY, DOCS_TIMESTAMP, 600),
        mismatch
    );
}

#[test]
fn header_without_padding_or_with_whitespace_is_accepted() {
    let unpadded = DOCS_AUTH.trim_end_matches('=');
    assert_eq!(
        verify(unpadded, DOCS_PAYLOAD, DOCS_API_KEY, DOCS_TIMESTAMP, 600),
        Ok(DOCS_TIMESTAMP)
    );
    let spaced = format!("  {DOCS_AUTH}\t");
    assert_eq!(
        verify(&spaced, DOCS_PAYLOAD, DOCS_API_KEY, DOCS_TIMESTAMP, 600),
        Ok(DOCS_TIMESTAMP)
    );
}

#[test]
fn api_key_whitespace_is_trimmed_like_the_php_sdk() {
    let key = format!(" {DOCS_API_KEY}\n");
    assert_eq!(
        verify(DOCS_AUTH, DOCS_PAYLOAD, &key, DOCS_TIMESTAMP, 600),
        Ok(DOCS_TIMESTAMP)
    );
}

#[test]
fn uppercase_hex_signature_is_accepted() {
    let header = auth("1641218884", &DOCS_SIGNATURE.to_uppercase());
    assert_eq!(
        verify(&header, DOCS_PAYLOAD, DOCS_API_KEY, DOCS_TIMESTAMP, 600),
        Ok(DOCS_TIMESTAMP)
    );
}

#[test]
fn tolerance_applies_on_both_sides() {
    let t = DOCS_TIMESTAMP;
    let ok = Ok(t);
    assert_eq!(
        verify(DOCS_AUTH, DOCS_PAYLOAD, DOCS_API_KEY, t + 600, 600),
        ok
    );
    assert_eq!(
        verify(DOCS_AUTH, DOCS_PAYLOAD, DOCS_API_KEY, t - 600, 600),
        ok
    );
    assert_eq!(
        verify(DOCS_AUTH, DOCS_PAYLOAD, DOCS_API_KEY, t + 601, 600),
        Err(MultiSafepayAuthError::TimestampOutsideTolerance {
            timestamp: t,
            now: t + 601,
            tolerance_secs: 600
        })
    );
    assert!(matches!(
        verify(DOCS_AUTH, DOCS_PAYLOAD, DOCS_API_KEY, t - 601, 600),
        Err(MultiSafepayAuthError::TimestampOutsideTolerance { .. })
    ));
    assert_eq!(
        verify(
            DOCS_AUTH,
            DOCS_PAYLOAD,
            DOCS_API_KEY,
            t + 60,
            DEFAULT_TOLERANCE_SECS
        ),
        ok
    );
    assert!(verify(DOCS_AUTH, DOCS_PAYLOAD, DOCS_API_KEY, t + 60, 59).is_err());
    assert_eq!(verify(DOCS_AUTH, DOCS_PAYLOAD, DOCS_API_KEY, t, 0), ok);
    assert_eq!(verify(DOCS_AUTH, DOCS_PAYLOAD, DOCS_API_KEY, t, -1), ok);
    assert!(verify(DOCS_AUTH, DOCS_PAYLOAD, DOCS_API_KEY, t + 1, -1).is_err());
    assert!(verify(DOCS_AUTH, DOCS_PAYLOAD, DOCS_API_KEY, i64::MIN, i64::MAX).is_err());
    assert!(verify(DOCS_AUTH, DOCS_PAYLOAD, DOCS_API_KEY, 0, i64::MAX).is_ok());
}

#[test]
fn signature_is_checked_before_timestamp() {
    assert_eq!(
        verify(DOCS_AUTH, b"{}", DOCS_API_KEY, 0, 600),
        Err(MultiSafepayAuthError::SignatureMismatch)
    );
}

#[test]
fn tampered_body_wrong_key_and_moved_timestamp_are_rejected() {
    let mismatch = Err(MultiSafepayAuthError::SignatureMismatch);
    let t = DOCS_TIMESTAMP;
    let mut tampered = DOCS_PAYLOAD.to_vec();
    tampered[10] = b'2'; // "amount":1000 -> 2000
    assert_eq!(verify(DOCS_AUTH, &tampered, DOCS_API_KEY, t, 600), mismatch);
    let mut extended = DOCS_PAYLOAD.to_vec();
    extended.push(b'\n');
    assert_eq!(verify(DOCS_AUTH, &extended, DOCS_API_KEY, t, 600), mismatch);
    assert_eq!(verify(DOCS_AUTH, b"", DOCS_API_KEY, t, 600), mismatch);
    assert_eq!(
        verify(DOCS_AUTH, DOCS_PAYLOAD, "wrong-key", t, 600),
        mismatch
    );
    assert_eq!(verify(DOCS_AUTH, DOCS_PAYLOAD, "", t, 600), mismatch);
    let lower_key = DOCS_API_KEY.to_lowercase();
    assert_eq!(
        verify(DOCS_AUTH, DOCS_PAYLOAD, &lower_key, t, 600),
        mismatch
    );
    // The signature covers the timestamp: re-labelling it breaks the match.
    let moved = auth("1641218885", DOCS_SIGNATURE);
    assert_eq!(verify(&moved, DOCS_PAYLOAD, DOCS_API_KEY, t, 600), mismatch);
    let padded = auth("01641218884", DOCS_SIGNATURE);
    assert_eq!(
        verify(&padded, DOCS_PAYLOAD, DOCS_API_KEY, t, 600),
        mismatch
    );
}

#[test]
fn malformed_headers_are_rejected() {
    let sig = DOCS_SIGNATURE;
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "empty"),
        ("  ".into(), "empty"),
        ("%%%not base64%%%".into(), "base64"),
        ("MTY0MTIxODg4NDo=x".into(), "base64"),
        ("A".repeat(MAX_HEADER_LEN + 4), "too long"),
        (BASE64.encode(sig), "no ':'"),
        (BASE64.encode(format!("1641218884{sig}")), "no ':'"),
        (auth("", sig), "timestamp"),
        (auth("-1641218884", sig), "timestamp"),
        (auth("+1641218884", sig), "timestamp"),
        (auth("1641218884.5", sig), "timestamp"),
        (auth(" 1641218884", sig), "timestamp"),
        (auth("1234567890123456789", &sig[..2]), "timestamp"),
        (auth("1641218884", ""), "signature"),
        (auth("1641218884", &sig[..127]), "signature"),
        (auth("1641218884", &sig[..126]), "signature"),
        (
            auth("1641218884", &format!("{}zz", &sig[..126])),
            "signature",
        ),
        (auth("1641218884", &format!("{sig}:extra")), "signature"),
        (auth("1641218884", &format!("{sig} ")), "signature"),
        (
            BASE64.encode(format!("1641218884:{sig}").replace(':', "\u{ff1a}")),
            "no ':'",
        ),
    ];
    for (header, reason) in cases {
        match verify(&header, DOCS_PAYLOAD, DOCS_API_KEY, DOCS_TIMESTAMP, 600) {
            Err(MultiSafepayAuthError::MalformedHeader(r)) => {
                assert!(r.contains(reason), "{header:?}: {r:?} lacks {reason:?}")
            }
            other => panic!("{header:?} gave {other:?}"),
        }
    }
}

#[test]
fn error_messages_are_clear_and_never_carry_the_key() {
    for err in [
        verify(DOCS_AUTH, b"x", DOCS_API_KEY, DOCS_TIMESTAMP, 600).unwrap_err(),
        verify(DOCS_AUTH, DOCS_PAYLOAD, DOCS_API_KEY, 0, 600).unwrap_err(),
        verify("!!", DOCS_PAYLOAD, DOCS_API_KEY, 0, 600).unwrap_err(),
    ] {
        let text = format!("{err} {err:?}");
        assert!(text.contains("MultiSafepay") || text.contains("Mismatch"));
        assert!(!text.contains(DOCS_API_KEY));
    }
    assert_eq!(
        MultiSafepayAuthError::SignatureMismatch.to_string(),
        "MultiSafepay Auth signature does not match the payload"
    );
}

proptest! {
    #[test]
    fn sign_then_verify_round_trips(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        key in "[A-Za-z0-9]{1,48}",
        t in 0i64..=4_102_444_800,
        skew in -600i64..=600,
    ) {
        let header = sign(&body, &key, t);
        prop_assert!(header.len() <= MAX_HEADER_LEN);
        prop_assert_eq!(verify(&header, &body, &key, t + skew, 600), Ok(t));
    }

    #[test]
    fn any_single_byte_change_in_the_body_fails(
        body in proptest::collection::vec(any::<u8>(), 1..256),
        index in any::<proptest::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let header = sign(&body, DOCS_API_KEY, DOCS_TIMESTAMP);
        let mut tampered = body.clone();
        tampered[index.index(body.len())] ^= flip;
        prop_assert_eq!(
            verify(&header, &tampered, DOCS_API_KEY, DOCS_TIMESTAMP, 600),
            Err(MultiSafepayAuthError::SignatureMismatch)
        );
    }
}
