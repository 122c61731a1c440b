//! Memory held per live payment session, measured with a counting allocator: the bytes freed
//! when idle sessions are passivated, divided by their number. The budget (≤ 1.5 KiB per live
//! session) comes from the architecture: a million live sessions must fit in ~1.5 GiB.

use ipay_engine::clock::ManualClock;
use ipay_engine::engine::{
    AmountInput, CreateIntentRequest, Engine, EngineConfig, create_merchant,
};
use ipay_engine::model::{ServiceAction, ServiceInput};
use ipay_engine::session::SessionConfig;
use ipay_engine::store::embedded::{EmbeddedLedger, EmbeddedOptions};
use ipay_engine::store::memory_hot::MemoryHotState;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

static IN_USE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        IN_USE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        IN_USE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        IN_USE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_session_costs_under_one_and_a_half_kib() {
    const N: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let opts = EmbeddedOptions {
        checkpoint_interval: std::time::Duration::from_secs(3600),
        ..Default::default()
    };
    let ledger = EmbeddedLedger::open(dir.path(), opts).unwrap();
    let clock = ManualClock::new(1_800_000_000_000);
    let sessions = SessionConfig {
        shards: 64,
        passivate_after_ms: 1_000,
        tick_interval_ms: 3_600_000,
        ..Default::default()
    };
    let cfg = EngineConfig {
        sessions,
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
    let creds = create_merchant(ledger.as_ref(), &clock, "mem")
        .await
        .unwrap();
    let ctx = engine
        .authenticate(&creds.test_secret_key, None)
        .await
        .unwrap();
    let input = ServiceInput {
        name: Some("m".into()),
        accepted_channels: Some(vec!["sandbox".into()]),
        ..Default::default()
    };
    let (svc, _) = engine.upsert_service(&ctx, input).await.unwrap();
    engine
        .service_action(&ctx, &svc.id.to_string(), ServiceAction::Activate)
        .await
        .unwrap();
    let mut metadata = serde_json::Map::new();
    metadata.insert("order_id".into(), "ORD-2026-000123".into());
    let req = CreateIntentRequest {
        service_id: svc.id.to_string(),
        amount: AmountInput {
            value: 1999,
            currency: "EUR".into(),
        },
        channel: "sandbox".into(),
        metadata: Some(metadata),
        expires_in: Some(3600),
    };
    for _ in 0..(N / 500) {
        let mut tasks = Vec::new();
        for _ in 0..500 {
            let (e, c, r) = (engine.clone(), ctx.clone(), req.clone());
            tasks.push(tokio::spawn(async move {
                e.create_intent(&c, r, None).await.map(|_| ())
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    }
    // Let shards see the commit acknowledgements, then measure with every session live.
    engine.sessions().tick_all().await;
    assert_eq!(engine.sessions().context().live_sessions(), N as i64);
    let live = IN_USE.load(Ordering::SeqCst);
    clock.advance_ms(2_000);
    engine.sessions().tick_all().await;
    assert_eq!(engine.sessions().context().live_sessions(), 0);
    let idle = IN_USE.load(Ordering::SeqCst);
    let per_session = (live - idle) as f64 / N as f64;
    // The per-shard hash tables keep their capacity after passivation: ≈ 32 bytes a slot.
    let per_session = per_session + 32.0;
    println!("memory per live session: {per_session:.0} bytes ({N} sessions)");
    assert!(
        per_session > 100.0,
        "measurement is implausibly small: {per_session}"
    );
    assert!(
        per_session <= 1536.0,
        "a live session costs {per_session:.0} bytes, over the 1.5 KiB budget"
    );
    engine.shutdown().await;
}
