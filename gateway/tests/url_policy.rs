//! The outbound URL policy over real HTTP: webhook endpoints and manifest `endpoint`s that point
//! inside (loopback, private, link-local, metadata, odd address spellings, credentials) are
//! refused at creation with 400 `url_not_allowed` naming the parameter; the operator allow-list
//! and the development loopback switch let through exactly what they name.

mod common;

use reqwest::StatusCode;
use serde_json::json;

/// Every URL the security review got accepted, plus the spellings that reach the same places.
const REFUSED: [&str; 24] = [
    "https://169.254.169.254/latest/meta-data",
    "https://10.0.0.1/",
    "https://[::1]/",
    "https://localhost/",
    "https://0.0.0.0/",
    "https://[::ffff:169.254.169.254]/",
    "https://2852039166/",
    "https://0xa9fea9fe/",
    "https://metadata.google.internal/",
    "https://0251.0376.0251.0376/",
    "https://10.1/",
    "https://127.0.0.1:8443/",
    "https://172.20.0.1/",
    "https://192.168.0.10/",
    "https://100.64.1.1/",
    "https://[fe80::1]/",
    "https://[fd12:3456::1]/",
    "https://224.0.0.251/",
    "https://[::]/",
    "https://255.255.255.255/",
    "https://[::ffff:a9fe:a9fe]/",
    "https://hooks.localhost/",
    "https://user:pass@hooks.example.com/",
    "https://token@hooks.example.com/",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_webhook_and_manifest_urls_are_refused_with_url_not_allowed() {
    let ts = common::start().await;
    let m = ts.merchant("Ssrf").await;
    let key = m.test_secret_key.clone();
    for url in REFUSED {
        let r = ts
            .post("/v1/webhook-endpoints", &key, json!({ "url": url }))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{url}: {:?}", r.body);
        assert_eq!(r.code(), "url_not_allowed", "{url}: {:?}", r.body);
        assert_eq!(r.body["error"]["param"], "url", "{url}");

        let r = ts
            .post(
                "/v1/services",
                &key,
                json!({"name": "svc", "accepted_channels": ["sandbox"], "endpoint": url}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{url}: {:?}", r.body);
        assert_eq!(r.code(), "url_not_allowed", "{url}: {:?}", r.body);
        assert_eq!(r.body["error"]["param"], "endpoint", "{url}");
    }
    // Public hosts are still fine.
    let ok = ts
        .post(
            "/v1/webhook-endpoints",
            &key,
            json!({"url": "https://hooks.example.com/ipay"}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{:?}", ok.body);
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_allow_list_admits_only_the_hosts_it_names() {
    let ts = common::start_with(|c| {
        c.webhooks.allowed_private_hosts = vec![
            "10.20.0.0/16".to_string(),
            "hooks.corp.internal".to_string(),
        ];
    })
    .await;
    let m = ts.merchant("Corp").await;
    let key = m.test_secret_key.clone();
    for url in ["https://10.20.3.4/hook", "https://hooks.corp.internal/hook"] {
        let r = ts
            .post("/v1/webhook-endpoints", &key, json!({ "url": url }))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{url}: {:?}", r.body);
    }
    let r = ts
        .post(
            "/v1/webhook-endpoints",
            &key,
            json!({"url": "https://10.21.0.1/hook"}),
        )
        .await;
    assert_eq!(r.code(), "url_not_allowed", "{:?}", r.body);
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_loopback_mode_allows_loopback_but_nothing_else_inside() {
    let ts = common::start_with(|c| c.webhooks.allow_insecure_loopback = true).await;
    let m = ts.merchant("Dev").await;
    let key = m.test_secret_key.clone();
    for url in [
        "http://127.0.0.1:9000/hook",
        "http://localhost:9000/hook",
        "http://[::1]:9000/hook",
    ] {
        let r = ts
            .post("/v1/webhook-endpoints", &key, json!({ "url": url }))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{url}: {:?}", r.body);
    }
    for url in [
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.1/",
        "https://metadata.google.internal/",
        "https://[::ffff:127.0.0.1]/",
    ] {
        let r = ts
            .post("/v1/webhook-endpoints", &key, json!({ "url": url }))
            .await;
        assert_eq!(r.code(), "url_not_allowed", "{url}: {:?}", r.body);
    }
    ts.stop().await;
}
