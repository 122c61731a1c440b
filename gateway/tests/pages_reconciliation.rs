//! Reconciliation downloads from the dashboard over plain HTTP: with only the login cookie, a
//! day's report and a range's export come back as attachments identical to the `/v1` routes'
//! files, and bad input gets the API's status and error code.

mod common;

use common::TestServer;
use ipay_engine::settlement::SettlementConfig;
use reqwest::header::{CONTENT_DISPOSITION, CONTENT_TYPE, COOKIE, LOCATION};
use reqwest::{Method, StatusCode};
use serde_json::json;

async fn server() -> TestServer {
    let ts = common::start().await;
    let cfg = SettlementConfig {
        run_interval_secs: 0,
        ..SettlementConfig::default()
    };
    ts.engine.configure_settlement(cfg).await.unwrap();
    ts
}

/// A client that does not follow redirects (to see them).
fn plain() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Two paid sandbox intents settling in USD.
async fn pay_twice(ts: &TestServer, key: &str) {
    let r = ts
        .post("/v1/services", key, json!({"name": "downloads", "accepted_channels": ["sandbox"], "settlement_currency": "USD"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let svc = r.body["id"].as_str().unwrap().to_string();
    let path = format!("/v1/services/{svc}/activate");
    let a = ts.call(Method::PATCH, &path, Some(key), None).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    for value in [699, 12_345] {
        let r = ts.post("/v1/payment-intents", key, json!({"service_id": svc, "amount": {"value": value, "currency": "CNY"}, "channel": "sandbox"})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let id = r.body["id"].as_str().unwrap();
        let path = format!("/v1/sandbox/payment-intents/{id}/succeed");
        let s = ts.post(&path, key, json!({})).await;
        assert_eq!(s.status, StatusCode::OK, "{:?}", s.body);
    }
}

/// Status, headers and body of `GET path`, with an API key or a dashboard cookie.
async fn fetch(
    ts: &TestServer,
    path: &str,
    key: Option<&str>,
    cookie: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut rb = plain().get(format!("{}{path}", ts.base));
    if let Some(k) = key {
        rb = rb.bearer_auth(k);
    }
    if let Some(c) = cookie {
        rb = rb.header(COOKIE, c);
    }
    let r = rb.send().await.unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    (status, headers, r.text().await.unwrap())
}

fn today(ts: &TestServer) -> String {
    use ipay_engine::clock::Clock;
    ipay_engine::settlement::day_of(ts.clock.now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logged_in_merchant_downloads_the_same_reports_as_the_api_gives() {
    let ts = server().await;
    let m = ts.merchant("Downloads").await;
    let key = m.test_secret_key.as_str();
    pay_twice(&ts, key).await;
    let cookie = format!("ipay_session=k.{key}");
    let date = today(&ts);

    let (s, _, page) = fetch(&ts, "/dashboard", None, Some(&cookie)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        page.contains("action=\"/dashboard/reconciliation\""),
        "{page}"
    );
    assert!(page.contains(&format!("id=\"recon-date\" name=\"date\" value=\"{date}\"")));

    let day = format!("reconciliation?date={date}&format=csv");
    let (s, h, api) = fetch(&ts, &format!("/v1/{day}"), Some(key), None).await;
    assert_eq!(s, StatusCode::OK, "{api}");
    let (s, h2, mine) = fetch(&ts, &format!("/dashboard/{day}"), None, Some(&cookie)).await;
    assert_eq!(s, StatusCode::OK, "{mine}");
    let header = |t: &str| t.lines().next().unwrap_or_default().to_string();
    assert!(header(&api).starts_with("date,payment_intent_id,"), "{api}");
    assert_eq!(header(&mine), header(&api));
    assert_eq!(mine, api, "the same file");
    assert_eq!(mine.lines().count(), 3, "a header and two payments: {mine}");
    assert_eq!(h2[CONTENT_TYPE], h[CONTENT_TYPE]);
    assert_eq!(
        h2[CONTENT_DISPOSITION],
        format!("attachment; filename=\"reconciliation-{date}.csv\"").as_str()
    );

    let json_day = format!("/dashboard/reconciliation?date={date}&format=json");
    let (s, h, body) = fetch(&ts, &json_day, None, Some(&cookie)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        h[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["transactions"].as_array().unwrap().len(), 2, "{v}");

    // The range form sends an empty channel field when none is typed: every channel.
    let range = format!("start={date}&end={date}&format=csv");
    let (_, _, api) = fetch(
        &ts,
        &format!("/v1/reconciliation/export?{range}"),
        Some(key),
        None,
    )
    .await;
    let path = format!("/dashboard/reconciliation/export?{range}&channels=");
    let (s, h, mine) = fetch(&ts, &path, None, Some(&cookie)).await;
    assert_eq!(s, StatusCode::OK, "{mine}");
    assert_eq!(mine, api);
    assert_eq!(mine.lines().count(), 3, "{mine}");
    assert!(h[CONTENT_DISPOSITION].to_str().unwrap().contains(".csv"));
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_download_requests_get_the_apis_codes_and_need_a_merchant_login() {
    let ts = server().await;
    let m = ts.merchant("Downloads").await;
    let key = m.test_secret_key.as_str();
    let cookie = format!("ipay_session=k.{key}");
    let (s, h, _) = fetch(&ts, "/dashboard/reconciliation?date=2026-01-01", None, None).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h[LOCATION], "/login");
    let cases = [
        "/dashboard/reconciliation",
        "/dashboard/reconciliation?date=2026-13-45",
        "/dashboard/reconciliation?date=2999-01-01",
        "/dashboard/reconciliation?date=2026-01-01&format=xml",
        "/dashboard/reconciliation?date=2026-01-01&bogus=1",
        "/dashboard/reconciliation/export?start=2026-01-01",
        "/dashboard/reconciliation/export?start=2020-01-01&end=2026-01-01",
        "/dashboard/reconciliation/export?start=2026-01-01&end=2026-01-01&channels=carrier-pigeon",
    ];
    for path in cases {
        let v1 = path.replace("/dashboard/", "/v1/");
        let api = ts.get(&v1, key).await;
        let (s, h, page) = fetch(&ts, path, None, Some(&cookie)).await;
        assert_eq!(s, api.status, "{path}: {page}");
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}");
        assert!(h[CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
        assert!(
            page.contains(api.code()),
            "{path}: {} not in {page}",
            api.code()
        );
    }
    ts.stop().await;
}
