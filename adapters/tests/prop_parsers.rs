//! Property tests of the parsers behind each channel's and shop's wire format, below the
//! signature check (which stops almost all random input before it reaches them): EMVCo
//! payloads, Alipay forms, Stripe-style signature headers (Stripe and the PromptPay bank),
//! MultiSafepay `Auth` headers, WeChat Pay `Authorization` headers and AES-GCM resources
//! (arbitrary plaintext, encrypted with the key, so the transaction parser sees it), and the
//! order mappers of every shop platform (arbitrary JSON and mutated real samples). None may
//! panic; each answers a value or a coded error.

use ipay_adapters::shops::{self, Defaults, Provider};
use ipay_adapters::{alipay, multisafepay, promptpay, stripe, wechat};
use ipay_engine::clock::Timestamp;
use proptest::prelude::*;
use serde_json::Value;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Arbitrary JSON, biased to the field names the parsers look up.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[a-zA-Z0-9 .,:@+_-]{0,30}".prop_map(Value::from),
        Just(Value::from("99999999999999999999.999")),
        Just(Value::from("-1")),
        Just(Value::from("1e400")),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(field_name(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "id",
            "topic",
            "type",
            "event",
            "scope",
            "data",
            "order",
            "orders",
            "line_items",
            "items",
            "billing",
            "shipping",
            "shipping_address",
            "billing_address",
            "customer",
            "total",
            "total_price",
            "grand_total",
            "currency",
            "price",
            "quantity",
            "qty",
            "name",
            "sku",
            "address1",
            "city",
            "zip",
            "country",
            "country_code",
            "email",
            "phone",
            "first_name",
            "last_name",
            "status",
            "amount",
            "order_id",
            "increment_id",
            "shipping_lines",
            "carrier",
            "products",
            "orderLines",
            "attributes",
        ])
        .prop_map(str::to_string),
        "[a-z_]{1,12}",
    ]
}

/// Mutates a JSON document: a value replaced somewhere along a random path.
fn mutate_json(v: &mut Value, path: &[usize], replacement: Value) {
    let Some((&first, rest)) = path.split_first() else {
        *v = replacement;
        return;
    };
    match v {
        Value::Object(m) if !m.is_empty() => {
            let key = m.keys().nth(first % m.len()).cloned().unwrap_or_default();
            if let Some(child) = m.get_mut(&key) {
                mutate_json(child, rest, replacement);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let n = a.len();
            mutate_json(&mut a[first % n], rest, replacement);
        }
        _ => *v = replacement,
    }
}

fn now() -> Timestamp {
    Timestamp(1_800_000_000_000)
}

fn provider() -> impl Strategy<Value = Provider> {
    prop::sample::select(Provider::ALL.to_vec())
}

proptest! {
    #![proptest_config(config(600))]

    #[test]
    fn emvco_parse_takes_any_text(s in "\\PC{0,200}") {
        let _ = promptpay::parse(&s);
        let _ = promptpay::crc_is_valid(&s);
    }

    #[test]
    fn emvco_parse_takes_tlv_shaped_text(
        fields in prop::collection::vec(("[0-9]{2}", "[0-9A-Z.]{0,40}", 0usize..3), 0..12),
        fix_crc in any::<bool>(),
    ) {
        // Plausible tags with right, short or long lengths, then (sometimes) a valid CRC, so
        // the parser's TLV and PromptPay layers are reached rather than the CRC check.
        let mut s = String::new();
        for (tag, value, skew) in &fields {
            let len = (value.len() + skew).saturating_sub(1).min(99);
            s.push_str(&format!("{tag}{len:02}{value}"));
        }
        s.push_str("6304");
        if fix_crc {
            s.push_str(&format!("{:04X}", promptpay::crc16(s.as_bytes())));
        }
        let _ = promptpay::parse(&s);
    }

    #[test]
    fn alipay_forms_take_any_body(s in "\\PC{0,300}") {
        let _ = alipay::parse_form(&s);
    }

    #[test]
    fn alipay_forms_take_percent_noise(
        parts in prop::collection::vec(("[a-z_%0-9A-F+=&]{0,12}", "[a-zA-Z0-9%+=&.]{0,24}"), 0..10),
    ) {
        let body: Vec<String> = parts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = alipay::parse_form(&body.join("&"));
    }

    #[test]
    fn signature_headers_take_any_text(h in "\\PC{0,200}", body in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = stripe::verify(&h, &body, "whsec_test", 1_800_000_000, 300);
        let _ = multisafepay::verify(&h, &body, "key", 1_800_000_000, 300);
        let _ = wechat::parse_authorization(&h);
    }

    #[test]
    fn stripe_headers_take_structured_noise(
        t in prop_oneof![any::<i64>().prop_map(|n| n.to_string()), "[0-9a-z-]{0,20}"],
        v1 in prop::collection::vec("[0-9a-fA-F]{0,70}", 0..4),
        extra in "[a-z0-9=,]{0,20}",
    ) {
        let mut h = format!("t={t}");
        for s in &v1 {
            h.push_str(&format!(",v1={s}"));
        }
        h.push(',');
        h.push_str(&extra);
        let _ = stripe::verify(&h, b"{}", "whsec_test", 1_800_000_000, 300);
        let _ = multisafepay::verify(&h, b"{}", "key", 1_800_000_000, 300);
    }

    #[test]
    fn wechat_resources_decrypt_any_plaintext_without_panicking(
        plain in prop_oneof![json_value().prop_map(|v| v.to_string()), "\\PC{0,200}"],
        aad in "[a-z]{0,12}",
    ) {
        let key = wechat::ApiV3Key::new(b"0123456789abcdef0123456789abcdef").unwrap();
        let res = key.encrypt_resource(&plain, "0123456789ab", &aad, "transaction").unwrap();
        prop_assert_eq!(key.decrypt_resource(&res).unwrap(), plain);
        let _ = key.decrypt_transaction(&res);
    }

    #[test]
    fn wechat_resources_refuse_arbitrary_ciphertext(
        ciphertext in "[A-Za-z0-9+/=]{0,120}",
        nonce in "\\PC{0,16}",
        algorithm in prop_oneof![Just("AEAD_AES_256_GCM".to_string()), "[A-Z_0-9]{0,20}"],
    ) {
        let key = wechat::ApiV3Key::new(b"0123456789abcdef0123456789abcdef").unwrap();
        let res = wechat::EncryptedResource {
            algorithm,
            ciphertext,
            nonce,
            associated_data: String::new(),
            original_type: "transaction".into(),
        };
        prop_assert!(key.decrypt_transaction(&res).is_err());
    }

    #[test]
    fn shop_mappers_take_any_json(p in provider(), v in json_value(), topic in prop::option::of("[a-z./_]{0,20}")) {
        let d = Defaults { carrier: None, currency: "EUR" };
        let _ = shops::map_order(p, topic.as_deref(), &v, &d);
        let _ = shops::update_info(p, topic.as_deref(), &v);
    }

    #[test]
    fn shop_mappers_take_mutated_real_orders(
        p in provider(),
        path in prop::collection::vec(any::<usize>(), 0..6),
        replacement in json_value(),
        currency in prop::sample::select(vec!["EUR", "JPY", "BHD", "XXX", ""]),
    ) {
        let (body, headers) = shops::sample(p, now());
        let mut v: Value = serde_json::from_slice(&body).unwrap();
        mutate_json(&mut v, &path, replacement);
        let topic = p.topic_header().and_then(|h| headers.get(h)).and_then(|t| t.to_str().ok());
        let d = Defaults { carrier: Some("postnl"), currency };
        let _ = shops::map_order(p, topic, &v, &d);
        let _ = shops::update_info(p, topic, &v);
    }

    #[test]
    fn shop_signatures_take_any_header(
        p in provider(),
        sig in "\\PC{0,100}",
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut h = http::HeaderMap::new();
        if let (Some(name), Ok(value)) = (p.scheme().header(), http::HeaderValue::from_str(&sig)) {
            h.insert(name, value);
        }
        let _ = shops::signature::verify(p.scheme(), "secret", &h, Some(&sig), &body);
    }

    #[test]
    fn shop_prices_take_any_text(s in "\\PC{0,40}", exp in 0u8..5) {
        let _ = shops::parse_major(&s, exp);
    }
}
