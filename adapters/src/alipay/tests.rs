//! Alipay wire-format vectors: request and notify signatures checked byte for byte against
//! openssl over the fixture keys (`tests/fixtures/alipay`), the precreate answer verified over
//! its exact text, key forms and sizes, and the form codec. No I/O.

use super::*;
use proptest::prelude::*;

const APP_PRIVATE_PEM: &str = include_str!("../../tests/fixtures/alipay/app_private_key.pem");
const APP_PRIVATE_PKCS1_PEM: &str =
    include_str!("../../tests/fixtures/alipay/app_private_key_pkcs1.pem");
const APP_PRIVATE_BARE: &str = include_str!("../../tests/fixtures/alipay/app_private_key_bare.txt");
const APP_PUBLIC_PEM: &str = include_str!("../../tests/fixtures/alipay/app_public_key.pem");
const ALIPAY_PRIVATE_PEM: &str = include_str!("../../tests/fixtures/alipay/alipay_private_key.pem");
const ALIPAY_PUBLIC_PEM: &str = include_str!("../../tests/fixtures/alipay/alipay_public_key.pem");
const ALIPAY_PUBLIC_BARE: &str =
    include_str!("../../tests/fixtures/alipay/alipay_public_key_bare.txt");
const WEAK_PRIVATE_PEM: &str =
    include_str!("../../tests/fixtures/alipay/weak_1024_private_key.pem");
const WEAK_PUBLIC_PEM: &str = include_str!("../../tests/fixtures/alipay/weak_1024_public_key.pem");
const NOTIFY_BODY: &str = include_str!("../../tests/fixtures/alipay/notify_body.txt");
const PRECREATE_RESPONSE: &str =
    include_str!("../../tests/fixtures/alipay/precreate_response.json");

const BIZ: &str = r#"{"out_trade_no":"pi_01JWQ8Z6Q0V3R2K9M5N7P4T1XB","total_amount":"6.99","subject":"Coffee 咖啡"}"#;

/// Independent vector, made when this test was written with the OpenSSL CLI over the sorted
/// string below (`printf '%s' "$STRING" | openssl dgst -sha256 -sign app_private_key.pem |
/// base64 -w0`). PKCS#1 v1.5 is deterministic, so ours must match byte for byte.
const OPENSSL_REQUEST_SIGN: &str = "LopsEQovIKSiCDsuZJAHFaThbSaJhgXNFyESjwMe92Id+vjTW8HFAff5h+iaJMWZvuzQCpEZMTJHkFVmghn1J/Bd5g77icEx+5daCEijLwGxHAug9wLIoETBzGedRU91jLHPfLGvkIU5X/u8j44s5gOfHhG+6r1lbLBxN7Ajw16Pj3MJ6a0rD7ZIwbQ2bogvlkKeBRyZzrachaqeE71cn5Yyfowc/vd94lAdRtr3RsMo7wwHmWLxQEP7diF68tX5HryV5CRbx1foskN6ydCPrV8W/zGcqrDOh9joeC4W4TnpfPcfd2Ba0q//KqFWNg4f9c8Vf6Z7Aw3z14wSRbxR0w==";
const REQUEST_STRING: &str = concat!(
    "app_id=2021000000000001",
    r#"&biz_content={"out_trade_no":"pi_01JWQ8Z6Q0V3R2K9M5N7P4T1XB","total_amount":"6.99","subject":"Coffee 咖啡"}"#,
    "&charset=utf-8&format=JSON&method=alipay.trade.precreate",
    "&notify_url=https://pay.example.com/alipay/notify&sign_type=RSA2",
    "&timestamp=2026-05-27 17:30:00&version=1.0"
);

/// Independent vector: the notify's signed string (without `sign`/`sign_type`) signed with
/// the OpenSSL CLI and `alipay_private_key.pem`, standing in for Alipay.
const OPENSSL_NOTIFY_SIGN: &str = "UBD0/mn1cfNZ2ozXKPNjqpVqHdRGMGfdbtQZasx1jBkkHJmKtzCtzoXYsAL14Axl3dQrMEHAfTnmSBM42ksC7B+Mf0cGPzGUfDLIodtjJ+6xlKi215ejku5g1gLDOnRRoAXgEZ6lqsgN0PxYPMC3Xs7ceGPW1I6OhvNfaaEQ2gwf8hlpr/LYERwotuaRKkskCaL6N9QRGHpGD6O1egL7KaSpnqTApHdqXYLaImFxEuD9N4BWddvCwBxB9gMSnb6GsR3+XWeOLAiIXtnhe2Wor+L30N19+ZDD8p9mlHABVHP0M67xR6o43jgVIMUDpJipnEuf4SO8bEgDFcwwB6Czjw==";

fn app_key() -> AlipayPrivateKey {
    AlipayPrivateKey::from_pem(APP_PRIVATE_PEM).unwrap()
}

fn alipay_public() -> AlipayPublicKey {
    AlipayPublicKey::from_pem(ALIPAY_PUBLIC_PEM).unwrap()
}

fn request_params() -> Vec<(&'static str, &'static str)> {
    vec![
        ("app_id", "2021000000000001"),
        ("method", "alipay.trade.precreate"),
        ("format", "JSON"),
        ("charset", "utf-8"),
        ("sign_type", "RSA2"),
        ("timestamp", "2026-05-27 17:30:00"),
        ("version", "1.0"),
        ("notify_url", "https://pay.example.com/alipay/notify"),
        ("biz_content", BIZ),
        ("app_auth_token", ""),
    ]
}

fn notify_params() -> Vec<(String, String)> {
    parse_form(NOTIFY_BODY).unwrap()
}

fn set(params: &mut [(String, String)], name: &str, value: &str) {
    params.iter_mut().find(|(k, _)| k == name).unwrap().1 = value.to_owned();
}

#[test]
fn request_string_includes_sign_type_and_skips_empty_values() {
    let mut params = request_params();
    params.push(("sign", "ignored"));
    assert_eq!(
        string_to_sign(&params, SignScope::Request).unwrap(),
        REQUEST_STRING
    );
}

#[test]
fn request_signature_matches_openssl_byte_for_byte() {
    let sign = sign_params(&request_params(), &app_key()).unwrap();
    assert_eq!(sign, OPENSSL_REQUEST_SIGN);
}

#[test]
fn all_private_key_forms_give_the_same_signature() {
    for key in [
        AlipayPrivateKey::from_pem(APP_PRIVATE_PKCS1_PEM).unwrap(),
        AlipayPrivateKey::from_base64(APP_PRIVATE_BARE).unwrap(),
        AlipayPrivateKey::parse(APP_PRIVATE_BARE).unwrap(),
        AlipayPrivateKey::parse(APP_PRIVATE_PEM).unwrap(),
    ] {
        assert_eq!(key.bits(), 2048);
        assert_eq!(
            sign_params(&request_params(), &key).unwrap(),
            OPENSSL_REQUEST_SIGN
        );
    }
}

#[test]
fn precreate_request_is_built_and_signed_as_openssl_does() {
    let order = PrecreateOrder {
        out_trade_no: "pi_01JWQ8Z6Q0V3R2K9M5N7P4T1XB",
        amount: Money::from_parts(699, "CNY").unwrap(),
        subject: "Coffee 咖啡",
        expires_at: None,
    };
    // 2026-05-27T09:30:00Z is 17:30:00 in Beijing.
    let req = build_precreate_request(
        "2021000000000001",
        "https://pay.example.com/alipay/notify",
        &order,
        Timestamp(1_779_874_200_000),
        &app_key(),
    )
    .unwrap();
    assert_eq!(req.get("timestamp"), Some("2026-05-27 17:30:00"));
    assert_eq!(req.get("biz_content"), Some(BIZ));
    assert_eq!(req.get("sign"), Some(OPENSSL_REQUEST_SIGN));
    assert_eq!(req.params().last().unwrap().0, "sign");
    // The signature verifies with the application public key.
    let public = AlipayPublicKey::from_pem(APP_PUBLIC_PEM).unwrap();
    let digest = Sha256::new_with_prefix(REQUEST_STRING.as_bytes());
    public.verify_digest(digest, OPENSSL_REQUEST_SIGN).unwrap();
    // The form body round-trips through the decoder.
    let decoded = parse_form(&req.to_form_body()).unwrap();
    let expected: Vec<(String, String)> = req
        .params()
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    assert_eq!(decoded, expected);
}

#[test]
fn precreate_request_carries_time_expire_when_set() {
    let order = PrecreateOrder {
        out_trade_no: "o_1",
        amount: Money::from_parts(100_000, "CNY").unwrap(),
        subject: "s",
        expires_at: Some(Timestamp(1_779_874_200_000 + 900_000)),
    };
    let req = build_precreate_request("a", "https://n", &order, Timestamp(0), &app_key()).unwrap();
    assert_eq!(req.get("timestamp"), Some("1970-01-01 08:00:00"));
    assert_eq!(
        req.get("biz_content"),
        Some(
            r#"{"out_trade_no":"o_1","total_amount":"1000.00","subject":"s","time_expire":"2026-05-27 17:45:00"}"#
        )
    );
}

#[test]
fn precreate_request_validates_its_inputs() {
    let ok = PrecreateOrder {
        out_trade_no: "o_1",
        amount: Money::from_parts(1, "CNY").unwrap(),
        subject: "s",
        expires_at: None,
    };
    let build = |o: &PrecreateOrder<'_>| {
        build_precreate_request("a", "https://n", o, Timestamp(0), &app_key())
    };
    assert!(build(&ok).is_ok());
    let eur = PrecreateOrder {
        amount: Money::from_parts(1, "EUR").unwrap(),
        ..ok.clone()
    };
    assert_eq!(
        build(&eur).unwrap_err(),
        AlipayError::UnsupportedCurrency("EUR".into())
    );
    let big = PrecreateOrder {
        amount: Money::from_parts(MAX_AMOUNT_FEN + 1, "CNY").unwrap(),
        ..ok.clone()
    };
    assert!(matches!(build(&big), Err(AlipayError::AmountOutOfRange(_))));
    for bad in ["", "has space", "a-b", &"x".repeat(65)] {
        let o = PrecreateOrder {
            out_trade_no: bad,
            ..ok.clone()
        };
        assert!(matches!(
            build(&o),
            Err(AlipayError::InvalidField {
                field: "out_trade_no",
                ..
            })
        ));
    }
    for bad in ["", "a&b", "a=b", "a/b", "a\nb"] {
        let o = PrecreateOrder {
            subject: bad,
            ..ok.clone()
        };
        assert!(matches!(
            build(&o),
            Err(AlipayError::InvalidField {
                field: "subject",
                ..
            })
        ));
    }
}

#[test]
fn amounts_are_formatted_from_integer_fen() {
    let f = |v| format_total_amount(Money::from_parts(v, "CNY").unwrap()).unwrap();
    assert_eq!(f(1), "0.01");
    assert_eq!(f(10), "0.10");
    assert_eq!(f(699), "6.99");
    assert_eq!(f(100), "1.00");
    assert_eq!(f(MAX_AMOUNT_FEN), "100000000.00");
}

#[test]
fn notify_signed_by_openssl_verifies() {
    let params = notify_params();
    assert_eq!(
        params.iter().find(|(k, _)| k == "sign").unwrap().1,
        OPENSSL_NOTIFY_SIGN
    );
    assert_eq!(
        params.iter().find(|(k, _)| k == "subject").unwrap().1,
        "Coffee 咖啡"
    );
    verify_notify(&params, &alipay_public()).unwrap();
    // Same through the form entry point and the bare-base64 Alipay public key.
    let bare = AlipayPublicKey::from_base64(ALIPAY_PUBLIC_BARE).unwrap();
    verify_notify_form(NOTIFY_BODY, &bare).unwrap();
    // Field order does not matter.
    let mut reversed = params.clone();
    reversed.reverse();
    verify_notify(&reversed, &alipay_public()).unwrap();
}

#[test]
fn notify_with_our_signer_matches_openssl() {
    let key = AlipayPrivateKey::from_pem(ALIPAY_PRIVATE_PEM).unwrap();
    assert_eq!(
        sign_notify(&notify_params(), &key).unwrap(),
        OPENSSL_NOTIFY_SIGN
    );
}

#[test]
fn tampered_notify_is_rejected() {
    let mut params = notify_params();
    set(&mut params, "total_amount", "699.00");
    assert_eq!(
        verify_notify(&params, &alipay_public()),
        Err(AlipayError::BadSignature)
    );

    let mut params = notify_params();
    params.push(("extra".into(), "1".into()));
    assert_eq!(
        verify_notify(&params, &alipay_public()),
        Err(AlipayError::BadSignature)
    );
}

#[test]
fn notify_with_wrong_key_is_rejected() {
    let app_public = AlipayPublicKey::from_pem(APP_PUBLIC_PEM).unwrap();
    assert_eq!(
        verify_notify(&notify_params(), &app_public),
        Err(AlipayError::BadSignature)
    );
}

#[test]
fn notify_without_sign_is_rejected() {
    let mut params = notify_params();
    params.retain(|(k, _)| k != "sign");
    assert_eq!(
        verify_notify(&params, &alipay_public()),
        Err(AlipayError::MissingSign)
    );
    let mut params = notify_params();
    set(&mut params, "sign", "");
    assert_eq!(
        verify_notify(&params, &alipay_public()),
        Err(AlipayError::MissingSign)
    );
}

#[test]
fn notify_with_malformed_or_foreign_sign_is_rejected() {
    let mut params = notify_params();
    set(&mut params, "sign", "not base64!");
    assert_eq!(
        verify_notify(&params, &alipay_public()),
        Err(AlipayError::InvalidSignatureEncoding)
    );
    let mut params = notify_params();
    set(&mut params, "sign_type", "RSA");
    assert_eq!(
        verify_notify(&params, &alipay_public()),
        Err(AlipayError::UnsupportedSignType("RSA".into()))
    );
    let mut params = notify_params();
    params.push(("sign".into(), OPENSSL_NOTIFY_SIGN.into()));
    assert_eq!(
        verify_notify(&params, &alipay_public()),
        Err(AlipayError::DuplicateParam("sign".into()))
    );
    let mut params = notify_params();
    params.push(("total_amount".into(), "6.99".into()));
    assert_eq!(
        verify_notify(&params, &alipay_public()),
        Err(AlipayError::DuplicateParam("total_amount".into()))
    );
}

#[test]
fn precreate_response_is_verified_over_its_exact_text() {
    let resp = parse_precreate_response(PRECREATE_RESPONSE, &alipay_public()).unwrap();
    assert_eq!(resp.out_trade_no, "pi_01JWQ8Z6Q0V3R2K9M5N7P4T1XB");
    // The `\/` escapes are signed as they are and unescaped only in the parsed value.
    assert_eq!(
        resp.qr_code,
        "https://qr.alipay.com/bax03431ljhokirwl38f00a7"
    );
    let raw = verify_response(PRECREATE_RESPONSE, PRECREATE_METHOD, &alipay_public()).unwrap();
    assert!(raw.starts_with(r#"{"code":"10000""#) && raw.contains(r"https:\/\/qr"));
}

#[test]
fn precreate_response_sign_first_or_with_whitespace_still_verifies() {
    let (head, sign_part) = PRECREATE_RESPONSE.rsplit_once(",\"sign\":").unwrap();
    let node = head.strip_prefix("{").unwrap();
    let sign = sign_part.strip_suffix('}').unwrap();
    let reordered = format!("{{ \"sign\" : {sign} ,\n {node} }}");
    parse_precreate_response(&reordered, &alipay_public()).unwrap();
}

#[test]
fn tampered_or_unsigned_precreate_response_is_rejected() {
    let tampered = PRECREATE_RESPONSE.replace("bax03431", "bax03432");
    assert_eq!(
        parse_precreate_response(&tampered, &alipay_public()),
        Err(AlipayError::BadSignature)
    );
    // Reformatting the signed object (here: unescaping `\/`) breaks the signature.
    let reformatted = PRECREATE_RESPONSE.replace(r"\/", "/");
    assert_eq!(
        parse_precreate_response(&reformatted, &alipay_public()),
        Err(AlipayError::BadSignature)
    );
    let app_public = AlipayPublicKey::from_pem(APP_PUBLIC_PEM).unwrap();
    assert_eq!(
        parse_precreate_response(PRECREATE_RESPONSE, &app_public),
        Err(AlipayError::BadSignature)
    );
    let (unsigned, _) = PRECREATE_RESPONSE.rsplit_once(",\"sign\":").unwrap();
    let unsigned = format!("{unsigned}}}");
    assert_eq!(
        parse_precreate_response(&unsigned, &alipay_public()),
        Err(AlipayError::MissingSign)
    );
    assert!(matches!(
        parse_precreate_response("{\"other\":1}", &alipay_public()),
        Err(AlipayError::MalformedResponse(_))
    ));
    assert!(matches!(
        parse_precreate_response("not json", &alipay_public()),
        Err(AlipayError::MalformedResponse(_))
    ));
    let dup = PRECREATE_RESPONSE.replacen('{', "{\"sign\":\"x\",", 1);
    assert!(matches!(
        parse_precreate_response(&dup, &alipay_public()),
        Err(AlipayError::MalformedResponse(_))
    ));
}

#[test]
fn business_errors_are_reported_signed_or_not() {
    let alipay = AlipayPrivateKey::from_pem(ALIPAY_PRIVATE_PEM).unwrap();
    let node = r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.TRADE_HAS_SUCCESS","sub_msg":"交易已被支付"}"#;
    let sign = alipay
        .sign_digest(Sha256::new_with_prefix(node.as_bytes()))
        .unwrap();
    let body = format!(r#"{{"alipay_trade_precreate_response":{node},"sign":"{sign}"}}"#);
    let expected = AlipayError::Business {
        code: "40004".into(),
        msg: "Business Failed".into(),
        sub_code: "ACQ.TRADE_HAS_SUCCESS".into(),
        sub_msg: "交易已被支付".into(),
    };
    assert_eq!(
        parse_precreate_response(&body, &alipay_public()),
        Err(expected)
    );
    let unsigned = r#"{"error_response":{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-app-id","sub_msg":"无效的AppID参数"}}"#;
    assert!(matches!(
        parse_precreate_response(unsigned, &alipay_public()),
        Err(AlipayError::Business { code, .. }) if code == "40002"
    ));
}

#[test]
fn keys_are_checked() {
    assert_eq!(
        AlipayPrivateKey::from_pem(WEAK_PRIVATE_PEM).unwrap_err(),
        AlipayError::KeyTooSmall { bits: 1024 }
    );
    assert_eq!(
        AlipayPublicKey::from_pem(WEAK_PUBLIC_PEM).unwrap_err(),
        AlipayError::KeyTooSmall { bits: 1024 }
    );
    assert!(matches!(
        AlipayPrivateKey::from_pem(APP_PUBLIC_PEM),
        Err(AlipayError::InvalidKey(_))
    ));
    assert!(matches!(
        AlipayPublicKey::from_pem(APP_PRIVATE_PEM),
        Err(AlipayError::InvalidKey(_))
    ));
    assert!(matches!(
        AlipayPrivateKey::from_base64("bm90IGEga2V5"),
        Err(AlipayError::InvalidKey(_))
    ));
    assert!(matches!(
        AlipayPublicKey::parse("   "),
        Err(AlipayError::InvalidKey(_))
    ));
    // The PKCS#1 public form is accepted too.
    let pkcs1 = rsa::pkcs1::EncodeRsaPublicKey::to_pkcs1_pem(
        alipay_public().0.as_rsa(),
        rsa::pkcs1::LineEnding::LF,
    )
    .unwrap();
    assert_eq!(AlipayPublicKey::parse(&pkcs1).unwrap().bits(), 2048);
}

#[test]
fn debug_output_redacts_key_material() {
    let shown = format!("{:?} {:?}", app_key(), app_key().public_key());
    assert_eq!(
        shown,
        "AlipayPrivateKey(RSA-2048, redacted) AlipayPublicKey(RSA-2048)"
    );
}

#[test]
fn form_codec() {
    assert_eq!(
        parse_form("a=1+2&b=%E5%92%96&c=&d&e=%2B%2f").unwrap(),
        vec![
            ("a".into(), "1 2".into()),
            ("b".into(), "咖".into()),
            ("c".into(), "".into()),
            ("d".into(), "".into()),
            ("e".into(), "+/".into()),
        ]
    );
    assert!(parse_form("a=%E").is_err());
    assert!(parse_form("a=%zz").is_err());
    assert!(parse_form("a=%FF").is_err());
    assert_eq!(
        encode_form(&[("k y", "a+b/咖 &=")]),
        "k+y=a%2Bb%2F%E5%92%96+%26%3D"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn sign_then_verify_round_trips(
        map in proptest::collection::btree_map("[a-z_]{1,12}", "\\PC{0,24}", 0..12),
        victim in any::<prop::sample::Index>(),
    ) {
        let key = app_key();
        let public = key.public_key();
        let mut params: Vec<(String, String)> = map
            .into_iter()
            .filter(|(k, _)| k != "sign" && k != "sign_type")
            .collect();
        let sign = sign_notify(&params, &key).unwrap();
        // Request and notify scopes agree when there is no `sign_type`.
        prop_assert_eq!(&sign, &sign_params(&params, &key).unwrap());
        params.push(("sign_type".into(), "RSA2".into()));
        params.push(("sign".into(), sign));
        prop_assert_eq!(verify_notify(&params, &public), Ok(()));

        // Changing any signed (non-empty) value breaks the signature.
        let signed: Vec<usize> = (0..params.len() - 2)
            .filter(|i| !params[*i].1.is_empty())
            .collect();
        if !signed.is_empty() {
            let i = signed[victim.index(signed.len())];
            params[i].1.push('x');
            prop_assert_eq!(verify_notify(&params, &public), Err(AlipayError::BadSignature));
        }
    }
}
