//! Channel cryptography on the engine's hottest path: verifying what payment channels send us
//! (Alipay notifies, WeChat Pay callbacks, Stripe and MultiSafepay webhooks), decrypting WeChat
//! Pay resources, building PromptPay QR payloads, and whole `ChannelAdapter::verify_callback`
//! calls. Keys and messages are the test fixtures of `ipay-adapters`.
//!
//! The global allocator counts allocations; each group first prints `allocs/op` for what it
//! measures (one relaxed atomic add per allocation, noise next to what is measured here).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ipay_adapters::alipay::{AlipayAdapter, AlipayCredentials};
use ipay_adapters::http::{HttpClient, HttpTimeouts};
use ipay_adapters::stripe::{METADATA_KEY, StripeAdapter, StripeCredentials};
use ipay_adapters::{alipay, multisafepay, promptpay, rsa2, stripe, wechat};
use ipay_engine::channel::{ChannelAdapter, InboundCallback};
use ipay_engine::clock::{SystemClock, Timestamp};
use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// mimalloc, counting allocations (including reallocations).
struct CountingMimalloc;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static MIMALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

// SAFETY: every call is forwarded unchanged to mimalloc, which upholds `GlobalAlloc`'s contract.
unsafe impl GlobalAlloc for CountingMimalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { MIMALLOC.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { MIMALLOC.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { MIMALLOC.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { MIMALLOC.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingMimalloc = CountingMimalloc;

/// Prints how many allocations one call of `f` makes (averaged over a few calls).
fn report_allocations<R>(name: &str, mut f: impl FnMut() -> R) {
    const CALLS: u64 = 64;
    black_box(f());
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..CALLS {
        black_box(f());
    }
    let per_call = (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / CALLS as f64;
    eprintln!("allocs/op {name}: {per_call}");
}

const FIXTURES_ALIPAY_PUBLIC: &str =
    include_str!("../../adapters/tests/fixtures/alipay/alipay_public_key.pem");
const FIXTURES_ALIPAY_APP_PRIVATE: &str =
    include_str!("../../adapters/tests/fixtures/alipay/app_private_key.pem");
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

/// The RSA2 primitive alone, on the Alipay notify fixture (its signed string and `sign`):
/// `ring` over the message (the new path) against the `rsa` crate over a SHA-256 digest (the
/// path `alipay` and `wechat` still call through `verify_digest`).
fn rsa2_verify(c: &mut Criterion) {
    let params = alipay::parse_form(FIXTURES_ALIPAY_NOTIFY).unwrap();
    let message = alipay::string_to_sign(&params, alipay::SignScope::Notify).unwrap();
    let sign = params.iter().find(|(k, _)| k == "sign").unwrap().1.clone();
    let key = rsa2::PublicKey::from_pem(FIXTURES_ALIPAY_PUBLIC).unwrap();
    let message = message.as_bytes();
    key.verify(message, &sign).unwrap();
    key.verify_digest(rsa2::digest_of(message), &sign).unwrap();
    let (head, tail) = message.split_at(message.len() / 2);
    report_allocations("rsa2/verify_ring", || key.verify(message, &sign));
    report_allocations("rsa2/verify_parts_ring", || {
        key.verify_parts([head, tail], &sign)
    });
    report_allocations("rsa2/verify_digest_rsa_crate", || {
        key.verify_digest(rsa2::digest_of(message), &sign)
    });

    let mut group = c.benchmark_group("rsa2");
    group.bench_function("verify_ring", |b| {
        b.iter(|| key.verify(black_box(message), &sign).unwrap())
    });
    group.bench_function("verify_parts_ring", |b| {
        b.iter(|| key.verify_parts(black_box([head, tail]), &sign).unwrap())
    });
    group.bench_function("verify_digest_rsa_crate", |b| {
        b.iter(|| {
            key.verify_digest(rsa2::digest_of(black_box(message)), &sign)
                .unwrap()
        })
    });
    group.finish();
}

fn alipay_notify_verify(c: &mut Criterion) {
    let key = alipay::AlipayPublicKey::from_pem(FIXTURES_ALIPAY_PUBLIC).unwrap();
    let params = alipay::parse_form(FIXTURES_ALIPAY_NOTIFY).unwrap();
    alipay::verify_notify(&params, &key).unwrap();

    report_allocations("alipay/notify_verify_rsa2", || {
        alipay::verify_notify(&params, &key)
    });
    report_allocations("alipay/notify_form_decode_and_verify", || {
        alipay::verify_notify_form(FIXTURES_ALIPAY_NOTIFY, &key)
    });

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
    // The whole callback path: signature, then the envelope, then the AEAD resource.
    let api_v3_key = wechat::ApiV3Key::new(WECHAT_API_V3_KEY).unwrap();
    let verify_and_decrypt = |body: &str| {
        verify(body.as_bytes())?;
        let notification = wechat::parse_callback(body)?;
        api_v3_key.decrypt_transaction(&notification.resource)
    };
    verify_and_decrypt(FIXTURES_WECHAT_CALLBACK).unwrap();
    // What the signature check costs on `ring`, over the same `timestamp\nnonce\nbody\n`.
    let platform_pub = rsa2::PublicKey::from_pem(FIXTURES_WECHAT_PLATFORM_PUB).unwrap();
    let parts = [
        timestamp.as_bytes(),
        b"\n",
        nonce.as_bytes(),
        b"\n",
        body,
        b"\n",
    ];
    platform_pub.verify_parts(parts, &signature).unwrap();
    report_allocations("wechat/callback_verify_rsa2048", || verify(body));
    report_allocations("wechat/callback_verify_and_decrypt", || {
        verify_and_decrypt(FIXTURES_WECHAT_CALLBACK)
    });
    report_allocations("wechat/callback_signature_ring_parts", || {
        platform_pub.verify_parts(parts, &signature)
    });

    let mut group = c.benchmark_group("wechat");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("callback_verify_rsa2048", |b| {
        b.iter(|| verify(black_box(body)).unwrap())
    });
    group.bench_function("callback_verify_and_decrypt", |b| {
        b.iter(|| verify_and_decrypt(black_box(FIXTURES_WECHAT_CALLBACK)).unwrap())
    });
    group.bench_function("callback_signature_ring_parts", |b| {
        b.iter(|| {
            platform_pub
                .verify_parts(black_box(parts), &signature)
                .unwrap()
        })
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

    report_allocations("hmac_webhooks/stripe_verify", || {
        stripe::verify(&stripe_header, body, stripe_secret, NOW, 300)
    });
    report_allocations("hmac_webhooks/multisafepay_verify", || {
        multisafepay::verify(&msp_header, body, msp_key, NOW, 600)
    });

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
    report_allocations("promptpay/build_dynamic_qr", || {
        promptpay::build(&recipient, Some(69_900))
    });
    c.bench_function("promptpay/build_dynamic_qr", |b| {
        b.iter(|| promptpay::build(black_box(&recipient), black_box(Some(69_900))).unwrap())
    });
}

// ---------------------------------------------------------------------------------------------
// Whole adapters: `ChannelAdapter::verify_callback`, as `POST /callbacks/{channel}` calls it
// ---------------------------------------------------------------------------------------------

const INTENT_ID: &str = "pi_01JWQ8Z6Q0V3R2K9M5N7P4T1XB";

/// A callback as the gateway hands it over: `pairs` as headers, `body` verbatim.
fn inbound(channel: &str, pairs: &[(&str, &str)], body: &[u8]) -> InboundCallback {
    InboundCallback {
        method: "POST".into(),
        path: format!("/callbacks/{channel}"),
        query: None,
        headers: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.to_vec().into(),
    }
}

fn adapter_verify_callback(c: &mut Criterion) {
    let client = HttpClient::new(HttpTimeouts::default()).unwrap();

    let alipay_creds = AlipayCredentials::from_json(&serde_json::json!({
        "app_id": "2021000000000001",
        "private_key_pem": FIXTURES_ALIPAY_APP_PRIVATE,
        "alipay_public_key_pem": FIXTURES_ALIPAY_PUBLIC,
    }))
    .unwrap();
    let alipay = AlipayAdapter::new(
        alipay_creds,
        "http://127.0.0.1:9",
        "http://127.0.0.1:9/callbacks/alipay",
        client.clone(),
        Arc::new(SystemClock),
    );
    let alipay_cb = inbound("alipay", &[], FIXTURES_ALIPAY_NOTIFY.as_bytes());
    let now = Timestamp(NOW * 1000);
    let notice = alipay.verify_callback(&alipay_cb, now).unwrap();
    assert_eq!(notice.intent_id.to_string(), INTENT_ID);

    let stripe_secret = "whsec_test_bench_secret_0123";
    let stripe_creds = StripeCredentials::from_json(&serde_json::json!({
        "secret_key": "sk_test_bench_0123456789",
        "webhook_secret": stripe_secret,
    }))
    .unwrap();
    let stripe_adapter = StripeAdapter::new(stripe_creds, "http://127.0.0.1:9", client);
    let stripe_body = serde_json::json!({
        "id": "evt_3QbenchAAAAAAAAAAAAAAAA",
        "object": "event",
        "type": "payment_intent.succeeded",
        "data": {"object": {
            "id": "pi_3QbenchAAAAAAAAAAAAAAAA",
            "object": "payment_intent",
            "amount": 6990,
            "amount_received": 6990,
            "currency": "usd",
            "metadata": {METADATA_KEY: INTENT_ID},
        }},
    })
    .to_string();
    let stripe_body = stripe_body.as_bytes();
    let stripe_cb = inbound(
        "stripe",
        &[(
            "stripe-signature",
            &stripe::sign(stripe_body, stripe_secret, NOW),
        )],
        stripe_body,
    );
    stripe_adapter.verify_callback(&stripe_cb, now).unwrap();

    report_allocations("adapter/alipay_verify_callback", || {
        alipay.verify_callback(&alipay_cb, now)
    });
    report_allocations("adapter/stripe_verify_callback", || {
        stripe_adapter.verify_callback(&stripe_cb, now)
    });

    let mut group = c.benchmark_group("adapter");
    group.bench_function("alipay_verify_callback", |b| {
        b.iter(|| alipay.verify_callback(black_box(&alipay_cb), now).unwrap())
    });
    group.bench_function("stripe_verify_callback", |b| {
        b.iter(|| {
            stripe_adapter
                .verify_callback(black_box(&stripe_cb), now)
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(
    rsa_and_aead,
    rsa2_verify,
    alipay_notify_verify,
    wechat_callback_verify,
    wechat_resource_decrypt
);
criterion_group!(other_channels, hmac_webhooks_verify, promptpay_build);
criterion_group!(adapters, adapter_verify_callback);
criterion_main!(rsa_and_aead, other_channels, adapters);
