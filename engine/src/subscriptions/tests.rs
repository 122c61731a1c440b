//! Subscription lifecycle through the engine facade, on a real embedded ledger and a manual
//! clock: activation, renewal across a restart, cancel at period end, failed renewals.

use super::model::period_boundary;
use super::{CreateSubscriptionRequest, CreatedSubscription, Subscription, SubscriptionStatus};
use crate::clock::{Clock, ManualClock, Timestamp};
use crate::engine::{AuthContext, Engine, EngineConfig, create_merchant};
use crate::model::service::{Interval, PaymentMethods, Plan, Pricing};
use crate::model::{IntentStatus, ServiceAction, ServiceInput};
use crate::money::Currency;
use crate::store::embedded::{EmbeddedLedger, EmbeddedOptions};
use crate::store::memory_hot::MemoryHotState;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const DAY_MS: i64 = 86_400_000;

struct Node {
    engine: Engine,
    ledger: Arc<EmbeddedLedger>,
}

async fn node(dir: &Path, clock: &ManualClock) -> Node {
    let ledger = EmbeddedLedger::open(dir, EmbeddedOptions::default()).unwrap();
    let engine = Engine::start(
        ledger.clone(),
        Arc::new(MemoryHotState::new()),
        Arc::new(clock.clone()),
        EngineConfig::default(),
    )
    .await
    .unwrap();
    Node { engine, ledger }
}

/// A merchant's test key context and an active manifest with a monthly plan (9.99 EUR).
async fn merchant_with_plan(n: &Node, clock: &ManualClock) -> (String, AuthContext, String) {
    let creds = create_merchant(n.ledger.as_ref(), clock, "Subs shop")
        .await
        .unwrap();
    let ctx = n
        .engine
        .authenticate(&creds.test_secret_key, None)
        .await
        .unwrap();
    let input = ServiceInput {
        name: Some("AI Document Summary".into()),
        accepted_channels: Some(vec!["sandbox".into()]),
        payment_methods: Some(PaymentMethods {
            one_time: true,
            cumulative: false,
            subscription: true,
        }),
        pricing: Some(Pricing {
            one_time: vec![],
            subscription: vec![Plan {
                plan_id: "plan_starter".into(),
                name: "Starter".into(),
                amount: 999,
                currency: Currency::parse("EUR").unwrap(),
                interval: Interval::Monthly,
                features: vec!["50 summaries/mo".into()],
            }],
        }),
        ..Default::default()
    };
    let (svc, _) = n.engine.upsert_service(&ctx, input).await.unwrap();
    n.engine
        .service_action(&ctx, &svc.id.to_string(), ServiceAction::Activate)
        .await
        .unwrap();
    (creds.test_secret_key, ctx, svc.id.to_string())
}

fn subscribe_req(service: &str, plan: &str) -> CreateSubscriptionRequest {
    CreateSubscriptionRequest {
        service_id: service.into(),
        plan_id: plan.into(),
        channel: "sandbox".into(),
        customer: Some("cus_42".into()),
        metadata: None,
    }
}

/// Moves the clock and runs one timer pass; returns the subscription afterwards.
async fn after(
    n: &Node,
    clock: &ManualClock,
    ctx: &AuthContext,
    id: &str,
    ms: i64,
) -> Subscription {
    clock.advance_ms(ms);
    n.engine.run_subscription_timers().await.unwrap();
    n.engine.get_subscription(ctx, id).await.unwrap()
}

async fn settle(n: &Node, ctx: &AuthContext, sub: &Subscription, ok: bool) {
    let pi = sub.open_intent.expect("a payment is open").to_string();
    n.engine.sandbox_settle(ctx, &pi, ok).await.unwrap();
}

/// Types of the events about `id`, oldest first.
async fn event_types(n: &Node, ctx: &AuthContext, id: &str) -> Vec<String> {
    let (page, _) = n
        .engine
        .list_events(ctx, None, Some(id.to_string()), Some(100), None)
        .await
        .unwrap();
    page.data
        .iter()
        .rev()
        .map(|e| e.event_type.clone())
        .collect()
}

/// Subscribes and pays the first period; returns the active subscription.
async fn active_subscription(
    n: &Node,
    clock: &ManualClock,
    ctx: &AuthContext,
    svc: &str,
) -> Subscription {
    let out = n
        .engine
        .create_subscription(ctx, subscribe_req(svc, "plan_starter"), None)
        .await
        .unwrap();
    let created: CreatedSubscription = serde_json::from_str(&out.body).unwrap();
    assert_eq!(created.subscription.status, SubscriptionStatus::Incomplete);
    assert_eq!(created.payment_intent.status, IntentStatus::Pending);
    assert_eq!(created.payment_intent.amount.value, 999);
    settle(n, ctx, &created.subscription, true).await;
    let id = created.subscription.id.to_string();
    let sub = after(n, clock, ctx, &id, 0).await;
    assert_eq!(sub.status, SubscriptionStatus::Active);
    assert_eq!(sub.periods_paid, 1);
    sub
}

#[tokio::test]
async fn renewal_falls_due_on_the_clock_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_800_000_000_000);
    let (secret, sub) = {
        let n = node(dir.path(), &clock).await;
        let (secret, ctx, svc) = merchant_with_plan(&n, &clock).await;
        let sub = active_subscription(&n, &clock, &ctx, &svc).await;
        let anchor = sub.billing_anchor.unwrap();
        assert_eq!(sub.current_period_start, Some(anchor));
        assert_eq!(
            sub.current_period_end,
            period_boundary(anchor, Interval::Monthly, 1)
        );
        assert_eq!(sub.next_billing_date, sub.current_period_end);
        // A day before the period ends nothing happens.
        let end = sub.current_period_end.unwrap().ms();
        let early = after(
            &n,
            &clock,
            &ctx,
            &sub.id.to_string(),
            end - clock.now_ms() - DAY_MS,
        )
        .await;
        assert_eq!(early.open_intent, None);
        let mut closed = n.ledger.closed();
        n.engine.shutdown().await;
        drop(n);
        tokio::time::timeout(Duration::from_secs(10), closed.wait_for(|c| *c))
            .await
            .unwrap()
            .unwrap();
        (secret, sub)
    };
    // The period ends while the engine is down; the reopened engine finds it due.
    clock.advance_ms(2 * DAY_MS);
    let n = node(dir.path(), &clock).await;
    let ctx = n.engine.authenticate(&secret, None).await.unwrap();
    let id = sub.id.to_string();
    let due = after(&n, &clock, &ctx, &id, 0).await;
    let renewal = due
        .open_intent
        .expect("renewal payment opened after restart");
    assert_ne!(Some(renewal), sub.latest_intent);
    assert_eq!(due.latest_intent, Some(renewal));
    // Ticking again (or on another node) opens no second payment.
    let again = after(&n, &clock, &ctx, &id, 0).await;
    assert_eq!(again.open_intent, Some(renewal));
    settle(&n, &ctx, &due, true).await;
    let renewed = after(&n, &clock, &ctx, &id, 10_000).await;
    assert_eq!(renewed.status, SubscriptionStatus::Active);
    assert_eq!(renewed.periods_paid, 2);
    let anchor = sub.billing_anchor.unwrap();
    assert_eq!(renewed.current_period_start, sub.current_period_end);
    assert_eq!(
        renewed.current_period_end,
        period_boundary(anchor, Interval::Monthly, 2)
    );
    assert_eq!(
        event_types(&n, &ctx, &id).await,
        vec!["subscription.renewed"]
    );
}

#[tokio::test]
async fn cancel_at_period_end_keeps_access_then_revokes_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_800_000_000_000);
    let n = node(dir.path(), &clock).await;
    let (_, ctx, svc) = merchant_with_plan(&n, &clock).await;
    let sub = active_subscription(&n, &clock, &ctx, &svc).await;
    let id = sub.id.to_string();
    let c = n.engine.cancel_subscription(&ctx, &id).await.unwrap();
    assert_eq!(c.status, SubscriptionStatus::Active);
    assert!(c.cancel_at_period_end);
    assert_eq!(c.next_billing_date, None);
    // Cancelling again changes nothing and emits nothing.
    let again = n.engine.cancel_subscription(&ctx, &id).await.unwrap();
    assert_eq!(again, c);
    assert_eq!(
        event_types(&n, &ctx, &id).await,
        vec!["subscription.cancelled"]
    );
    let end = sub.current_period_end.unwrap().ms();
    let still = after(&n, &clock, &ctx, &id, end - clock.now_ms() - 1).await;
    assert_eq!(still.status, SubscriptionStatus::Active);
    let ended = after(&n, &clock, &ctx, &id, 1).await;
    assert_eq!(ended.status, SubscriptionStatus::Cancelled);
    assert_eq!(ended.ended_at, Some(Timestamp(end)));
    assert_eq!(
        ended.latest_intent, sub.latest_intent,
        "no renewal was charged"
    );
    assert_eq!(
        event_types(&n, &ctx, &id).await,
        vec!["subscription.cancelled", "revocation.succeeded"]
    );
    let err = n.engine.cancel_subscription(&ctx, &id).await.unwrap_err();
    assert_eq!(err.code(), "invalid_state_transition");
}

#[tokio::test]
async fn a_paused_service_still_renews_its_subscriptions_but_takes_no_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_800_000_000_000);
    let n = node(dir.path(), &clock).await;
    let (_, ctx, svc) = merchant_with_plan(&n, &clock).await;
    let sub = active_subscription(&n, &clock, &ctx, &svc).await;
    n.engine
        .service_action(&ctx, &svc, ServiceAction::Pause)
        .await
        .unwrap();
    // New subscribers are refused while the manifest is hidden from discovery...
    let err = n
        .engine
        .create_subscription(&ctx, subscribe_req(&svc, "plan_starter"), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "service_not_active");
    // ...but the active subscription renews as usual.
    let id = sub.id.to_string();
    let end = sub.current_period_end.unwrap().ms();
    let due = after(&n, &clock, &ctx, &id, end - clock.now_ms()).await;
    assert!(
        due.open_intent.is_some(),
        "renewal opened on a paused service"
    );
    assert_eq!(due.status, SubscriptionStatus::Active);
    settle(&n, &ctx, &due, true).await;
    let renewed = after(&n, &clock, &ctx, &id, 10_000).await;
    assert_eq!(renewed.periods_paid, 2);
    assert_eq!(
        event_types(&n, &ctx, &id).await,
        vec!["subscription.renewed"]
    );
}

#[tokio::test]
async fn failed_renewals_go_past_due_retry_and_finally_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_800_000_000_000);
    let n = node(dir.path(), &clock).await;
    let (_, ctx, svc) = merchant_with_plan(&n, &clock).await;
    let sub = active_subscription(&n, &clock, &ctx, &svc).await;
    let id = sub.id.to_string();
    let to_end = sub.current_period_end.unwrap().ms() - clock.now_ms();
    // Period 2: the first attempt fails, the retry a day later succeeds.
    let due = after(&n, &clock, &ctx, &id, to_end).await;
    settle(&n, &ctx, &due, false).await;
    let past_due = after(&n, &clock, &ctx, &id, 10_000).await;
    assert_eq!(past_due.status, SubscriptionStatus::PastDue);
    assert_eq!(past_due.renewal_attempts, 1);
    assert_eq!(past_due.open_intent, None);
    let retry = after(&n, &clock, &ctx, &id, DAY_MS).await;
    assert_ne!(retry.open_intent, due.open_intent);
    settle(&n, &ctx, &retry, true).await;
    let renewed = after(&n, &clock, &ctx, &id, 10_000).await;
    assert_eq!(renewed.status, SubscriptionStatus::Active);
    assert_eq!(renewed.renewal_attempts, 0);
    // Periods stay on the anchor although the payment came a day late.
    assert_eq!(renewed.current_period_start, sub.current_period_end);
    // Period 3: three failed attempts end the subscription.
    let mut s = after(
        &n,
        &clock,
        &ctx,
        &id,
        renewed.current_period_end.unwrap().ms() - clock.now_ms(),
    )
    .await;
    for attempt in 1..=3 {
        settle(&n, &ctx, &s, false).await;
        s = after(&n, &clock, &ctx, &id, 10_000).await;
        if attempt < 3 {
            assert_eq!(s.status, SubscriptionStatus::PastDue);
            s = after(&n, &clock, &ctx, &id, DAY_MS).await;
        }
    }
    assert_eq!(s.status, SubscriptionStatus::Cancelled);
    assert_eq!(s.cancellation_reason.as_deref(), Some("payment_failed"));
    assert_eq!(
        event_types(&n, &ctx, &id).await,
        vec![
            "subscription.renewed",
            "subscription.cancelled",
            "revocation.succeeded"
        ]
    );
}

#[tokio::test]
async fn bad_subscription_requests_get_coded_errors() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_800_000_000_000);
    let n = node(dir.path(), &clock).await;
    let (_, ctx, svc) = merchant_with_plan(&n, &clock).await;
    let e = n
        .engine
        .create_subscription(&ctx, subscribe_req(&svc, "plan_gold"), None)
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.param()), ("plan_unknown", Some("plan_id")));
    let e = n
        .engine
        .create_subscription(&ctx, subscribe_req("svc_nope", "plan_starter"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "parameter_invalid");
    let (plain, _) = n
        .engine
        .upsert_service(
            &ctx,
            ServiceInput {
                name: Some("one-off only".into()),
                accepted_channels: Some(vec!["sandbox".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let e = n
        .engine
        .create_subscription(
            &ctx,
            subscribe_req(&plain.id.to_string(), "plan_starter"),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), "subscriptions_not_offered");
    let e = n
        .engine
        .get_subscription(&ctx, "sub_nope")
        .await
        .unwrap_err();
    assert_eq!(e.code(), "resource_missing");
    let e = n
        .engine
        .list_subscriptions(&ctx, Some("paused"), None, None)
        .await
        .unwrap_err();
    assert_eq!(e.param(), Some("status"));
}
