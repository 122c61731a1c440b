//! Refunds end to end through the PSP simulator, per channel: pay, refund through the real
//! adapter, the PSP confirms (at once, by a late signed callback, or when the poller asks),
//! and the merchant gets `refund.succeeded`; a PSP that refuses gives `refund.failed` and the
//! amount back. Plus refunds made in a PSP's dashboard, PromptPay's manual refunds, the
//! breaker/retry path with a PSP that is down, idempotency, and concurrent refunds that never
//! exceed the capture.

mod common;

use common::TestServer;
use ipay_adapters::factory::AdapterFactory;
use ipay_adapters::sim::{
    Fault, FaultKind, SimHandle, SimOptions, SimRefundMode, SimRefundStatus, Simulator,
};
use ipay_engine::channels::ChannelSetup;
use ipay_engine::channels::retry::RecordingSleeper;
use ipay_engine::channels::vault::MasterKey;
use ipay_engine::store::Ledger;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

struct World {
    srv: TestServer,
    master_key: MasterKey,
    sim: SimHandle,
    sleeper: RecordingSleeper,
    key: String,
    service: String,
    test_key: String,
    test_service: String,
}

/// Every channel the simulator speaks.
const SIM_CHANNELS: [&str; 5] = ["alipay", "wechat", "promptpay", "stripe", "multisafepay"];

async fn active_service(srv: &TestServer, key: &str) -> String {
    srv.active_service_for(key, &SIM_CHANNELS).await
}

fn channel_setup(sim: &SimHandle, key: &MasterKey, sleeper: &RecordingSleeper) -> ChannelSetup {
    let config = sim.channels_config();
    ChannelSetup {
        factory: Some(Arc::new(AdapterFactory::new(&config).unwrap())),
        config,
        master_key: Some(key.clone()),
        sleeper: Arc::new(sleeper.clone()),
        ..Default::default()
    }
}

async fn world() -> World {
    let sim = Simulator::start(SimOptions::default()).await.unwrap();
    let srv = common::start().await;
    let sleeper = RecordingSleeper::with_clock(srv.clock.clone());
    let master_key = MasterKey::generate();
    srv.engine
        .set_channels(channel_setup(&sim, &master_key, &sleeper))
        .unwrap();
    sim.set_webhook_url("stripe", &format!("{}/api/payments/webhook", srv.base));
    let m = srv.merchant("refund merchant").await;
    let key = m.live_secret_key.clone();
    let test_key = m.test_secret_key.clone();
    let service = active_service(&srv, &key).await;
    let test_service = active_service(&srv, &test_key).await;
    let w = World {
        srv,
        master_key,
        sim,
        sleeper,
        key,
        service,
        test_key,
        test_service,
    };
    for (channel, _, _) in CASES {
        w.configure(channel).await;
    }
    w.configure("promptpay").await;
    w
}

const CASES: &[(&str, i64, &str)] = &[
    ("alipay", 699, "CNY"),
    ("wechat", 1_288, "CNY"),
    ("stripe", 2_500, "EUR"),
    ("multisafepay", 1_999, "EUR"),
];

impl World {
    fn notify_url(&self, channel: &str) -> String {
        match channel {
            "stripe" => format!("{}/api/payments/webhook", self.srv.base),
            "multisafepay" => format!("{}/api/webhooks/multisafepay", self.srv.base),
            c => format!("{}/callbacks/{c}", self.srv.base),
        }
    }

    /// Stripe's simulated credentials are test-mode ones.
    fn key(&self, channel: &str) -> &str {
        if channel == "stripe" {
            &self.test_key
        } else {
            &self.key
        }
    }

    async fn configure(&self, channel: &str) {
        let r = self
            .srv
            .post(
                "/v1/channels",
                self.key(channel),
                json!({"channel": channel, "credentials": self.sim.credentials(channel), "notify_url": self.notify_url(channel)}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{channel}: {:?}", r.body);
    }

    /// A paid intent on `channel`.
    async fn paid(&self, channel: &str, value: i64, currency: &str) -> String {
        let service = if channel == "stripe" {
            &self.test_service
        } else {
            &self.service
        };
        let r = self
            .srv
            .post(
                "/v1/payment-intents",
                self.key(channel),
                json!({"service_id": service, "amount": {"value": value, "currency": currency}, "channel": channel}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{channel}: {:?}", r.body);
        let id = r.body["id"].as_str().unwrap().to_string();
        if channel == "promptpay" {
            let qr = r.body["qr_code"].as_str().unwrap();
            self.sim
                .promptpay_scan(&id, qr, &self.notify_url(channel))
                .unwrap();
        }
        let delivered = self.sim.pay(&id).await.unwrap();
        assert!(delivered.acknowledged(), "{channel}: {delivered:?}");
        id
    }

    async fn refund(&self, channel: &str, intent: &str, value: Option<i64>) -> common::Resp {
        let intent_obj = self.intent(channel, intent).await;
        let mut body = json!({"payment_intent": intent, "reason": "returned"});
        if let Some(v) = value {
            body["amount"] = json!({"value": v, "currency": intent_obj["amount"]["currency"]});
        }
        self.srv.post("/v1/refunds", self.key(channel), body).await
    }

    async fn intent(&self, channel: &str, id: &str) -> Value {
        self.srv
            .get(&format!("/v1/payment-intents/{id}"), self.key(channel))
            .await
            .body
    }

    async fn get_refund(&self, channel: &str, id: &str) -> Value {
        self.srv
            .get(&format!("/v1/refunds/{id}"), self.key(channel))
            .await
            .body
    }

    /// The events of `event_type` about `intent`.
    async fn events(&self, channel: &str, event_type: &str, intent: &str) -> Vec<Value> {
        self.srv
            .get(
                &format!("/v1/events?type={event_type}&object_id={intent}"),
                self.key(channel),
            )
            .await
            .body["data"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Lets the poller's first query fall due and runs one round.
    async fn poll(&self) {
        self.srv.clock.advance_ms(31_000);
        self.srv.engine.poll_refunds().await.unwrap();
    }

    async fn stop(self) {
        self.srv.stop().await;
        self.sim.stop().await;
    }
}

#[tokio::test]
async fn every_channel_refunds_through_its_psp_and_emits_refund_succeeded() {
    let w = world().await;
    for (channel, value, currency) in CASES {
        let id = w.paid(channel, *value, currency).await;
        let r = w.refund(channel, &id, Some(300)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{channel}: {:?}", r.body);
        let refund_id = r.body["id"].as_str().unwrap().to_string();
        match *channel {
            // WeChat Pay answers PROCESSING and Stripe `pending`: the PSP confirms later with
            // a signed notification (WeChat's resource AES-GCM encrypted).
            "wechat" | "stripe" => {
                assert_eq!(r.body["status"], "pending", "{channel}");
                assert!(w.events(channel, "refund.succeeded", &id).await.is_empty());
                let delivered = w
                    .sim
                    .complete_refund(&refund_id, true)
                    .await
                    .unwrap()
                    .unwrap();
                assert!(delivered.acknowledged(), "{channel}: {delivered:?}");
                // The PSP repeats its notification: acknowledged, applied once.
                let again = w.sim.deliver(delivered.callback.clone()).await;
                assert!(again.acknowledged(), "{channel}: {again:?}");
            }
            _ => assert_eq!(r.body["status"], "succeeded", "{channel}: {:?}", r.body),
        }
        let refund = w.get_refund(channel, &refund_id).await;
        assert_eq!(refund["status"], "succeeded", "{channel}: {refund}");
        assert!(refund["psp_reference"].is_string(), "{channel}: {refund}");
        let events = w.events(channel, "refund.succeeded", &id).await;
        assert_eq!(events.len(), 1, "{channel}");
        assert_eq!(events[0]["data"]["id"], refund_id.as_str());
        assert_eq!(events[0]["data"]["refunded_payment_intent"], id.as_str());
        let pi = w.intent(channel, &id).await;
        assert_eq!(pi["amount_refunded"], 300, "{channel}");
        // The money really moved at the PSP, once.
        let at_psp: Vec<_> = w
            .sim
            .refunds()
            .into_iter()
            .filter(|r| r.intent_id == id)
            .collect();
        assert_eq!(at_psp.len(), 1, "{channel}");
        assert_eq!(at_psp[0].amount, 300);
        assert_eq!(at_psp[0].status, SimRefundStatus::Succeeded);
    }
    // Where the channel reports the payer, the intent and its webhook carry it.
    let alipay = w.paid("alipay", 100, "CNY").await;
    assert_eq!(
        w.intent("alipay", &alipay).await["payer"],
        "2088000000000002"
    );
    let wechat = w.paid("wechat", 100, "CNY").await;
    assert_eq!(
        w.intent("wechat", &wechat).await["payer"],
        "oSimPayer0000000000000000001"
    );
    let stripe = w.paid("stripe", 100, "EUR").await;
    assert_eq!(
        w.intent("stripe", &stripe).await["payer"],
        "payer@example.com"
    );
    let ev = w
        .events("wechat", "payment_intent.succeeded", &wechat)
        .await;
    assert_eq!(ev[0]["data"]["payer"], "oSimPayer0000000000000000001");
    w.stop().await;
}

#[tokio::test]
async fn a_psp_that_refuses_fails_the_refund_emits_refund_failed_and_frees_the_amount() {
    let w = world().await;
    for (channel, value, currency) in CASES {
        w.sim.set_refund_mode(channel, SimRefundMode::Refuse);
        let id = w.paid(channel, *value, currency).await;
        let r = w.refund(channel, &id, None).await;
        assert_eq!(r.status, StatusCode::CREATED, "{channel}: {:?}", r.body);
        assert_eq!(r.body["status"], "failed", "{channel}: {:?}", r.body);
        assert!(
            r.body["failure_reason"].as_str().unwrap().len() > 5,
            "{channel}: {:?}",
            r.body
        );
        let failed = w.events(channel, "refund.failed", &id).await;
        assert_eq!(failed.len(), 1, "{channel}");
        assert_eq!(w.intent(channel, &id).await["amount_refunded"], 0);
        // The whole amount is refundable again.
        w.sim.set_refund_mode(channel, SimRefundMode::Succeed);
        let again = w.refund(channel, &id, None).await;
        assert_eq!(
            again.body["status"], "succeeded",
            "{channel}: {:?}",
            again.body
        );
        assert_eq!(again.body["amount"]["value"], *value);
    }
    // A refund the PSP accepted and later could not pay out (WeChat REFUND.ABNORMAL, Stripe
    // refund.updated failed) fails too.
    for channel in ["wechat", "stripe"] {
        w.sim.set_refund_mode(channel, SimRefundMode::Pending);
        let (v, c) = if channel == "wechat" {
            (500, "CNY")
        } else {
            (500, "EUR")
        };
        let id = w.paid(channel, v, c).await;
        let r = w.refund(channel, &id, Some(200)).await;
        assert_eq!(r.body["status"], "pending");
        let rid = r.body["id"].as_str().unwrap();
        let d = w.sim.complete_refund(rid, false).await.unwrap().unwrap();
        assert!(d.acknowledged(), "{channel}: {d:?}");
        assert_eq!(w.get_refund(channel, rid).await["status"], "failed");
        assert_eq!(w.events(channel, "refund.failed", &id).await.len(), 1);
        assert_eq!(w.intent(channel, &id).await["amount_refunded"], 0);
    }
    w.stop().await;
}

#[tokio::test]
async fn pending_refunds_are_settled_by_the_poller_even_when_the_psp_was_down() {
    let w = world().await;
    // Alipay accepts without moving money yet: the poller's query finds it refunded later.
    w.sim.set_refund_mode("alipay", SimRefundMode::Pending);
    let id = w.paid("alipay", 699, "CNY").await;
    let r = w.refund("alipay", &id, Some(199)).await;
    assert_eq!(r.body["status"], "pending", "{:?}", r.body);
    let rid = r.body["id"].as_str().unwrap().to_string();
    w.poll().await;
    assert_eq!(w.get_refund("alipay", &rid).await["status"], "pending");
    assert!(w.sim.complete_refund(&rid, true).await.unwrap().is_none());
    // The next query is due after the first configured delay (60 s).
    w.srv.clock.advance_ms(61_000);
    w.srv.engine.poll_refunds().await.unwrap();
    assert_eq!(w.get_refund("alipay", &rid).await["status"], "succeeded");
    assert_eq!(w.events("alipay", "refund.succeeded", &id).await.len(), 1);

    // The PSP is down for the call and both retries (after 1 s and 5 s): the refund stays
    // pending, the PSP never got it; the poller's query finds nothing and sends it again under
    // the same refund id.
    w.sim.set_refund_mode("alipay", SimRefundMode::Succeed);
    let id2 = w.paid("alipay", 500, "CNY").await;
    w.sleeper.take();
    w.sim
        .inject(Fault::new("alipay", FaultKind::Unavailable).times(3));
    let r = w.refund("alipay", &id2, None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["status"], "pending");
    assert_eq!(
        w.sleeper.take(),
        vec![Duration::from_secs(1), Duration::from_secs(5)]
    );
    let rid2 = r.body["id"].as_str().unwrap().to_string();
    assert!(w.sim.refunds().iter().all(|x| x.merchant_refund_id != rid2));
    w.poll().await;
    assert_eq!(w.get_refund("alipay", &rid2).await["status"], "succeeded");
    let booked: Vec<_> = w
        .sim
        .refunds()
        .into_iter()
        .filter(|x| x.merchant_refund_id == rid2)
        .collect();
    assert_eq!(booked.len(), 1);
    assert_eq!(booked[0].amount, 500);

    // The same on MultiSafepay, whose status query reads the order's related transactions.
    let id3 = w.paid("multisafepay", 1_000, "EUR").await;
    w.sim
        .inject(Fault::new("multisafepay", FaultKind::Unavailable).times(3));
    let r = w.refund("multisafepay", &id3, Some(400)).await;
    assert_eq!(r.body["status"], "pending", "{:?}", r.body);
    w.poll().await;
    let rid3 = r.body["id"].as_str().unwrap();
    assert_eq!(
        w.get_refund("multisafepay", rid3).await["status"],
        "succeeded"
    );
    w.stop().await;
}

#[tokio::test]
async fn refunds_made_in_the_psp_dashboard_are_recorded_and_count_against_the_capture() {
    let w = world().await;
    for (channel, value, currency) in [
        ("stripe", 2_500, "EUR"),
        ("multisafepay", 1_999, "EUR"),
        ("alipay", 699, "CNY"),
    ] {
        let id = w.paid(channel, value, currency).await;
        let ours = w.refund(channel, &id, Some(100)).await;
        if channel == "stripe" {
            let rid = ours.body["id"].as_str().unwrap();
            w.sim.complete_refund(rid, true).await.unwrap();
        }
        let d = w.sim.dashboard_refund(&id, 250).await.unwrap();
        assert!(d.acknowledged(), "{channel}: {d:?}");
        // Replayed: acknowledged, recorded once.
        assert!(w.sim.deliver(d.callback.clone()).await.acknowledged());
        let list = w
            .srv
            .get(&format!("/v1/refunds?payment_intent={id}"), w.key(channel))
            .await;
        let refunds = list.body["data"].as_array().unwrap();
        assert_eq!(refunds.len(), 2, "{channel}: {refunds:?}");
        let psp: Vec<_> = refunds.iter().filter(|r| r["source"] == "psp").collect();
        assert_eq!(psp.len(), 1, "{channel}");
        assert_eq!(psp[0]["amount"]["value"], 250);
        assert_eq!(psp[0]["status"], "succeeded");
        assert_eq!(w.intent(channel, &id).await["amount_refunded"], 350);
        assert_eq!(w.events(channel, "refund.succeeded", &id).await.len(), 2);
        // What is left is all that can still be refunded.
        let over = w.refund(channel, &id, Some(value - 349)).await;
        assert_eq!(over.code(), "refund_exceeds_captured", "{channel}");
        let rest = w.refund(channel, &id, None).await;
        assert_eq!(rest.body["amount"]["value"], value - 350, "{channel}");
    }
    w.stop().await;
}

#[tokio::test]
async fn promptpay_refunds_wait_for_the_merchants_confirmation() {
    let w = world().await;
    let id = w.paid("promptpay", 15_000, "THB").await;
    let r = w.refund("promptpay", &id, Some(5_000)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["status"], "pending");
    assert_eq!(r.body["manual"], true);
    let rid = r.body["id"].as_str().unwrap().to_string();
    // The poller leaves it alone.
    w.poll().await;
    assert_eq!(w.get_refund("promptpay", &rid).await["status"], "pending");
    let bad = w
        .srv
        .post(
            &format!("/v1/refunds/{rid}/confirm"),
            &w.key,
            json!({"status": "pending"}),
        )
        .await;
    assert_eq!(
        (bad.status, bad.code()),
        (StatusCode::BAD_REQUEST, "parameter_invalid")
    );
    let ok = w
        .srv
        .post(
            &format!("/v1/refunds/{rid}/confirm"),
            &w.key,
            json!({"status": "succeeded", "reference": "KBANK-20261205-0001"}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    assert_eq!(ok.body["status"], "succeeded");
    assert_eq!(ok.body["psp_reference"], "KBANK-20261205-0001");
    assert_eq!(
        w.events("promptpay", "refund.succeeded", &id).await.len(),
        1
    );
    let twice = w
        .srv
        .post(
            &format!("/v1/refunds/{rid}/confirm"),
            &w.key,
            json!({"status": "failed"}),
        )
        .await;
    assert_eq!(twice.status, StatusCode::CONFLICT);
    // A refund carried out by a PSP cannot be confirmed by hand.
    let ali = w.paid("alipay", 699, "CNY").await;
    let a = w.refund("alipay", &ali, None).await;
    let not_manual = w
        .srv
        .post(
            &format!("/v1/refunds/{}/confirm", a.body["id"].as_str().unwrap()),
            &w.key,
            json!({"status": "succeeded"}),
        )
        .await;
    assert_eq!(
        (not_manual.status, not_manual.code()),
        (StatusCode::CONFLICT, "refund_not_manual")
    );
    w.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_refunds_once_and_replays_the_final_answer() {
    let w = world().await;
    let id = w.paid("multisafepay", 1_000, "EUR").await;
    let call = || {
        w.srv.call_with(
            reqwest::Method::POST,
            "/v1/refunds",
            Some(&w.key),
            Some(json!({"payment_intent": id, "amount": {"value": 600, "currency": "EUR"}})),
            &[("idempotency-key", "refund-once-1")],
        )
    };
    let first = call().await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    assert_eq!(first.body["status"], "succeeded");
    let second = call().await;
    assert_eq!(second.status, StatusCode::CREATED);
    assert_eq!(second.body, first.body);
    assert_eq!(
        w.sim.refunds().iter().filter(|r| r.intent_id == id).count(),
        1
    );
    assert_eq!(w.intent("multisafepay", &id).await["amount_refunded"], 600);
    w.stop().await;
}

#[tokio::test]
async fn concurrent_refunds_and_dashboard_refunds_never_exceed_the_capture() {
    let w = world().await;
    let id = w.paid("multisafepay", 2_000, "EUR").await;
    let merchant = (0..12).map(|_| w.refund("multisafepay", &id, Some(300)));
    let dashboard = (0..4).map(|_| w.sim.dashboard_refund(&id, 250));
    let (answers, _) = futures::join!(
        futures::future::join_all(merchant),
        futures::future::join_all(dashboard)
    );
    let accepted: i64 = answers
        .iter()
        .filter(|r| r.status == StatusCode::CREATED && r.body["status"] != "failed")
        .map(|r| r.body["amount"]["value"].as_i64().unwrap())
        .sum();
    assert!(accepted <= 2_000, "accepted {accepted}");
    for r in &answers {
        assert!(
            r.status == StatusCode::CREATED
                || r.code() == "refund_exceeds_captured"
                || r.code() == "charge_already_refunded",
            "{:?}",
            r.body
        );
    }
    let pi = w.intent("multisafepay", &id).await;
    let refunded = pi["amount_refunded"].as_i64().unwrap();
    assert!(refunded <= 2_000, "{pi}");
    let list = w
        .srv
        .get(
            &format!("/v1/refunds?payment_intent={id}&limit=100"),
            &w.key,
        )
        .await;
    let live: i64 = list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] != "failed")
        .map(|r| r["amount"]["value"].as_i64().unwrap())
        .sum();
    assert_eq!(live, refunded);
    // At the PSP, too, never more than captured.
    let at_psp: i64 = w
        .sim
        .refunds()
        .iter()
        .filter(|r| r.intent_id == id && r.status != SimRefundStatus::Failed)
        .map(|r| r.amount)
        .sum();
    assert!(at_psp <= 2_000);
    w.stop().await;
}

#[tokio::test]
async fn the_poller_work_list_lives_in_the_ledger_so_a_fresh_engine_finishes_the_refund() {
    let w = world().await;
    w.sim.set_refund_mode("alipay", SimRefundMode::Pending);
    let id = w.paid("alipay", 699, "CNY").await;
    let r = w.refund("alipay", &id, None).await;
    assert_eq!(r.body["status"], "pending");
    let rid = r.body["id"].as_str().unwrap().to_string();
    w.sim.complete_refund(&rid, true).await.unwrap();

    // The first engine stops (its poller with it); a new engine on the same ledger carries
    // no session, adapter or poller state over in memory, as after a restart.
    w.srv.engine.shutdown().await;
    let fresh = ipay_engine::Engine::start(
        w.srv.ledger.clone(),
        Arc::new(ipay_engine::store::memory_hot::MemoryHotState::new()),
        Arc::new(w.srv.clock.clone()),
        ipay_gateway::config::Config::default().engine(),
    )
    .await
    .unwrap();
    fresh
        .set_channels(channel_setup(&w.sim, &w.master_key, &w.sleeper))
        .unwrap();
    w.srv.clock.advance_ms(31_000);
    assert_eq!(fresh.poll_refunds().await.unwrap(), 1);
    let rid_typed = ipay_engine::ids::RefundId::parse(&rid).unwrap();
    let stored = w.srv.ledger.get_refund(rid_typed).await.unwrap().unwrap();
    assert_eq!(stored.status, ipay_engine::model::RefundStatus::Succeeded);
    // Done: nothing is left on the work list.
    assert_eq!(fresh.poll_refunds().await.unwrap(), 0);
    fresh.shutdown().await;
    w.stop().await;
}
