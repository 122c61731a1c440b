//! Each adapter against the PSP simulator over real HTTP: create a payment, let the simulator
//! pay (or fail, or expire), and verify the callback it delivered with the adapter.

mod common;

use common::{World, now, request};
use ipay_engine::channel::{CallbackOutcome, ChannelFactory};
use ipay_engine::money::Money;

async fn paid_round_trip(channel: &str, value: i64, currency: &str) {
    let w = World::start().await;
    let adapter = w.adapter(channel);
    let req = request(value, currency);
    let intent = req.intent_id.to_string();
    let payment = adapter.create_payment(&req).await.expect("payment created");
    assert!(!payment.qr_code.is_empty());
    if channel == "promptpay" {
        w.sim
            .promptpay_scan(&intent, &payment.qr_code, &w.notify_url(channel))
            .unwrap();
    }
    let order = w.sim.order(&intent).expect("the simulator has the order");
    assert_eq!(order.amount, value);
    assert_eq!(order.currency, currency);
    assert_eq!(order.qr_code, payment.qr_code);

    let delivered = w.sim.pay(&intent).await.expect("callback delivered");
    assert!(delivered.acknowledged(), "{delivered:?}");
    let got = w.receiver.last();
    assert_eq!(
        w.factory
            .peek_intent(channel, &got.gateway_callback())
            .as_deref(),
        Some(intent.as_str())
    );
    let notice = adapter
        .verify_callback(&got.gateway_callback(), now())
        .expect("callback verifies");
    assert_eq!(notice.intent_id, req.intent_id);
    assert_eq!(notice.notification_id, delivered.callback.notification_id);
    match notice.outcome {
        CallbackOutcome::Paid { amount, .. } => {
            assert_eq!(amount, Money::from_parts(value, currency).unwrap())
        }
        other => panic!("expected Paid, got {other:?}"),
    }
    // Paying twice is refused by the simulator; a duplicate re-sends the same notification.
    assert!(w.sim.pay(&intent).await.is_err());
    let dup = w.sim.duplicate(&intent).await.unwrap();
    assert_eq!(dup.callback.body, delivered.callback.body);
    assert_eq!(w.receiver.received().len(), 2);
    w.sim.stop().await;
}

#[tokio::test]
async fn alipay_precreate_then_paid_notify_verifies() {
    paid_round_trip("alipay", 699, "CNY").await;
}

#[tokio::test]
async fn wechat_native_order_then_paid_callback_verifies() {
    paid_round_trip("wechat", 1234, "CNY").await;
}

#[tokio::test]
async fn stripe_payment_intent_then_succeeded_event_verifies() {
    paid_round_trip("stripe", 2500, "EUR").await;
}

#[tokio::test]
async fn multisafepay_order_then_completed_notification_verifies() {
    paid_round_trip("multisafepay", 1000, "EUR").await;
}

#[tokio::test]
async fn promptpay_qr_then_bank_callback_verifies() {
    paid_round_trip("promptpay", 10050, "THB").await;
}

#[tokio::test]
async fn failed_and_expired_outcomes_are_reported_as_failed() {
    let w = World::start().await;
    for channel in ["alipay", "wechat", "stripe", "multisafepay", "promptpay"] {
        let adapter = w.adapter(channel);
        for expire in [false, true] {
            let currency = match channel {
                "stripe" | "multisafepay" => "EUR",
                "promptpay" => "THB",
                _ => "CNY",
            };
            let req = request(500, currency);
            let intent = req.intent_id.to_string();
            let payment = adapter.create_payment(&req).await.unwrap();
            if channel == "promptpay" {
                w.sim
                    .promptpay_scan(&intent, &payment.qr_code, &w.notify_url(channel))
                    .unwrap();
            }
            let delivered = if expire {
                w.sim.expire(&intent).await.unwrap()
            } else {
                w.sim.fail(&intent).await.unwrap()
            };
            assert!(delivered.acknowledged());
            let got = w.receiver.last();
            let notice = adapter
                .verify_callback(&got.gateway_callback(), now())
                .unwrap_or_else(|e| panic!("{channel}: {e}"));
            assert!(
                matches!(notice.outcome, CallbackOutcome::Failed { .. }),
                "{channel} expire={expire}: {:?}",
                notice.outcome
            );
        }
    }
    w.sim.stop().await;
}

#[tokio::test]
async fn amount_override_is_reported_as_sent() {
    let w = World::start().await;
    let adapter = w.adapter("stripe");
    let req = request(2500, "EUR");
    adapter.create_payment(&req).await.unwrap();
    let overrides = ipay_adapters::sim::PayOverrides {
        amount: Some(100),
        currency: Some("USD".into()),
    };
    w.sim
        .pay_with(&req.intent_id.to_string(), overrides)
        .await
        .unwrap();
    let got = w.receiver.last();
    let notice = adapter.verify_callback(&got.without_path(), now()).unwrap();
    match notice.outcome {
        CallbackOutcome::Paid { amount, .. } => {
            assert_eq!(amount, Money::from_parts(100, "USD").unwrap())
        }
        other => panic!("{other:?}"),
    }
}
