//! Channels over real HTTP with a fake PSP behind the `ChannelFactory` port: credentials stored
//! encrypted, circuit breakers and retries (delays recorded by an injected sleeper, so nothing
//! waits), the 503 `channel_unavailable` body with alternatives, and verified, de-duplicated
//! callbacks.

mod common;

use common::TestServer;
use ipay_engine::channel::{
    CallbackAck, CallbackError, CallbackNotice, CallbackOutcome, ChannelAdapter, ChannelError,
    ChannelFactory, ChannelPayment, ChannelPaymentRequest, ChannelsConfig, InboundCallback,
};
use ipay_engine::channels::ChannelSetup;
use ipay_engine::channels::retry::RecordingSleeper;
use ipay_engine::channels::vault::MasterKey;
use ipay_engine::clock::Timestamp;
use ipay_engine::ids::PaymentIntentId;
use ipay_engine::money::{Currency, Money};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

const SECRET: &str = "fake-psp-secret-0123456789";

/// The fake PSP's switches and counters, shared by every adapter the factory builds.
#[derive(Default)]
struct Psp {
    down: AtomicBool,
    /// Calls never answer (a PSP that accepts the connection and goes silent).
    hang: AtomicBool,
    calls: AtomicU32,
}

struct FakeAdapter {
    name: &'static str,
    currencies: &'static [&'static str],
    secret: String,
    psp: Arc<Psp>,
}

#[async_trait::async_trait]
impl ChannelAdapter for FakeAdapter {
    fn name(&self) -> &'static str {
        self.name
    }

    fn supports_currency(&self, currency: Currency) -> bool {
        self.currencies.contains(&currency.code())
    }

    fn allows_livemode(&self) -> bool {
        true
    }

    async fn create_payment(
        &self,
        req: &ChannelPaymentRequest,
    ) -> Result<ChannelPayment, ChannelError> {
        self.psp.calls.fetch_add(1, Ordering::SeqCst);
        if self.psp.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.psp.down.load(Ordering::SeqCst) {
            return Err(ChannelError::Unavailable("HTTP 503 from the PSP".into()));
        }
        Ok(ChannelPayment {
            qr_code: format!("fake://{}/{}", self.name, req.intent_id),
            channel_reference: Some(format!("ref_{}", req.intent_id)),
        })
    }

    // Body: {"id","intent","status":"paid|failed","amount":{value,currency}}; headers
    // `x-fake-signature: <secret>` and `x-fake-timestamp: <unix seconds>` (300 s tolerance).
    fn verify_callback(
        &self,
        cb: &InboundCallback,
        now: Timestamp,
    ) -> Result<CallbackNotice, CallbackError> {
        let h = |n: &str| cb.header(n).unwrap_or("");
        if h("x-fake-signature") != self.secret {
            return Err(CallbackError::SignatureMismatch(
                "x-fake-signature does not verify".into(),
            ));
        }
        let ts: i64 = h("x-fake-timestamp")
            .parse()
            .map_err(|_| CallbackError::Malformed("no timestamp".into()))?;
        if (now.ms() / 1000 - ts).abs() > 300 {
            return Err(CallbackError::Stale("older than 300 s".into()));
        }
        let v: Value = serde_json::from_slice(&cb.body)
            .map_err(|_| CallbackError::Malformed("not JSON".into()))?;
        let intent_id = PaymentIntentId::parse(v["intent"].as_str().unwrap_or(""))
            .map_err(|_| CallbackError::Malformed("bad intent".into()))?;
        let outcome = match v["status"].as_str() {
            Some("paid") => CallbackOutcome::Paid {
                amount: Money::from_parts(
                    v["amount"]["value"].as_i64().unwrap_or(0),
                    v["amount"]["currency"].as_str().unwrap_or(""),
                )
                .map_err(|e| CallbackError::Malformed(e.to_string()))?,
                channel_reference: Some("psp_ref".into()),
                payer: None,
            },
            Some("failed") => CallbackOutcome::Failed {
                reason: "payer_declined".into(),
            },
            _ => CallbackOutcome::Ignored,
        };
        Ok(CallbackNotice {
            notification_id: v["id"].as_str().unwrap_or("").to_string(),
            intent_id,
            outcome,
        })
    }

    fn callback_ack(&self) -> CallbackAck {
        CallbackAck {
            status: 200,
            content_type: "text/plain",
            body: "success".into(),
        }
    }
}

struct FakeFactory {
    psp: Arc<Psp>,
}

const CHANNELS: &[&str] = &["alipay", "wechat", "stripe", "promptpay"];

impl ChannelFactory for FakeFactory {
    fn channels(&self) -> &'static [&'static str] {
        CHANNELS
    }

    fn validate(&self, _channel: &str, credentials: &Value) -> Result<(), String> {
        match credentials["secret"].as_str() {
            Some(s) if s.len() >= 16 => Ok(()),
            _ => Err("credentials.secret must be at least 16 characters".into()),
        }
    }

    fn build(
        &self,
        channel: &str,
        credentials: &Value,
        _notify_url: &str,
    ) -> Result<Arc<dyn ChannelAdapter>, String> {
        let (name, currencies): (&'static str, &'static [&'static str]) = match channel {
            "alipay" => ("alipay", &["CNY", "EUR"]),
            "wechat" => ("wechat", &["CNY"]),
            "stripe" => ("stripe", &["EUR"]),
            "promptpay" => ("promptpay", &["THB"]),
            _ => return Err(format!("unknown channel {channel}")),
        };
        Ok(Arc::new(FakeAdapter {
            name,
            currencies,
            secret: credentials["secret"].as_str().unwrap_or("").to_string(),
            psp: self.psp.clone(),
        }))
    }

    fn peek_intent(&self, _channel: &str, cb: &InboundCallback) -> Option<String> {
        let v: Value = serde_json::from_slice(&cb.body).ok()?;
        v["intent"].as_str().map(str::to_string)
    }
}

struct Fixture {
    srv: TestServer,
    psp: Arc<Psp>,
    sleeper: RecordingSleeper,
    key: String,
    service: String,
}

async fn fixture_with(tweak: impl FnOnce(&mut ChannelsConfig)) -> Fixture {
    fixture_on(common::start().await, 30_000, tweak).await
}

/// The fixture on `srv`, whose `server.request_timeout_ms` is `request_timeout_ms`.
async fn fixture_on(
    srv: TestServer,
    request_timeout_ms: u64,
    tweak: impl FnOnce(&mut ChannelsConfig),
) -> Fixture {
    let psp = Arc::new(Psp::default());
    let sleeper = RecordingSleeper::with_clock(srv.clock.clone());
    let mut config = ChannelsConfig {
        breaker_failure_threshold: 5,
        ..Default::default()
    };
    tweak(&mut config);
    srv.engine
        .set_channels(ChannelSetup {
            factory: Some(Arc::new(FakeFactory { psp: psp.clone() })),
            config,
            master_key: Some(MasterKey::generate()),
            sleeper: Arc::new(sleeper.clone()),
            psp_budget: ChannelSetup::psp_budget(request_timeout_ms),
        })
        .unwrap();
    let m = srv.merchant("channels").await;
    let key = m.live_secret_key.clone();
    let svc = srv
        .post(
            "/v1/services",
            &key,
            json!({"name": "tea", "accepted_channels": ["alipay", "wechat", "stripe", "promptpay"]}),
        )
        .await;
    assert_eq!(svc.status, StatusCode::CREATED, "{:?}", svc.body);
    let service = svc.body["id"].as_str().unwrap().to_string();
    let a = srv
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/services/{service}/activate"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    Fixture {
        srv,
        psp,
        sleeper,
        key,
        service,
    }
}

async fn fixture() -> Fixture {
    fixture_with(|_| {}).await
}

impl Fixture {
    async fn configure(&self, channel: &str) -> common::Resp {
        self.srv
            .post(
                "/v1/channels",
                &self.key,
                json!({"channel": channel, "credentials": {"secret": SECRET, "app_id": "2021000"},
                       "notify_url": format!("https://pay.example.com/callbacks/{channel}")}),
            )
            .await
    }

    async fn intent(&self, channel: &str, value: i64, currency: &str) -> common::Resp {
        self.srv
            .post(
                "/v1/payment-intents",
                &self.key,
                json!({"service_id": self.service, "amount": {"value": value, "currency": currency}, "channel": channel}),
            )
            .await
    }

    async fn callback(
        &self,
        path: &str,
        body: Value,
        signature: &str,
        age_secs: i64,
    ) -> common::Resp {
        let ts = (self.srv.clock_now_ms() / 1000 - age_secs).to_string();
        let r = self
            .srv
            .http
            .post(format!("{}{}", self.srv.base, path))
            .header("x-fake-signature", signature)
            .header("x-fake-timestamp", ts)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        common::Resp {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    }

    async fn events(&self, event_type: &str, intent: &str) -> Vec<Value> {
        let r = self
            .srv
            .get(
                &format!("/v1/events?type={event_type}&object_id={intent}"),
                &self.key,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.body["data"].as_array().unwrap().clone()
    }

    async fn health(&self, channel: &str) -> Value {
        let r = self.srv.get("/v1/channels", &self.key).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["channel"] == channel)
            .unwrap()["health"]
            .clone()
    }
}

trait ClockNow {
    fn clock_now_ms(&self) -> i64;
}

impl ClockNow for TestServer {
    fn clock_now_ms(&self) -> i64 {
        use ipay_engine::clock::Clock;
        self.clock.now_ms()
    }
}

#[tokio::test]
async fn channel_credentials_are_validated_stored_encrypted_and_never_returned() {
    let f = fixture().await;
    let bad = f
        .srv
        .post(
            "/v1/channels",
            &f.key,
            json!({"channel": "alipay", "credentials": {"secret": "short-secret"}, "notify_url": "https://x.example/cb"}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.code(), "credentials_invalid");
    assert!(!bad.body.to_string().contains("short-secret"));

    let unknown = f
        .srv
        .post(
            "/v1/channels",
            &f.key,
            json!({"channel": "paypal", "credentials": {"secret": SECRET}, "notify_url": "https://x.example/cb"}),
        )
        .await;
    assert_eq!(unknown.code(), "channel_unknown");
    let bad_url = f
        .srv
        .post(
            "/v1/channels",
            &f.key,
            json!({"channel": "alipay", "credentials": {"secret": SECRET}, "notify_url": "ftp://x"}),
        )
        .await;
    assert_eq!(bad_url.code(), "parameter_invalid");

    let created = f.configure("alipay").await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["channel"], "alipay");
    assert_eq!(created.body["livemode"], true);
    assert_eq!(created.body["health"]["state"], "closed");
    assert!(created.body.get("credentials").is_none());
    assert!(!created.body.to_string().contains(SECRET));

    let replaced = f.configure("alipay").await;
    assert_eq!(replaced.status, StatusCode::OK);
    assert_eq!(replaced.body["created"], created.body["created"]);

    let listed = f.srv.get("/v1/channels", &f.key).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 1);
    assert!(!listed.body.to_string().contains(SECRET));

    // At rest: the record holds a sealed blob, not the secret.
    let ctx = f.srv.engine.authenticate(&f.key, None).await.unwrap();
    let raw = f
        .srv
        .engine
        .channels()
        .raw_record(ctx.merchant_id, true, "alipay")
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(!text.contains(SECRET), "secret stored in clear: {text}");
    assert!(!text.contains("2021000"));
    assert!(text.contains("ciphertext"));

    // Test mode is a separate configuration.
    let m = f.srv.merchant("other").await;
    let none = f.srv.get("/v1/channels", &m.test_secret_key).await;
    assert_eq!(none.body["data"], json!([]));
    f.srv.stop().await;
}

#[tokio::test]
async fn live_intents_use_the_merchants_configured_channel() {
    let f = fixture().await;
    let before = f.intent("alipay", 699, "CNY").await;
    assert_eq!(before.status, StatusCode::BAD_REQUEST);
    assert_eq!(before.code(), "channel_not_configured");

    f.configure("alipay").await;
    let r = f.intent("alipay", 699, "CNY").await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap();
    assert_eq!(r.body["qr_code"], format!("fake://alipay/{id}"));
    assert_eq!(r.body["livemode"], true);
    assert_eq!(f.psp.calls.load(Ordering::SeqCst), 1);
    assert!(f.sleeper.delays().is_empty());

    let thb = f.intent("alipay", 100, "THB").await;
    assert_eq!(thb.code(), "currency_not_supported");
    f.srv.stop().await;
}

#[tokio::test]
async fn an_unavailable_channel_is_retried_after_1s_and_5s_then_answers_503_with_alternatives() {
    let f = fixture().await;
    for c in ["alipay", "wechat", "stripe"] {
        assert_eq!(f.configure(c).await.status, StatusCode::CREATED);
    }
    f.psp.down.store(true, Ordering::SeqCst);
    let r = f.intent("alipay", 699, "CNY").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    assert_eq!(r.headers["retry-after"], "30");
    let e = &r.body["error"];
    assert_eq!(e["code"], "channel_unavailable");
    assert_eq!(e["channel"], "alipay");
    assert_eq!(e["retry_after"], 30);
    assert_eq!(
        e["message"],
        "Alipay is currently unavailable. Please try again later or use an alternative channel."
    );
    // wechat collects CNY; stripe does not; promptpay is accepted but not configured.
    assert_eq!(e["alternatives"], json!(["wechat"]));
    assert_eq!(f.psp.calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        f.sleeper.take(),
        vec![Duration::from_secs(1), Duration::from_secs(5)]
    );
    assert_eq!(f.health("alipay").await["consecutive_failures"], 3);
    f.srv.stop().await;
}

// Real time, kept short: the server's request timeout is 2 s, so the PSP budget is 1.6 s.
#[tokio::test]
async fn a_hanging_channel_answers_503_with_alternatives_before_the_request_timeout() {
    let srv = common::start_with(|c| c.server.request_timeout_ms = 2_000).await;
    let f = fixture_on(srv, 2_000, |_| {}).await;
    for c in ["alipay", "wechat"] {
        assert_eq!(f.configure(c).await.status, StatusCode::CREATED);
    }
    f.psp.hang.store(true, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let r = f.intent("alipay", 699, "CNY").await;
    let took = started.elapsed();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    assert!(
        took < Duration::from_millis(2_000),
        "answered after {took:?}"
    );
    assert_eq!(r.headers["retry-after"], "30");
    assert_eq!(r.body["error"]["code"], "channel_unavailable");
    assert_eq!(r.body["error"]["alternatives"], json!(["wechat"]));
    // The 1 s retry delay and another attempt do not fit the 1.6 s budget: one attempt, no wait.
    assert_eq!(f.psp.calls.load(Ordering::SeqCst), 1);
    assert!(f.sleeper.take().is_empty());
    f.srv.stop().await;
}

#[tokio::test]
async fn an_open_breaker_fails_fast_and_recovers_through_a_half_open_probe() {
    let f = fixture_with(|c| {
        c.breaker_failure_threshold = 3;
        c.breaker_cooldown_ms = 30_000;
    })
    .await;
    f.configure("alipay").await;
    f.configure("wechat").await;
    f.psp.down.store(true, Ordering::SeqCst);

    let first = f.intent("alipay", 699, "CNY").await;
    assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(f.psp.calls.load(Ordering::SeqCst), 3);
    let h = f.health("alipay").await;
    assert_eq!(h["state"], "open");
    assert_eq!(h["failures_total"], 3);
    let metrics = f
        .srv
        .http
        .get(format!("{}/metrics", f.srv.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("ipay_channel_breaker_state{channel=\"alipay\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("ipay_channel_failures_total{channel=\"alipay\"}"));

    // Open: no call reaches the PSP, no retry waits, and the open channel is no alternative.
    f.sleeper.take();
    let fast = f.intent("alipay", 699, "CNY").await;
    assert_eq!(fast.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(fast.body["error"]["alternatives"], json!(["wechat"]));
    assert_eq!(f.psp.calls.load(Ordering::SeqCst), 3);
    assert!(f.sleeper.take().is_empty());
    let wechat_503 = f.intent("wechat", 699, "CNY").await;
    assert_eq!(wechat_503.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(wechat_503.body["error"]["alternatives"], json!([]));

    // After the cool-down one probe goes through; it fails, so the breaker opens again.
    f.srv.clock.advance_ms(30_000);
    let probe = f.intent("alipay", 699, "CNY").await;
    assert_eq!(probe.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(f.psp.calls.load(Ordering::SeqCst), 3 + 3 + 1);
    assert_eq!(f.health("alipay").await["state"], "open");

    // The PSP is back: the next probe succeeds and closes the breaker.
    f.psp.down.store(false, Ordering::SeqCst);
    f.srv.clock.advance_ms(30_000);
    let ok = f.intent("alipay", 699, "CNY").await;
    assert_eq!(ok.status, StatusCode::CREATED, "{:?}", ok.body);
    let h = f.health("alipay").await;
    assert_eq!(h["state"], "closed");
    assert_eq!(h["consecutive_failures"], 0);
    f.srv.stop().await;
}

fn paid(notification: &str, intent: &str, value: i64, currency: &str) -> Value {
    json!({"id": notification, "intent": intent, "status": "paid", "amount": {"value": value, "currency": currency}})
}

#[tokio::test]
async fn a_verified_callback_settles_the_intent_once_and_a_duplicate_is_only_acknowledged() {
    let f = fixture().await;
    f.configure("alipay").await;
    let pi = f.intent("alipay", 699, "CNY").await.body;
    let id = pi["id"].as_str().unwrap();

    let r = f
        .callback("/callbacks/alipay", paid("n-1", id, 699, "CNY"), SECRET, 0)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body, Value::String("success".into()));
    assert_eq!(r.headers["content-type"], "text/plain");
    let got = f
        .srv
        .get(&format!("/v1/payment-intents/{id}"), &f.key)
        .await;
    assert_eq!(got.body["status"], "succeeded");
    assert_eq!(got.body["channel_reference"], "psp_ref");

    let again = f
        .callback("/callbacks/alipay", paid("n-1", id, 699, "CNY"), SECRET, 0)
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, Value::String("success".into()));
    assert_eq!(f.events("payment_intent.succeeded", id).await.len(), 1);

    // A different notification about the settled intent changes nothing and is acknowledged.
    let late_fail = json!({"id": "n-2", "intent": id, "status": "failed"});
    let r = f.callback("/callbacks/alipay", late_fail, SECRET, 0).await;
    assert_eq!(r.status, StatusCode::OK);
    let got = f
        .srv
        .get(&format!("/v1/payment-intents/{id}"), &f.key)
        .await;
    assert_eq!(got.body["status"], "succeeded");
    f.srv.stop().await;
}

#[tokio::test]
async fn bad_signature_stale_timestamp_and_unknown_intent_are_refused_and_nothing_is_applied() {
    let f = fixture().await;
    f.configure("alipay").await;
    let pi = f.intent("alipay", 699, "CNY").await.body;
    let id = pi["id"].as_str().unwrap();

    let forged = f
        .callback(
            "/callbacks/alipay",
            paid("n-1", id, 699, "CNY"),
            "not-the-secret",
            0,
        )
        .await;
    assert_eq!(forged.status, StatusCode::BAD_REQUEST);
    assert_eq!(forged.code(), "signature_mismatch");

    let stale = f
        .callback(
            "/callbacks/alipay",
            paid("n-1", id, 699, "CNY"),
            SECRET,
            3_600,
        )
        .await;
    assert_eq!(stale.status, StatusCode::BAD_REQUEST);
    assert_eq!(stale.code(), "timestamp_stale");

    let other = PaymentIntentId::new_at(1_800_000_000_000).to_string();
    let unknown = f
        .callback(
            "/callbacks/alipay",
            paid("n-3", &other, 699, "CNY"),
            SECRET,
            0,
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.code(), "resource_missing");

    let garbage = f
        .callback("/callbacks/alipay", json!({"nothing": 1}), SECRET, 0)
        .await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST);
    let no_channel = f
        .callback("/callbacks/paypal", paid("n-4", id, 699, "CNY"), SECRET, 0)
        .await;
    assert_eq!(no_channel.status, StatusCode::NOT_FOUND);
    // Wrong channel for this intent.
    f.configure("wechat").await;
    let wrong = f
        .callback("/callbacks/wechat", paid("n-5", id, 699, "CNY"), SECRET, 0)
        .await;
    assert_eq!(wrong.status, StatusCode::NOT_FOUND);

    let got = f
        .srv
        .get(&format!("/v1/payment-intents/{id}"), &f.key)
        .await;
    assert_eq!(got.body["status"], "pending");

    // The refused notification id was not recorded: the genuine one still applies.
    let genuine = f
        .callback("/callbacks/alipay", paid("n-1", id, 699, "CNY"), SECRET, 0)
        .await;
    assert_eq!(genuine.status, StatusCode::OK);
    let got = f
        .srv
        .get(&format!("/v1/payment-intents/{id}"), &f.key)
        .await;
    assert_eq!(got.body["status"], "succeeded");
    f.srv.stop().await;
}

#[tokio::test]
async fn a_paid_amount_that_differs_from_the_intent_is_flagged_not_marked_paid() {
    let f = fixture().await;
    f.configure("alipay").await;
    let id = f.intent("alipay", 699, "CNY").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    for (n, body) in [
        ("n-less", paid("n-less", &id, 1, "CNY")),
        ("n-eur", paid("n-eur", &id, 699, "EUR")),
    ] {
        let r = f.callback("/callbacks/alipay", body, SECRET, 0).await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
    }
    let got = f
        .srv
        .get(&format!("/v1/payment-intents/{id}"), &f.key)
        .await;
    assert_eq!(got.body["status"], "pending");
    let flagged = f.events("payment_intent.amount_mismatch", &id).await;
    assert_eq!(flagged.len(), 2);
    let detail = &flagged
        .iter()
        .find(|e| e["data"]["notification_id"] == "n-less")
        .unwrap()["data"]["detail"];
    assert_eq!(detail["expected"], json!({"value": 699, "currency": "CNY"}));
    assert_eq!(detail["received"], json!({"value": 1, "currency": "CNY"}));
    f.srv.stop().await;
}

#[tokio::test]
async fn seed_paths_route_stripe_and_callbacks_are_rate_limited_per_provider() {
    let f = fixture_with(|c| c.callback_rate_per_provider = 2).await;
    f.configure("stripe").await;
    let id = f.intent("stripe", 1_000, "EUR").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = f
        .callback(
            "/api/payments/webhook",
            paid("evt_1", &id, 1_000, "EUR"),
            SECRET,
            0,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let dup = f
        .callback(
            "/callbacks/stripe",
            paid("evt_1", &id, 1_000, "EUR"),
            SECRET,
            0,
        )
        .await;
    assert_eq!(dup.status, StatusCode::OK);
    let limited = f
        .callback(
            "/callbacks/stripe",
            paid("evt_1", &id, 1_000, "EUR"),
            SECRET,
            0,
        )
        .await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        limited.body
    );
    assert_eq!(limited.code(), "rate_limited");
    assert!(limited.headers.contains_key("retry-after"));
    let msp = f
        .callback(
            "/api/webhooks/multisafepay",
            paid("x", &id, 1, "EUR"),
            SECRET,
            0,
        )
        .await;
    assert_eq!(
        msp.status,
        StatusCode::NOT_FOUND,
        "multisafepay is not a channel of the fake factory"
    );
    f.srv.stop().await;
}

#[tokio::test]
async fn channel_routes_need_the_channel_permissions() {
    let f = fixture().await;
    let limited = f
        .srv
        .post(
            "/v1/api-keys",
            &f.key,
            json!({"label": "read only", "permissions": ["payment_intents:read"]}),
        )
        .await;
    assert_eq!(limited.status, StatusCode::CREATED, "{:?}", limited.body);
    let k = limited.body["secret"].as_str().unwrap();
    assert_eq!(
        f.srv.get("/v1/channels", k).await.code(),
        "permission_denied"
    );
    let r = f
        .srv
        .post(
            "/v1/channels",
            k,
            json!({"channel": "alipay", "credentials": {"secret": SECRET}, "notify_url": "https://x.example/cb"}),
        )
        .await;
    assert_eq!(r.code(), "permission_denied");
    f.srv.stop().await;
}
