//! Settlement and reconciliation through the HTTP API: FX and fees on succeeded intents, the
//! day report in CSV and JSON (re-added by an independent Python script), the streamed export,
//! settlement preferences, payouts, and coded errors for bad input.

mod common;

use common::TestServer;
use ipay_engine::settlement::SettlementConfig;
use ipay_engine::settlement::fees::FeeRule;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct Amount {
    value: Box<RawValue>,
    currency: String,
}

#[derive(Deserialize)]
struct Summary {
    total_transactions: u64,
    total_payer_amount: Amount,
    total_settlement: Amount,
    total_fees: Amount,
    net_payout: Amount,
}

#[derive(Deserialize)]
struct DayReport {
    date: String,
    summary: Summary,
    transactions: Vec<Value>,
}

async fn server() -> TestServer {
    let ts = common::start().await;
    let cfg = SettlementConfig {
        run_interval_secs: 0,
        fees: vec![FeeRule {
            channel: Some("sandbox".into()),
            merchant: None,
            percent: "3".into(),
            fixed_minor: 0,
        }],
        ..SettlementConfig::default()
    };
    ts.engine.configure_settlement(cfg).await.unwrap();
    ts
}

/// An active sandbox manifest settling in `currency`.
async fn service(ts: &TestServer, key: &str, currency: &str) -> String {
    let r = ts
        .post("/v1/services", key, json!({"name": format!("settle-{currency}"), "accepted_channels": ["sandbox"], "settlement_currency": currency}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    let a = ts
        .call(
            Method::PATCH,
            &format!("/v1/services/{id}/activate"),
            Some(key),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    id
}

/// A paid sandbox intent of `value` CNY minor units.
async fn paid(ts: &TestServer, key: &str, svc: &str, value: i64) -> Value {
    let r = ts.post("/v1/payment-intents", key, json!({"service_id": svc, "amount": {"value": value, "currency": "CNY"}, "channel": "sandbox"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap();
    let s = ts
        .post(
            &format!("/v1/sandbox/payment-intents/{id}/succeed"),
            key,
            json!({}),
        )
        .await;
    assert_eq!(s.status, StatusCode::OK, "{:?}", s.body);
    s.body
}

async fn raw(ts: &TestServer, path: &str, key: &str) -> (StatusCode, String, String) {
    let r = ts
        .http
        .get(format!("{}{path}", ts.base))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (r.status(), ct, r.text().await.unwrap())
}

fn today(ts: &TestServer) -> String {
    use ipay_engine::clock::Clock;
    ipay_engine::settlement::day_of(ts.clock.now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_days_report_follows_the_seed_and_adds_up_in_an_independent_script() {
    let ts = server().await;
    let m = ts.merchant("Finance").await;
    let key = m.test_secret_key.as_str();
    let svc = service(&ts, key, "USD").await;

    // The seed's example: 699 CNY minor at 0.1416 settles as 99 US cents.
    let first = paid(&ts, key, &svc, 699).await;
    assert_eq!(first["settlement"]["value"], 99);
    assert_eq!(first["settlement"]["currency"], "USD");
    assert_eq!(first["settlement"]["rate"].to_string(), "0.1416");
    assert_eq!(first["settlement"]["rate_source"], "ipay-sample-rates");
    let pid = first["id"].as_str().unwrap().to_string();
    for v in [1000, 1, 12_345, 99_999, 350] {
        paid(&ts, key, &svc, v).await;
    }
    // A partial refund nets out of the day.
    let r = ts
        .post(
            "/v1/refunds",
            key,
            json!({"payment_intent": pid, "amount": {"value": 300, "currency": "CNY"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let ev = ts
        .get(
            &format!("/v1/events?object_id={pid}&type=payment_intent.succeeded"),
            key,
        )
        .await;
    assert_eq!(
        ev.body["data"][0]["data"]["settlement"]["value"], 99,
        "{:?}",
        ev.body
    );

    let date = today(&ts);
    let (st, ct, csv) = raw(
        &ts,
        &format!("/v1/reconciliation?date={date}&format=csv"),
        key,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{csv}");
    assert!(ct.starts_with("text/csv"));
    let mut rows = csv.lines();
    assert_eq!(
        rows.next().unwrap(),
        "date,payment_intent_id,channel,payer_amount,payer_currency,settlement_amount,settlement_currency,fx_rate,fee,payout"
    );
    assert!(
        csv.contains(&format!(
            "{date},{pid},sandbox,699,CNY,99,USD,0.1416,2.97,96.03\n"
        )),
        "{csv}"
    );
    assert!(
        csv.contains(&format!(
            "{date},{pid},sandbox,-300,CNY,-42,USD,0.1416,0.00,-42.00\n"
        )),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 1 + 6 + 1);

    // The JSON summary equals what Python re-adds from the CSV.
    let (st, _, body) = raw(
        &ts,
        &format!("/v1/reconciliation?date={date}&format=json"),
        key,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let report: DayReport = serde_json::from_str(&body).unwrap();
    assert_eq!(report.date, date);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("day.csv");
    std::fs::write(&file, &csv).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/recon_sum.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &report.summary;
    assert_eq!(py["total_transactions"], s.total_transactions);
    assert_eq!(
        py["total_payer_amount"]["CNY"],
        s.total_payer_amount.value.get()
    );
    assert_eq!(s.total_payer_amount.currency, "CNY");
    assert_eq!(py["total_settlement"], s.total_settlement.value.get());
    assert_eq!(py["total_fees"], s.total_fees.value.get());
    assert_eq!(py["net_payout"], s.net_payout.value.get());
    assert_eq!(
        (
            s.total_settlement.currency.as_str(),
            s.total_fees.currency.as_str(),
            s.net_payout.currency.as_str()
        ),
        ("USD", "USD", "USD")
    );
    let tx = &report.transactions[0];
    assert_eq!(tx["payment_intent_id"], pid.as_str());
    assert_eq!(tx["fee"]["value"].to_string(), "2.97");
    assert_eq!(tx["payout"]["value"].to_string(), "96.03");
    assert!(tx["settled_at"].as_str().unwrap().starts_with(&date));

    // The run paid out, announced it, and a second report settles nothing again.
    let p = ts.get("/v1/payouts", key).await;
    assert_eq!(p.body["data"].as_array().unwrap().len(), 1, "{:?}", p.body);
    assert_eq!(p.body["data"][0]["transactions"], 7);
    let ev = ts.get("/v1/events?type=settlement.completed", key).await;
    assert_eq!(
        ev.body["data"].as_array().unwrap().len(),
        1,
        "{:?}",
        ev.body
    );
    let (_, _, again) = raw(
        &ts,
        &format!("/v1/reconciliation?date={date}&format=csv"),
        key,
    )
    .await;
    assert_eq!(again, csv);

    // The export streams the same lines, by channel.
    let (st, _, exp) = raw(
        &ts,
        &format!("/v1/reconciliation/export?start={date}&end={date}&channels=sandbox&format=csv"),
        key,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(exp, csv);
    let (_, _, exp) = raw(
        &ts,
        &format!(
            "/v1/reconciliation/export?start={date}&end={date}&channels=alipay,wechat&format=json"
        ),
        key,
    )
    .await;
    let v: Value = serde_json::from_str(&exp).unwrap();
    assert_eq!(v["transactions"].as_array().unwrap().len(), 0);
    let start =
        chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d").unwrap() - chrono::Days::new(40);
    let (_, _, exp) = raw(
        &ts,
        &format!("/v1/reconciliation/export?start={start}&end={date}"),
        key,
    )
    .await;
    let v: Value = serde_json::from_str(&exp).unwrap();
    assert_eq!(v["transactions"].as_array().unwrap().len(), 7);
    assert_eq!(v["transactions"][0]["date"], date.as_str());
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_report_queries_get_coded_errors() {
    let ts = server().await;
    let m = ts.merchant("Errors").await;
    let key = m.test_secret_key.as_str();
    let date = today(&ts);
    for (path, code) in [
        ("/v1/reconciliation".to_string(), "parameter_missing"),
        (
            "/v1/reconciliation?date=2026-13-01".into(),
            "parameter_invalid",
        ),
        (
            "/v1/reconciliation?date=27-05-2026".into(),
            "parameter_invalid",
        ),
        ("/v1/reconciliation?date=2999-01-01".into(), "date_unknown"),
        (
            format!("/v1/reconciliation?date={date}&format=xml"),
            "format_unsupported",
        ),
        (
            format!("/v1/reconciliation?date={date}&colour=red"),
            "parameter_invalid",
        ),
        (
            "/v1/reconciliation/export?start=2020-01-01&end=2022-01-01".into(),
            "range_too_long",
        ),
        (
            format!("/v1/reconciliation/export?start={date}&end={date}&channels=alipay,paypal"),
            "channel_unknown",
        ),
        (
            format!("/v1/reconciliation/export?start={date}&end=2020-01-01"),
            "parameter_invalid",
        ),
        (
            format!("/v1/reconciliation/export?start={date}"),
            "parameter_missing",
        ),
        (
            format!("/v1/reconciliation/export?start={date}&end={date}&format=pdf"),
            "format_unsupported",
        ),
        ("/v1/payouts?limit=0".into(), "parameter_invalid"),
    ] {
        let r = ts.get(&path, key).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {:?}", r.body);
        assert_eq!(r.code(), code, "{path}: {:?}", r.body);
    }
    let r = ts
        .call(
            Method::GET,
            &format!("/v1/reconciliation?date={date}"),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlement_preferences_choose_the_currency_and_hold_payouts_below_the_threshold() {
    let ts = server().await;
    let m = ts.merchant("Prefs").await;
    let key = m.test_secret_key.as_str();
    let r = ts.get("/v1/merchant/settlement", key).await;
    assert_eq!(r.body["auto_withdrawal"], true);
    let patch = |body: Value| {
        ts.call(
            Method::PATCH,
            "/v1/merchant/settlement",
            Some(key),
            Some(body),
        )
    };
    let r = patch(json!({"preferred_settlement_currency": "EUR", "auto_withdrawal": true, "withdrawal_threshold": {"value": 10000, "currency": "EUR"}})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["preferred_settlement_currency"], "EUR");
    assert_eq!(r.body["withdrawal_threshold"]["value"], 10000);
    for (body, code) in [
        (
            json!({"preferred_settlement_currency": "EURO"}),
            "currency_unknown",
        ),
        (
            json!({"withdrawal_threshold": {"value": -5, "currency": "EUR"}}),
            "amount_invalid",
        ),
        (json!({"auto_withdraw": true}), "parameter_unknown"),
    ] {
        let r = patch(body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
        assert_eq!(r.code(), code, "{:?}", r.body);
    }
    // A manifest without a settlement currency settles in the preferred one.
    let svc = ts.active_service(key).await;
    let pi = paid(&ts, key, &svc, 1000).await;
    assert_eq!(pi["settlement"]["currency"], "EUR");
    // 1000 × 0.1305 = 130.5 → 130 (half to even).
    assert_eq!(pi["settlement"]["value"], 130);
    let (st, _, _) = raw(&ts, &format!("/v1/reconciliation?date={}", today(&ts)), key).await;
    assert_eq!(st, StatusCode::OK);
    let p = ts.get("/v1/payouts", key).await;
    assert_eq!(p.body["data"][0]["status"], "held", "{:?}", p.body);
    assert_eq!(p.body["data"][0]["withdrawn"], 0);
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_can_come_from_a_url_such_as_the_psp_simulators() {
    use ipay_adapters::sim::{SimOptions, Simulator};
    let sim = Simulator::start(SimOptions::default()).await.unwrap();
    let ts = common::start().await;
    let cfg = SettlementConfig {
        run_interval_secs: 0,
        rates_source: sim.rates_url(),
        ..SettlementConfig::default()
    };
    ts.engine.configure_settlement(cfg).await.unwrap();
    let m = ts.merchant("Rates").await;
    let key = m.test_secret_key.as_str();
    let svc = service(&ts, key, "USD").await;
    let pi = paid(&ts, key, &svc, 699).await;
    assert_eq!(pi["settlement"]["value"], 99);
    assert_eq!(pi["settlement"]["rate_source"], "psp-sim");
    let date = today(&ts);
    assert_eq!(
        pi["settlement"]["rate_timestamp"],
        format!("{date}T00:00:00Z").as_str()
    );

    // A source that cannot be read stops the configuration with a clear error.
    let bad = SettlementConfig {
        rates_source: "/nonexistent/rates.json".into(),
        ..SettlementConfig::default()
    };
    let err = ts.engine.configure_settlement(bad).await.unwrap_err();
    assert!(err.to_string().contains("cannot read rates file"), "{err}");
    ts.stop().await;
}
