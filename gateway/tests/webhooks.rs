//! Merchant webhooks over real HTTP: deliveries to a Python receiver that checks both signature
//! schemes with its own code, secret rotation, logs, replay, recovery and dropped deliveries.
//! The schedule is driven by the test server's manual clock.

mod common;

use common::PyReceiver;
use ipay_engine::clock::Clock;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn event_of(r: &Value) -> Value {
    serde_json::from_str(r["body"].as_str().unwrap()).unwrap()
}

fn of_type<'a>(rs: &'a [Value], path: &str, ty: &str) -> Vec<&'a Value> {
    rs.iter()
        .filter(|r| r["path"] == path && event_of(r)["type"] == ty)
        .collect()
}

async fn server() -> common::TestServer {
    common::start_with(|c| {
        c.webhooks.allow_insecure_loopback = true;
        c.webhooks.poll_interval_ms = 20;
        c.webhooks.endpoint_cache_ms = 0;
    })
    .await
}

/// Reads `path` until `done` holds for its body, bounded. Attempt logs are written by the
/// dispatcher's next step after the receiver answered, so the receiver's view runs ahead of
/// them: wait on the log state itself, never on a guess of how long that takes.
async fn wait_get(
    ts: &common::TestServer,
    path: &str,
    key: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = ts.get(path, key).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {:?}", r.body);
        if done(&r.body) {
            return r.body;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn rows(body: &Value) -> usize {
    body["data"].as_array().map_or(0, |a| a.len())
}

/// Creates and succeeds an intent; returns its id.
async fn paid_intent(ts: &common::TestServer, key: &str, svc: &str) -> String {
    let pi = ts.create_intent(key, svc, 700).await;
    let id = pi["id"].as_str().unwrap().to_string();
    let r = ts
        .call(
            Method::POST,
            &format!("/v1/sandbox/payment-intents/{id}/succeed"),
            Some(key),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_verify_with_the_spec_code_and_with_standard_webhooks() {
    let ts = server().await;
    let rx = PyReceiver::start();
    let m = ts.merchant("Hooks").await;
    let key = m.test_secret_key.clone();
    let ep = ts
        .post(
            "/v1/webhook-endpoints",
            &key,
            json!({"url": format!("{}/api", rx.base), "enabled_events": ["payment_intent.succeeded"]}),
        )
        .await;
    assert_eq!(ep.status, StatusCode::CREATED, "{:?}", ep.body);
    let secret = ep.body["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    // A manifest endpoint, signed with the merchant's webhook secret.
    let svc = ts.active_service(&key).await;
    let r = ts
        .post(
            "/v1/services",
            &key,
            json!({"id": svc, "endpoint": format!("{}/manifest", rx.base)}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    rx.configure(json!({"secrets": [secret, m.webhook_secret]}))
        .await;

    let pi = paid_intent(&ts, &key, &svc).await;
    let rs = rx
        .wait("both deliveries", |rs| {
            of_type(rs, "/api", "payment_intent.succeeded").len() == 1
                && of_type(rs, "/manifest", "payment_intent.succeeded").len() == 1
        })
        .await;
    // The API endpoint filters event types; the manifest endpoint gets everything.
    assert!(
        rs.iter()
            .all(|r| r["path"] == "/manifest" || event_of(r)["type"] == "payment_intent.succeeded")
    );
    assert_eq!(of_type(&rs, "/manifest", "payment_intent.created").len(), 1);
    for (path, s, other) in [
        ("/api", &secret, &m.webhook_secret),
        ("/manifest", &m.webhook_secret, &secret),
    ] {
        let r = of_type(&rs, path, "payment_intent.succeeded")[0];
        let v = &r["verified"][s.as_str()];
        assert_eq!(v["spec"], true, "{path}: {r:#?}");
        assert_eq!(v["standard"], true, "{path}: {r:#?}");
        assert_eq!(r["verified"][other.as_str()]["spec"], false);
        assert_eq!(r["verified"][other.as_str()]["standard"], false);
        let h = &r["headers"];
        assert_eq!(h["user-agent"], "ItPay-Webhook/1.0");
        assert!(
            h["x-itpay-request-id"]
                .as_str()
                .unwrap()
                .starts_with("req_")
        );
        let ev = event_of(r);
        assert_eq!(h["webhook-id"], ev["id"]);
        let keys: Vec<&String> = ev.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["created", "data", "id", "type"]);
        assert_eq!(ev["data"]["id"], pi.as_str());
        assert_eq!(ev["data"]["status"], "succeeded");
    }
    // Logs over HTTP.
    let logs = wait_get(
        &ts,
        "/v1/webhooks/logs?status=succeeded",
        &key,
        "three succeeded attempts logged",
        |b| rows(b) >= 3,
    )
    .await;
    assert_eq!(rows(&logs), 3);
    let l = &logs["data"][0];
    assert_eq!(l["status_code"], 200);
    assert!(l["latency_ms"].is_u64() && l["request_id"].is_string());
    let listed = ts.get("/v1/webhook-endpoints", &key).await;
    assert_eq!(listed.body["pagination"]["total"], 2);
    assert!(listed.body.to_string().find("whsec_").is_none());
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_signs_beside_the_old_one_until_the_overlap_ends() {
    let ts = server().await;
    let rx = PyReceiver::start();
    let m = ts.merchant("Rotate").await;
    let key = m.test_secret_key.clone();
    let ep = ts
        .post(
            "/v1/webhook-endpoints",
            &key,
            json!({"url": format!("{}/r", rx.base), "enabled_events": ["payment_intent.succeeded"]}),
        )
        .await;
    let id = ep.body["id"].as_str().unwrap().to_string();
    let old = ep.body["secret"].as_str().unwrap().to_string();
    let rot = ts
        .post(
            &format!("/v1/webhook-endpoints/{id}/rotate"),
            &key,
            json!({"overlap_seconds": 3600}),
        )
        .await;
    assert_eq!(rot.status, StatusCode::OK, "{:?}", rot.body);
    let new = rot.body["secret"].as_str().unwrap().to_string();
    assert_ne!(old, new);
    assert!(rot.body["previous_secret_expires"].is_string());
    rx.configure(json!({"secrets": [old, new]})).await;
    let svc = ts.active_service(&key).await;

    paid_intent(&ts, &key, &svc).await;
    let rs = rx.wait("a delivery", |rs| rs.len() == 1).await;
    let v = &rs[0]["verified"];
    for s in [&old, &new] {
        assert_eq!(v[s.as_str()]["any_v1"], true);
        assert_eq!(v[s.as_str()]["standard"], true);
    }
    // The spec's verifier reads the last v1, which is the new secret's.
    assert_eq!(v[new.as_str()]["spec"], true);
    assert_eq!(
        rs[0]["headers"]["x-itpay-signature"]
            .as_str()
            .unwrap()
            .matches("v1=")
            .count(),
        2
    );

    ts.clock.advance_ms(3_601_000);
    paid_intent(&ts, &key, &svc).await;
    let rs = rx.wait("a second delivery", |rs| rs.len() == 2).await;
    let v = &rs[1]["verified"];
    assert_eq!(v[new.as_str()]["spec"], true);
    assert_eq!(v[new.as_str()]["standard"], true);
    assert_eq!(v[old.as_str()]["any_v1"], false);
    assert_eq!(v[old.as_str()]["standard"], false);
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_recover_dropped_and_logs_work_over_http() {
    let ts = server().await;
    let rx = PyReceiver::start();
    let m = ts.merchant("Ops").await;
    let key = m.test_secret_key.clone();
    rx.configure(json!({"rules": [{"path": "/fail", "status": 500}]}))
        .await;
    let ok = ts
        .post(
            "/v1/webhook-endpoints",
            &key,
            json!({"url": format!("{}/ok", rx.base), "enabled_events": ["payment_intent.succeeded"]}),
        )
        .await;
    let ok_id = ok.body["id"].as_str().unwrap().to_string();
    let fail = ts
        .post(
            "/v1/webhook-endpoints",
            &key,
            json!({"url": format!("{}/fail", rx.base), "enabled_events": ["payment_intent.succeeded"]}),
        )
        .await;
    assert_eq!(fail.status, StatusCode::CREATED);
    let svc = ts.active_service(&key).await;
    let start = ipay_engine::clock::Timestamp(ts.clock.now_ms() - 1000).to_string();
    let pi = paid_intent(&ts, &key, &svc).await;
    rx.wait("first attempts", |rs| rs.len() == 2).await;
    let evt = ts
        .get(
            &format!("/v1/events?object_id={pi}&type=payment_intent.succeeded"),
            &key,
        )
        .await
        .body["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // The failing endpoint runs through the whole schedule and is dropped.
    for delay in [10, 60, 600, 3_600, 21_600, 86_400] {
        let before = of_type(&rx.received().await, "/fail", "payment_intent.succeeded").len();
        ts.clock.advance_ms(delay * 1000);
        rx.wait("a retry", |rs| {
            of_type(rs, "/fail", "payment_intent.succeeded").len() == before + 1
        })
        .await;
    }
    let dropped = wait_get(&ts, "/v1/webhooks/dropped", &key, "the drop", |b| {
        rows(b) > 0
    })
    .await;
    let d = &dropped["data"][0];
    assert_eq!(d["status"], "dropped");
    assert_eq!(d["attempts"], 7);
    assert_eq!(d["last_status_code"], 500);
    assert_eq!(d["event_id"], evt.as_str());
    // 7 attempts to /fail + 1 to /ok, each logged by the step after it.
    wait_get(
        &ts,
        &format!("/v1/webhooks/logs?event_id={evt}&limit=100"),
        &key,
        "every attempt logged",
        |b| rows(b) >= 8,
    )
    .await;
    let logs = ts
        .get(&format!("/v1/webhooks/logs?event_id={evt}&limit=5"), &key)
        .await;
    assert_eq!(logs.body["data"].as_array().unwrap().len(), 5);
    assert_eq!(logs.body["pagination"]["has_more"], true);
    let next = logs.body["pagination"]["next_starting_after"]
        .as_str()
        .unwrap();
    let page2 = ts
        .get(
            &format!("/v1/webhooks/logs?event_id={evt}&starting_after={next}"),
            &key,
        )
        .await;
    // 7 attempts to /fail + 1 to /ok.
    assert_eq!(page2.body["data"].as_array().unwrap().len(), 3);
    let dropped_logs = ts.get("/v1/webhooks/logs?status=dropped", &key).await;
    assert_eq!(dropped_logs.body["data"].as_array().unwrap().len(), 1);

    // Replay: a fresh attempt to every endpoint that wants the event.
    let before_ok = of_type(&rx.received().await, "/ok", "payment_intent.succeeded").len();
    let r = ts
        .post(&format!("/v1/webhooks/{evt}/replay"), &key, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    assert_eq!(r.body["deliveries"].as_array().unwrap().len(), 2);
    rx.wait("the replay", |rs| {
        of_type(rs, "/ok", "payment_intent.succeeded").len() == before_ok + 1
    })
    .await;

    // Recover: every event of the window to one endpoint.
    let r = ts
        .post(
            &format!("/v1/webhook-endpoints/{ok_id}/recover"),
            &key,
            json!({"since": start}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    assert_eq!(r.body["events"], 1);
    assert_eq!(r.body["truncated"], false);
    rx.wait("the recovery", |rs| {
        of_type(rs, "/ok", "payment_intent.succeeded").len() == before_ok + 2
    })
    .await;
    // Every copy carries the same event id, so receivers can dedupe.
    let rs = rx.received().await;
    assert!(
        of_type(&rs, "/ok", "payment_intent.succeeded")
            .iter()
            .all(
                |r| event_of(r)["id"] == evt.as_str() && r["headers"]["webhook-id"] == evt.as_str()
            )
    );

    // Client mistakes are clear errors.
    for (method, path, body, status, code) in [
        (
            Method::POST,
            "/v1/webhook-endpoints".to_string(),
            json!({"url": "http://example.com/x"}),
            400,
            "parameter_invalid",
        ),
        (
            Method::POST,
            "/v1/webhook-endpoints".to_string(),
            json!({"url": "https://x.test", "enabled_events": []}),
            400,
            "parameter_invalid",
        ),
        (
            Method::POST,
            "/v1/webhooks/evt_01J7XZ1A2B3C4D5E6F7G8H9IKM/replay".to_string(),
            json!({}),
            404,
            "resource_missing",
        ),
        (
            Method::GET,
            "/v1/webhooks/logs?status=bogus".to_string(),
            Value::Null,
            400,
            "parameter_invalid",
        ),
        (
            Method::GET,
            "/v1/webhooks/dropped?date=yesterday".to_string(),
            Value::Null,
            400,
            "parameter_invalid",
        ),
        (
            Method::POST,
            format!("/v1/webhook-endpoints/{ok_id}/recover"),
            json!({"since": "2020-01-01"}),
            400,
            "parameter_invalid",
        ),
        (
            Method::POST,
            format!("/v1/webhook-endpoints/{ok_id}/rotate"),
            json!({"overlap_seconds": -1}),
            400,
            "parameter_invalid",
        ),
        (
            Method::DELETE,
            format!("/v1/webhook-endpoints/{svc}"),
            Value::Null,
            409,
            "endpoint_managed_by_manifest",
        ),
        (
            Method::GET,
            "/v1/webhook-endpoints/we_nope".to_string(),
            Value::Null,
            404,
            "resource_missing",
        ),
    ] {
        let body = (!body.is_null()).then_some(body);
        let r = ts.call(method, &path, Some(&key), body).await;
        assert_eq!(r.status.as_u16(), status, "{path}: {:?}", r.body);
        assert_eq!(r.code(), code, "{path}");
    }
    // Deleting an endpoint removes it from the list.
    let del = ts
        .call(
            Method::DELETE,
            &format!("/v1/webhook-endpoints/{ok_id}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(del.status, StatusCode::OK);
    assert_eq!(del.body["deleted"], true);
    let listed = ts.get("/v1/webhook-endpoints", &key).await;
    assert_eq!(listed.body["pagination"]["total"], 1);
    ts.stop().await;
}
