//! Hot paths of the engine core: money and id handling, the transition function, API-key
//! authentication, a durable ledger commit, and a whole durable intent creation in-process.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ipay_engine::clock::{SystemClock, Timestamp};
use ipay_engine::engine::{
    AmountInput, CreateIntentRequest, Engine, EngineConfig, create_merchant,
};
use ipay_engine::ids::{MerchantId, PaymentIntentId, ServiceId};
use ipay_engine::model::{IntentCommand, IntentStatus, PaymentIntent, ServiceAction, ServiceInput};
use ipay_engine::money::Money;
use ipay_engine::store::embedded::{EmbeddedLedger, EmbeddedOptions};
use ipay_engine::store::memory_hot::MemoryHotState;
use ipay_engine::store::{Ledger, WriteBatch, WriteOp};
use std::hint::black_box;
use std::sync::Arc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn sample_intent() -> PaymentIntent {
    PaymentIntent {
        id: PaymentIntentId::new_at(1_800_000_000_000),
        status: IntentStatus::Pending,
        amount: Money::from_parts(699, "CNY").unwrap(),
        amount_refunded: 0,
        refunds_pending: Vec::new(),
        payer: None,
        channel: "sandbox".into(),
        service_id: ServiceId::new_at(1_800_000_000_000),
        qr_code: "ipay+sandbox://pay".into(),
        channel_reference: None,
        metadata: Default::default(),
        failure_reason: None,
        cancellation_reason: None,
        settlement: None,
        livemode: false,
        merchant_id: MerchantId::new_at(1_800_000_000_000),
        expires_at: Timestamp(1_800_000_900_000),
        created: Timestamp(1_800_000_000_000),
        updated: Timestamp(1_800_000_000_000),
    }
}

fn core(c: &mut Criterion) {
    let mut g = c.benchmark_group("core");
    g.bench_function("money_from_parts", |b| {
        b.iter(|| Money::from_parts(black_box(699), black_box("CNY")))
    });
    g.bench_function("intent_id_new", |b| {
        b.iter(|| PaymentIntentId::new_at(black_box(1_800_000_000_000)))
    });
    let s = PaymentIntentId::new_at(1).to_string();
    g.bench_function("intent_id_parse", |b| {
        b.iter(|| PaymentIntentId::parse(black_box(&s)))
    });
    let pi = sample_intent();
    g.bench_function("transition_succeed", |b| {
        b.iter(|| {
            pi.apply(
                black_box(&IntentCommand::Succeed {
                    channel_reference: None,
                    payer: None,
                    settlement: None,
                }),
                Timestamp(1_800_000_000_500),
            )
        })
    });
    g.bench_function("intent_to_json", |b| {
        b.iter(|| serde_json::to_vec(black_box(&pi)))
    });
    g.finish();
}

fn auth_and_store(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ledger = EmbeddedLedger::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let engine = rt
        .block_on(Engine::start(
            ledger.clone(),
            Arc::new(MemoryHotState::new()),
            Arc::new(SystemClock),
            EngineConfig::default(),
        ))
        .unwrap();
    let creds = rt
        .block_on(create_merchant(ledger.as_ref(), &SystemClock, "bench"))
        .unwrap();
    let key = creds.test_secret_key.clone();

    let mut g = c.benchmark_group("auth");
    g.bench_function("authenticate_cached_key", |b| {
        b.to_async(&rt)
            .iter(|| engine.authenticate(black_box(&key), None))
    });
    g.finish();

    let mut g = c.benchmark_group("ledger");
    g.sample_size(20);
    g.bench_function("durable_commit_single_batch", |b| {
        b.to_async(&rt).iter_batched(
            || {
                let mut batch = WriteBatch::new();
                batch.push(WriteOp::PutIntent(sample_intent()));
                batch
            },
            |batch| ledger.submit(batch),
            BatchSize::SmallInput,
        )
    });
    g.throughput(Throughput::Elements(256));
    g.bench_function("durable_commit_256_concurrent_batches", |b| {
        b.to_async(&rt).iter(|| async {
            let tickets: Vec<_> = (0..256)
                .map(|_| {
                    let mut batch = WriteBatch::new();
                    let mut pi = sample_intent();
                    pi.id = PaymentIntentId::new_at(1_800_000_000_000);
                    batch.push(WriteOp::PutIntent(pi.clone()));
                    batch.push(WriteOp::PutEvent(pi.created_event()));
                    ledger.submit(batch)
                })
                .collect();
            for t in tickets {
                t.await.unwrap();
            }
        })
    });
    g.finish();

    let ctx = rt.block_on(engine.authenticate(&key, None)).unwrap();
    let input = ServiceInput {
        name: Some("bench".into()),
        accepted_channels: Some(vec!["sandbox".into()]),
        ..Default::default()
    };
    let (svc, _) = rt.block_on(engine.upsert_service(&ctx, input)).unwrap();
    rt.block_on(engine.service_action(&ctx, &svc.id.to_string(), ServiceAction::Activate))
        .unwrap();
    let req = CreateIntentRequest {
        service_id: svc.id.to_string(),
        amount: AmountInput {
            value: 699,
            currency: "CNY".into(),
        },
        channel: "sandbox".into(),
        metadata: None,
        expires_in: None,
    };
    let mut g = c.benchmark_group("engine");
    g.sample_size(20);
    g.bench_function("create_intent_durable_one_at_a_time", |b| {
        b.to_async(&rt)
            .iter(|| engine.create_intent(&ctx, req.clone(), None))
    });
    g.throughput(Throughput::Elements(256));
    g.bench_function("create_intent_durable_256_concurrent", |b| {
        b.to_async(&rt).iter(|| async {
            let tasks: Vec<_> = (0..256)
                .map(|_| {
                    let (engine, ctx, req) = (engine.clone(), ctx.clone(), req.clone());
                    tokio::spawn(async move { engine.create_intent(&ctx, req, None).await })
                })
                .collect();
            for t in tasks {
                t.await.unwrap().unwrap();
            }
        })
    });
    g.finish();
    rt.block_on(engine.shutdown());
}

criterion_group!(benches, core, auth_and_store);
criterion_main!(benches);
