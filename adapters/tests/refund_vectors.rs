//! Refund wire formats against independent references: a Stripe `refund.updated` event signed
//! and parsed by the official `stripe` Python package (16.1.0), and a WeChat Pay refund
//! resource encrypted with Python's `cryptography` (AESGCM, associated data `refund`) the way
//! WeChat Pay's notification documentation describes. The vectors were made with
//! `tests/fixtures/refunds/make_vectors.py` when this test was written.

use ipay_adapters::factory::AdapterFactory;
use ipay_adapters::sim::keys;
use ipay_adapters::wechat::{ApiV3Key, EncryptedResource, RefundStatus};
use ipay_engine::channel::{
    CallbackOutcome, ChannelFactory, ChannelRefundState, ChannelsConfig, InboundCallback,
    RefundReport,
};
use ipay_engine::clock::Timestamp;
use ipay_engine::ids::RefundId;

/// `json.dumps(event, separators=(",", ":"))` of the event below.
const STRIPE_PAYLOAD: &str = r#"{"id":"evt_1RefundVector000000000001","object":"event","api_version":"2024-06-20","created":1800000000,"type":"refund.updated","data":{"object":{"id":"re_3PvecRefund00000000000001","object":"refund","amount":300,"currency":"eur","status":"succeeded","payment_intent":"pi_3PvecIntent0000000000001","metadata":{"ipay_intent_id":"pi_01JF00000000000000000000AA","ipay_refund_id":"re_01JF00000000000000000000BB"}}}}"#;
/// `stripe.WebhookSignature._compute_signature(f"{t}.{payload}", secret)` at t = 1800000000,
/// accepted by `stripe.Webhook.construct_event`.
const STRIPE_HEADER: &str =
    "t=1800000000,v1=d35c75f6b8cf9534df14df5b04895cf1e045ba586d0dcbb7cf25de949b20ae07";
/// `AESGCM(b"ipaySimApiV3Key0123456789abcdefg").encrypt(b"refundNonce1", refund_json, b"refund")`.
const WECHAT_CIPHERTEXT: &str = "Zlyt7MUC1Hx/VvlDKQUtNKBZYVr0Q3p4Zm89FAdMeI2JG9F4EucTxjTzVCtqktwxYHqAk8cV1y19zevq+GW4VayTa0O6d4NBf9c9o1G8NFtOSeZIovULZ4lSU5Yeknj7jDy0PCsBYRIUeg6Ip9MOS+5yRYI+zMShC3OURCtyooAhELZCRUNCsNA42Lkcswxdup4VixzoOuFCFvgs9TE04GMGm+5PczCcW16SQOs9Uipfijk6BVGbf2GhbuJgEhLOlGMWZo7EEuOgta1Vdms3AFCf2xaJ21b20tN6K8fDjpfoO11qYksv0Z63BA1dcL+esQnpzdfHX606QVgphY3uIMKuV7SDmdqZaAjxCYKlH0WqEBZadErwpHNisOgoglUEoGWXeo1mO1LQyHANGa9GP2cPIpv+KNUzTT1IcFmHkLxcqPIBXRh4AFSYYcJCc8A0jWy6/HaqHsZYE7KOO+p+frWvqMjH7Rxco6jvYFFRYcyG4//5sWaENC3mEKDvq88biyp+7v7GD+8a86aSyuNkNC6pjvuv5OFJZaRsMCtP";

#[test]
fn a_stripe_refund_event_signed_by_the_official_library_reports_our_refund() {
    let factory = AdapterFactory::new(&ChannelsConfig::default()).unwrap();
    let adapter = factory
        .build(
            "stripe",
            &keys::credentials("stripe").unwrap(),
            "https://example.com/api/payments/webhook",
        )
        .unwrap();
    let cb = InboundCallback {
        method: "POST".into(),
        path: "/api/payments/webhook".into(),
        headers: vec![("stripe-signature".into(), STRIPE_HEADER.into())],
        body: STRIPE_PAYLOAD.as_bytes().to_vec().into(),
        ..InboundCallback::default()
    };
    let notice = adapter
        .verify_callback(&cb, Timestamp(1_800_000_000_000))
        .unwrap();
    assert_eq!(notice.notification_id, "evt_1RefundVector000000000001");
    assert_eq!(
        notice.intent_id.to_string(),
        "pi_01JF00000000000000000000AA"
    );
    match notice.outcome {
        CallbackOutcome::Refund(RefundReport::Own {
            refund_id,
            state,
            psp_reference,
        }) => {
            assert_eq!(
                refund_id,
                RefundId::parse("re_01JF00000000000000000000BB").unwrap()
            );
            assert_eq!(state, ChannelRefundState::Succeeded);
            assert_eq!(
                psp_reference.as_deref(),
                Some("re_3PvecRefund00000000000001")
            );
        }
        other => panic!("expected our refund, got {other:?}"),
    }
}

#[test]
fn a_wechat_refund_resource_encrypted_by_python_decrypts_to_our_refund() {
    let key = ApiV3Key::new(keys::WECHAT_APIV3_KEY.as_bytes()).unwrap();
    let resource = EncryptedResource {
        algorithm: "AEAD_AES_256_GCM".into(),
        ciphertext: WECHAT_CIPHERTEXT.into(),
        nonce: "refundNonce1".into(),
        associated_data: "refund".into(),
        original_type: "refund".into(),
    };
    let refund = key.decrypt_refund(&resource).unwrap();
    assert_eq!(refund.out_refund_no, "re_01JF00000000000000000000BB");
    assert_eq!(
        refund.out_trade_no.as_deref(),
        Some("pi_01JF00000000000000000000AA")
    );
    assert_eq!(refund.status, RefundStatus::Success);
    assert_eq!(
        refund.refund_id.as_deref(),
        Some("50300000000000000000000000001")
    );
    // Our own encryption of the same plaintext under the same nonce is byte-identical.
    let plain = key.decrypt_resource(&resource).unwrap();
    let ours = key
        .encrypt_resource(&plain, "refundNonce1", "refund", "refund")
        .unwrap();
    assert_eq!(ours.ciphertext, WECHAT_CIPHERTEXT);
    // Tampering is detected.
    let mut bad = resource.clone();
    bad.associated_data = "transaction".into();
    assert!(key.decrypt_refund(&bad).is_err());
}
