//! Channel cryptography on the engine's hottest path: verifying what payment channels send us
//! (Alipay notifies, WeChat Pay callbacks, Stripe and MultiSafepay webhooks), decrypting WeChat
//! Pay resources, and building PromptPay QR payloads. Keys and messages are the test fixtures of
//! `ipay-adapters`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ipay_adapters::{alipay, multisafepay, promptpay, stripe, wechat};
use std::hint::black_box;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FIXTURES_ALIPAY_PUBLIC: &str =
    include_str!("../../adapters/tests/fixtures/alipay/alipay_public_key.pem");
const FIXTURES_ALIPAY_NOTIFY: &str =
    include_str!("../../adapters/tests/fixtures/alipay/notify_body.txt");
const FIXTURES_WECHAT_PLATFORM_KEY: &str =
    include_str!("../../adapters/tests/fixtures/wechat/platform_private_key.pem");
const FIXTURES_WECHAT_PLATFORM_PUB: &str =
    include_str!("../../adapters/tests/fixtures/wechat/platform_public_key.pem");
const FIXTURES_WECHAT_CALLBACK: &str =
    include_str!("../../adapters/tests/fixtures/wechat/callback_body.json");
const FIXTURES_WECHAT_TRANSACTION: &str =
    include_str!("../../adapters/tests/fixtures/wechat/transaction.json");

/// The APIv3 key the WeChat fixtures were encrypted with.
const WECHAT_API_V3_KEY: &[u8] = b"ipayTestApiV3Key0123456789abcdef";
const WECHAT_SERIAL: &str = "PUB_KEY_ID_0114232134912410000000000000000000";
const NOW: i64 = 1_779_874_270;

// ---------------------------------------------------------------------------------------------
// Alipay and WeChat Pay (RSA2 / SHA256withRSA, AES-256-GCM)
// ---------------------------------------------------------------------------------------------

fn alipay_notify_verify(c: &mut Criterion) {
    let key = alipay::AlipayPublicKey::from_pem(FIXTURES_ALIPAY_PUBLIC).unwrap();
    let params = alipay::parse_form(FIXTURES_ALIPAY_NOTIFY).unwrap();
    alipay::verify_notify(&params, &key).unwrap();

    let mut group = c.benchmark_group("alipay");
    group.bench_function("notify_verify_rsa2", |b| {
        b.iter(|| alipay::verify_notify(black_box(&params), &key).unwrap())
    });
    group.throughput(Throughput::Bytes(FIXTURES_ALIPAY_NOTIFY.len() as u64));
    group.bench_function("notify_form_decode_and_verify", |b| {
        b.iter(|| alipay::verify_notify_form(black_box(FIXTURES_ALIPAY_NOTIFY), &key).unwrap())
    });
    group.finish();
}

fn wechat_callback_verify(c: &mut Criterion) {
    let platform = wechat::WechatPrivateKey::from_pem(FIXTURES_WECHAT_PLATFORM_KEY).unwrap();
    let mut keys = wechat::PlatformKeys::new();
    keys.insert(
        WECHAT_SERIAL,
        wechat::WechatPublicKey::from_pem(FIXTURES_WECHAT_PLATFORM_PUB).unwrap(),
    );
    let body = FIXTURES_WECHAT_CALLBACK.as_bytes();
    let nonce = "c5ac7061fccab6bf3e254dcf98995b8c";
    let signature = platform.sign_notification(NOW, nonce, body).unwrap();
    let timestamp = NOW.to_string();
    let headers = wechat::SignedHeaders {
        timestamp: &timestamp,
        nonce,
        signature: &signature,
        serial: WECHAT_SERIAL,
    };
    let verify = |body: &[u8]| {
        wechat::verify_signature(&headers, body, &keys, NOW, wechat::DEFAULT_TOLERANCE_SECS)
    };
    verify(body).unwrap();

    let mut group = c.benchmark_group("wechat");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("callback_verify_rsa2048", |b| {
        b.iter(|| verify(black_box(body)).unwrap())
    });
    group.finish();
}

fn wechat_resource_decrypt(c: &mut Criterion) {
    let key = wechat::ApiV3Key::new(WECHAT_API_V3_KEY).unwrap();
    let resource = wechat::parse_callback(FIXTURES_WECHAT_CALLBACK)
        .unwrap()
        .resource;
    assert_eq!(
        key.decrypt_resource(&resource).unwrap(),
        FIXTURES_WECHAT_TRANSACTION
    );

    let mut group = c.benchmark_group("wechat");
    group.throughput(Throughput::Bytes(FIXTURES_WECHAT_TRANSACTION.len() as u64));
    group.bench_function("resource_decrypt_aes256gcm", |b| {
        b.iter(|| key.decrypt_resource(black_box(&resource)).unwrap())
    });
    group.bench_function("resource_decrypt_and_parse_transaction", |b| {
        b.iter(|| key.decrypt_transaction(black_box(&resource)).unwrap())
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// Stripe, MultiSafepay (HMAC) and PromptPay (EMVCo QR)
// ---------------------------------------------------------------------------------------------

fn hmac_webhooks_verify(c: &mut Criterion) {
    let body = FIXTURES_WECHAT_TRANSACTION.as_bytes();

    let stripe_secret = "whsec_test_bench_secret";
    let stripe_header = stripe::sign(body, stripe_secret, NOW);
    let msp_key = "bench-api-key";
    let msp_header = multisafepay::sign(body, msp_key, NOW);
    stripe::verify(&stripe_header, body, stripe_secret, NOW, 300).unwrap();
    multisafepay::verify(&msp_header, body, msp_key, NOW, 600).unwrap();

    let mut group = c.benchmark_group("hmac_webhooks");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("stripe_verify", |b| {
        b.iter(|| stripe::verify(black_box(&stripe_header), body, stripe_secret, NOW, 300).unwrap())
    });
    group.bench_function("multisafepay_verify", |b| {
        b.iter(|| multisafepay::verify(black_box(&msp_header), body, msp_key, NOW, 600).unwrap())
    });
    group.finish();
}

fn promptpay_build(c: &mut Criterion) {
    let recipient = promptpay::Recipient::Mobile("0812345678");
    promptpay::build(&recipient, Some(69_900)).unwrap();
    c.bench_function("promptpay/build_dynamic_qr", |b| {
        b.iter(|| promptpay::build(black_box(&recipient), black_box(Some(69_900))).unwrap())
    });
}

criterion_group!(
    rsa_and_aead,
    alipay_notify_verify,
    wechat_callback_verify,
    wechat_resource_decrypt
);
criterion_group!(other_channels, hmac_webhooks_verify, promptpay_build);
criterion_main!(rsa_and_aead, other_channels);
