//! Self-serve go-live over real HTTP: a merchant registers, creates an API key and uses it on
//! `/v1`, adds an outbound event endpoint (a Python receiver on loopback checks the signature
//! with its own hmac), configures MultiSafepay against the PSP simulator, goes live, and a
//! consumer pays a live session through the simulator; the simulator's signed callback lands,
//! the session is paid and the signed `session.paid` event arrives. Plus bad inputs (coded
//! errors) and isolation between merchants (404).

mod common;

use common::{LastMileUser, PyReceiver, TestServer};
use ipay_adapters::factory::AdapterFactory;
use ipay_adapters::sim::{SimHandle, SimOptions, Simulator};
use ipay_engine::channels::ChannelSetup;
use ipay_engine::channels::vault::MasterKey;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;

const ADMIN: &str = "admin-token-for-golive-0123456789";

struct World {
    srv: TestServer,
    sim: SimHandle,
}

async fn world() -> World {
    let sim = Simulator::start(SimOptions::default()).await.unwrap();
    let srv = common::start_with(|c| {
        c.admin.token = ADMIN.into();
        c.webhooks.allow_insecure_loopback = true;
        c.lastmile.sessions.pay_base_url = String::new();
    })
    .await;
    let config = sim.channels_config();
    srv.engine
        .set_channels(ChannelSetup {
            factory: Some(Arc::new(AdapterFactory::new(&config).unwrap())),
            config,
            master_key: Some(MasterKey::generate()),
            ..Default::default()
        })
        .unwrap();
    World { srv, sim }
}

impl World {
    async fn call(
        &self,
        method: Method,
        path: &str,
        u: &LastMileUser,
        body: Option<Value>,
    ) -> common::Resp {
        self.srv.call(method, path, Some(&u.token), body).await
    }

    fn msp_notify_url(&self) -> String {
        format!("{}/api/webhooks/multisafepay", self.srv.base)
    }

    async fn configure_msp(&self, u: &LastMileUser, livemode: bool) -> common::Resp {
        let body = json!({"livemode": livemode, "credentials": self.sim.credentials("multisafepay"),
            "notify_url": self.msp_notify_url()});
        self.call(
            Method::PUT,
            "/api/merchant/channels/multisafepay",
            u,
            Some(body),
        )
        .await
    }

    /// A new order's session: the create answer.
    async fn session(&self, u: &LastMileUser) -> Value {
        let order = json!({
            "customer": {"name": "Jan de Vries",
                "address": {"line1": "Damrak 1", "city": "Amsterdam", "postal_code": "1012 LG", "country": "NL"}},
            "items": [{"sku": "MUG", "name": "Mug", "qty": 1, "unit_price": 2_599}],
            "amount": {"value": 2_599, "currency": "EUR"},
            "carrier_code": "POSTNL",
            "ipay_flag": true
        });
        let r = self.call(Method::POST, "/api/orders", u, Some(order)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let oid = r.body["id"].as_str().unwrap();
        let r = self
            .call(
                Method::POST,
                &format!("/api/orders/{oid}/create-session"),
                u,
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.body
    }

    async fn consumer(
        &self,
        token: &str,
        method: Method,
        tail: &str,
        body: Option<Value>,
    ) -> common::Resp {
        self.srv
            .call(method, &format!("/api/session/{token}{tail}"), None, body)
            .await
    }
}

fn token_of(s: &Value) -> String {
    let url = s["pay_url"].as_str().unwrap();
    url.rsplit("/pay/").next().unwrap().to_string()
}

fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id: {v}"))
        .to_string()
}

/// Creates a key over `/api` and checks it works on `/v1`; returns (key id, secret).
async fn key_used_on_v1(w: &World, u: &LastMileUser, livemode: bool) -> (String, String) {
    let r = w
        .call(
            Method::POST,
            "/api/merchant/api-keys",
            u,
            Some(json!({"livemode": livemode, "label": "shop backend"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let secret = r.body["secret"].as_str().unwrap().to_string();
    let prefix = if livemode { "sk_live_" } else { "sk_test_" };
    assert!(secret.starts_with(prefix), "{secret}");
    let id = id_of(&r.body);
    let v1 = w.srv.get("/v1/api-keys", &secret).await;
    assert_eq!(v1.status, StatusCode::OK, "{:?}", v1.body);
    assert!(v1.body.to_string().contains(&id), "{:?}", v1.body);
    // The listing shows the key, never a secret.
    let list = w.call(Method::GET, "/api/merchant/api-keys", u, None).await;
    assert_eq!(list.status, StatusCode::OK, "{:?}", list.body);
    assert!(list.body.to_string().contains(&id));
    assert!(!list.body.to_string().contains(&secret));
    (id, secret)
}

#[tokio::test]
async fn a_registered_merchant_goes_live_and_a_consumer_pays_through_the_simulator() {
    let w = world().await;
    let rx = PyReceiver::start();
    let u = w.srv.lastmile_merchant("Bakkerij Jansen").await;

    // Fresh: test mode by the server's default; nothing to pay a live session with.
    let mode = w.call(Method::GET, "/api/merchant/mode", &u, None).await;
    assert_eq!(mode.status, StatusCode::OK, "{:?}", mode.body);
    assert_eq!(mode.body["livemode"], false);
    assert_eq!(mode.body["source"], "server_default");
    assert_eq!(mode.body["test_channels"], json!(["sandbox"]));
    assert_eq!(mode.body["live_channels"], json!([]));
    let early = w
        .call(
            Method::PUT,
            "/api/merchant/mode",
            &u,
            Some(json!({"livemode": true})),
        )
        .await;
    assert_eq!(early.status, StatusCode::CONFLICT, "{:?}", early.body);
    assert_eq!(early.code(), "live_channel_required");

    // The keys registration made were never shown, so they are revoked; new ones work on /v1.
    let keys = w
        .call(Method::GET, "/api/merchant/api-keys", &u, None)
        .await;
    let defaults = keys.body["data"].as_array().unwrap();
    assert_eq!(defaults.len(), 2, "{:?}", keys.body);
    assert!(
        defaults.iter().all(|k| !k["revoked_at"].is_null()),
        "{:?}",
        keys.body
    );
    let (test_key, test_secret) = key_used_on_v1(&w, &u, false).await;
    let (_, live_secret) = key_used_on_v1(&w, &u, true).await;
    let revoked = w
        .call(
            Method::DELETE,
            &format!("/api/merchant/api-keys/{test_key}"),
            &u,
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{:?}", revoked.body);
    assert!(!revoked.body["revoked_at"].is_null());
    assert_eq!(
        w.srv.get("/v1/api-keys", &test_secret).await.status,
        StatusCode::UNAUTHORIZED
    );

    // An endpoint for live last-mile events; the receiver checks signatures with its secret.
    let ep = w
        .call(Method::POST, "/api/merchant/webhook-endpoints", &u,
            Some(json!({"livemode": true, "url": format!("{}/events", rx.base), "enabled_events": ["session.paid"]})))
        .await;
    assert_eq!(ep.status, StatusCode::CREATED, "{:?}", ep.body);
    let whsec = ep.body["secret"].as_str().unwrap().to_string();
    assert!(whsec.starts_with("whsec_"), "{whsec}");
    assert_eq!(ep.body["livemode"], true);
    rx.configure(json!({"secrets": [whsec]})).await;

    // MultiSafepay, live, against the simulator: stored, never shown again.
    let ch = w.configure_msp(&u, true).await;
    assert_eq!(ch.status, StatusCode::CREATED, "{:?}", ch.body);
    let api_key = w.sim.credentials("multisafepay")["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    let listed = w
        .call(Method::GET, "/api/merchant/channels", &u, None)
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["data"][0]["channel"], "multisafepay");
    for body in [&ch.body, &listed.body] {
        assert!(
            !body.to_string().contains(&api_key),
            "credentials leaked: {body}"
        );
    }
    let again = w.configure_msp(&u, true).await;
    assert_eq!(
        again.status,
        StatusCode::OK,
        "replacing answers 200: {:?}",
        again.body
    );

    // Live.
    let live = w
        .call(
            Method::PUT,
            "/api/merchant/mode",
            &u,
            Some(json!({"livemode": true})),
        )
        .await;
    assert_eq!(live.status, StatusCode::OK, "{:?}", live.body);
    assert_eq!(live.body["livemode"], true);
    assert_eq!(live.body["source"], "merchant");
    assert_eq!(live.body["live_channels"], json!(["multisafepay"]));

    // A live session: the consumer sees the merchant's channel, not the sandbox.
    let s = w.session(&u).await;
    assert_eq!(s["livemode"], true, "{s}");
    let token = token_of(&s);
    let page = w.consumer(&token, Method::GET, "", None).await;
    assert_eq!(
        page.body["channels"],
        json!(["multisafepay"]),
        "{:?}",
        page.body
    );
    let sandbox = w
        .consumer(
            &token,
            Method::POST,
            "/start-payment",
            Some(json!({"channel": "sandbox", "simulate": "succeed"})),
        )
        .await;
    assert_eq!(
        sandbox.status,
        StatusCode::BAD_REQUEST,
        "{:?}",
        sandbox.body
    );
    assert_eq!(sandbox.code(), "channel_not_accepted");
    let simulated = w
        .consumer(
            &token,
            Method::POST,
            "/start-payment",
            Some(json!({"channel": "multisafepay", "simulate": "succeed"})),
        )
        .await;
    assert_eq!(
        simulated.status,
        StatusCode::FORBIDDEN,
        "{:?}",
        simulated.body
    );
    assert_eq!(simulated.code(), "test_mode_only");

    // The consumer pays in the simulator; its signed callback settles the live intent.
    let started = w
        .consumer(
            &token,
            Method::POST,
            "/start-payment",
            Some(json!({"channel": "multisafepay"})),
        )
        .await;
    assert_eq!(started.status, StatusCode::OK, "{:?}", started.body);
    assert_eq!(started.body["payment"]["channel"], "multisafepay");
    let sid = id_of(&s);
    let detail = w
        .call(
            Method::GET,
            &format!("/api/payment-sessions/{sid}"),
            &u,
            None,
        )
        .await;
    let intent = detail.body["payment_intent"].as_str().unwrap().to_string();
    let delivered = w.sim.pay(&intent).await.unwrap();
    assert!(
        delivered.acknowledged(),
        "{:?} {}",
        delivered.status,
        delivered.response_body
    );
    let paid = w.consumer(&token, Method::GET, "", None).await;
    assert_eq!(paid.body["status"], "PAID", "{:?}", paid.body);
    let pi = w
        .srv
        .get(&format!("/v1/payment-intents/{intent}"), &live_secret)
        .await;
    assert_eq!(pi.status, StatusCode::OK, "{:?}", pi.body);
    assert_eq!(pi.body["status"], "succeeded");
    assert_eq!(pi.body["livemode"], true);

    // The signed session.paid event arrives, verified by the receiver's own hmac.
    let got = rx
        .wait("session.paid", |r| {
            r.iter()
                .any(|d| d["body"].as_str().unwrap_or("").contains("session.paid"))
        })
        .await;
    let d = got
        .iter()
        .find(|d| d["body"].as_str().unwrap().contains("session.paid"))
        .unwrap();
    assert_eq!(d["path"], "/events");
    let checks = &d["verified"][&whsec];
    assert_eq!(checks["spec"], true, "{d:#}");
    assert_eq!(checks["standard"], true, "{d:#}");
    let event: Value = serde_json::from_str(d["body"].as_str().unwrap()).unwrap();
    assert_eq!(event["type"], "session.paid");
    // The payload's object is the session: live, the one paid.
    assert_eq!(event["data"]["livemode"], true, "{event}");
    assert_eq!(event["data"]["id"], sid.as_str(), "{event}");

    // Back to test: new sessions are test sessions, paid with the sandbox and simulate again.
    let test = w
        .call(
            Method::PUT,
            "/api/merchant/mode",
            &u,
            Some(json!({"livemode": false})),
        )
        .await;
    assert_eq!(test.body["livemode"], false, "{:?}", test.body);
    let t = w.session(&u).await;
    assert_eq!(t["livemode"], false);
    let sim = w
        .consumer(
            &token_of(&t),
            Method::POST,
            "/start-payment",
            Some(json!({"channel": "sandbox", "simulate": "succeed"})),
        )
        .await;
    assert_eq!(sim.status, StatusCode::OK, "{:?}", sim.body);
    assert_eq!(sim.body["status"], "PAID");

    // A channel configured in test mode after the test service exists is offered and works.
    assert_eq!(w.configure_msp(&u, false).await.status, StatusCode::CREATED);
    let t2 = w.session(&u).await;
    let token2 = token_of(&t2);
    let page2 = w.consumer(&token2, Method::GET, "", None).await;
    assert_eq!(page2.body["channels"], json!(["sandbox", "multisafepay"]));
    let r = w
        .consumer(
            &token2,
            Method::POST,
            "/start-payment",
            Some(json!({"channel": "multisafepay"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let detail = w
        .call(
            Method::GET,
            &format!("/api/payment-sessions/{}", id_of(&t2)),
            &u,
            None,
        )
        .await;
    let intent2 = detail.body["payment_intent"].as_str().unwrap().to_string();
    assert!(w.sim.pay(&intent2).await.unwrap().acknowledged());
    let paid2 = w.consumer(&token2, Method::GET, "", None).await;
    assert_eq!(paid2.body["status"], "PAID", "{:?}", paid2.body);
    w.srv.stop().await;
    w.sim.stop().await;
}

#[tokio::test]
async fn endpoints_are_updated_rotated_and_deleted_by_their_merchant_only() {
    let w = world().await;
    let a = w.srv.lastmile_merchant("Merchant A").await;
    let b = w.srv.lastmile_merchant("Merchant B").await;
    let created = w
        .call(
            Method::POST,
            "/api/merchant/webhook-endpoints",
            &a,
            Some(json!({"livemode": false, "url": "http://127.0.0.1:9/a"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let id = id_of(&created.body);
    let all_types = created.body["enabled_events"].as_array().unwrap();
    assert!(
        all_types.contains(&json!("parcel.delivered")),
        "{:?}",
        created.body
    );
    let (key, _) = key_used_on_v1(&w, &a, false).await;
    assert_eq!(w.configure_msp(&a, true).await.status, StatusCode::CREATED);

    // Merchant B sees none of it and touches none of it.
    for path in ["/api/merchant/webhook-endpoints", "/api/merchant/channels"] {
        let r = w.call(Method::GET, path, &b, None).await;
        assert_eq!(r.body["data"], json!([]), "{path}: {:?}", r.body);
    }
    let listed = w
        .call(Method::GET, "/api/merchant/api-keys", &b, None)
        .await;
    assert!(!listed.body.to_string().contains(&key));
    let attempts = [
        (
            Method::PATCH,
            format!("/api/merchant/webhook-endpoints/{id}"),
            Some(json!({"url": "http://127.0.0.1:9/b"})),
        ),
        (
            Method::DELETE,
            format!("/api/merchant/webhook-endpoints/{id}"),
            None,
        ),
        (
            Method::POST,
            format!("/api/merchant/webhook-endpoints/{id}/rotate"),
            None,
        ),
        (
            Method::DELETE,
            format!("/api/merchant/api-keys/{key}"),
            None,
        ),
        (
            Method::DELETE,
            "/api/merchant/api-keys/key_nonsense".to_string(),
            None,
        ),
    ];
    for (m, path, body) in attempts {
        let r = w.call(m.clone(), &path, &b, body).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{m} {path}: {:?}", r.body);
        assert_eq!(r.code(), "resource_missing");
    }

    // A's own changes, held to the same rules as on creation.
    let path = format!("/api/merchant/webhook-endpoints/{id}");
    for (body, code) in [
        (json!({"url": "https://10.0.0.7/x"}), "url_not_allowed"),
        (
            json!({"enabled_events": ["payment.everything"]}),
            "event_type_unknown",
        ),
        (json!({"secret": "mine"}), "parameter_unknown"),
    ] {
        let r = w.call(Method::PATCH, &path, &a, Some(body.clone())).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, code),
            "{body}: {:?}",
            r.body
        );
    }
    let changed = w
        .call(Method::PATCH, &format!("/api/merchant/webhook-endpoints/{id}"), &a,
            Some(json!({"url": "http://127.0.0.1:9/new", "enabled_events": ["session.paid", "parcel.delivered"]})))
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);
    assert_eq!(changed.body["url"], "http://127.0.0.1:9/new");
    assert_eq!(
        changed.body["enabled_events"],
        json!(["session.paid", "parcel.delivered"])
    );
    assert!(changed.body.get("secret").is_none());
    let rotated = w
        .call(
            Method::POST,
            &format!("/api/merchant/webhook-endpoints/{id}/rotate"),
            &a,
            Some(json!({"overlap_seconds": 0})),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{:?}", rotated.body);
    assert_ne!(rotated.body["secret"], created.body["secret"]);
    let live_only = w
        .call(
            Method::GET,
            "/api/merchant/webhook-endpoints?livemode=true",
            &a,
            None,
        )
        .await;
    assert_eq!(live_only.body["data"], json!([]), "{:?}", live_only.body);
    let deleted = w
        .call(
            Method::DELETE,
            &format!("/api/merchant/webhook-endpoints/{id}"),
            &a,
            None,
        )
        .await;
    assert_eq!(deleted.body["deleted"], true, "{:?}", deleted.body);
    let gone = w
        .call(Method::GET, "/api/merchant/webhook-endpoints", &a, None)
        .await;
    assert_eq!(gone.body["data"], json!([]));
    w.srv.stop().await;
    w.sim.stop().await;
}

#[tokio::test]
async fn bad_go_live_inputs_get_coded_errors() {
    let w = world().await;
    let u = w.srv.lastmile_merchant("Careless BV").await;
    let msp = w.sim.credentials("multisafepay");
    let notify = w.msp_notify_url();
    let cases: Vec<(Method, &str, Value, StatusCode, &str)> = vec![
        (
            Method::POST,
            "/api/merchant/api-keys",
            json!({"label": "no mode"}),
            StatusCode::BAD_REQUEST,
            "parameter_missing",
        ),
        (
            Method::POST,
            "/api/merchant/api-keys",
            json!({"livemode": false, "permissions": ["everything"]}),
            StatusCode::BAD_REQUEST,
            "permission_unknown",
        ),
        (
            Method::POST,
            "/api/merchant/api-keys",
            json!({"livemode": false, "ip_whitelist": ["not-an-ip"]}),
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
        ),
        (
            Method::POST,
            "/api/merchant/webhook-endpoints",
            json!({"livemode": true, "url": "https://10.1.2.3/hook"}),
            StatusCode::BAD_REQUEST,
            "url_not_allowed",
        ),
        (
            Method::POST,
            "/api/merchant/webhook-endpoints",
            json!({"livemode": true, "url": "ftp://example.com/x"}),
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
        ),
        (
            Method::POST,
            "/api/merchant/webhook-endpoints",
            json!({"livemode": true, "url": "https://example.com/x", "enabled_events": ["session.payd"]}),
            StatusCode::BAD_REQUEST,
            "event_type_unknown",
        ),
        (
            Method::PUT,
            "/api/merchant/channels/paypal",
            json!({"livemode": true, "credentials": {"k": "v"}, "notify_url": notify}),
            StatusCode::BAD_REQUEST,
            "channel_unknown",
        ),
        (
            Method::PUT,
            "/api/merchant/channels/multisafepay",
            json!({"livemode": true, "credentials": "secret", "notify_url": notify}),
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
        ),
        (
            Method::PUT,
            "/api/merchant/channels/multisafepay",
            json!({"livemode": true, "credentials": {"api_key": 42}, "notify_url": notify}),
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
        ),
        (
            Method::PUT,
            "/api/merchant/channels/multisafepay",
            json!({"livemode": true, "credentials": {"apikey": "x"}, "notify_url": notify}),
            StatusCode::BAD_REQUEST,
            "credentials_invalid",
        ),
        (
            Method::PUT,
            "/api/merchant/channels/multisafepay",
            json!({"livemode": true, "credentials": msp, "notify_url": "not a url"}),
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
        ),
        (
            Method::PUT,
            "/api/merchant/mode",
            json!({"livemode": "yes"}),
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
        ),
        (
            Method::PUT,
            "/api/merchant/mode",
            json!({"livemode": true}),
            StatusCode::CONFLICT,
            "live_channel_required",
        ),
    ];
    for (m, path, body, status, code) in cases {
        let r = w.call(m.clone(), path, &u, Some(body.clone())).await;
        assert_eq!(
            (r.status, r.code()),
            (status, code),
            "{m} {path} {body}: {:?}",
            r.body
        );
        assert!(
            !r.body
                .to_string()
                .contains(msp["api_key"].as_str().unwrap()),
            "{:?}",
            r.body
        );
    }
    let q = w
        .call(
            Method::GET,
            "/api/merchant/channels?livemode=maybe",
            &u,
            None,
        )
        .await;
    assert_eq!(q.status, StatusCode::BAD_REQUEST, "{:?}", q.body);
    let anon = w
        .srv
        .call(Method::GET, "/api/merchant/mode", None, None)
        .await;
    assert_eq!(anon.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anon.code(), "token_missing");
    let operator = w.srv.lastmile_user_by("operator", ADMIN, None).await;
    for path in [
        "/api/merchant/mode",
        "/api/merchant/api-keys",
        "/api/merchant/channels",
    ] {
        let r = w.call(Method::GET, path, &operator, None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {:?}", r.body);
        assert_eq!(r.code(), "role_forbidden");
    }
    w.srv.stop().await;
    w.sim.stop().await;
}

#[tokio::test]
async fn malformed_go_live_requests_never_answer_5xx() {
    let w = world().await;
    let u = w.srv.lastmile_merchant("Fuzzed BV").await;
    let routes = [
        (Method::PUT, "/api/merchant/mode"),
        (Method::POST, "/api/merchant/api-keys"),
        (Method::DELETE, "/api/merchant/api-keys/key_%00"),
        (Method::POST, "/api/merchant/webhook-endpoints"),
        (Method::PATCH, "/api/merchant/webhook-endpoints/we_x"),
        (Method::DELETE, "/api/merchant/webhook-endpoints/svc_x"),
        (
            Method::POST,
            "/api/merchant/webhook-endpoints/we_%FF/rotate",
        ),
        (Method::PUT, "/api/merchant/channels/stripe"),
        (Method::PUT, "/api/merchant/channels/%2e%2e"),
    ];
    let bodies = [
        json!(null),
        json!(true),
        json!(-1),
        json!("x"),
        json!([]),
        json!({}),
        json!({"livemode": null}),
        json!({"livemode": true, "url": "https://[::1]:0/x", "enabled_events": [""]}),
        json!({"livemode": false, "credentials": {"secret_key": "sk_test_x", "webhook_secret": ""}, "notify_url": "https://example.com/x"}),
        json!({"livemode": true, "credentials": {"secret_key": {"nested": [1]}}, "notify_url": ""}),
        json!({"overlap_seconds": i64::MAX, "expires_in_days": i64::MIN}),
    ];
    for (m, path) in &routes {
        for body in &bodies {
            let r = w.call(m.clone(), path, &u, Some(body.clone())).await;
            assert!(
                r.status.is_client_error() || r.status.is_success(),
                "{m} {path} {body}: {} {:?}",
                r.status,
                r.body
            );
            if r.status.is_client_error() {
                assert_ne!(r.code(), "<none>", "{m} {path} {body}: {:?}", r.body);
            }
        }
    }
    w.srv.stop().await;
    w.sim.stop().await;
}

#[tokio::test]
async fn openapi_documents_every_go_live_route_with_its_statuses() {
    let w = world().await;
    let doc = w
        .srv
        .call(Method::GET, "/openapi.json", None, None)
        .await
        .body;
    let ops: [(&str, &str, &[&str]); 12] = [
        ("/api/merchant/mode", "get", &["200", "401", "403"]),
        (
            "/api/merchant/mode",
            "put",
            &["200", "400", "401", "403", "409"],
        ),
        (
            "/api/merchant/api-keys",
            "get",
            &["200", "400", "401", "403"],
        ),
        (
            "/api/merchant/api-keys",
            "post",
            &["201", "400", "401", "403", "409"],
        ),
        (
            "/api/merchant/api-keys/{id}",
            "delete",
            &["200", "401", "403", "404"],
        ),
        (
            "/api/merchant/webhook-endpoints",
            "get",
            &["200", "400", "401", "403"],
        ),
        (
            "/api/merchant/webhook-endpoints",
            "post",
            &["201", "400", "401", "403", "409"],
        ),
        (
            "/api/merchant/webhook-endpoints/{id}",
            "patch",
            &["200", "400", "401", "403", "404"],
        ),
        (
            "/api/merchant/webhook-endpoints/{id}",
            "delete",
            &["200", "401", "403", "404"],
        ),
        (
            "/api/merchant/webhook-endpoints/{id}/rotate",
            "post",
            &["200", "400", "401", "403", "404"],
        ),
        (
            "/api/merchant/channels",
            "get",
            &["200", "400", "401", "403"],
        ),
        (
            "/api/merchant/channels/{channel}",
            "put",
            &["200", "201", "400", "401", "403", "409"],
        ),
    ];
    for (path, method, statuses) in ops {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not documented");
        for s in statuses {
            assert!(op["responses"].get(*s).is_some(), "{method} {path}: no {s}");
        }
        for p in op["parameters"].as_array().into_iter().flatten() {
            let want = if p["name"] == "livemode" {
                "query"
            } else {
                "path"
            };
            assert_eq!(p["in"], want, "{method} {path}: {p}");
        }
    }
    let q = &doc["paths"]["/api/merchant/channels"]["get"]["parameters"][0];
    assert_eq!(
        (q["name"].as_str(), q["in"].as_str()),
        (Some("livemode"), Some("query"))
    );
    w.srv.stop().await;
    w.sim.stop().await;
}
