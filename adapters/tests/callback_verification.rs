//! Callback verification failures: tampered bodies, wrong keys, stale timestamps, missing
//! headers, and credential validation that never echoes secrets.

mod common;

use common::{Received, World, now, request};
use ipay_adapters::sim::{Outcome, PayOverrides};
use ipay_engine::channel::{CallbackError, ChannelAdapter, ChannelFactory, InboundCallback};

const ALL: [(&str, &str); 5] = [
    ("alipay", "CNY"),
    ("wechat", "CNY"),
    ("stripe", "EUR"),
    ("multisafepay", "EUR"),
    ("promptpay", "THB"),
];

/// Creates a payment on `channel` and has the simulator pay it; returns what arrived.
async fn paid_callback(
    w: &World,
    adapter: &dyn ChannelAdapter,
    channel: &str,
    currency: &str,
) -> Received {
    let req = request(4321, currency);
    let intent = req.intent_id.to_string();
    let payment = adapter.create_payment(&req).await.unwrap();
    if channel == "promptpay" {
        w.sim
            .promptpay_scan(&intent, &payment.qr_code, &w.notify_url(channel))
            .unwrap();
    }
    assert!(w.sim.pay(&intent).await.unwrap().acknowledged());
    w.receiver.last()
}

#[tokio::test]
async fn tampered_bodies_are_signature_mismatches() {
    let w = World::start().await;
    for (channel, currency) in ALL {
        let adapter = w.adapter(channel);
        let got = paid_callback(&w, adapter.as_ref(), channel, currency).await;
        let text = String::from_utf8(got.body.to_vec()).unwrap();
        let forged = if channel == "wechat" {
            // The amount is encrypted; change the notification id instead.
            text.replacen("\"id\":\"EV-", "\"id\":\"EX-", 1)
        } else {
            // Raise the amount the way a forger would.
            text.replacen("43.21", "99.21", 1)
                .replacen("4321", "9921", 1)
        };
        assert_ne!(forged, text, "{channel}: nothing to tamper with");
        let err = adapter
            .verify_callback(
                &InboundCallback {
                    body: forged.into(),
                    ..got.gateway_callback()
                },
                now(),
            )
            .unwrap_err();
        assert!(
            matches!(err, CallbackError::SignatureMismatch(_)),
            "{channel}: {err:?}"
        );
    }
}

#[tokio::test]
async fn callbacks_signed_for_another_merchant_are_refused() {
    let w = World::start().await;
    let other = [
        (
            "stripe",
            "webhook_secret",
            "whsec_anotherMerchantSecret0000",
        ),
        ("multisafepay", "api_key", "anotherMerchantApiKey000000"),
        (
            "promptpay",
            "bank_callback_secret",
            "another-merchant-bank-secret-000000000",
        ),
        ("wechat", "apiv3_key", "anotherMerchantApiV3Key000000000"),
    ];
    for (channel, field, value) in other {
        let currency = ALL.iter().find(|(c, _)| *c == channel).unwrap().1;
        let adapter = w.adapter(channel);
        let got = paid_callback(&w, adapter.as_ref(), channel, currency).await;
        let mut creds = w.sim.credentials(channel);
        creds[field] = serde_json::Value::String(value.into());
        let stranger = w
            .factory
            .build(channel, &creds, &w.notify_url(channel))
            .unwrap();
        let err = stranger
            .verify_callback(&got.gateway_callback(), now())
            .unwrap_err();
        assert!(
            matches!(err, CallbackError::SignatureMismatch(_)),
            "{channel}: {err:?}"
        );
        assert!(!err.to_string().contains(value));
    }
    // Alipay: a notify verified with a different Alipay public key.
    let adapter = w.adapter("alipay");
    let got = paid_callback(&w, adapter.as_ref(), "alipay", "CNY").await;
    let mut creds = w.sim.credentials("alipay");
    creds["alipay_public_key_pem"] = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/alipay/alipay_public_key.pem"
    ))
    .unwrap()
    .into();
    let stranger = w.factory.build("alipay", &creds, "http://x").unwrap();
    assert!(matches!(
        stranger.verify_callback(&got.without_path(), now()),
        Err(CallbackError::SignatureMismatch(_))
    ));
}

#[tokio::test]
async fn stale_timestamps_are_rejected_per_channel_tolerance() {
    let w = World::start().await;
    // (channel, tolerance in seconds)
    for (channel, tolerance) in [
        ("wechat", 300),
        ("stripe", 300),
        ("multisafepay", 600),
        ("promptpay", 300),
    ] {
        let currency = ALL.iter().find(|(c, _)| *c == channel).unwrap().1;
        let adapter = w.adapter(channel);
        let got = paid_callback(&w, adapter.as_ref(), channel, currency).await;
        let h = got.gateway_callback();
        // Within tolerance (a few seconds of slack for the time the test took).
        assert!(
            adapter
                .verify_callback(&h, now().plus_secs(tolerance - 5))
                .is_ok(),
            "{channel}"
        );
        for late in [tolerance + 5, -(tolerance + 5)] {
            let err = adapter
                .verify_callback(&h, now().plus_secs(late))
                .unwrap_err();
            assert!(
                matches!(err, CallbackError::Stale(_)),
                "{channel} {late}: {err:?}"
            );
        }
    }
}

#[tokio::test]
async fn missing_signature_headers_are_malformed() {
    let w = World::start().await;
    for (channel, currency) in ALL {
        if channel == "alipay" {
            continue; // Alipay signs inside the form body.
        }
        let adapter = w.adapter(channel);
        let got = paid_callback(&w, adapter.as_ref(), channel, currency).await;
        let err = adapter
            .verify_callback(
                &InboundCallback {
                    body: got.body.clone(),
                    ..InboundCallback::default()
                },
                now(),
            )
            .unwrap_err();
        assert!(
            matches!(err, CallbackError::Malformed(_)),
            "{channel}: {err:?}"
        );
    }
    let adapter = w.adapter("alipay");
    let err = adapter
        .verify_callback(
            &InboundCallback {
                body: "out_trade_no=pi_x&total_amount=1".into(),
                ..InboundCallback::default()
            },
            now(),
        )
        .unwrap_err();
    assert!(
        matches!(err, CallbackError::SignatureMismatch(_)),
        "{err:?}"
    );
}

#[tokio::test]
async fn wechat_callback_for_another_path_intent_is_refused() {
    let w = World::start().await;
    let adapter = w.adapter("wechat");
    let got = paid_callback(&w, adapter.as_ref(), "wechat", "CNY").await;
    let h = InboundCallback {
        path: "/callbacks/wechat/pi_01JWQ8Z6Q0V3R2K9M5N7P4T1XB".into(),
        ..got.gateway_callback()
    };
    assert!(matches!(
        adapter.verify_callback(&h, now()),
        Err(CallbackError::Malformed(_))
    ));
    // Without a path to route by, the decrypted order number alone identifies the intent.
    assert!(adapter.verify_callback(&got.without_path(), now()).is_ok());
}

#[tokio::test]
async fn out_of_order_delivers_success_then_an_earlier_failure_both_verifiable() {
    let w = World::start().await;
    let adapter = w.adapter("stripe");
    let req = request(700, "EUR");
    adapter.create_payment(&req).await.unwrap();
    let delivered = w
        .sim
        .out_of_order(&req.intent_id.to_string())
        .await
        .unwrap();
    assert_eq!(delivered.len(), 2);
    let got = w.receiver.received();
    let outcomes: Vec<_> = got
        .iter()
        .map(|r| {
            adapter
                .verify_callback(&r.without_path(), now())
                .unwrap()
                .outcome
        })
        .collect();
    assert!(matches!(
        outcomes[0],
        ipay_engine::channel::CallbackOutcome::Paid { .. }
    ));
    assert!(matches!(
        outcomes[1],
        ipay_engine::channel::CallbackOutcome::Failed { .. }
    ));
    // A prepared callback is not sent and does not change the order.
    let prepared = w
        .sim
        .prepare(
            &req.intent_id.to_string(),
            Outcome::Failed,
            &PayOverrides::default(),
        )
        .unwrap();
    assert!(prepared.body.contains("payment_failed"));
    assert_eq!(w.receiver.received().len(), 2);
}

#[test]
fn validation_names_fields_and_never_echoes_secrets() {
    let factory = ipay_adapters::factory::AdapterFactory::new(&Default::default()).unwrap();
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let weak =
        std::fs::read_to_string(format!("{fixtures}/alipay/weak_1024_private_key.pem")).unwrap();
    let creds = |c: &str| ipay_adapters::sim::keys::credentials(c).unwrap();

    let mut alipay = creds("alipay");
    alipay["private_key_pem"] = weak.clone().into();
    let err = factory.validate("alipay", &alipay).unwrap_err();
    assert!(
        err.contains("private_key_pem") && err.contains("1024"),
        "{err}"
    );
    assert!(!err.contains("BEGIN"));

    let mut wechat = creds("wechat");
    wechat["apiv3_key"] = "tooShortSecretValue".into();
    let err = factory.validate("wechat", &wechat).unwrap_err();
    assert!(err.contains("apiv3_key") && err.contains("32"), "{err}");
    assert!(!err.contains("tooShortSecretValue"));

    let mut wechat = creds("wechat");
    wechat["platform_public_key_pem"] =
        "-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----".into();
    assert!(
        factory
            .validate("wechat", &wechat)
            .unwrap_err()
            .contains("platform_public_key_pem")
    );

    let mut stripe = creds("stripe");
    stripe["secret_key"] = "pk_live_publishableNotSecret".into();
    let err = factory.validate("stripe", &stripe).unwrap_err();
    assert!(
        err.contains("secret_key") && !err.contains("publishableNotSecret"),
        "{err}"
    );

    let mut msp = creds("multisafepay");
    msp["extra"] = "hunter2hunter2".into();
    let err = factory.validate("multisafepay", &msp).unwrap_err();
    assert!(err.contains("extra") && !err.contains("hunter2"), "{err}");

    let mut pp = creds("promptpay");
    pp["bank_callback_secret"] = "short-secret".into();
    let err = factory.validate("promptpay", &pp).unwrap_err();
    assert!(
        err.contains("bank_callback_secret") && !err.contains("short-secret"),
        "{err}"
    );

    assert!(
        factory
            .validate("alipay", &serde_json::json!("nope"))
            .is_err()
    );
    assert!(
        factory
            .validate("paypal", &serde_json::json!({}))
            .unwrap_err()
            .contains("unknown channel")
    );
    assert!(
        factory
            .build("paypal", &serde_json::json!({}), "http://x")
            .is_err()
    );
}
