//! WeChat Pay API v3 wire-format vectors: WeChat Pay's published request-signature example,
//! answer and callback signatures, resource decryption of the fixture callback
//! (`tests/fixtures/wechat`), key checks and the Native order body. No I/O.

use super::*;
use proptest::prelude::*;

// Published by WeChat Pay as a test key in "请求参数里带Body参数, 如何计算签名" (see the module
// docs); its public half was derived with `openssl pkey -pubout`.
const OFFICIAL_KEY_PEM: &str = include_str!("../../tests/fixtures/wechat/official_test_key.pem");
const OFFICIAL_PUB_PEM: &str = include_str!("../../tests/fixtures/wechat/official_test_pub.pem");
const OFFICIAL_MCHID: &str = "1900007291";
const OFFICIAL_SERIAL: &str = "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB";
const OFFICIAL_TIMESTAMP: i64 = 1_554_208_460;
const OFFICIAL_NONCE: &str = "593BEC0C930BF1AFEB40B4A08C8FB242";
const OFFICIAL_BODY: &str = r#"{"appid":"wxd678efh567hg6787","mchid":"1900007291","description":"Image形象店-深圳腾大-QQ公仔","out_trade_no":"1217752501201407033233368018","notify_url":"https://www.weixin.qq.com/wxpay/pay.php","amount":{"total":100,"currency":"CNY"},"payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}}"#;
/// Published expected signature of the JSAPI example (POST /v3/pay/transactions/jsapi);
/// also reproduced with `openssl dgst -sha256 -sign official_test_key.pem` when this test
/// was written.
const OFFICIAL_SIGNATURE: &str = "jnks4dlrPw3ZX+ozVvSK39oa0t7OMBsg83BHAwd8BRdUFiVaQNTLTvci+wURgP1OQBbKYhFGvt7iqYpDSTQkp7Uq1sltaQKyncCyrA1g88m5bsKERQfPyT0ahSwKTYJ1CAn9QiJuSJRq1QsQs07eehbU/k9BCS51jTyc1Jpsi2H77HF9f/BnjXAOP3/sPObg6V5Ee4EzwLox684hhuMuIwHo7D8KFk3LIHOKDcNI4It1aCXydFWNpNK+SG86VUDe5kwoDpw4Ulqfu9z8OFDGbDs9TCxEv8iqQzbpxOlEVoOe2kalSYM5kApQb3nZcxdUtoE0liJGW3RGUNE0t4v01A==";
/// Independent vector: `printf 'GET\n/v3/certificates\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n\n'
/// | openssl dgst -sha256 -sign official_test_key.pem | base64 -w0`.
const OPENSSL_GET_SIGNATURE: &str = "JNEITrKv8DWEtBJGZtxG9ARa+eIZDIn1Ht3MQM5j9jP77TtHdfCqLjpwevfWftBuaGMfEdiu2sWYtLvnZIoLW3FH10OVCBzKncid5xClTwav8JX+uDeGBBX8w64iHvFyuQj8ukZT+F1AFJii8hmXLD8Os90thnL0bfJYLo/4K237TH4dEd44NTH9ElFb/ykrvv9RBs+mCNpy5IUe2Qxhba3d3RiMqhWK2sSr3tsVzQihJ0TPMnjWqoU2W5Y/v3rBFDmLhqe0ZW6A4vyvjmiR0v/8XEI25Py4PNyZXszsdl4j0zLqelUJxGEMUBhYg1LIoDPjYMlA9HV1yKD6+JYZJA==";

// A platform key pair made with `openssl genrsa 2048` for these tests.
const PLATFORM_KEY_PEM: &str = include_str!("../../tests/fixtures/wechat/platform_private_key.pem");
const PLATFORM_PUB_PEM: &str = include_str!("../../tests/fixtures/wechat/platform_public_key.pem");
const PLATFORM_SERIAL: &str = "PUB_KEY_ID_0114232134912410000000000000000000";
const CALLBACK_BODY: &str = include_str!("../../tests/fixtures/wechat/callback_body.json");
const CALLBACK_TIMESTAMP: &str = "1779874270";
const CALLBACK_NONCE: &str = "c5ac7061fccab6bf3e254dcf98995b8c";
/// Independent vector: `"{CALLBACK_TIMESTAMP}\n{CALLBACK_NONCE}\n{callback_body.json}\n"`
/// signed with `openssl dgst -sha256 -sign platform_private_key.pem` (Python driver, when
/// this test was written).
const OPENSSL_CALLBACK_SIGNATURE: &str = "behYatcvMUXHPUyS7gj5B0yPtraH0kalgt6lxnAbm7dDf9ADNbJAKrBOqzfaH7VmUwliNN9UOKZQgn1pDMWG0FZz94vm8Fi8RvU2oci3gkZuKTzK/dcYUhWsiR/bMAwo0ywrfchHGSldvLY7U/tzIUEJC64i89it+5Wt0YHigduphTlF5wcJAKc3GUXiietJ9h1J5vKPLLiO4H+goKK39IeSMbWiaoSBAxDww5n+18Gl0c7LsgsyGN7qNcJlsnUa9Oph71FF7mp/BZKpOjI+1t6q9kteuopJ7kMn7SLeNKA7iapuK2HIBXDby2yovURnnsH2DchSIQwh2YQBIZzlwg==";

const TRANSACTION_JSON: &str = include_str!("../../tests/fixtures/wechat/transaction.json");
const API_V3_KEY: &[u8] = b"ipayTestApiV3Key0123456789abcdef";
/// Independent vector, made with Python `cryptography` when this test was written:
/// `base64(AESGCM(API_V3_KEY).encrypt(b"a1b2c3d4e5f6", transaction.json bytes,
/// b"transaction"))` (ciphertext followed by the 16-byte tag).
const PYTHON_CIPHERTEXT: &str = "PVwL6XI1/xNwUDemG7YGS40BPjt4D3g6lxnz6clEy+xhAmX2InFIHkKnKDGJYeuLDeySs9gp2dDAizsoatwQm2W6hJb7GBCaYw5oxoP3JbukP9ikMh4qxZADd/m4VmPsT/ARUEurklw2m2LOlDyMkj4xGWlj7mCRab10Rqrfc3D0SiPziAx7B5mSxuo8amKj6sNCYrMbg2RAZ6LfFph3EiHEzi6Qo57IPCj/vEpb8zK3ceDOTukfAhLrhn4pJDHPzIrEG3OzEZEpE4WHZlbfuaApJ7k+x/VVGhMBGtbBOueT7AlbUu+bipLXtZ2AklxwliB4DvyMMMtNTGpJFPtEMC0ggMlwqGlOZk3rBWMRoHJlMlcXdRlZmUj0OIFwyNYC35xaF5JiXLPQK28bV1ToO9bTA92mL4egjbztW3aa293w5ZCSg4NgfMqNzP5J6q163Mqm+KOUs/NzUu171YckyXZjf+MbxaJG1ByDVw77tNXJxryxaaLj3uafj6AzS5RT87aiWrDQ4R3WMcqR7DOLNIjupsS5BdTlauzT1LCO8yjMQxDosgl0lVqKBkyuZrVqsHR2lqdBaZrCDycEP3iO4QA=";

fn official_signer() -> MerchantSigner {
    let key = WechatPrivateKey::from_pem(OFFICIAL_KEY_PEM).unwrap();
    MerchantSigner::new(OFFICIAL_MCHID, OFFICIAL_SERIAL, key).unwrap()
}

fn platform_keys() -> PlatformKeys {
    let mut keys = PlatformKeys::new();
    keys.insert(
        PLATFORM_SERIAL,
        WechatPublicKey::from_pem(PLATFORM_PUB_PEM).unwrap(),
    );
    keys
}

fn callback_headers() -> SignedHeaders<'static> {
    SignedHeaders {
        timestamp: CALLBACK_TIMESTAMP,
        nonce: CALLBACK_NONCE,
        signature: OPENSSL_CALLBACK_SIGNATURE,
        serial: PLATFORM_SERIAL,
    }
}

const NOW: i64 = 1_779_874_270 + 12;

fn resource() -> EncryptedResource {
    parse_callback(CALLBACK_BODY).unwrap().resource
}

fn api_key() -> ApiV3Key {
    ApiV3Key::new(API_V3_KEY).unwrap()
}

#[test]
fn request_signature_matches_the_published_example() {
    let signer = official_signer();
    let sig = signer
        .sign_request(
            "POST",
            "/v3/pay/transactions/jsapi",
            OFFICIAL_TIMESTAMP,
            OFFICIAL_NONCE,
            OFFICIAL_BODY,
        )
        .unwrap();
    assert_eq!(sig, OFFICIAL_SIGNATURE);
}

#[test]
fn authorization_header_has_the_documented_shape() {
    let header = official_signer()
        .authorization_header(
            "POST",
            "/v3/pay/transactions/jsapi",
            OFFICIAL_TIMESTAMP,
            OFFICIAL_NONCE,
            OFFICIAL_BODY,
        )
        .unwrap();
    assert_eq!(
        header,
        format!(
            "WECHATPAY2-SHA256-RSA2048 mchid=\"1900007291\",nonce_str=\"{OFFICIAL_NONCE}\",signature=\"{OFFICIAL_SIGNATURE}\",timestamp=\"1554208460\",serial_no=\"{OFFICIAL_SERIAL}\""
        )
    );
}

#[test]
fn get_request_signs_an_empty_body_line_like_openssl() {
    assert_eq!(
        request_signing_string(
            "GET",
            "/v3/certificates",
            OFFICIAL_TIMESTAMP,
            OFFICIAL_NONCE,
            ""
        ),
        "GET\n/v3/certificates\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n\n"
    );
    let sig = official_signer()
        .sign_request(
            "GET",
            "/v3/certificates",
            OFFICIAL_TIMESTAMP,
            OFFICIAL_NONCE,
            "",
        )
        .unwrap();
    assert_eq!(sig, OPENSSL_GET_SIGNATURE);
}

#[test]
fn request_inputs_are_checked() {
    let s = official_signer();
    let sign = |m, u, t, n| s.sign_request(m, u, t, n, "");
    assert!(matches!(
        sign("post", "/v3/x", 1, "n"),
        Err(WechatError::InvalidField {
            field: "method",
            ..
        })
    ));
    assert!(matches!(
        sign("GET", "https://api/v3/x", 1, "n"),
        Err(WechatError::InvalidField { field: "url", .. })
    ));
    assert!(matches!(
        sign("GET", "/v3/x y", 1, "n"),
        Err(WechatError::InvalidField { field: "url", .. })
    ));
    assert!(matches!(
        sign("GET", "/v3/x", -1, "n"),
        Err(WechatError::InvalidField {
            field: "timestamp",
            ..
        })
    ));
    assert!(matches!(
        sign("GET", "/v3/x", 1, "a\"b"),
        Err(WechatError::InvalidField {
            field: "nonce_str",
            ..
        })
    ));
    let key = WechatPrivateKey::from_pem(OFFICIAL_KEY_PEM).unwrap();
    assert!(MerchantSigner::new("19\"00", OFFICIAL_SERIAL, key.clone()).is_err());
    assert!(MerchantSigner::new(OFFICIAL_MCHID, "", key).is_err());
    let nonce = generate_nonce();
    assert_eq!(nonce.len(), 32);
    assert!(
        nonce
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
    );
    assert_ne!(nonce, generate_nonce());
}

#[test]
fn native_order_body_and_signature() {
    let order = NativeOrder {
        appid: "wxd678efh567hg6787",
        mchid: "1900007291",
        description: "Coffee 咖啡",
        out_trade_no: "pi_01JWQ8Z6Q0V3R2K9M5N7P4T1XB",
        notify_url: "https://pay.example.com/wechat/notify",
        amount: Money::from_parts(699, "CNY").unwrap(),
        expires_at: Some(Timestamp(1_779_874_200_000 + 900_000)),
    };
    let body = native_order_body(&order).unwrap();
    assert_eq!(
        body,
        r#"{"appid":"wxd678efh567hg6787","mchid":"1900007291","description":"Coffee 咖啡","out_trade_no":"pi_01JWQ8Z6Q0V3R2K9M5N7P4T1XB","time_expire":"2026-05-27T17:45:00+08:00","notify_url":"https://pay.example.com/wechat/notify","amount":{"total":699,"currency":"CNY"}}"#
    );
    // The signature over the exact body verifies with the published key's public half.
    let sig = official_signer()
        .sign_request("POST", NATIVE_ORDER_PATH, 1_779_874_200, "NONCE", &body)
        .unwrap();
    let public = WechatPublicKey::from_pem(OFFICIAL_PUB_PEM).unwrap();
    let digest = Sha256::new_with_prefix(
        request_signing_string("POST", NATIVE_ORDER_PATH, 1_779_874_200, "NONCE", &body).as_bytes(),
    );
    public.verify_digest(digest, &sig).unwrap();
    let no_expiry = NativeOrder {
        expires_at: None,
        ..order.clone()
    };
    assert!(
        !native_order_body(&no_expiry)
            .unwrap()
            .contains("time_expire")
    );
}

#[test]
fn native_order_inputs_are_checked() {
    let ok = NativeOrder {
        appid: "wx1",
        mchid: "1900007291",
        description: "d",
        out_trade_no: "order_1",
        notify_url: "https://n.example/notify",
        amount: Money::from_parts(1, "CNY").unwrap(),
        expires_at: None,
    };
    assert!(native_order_body(&ok).is_ok());
    for bad in ["short", "with space x", &"x".repeat(33), "a#bcdefg"] {
        let o = NativeOrder {
            out_trade_no: bad,
            ..ok.clone()
        };
        assert!(matches!(
            native_order_body(&o),
            Err(WechatError::InvalidField {
                field: "out_trade_no",
                ..
            })
        ));
    }
    let long = "长".repeat(128);
    let o = NativeOrder {
        description: &long,
        ..ok.clone()
    };
    assert!(native_order_body(&o).is_err());
    let o = NativeOrder {
        notify_url: "https://n/x?a=1",
        ..ok.clone()
    };
    assert!(native_order_body(&o).is_err());
    let o = NativeOrder {
        amount: Money::from_parts(1, "USD").unwrap(),
        ..ok.clone()
    };
    assert_eq!(
        native_order_body(&o),
        Err(WechatError::UnsupportedCurrency("USD".into()))
    );
}

#[test]
fn native_answer_is_parsed() {
    assert_eq!(
        parse_native_response(r#"{"code_url":"weixin://wxpay/bizpayurl?pr=p4lpSuKzz"}"#).unwrap(),
        "weixin://wxpay/bizpayurl?pr=p4lpSuKzz"
    );
    assert_eq!(
        parse_native_response(r#"{"code":"PARAM_ERROR","message":"参数错误"}"#),
        Err(WechatError::Api {
            code: "PARAM_ERROR".into(),
            message: "参数错误".into()
        })
    );
    assert!(matches!(
        parse_native_response("{}"),
        Err(WechatError::MalformedJson(_))
    ));
    assert!(matches!(
        parse_native_response("<html>"),
        Err(WechatError::MalformedJson(_))
    ));
}

#[test]
fn callback_signed_by_openssl_verifies() {
    verify_signature(
        &callback_headers(),
        CALLBACK_BODY.as_bytes(),
        &platform_keys(),
        NOW,
        DEFAULT_TOLERANCE_SECS,
    )
    .unwrap();
    // Our simulator-side signer produces the very same signature.
    let platform = WechatPrivateKey::from_pem(PLATFORM_KEY_PEM).unwrap();
    assert_eq!(
        platform
            .sign_notification(1_779_874_270, CALLBACK_NONCE, CALLBACK_BODY.as_bytes())
            .unwrap(),
        OPENSSL_CALLBACK_SIGNATURE
    );
}

#[test]
fn callback_headers_are_collected_by_name() {
    let lookup = |name: &str| match name {
        "Wechatpay-Timestamp" => Some(CALLBACK_TIMESTAMP),
        "Wechatpay-Nonce" => Some(CALLBACK_NONCE),
        "Wechatpay-Signature" => Some(OPENSSL_CALLBACK_SIGNATURE),
        "Wechatpay-Serial" => Some(PLATFORM_SERIAL),
        _ => None,
    };
    assert_eq!(
        SignedHeaders::from_lookup(lookup).unwrap(),
        callback_headers()
    );
    let missing = |name: &str| {
        if name == HEADER_SERIAL {
            None
        } else {
            lookup(name)
        }
    };
    assert_eq!(
        SignedHeaders::from_lookup(missing),
        Err(WechatError::MissingHeader("Wechatpay-Serial"))
    );
}

#[test]
fn callback_timestamp_outside_tolerance_is_rejected() {
    let keys = platform_keys();
    let body = CALLBACK_BODY.as_bytes();
    let ts = 1_779_874_270;
    let check = |now, tol| verify_signature(&callback_headers(), body, &keys, now, tol);
    assert_eq!(
        check(ts + 301, 300),
        Err(WechatError::TimestampOutOfTolerance { skew_secs: 301 })
    );
    assert_eq!(
        check(ts - 301, 300),
        Err(WechatError::TimestampOutOfTolerance { skew_secs: 301 })
    );
    assert_eq!(check(ts + 300, 300), Ok(()));
    assert_eq!(check(ts + 600, 600), Ok(()));
    for bad in ["", "abc", "+1779874270", "-1", "17798742701779874270"] {
        let headers = SignedHeaders {
            timestamp: bad,
            ..callback_headers()
        };
        assert_eq!(
            verify_signature(&headers, body, &keys, NOW, 300),
            Err(WechatError::InvalidTimestamp)
        );
    }
}

#[test]
fn callback_with_unknown_serial_wrong_key_or_tampering_is_rejected() {
    let keys = platform_keys();
    let headers = SignedHeaders {
        serial: "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
        ..callback_headers()
    };
    assert!(matches!(
        verify_signature(&headers, CALLBACK_BODY.as_bytes(), &keys, NOW, 300),
        Err(WechatError::UnknownSerial(_))
    ));
    let mut wrong = PlatformKeys::new();
    wrong.insert(
        PLATFORM_SERIAL,
        WechatPublicKey::from_pem(OFFICIAL_PUB_PEM).unwrap(),
    );
    assert_eq!(
        verify_signature(
            &callback_headers(),
            CALLBACK_BODY.as_bytes(),
            &wrong,
            NOW,
            300
        ),
        Err(WechatError::BadSignature)
    );
    let tampered = CALLBACK_BODY.replace("TRANSACTION.SUCCESS", "TRANSACTION.SUCCESs");
    assert_eq!(
        verify_signature(&callback_headers(), tampered.as_bytes(), &keys, NOW, 300),
        Err(WechatError::BadSignature)
    );
    let other_nonce = SignedHeaders {
        nonce: "c5ac7061fccab6bf3e254dcf98995b8d",
        ..callback_headers()
    };
    assert_eq!(
        verify_signature(&other_nonce, CALLBACK_BODY.as_bytes(), &keys, NOW, 300),
        Err(WechatError::BadSignature)
    );
    let probe = SignedHeaders {
        signature: "WECHATPAY/SIGNTEST/NvUydzGmXmnBI+k1HTxMB1sFdVc=",
        ..callback_headers()
    };
    assert!(verify_signature(&probe, CALLBACK_BODY.as_bytes(), &keys, NOW, 300).is_err());
    let garbage = SignedHeaders {
        signature: "%%%",
        ..callback_headers()
    };
    assert_eq!(
        verify_signature(&garbage, CALLBACK_BODY.as_bytes(), &keys, NOW, 300),
        Err(WechatError::InvalidSignatureEncoding)
    );
}

#[test]
fn resource_made_by_python_decrypts() {
    let r = resource();
    assert_eq!(r.ciphertext, PYTHON_CIPHERTEXT);
    assert_eq!(api_key().decrypt_resource(&r).unwrap(), TRANSACTION_JSON);
    let tx = api_key().decrypt_transaction(&r).unwrap();
    assert_eq!(tx.out_trade_no, "pi_01JWQ8Z6Q0V3R2K9M5N7P4T1XB");
    assert_eq!(
        tx.transaction_id.as_deref(),
        Some("4200002345202605271234567890")
    );
    assert_eq!(tx.trade_state, TradeState::Success);
    assert_eq!(tx.amount.total, 699);
    assert_eq!(tx.amount.currency, "CNY");
    assert_eq!(
        tx.payer.unwrap().openid.as_deref(),
        Some("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o")
    );
}

#[test]
fn our_encryption_matches_python() {
    let r = api_key()
        .encrypt_resource(
            TRANSACTION_JSON,
            "a1b2c3d4e5f6",
            "transaction",
            "transaction",
        )
        .unwrap();
    assert_eq!(r, resource());
}

#[test]
fn wrong_key_tampering_or_wrong_associated_data_fail() {
    let r = resource();
    let other = ApiV3Key::new(b"ipayTestApiV3Key0123456789abcdeF").unwrap();
    assert_eq!(
        other.decrypt_resource(&r),
        Err(WechatError::DecryptionFailed)
    );

    let mut raw = STANDARD.decode(&r.ciphertext).unwrap();
    for i in [0, raw.len() / 2, raw.len() - 1] {
        raw[i] ^= 0x01;
        let t = EncryptedResource {
            ciphertext: STANDARD.encode(&raw),
            ..r.clone()
        };
        assert_eq!(
            api_key().decrypt_resource(&t),
            Err(WechatError::DecryptionFailed)
        );
        raw[i] ^= 0x01;
    }
    let t = EncryptedResource {
        associated_data: "transactiom".into(),
        ..r.clone()
    };
    assert_eq!(
        api_key().decrypt_resource(&t),
        Err(WechatError::DecryptionFailed)
    );
    let t = EncryptedResource {
        associated_data: String::new(),
        ..r.clone()
    };
    assert_eq!(
        api_key().decrypt_resource(&t),
        Err(WechatError::DecryptionFailed)
    );
    let t = EncryptedResource {
        nonce: "a1b2c3d4e5f7".into(),
        ..r.clone()
    };
    assert_eq!(
        api_key().decrypt_resource(&t),
        Err(WechatError::DecryptionFailed)
    );
}

#[test]
fn malformed_resources_are_rejected() {
    let r = resource();
    let t = EncryptedResource {
        algorithm: "AEAD_AES_128_GCM".into(),
        ..r.clone()
    };
    assert!(matches!(
        api_key().decrypt_resource(&t),
        Err(WechatError::UnsupportedAlgorithm(_))
    ));
    let t = EncryptedResource {
        nonce: "short".into(),
        ..r.clone()
    };
    assert_eq!(
        api_key().decrypt_resource(&t),
        Err(WechatError::InvalidNonceLength(5))
    );
    let t = EncryptedResource {
        ciphertext: "not base64!".into(),
        ..r.clone()
    };
    assert_eq!(
        api_key().decrypt_resource(&t),
        Err(WechatError::InvalidCiphertext)
    );
    let t = EncryptedResource {
        ciphertext: STANDARD.encode([0u8; 15]),
        ..r.clone()
    };
    assert_eq!(
        api_key().decrypt_resource(&t),
        Err(WechatError::InvalidCiphertext)
    );
    assert!(
        api_key()
            .encrypt_resource("{}", "short", "", "transaction")
            .is_err()
    );
}

#[test]
fn api_v3_key_length_is_enforced() {
    assert_eq!(
        ApiV3Key::new(b"0123456789abcdef0123456789abcde").unwrap_err(),
        WechatError::InvalidApiV3KeyLength(31)
    );
    assert_eq!(
        ApiV3Key::new(&[0u8; 33]).unwrap_err(),
        WechatError::InvalidApiV3KeyLength(33)
    );
    assert_eq!(
        ApiV3Key::new(b"").unwrap_err(),
        WechatError::InvalidApiV3KeyLength(0)
    );
}

#[test]
fn keys_are_checked_and_redacted() {
    let weak = include_str!("../../tests/fixtures/alipay/weak_1024_private_key.pem");
    assert_eq!(
        WechatPrivateKey::from_pem(weak).unwrap_err(),
        WechatError::KeyTooSmall { bits: 1024 }
    );
    assert!(matches!(
        WechatPublicKey::from_pem(OFFICIAL_KEY_PEM),
        Err(WechatError::InvalidKey(_))
    ));
    assert!(matches!(
        WechatPublicKey::from_pem("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"),
        Err(WechatError::InvalidKey(_))
    ));
    let bare: String = OFFICIAL_KEY_PEM
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let from_bare = WechatPrivateKey::parse(&bare).unwrap();
    assert_eq!(from_bare.bits(), 2048);
    let pub_bare: String = OFFICIAL_PUB_PEM
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert_eq!(WechatPublicKey::parse(&pub_bare).unwrap().bits(), 2048);
    let shown = format!(
        "{:?} {:?} {:?}",
        official_signer(),
        from_bare.public_key(),
        api_key()
    );
    assert_eq!(
        shown,
        "MerchantSigner { mchid: \"1900007291\", serial_no: \"408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB\", key: WechatPrivateKey(RSA-2048, redacted) } WechatPublicKey(RSA-2048) ApiV3Key(redacted)"
    );
}

#[test]
fn resource_nonces_are_fresh() {
    let a = generate_resource_nonce();
    assert_eq!(a.len(), RESOURCE_NONCE_LEN);
    assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_ne!(a, generate_resource_nonce());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn encrypt_then_decrypt_round_trips(
        key in proptest::array::uniform32(any::<u8>()),
        plaintext in "\\PC{0,600}",
        nonce in "[0-9A-Za-z]{12}",
        aad in "[ -~]{0,16}",
    ) {
        let key = ApiV3Key::new(&key).unwrap();
        let r = key.encrypt_resource(&plaintext, &nonce, &aad, "transaction").unwrap();
        prop_assert_eq!(key.decrypt_resource(&r).unwrap(), plaintext);
        let other = EncryptedResource { associated_data: format!("{aad}x"), ..r };
        prop_assert_eq!(key.decrypt_resource(&other), Err(WechatError::DecryptionFailed));
    }

    #[test]
    fn notification_sign_then_verify_round_trips(
        body in proptest::collection::vec(any::<u8>(), 0..300),
        nonce in "[0-9a-f]{32}",
        ts in 1_500_000_000i64..2_000_000_000,
    ) {
        let platform = WechatPrivateKey::from_pem(PLATFORM_KEY_PEM).unwrap();
        let sig = platform.sign_notification(ts, &nonce, &body).unwrap();
        let ts_text = ts.to_string();
        let headers = SignedHeaders { timestamp: &ts_text, nonce: &nonce, signature: &sig, serial: PLATFORM_SERIAL };
        prop_assert_eq!(verify_signature(&headers, &body, &platform_keys(), ts, 300), Ok(()));
        let mut tampered = body.clone();
        tampered.push(b' ');
        prop_assert_eq!(
            verify_signature(&headers, &tampered, &platform_keys(), ts, 300),
            Err(WechatError::BadSignature)
        );
    }
}
