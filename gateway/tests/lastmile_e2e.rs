//! The last mile end to end over HTTP, with the real simulators: a merchant registers, goes live
//! with a channel configured through `/api`, an order is pulled from a simulated marketplace,
//! the consumer pays through the PSP simulator (its signed callback), the parcel is delivered
//! (driver OTP, or a locker pickup), returned through the Sendcloud simulator (signed webhooks)
//! and refunded through the channel; the merchant's event endpoint receives the signed events.
//!
//! Also: a return whose refund the PSP confirms later turns refunded from the refund's committed
//! event with nobody reading it, and after a crash between the two, when last mile starts again.

mod common;

use common::{LastMileUser, PyReceiver, Resp, TestServer};
use ipay_adapters::factory::AdapterFactory;
use ipay_adapters::marketplaces::Marketplace;
use ipay_adapters::marketsim::{MarketSim, MarketSimHandle};
use ipay_adapters::sendcloud::SendcloudKeys;
use ipay_adapters::sendcloud::sim::SendcloudSim;
use ipay_adapters::sim::{SimHandle, SimOptions, Simulator};
use ipay_engine::AuthContext;
use ipay_engine::channels::ChannelSetup;
use ipay_engine::channels::vault::MasterKey;
use ipay_engine::clock::Timestamp;
use ipay_engine::ids::{ApiKeyId, MerchantId};
use ipay_engine::model::{ApiKey, Permission};
use ipay_engine::store::{EntryRange, Ledger};
use ipay_lastmile::LastMile;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const ADMIN: &str = "admin-token-for-e2e-0123456789abcdef";
const SC_PUBLIC: &str = "sc-public-key-e2e";
const SC_SECRET: &str = "sc-secret-key-e2e-0123456789";
const DPD_SECRET: &str = "dpd-locker-secret-e2e-0123456789";

struct World {
    srv: TestServer,
    psp: SimHandle,
    sendcloud: SendcloudSim,
    market: MarketSimHandle,
    rx: PyReceiver,
    shop: LastMileUser,
    driver: LastMileUser,
    /// The signing secret of the merchant's event endpoint.
    whsec: String,
    /// Whether the merchant went live (else its channel is configured in test mode).
    live: bool,
}

/// The simulators and a server wired to them; `settle` false: this node commits settle
/// markers but applies none (as if it died after each commit).
async fn world(settle: bool) -> World {
    let psp = Simulator::start(SimOptions::default()).await.unwrap();
    let sendcloud = SendcloudSim::start(SendcloudKeys {
        public_key: SC_PUBLIC.into(),
        secret_key: SC_SECRET.into(),
    })
    .await
    .unwrap();
    let market = MarketSim::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (sc_base, urls) = (sendcloud.base_url().to_string(), market.urls());
    let srv = common::start_with(|c| {
        c.admin.token = ADMIN.into();
        c.webhooks.allow_insecure_loopback = true;
        c.lastmile.sessions.pay_base_url = String::new();
        if !settle {
            c.lastmile.sessions.settle_concurrency = 0;
        }
        c.lastmile.sync.urls = urls;
        c.lastmile.sync.tick_ms = 0;
        c.lastmile.returns.sendcloud_base_url = sc_base;
        c.lastmile.returns.sendcloud_public_key = Some(SC_PUBLIC.into());
        c.lastmile.returns.sendcloud_secret_key = Some(SC_SECRET.into());
        c.lastmile
            .lockers
            .carrier_secrets
            .insert("dpd".into(), DPD_SECRET.into());
    })
    .await;
    let config = psp.channels_config();
    srv.engine
        .set_channels(ChannelSetup {
            factory: Some(Arc::new(AdapterFactory::new(&config).unwrap())),
            config,
            master_key: Some(MasterKey::generate()),
            ..Default::default()
        })
        .unwrap();
    let driver = srv.lastmile_user_by("driver", ADMIN, None).await;
    let shop = srv.lastmile_merchant("Dragon Goods BV").await;
    let rx = PyReceiver::start();
    World {
        srv,
        psp,
        sendcloud,
        market,
        rx,
        shop,
        driver,
        whsec: String::new(),
        live: false,
    }
}

/// A caller with every permission for `merchant` (to read its events).
fn ctx(merchant: &str, livemode: bool) -> AuthContext {
    let m = MerchantId::parse(merchant).unwrap();
    AuthContext {
        merchant_id: m,
        livemode,
        key: ApiKey {
            id: ApiKeyId::new_at(0),
            label: "test".into(),
            redacted: "test".into(),
            permissions: Permission::ALL.to_vec(),
            ip_whitelist: vec![],
            livemode,
            merchant_id: m,
            created: Timestamp(0),
            expires_at: Timestamp(i64::MAX / 2),
            revoked_at: None,
        },
    }
}

fn token_of(s: &Value) -> String {
    let url = s["pay_url"].as_str().unwrap();
    url.rsplit("/pay/").next().unwrap().to_string()
}

fn str_of(v: &Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("no {k}: {v}"))
        .to_string()
}

impl World {
    async fn call(&self, m: Method, path: &str, body: Option<Value>) -> Resp {
        self.srv.call(m, path, Some(&self.shop.token), body).await
    }

    async fn consumer(&self, m: Method, path: &str, body: Option<Value>) -> Resp {
        self.srv.call(m, path, None, body).await
    }

    /// Self-serve set-up over `/api`: an event endpoint for every event and `channel` configured
    /// against the PSP simulator; with `live`, both live and live mode on. (The simulator's
    /// Stripe knows only a test key, which go-live rightly refuses for live: Stripe is tested
    /// in test mode, MultiSafepay live.)
    async fn set_up(&mut self, channel: &str, live: bool) {
        self.live = live;
        let ep = self
            .call(
                Method::POST,
                "/api/merchant/webhook-endpoints",
                Some(
                    json!({"livemode": live, "url": format!("{}/events", self.rx.base),
                    "enabled_events": ["*"]}),
                ),
            )
            .await;
        assert_eq!(ep.status, StatusCode::CREATED, "{:?}", ep.body);
        self.whsec = str_of(&ep.body, "secret");
        self.rx.configure(json!({"secrets": [self.whsec]})).await;
        let notify = match channel {
            "multisafepay" => format!("{}/api/webhooks/multisafepay", self.srv.base),
            _ => format!("{}/api/payments/webhook", self.srv.base),
        };
        self.psp.set_webhook_url(channel, &notify);
        let body = json!({"livemode": live, "credentials": self.psp.credentials(channel),
            "notify_url": notify});
        let path = format!("/api/merchant/channels/{channel}");
        let ch = self.call(Method::PUT, &path, Some(body)).await;
        assert_eq!(ch.status, StatusCode::CREATED, "{:?}", ch.body);
        if !live {
            return;
        }
        let live = self
            .call(
                Method::PUT,
                "/api/merchant/mode",
                Some(json!({"livemode": true})),
            )
            .await;
        assert_eq!(live.status, StatusCode::OK, "{:?}", live.body);
        assert_eq!(live.body["live_channels"], json!([channel]));
    }

    /// Connects the marketplace, lets sync pull one new order, and makes its session.
    async fn pulled_order_session(&self, m: Marketplace) -> Value {
        let now = {
            use ipay_engine::clock::Clock;
            self.srv.clock.now().ms()
        };
        let ids = self.market.add_orders(m, 1, now - 60_000);
        let path = format!("/api/integrations/{}/connect", m.as_str());
        let creds = MarketSimHandle::credentials(m);
        let r = self.call(Method::POST, &path, Some(creds)).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let path = format!("/api/integrations/{}/sync", m.as_str());
        let r = self.call(Method::POST, &path, None).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(r.body["created"], json!(1), "{:?}", r.body);
        let path = format!("/api/orders?limit=100&source={}", m.as_str());
        let orders = self.call(Method::GET, &path, None).await;
        let order = orders.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["external_id"] == ids[0].as_str())
            .cloned()
            .unwrap_or_else(|| panic!("order {} not pulled: {:?}", ids[0], orders.body));
        let path = format!("/api/orders/{}/create-session", str_of(&order, "id"));
        let s = self.call(Method::POST, &path, None).await;
        assert_eq!(s.status, StatusCode::CREATED, "{:?}", s.body);
        assert_eq!(s.body["livemode"], self.live, "{:?}", s.body);
        s.body
    }

    /// The consumer pays in the PSP simulator; its signed callback settles the intent and the
    /// session turns paid. Returns the consumer's view (with the OTP).
    async fn pay(&self, s: &Value, channel: &str) -> Value {
        let token = token_of(s);
        let path = format!("/api/session/{token}/start-payment");
        let r = self
            .consumer(Method::POST, &path, Some(json!({"channel": channel})))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let path = format!("/api/payment-sessions/{}", str_of(s, "id"));
        let intent = str_of(
            &self.call(Method::GET, &path, None).await.body,
            "payment_intent",
        );
        let cb = self.psp.pay(&intent).await.unwrap();
        assert!(cb.acknowledged(), "{cb:?}");
        let view = self
            .consumer(Method::GET, &format!("/api/session/{token}"), None)
            .await;
        assert_eq!(view.body["status"], "PAID", "{:?}", view.body);
        self.delivered_event("session.paid", &str_of(s, "id")).await;
        view.body
    }

    async fn parcel(&self, s: &Value, status: &str) {
        let path = format!("/api/payment-sessions/{}/parcel-status", str_of(s, "id"));
        let r = self
            .call(Method::POST, &path, Some(json!({ "status": status })))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }

    /// Waits for the signed event `t` about `object` at the merchant's endpoint (signature
    /// checked by the receiver with the endpoint's secret); returns its payload.
    async fn delivered_event(&self, t: &str, object: &str) -> Value {
        let matches = |d: &Value| {
            let body: Value =
                serde_json::from_str(d["body"].as_str().unwrap_or("")).unwrap_or_default();
            // Session events carry the session as `data.id`, locker events as `session_id`.
            let about = [&body["data"]["id"], &body["data"]["session_id"]];
            body["type"] == t && about.iter().any(|v| *v == object)
        };
        let got = self.rx.wait(t, |r| r.iter().any(matches)).await;
        let all: Vec<&Value> = got.iter().filter(|d| matches(d)).collect();
        assert_eq!(all.len(), 1, "{t} once: {all:#?}");
        let d = all[0];
        assert_eq!(d["verified"][&self.whsec]["spec"], true, "{d:#}");
        assert_eq!(d["verified"][&self.whsec]["standard"], true, "{d:#}");
        serde_json::from_str(d["body"].as_str().unwrap()).unwrap()
    }

    /// The merchant opens a return of the delivered parcel, makes its label at the Sendcloud
    /// simulator, and Sendcloud's signed webhooks bring it back (in transit, delivered).
    async fn returned(&self, s: &Value) -> String {
        let open = json!({"session_id": s["id"], "reason": "wrong size"});
        let r = self
            .call(Method::POST, "/api/returns/open", Some(open))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let rid = str_of(&r.body, "id");
        self.delivered_event("return.opened", &rid).await;
        let label = json!({"return_id": rid});
        let r = self
            .call(Method::POST, "/api/labels/create", Some(label))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let parcel = self
            .sendcloud
            .parcels()
            .into_iter()
            .find(|p| p.order_number == rid)
            .expect("the label's parcel at Sendcloud");
        let url = format!("{}/api/webhooks/sendcloud/returns", self.srv.base);
        let sc = &self.sendcloud;
        assert_eq!(
            sc.send_status(&url, &parcel, 91, "Parcel en route").await,
            200
        );
        assert_eq!(sc.send_status(&url, &parcel, 11, "Delivered").await, 200);
        rid
    }

    /// The stored return, read from the ledger (a read through last mile would settle it).
    async fn stored_return(&self, rid: &str) -> Value {
        let raw = self.srv.ledger.get_record("lm_return", rid).await.unwrap();
        serde_json::from_slice(&raw.unwrap()).unwrap()
    }

    /// How many `return.refunded` events the merchant has about `rid`.
    async fn refunded_events(&self, rid: &str) -> usize {
        let m = self.shop.merchant_id.as_deref().unwrap();
        let (page, _) = self
            .srv
            .engine
            .list_events(
                &ctx(m, self.live),
                Some("return.refunded".into()),
                Some(rid.into()),
                None,
                None,
            )
            .await
            .unwrap();
        page.data.len()
    }
}

/// A live merchant whose parcel was paid through `channel` and delivered with the driver's OTP.
async fn delivered_with_otp(w: &World, m: Marketplace, channel: &str) -> Value {
    let s = w.pulled_order_session(m).await;
    let view = w.pay(&s, channel).await;
    w.parcel(&s, "PICKED_UP").await;
    w.parcel(&s, "IN_DELIVERY").await;
    let r = w
        .srv
        .post(
            "/api/driver/verify-otp",
            &w.driver.token,
            json!({"ipay_reference_18": s["ipay_reference_18"], "otp_4": view["otp"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["session"]["parcel_status"], "DELIVERED");
    w.delivered_event("parcel.delivered", &str_of(&s, "id"))
        .await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_merchant_sells_a_pulled_order_paid_delivered_with_otp_returned_and_refunded() {
    let mut w = world(true).await;
    w.set_up("multisafepay", true).await;
    let s = delivered_with_otp(&w, Marketplace::Aliexpress, "multisafepay").await;
    let rid = w.returned(&s).await;
    // MultiSafepay refunds at once: refunded on receipt, through the channel.
    let refunds = w.psp.refunds();
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    let amount = w.stored_return(&rid).await["amount"].as_i64().unwrap();
    assert!(amount > 0);
    assert_eq!(refunds[0].amount, amount);
    let e = w.delivered_event("return.refunded", &rid).await;
    assert_eq!(e["data"]["status"], "refunded", "{e}");
    assert_eq!(w.stored_return(&rid).await["status"], "refunded");
    assert_eq!(w.refunded_events(&rid).await, 1);
    w.srv.stop().await;
    w.psp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locker_parcel_of_a_pulled_order_is_picked_up_with_its_code_returned_and_refunded() {
    let mut w = world(true).await;
    w.set_up("multisafepay", true).await;
    let s = w.pulled_order_session(Marketplace::Temu).await;
    w.pay(&s, "multisafepay").await;
    w.parcel(&s, "PICKED_UP").await;
    let sid = str_of(&s, "id");

    // The carrier puts it in a locker: a code is issued (`locker.code_issued`, without it),
    // the consumer sees it, the locker checks it and releases the parcel: DELIVERED.
    let reference = str_of(&s, "ipay_reference_18");
    let issue = json!({"ipay_reference_18": reference, "locker_id": "FR-LYS-0007"});
    let r = locker_call(&w, "/api/lockers/dpd/issue-code", &issue).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let e = w.delivered_event("locker.code_issued", &sid).await;
    assert!(!e["data"].to_string().contains("\"code\""), "{e}");
    let path = format!("/api/session/{}/locker", token_of(&s));
    let mine = w.consumer(Method::GET, &path, None).await;
    assert_eq!(mine.status, StatusCode::OK, "{:?}", mine.body);
    let code = str_of(&mine.body, "code");
    let pickup = json!({"ipay_reference_18": reference, "code": code});
    let r = locker_call(&w, "/api/lockers/dpd/pickup", &pickup).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["session"]["parcel_status"], "DELIVERED");
    w.delivered_event("parcel.delivered", &sid).await;

    let rid = w.returned(&s).await;
    let e = w.delivered_event("return.refunded", &rid).await;
    assert_eq!(e["data"]["status"], "refunded", "{e}");
    assert_eq!(w.psp.refunds().len(), 1);
    assert_eq!(w.refunded_events(&rid).await, 1);
    w.srv.stop().await;
    w.psp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_the_psp_confirms_later_refunds_the_return_without_anybody_reading_it() {
    let mut w = world(true).await;
    w.set_up("stripe", false).await;
    let s = delivered_with_otp(&w, Marketplace::Bol, "stripe").await;

    // Returned; Stripe answers the refund `pending`, then confirms with its signed refund
    // webhook. Nobody reads the return: its refund's committed event turns it refunded.
    let rid = w.returned(&s).await;
    let pending = w.stored_return(&rid).await;
    assert_eq!(pending["status"], "refund_pending", "{pending}");
    let refund_id = str_of(&pending, "refund_id");
    let cb = w
        .psp
        .complete_refund(&refund_id, true)
        .await
        .unwrap()
        .unwrap();
    assert!(cb.acknowledged(), "{cb:?}");
    let e = w.delivered_event("return.refunded", &rid).await;
    assert_eq!(e["data"]["refund_id"], refund_id.as_str(), "{e}");
    let stored = w.stored_return(&rid).await;
    assert_eq!(stored["status"], "refunded", "{stored}");
    assert_eq!(w.refunded_events(&rid).await, 1);
    assert!(return_markers(w.srv.ledger.as_ref()).await.is_empty());
    w.srv.stop().await;
    w.psp.stop().await;
}

async fn locker_call(w: &World, path: &str, body: &Value) -> Resp {
    let raw = serde_json::to_vec(body).unwrap();
    let sig = ipay_adapters::sendcloud::sign(DPD_SECRET, &raw);
    let r = w
        .srv
        .http
        .post(format!("{}{path}", w.srv.base))
        .header("content-type", "application/json")
        .header("X-IPAY-Signature", sig)
        .body(raw)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body = r.json().await.unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        body,
    }
}

/// Every return settle marker in the ledger.
async fn return_markers(ledger: &dyn Ledger) -> Vec<String> {
    let mut out = Vec::new();
    for p in 0..16 {
        let page = ledger
            .scan_entries("lm_settle_return", &p.to_string(), &EntryRange::all(1_000))
            .await
            .unwrap();
        out.extend(page.into_iter().map(|(s, _)| s));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_confirmed_before_a_crash_refunds_the_return_when_last_mile_starts_again() {
    // This node commits markers but applies none: as if it died right after the refund's
    // confirmation was committed and before the return's update.
    let mut w = world(false).await;
    w.set_up("stripe", false).await;
    let s = delivered_with_otp(&w, Marketplace::Bol, "stripe").await;
    let rid = w.returned(&s).await;
    let refund_id = str_of(&w.stored_return(&rid).await, "refund_id");
    let cb = w
        .psp
        .complete_refund(&refund_id, true)
        .await
        .unwrap()
        .unwrap();
    assert!(cb.acknowledged(), "{cb:?}");
    let ledger: &dyn Ledger = w.srv.ledger.as_ref();
    assert_eq!(
        return_markers(ledger).await,
        vec![format!("{rid}:{refund_id}")]
    );
    assert_eq!(w.stored_return(&rid).await["status"], "refund_pending");

    // Last mile starts again over the same ledger: its start-up scan finds the marker (with
    // any session markers this node left), and nobody reads the return.
    let lm = LastMile::start(&w.srv.engine, Default::default())
        .await
        .unwrap();
    let mut rx = lm.settled_markers();
    while !return_markers(ledger).await.is_empty() {
        tokio::time::timeout(Duration::from_secs(20), rx.changed())
            .await
            .expect("the return marker was not applied within 20 s")
            .unwrap();
    }
    let stored = w.stored_return(&rid).await;
    assert_eq!(stored["status"], "refunded", "{stored}");
    assert_eq!(w.refunded_events(&rid).await, 1);
    w.delivered_event("return.refunded", &rid).await;
    w.srv.stop().await;
    w.psp.stop().await;
}
