//! The pages in a real browser: headless Chromium driven over WebDriver (`chromedriver`,
//! Debian's `chromium-driver`; `scripts/test.sh` installs both). A consumer pays a session on
//! the pay page through the PSP simulator and sees it turn paid without a reload; a merchant
//! logs in, sees the payment in the live feed and today's revenue, creates and rotates a key,
//! changes its IP whitelist and replays a webhook; an operator unlocks a locked OTP. Every page is checked with axe-core
//! (vendored under `tests/fixtures/axe-core/`) for serious or critical violations, and
//! screenshotted at phone and desktop widths into `target/screenshots/`.

mod common;

use common::{LastMileUser, PyReceiver, TestServer};
use ipay_adapters::factory::AdapterFactory;
use ipay_adapters::sim::{SimHandle, SimOptions, Simulator};
use ipay_engine::AuthContext;
use ipay_engine::channels::vault::MasterKey;
use ipay_engine::channels::{ChannelConfigInput, ChannelSetup};
use ipay_engine::clock::Timestamp;
use ipay_engine::ids::{ApiKeyId, MerchantId};
use ipay_engine::model::{ApiKey, Permission};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ADMIN: &str = "admin-token-for-pages-0123456789";
const PASSWORD: &str = "correct horse battery";
const PHONE: (u32, u32) = (390, 844);
const DESKTOP: (u32, u32) = (1280, 900);
/// How long a browser-side condition may take before the test fails.
const WAIT: Duration = Duration::from_secs(20);

// ------------------------------------------------------------------ a small WebDriver client

/// `chromedriver` on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Driver {
    async fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver missing: scripts/test.sh installs chromium-driver");
        let d = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let started = Instant::now();
        loop {
            let ready = d.http.get(format!("{}/status", d.base)).send().await;
            if let Ok(r) = ready
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                break;
            }
            assert!(started.elapsed() < WAIT, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        d
    }

    async fn browser(&self) -> Browser {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--hide-scrollbars", "--lang=en-US"]
            }
        }}});
        let r: Value = self
            .http
            .post(format!("{}/session", self.base))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}"));
        Browser {
            base: format!("{}/session/{id}", self.base),
            http: self.http.clone(),
        }
    }
}

/// One browser window.
struct Browser {
    base: String,
    http: reqwest::Client,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    async fn cmd(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let mut rb = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let v: Value = rb.send().await.unwrap().json().await.unwrap();
        assert!(
            v["value"]["error"].is_null(),
            "WebDriver {path}: {}",
            v["value"]
        );
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd(Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    async fn size(&self, (w, h): (u32, u32)) {
        self.cmd(
            Method::POST,
            "/window/rect",
            Some(json!({"width": w, "height": h})),
        )
        .await;
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT].as_str().unwrap().to_string()
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd(
            Method::POST,
            &format!("/element/{e}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Clicks a submit button and waits until the next page has loaded (a marker in the old
    /// page's global state is gone and the new document is complete).
    async fn submit(&self, css: &str) {
        self.js("window.__beforeSubmit = true; return true;").await;
        self.click(css).await;
        self.until(
            &format!("the page after {css}"),
            "return window.__beforeSubmit !== true && document.readyState === 'complete';",
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd(
            Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn clear(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd(
            Method::POST,
            &format!("/element/{e}/clear"),
            Some(json!({})),
        )
        .await;
    }

    async fn text(&self, css: &str) -> String {
        let e = self.find(css).await;
        self.cmd(Method::GET, &format!("/element/{e}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn js(&self, script: &str) -> Value {
        self.cmd(
            Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Runs a script; `None` if the browser reported an error (e.g. the page was unloading).
    async fn try_js(&self, script: &str) -> Option<Value> {
        let v: Value = self
            .http
            .post(format!("{}/execute/sync", self.base))
            .json(&json!({"script": script, "args": []}))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["value"]["error"].is_null().then(|| v["value"].clone())
    }

    /// Waits until `script` returns true in the page (a condition, checked every 100 ms).
    async fn until(&self, what: &str, script: &str) {
        let started = Instant::now();
        // A check made while the page navigates may fail; it counts as "not yet".
        while self.try_js(script).await != Some(Value::Bool(true)) {
            if started.elapsed() > WAIT {
                let page = self
                    .js("return location.href + '\\n' + document.body.innerText;")
                    .await;
                panic!(
                    "timed out waiting for {what}; the page:\n{}",
                    page.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a screenshot as `target/screenshots/{name}.png`.
    async fn screenshot(&self, name: &str) {
        use base64::Engine as _;
        let v = self.cmd(Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/screenshots");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(format!("{dir}/{name}.png"), png).unwrap();
    }

    /// Both widths' screenshots of the current page.
    async fn screenshots(&self, name: &str) {
        self.size(PHONE).await;
        self.screenshot(&format!("{name}-phone")).await;
        self.size(DESKTOP).await;
        self.screenshot(&format!("{name}-desktop")).await;
    }

    /// Runs axe-core on the page; fails on any serious or critical violation.
    async fn assert_accessible(&self, page: &str) {
        let axe = include_str!("fixtures/axe-core/axe.min.js");
        self.js(&format!("{axe}\n;return true;")).await;
        let found = self
            .cmd(
                Method::POST,
                "/execute/async",
                Some(
                    json!({"script": "var done = arguments[arguments.length - 1];
                    axe.run(document, {resultTypes: ['violations']}).then(function (r) {
                      done(r.violations.filter(function (v) {
                        return v.impact === 'serious' || v.impact === 'critical';
                      }).map(function (v) {
                        return v.id + ' (' + v.impact + '): ' + v.nodes.map(function (n) {
                          return n.target.join(' ');
                        }).join(', ');
                      }));
                    });", "args": []}),
                ),
            )
            .await;
        assert_eq!(found, json!([]), "{page}: axe-core violations");
    }

    async fn close(self) {
        let _ = self.http.delete(&self.base).send().await;
    }
}

// ------------------------------------------------------------------ the world

struct World {
    srv: TestServer,
    sim: SimHandle,
    merchant: LastMileUser,
}

/// A server whose last-mile sessions pay live through the simulator's Alipay and WeChat.
async fn world() -> World {
    let sim = Simulator::start(SimOptions::default()).await.unwrap();
    let srv = common::start_with(|c| {
        c.admin.token = ADMIN.into();
        c.webhooks.allow_insecure_loopback = true;
        c.lastmile.events_livemode = true;
        c.lastmile.sessions.channels = vec!["alipay".into(), "wechat".into()];
        c.lastmile.sessions.pay_base_url = String::new();
        c.lastmile.sessions.heartbeat_ms = 500;
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
    let merchant = srv.lastmile_merchant("Bakkerij Jansen").await;
    let ctx = owner(merchant.merchant_id.as_deref().unwrap());
    for channel in ["alipay", "wechat"] {
        let input = ChannelConfigInput {
            channel: channel.into(),
            credentials: sim.credentials(channel),
            notify_url: format!("{}/callbacks/{channel}", srv.base),
        };
        srv.engine.configure_channel(&ctx, input).await.unwrap();
    }
    World { srv, sim, merchant }
}

/// The merchant's own live-mode engine caller (what its keys can do).
fn owner(merchant: &str) -> AuthContext {
    let m = MerchantId::parse(merchant).unwrap();
    AuthContext {
        merchant_id: m,
        livemode: true,
        key: ApiKey {
            id: ApiKeyId::new_at(0),
            label: "test".into(),
            redacted: "test".into(),
            permissions: Permission::ALL.to_vec(),
            ip_whitelist: vec![],
            livemode: true,
            merchant_id: m,
            created: Timestamp(0),
            expires_at: Timestamp(i64::MAX / 2),
            revoked_at: None,
        },
    }
}

/// A new order's session: (session id, pay token).
async fn session(srv: &TestServer, u: &LastMileUser, value: i64) -> (String, String) {
    let order = json!({
        "customer": {"name": "Jan de Vries",
            "address": {"line1": "Damrak 1", "city": "Amsterdam", "postal_code": "1012 LG", "country": "NL"}},
        "items": [{"sku": "TAART", "name": "Appeltaart", "qty": 1, "unit_price": value}],
        "amount": {"value": value, "currency": "CNY"},
        "carrier_code": "POSTNL",
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
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let token = r.body["pay_url"]
        .as_str()
        .unwrap()
        .rsplit("/pay/")
        .next()
        .unwrap()
        .to_string();
    (r.body["id"].as_str().unwrap().to_string(), token)
}

/// The engine intent a session's open payment is.
async fn intent_of(srv: &TestServer, u: &LastMileUser, session: &str) -> String {
    let r = srv
        .get(&format!("/api/payment-sessions/{session}"), &u.token)
        .await;
    r.body["payment_intent"]
        .as_str()
        .unwrap_or_else(|| panic!("no payment yet: {:?}", r.body))
        .to_string()
}

async fn login(b: &Browser, srv: &TestServer, email: &str) {
    b.goto(&format!("{}/login", srv.base)).await;
    b.type_into("#email", email).await;
    b.type_into("#password", PASSWORD).await;
    b.click("#login-account").await;
}

// ------------------------------------------------------------------ the tests

#[tokio::test]
async fn a_consumer_pays_through_the_simulator_and_the_page_turns_paid_without_a_reload() {
    let w = world().await;
    let driver = Driver::start().await;
    let b = driver.browser().await;
    let (sid, token) = session(&w.srv, &w.merchant, 2_599).await;

    b.size(PHONE).await;
    b.goto(&format!("{}/pay/{token}?lang=nl", w.srv.base)).await;
    assert_eq!(
        b.text("#amount").await.replace(['\u{a0}', '\u{202f}'], " "),
        "CN¥ 25,99"
    );
    assert_eq!(b.text("#merchant").await, "Bakkerij Jansen");
    b.assert_accessible("pay page (choose)").await;
    b.screenshots("pay-choose").await;

    b.size(PHONE).await;
    b.click("#channel-alipay").await;
    b.until("the QR code", "return !!document.getElementById('qr');")
        .await;
    b.assert_accessible("pay page (QR)").await;
    b.screenshots("pay-qr").await;

    // A marker in the page's global state survives only if the page is never reloaded.
    b.js("window.__notReloaded = true; return true;").await;
    let intent = intent_of(&w.srv, &w.merchant, &sid).await;
    let delivered = w.sim.pay(&intent).await.unwrap();
    assert!(delivered.acknowledged(), "{}", delivered.response_body);
    b.until(
        "the paid state",
        "return !document.getElementById('paid').hidden;",
    )
    .await;
    assert_eq!(b.js("return window.__notReloaded === true;").await, true);
    let otp = b.text("#otp").await;
    assert!(
        otp.len() == 4 && otp.chars().all(|c| c.is_ascii_digit()),
        "{otp}"
    );
    assert_eq!(
        b.js("return document.getElementById('pending').hidden;")
            .await,
        true
    );
    b.assert_accessible("pay page (paid)").await;
    b.screenshots("pay-paid").await;

    // Each language formats the amount its own way.
    for (lang, amount) in [
        ("en", "CN¥25.99"),
        ("de", "25,99 CN¥"),
        ("fr", "25,99 CN¥"),
        ("zh", "¥25.99"),
    ] {
        b.goto(&format!("{}/pay/{token}?lang={lang}", w.srv.base))
            .await;
        let shown = b.text("#amount").await.replace(['\u{a0}', '\u{202f}'], " ");
        assert_eq!(shown, amount, "{lang}");
        assert_eq!(
            b.js("return document.documentElement.lang;").await,
            json!(lang)
        );
    }
    b.size(PHONE).await;
    b.screenshot("pay-paid-zh-phone").await;
    b.close().await;
    w.srv.stop().await;
    w.sim.stop().await;
}

#[tokio::test]
async fn a_merchant_sees_the_payment_live_rotates_a_key_and_replays_a_webhook() {
    let w = world().await;
    let receiver = PyReceiver::start();
    let driver = Driver::start().await;
    let b = driver.browser().await;

    b.size(DESKTOP).await;
    login(&b, &w.srv, &w.merchant.email).await;
    b.until(
        "the dashboard",
        "return location.pathname === '/dashboard';",
    )
    .await;

    // A key from the dashboard, used to register a webhook endpoint over the API.
    b.type_into("#key-label", "shop backend").await;
    b.type_into("#key-ips", "127.0.0.1, 10.0.0.0/8").await;
    b.submit("#create-key").await;
    let secret = b.text("#new-secret").await;
    assert!(secret.starts_with("sk_live_"), "{secret}");
    let ep = w
        .srv
        .post(
            "/v1/webhook-endpoints",
            &secret,
            json!({"url": format!("{}/hook", receiver.base), "enabled_events": ["payment_intent.succeeded"]}),
        )
        .await;
    assert_eq!(ep.status, StatusCode::CREATED, "{:?}", ep.body);

    b.goto(&format!("{}/dashboard", w.srv.base)).await;
    b.until(
        "the live feed to connect",
        "return document.getElementById('feed-state').textContent === 'Live';",
    )
    .await;
    b.assert_accessible("dashboard").await;
    b.js("window.__notReloaded = true; return true;").await;

    // A consumer pays: the feed shows it and today's revenue follows, without a reload.
    let (sid, token) = session(&w.srv, &w.merchant, 2_599).await;
    let r = w
        .srv
        .call(
            Method::POST,
            &format!("/api/session/{token}/start-payment"),
            None,
            Some(json!({"channel": "wechat"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let intent = intent_of(&w.srv, &w.merchant, &sid).await;
    assert!(w.sim.pay(&intent).await.unwrap().acknowledged());
    // The session notices on its next read (as the pay page's poll would do).
    let v = w
        .srv
        .call(Method::GET, &format!("/api/session/{token}"), None, None)
        .await;
    assert_eq!(v.body["status"], "PAID");
    b.until(
        "session.paid in the live feed",
        "return !!document.querySelector('#feed li[data-type=\"session.paid\"]');",
    )
    .await;
    b.until(
        "today's revenue",
        "return document.getElementById('revenue-1').textContent === 'CN¥25.99';",
    )
    .await;
    assert_eq!(b.js("return window.__notReloaded === true;").await, true);
    let feed = b.text("#feed").await;
    assert!(feed.contains("session.paid"), "{feed}");

    // The webhook was delivered; replay it from the logs.
    let body = |r: &Value| -> Value { serde_json::from_str(r["body"].as_str().unwrap()).unwrap() };
    let first = receiver.wait("the webhook", |got| !got.is_empty()).await;
    assert_eq!(body(&first[0])["type"], "payment_intent.succeeded");
    let started = Instant::now();
    loop {
        b.goto(&format!("{}/dashboard", w.srv.base)).await;
        if b.js("return !!document.querySelector('#webhooks form button');")
            .await
            == true
        {
            break;
        }
        if started.elapsed() > WAIT {
            let api = w.srv.get("/v1/webhooks/logs", &secret).await;
            panic!(
                "no webhook log row: {}\nAPI: {:?}",
                b.text("#webhooks").await,
                api.body
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.screenshots("dashboard").await;
    b.size(DESKTOP).await;
    b.submit("#webhooks form button").await;
    assert_eq!(
        b.text("#notice").await,
        "The event was queued for delivery again."
    );
    let both = receiver
        .wait("the replayed webhook", |got| got.len() >= 2)
        .await;
    assert_eq!(body(&both[1])["id"], body(&first[0])["id"]);

    // Rotate the key: a new secret, and the old one no longer works.
    b.submit("#keys form[action$='/rotate'] button").await;
    let rotated = b.text("#new-secret").await;
    assert!(rotated.starts_with("sk_live_") && rotated != secret);
    let old = w.srv.get("/v1/payment-intents", &secret).await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED, "{:?}", old.body);
    assert_eq!(
        w.srv.get("/v1/payment-intents", &rotated).await.status,
        StatusCode::OK
    );
    change_whitelist(&b, &w.srv, &rotated).await;
    b.close().await;
    w.srv.stop().await;
    w.sim.stop().await;
}

/// Changes the whitelist of the key `secret` from the dashboard: a bad entry gets the API's
/// coded error; a list without this machine's address locks the key out at once.
async fn change_whitelist(b: &Browser, srv: &TestServer, secret: &str) {
    let keys = srv.get("/v1/api-keys", secret).await;
    let id = keys.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["label"] == "shop backend" && k["revoked_at"].is_null())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let form = format!("#keys form[action='/dashboard/keys/{id}/whitelist']");
    let field = format!("{form} input[name='ip_whitelist']");
    let value = b
        .js(&format!(
            "return document.querySelector(\"{field}\").value;"
        ))
        .await;
    assert_eq!(
        value, "127.0.0.1/32, 10.0.0.0/8",
        "the form shows the list in force"
    );
    b.clear(&field).await;
    b.type_into(&field, "203.0.113.0/24, 10.0.0.0/33").await;
    b.submit(&format!("{form} button")).await;
    let page = b.text("main").await;
    assert!(page.contains("parameter_invalid"), "{page}");
    assert_eq!(
        srv.get("/v1/payment-intents", secret).await.status,
        StatusCode::OK,
        "a refused list changes nothing"
    );

    b.goto(&format!("{}/dashboard", srv.base)).await;
    b.clear(&field).await;
    b.type_into(&field, "203.0.113.0/24").await;
    b.submit(&format!("{form} button")).await;
    assert_eq!(
        b.text("#notice").await,
        "The key's IP whitelist was saved; it applies from the next request."
    );
    let value = b
        .js(&format!(
            "return document.querySelector(\"{field}\").value;"
        ))
        .await;
    assert_eq!(value, "203.0.113.0/24");
    let r = srv.get("/v1/payment-intents", secret).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "ip_not_allowed")
    );
    b.assert_accessible("dashboard after a whitelist change")
        .await;
}

#[tokio::test]
async fn an_operator_unlocks_a_locked_otp_and_moves_a_parcel_from_the_desk() {
    let w = world().await;
    let srv = &w.srv;
    let operator = srv.lastmile_user_by("operator", ADMIN, None).await;
    let driver_user = srv.lastmile_user_by("driver", ADMIN, None).await;
    let (sid, token) = session(srv, &w.merchant, 1_250).await;
    let r = srv
        .call(
            Method::POST,
            &format!("/api/session/{token}/start-payment"),
            None,
            Some(json!({"channel": "alipay"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let intent = intent_of(srv, &w.merchant, &sid).await;
    assert!(w.sim.pay(&intent).await.unwrap().acknowledged());
    let paid = srv
        .call(Method::GET, &format!("/api/session/{token}"), None, None)
        .await;
    let otp = paid.body["otp"].as_str().unwrap().to_string();
    let reference = paid.body["ipay_reference_18"].as_str().unwrap().to_string();
    let moved = srv
        .post(
            &format!("/api/payment-sessions/{sid}/parcel-status"),
            &operator.token,
            json!({"status": "PICKED_UP"}),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{:?}", moved.body);
    let wrong = format!("{:04}", (otp.parse::<u32>().unwrap() + 1) % 10_000);
    let mut last = StatusCode::OK;
    for _ in 0..5 {
        last = srv
            .post(
                "/api/driver/verify-otp",
                &driver_user.token,
                json!({"ipay_reference_18": reference, "otp_4": wrong}),
            )
            .await
            .status;
    }
    assert_eq!(last, StatusCode::LOCKED);

    let driver = Driver::start().await;
    let b = driver.browser().await;
    b.size(DESKTOP).await;
    login(&b, srv, &operator.email).await;
    b.until("the desk", "return location.pathname === '/operator';")
        .await;
    let merchant = w.merchant.merchant_id.clone().unwrap();
    b.type_into("#f-merchant", &merchant).await;
    b.click("#filter").await;
    b.until(
        "the locked session",
        &format!("return !!document.getElementById('row-{sid}');"),
    )
    .await;
    assert!(b.text(&format!("#row-{sid}")).await.contains("locked"));
    assert!(b.text("#drivers").await.contains(&driver_user.email));
    b.assert_accessible("operator desk").await;
    b.screenshots("operator").await;

    b.submit(&format!("#row-{sid} form[action$='/unlock'] button"))
        .await;
    assert_eq!(
        b.text("#notice").await,
        "The reference was unlocked; the driver may try the code again."
    );
    assert!(b.text(&format!("#row-{sid}")).await.contains("0 wrong"));
    b.submit(&format!("#row-{sid} form[action$='/parcel'] button"))
        .await;
    assert!(b.text(&format!("#row-{sid}")).await.contains("IN_DELIVERY"));
    let ok = srv
        .post(
            "/api/driver/verify-otp",
            &driver_user.token,
            json!({"ipay_reference_18": reference, "otp_4": otp}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);

    // The login page too.
    b.click("header form button").await;
    b.until("the login page", "return location.pathname === '/login';")
        .await;
    b.assert_accessible("login").await;
    b.screenshots("login").await;
    b.close().await;
    w.srv.stop().await;
    w.sim.stop().await;
}
