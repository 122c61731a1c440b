//! Subscriptions, last-mile fee statements and channel settlement checks over the real HTTP
//! API: subscribe → pay → active → cancel at period end → revoked; statements whose CSV is
//! re-added by Python's `csv` module and whose PDF is read back; `invoice.mismatch` when the
//! PSP simulator settles a different amount than the engine expected.

mod common;

use common::{LastMileUser, TestServer};
use ipay_adapters::factory::AdapterFactory;
use ipay_adapters::sim::{SimOptions, Simulator, Skew};
use ipay_engine::channels::ChannelSetup;
use ipay_engine::channels::vault::MasterKey;
use ipay_engine::clock::Clock;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;

const ADMIN: &str = "admin-token-for-billing-0123456789";

async fn server() -> TestServer {
    common::start_with(|c| {
        c.admin.token = ADMIN.into();
    })
    .await
}

// ------------------------------------------------------------------ subscriptions

async fn plan_service(srv: &TestServer, key: &str) -> String {
    let r = srv
        .post(
            "/v1/services",
            key,
            json!({
                "name": "AI Document Summary",
                "payment_methods": {"one_time": true, "cumulative": false, "subscription": true},
                "pricing": {"subscription": [{"plan_id": "plan_weekly", "name": "Weekly", "amount": 250,
                                              "currency": "EUR", "interval": "weekly", "features": []}]},
                "accepted_channels": ["sandbox"]
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    let a = srv
        .call(
            Method::PATCH,
            &format!("/v1/services/{id}/activate"),
            Some(key),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    id
}

#[tokio::test]
async fn subscription_over_http_activates_cancels_at_period_end_and_is_revoked() {
    let srv = server().await;
    let m = srv.merchant("subs").await;
    let key = m.test_secret_key.as_str();
    let svc = plan_service(&srv, key).await;
    let r = srv
        .post(
            "/v1/subscriptions",
            key,
            json!({"service_id": svc, "plan_id": "plan_weekly", "channel": "sandbox", "customer": "cus_1"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["subscription"]["status"], "incomplete");
    assert_eq!(
        r.body["payment_intent"]["amount"],
        json!({"value": 250, "currency": "EUR"})
    );
    assert_eq!(
        r.body["payment_intent"]["metadata"]["plan_id"],
        "plan_weekly"
    );
    let id = r.body["subscription"]["id"].as_str().unwrap().to_string();
    let pi = r.body["payment_intent"]["id"].as_str().unwrap().to_string();
    let s = srv
        .post(
            &format!("/v1/sandbox/payment-intents/{pi}/succeed"),
            key,
            json!({}),
        )
        .await;
    assert_eq!(s.status, StatusCode::OK, "{:?}", s.body);
    srv.engine.run_subscription_timers().await.unwrap();
    let got = srv.get(&format!("/v1/subscriptions/{id}"), key).await;
    assert_eq!(got.body["status"], "active", "{:?}", got.body);
    let list = srv.get("/v1/subscriptions?status=active", key).await;
    assert_eq!(list.body["pagination"]["total"], 1, "{:?}", list.body);
    let c = srv
        .post(&format!("/v1/subscriptions/{id}/cancel"), key, json!({}))
        .await;
    assert_eq!(c.status, StatusCode::OK, "{:?}", c.body);
    assert_eq!(c.body["cancel_at_period_end"], true);
    assert_eq!(c.body["status"], "active");
    srv.clock.advance_ms(7 * 86_400_000);
    srv.engine.run_subscription_timers().await.unwrap();
    let ended = srv.get(&format!("/v1/subscriptions/{id}"), key).await;
    assert_eq!(ended.body["status"], "cancelled");
    let ev = srv.get(&format!("/v1/events?object_id={id}"), key).await;
    let types: Vec<&str> = ev.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec!["revocation.succeeded", "subscription.cancelled"]
    );
    let again = srv
        .post(&format!("/v1/subscriptions/{id}/cancel"), key, json!({}))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.code(), "invalid_state_transition");
    srv.stop().await;
}

#[tokio::test]
async fn bad_subscription_input_gets_coded_json_errors() {
    let srv = server().await;
    let m = srv.merchant("subs-bad").await;
    let key = m.test_secret_key.as_str();
    let svc = plan_service(&srv, key).await;
    let cases = [
        (
            json!({"service_id": svc, "plan_id": "nope", "channel": "sandbox"}),
            "plan_unknown",
        ),
        (
            json!({"service_id": svc, "plan_id": "plan_weekly", "channel": "paypal"}),
            "channel_unknown",
        ),
        (
            json!({"service_id": svc, "plan_id": "plan_weekly"}),
            "parameter_missing",
        ),
        (
            json!({"service_id": svc, "plan_id": "plan_weekly", "channel": "sandbox", "x": 1}),
            "parameter_unknown",
        ),
    ];
    for (body, code) in cases {
        let r = srv.post("/v1/subscriptions", key, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
        assert_eq!(r.code(), code);
    }
    // An Idempotency-Key replays the first answer and refuses a different body.
    let body = json!({"service_id": svc, "plan_id": "plan_weekly", "channel": "sandbox"});
    let idem = [("Idempotency-Key", "sub-once-1")];
    let first = srv
        .call_with(
            Method::POST,
            "/v1/subscriptions",
            Some(key),
            Some(body.clone()),
            &idem,
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    let again = srv
        .call_with(
            Method::POST,
            "/v1/subscriptions",
            Some(key),
            Some(body),
            &idem,
        )
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(
        again.body["subscription"]["id"],
        first.body["subscription"]["id"]
    );
    let other =
        json!({"service_id": svc, "plan_id": "plan_weekly", "channel": "sandbox", "customer": "x"});
    let reused = srv
        .call_with(
            Method::POST,
            "/v1/subscriptions",
            Some(key),
            Some(other),
            &idem,
        )
        .await;
    assert_eq!(
        (reused.status, reused.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
    );
    let r = srv.get("/v1/subscriptions/sub_missing", key).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "resource_missing")
    );
    let r = srv.get("/v1/subscriptions?status=sleeping", key).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "parameter_invalid")
    );
    let doc = srv.call(Method::GET, "/openapi.json", None, None).await;
    for path in [
        "/v1/subscriptions",
        "/v1/subscriptions/{id}/cancel",
        "/api/merchant-portal/ipay/settlement/pdf",
        "/api/admin/settlement-reports",
    ] {
        assert!(
            doc.body["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    srv.stop().await;
}

// ------------------------------------------------------------------ statements

async fn paid_session(srv: &TestServer, u: &LastMileUser, value: i64) {
    let body = json!({
        "customer": {"name": "Jan de Vries",
                     "address": {"line1": "Damrak 1", "city": "Amsterdam", "postal_code": "1012 LG", "country": "NL"}},
        "items": [{"sku": "MUG", "name": "Mug", "qty": 1, "unit_price": value}],
        "amount": {"value": value, "currency": "EUR"},
        "carrier_code": "POSTNL",
        "ipay_flag": true
    });
    let o = srv.post("/api/orders", &u.token, body).await;
    assert_eq!(o.status, StatusCode::CREATED, "{:?}", o.body);
    let oid = o.body["id"].as_str().unwrap();
    let s = srv
        .call(
            Method::POST,
            &format!("/api/orders/{oid}/create-session"),
            Some(&u.token),
            None,
        )
        .await;
    assert_eq!(s.status, StatusCode::CREATED, "{:?}", s.body);
    let token = s.body["pay_url"]
        .as_str()
        .unwrap()
        .rsplit("/pay/")
        .next()
        .unwrap()
        .to_string();
    let p = srv
        .call(
            Method::POST,
            &format!("/api/session/{token}/start-payment"),
            None,
            Some(json!({"channel": "sandbox", "simulate": "succeed"})),
        )
        .await;
    assert_eq!(p.body["status"], "PAID", "{:?}", p.body);
}

async fn raw_get(srv: &TestServer, path: &str, token: &str) -> (StatusCode, String, Vec<u8>) {
    let r = srv
        .http
        .get(format!("{}{path}", srv.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, r.bytes().await.unwrap().to_vec())
}

/// Python's csv module re-adds the statement's lines: `[rows, Σ gross, Σ fee, Σ net]`.
fn python_sums(csv: &[u8]) -> Vec<i64> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("statement.csv");
    std::fs::write(&path, csv).unwrap();
    let script = "import csv, json, sys\n\
rows = list(csv.DictReader(open(sys.argv[1], newline='')))\n\
print(json.dumps([len(rows), sum(int(r['gross_minor']) for r in rows), \
sum(int(r['fee_minor']) for r in rows), sum(int(r['net_minor']) for r in rows)]))\n";
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .expect("python3 is needed to re-add the CSV");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn statements_add_up_in_json_csv_and_pdf() {
    let srv = server().await;
    let shop = srv.lastmile_merchant("Statement Shop").await;
    let other = srv.lastmile_merchant("Other Shop").await;
    let op = srv.lastmile_user_by("operator", ADMIN, None).await;
    let mid = shop.merchant_id.clone().unwrap();
    for v in [2_599, 1_000, 4_250, 99] {
        paid_session(&srv, &shop, v).await;
    }
    // The fee is set by an operator only.
    let path = format!("/api/admin/merchants/{mid}");
    let fee = json!({"fee_per_parcel": 150, "currency": "EUR", "contract_signed_at": "2026-05-01"});
    let denied = srv
        .call(Method::PATCH, &path, Some(&shop.token), Some(fee.clone()))
        .await;
    assert_eq!(
        (denied.status, denied.code()),
        (StatusCode::FORBIDDEN, "role_forbidden")
    );
    let set = srv
        .call(Method::PATCH, &path, Some(&op.token), Some(fee))
        .await;
    assert_eq!(set.status, StatusCode::OK, "{:?}", set.body);
    assert_eq!(set.body["history"].as_array().unwrap().len(), 1);
    let today = srv.clock.now().to_string()[..10].to_string();
    let q = format!("start={today}&end={today}");
    let st = srv
        .get(
            &format!("/api/merchant-portal/ipay/settlement?{q}"),
            &shop.token,
        )
        .await;
    assert_eq!(st.status, StatusCode::OK, "{:?}", st.body);
    let b = &st.body;
    assert_eq!(
        (b["parcels"].as_i64(), b["gross"].as_i64()),
        (Some(4), Some(7_948))
    );
    assert_eq!(
        (b["fees"].as_i64(), b["net"].as_i64()),
        (Some(600), Some(7_348))
    );
    assert_eq!(b["fee_source"], "merchant");
    assert_eq!(b["days"][0]["net"], 7_348);
    // The operator reads the same statement by merchant id.
    let by_op = srv
        .get(
            &format!("/api/merchant-portal/ipay/settlement?{q}&merchant_id={mid}"),
            &op.token,
        )
        .await;
    assert_eq!(by_op.body["net"], b["net"]);
    // CSV: Python's csv module re-adds the lines to the JSON totals.
    let (status, ct, csv) = raw_get(
        &srv,
        &format!("/api/merchant-portal/ipay/settlement?{q}&format=csv"),
        &shop.token,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(ct.starts_with("text/csv"), "{ct}");
    let sums = python_sums(&csv);
    assert_eq!(sums, vec![4, 7_948, 600, 7_348]);
    // PDF: read it back and find the totals.
    let (status, ct, pdf) = raw_get(
        &srv,
        &format!("/api/merchant-portal/ipay/settlement/pdf?{q}"),
        &shop.token,
    )
    .await;
    assert_eq!((status, ct.as_str()), (StatusCode::OK, "application/pdf"));
    let doc = lopdf::Document::load_mem(&pdf).unwrap();
    let text = doc.extract_text(&[1]).unwrap();
    for needle in [
        "Statement Shop",
        "Parcels: 4",
        "Gross: 79.48 EUR",
        "Fees: 6.00 EUR",
        "Net: 73.48 EUR",
        "Net = gross - parcels x fee per parcel = 79.48 - 4 x 1.50",
    ] {
        assert!(
            text.contains(needle),
            "{needle:?} not in the PDF text {text:?}"
        );
    }
    // Another merchant's statement is not the shop's to read; bad input is coded.
    let omid = other.merchant_id.clone().unwrap();
    let cases = [
        (
            format!("?{q}&merchant_id={omid}"),
            &shop.token,
            StatusCode::FORBIDDEN,
            "role_forbidden",
        ),
        (
            format!("?end={today}"),
            &shop.token,
            StatusCode::BAD_REQUEST,
            "parameter_missing",
        ),
        (
            format!("?{q}&format=xml"),
            &shop.token,
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
        ),
        (
            "?start=2025-01-01&end=2026-06-01".into(),
            &shop.token,
            StatusCode::BAD_REQUEST,
            "period_too_long",
        ),
        (
            format!("?{q}"),
            &op.token,
            StatusCode::BAD_REQUEST,
            "parameter_missing",
        ),
        (
            format!("?{q}&merchant_id=m_nope"),
            &op.token,
            StatusCode::NOT_FOUND,
            "resource_missing",
        ),
    ];
    for (query, token, status, code) in cases {
        let r = srv
            .get(
                &format!("/api/merchant-portal/ipay/settlement{query}"),
                token,
            )
            .await;
        assert_eq!(
            (r.status, r.code()),
            (status, code),
            "{query}: {:?}",
            r.body
        );
    }
    let bad_fee = srv
        .call(
            Method::PATCH,
            &path,
            Some(&op.token),
            Some(json!({"fee_per_parcel": -1, "currency": "EUR"})),
        )
        .await;
    assert_eq!(
        bad_fee.status,
        StatusCode::BAD_REQUEST,
        "{:?}",
        bad_fee.body
    );
    srv.stop().await;
}

// ------------------------------------------------------------------ invoice.mismatch

#[tokio::test]
async fn a_channel_settling_less_than_expected_emits_invoice_mismatch() {
    let sim = Simulator::start(SimOptions::default()).await.unwrap();
    let srv = server().await;
    let config = sim.channels_config();
    srv.engine
        .set_channels(ChannelSetup {
            factory: Some(Arc::new(AdapterFactory::new(&config).unwrap())),
            config,
            master_key: Some(MasterKey::generate()),
            ..Default::default()
        })
        .unwrap();
    let m = srv.merchant("psp merchant").await;
    let key = m.live_secret_key.as_str();
    let svc = srv
        .post(
            "/v1/services",
            key,
            json!({"name": "sim", "accepted_channels": ["alipay"]}),
        )
        .await;
    let svc = svc.body["id"].as_str().unwrap().to_string();
    srv.call(
        Method::PATCH,
        &format!("/v1/services/{svc}/activate"),
        Some(key),
        None,
    )
    .await;
    let cfg = json!({"channel": "alipay", "credentials": sim.credentials("alipay"),
                     "notify_url": format!("{}/callbacks/alipay", srv.base)});
    let r = srv.post("/v1/channels", key, cfg).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let mut ids = Vec::new();
    for v in [699, 1_200] {
        let r = srv
            .post("/v1/payment-intents", key,
                  json!({"service_id": svc, "amount": {"value": v, "currency": "CNY"}, "channel": "alipay"}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let id = r.body["id"].as_str().unwrap().to_string();
        sim.pay(&id).await.unwrap();
        let pi = srv.get(&format!("/v1/payment-intents/{id}"), key).await;
        assert_eq!(pi.body["status"], "succeeded", "{:?}", pi.body);
        ids.push(id);
    }
    let op = srv.lastmile_user_by("operator", ADMIN, None).await;
    let today = srv.clock.now().to_string()[..10].to_string();
    let url = format!(
        "{}/_sim/settlement-report?channel=alipay&date={today}",
        sim.base_url()
    );
    let report = || async {
        reqwest::get(url.as_str())
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    // The PSP settles what the engine expected: nothing to report.
    let clean = report().await;
    assert_eq!(
        clean["transactions"].as_array().unwrap().len(),
        2,
        "{clean:?}"
    );
    let r = srv
        .post("/api/admin/settlement-reports", &op.token, clean)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        (
            r.body["compared"].as_i64(),
            r.body["mismatches"].as_array().unwrap().len()
        ),
        (Some(1), 0)
    );
    // The PSP keeps 100 fen of the second payment.
    sim.skew_settlement(&ids[1], Skew::Delta { delta: -100 });
    let short = report().await;
    let r = srv
        .post("/api/admin/settlement-reports", &op.token, short)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let mm = &r.body["mismatches"][0];
    assert_eq!(
        (
            mm["expected"].as_i64(),
            mm["settled"].as_i64(),
            mm["difference"].as_i64()
        ),
        (Some(1_899), Some(1_799), Some(-100))
    );
    assert_eq!(mm["transactions"][0]["intent_id"], ids[1].as_str());
    let ev = srv.get("/v1/events?type=invoice.mismatch", key).await;
    let data = ev.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{:?}", ev.body);
    assert_eq!(data[0]["data"]["difference"], -100);
    assert_eq!(data[0]["data"]["currency"], "CNY");
    // Bad reports and callers get coded errors.
    let bad = srv
        .post(
            "/api/admin/settlement-reports",
            &op.token,
            json!({"channel": "paypal", "date": today, "transactions": []}),
        )
        .await;
    assert_eq!(
        (bad.status, bad.code()),
        (StatusCode::BAD_REQUEST, "channel_unknown")
    );
    let merchant_user = srv.lastmile_merchant("nosy").await;
    let denied = srv
        .post(
            "/api/admin/settlement-reports",
            &merchant_user.token,
            json!({"channel": "alipay", "date": today, "transactions": []}),
        )
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    srv.stop().await;
    sim.stop().await;
}
