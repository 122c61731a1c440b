//! Session-layer behaviour through the engine facade, on a real embedded ledger.

use crate::clock::{Clock, ManualClock};
use crate::engine::{
    AmountInput, AuthContext, CreateIntentRequest, CreateRefundRequest, Engine, EngineConfig,
    create_merchant,
};
use crate::model::{IntentCommand, IntentStatus, ServiceAction, ServiceInput};
use crate::session::SessionConfig;
use crate::store::embedded::{EmbeddedLedger, EmbeddedOptions};
use crate::store::memory_hot::MemoryHotState;
use crate::store::{IntentQuery, Ledger, PageRequest};
use std::sync::Arc;
use std::time::Duration;

struct Fixture {
    engine: Engine,
    ledger: Arc<EmbeddedLedger>,
    clock: ManualClock,
    ctx: AuthContext,
    service_id: String,
    _dir: tempfile::TempDir,
}

async fn fixture(sessions: SessionConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ledger = EmbeddedLedger::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let clock = ManualClock::new(1_800_000_000_000);
    let config = EngineConfig {
        sessions,
        ..Default::default()
    };
    let engine = Engine::start(
        ledger.clone(),
        Arc::new(MemoryHotState::new()),
        Arc::new(clock.clone()),
        config,
    )
    .await
    .unwrap();
    let creds = create_merchant(ledger.as_ref(), &clock, "Test shop")
        .await
        .unwrap();
    let ctx = engine
        .authenticate(&creds.test_secret_key, None)
        .await
        .unwrap();
    let input = ServiceInput {
        name: Some("Svc".into()),
        accepted_channels: Some(vec!["sandbox".into()]),
        ..Default::default()
    };
    let (svc, _) = engine.upsert_service(&ctx, input).await.unwrap();
    engine
        .service_action(&ctx, &svc.id.to_string(), ServiceAction::Activate)
        .await
        .unwrap();
    Fixture {
        engine,
        ledger,
        clock,
        ctx,
        service_id: svc.id.to_string(),
        _dir: dir,
    }
}

fn req(service_id: &str, value: i64) -> CreateIntentRequest {
    CreateIntentRequest {
        service_id: service_id.to_string(),
        amount: AmountInput {
            value,
            currency: "EUR".into(),
        },
        channel: "sandbox".into(),
        metadata: None,
        expires_in: Some(120),
    }
}

async fn create(f: &Fixture, value: i64) -> crate::model::PaymentIntent {
    let out = f
        .engine
        .create_intent(&f.ctx, req(&f.service_id, value), None)
        .await
        .unwrap();
    serde_json::from_str(&out.body).unwrap()
}

#[tokio::test]
async fn a_panicking_shard_is_restarted_and_its_sessions_keep_serving() {
    let f = fixture(SessionConfig {
        shards: 4,
        ..Default::default()
    })
    .await;
    let pi = create(&f, 1000).await;
    f.engine.sessions().inject_panic(pi.id);
    // The next command reaches a fresh shard that rehydrates the session from the ledger.
    let mut result = f
        .engine
        .sandbox_settle(&f.ctx, &pi.id.to_string(), true)
        .await;
    for _ in 0..50 {
        if result.is_ok() {
            break;
        }
        assert_eq!(result.as_ref().unwrap_err().code(), "session_unavailable");
        let mut generation = f.engine.sessions().context().generation.subscribe();
        let _ = tokio::time::timeout(Duration::from_millis(100), generation.changed()).await;
        result = f
            .engine
            .sandbox_settle(&f.ctx, &pi.id.to_string(), true)
            .await;
    }
    let settled = result.unwrap();
    assert_eq!(settled.status, IntentStatus::Succeeded);
    assert_eq!(
        f.engine
            .get_intent(&f.ctx, &pi.id.to_string())
            .await
            .unwrap()
            .status,
        IntentStatus::Succeeded
    );
    // Other sessions on other shards were never disturbed, and new ones work.
    let other = create(&f, 500).await;
    assert_eq!(
        f.engine
            .cancel_intent(&f.ctx, &other.id.to_string(), None)
            .await
            .unwrap()
            .status,
        IntentStatus::Cancelled
    );
}

#[tokio::test]
async fn expiry_runs_on_the_session_timer_with_the_injected_clock() {
    let f = fixture(SessionConfig {
        shards: 2,
        tick_interval_ms: 3_600_000,
        ..Default::default()
    })
    .await;
    let mut events = f.ledger.subscribe();
    let pi = create(&f, 1000).await;
    f.engine.sessions().tick_all().await;
    assert_eq!(
        f.engine
            .get_intent(&f.ctx, &pi.id.to_string())
            .await
            .unwrap()
            .status,
        IntentStatus::Pending
    );
    f.clock.advance_ms(120_000);
    f.engine.sessions().tick_all().await;
    let expired = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let ev = events.recv().await.unwrap();
            if ev.event_type == "payment_intent.expired" {
                return ev;
            }
        }
    })
    .await
    .expect("expired event");
    assert_eq!(expired.object_id, pi.id.to_string());
    assert_eq!(
        f.engine
            .get_intent(&f.ctx, &pi.id.to_string())
            .await
            .unwrap()
            .status,
        IntentStatus::Expired
    );
    let err = f
        .engine
        .sandbox_settle(&f.ctx, &pi.id.to_string(), true)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_state_transition");
}

#[tokio::test]
async fn expiry_timers_are_rearmed_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_800_000_000_000);
    let pi_id;
    let mut closed;
    {
        let ledger = EmbeddedLedger::open(dir.path(), EmbeddedOptions::default()).unwrap();
        closed = ledger.closed();
        let engine = Engine::start(
            ledger.clone(),
            Arc::new(MemoryHotState::new()),
            Arc::new(clock.clone()),
            EngineConfig::default(),
        )
        .await
        .unwrap();
        let creds = create_merchant(ledger.as_ref(), &clock, "m").await.unwrap();
        let ctx = engine
            .authenticate(&creds.test_secret_key, None)
            .await
            .unwrap();
        let (svc, _) = engine
            .upsert_service(
                &ctx,
                ServiceInput {
                    name: Some("s".into()),
                    accepted_channels: Some(vec!["sandbox".into()]),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        engine
            .service_action(&ctx, &svc.id.to_string(), ServiceAction::Activate)
            .await
            .unwrap();
        let out = engine
            .create_intent(&ctx, req(&svc.id.to_string(), 100), None)
            .await
            .unwrap();
        pi_id = serde_json::from_str::<crate::model::PaymentIntent>(&out.body)
            .unwrap()
            .id;
        engine.shutdown().await;
    }
    // Every handle is gone: wait for the writer threads to release the file.
    tokio::time::timeout(Duration::from_secs(10), closed.wait_for(|c| *c))
        .await
        .unwrap()
        .unwrap();
    let ledger = EmbeddedLedger::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let cfg = EngineConfig {
        sessions: SessionConfig {
            tick_interval_ms: 3_600_000,
            ..Default::default()
        },
        ..Default::default()
    };
    let engine = Engine::start(
        ledger.clone(),
        Arc::new(MemoryHotState::new()),
        Arc::new(clock.clone()),
        cfg,
    )
    .await
    .unwrap();
    let mut events = ledger.subscribe();
    clock.advance_ms(3_600_000);
    engine.sessions().tick_all().await;
    let ev = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev.event_type, "payment_intent.expired");
    assert_eq!(
        ledger.get_intent(pi_id).await.unwrap().unwrap().status,
        IntentStatus::Expired
    );
}

#[tokio::test]
async fn idle_sessions_passivate_and_rehydrate_on_the_next_message() {
    let f = fixture(SessionConfig {
        shards: 2,
        passivate_after_ms: 1_000,
        tick_interval_ms: 3_600_000,
        ..Default::default()
    })
    .await;
    let pi = create(&f, 2000).await;
    let live = f.engine.sessions().context().live_sessions();
    assert!(live >= 1);
    f.clock.advance_ms(5_000);
    f.engine.sessions().tick_all().await;
    assert_eq!(f.engine.sessions().context().live_sessions(), 0);
    let settled = f
        .engine
        .sandbox_settle(&f.ctx, &pi.id.to_string(), true)
        .await
        .unwrap();
    assert_eq!(settled.status, IntentStatus::Succeeded);
    assert_eq!(f.engine.sessions().context().live_sessions(), 1);
}

#[tokio::test]
async fn concurrent_refunds_never_exceed_the_captured_amount() {
    let f = fixture(SessionConfig::default()).await;
    let pi = create(&f, 1000).await;
    f.engine
        .sandbox_settle(&f.ctx, &pi.id.to_string(), true)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let engine = f.engine.clone();
        let ctx = f.ctx.clone();
        let id = pi.id.to_string();
        tasks.push(tokio::spawn(async move {
            let r = CreateRefundRequest {
                payment_intent: id,
                amount: Some(AmountInput {
                    value: 150,
                    currency: "EUR".into(),
                }),
                reason: None,
            };
            engine.create_refund(&ctx, r, None).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 6, "1000 / 150 = 6 refunds fit");
    let after = f
        .engine
        .get_intent(&f.ctx, &pi.id.to_string())
        .await
        .unwrap();
    assert_eq!(after.amount_refunded, 900);
    let (refunds, _) = f
        .engine
        .list_refunds(&f.ctx, Some(&pi.id.to_string()), Some(100), None)
        .await
        .unwrap();
    assert_eq!(refunds.total, 6);
}

#[tokio::test]
async fn fifty_concurrent_creates_with_one_idempotency_key_make_one_intent() {
    let f = fixture(SessionConfig::default()).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let engine = f.engine.clone();
        let ctx = f.ctx.clone();
        let r = req(&f.service_id, 4242);
        tasks.push(tokio::spawn(async move {
            engine.create_intent(&ctx, r, Some("order-77")).await
        }));
    }
    let mut bodies = std::collections::HashSet::new();
    let mut fresh = 0;
    for t in tasks {
        let out = t.await.unwrap().unwrap();
        assert_eq!(out.status, 201);
        fresh += usize::from(!out.replayed);
        bodies.insert(out.body);
    }
    assert_eq!(fresh, 1);
    assert_eq!(bodies.len(), 1);
    let q = IntentQuery {
        status: None,
        channel: None,
        created_after: None,
        created_before: None,
        descending: true,
        page: PageRequest {
            limit: 100,
            offset: 0,
        },
    };
    assert_eq!(
        f.ledger
            .list_intents(f.ctx.merchant_id, false, &q)
            .await
            .unwrap()
            .total,
        1
    );
    let err = f
        .engine
        .create_intent(&f.ctx, req(&f.service_id, 1), Some("order-77"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "idempotency_key_reused");
}

#[tokio::test]
async fn commands_for_unknown_intents_are_not_found() {
    let f = fixture(SessionConfig::default()).await;
    let id = crate::ids::PaymentIntentId::new_at(f.clock.now_ms());
    let err = f
        .engine
        .sessions()
        .command(id, IntentCommand::Cancel { reason: None }, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "resource_missing");
}
