//! Stripe webhook-signature vectors: an HMAC computed independently with Python's `hmac`,
//! header parsing edge cases, tolerance and secret rolls. No I/O.

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
