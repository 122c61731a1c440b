//! Webhook delivery rate: events committed through the outbox-wrapped ledger, fanned out,
//! signed (both schemes), sent over loopback HTTP/1.1 keep-alive to a sink that answers 200,
//! and recorded (attempt log, delivery record) in the embedded ledger. One endpoint; every
//! event about its own object. An iteration ends when the sink has answered every delivery
//! (the dispatcher records each outcome in its next bookkeeping step, within milliseconds).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ipay_engine::clock::{Clock, SystemClock};
use ipay_engine::engine::{Engine, EngineConfig, create_merchant};
use ipay_engine::model::Event;
use ipay_engine::store::embedded::{EmbeddedLedger, EmbeddedOptions};
use ipay_engine::store::memory_hot::MemoryHotState;
use ipay_engine::store::{WriteBatch, WriteOp};
use ipay_engine::webhooks::api::EndpointInput;
use ipay_engine::webhooks::{Outbox, WebhookConfig, WebhookDeps, Webhooks};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Deliveries per measured iteration.
const N: usize = 20_000;

/// A loopback HTTP/1.1 sink: reads each request (headers + content-length body), answers 200.
async fn sink(count: Arc<AtomicUsize>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = l.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let _ = sock.set_nodelay(true);
                let mut buf = Vec::with_capacity(8192);
                let mut chunk = vec![0u8; 16384];
                loop {
                    // Handle every complete request in the buffer.
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = std::str::from_utf8(&buf[..end]).unwrap_or("");
                        let len = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() < end + 4 + len {
                            break;
                        }
                        buf.drain(..end + 4 + len);
                        count.fetch_add(1, Ordering::Relaxed);
                        if sock
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    url
}

fn deliveries(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let (engine, ctx, _webhooks) = rt.block_on(async {
        let ledger = EmbeddedLedger::open(dir.path(), EmbeddedOptions::default()).unwrap();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let outbox = Outbox::attach(ledger.as_ref()).unwrap();
        let engine = Engine::start(
            ledger,
            Arc::new(MemoryHotState::new()),
            clock.clone(),
            EngineConfig::default(),
        )
        .await
        .unwrap();
        let creds = create_merchant(engine.ledger().as_ref(), clock.as_ref(), "Bench")
            .await
            .unwrap();
        let ctx = engine
            .authenticate(&creds.test_secret_key, None)
            .await
            .unwrap();
        let cfg = WebhookConfig {
            allow_insecure_loopback: true,
            ..WebhookConfig::default()
        };
        let deps = WebhookDeps {
            ledger: engine.ledger().clone(),
            hot: engine.hot().clone(),
            clock: engine.clock().clone(),
            outbox,
            url_policy: cfg.url_policy(),
            max_page_size: engine.config().limits.max_page_size,
        };
        let webhooks = Webhooks::start(deps, cfg).await.unwrap();
        let url = sink(count.clone()).await;
        webhooks
            .create_endpoint(
                &ctx,
                EndpointInput {
                    url,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        (engine, ctx, webhooks)
    });

    let mut g = c.benchmark_group("webhooks");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("deliver_to_loopback_sink", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start_count = count.load(Ordering::Relaxed);
                    let t0 = Instant::now();
                    let mut tickets = Vec::new();
                    for chunk in 0..N / 500 {
                        let mut batch = WriteBatch::new();
                        for i in 0..500 {
                            let obj = format!("pi_bench_{chunk}_{i}_{}", t0.elapsed().as_nanos());
                            batch.push(WriteOp::PutEvent(Event::new(
                                ctx.merchant_id,
                                false,
                                "payment_intent.succeeded",
                                engine.clock().now(),
                                obj.clone(),
                                &serde_json::json!({"id": obj, "amount": {"value": 699, "currency": "CNY"}}),
                            )));
                        }
                        tickets.push(engine.ledger().submit(batch));
                    }
                    for t in tickets {
                        t.await.unwrap();
                    }
                    while count.load(Ordering::Relaxed) < start_count + N {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    total += t0.elapsed();
                }
                total
            })
        })
    });
    g.finish();
}

criterion_group!(benches, deliveries);
criterion_main!(benches);
