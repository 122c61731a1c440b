//! Retention over the real HTTP API, on the test server's manual clock: an idempotency key
//! expires after `limits.idempotency_ttl_hours`, and webhook attempt logs are purged after
//! `webhooks.retention_days` by the background janitor.

mod common;

use common::PyReceiver;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const HOUR: i64 = 3_600_000;

async fn create(
    s: &common::TestServer,
    key: &str,
    svc: &str,
    idem: &str,
    value: i64,
) -> common::Resp {
    let body = json!({"service_id": svc, "amount": {"value": value, "currency": "EUR"}, "channel": "sandbox"});
    s.call_with(
        Method::POST,
        "/v1/payment-intents",
        Some(key),
        Some(body),
        &[("Idempotency-Key", idem)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_expires_after_its_ttl() {
    let s = common::start().await;
    let m = s.merchant("Expiring").await;
    let key = m.test_secret_key.clone();
    let svc = s.active_service(&key).await;
    let first = create(&s, &key, &svc, "order-1", 500).await;
    assert_eq!(first.status, StatusCode::CREATED);
    // Within 24 h the key is bound to its first request.
    s.clock.advance_ms(24 * HOUR - 1_000);
    let early = create(&s, &key, &svc, "order-1", 501).await;
    assert_eq!(early.code(), "idempotency_key_reused");
    let replay = create(&s, &key, &svc, "order-1", 500).await;
    assert_eq!(replay.body["id"], first.body["id"]);
    // After it, the key is free: the same key runs a new request.
    s.clock.advance_ms(2_000);
    let late = create(&s, &key, &svc, "order-1", 501).await;
    assert_eq!(late.status, StatusCode::CREATED, "{:?}", late.body);
    assert_ne!(late.body["id"], first.body["id"]);
    assert_eq!(late.headers["idempotent-replayed"], "false");
    s.stop().await;
}

fn rows(b: &Value) -> usize {
    b["data"].as_array().map_or(0, |a| a.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_logs_are_purged_after_the_retention_period() {
    let s = common::start_with(|c| {
        c.webhooks.allow_insecure_loopback = true;
        c.webhooks.poll_interval_ms = 20;
        c.webhooks.retention_days = 3;
        c.webhooks.retention_sweep_ms = 1_000;
    })
    .await;
    let rx = PyReceiver::start();
    let m = s.merchant("Forgetful").await;
    let key = m.test_secret_key.clone();
    let ep = s
        .post(
            "/v1/webhook-endpoints",
            &key,
            json!({"url": format!("{}/ok", rx.base)}),
        )
        .await;
    assert_eq!(ep.status, StatusCode::CREATED, "{:?}", ep.body);
    let svc = s.active_service(&key).await;
    let pi = s.create_intent(&key, &svc, 900).await;
    let evt = s
        .get(
            &format!("/v1/events?object_id={}", pi["id"].as_str().unwrap()),
            &key,
        )
        .await
        .body["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let by_event = format!("/v1/webhooks/logs?event_id={evt}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while rows(&s.get(&by_event, &key).await.body) == 0 {
        assert!(Instant::now() < deadline, "the attempt was never logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The background janitor (every second here) purges the day once it is 3 days old.
    s.clock.advance_ms(4 * 24 * HOUR);
    let deadline = Instant::now() + Duration::from_secs(20);
    while rows(&s.get(&by_event, &key).await.body) > 0 {
        assert!(
            Instant::now() < deadline,
            "the attempt log was never purged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.stop().await;
}
