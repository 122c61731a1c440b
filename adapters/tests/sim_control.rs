//! The simulator's control API over HTTP: what other processes (the load generator, the
//! `psp-sim` binary's users) drive it with.

mod common;

use common::{World, now, request};
use ipay_engine::channel::CallbackOutcome;
use serde_json::{Value, json};

#[tokio::test]
async fn control_api_pays_injects_faults_and_lists_callbacks() {
    let w = World::start().await;
    let http = reqwest::Client::new();
    let base = w.sim.base_url().to_owned();

    let creds: Value = http
        .get(format!("{base}/_sim/credentials/wechat"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(creds, w.sim.credentials("wechat"));

    // A fault injected over HTTP shows at the adapter.
    let r = http
        .post(format!("{base}/_sim/faults"))
        .json(&json!({"channel": "wechat", "kind": "unavailable", "count": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let adapter = w.adapter("wechat");
    let req = request(888, "CNY");
    assert!(adapter.create_payment(&req).await.is_err());
    adapter.create_payment(&req).await.unwrap();
    let intent = req.intent_id.to_string();

    let order: Value = http
        .get(format!("{base}/_sim/orders/{intent}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(order["status"], "pending");
    assert_eq!(order["amount"], 888);

    // Pay after a delay; wait for the delivery signal rather than sleeping.
    let r = http
        .post(format!("{base}/_sim/orders/{intent}/pay"))
        .json(&json!({"delay_ms": 50}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(
        w.sim
            .wait_for_callbacks(1, std::time::Duration::from_secs(10))
            .await
    );
    let got = w.receiver.last();
    let notice = adapter
        .verify_callback(&got.gateway_callback(), now())
        .unwrap();
    assert!(matches!(notice.outcome, CallbackOutcome::Paid { .. }));

    // Paying again is a conflict; an unknown order is 404.
    let r = http
        .post(format!("{base}/_sim/orders/{intent}/pay"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r = http
        .post(format!("{base}/_sim/orders/pi_nope/fail"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let r = http
        .post(format!("{base}/_sim/orders/{intent}/duplicate"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let log: Vec<Value> = http
        .get(format!("{base}/_sim/callbacks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["callback"]["body"], log[1]["callback"]["body"]);
    assert_eq!(log[0]["status"], 200);

    let r = http
        .delete(format!("{base}/_sim/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    w.sim.stop().await;
}

#[tokio::test]
async fn stripe_without_a_webhook_endpoint_cannot_be_paid_and_says_why() {
    let sim = ipay_adapters::sim::Simulator::start(Default::default())
        .await
        .unwrap();
    let factory = ipay_adapters::factory::AdapterFactory::new(&sim.channels_config()).unwrap();
    let adapter = ipay_engine::channel::ChannelFactory::build(
        &factory,
        "stripe",
        &sim.credentials("stripe"),
        "http://127.0.0.1:9/unused",
    )
    .unwrap();
    let req = request(100, "EUR");
    adapter.create_payment(&req).await.unwrap();
    let err = sim.pay(&req.intent_id.to_string()).await.unwrap_err();
    assert!(err.to_string().contains("set_webhook_url"), "{err}");
    // The order is untouched, so it can be paid once the endpoint is known.
    assert_eq!(
        sim.order(&req.intent_id.to_string()).unwrap().status,
        ipay_adapters::sim::OrderStatus::Pending
    );
    sim.stop().await;
}

#[tokio::test]
async fn control_api_sets_refund_modes_completes_refunds_and_books_dashboard_refunds() {
    use ipay_engine::channel::{ChannelRefundRequest, ChannelRefundState};
    use ipay_engine::ids::RefundId;
    use ipay_engine::money::Money;

    let w = World::start().await;
    let http = reqwest::Client::new();
    let base = w.sim.base_url().to_owned();
    let adapter = w.adapter("alipay");
    let req = request(1_000, "CNY");
    adapter.create_payment(&req).await.unwrap();
    let intent = req.intent_id.to_string();
    assert!(w.sim.pay(&intent).await.unwrap().acknowledged());

    let r = http
        .post(format!("{base}/_sim/refund-modes"))
        .json(&json!({"channel": "alipay", "mode": "pending"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let refund = ChannelRefundRequest {
        refund_id: RefundId::new_at(now().ms()),
        intent_id: req.intent_id,
        channel_reference: None,
        amount: Money::from_parts(400, "CNY").unwrap(),
        captured: req.amount,
        reason: None,
        livemode: true,
    };
    let answer = adapter.refund(&refund).await.unwrap();
    assert_eq!(answer.state, ChannelRefundState::Pending);
    let listed: Value = http
        .get(format!("{base}/_sim/refunds"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed[0]["merchant_refund_id"],
        refund.refund_id.to_string()
    );
    assert_eq!(listed[0]["status"], "pending");

    let done: Value = http
        .post(format!("{base}/_sim/refunds/{}/complete", refund.refund_id))
        .json(&json!({"succeed": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Alipay has no refund notification: the status query tells.
    assert_eq!(done["callback"], Value::Null);
    let status = adapter.refund_status(&refund).await.unwrap();
    assert_eq!(status.state, ChannelRefundState::Succeeded);

    // A dashboard refund over what is left is refused; within it, notified.
    let over = http
        .post(format!("{base}/_sim/orders/{intent}/dashboard-refund"))
        .json(&json!({"amount": 601}))
        .send()
        .await
        .unwrap();
    assert_eq!(over.status(), 422);
    let ok = http
        .post(format!("{base}/_sim/orders/{intent}/dashboard-refund"))
        .json(&json!({"amount": 600}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let notify = w.receiver.last();
    let notice = adapter
        .verify_callback(&notify.gateway_callback(), now())
        .unwrap();
    match notice.outcome {
        CallbackOutcome::Refund(ipay_engine::channel::RefundReport::Total { refunded, .. }) => {
            assert_eq!(refunded.value, 1_000)
        }
        other => panic!("expected a refund report, got {other:?}"),
    }
}
