//! The pages over plain HTTP (no browser): the pay page's size, self-containment and CSP,
//! CSRF refusals, logins and roles, coded error pages, and the analytics API the dashboard
//! draws from. Page load times on loopback are printed for `docs/performance.md`.

mod common;

use common::{LastMileUser, TestServer};
use ipay_gateway::pages::CSP;
use reqwest::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, LOCATION};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::{Duration, Instant};

const ADMIN: &str = "admin-token-for-pages-http-0123456789";

async fn server() -> TestServer {
    common::start_with(|c| {
        c.admin.token = ADMIN.into();
        c.lastmile.sessions.pay_base_url = String::new();
    })
    .await
}

/// A client that does not follow redirects (to see them).
fn plain() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn session(srv: &TestServer, u: &LastMileUser) -> (String, String) {
    let order = json!({
        "customer": {"name": "Marie Curie",
            "address": {"line1": "1 Rue de Rivoli", "city": "Paris", "postal_code": "75001", "country": "FR"}},
        "items": [{"sku": "LIVRE", "name": "Livre", "qty": 1, "unit_price": 123_450}],
        "amount": {"value": 123_450, "currency": "EUR"},
        "carrier_code": "DHL",
        "ipay_flag": true
    });
    let r = srv.post("/api/orders", &u.token, order).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let oid = r.body["id"].as_str().unwrap();
    let r = srv
        .call(
            Method::POST,
            &format!("/api/orders/{oid}/create-session"),
            Some(&u.token),
            None,
        )
        .await;
    let token = r.body["pay_url"].as_str().unwrap().rsplit("/pay/").next();
    (
        r.body["id"].as_str().unwrap().to_string(),
        token.unwrap().to_string(),
    )
}

async fn get_text(
    srv: &TestServer,
    path: &str,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let r = plain()
        .get(format!("{}{path}", srv.base))
        .send()
        .await
        .unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    (status, headers, r.text().await.unwrap())
}

#[tokio::test]
async fn the_pay_page_is_small_self_contained_localised_and_under_a_strict_csp() {
    let srv = server().await;
    let u = srv.lastmile_merchant("Librairie Curie").await;
    let (_, token) = session(&srv, &u).await;
    // A pending payment: the page carries its QR code inline.
    let r = srv
        .call(
            Method::POST,
            &format!("/api/session/{token}/start-payment"),
            None,
            Some(json!({"channel": "sandbox"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    let (status, headers, html) = get_text(&srv, &format!("/pay/{token}?lang=fr")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[CONTENT_SECURITY_POLICY], CSP);
    assert!(
        headers[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(html.contains("<html lang=\"fr\">"));
    assert!(
        html.contains("1\u{202f}234,50\u{a0}€"),
        "French money format"
    );
    assert!(
        html.contains("data:image/svg+xml;base64,"),
        "inline QR code"
    );
    // Nothing from elsewhere, nothing inline that the CSP would have to allow.
    for banned in ["src=\"http", "href=\"http", "<script>", "style=", "onclick"] {
        assert!(!html.contains(banned), "pay page contains {banned}");
    }
    let mut total = html.len();
    for asset in ["/static/site.css", "/static/pay.js"] {
        let (s, h, body) = get_text(&srv, asset).await;
        assert_eq!(s, StatusCode::OK, "{asset}");
        assert_eq!(h[CONTENT_SECURITY_POLICY], CSP);
        total += body.len();
    }
    assert!(total <= 50 * 1024, "pay page weighs {total} bytes");
    println!("pay page with QR, stylesheet and script: {total} bytes");

    let (s, _, body) = get_text(&srv, &format!("/pay/{token}?lang=zh")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("支付您的包裹") && body.contains("€1,234.50"));
    srv.stop().await;
}

#[tokio::test]
async fn forms_without_a_matching_csrf_token_are_refused() {
    let srv = server().await;
    let u = srv.lastmile_merchant("Librairie Curie").await;
    let (_, token) = session(&srv, &u).await;
    let url = format!("{}/pay/{token}/start", srv.base);
    let csrf = "a".repeat(43);
    let post = |cookie: Option<String>, field: &str| {
        let mut rb = plain()
            .post(&url)
            .form(&[("csrf", field), ("channel", "sandbox")]);
        if let Some(c) = cookie {
            rb = rb.header(COOKIE, c);
        }
        rb.send()
    };
    let none = post(None, &csrf).await.unwrap();
    assert_eq!(none.status(), StatusCode::FORBIDDEN);
    assert!(none.text().await.unwrap().contains("csrf_invalid"));
    let other = post(Some(format!("ipay_csrf={}", "b".repeat(43))), &csrf)
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::FORBIDDEN);
    let ok = post(Some(format!("ipay_csrf={csrf}")), &csrf)
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    assert_eq!(ok.headers()[LOCATION], format!("/pay/{token}"));
    let view = srv
        .call(Method::GET, &format!("/api/session/{token}"), None, None)
        .await;
    assert_eq!(view.body["status"], "PAYMENT_PENDING");
    srv.stop().await;
}

#[tokio::test]
async fn pages_need_a_login_refuse_the_wrong_role_and_answer_errors_with_the_api_codes() {
    let srv = server().await;
    let u = srv.lastmile_merchant("Librairie Curie").await;
    let (s, h, _) = get_text(&srv, "/dashboard").await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h[LOCATION], "/login");

    let with = |path: &str, cookie: String| {
        plain()
            .get(format!("{}{path}", srv.base))
            .header(COOKIE, cookie)
            .send()
    };
    let bad_key = with("/dashboard", "ipay_session=k.sk_test_nope".into())
        .await
        .unwrap();
    assert_eq!(bad_key.status(), StatusCode::UNAUTHORIZED);
    assert!(bad_key.text().await.unwrap().contains("auth_invalid"));

    let merchant = format!("ipay_session=j.{}", u.token);
    let desk = with("/operator", merchant.clone()).await.unwrap();
    assert_eq!(desk.status(), StatusCode::FORBIDDEN);
    assert!(desk.text().await.unwrap().contains("role_forbidden"));
    let dash = with("/dashboard", merchant).await.unwrap();
    assert_eq!(dash.status(), StatusCode::OK);
    assert_eq!(dash.headers()[CONTENT_SECURITY_POLICY], CSP);

    let m = srv.merchant("key merchant").await;
    let by_key = with(
        "/dashboard",
        format!("ipay_session=k.{}", m.test_secret_key),
    )
    .await
    .unwrap();
    assert_eq!(by_key.status(), StatusCode::OK);
    assert!(by_key.text().await.unwrap().contains("key merchant"));

    let (s, _, body) = get_text(&srv, "/pay/not-a-token").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(body.contains("<code>resource_missing</code>") || body.contains("not_found"));
    let (s, _, _) = get_text(&srv, "/static/nope.js").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    srv.stop().await;
}

#[tokio::test]
async fn bad_page_input_gets_coded_errors_never_a_server_error() {
    let srv = server().await;
    let u = srv.lastmile_merchant("Librairie Curie").await;
    let operator = srv.lastmile_user_by("operator", ADMIN, None).await;
    let (sid, token) = session(&srv, &u).await;
    let csrf = "c".repeat(43);
    let cookie = format!("ipay_csrf={csrf}; ipay_session=j.{}", operator.token);
    let send = |path: String, body: String, ctype: &'static str| {
        plain()
            .post(format!("{}{path}", srv.base))
            .header(COOKIE, cookie.clone())
            .header(reqwest::header::CONTENT_TYPE, ctype)
            .body(body)
            .send()
    };
    let form = "application/x-www-form-urlencoded";
    let cases = [
        (
            format!("/pay/{token}/start"),
            format!("csrf={csrf}"),
            form,
            400,
            "parameter_invalid",
        ),
        (
            format!("/pay/{token}/start"),
            format!("csrf={csrf}&channel=bitcoin"),
            form,
            400,
            "",
        ),
        (
            format!("/pay/{token}/start"),
            "{}".into(),
            "application/json",
            415,
            "unsupported_media_type",
        ),
        (
            "/pay/nope/start".into(),
            format!("csrf={csrf}&channel=sandbox"),
            form,
            404,
            "",
        ),
        (
            format!("/operator/sessions/{sid}/parcel"),
            format!("csrf={csrf}&status=FLYING"),
            form,
            400,
            "",
        ),
        (
            format!("/operator/sessions/{sid}/parcel"),
            format!("csrf={csrf}&status=DELIVERED"),
            form,
            409,
            "",
        ),
        (
            "/operator/sessions/ps_nope/unlock".into(),
            format!("csrf={csrf}"),
            form,
            404,
            "",
        ),
        (
            "/login".into(),
            format!("csrf={csrf}&email=x%40y.z&password=wrongwrongwrong"),
            form,
            401,
            "",
        ),
        (
            "/login".into(),
            format!("csrf={csrf}&api_key=sk_test_nope"),
            form,
            401,
            "auth_invalid",
        ),
        ("/login".into(), "%%%".into(), form, 400, ""),
    ];
    for (path, body, ctype, status, code) in cases {
        let r = send(path.clone(), body.clone(), ctype).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{path} {body}");
        let text = r.text().await.unwrap();
        assert!(text.contains(code), "{path} {body}: {text}");
    }
    let big = format!("csrf={csrf}&channel={}", "x".repeat(2 * 1024 * 1024));
    let r = send(format!("/pay/{token}/start"), big, form)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let (s, _, _) = get_text(&srv, &format!("/pay/{token}?lang=%FF%FE")).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "an unknown language falls back to English"
    );
    srv.stop().await;
}

#[tokio::test]
async fn analytics_report_revenue_and_success_rates_per_channel_from_the_ledger() {
    let srv = server().await;
    let m = srv.merchant("analytics merchant").await;
    let key = m.test_secret_key.clone();
    let svc = srv.active_service(&key).await;
    for (value, succeed) in [(1_000, true), (500, true), (700, false)] {
        let i = srv.create_intent(&key, &svc, value).await;
        let id = i["id"].as_str().unwrap();
        let action = if succeed { "succeed" } else { "fail" };
        let r = srv
            .call(
                Method::POST,
                &format!("/v1/sandbox/payment-intents/{id}/{action}"),
                Some(&key),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    srv.create_intent(&key, &svc, 300).await; // still pending

    let r = srv.get("/v1/analytics/channels?period=today", &key).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["intents"], 4);
    assert_eq!(
        r.body["gross"],
        json!([{"value": 1_500, "currency": "EUR"}])
    );
    let c = &r.body["channels"][0];
    assert_eq!(c["channel"], "sandbox");
    assert_eq!(c["succeeded"], 2);
    assert_eq!(c["failed"], 1);
    assert_eq!(c["pending"], 1);
    assert_eq!(c["success_rate_bps"], 6_666);
    assert_eq!(c["errors"][0]["count"], 1);
    assert_eq!(c["net"], json!([{"value": 1_500, "currency": "EUR"}]));

    // Another day: today is empty, this month (or the last) still holds them.
    srv.clock.advance_ms(86_400_000);
    let r = srv.get("/v1/analytics/channels", &key).await;
    assert_eq!(r.body["intents"], 0);
    assert_eq!(r.body["channels"], json!([]));

    let bad = srv.get("/v1/analytics/channels?period=year", &key).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.code(), "parameter_invalid");
    let unknown = srv.get("/v1/analytics/channels?days=3", &key).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    let anon = srv
        .call(Method::GET, "/v1/analytics/channels", None, None)
        .await;
    assert_eq!(anon.status, StatusCode::UNAUTHORIZED);
    let doc = srv.call(Method::GET, "/openapi.json", None, None).await;
    assert!(doc.body["paths"]["/v1/analytics/channels"]["get"].is_object());
    srv.stop().await;
}

/// Reads an SSE body until `needle` has arrived (bounded).
async fn read_until(r: &mut reqwest::Response, seen: &mut String, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, r.chunk()).await;
        let chunk = chunk.unwrap_or_else(|_| panic!("no {needle} in {seen}"));
        let bytes = chunk.unwrap().expect("stream ended");
        seen.push_str(&String::from_utf8_lossy(&bytes));
    }
}

#[tokio::test]
async fn an_api_key_dashboard_streams_the_engines_events_live() {
    let srv = server().await;
    let m = srv.merchant("key merchant").await;
    let key = m.test_secret_key.clone();
    let svc = srv.active_service(&key).await;
    let r = plain()
        .get(format!("{}/dashboard/feed", srv.base))
        .header(COOKIE, format!("ipay_session=k.{key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut r = r;
    let mut seen = String::new();
    read_until(&mut r, &mut seen, ": ready").await;
    let i = srv.create_intent(&key, &svc, 4_200).await;
    let id = i["id"].as_str().unwrap();
    let ok = srv
        .call(
            Method::POST,
            &format!("/v1/sandbox/payment-intents/{id}/succeed"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    read_until(&mut r, &mut seen, "event: payment_intent.succeeded").await;
    let all = seen;
    let created = all.find("event: payment_intent.created").unwrap();
    let succeeded = all.find("event: payment_intent.succeeded").unwrap();
    assert!(created < succeeded, "oldest first: {all}");
    assert!(all.contains(id));
    drop(r); // an open stream would hold the server's graceful stop
    srv.stop().await;
}

/// Loopback load times of each page (median of 20), printed for docs/performance.md; the
/// bound asserted is loose on purpose (a busy CI box), the target lives in the docs.
#[tokio::test]
async fn pages_load_quickly_on_loopback() {
    let srv = server().await;
    let u = srv.lastmile_merchant("Librairie Curie").await;
    let (_, token) = session(&srv, &u).await;
    let cookie = format!("ipay_session=j.{}", u.token);
    let client = plain();
    for path in [
        format!("/pay/{token}"),
        "/login".into(),
        "/dashboard".into(),
    ] {
        let mut times = Vec::new();
        for _ in 0..20 {
            let started = Instant::now();
            let r = client
                .get(format!("{}{path}", srv.base))
                .header(COOKIE, &cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            r.bytes().await.unwrap();
            times.push(started.elapsed());
        }
        times.sort();
        let median = times[times.len() / 2];
        println!(
            "{path}: median {median:?}, max {:?}",
            times[times.len() - 1]
        );
        assert!(median < Duration::from_secs(2), "{path}: {median:?}");
    }
    srv.stop().await;
}
