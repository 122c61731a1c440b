//! Last-mile payment sessions over real HTTP: the 18-digit reference, consumer pay page,
//! payment through the engine, parcel states, driver OTP with lock-out, isolation between
//! merchants and the SSE event stream.

mod common;

use common::{LastMileUser, TestServer};
use ipay_engine::AuthContext;
use ipay_engine::clock::Timestamp;
use ipay_engine::ids::{ApiKeyId, MerchantId};
use ipay_engine::model::{ApiKey, Permission};
use ipay_lastmile::reference::IpayReference;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

const ADMIN: &str = "admin-token-for-sessions-0123456789";

async fn server() -> TestServer {
    common::start_with(|c| {
        c.admin.token = ADMIN.into();
        c.lastmile.sessions.heartbeat_ms = 100;
    })
    .await
}

fn order_body(country: &str, carrier: &str, value: i64) -> Value {
    json!({
        "customer": {
            "name": "Jan de Vries",
            "address": {"line1": "Damrak 1", "city": "Amsterdam", "postal_code": "1012 LG", "country": country}
        },
        "items": [{"sku": "MUG", "name": "Mug", "qty": 1, "unit_price": value}],
        "amount": {"value": value, "currency": "EUR"},
        "carrier_code": carrier,
        "ipay_flag": true
    })
}

async fn order(srv: &TestServer, u: &LastMileUser, country: &str, carrier: &str) -> String {
    let r = srv
        .post("/api/orders", &u.token, order_body(country, carrier, 2_599))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

/// Creates a session for a new order; returns the create response.
async fn session(srv: &TestServer, u: &LastMileUser, country: &str, carrier: &str) -> Value {
    let oid = order(srv, u, country, carrier).await;
    let r = srv
        .call(
            Method::POST,
            &format!("/api/orders/{oid}/create-session"),
            Some(&u.token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    r.body
}

fn token_of(s: &Value) -> String {
    let url = s["pay_url"].as_str().unwrap();
    url.rsplit("/pay/").next().unwrap().to_string()
}

async fn consumer(srv: &TestServer, token: &str) -> common::Resp {
    srv.call(Method::GET, &format!("/api/session/{token}"), None, None)
        .await
}

async fn start_payment(srv: &TestServer, token: &str, body: Value) -> common::Resp {
    srv.call(
        Method::POST,
        &format!("/api/session/{token}/start-payment"),
        None,
        Some(body),
    )
    .await
}

/// Pays a session at once through the sandbox; returns the OTP the consumer now sees.
async fn pay(srv: &TestServer, s: &Value) -> String {
    let token = token_of(s);
    let r = start_payment(
        srv,
        &token,
        json!({"channel": "sandbox", "simulate": "succeed"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["status"], "PAID");
    r.body["otp"].as_str().unwrap().to_string()
}

async fn parcel(srv: &TestServer, token: &str, id: &str, status: &str) -> common::Resp {
    srv.post(
        &format!("/api/payment-sessions/{id}/parcel-status"),
        token,
        json!({ "status": status }),
    )
    .await
}

async fn verify(
    srv: &TestServer,
    driver: &LastMileUser,
    reference: &str,
    otp: &str,
) -> common::Resp {
    srv.post(
        "/api/driver/verify-otp",
        &driver.token,
        json!({"ipay_reference_18": reference, "otp_4": otp}),
    )
    .await
}

fn wrong(otp: &str) -> String {
    format!("{:04}", (otp.parse::<u32>().unwrap() + 1) % 10_000)
}

/// Settles an intent the way a PSP callback would: through the engine, not through
/// last-mile, so the session must notice on its own.
async fn settle_in_engine(srv: &TestServer, merchant: &str, intent: &str) {
    let m = MerchantId::parse(merchant).unwrap();
    let ctx = AuthContext {
        merchant_id: m,
        livemode: false,
        key: ApiKey {
            id: ApiKeyId::new_at(0),
            label: "test".into(),
            redacted: "test".into(),
            permissions: Permission::ALL.to_vec(),
            ip_whitelist: vec![],
            livemode: false,
            merchant_id: m,
            created: Timestamp(0),
            expires_at: Timestamp(i64::MAX / 2),
            revoked_at: None,
        },
    };
    srv.engine.sandbox_settle(&ctx, intent, true).await.unwrap();
}

#[tokio::test]
async fn whole_lifecycle_from_order_to_delivered() {
    let srv = server().await;
    let shop = srv.lastmile_merchant("Parcel Shop BV").await;
    let driver = srv.lastmile_user_by("driver", ADMIN, None).await;

    // Order → session: a valid 18-digit reference, a pay URL with a 256-bit token, a QR.
    let oid = order(&srv, &shop, "NL", "DHL").await;
    let path = format!("/api/orders/{oid}/create-session");
    let created = srv.call(Method::POST, &path, Some(&shop.token), None).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let s = created.body;
    let reference = s["ipay_reference_18"].as_str().unwrap().to_string();
    assert_eq!(reference.len(), 18);
    assert!(IpayReference::parse(&reference).is_ok());
    assert_eq!(s["status"], "CREATED");
    assert_eq!(s["parcel_status"], "AWAITING_PICKUP");
    assert!(s["pay_url"].as_str().unwrap().contains("/pay/"));
    assert_eq!(s["qr_payload"], s["pay_url"]);
    assert_eq!(token_of(&s).len(), 43);
    assert!(
        s["qr_png_data_url"]
            .as_str()
            .unwrap()
            .starts_with("data:image/png;base64,iVBOR")
    );
    assert!(s["qr_svg"].as_str().unwrap().contains("<svg"));
    let id = s["id"].as_str().unwrap().to_string();

    // A second create returns the same session.
    let again = srv.call(Method::POST, &path, Some(&shop.token), None).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["id"], id.as_str());
    let o = srv.get(&format!("/api/orders/{oid}"), &shop.token).await;
    assert_eq!(o.body["status"], "SESSION_CREATED");

    // The consumer sees the amount, not internals, and no OTP before paying.
    let token = token_of(&s);
    let c = consumer(&srv, &token).await;
    assert_eq!(c.status, StatusCode::OK, "{:?}", c.body);
    assert_eq!(c.body["amount"], 2_599);
    assert_eq!(c.body["merchant_name"], "Parcel Shop BV");
    assert!(c.body["otp"].is_null());
    for internal in [
        "id",
        "merchant_id",
        "order_id",
        "payment_intent",
        "pay_token",
        "otp_failures",
    ] {
        assert!(c.body.get(internal).is_none(), "consumer sees {internal}");
    }

    // Start a sandbox payment: pending, still no OTP.
    let started = start_payment(&srv, &token, json!({"channel": "sandbox"})).await;
    assert_eq!(started.status, StatusCode::OK, "{:?}", started.body);
    assert_eq!(started.body["status"], "PAYMENT_PENDING");
    assert_eq!(started.body["payment"]["channel"], "sandbox");
    assert!(started.body["otp"].is_null());

    // Driver cannot release an unpaid parcel.
    assert_eq!(
        parcel(&srv, &shop.token, &id, "PICKED_UP").await.status,
        StatusCode::OK
    );
    let early = verify(&srv, &driver, &reference, "0000").await;
    assert_eq!(early.status, StatusCode::CONFLICT);
    assert_eq!(early.code(), "session_not_paid");

    // The channel settles the engine intent; the session notices on its next read.
    let detail = srv
        .get(&format!("/api/payment-sessions/{id}"), &shop.token)
        .await;
    let intent = detail.body["payment_intent"].as_str().unwrap().to_string();
    settle_in_engine(&srv, shop.merchant_id.as_deref().unwrap(), &intent).await;
    let c = consumer(&srv, &token).await;
    assert_eq!(c.body["status"], "PAID");
    let otp = c.body["otp"].as_str().unwrap().to_string();
    assert_eq!(otp.len(), 4);
    let again = start_payment(&srv, &token, json!({"channel": "sandbox"})).await;
    assert_eq!(again.status, StatusCode::CONFLICT);

    // Door: one wrong code, then the right one releases and delivers the parcel.
    assert_eq!(
        parcel(&srv, &shop.token, &id, "IN_DELIVERY").await.status,
        StatusCode::OK
    );
    let bad = verify(&srv, &driver, &reference, &wrong(&otp)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.code(), "otp_incorrect");
    // Spaces between digit groups are fine for a person typing the reference.
    let grouped = s["ipay_reference_display"].as_str().unwrap();
    let ok = verify(&srv, &driver, grouped, &otp).await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    assert_eq!(ok.body["released"], true);
    assert_eq!(ok.body["session"]["status"], "RELEASED");
    assert_eq!(ok.body["session"]["parcel_status"], "DELIVERED");

    // The consumer no longer sees the used OTP; the order is delivered.
    let c = consumer(&srv, &token).await;
    assert_eq!(c.body["status"], "RELEASED");
    assert!(c.body["otp"].is_null());
    let o = srv.get(&format!("/api/orders/{oid}"), &shop.token).await;
    assert_eq!(o.body["status"], "DELIVERED");

    // The event log tells the whole story, attempts included, and never an OTP.
    let d = srv
        .get(&format!("/api/payment-sessions/{id}"), &shop.token)
        .await;
    let types: Vec<&str> = d.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    for t in [
        "session.created",
        "payment.started",
        "session.paid",
        "parcel.status_changed",
        "session.otp_verified",
        "parcel.delivered",
    ] {
        assert!(types.contains(&t), "{t} missing from {types:?}");
    }
    let attempts: Vec<&Value> = d.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "otp.attempt")
        .collect();
    let results: Vec<&str> = attempts
        .iter()
        .map(|e| e["detail"]["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["not_paid", "wrong", "correct"]);
    for a in &attempts {
        let keys: Vec<&String> = a["detail"].as_object().unwrap().keys().collect();
        assert!(!keys.iter().any(|k| k.contains("otp")), "{keys:?}");
    }
    srv.stop().await;
}

#[tokio::test]
async fn five_wrong_otps_lock_the_reference_until_an_operator_unlocks_it() {
    let srv = server().await;
    let shop = srv.lastmile_merchant("Lock Shop").await;
    let driver = srv.lastmile_user_by("driver", ADMIN, None).await;
    let operator = srv.lastmile_user_by("operator", ADMIN, None).await;
    let s = session(&srv, &shop, "NL", "POSTNL").await;
    let id = s["id"].as_str().unwrap();
    let reference = s["ipay_reference_18"].as_str().unwrap();
    let otp = pay(&srv, &s).await;
    assert_eq!(
        parcel(&srv, &shop.token, id, "PICKED_UP").await.status,
        StatusCode::OK
    );

    for left in (1..=4).rev() {
        let r = verify(&srv, &driver, reference, &wrong(&otp)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.code(), "otp_incorrect");
        let msg = r.body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&format!("{left} attempt")), "{msg}");
    }
    let fifth = verify(&srv, &driver, reference, &wrong(&otp)).await;
    assert_eq!(fifth.status, StatusCode::LOCKED);
    assert_eq!(fifth.code(), "otp_locked");
    // Locked means locked: even the right code is refused.
    let right = verify(&srv, &driver, reference, &otp).await;
    assert_eq!(right.status, StatusCode::LOCKED);

    // Only an operator may unlock.
    let path = format!("/api/payment-sessions/{id}/unlock-otp");
    let by_merchant = srv.call(Method::POST, &path, Some(&shop.token), None).await;
    assert_eq!(by_merchant.status, StatusCode::FORBIDDEN);
    let by_driver = srv
        .call(Method::POST, &path, Some(&driver.token), None)
        .await;
    assert_eq!(by_driver.status, StatusCode::FORBIDDEN);
    let unlocked = srv
        .call(Method::POST, &path, Some(&operator.token), None)
        .await;
    assert_eq!(unlocked.status, StatusCode::OK, "{:?}", unlocked.body);
    assert_eq!(unlocked.body["otp_locked"], false);
    assert_eq!(unlocked.body["otp_failures"], 0);

    let ok = verify(&srv, &driver, reference, &otp).await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);

    // Operators can read any merchant's session; the log holds every attempt.
    let d = srv
        .get(&format!("/api/payment-sessions/{id}"), &operator.token)
        .await;
    assert_eq!(d.status, StatusCode::OK);
    let events = d.body["events"].as_array().unwrap();
    let count = |t: &str| events.iter().filter(|e| e["type"] == t).count();
    assert_eq!(count("otp.attempt"), 7);
    assert_eq!(count("otp.locked"), 1);
    assert_eq!(count("otp.unlocked"), 1);
    srv.stop().await;
}

#[tokio::test]
async fn drivers_are_rate_limited_with_retry_after() {
    let srv = common::start_with(|c| {
        c.admin.token = ADMIN.into();
        c.lastmile.sessions.driver_attempts_per_minute = 3;
    })
    .await;
    let driver = srv.lastmile_user_by("driver", ADMIN, None).await;
    let other = srv.lastmile_user_by("driver", ADMIN, None).await;
    let reference = IpayReference::generate().to_string();
    for _ in 0..3 {
        let r = verify(&srv, &driver, &reference, "1234").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
    }
    let limited = verify(&srv, &driver, &reference, "1234").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.code(), "rate_limited");
    let secs: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
    // The limit is per driver.
    assert_eq!(
        verify(&srv, &other, &reference, "1234").await.status,
        StatusCode::NOT_FOUND
    );
    // Only drivers verify OTPs; references are checked for typos.
    let shop = srv.lastmile_merchant("Not A Driver").await;
    assert_eq!(
        verify(&srv, &shop, &reference, "1234").await.status,
        StatusCode::FORBIDDEN
    );
    let mut typo = reference.clone().into_bytes();
    typo.swap(3, 4);
    if typo[3] != typo[4] {
        let r = verify(&srv, &other, std::str::from_utf8(&typo).unwrap(), "1234").await;
        assert_eq!(r.code(), "reference_invalid", "{:?}", r.body);
    }
    srv.stop().await;
}

#[tokio::test]
async fn merchants_only_see_their_own_sessions() {
    let srv = server().await;
    let a = srv.lastmile_merchant("Shop A").await;
    let b = srv.lastmile_merchant("Shop B").await;
    let s = session(&srv, &a, "NL", "DHL").await;
    let id = s["id"].as_str().unwrap();

    assert_eq!(
        srv.get(&format!("/api/payment-sessions/{id}"), &b.token)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        parcel(&srv, &b.token, id, "PICKED_UP").await.status,
        StatusCode::NOT_FOUND
    );
    let list = srv.get("/api/payment-sessions", &b.token).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body["data"].as_array().unwrap().len(), 0);
    let oid = s["order_id"].as_str().unwrap();
    let steal = srv
        .call(
            Method::POST,
            &format!("/api/orders/{oid}/create-session"),
            Some(&b.token),
            None,
        )
        .await;
    assert_eq!(steal.status, StatusCode::NOT_FOUND);

    // A driver attached to merchant B cannot release merchant A's parcels.
    let b_driver = srv
        .lastmile_user_by("driver", ADMIN, b.merchant_id.as_deref())
        .await;
    let otp = pay(&srv, &s).await;
    parcel(&srv, &a.token, id, "PICKED_UP").await;
    let r = verify(
        &srv,
        &b_driver,
        s["ipay_reference_18"].as_str().unwrap(),
        &otp,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // A merchant may not ask for another merchant's list.
    let m = a.merchant_id.as_deref().unwrap();
    let r = srv
        .get(&format!("/api/payment-sessions?merchant_id={m}"), &b.token)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    srv.stop().await;
}

#[tokio::test]
async fn parcel_moves_only_forward_and_delivery_needs_the_otp() {
    let srv = server().await;
    let shop = srv.lastmile_merchant("Parcel Rules").await;
    let s = session(&srv, &shop, "BE", "BPOST").await;
    let id = s["id"].as_str().unwrap();
    let t = &shop.token;

    for skip in ["IN_DELIVERY", "DELIVERED"] {
        let r = parcel(&srv, t, id, skip).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{skip}");
        assert_eq!(r.code(), "invalid_state_transition");
    }
    assert_eq!(
        parcel(&srv, t, id, "picked_up").await.status,
        StatusCode::OK
    );
    let same = parcel(&srv, t, id, "PICKED_UP").await;
    assert_eq!(same.status, StatusCode::OK);
    assert_eq!(same.body["parcel_status"], "PICKED_UP");
    assert_eq!(
        parcel(&srv, t, id, "AWAITING_PICKUP").await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        parcel(&srv, t, id, "IN_DELIVERY").await.status,
        StatusCode::OK
    );
    assert_eq!(
        parcel(&srv, t, id, "PICKED_UP").await.status,
        StatusCode::CONFLICT
    );
    let undelivered = parcel(&srv, t, id, "DELIVERED").await;
    assert_eq!(undelivered.status, StatusCode::CONFLICT);
    assert_eq!(undelivered.code(), "otp_not_verified");
    let bad = parcel(&srv, t, id, "LOST").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.code(), "parameter_invalid");
    let missing = parcel(&srv, t, "ps_01J7XZ1A2B3C4D5E6F7G8H9JKM", "PICKED_UP").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    srv.stop().await;
}

#[tokio::test]
async fn sessions_list_filters_and_paginates() {
    let srv = server().await;
    let shop = srv.lastmile_merchant("Filter Shop").await;
    let s1 = session(&srv, &shop, "NL", "DHL").await;
    let _s2 = session(&srv, &shop, "NL", "DHL").await;
    let _s3 = session(&srv, &shop, "DE", "POSTNL").await;
    pay(&srv, &s1).await;
    let ids = |r: &common::Resp| -> Vec<String> {
        r.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    let q = |query: &str| format!("/api/payment-sessions?{query}");
    assert_eq!(ids(&srv.get(&q("limit=100"), &shop.token).await).len(), 3);
    assert_eq!(ids(&srv.get(&q("country=nl"), &shop.token).await).len(), 2);
    assert_eq!(
        ids(&srv.get(&q("carrier=POSTNL"), &shop.token).await).len(),
        1
    );
    let paid = srv.get(&q("status=PAID"), &shop.token).await;
    assert_eq!(ids(&paid), vec![s1["id"].as_str().unwrap().to_string()]);
    assert_eq!(ids(&srv.get(&q("psp=sandbox"), &shop.token).await).len(), 1);
    assert_eq!(
        ids(&srv
            .get(&q("payment_method=test&country=NL"), &shop.token)
            .await)
        .len(),
        1
    );
    assert_eq!(ids(&srv.get(&q("psp=stripe"), &shop.token).await).len(), 0);
    let bad = srv.get(&q("status=LOST"), &shop.token).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    // Pages of one, newest first, covering everything once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => q(&format!("limit=1&cursor={c}")),
            None => q("limit=1"),
        };
        let page = srv.get(&path, &shop.token).await;
        seen.extend(ids(&page));
        match page.body["pagination"]["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen, sorted);
    srv.stop().await;
}

#[tokio::test]
async fn consumer_endpoints_reject_unknown_tokens_and_bad_channels() {
    let srv = server().await;
    let shop = srv.lastmile_merchant("Consumer Shop").await;
    let s = session(&srv, &shop, "NL", "DHL").await;
    let token = token_of(&s);
    assert_eq!(consumer(&srv, "nope").await.status, StatusCode::NOT_FOUND);
    let r = start_payment(&srv, &token, json!({"channel": "bitcoin"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "channel_not_accepted");
    let r = start_payment(
        &srv,
        &token,
        json!({"channel": "sandbox", "simulate": "maybe"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // A failed payment returns the session to CREATED; the consumer can try again.
    let r = start_payment(
        &srv,
        &token,
        json!({"channel": "sandbox", "simulate": "fail"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["status"], "CREATED");
    assert!(r.body["otp"].is_null());
    let r = start_payment(
        &srv,
        &token,
        json!({"channel": "sandbox", "simulate": "succeed"}),
    )
    .await;
    assert_eq!(r.body["status"], "PAID");
    srv.stop().await;
}

/// A minimal SSE reader over a streaming HTTP response.
struct SseClient {
    resp: reqwest::Response,
    buf: String,
}

#[derive(Debug, Default, Clone)]
struct Sse {
    id: Option<String>,
    event: Option<String>,
    data: String,
    comment: Option<String>,
}

impl SseClient {
    async fn open(srv: &TestServer, query: &str, last_event_id: Option<&str>) -> SseClient {
        let mut rb = srv
            .http
            .get(format!("{}/api/events/stream?{query}", srv.base));
        if let Some(id) = last_event_id {
            rb = rb.header("Last-Event-ID", id);
        }
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        SseClient {
            resp,
            buf: String::new(),
        }
    }

    /// The next message (event or comment), waiting at most 10 s.
    async fn next(&mut self) -> Sse {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut m = Sse::default();
                for line in block.lines() {
                    if let Some(c) = line.strip_prefix(':') {
                        m.comment = Some(c.trim().to_string());
                    } else if let Some((k, v)) = line.split_once(':') {
                        let v = v.strip_prefix(' ').unwrap_or(v);
                        match k {
                            "id" => m.id = Some(v.to_string()),
                            "event" => m.event = Some(v.to_string()),
                            "data" => m.data.push_str(v),
                            _ => {}
                        }
                    }
                }
                return m;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.resp.chunk())
                .await
                .expect("no SSE message within 10 s")
                .unwrap()
                .expect("stream ended");
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next event, skipping heartbeats.
    async fn next_event(&mut self) -> Sse {
        loop {
            let m = self.next().await;
            if m.event.is_some() {
                return m;
            }
        }
    }
}

#[tokio::test]
async fn event_stream_delivers_own_events_heartbeats_and_resumes_after_last_event_id() {
    let srv = server().await;
    let a = srv.lastmile_merchant("Stream A").await;
    let b = srv.lastmile_merchant("Stream B").await;
    let mut a_stream = SseClient::open(&srv, &format!("token={}", a.token), None).await;
    let mut b_stream = SseClient::open(&srv, &format!("token={}", b.token), None).await;

    // Idle: a heartbeat comes first (interval shortened to 100 ms for the test).
    let hb = a_stream.next().await;
    assert_eq!(hb.comment.as_deref(), Some("heartbeat"), "{hb:?}");

    // A's order and session events reach A's stream, in order, with ids.
    let s = session(&srv, &a, "NL", "DHL").await;
    let order_created = a_stream.next_event().await;
    assert_eq!(order_created.event.as_deref(), Some("order.created"));
    let od: Value = serde_json::from_str(&order_created.data).unwrap();
    assert_eq!(od["type"], "order.created");
    assert_eq!(od["data"]["id"], s["order_id"]);
    assert_eq!(od["data"]["status"], "CREATED");
    let created = a_stream.next_event().await;
    assert_eq!(created.event.as_deref(), Some("session.created"));
    let data: Value = serde_json::from_str(&created.data).unwrap();
    assert_eq!(data["type"], "session.created");
    assert_eq!(data["data"]["id"], s["id"]);
    assert_eq!(data["data"]["ipay_reference_18"], s["ipay_reference_18"]);
    assert_eq!(data["data"]["qr_payload"], s["pay_url"]);
    let created_id = created.id.clone().unwrap();
    assert!(created_id.starts_with("evt_"));
    pay(&srv, &s).await;
    let paid = a_stream.next_event().await;
    assert_eq!(paid.event.as_deref(), Some("session.paid"));
    let paid_data: Value = serde_json::from_str(&paid.data).unwrap();
    assert!(paid_data["data"].get("otp").is_none(), "no OTP in events");

    // B's stream never carries A's events: its first event is B's own.
    let sb = session(&srv, &b, "DE", "DPD").await;
    let first_b = b_stream.next_event().await;
    let bd: Value = serde_json::from_str(&first_b.data).unwrap();
    assert_eq!(first_b.event.as_deref(), Some("order.created"));
    assert_eq!(bd["data"]["id"], sb["order_id"]);
    let second_b = b_stream.next_event().await;
    let bd: Value = serde_json::from_str(&second_b.data).unwrap();
    assert_eq!(bd["data"]["id"], sb["id"]);

    // Disconnect, miss an event, reconnect with Last-Event-ID: replay, then live.
    drop(a_stream);
    let s2 = session(&srv, &a, "NL", "DHL").await;
    let mut resumed = SseClient::open(&srv, &format!("token={}", a.token), Some(&created_id)).await;
    let r1 = resumed.next_event().await;
    assert_eq!(r1.id, paid.id, "replay starts right after Last-Event-ID");
    let r_order = resumed.next_event().await;
    assert_eq!(r_order.event.as_deref(), Some("order.created"));
    let r2 = resumed.next_event().await;
    assert_eq!(r2.event.as_deref(), Some("session.created"));
    let r2d: Value = serde_json::from_str(&r2.data).unwrap();
    assert_eq!(r2d["data"]["id"], s2["id"]);
    let s3 = session(&srv, &a, "NL", "DHL").await;
    let live_order = resumed.next_event().await;
    assert_eq!(live_order.event.as_deref(), Some("order.created"));
    let live = resumed.next_event().await;
    let ld: Value = serde_json::from_str(&live.data).unwrap();
    assert_eq!(
        ld["data"]["id"], s3["id"],
        "live events follow the replay once"
    );

    // Bad credentials are refused before the stream opens.
    let r = srv
        .http
        .get(format!("{}/api/events/stream?token=garbage", srv.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A resume point from the future would hide every live event older than it: refused, at
    // once, whether it is the largest id there is or one from the year 2100.
    let year_2100 = ipay_engine::ids::EventId::new_at(4_102_444_800_000).to_string();
    for future in [
        "evt_7ZZZZZZZZZZZZZZZZZZZZZZZZZ",
        year_2100.as_str(),
        "not-an-id",
    ] {
        let r = srv
            .http
            .get(format!("{}/api/events/stream?token={}", srv.base, a.token))
            .header("Last-Event-ID", future)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{future}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "parameter_invalid", "{future}");
    }
    drop(resumed);
    drop(b_stream);
    srv.stop().await;
}

#[tokio::test]
async fn sessions_turn_paid_from_the_committed_event_without_a_read() {
    let srv = common::start_with(|c| {
        c.admin.token = ADMIN.into();
        // A sweep would settle it too: keep it out of the way, the event alone must do it.
        c.lastmile.sessions.settle_sweep_secs = 3_600;
    })
    .await;
    let shop = srv.lastmile_merchant("Event Shop").await;
    let mut events = SseClient::open(&srv, &format!("token={}", shop.token), None).await;
    let s = session(&srv, &shop, "NL", "DHL").await;
    assert_eq!(
        events.next_event().await.event.as_deref(),
        Some("order.created")
    );
    assert_eq!(
        events.next_event().await.event.as_deref(),
        Some("session.created")
    );
    let token = token_of(&s);
    let r = start_payment(&srv, &token, json!({"channel": "sandbox"})).await;
    assert_eq!(r.body["status"], "PAYMENT_PENDING");
    let id = s["id"].as_str().unwrap();
    let d = srv
        .get(&format!("/api/payment-sessions/{id}"), &shop.token)
        .await;
    let intent = d.body["payment_intent"].as_str().unwrap().to_string();
    settle_in_engine(&srv, shop.merchant_id.as_deref().unwrap(), &intent).await;
    // Nobody reads the session: the intent's committed event settles it and the stream says so.
    let paid = events.next_event().await;
    assert_eq!(paid.event.as_deref(), Some("session.paid"));
    drop(events);
    srv.stop().await;
}

/// A merchant's first payments race to activate its last-mile service; every one of them must
/// go through (a loser finds the service already active, which is what it wanted).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_payments_of_a_merchant_all_start() {
    let srv = server().await;
    let shop = srv.lastmile_merchant("Race Parcels BV").await;
    let mut tokens = Vec::new();
    for _ in 0..8 {
        tokens.push(token_of(&session(&srv, &shop, "NL", "DHL").await));
    }
    let body = json!({"channel": "sandbox", "simulate": "succeed"});
    let answers =
        futures::future::join_all(tokens.iter().map(|t| start_payment(&srv, t, body.clone())))
            .await;
    for r in answers {
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(r.body["status"], "PAID");
    }
}
