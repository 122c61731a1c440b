//! Engine-level tests of the outbox and the dispatcher: an embedded ledger, an injected clock
//! that the tests move, and a loopback HTTP receiver whose answers each test scripts.

use super::api::{EndpointInput, LogParams};
use super::model::{self, DeliveryStatus, EndpointStatus, RETRY_SCHEDULE_SECS};
use super::{Outbox, WebhookConfig, WebhookDeps, Webhooks};
use crate::clock::{Clock, ManualClock};
use crate::engine::{AuthContext, create_merchant};
use crate::ids::EventId;
use crate::model::Event;
use crate::store::embedded::{EmbeddedLedger, EmbeddedOptions};
use crate::store::memory_hot::MemoryHotState;
use crate::store::{EntryRange, WriteBatch, WriteOp};
use crate::{Engine, EngineConfig};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    headers: HashMap<String, String>,
    body: String,
}

/// What the receiver answers to the n-th request (0-based): status, extra headers, delay ms.
type Script = Arc<dyn Fn(usize, &Hit) -> (u16, Vec<(&'static str, String)>, u64) + Send + Sync>;

struct Receiver {
    url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Receiver {
    async fn start(script: Script) -> Receiver {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        let hits = Arc::new(Mutex::new(Vec::new()));
        let h = hits.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = l.accept().await {
                tokio::spawn(serve_conn(sock, script.clone(), h.clone()));
            }
        });
        Receiver { url, hits }
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().clone()
    }

    fn count(&self) -> usize {
        self.hits.lock().len()
    }
}

async fn serve_conn(mut sock: tokio::net::TcpStream, script: Script, hits: Arc<Mutex<Vec<Hit>>>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut headers = HashMap::new();
        for line in head.lines().skip(1) {
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
        buf.drain(..head_end + len);
        let hit = Hit { headers, body };
        let n = {
            let mut h = hits.lock();
            h.push(hit.clone());
            h.len() - 1
        };
        let (status, extra, delay) = script(n, &hit);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let mut resp = format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\n");
        for (k, v) in extra {
            resp.push_str(&format!("{k}: {v}\r\n"));
        }
        resp.push_str("\r\n{}");
        if sock.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

struct Env {
    clock: ManualClock,
    engine: Engine,
    outbox: Arc<Outbox>,
    webhooks: Arc<Webhooks>,
    ctx: AuthContext,
    _dir: tempfile::TempDir,
}

async fn env(tweak: impl FnOnce(&mut WebhookConfig)) -> Env {
    env_resolving(tweak, Arc::new(crate::url_policy::SystemLookup)).await
}

/// [`env`] whose dispatcher resolves endpoint host names with `lookup`.
async fn env_resolving(
    tweak: impl FnOnce(&mut WebhookConfig),
    lookup: Arc<dyn crate::url_policy::Lookup>,
) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let ledger = EmbeddedLedger::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let clock = ManualClock::new(1_800_000_000_000);
    let outbox = Outbox::attach(ledger.as_ref()).unwrap();
    let hot = Arc::new(MemoryHotState::new());
    let engine = Engine::start(
        ledger,
        hot.clone(),
        Arc::new(clock.clone()),
        EngineConfig::default(),
    )
    .await
    .unwrap();
    let creds = create_merchant(engine.ledger().as_ref(), &clock, "Hooks")
        .await
        .unwrap();
    let ctx = engine
        .authenticate(&creds.test_secret_key, None)
        .await
        .unwrap();
    let mut cfg = WebhookConfig {
        allow_insecure_loopback: true,
        poll_interval_ms: 10,
        timeout_ms: 300,
        inflight_lease_ms: 2_000,
        ..WebhookConfig::default()
    };
    tweak(&mut cfg);
    let deps = WebhookDeps {
        ledger: engine.ledger().clone(),
        hot,
        clock: engine.clock().clone(),
        outbox: outbox.clone(),
        url_policy: cfg.url_policy(),
        max_page_size: engine.config().limits.max_page_size,
    };
    let webhooks = Webhooks::start_with_lookup(deps, cfg, lookup)
        .await
        .unwrap();
    Env {
        clock,
        engine,
        outbox,
        webhooks,
        ctx,
        _dir: dir,
    }
}

impl Env {
    async fn endpoint(&self, url: &str) -> String {
        self.webhooks
            .create_endpoint(
                &self.ctx,
                EndpointInput {
                    url: url.to_string(),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .endpoint
            .id
    }

    /// Commits one event through the engine's ledger (which carries the outbox hook).
    async fn emit(&self, object: &str, event_type: &str) -> EventId {
        let e = Event::new(
            self.ctx.merchant_id,
            false,
            event_type,
            self.clock.now(),
            object.to_string(),
            &serde_json::json!({"id": object}),
        );
        let id = e.id;
        let mut b = WriteBatch::new();
        b.push(WriteOp::PutEvent(e));
        self.engine.ledger().submit(b).await.unwrap();
        id
    }

    /// The sort keys of this minute's due entries in the shard of `object`.
    async fn due_now(&self, object: &str) -> Vec<String> {
        let shard = model::shard_of(self.ctx.merchant_id, object);
        let part = model::due_partition(shard, model::minute_of(self.clock.now_ms()));
        self.engine
            .ledger()
            .scan_entries(model::DUE, &part, &EntryRange::all(100))
            .await
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect()
    }

    async fn delivery(&self, id: &str) -> Option<model::Delivery> {
        super::dispatch::load_delivery(self.engine.ledger().as_ref(), id)
            .await
            .unwrap()
    }

    /// Waits (polling, bounded) until the delivery satisfies `f`.
    async fn wait_delivery(
        &self,
        id: &str,
        what: &str,
        f: impl Fn(&model::Delivery) -> bool,
    ) -> model::Delivery {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(d) = self.delivery(id).await
                && f(&d)
            {
                return d;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Env {
    /// Wakes the shard of `object` and waits until it finished a scan that began after this
    /// call (so after any clock move before it); returns its progress then. Times out, failing
    /// the test, if the dispatcher does not run.
    async fn dispatcher_pass(&self, object: &str) -> super::dispatch::ShardProgress {
        let shard = model::shard_of(self.ctx.merchant_id, object);
        let mut rx = self.webhooks.progress(shard).expect("a dispatch shard");
        let started = rx.borrow().scans_started;
        self.webhooks.wake(shard, self.clock.now_ms());
        let p = tokio::time::timeout(
            Duration::from_secs(10),
            rx.wait_for(|p| p.scans_done > started),
        )
        .await
        .expect("the dispatcher did not run a step within 10 s")
        .expect("the dispatcher is gone");
        *p
    }

    /// Attempts started so far by the shard of `object`.
    fn sends(&self, object: &str) -> u64 {
        let shard = model::shard_of(self.ctx.merchant_id, object);
        self.webhooks
            .progress(shard)
            .expect("a dispatch shard")
            .borrow()
            .sends
    }
}

async fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_marker_is_written_in_the_events_batch() {
    let e = env(|c| c.dispatch = false).await;
    let id = e.emit("pi_x", "payment_intent.succeeded").await;
    let shard = model::shard_of(e.ctx.merchant_id, "pi_x");
    let part = model::due_partition(shard, model::minute_of(e.clock.now_ms()));
    let rows = e
        .engine
        .ledger()
        .scan_entries(model::DUE, &part, &EntryRange::all(10))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].0.ends_with(&format!(":f:{id}")));
    let ev: Event = serde_json::from_slice(&rows[0].1).unwrap();
    assert_eq!(ev.id, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_follow_the_retry_schedule_and_are_dropped_after_the_sixth_retry() {
    let e = env(|_| {}).await;
    let rx = Receiver::start(Arc::new(|_, _| (500, vec![], 0))).await;
    let ep = e.endpoint(&rx.url).await;
    let evt = e.emit("pi_sched", "payment_intent.succeeded").await;
    let did = format!("{evt}:{ep}");
    for (i, delay) in RETRY_SCHEDULE_SECS.iter().enumerate() {
        let attempts = i as u32 + 1;
        let d = e
            .wait_delivery(&did, "a failed attempt", |d| d.attempts == attempts)
            .await;
        assert_eq!(d.status, DeliveryStatus::Pending);
        let last = d.last_attempt.unwrap().ms();
        assert_eq!(d.next_attempt.unwrap().ms(), last + delay * 1000);
        assert_eq!(d.last_status_code, Some(500));
        // One millisecond early: a dispatcher step runs and sends nothing.
        let sends = e.sends("pi_sched");
        e.clock.advance_ms(delay * 1000 - 1);
        let p = e.dispatcher_pass("pi_sched").await;
        assert_eq!(p.sends, sends, "sent before it was due");
        assert_eq!(rx.count(), attempts as usize, "sent before it was due");
        e.clock.advance_ms(1);
    }
    let d = e
        .wait_delivery(&did, "the drop", |d| d.status == DeliveryStatus::Dropped)
        .await;
    assert_eq!(d.attempts, 7);
    assert_eq!(rx.count(), 7);
    let dropped = e
        .webhooks
        .dropped(&e.ctx, Default::default())
        .await
        .unwrap();
    assert_eq!(dropped.data.len(), 1);
    assert_eq!(dropped.data[0].id, did);
    let logs = e
        .webhooks
        .logs(
            &e.ctx,
            LogParams {
                event_id: Some(evt.to_string()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(logs.data.len(), 7);
    assert_eq!(logs.data[0].status, model::AttemptStatus::Dropped);
    assert!(
        logs.data[1..]
            .iter()
            .all(|l| l.status == model::AttemptStatus::Failed && l.status_code == Some(500))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_one_object_wait_for_the_earlier_one_but_other_objects_do_not() {
    let e = env(|_| {}).await;
    // The first request fails, everything after succeeds.
    let rx = Receiver::start(Arc::new(|n, _| (if n == 0 { 503 } else { 200 }, vec![], 0))).await;
    let ep = e.endpoint(&rx.url).await;
    let a1 = e.emit("pi_A", "payment_intent.created").await;
    let id_of = |h: &Hit| {
        serde_json::from_str::<serde_json::Value>(&h.body).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    wait_until("the first attempt", || rx.count() == 1).await;
    let a2 = e.emit("pi_A", "payment_intent.succeeded").await;
    let b1 = e.emit("pi_B", "payment_intent.succeeded").await;
    wait_until("the other object's event", || rx.count() == 2).await;
    // a2 waits behind a1: in a1's ordering chain, or, when b1 took the endpoint's one probe
    // after a1 failed, as a fan-out marker parked until the probe window ends.
    let a2_delivery = format!("{a2}:{ep}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting = e
            .delivery(&a2_delivery)
            .await
            .is_some_and(|d| d.status == DeliveryStatus::Waiting);
        if waiting
            || e.parked_marker(e.ctx.merchant_id, "pi_A", &a2)
                .await
                .is_some()
        {
            break;
        }
        assert!(Instant::now() < deadline, "a2 was never queued");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sends = e.sends("pi_A");
    let p = e.dispatcher_pass("pi_A").await;
    assert_eq!(p.sends, sends, "a2 was sent before a1 succeeded");
    assert_eq!(rx.count(), 2, "a2 was sent before a1 succeeded");
    e.clock.advance_ms(10_000);
    wait_until("a1 retried, then a2", || rx.count() == 4).await;
    let hits = rx.hits();
    assert_eq!(hits[0].headers["user-agent"], "ItPay-Webhook/1.0");
    assert_eq!(hits[0].headers["webhook-id"], a1.to_string());
    let order: Vec<String> = hits.iter().map(id_of).collect();
    assert_eq!(
        order,
        vec![
            a1.to_string(),
            b1.to_string(),
            a1.to_string(),
            a2.to_string()
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_on_429_is_honoured_up_to_the_configured_bound() {
    let e = env(|c| c.retry_after_max_secs = 600).await;
    let rx = Receiver::start(Arc::new(|n, _| {
        let ra = if n == 0 { "120" } else { "99999" };
        (429, vec![("retry-after", ra.to_string())], 0)
    }))
    .await;
    let ep = e.endpoint(&rx.url).await;
    let evt = e.emit("pi_ra", "payment_intent.succeeded").await;
    let did = format!("{evt}:{ep}");
    let d = e
        .wait_delivery(&did, "attempt 1", |d| d.attempts == 1)
        .await;
    assert_eq!(
        d.next_attempt.unwrap().ms(),
        d.last_attempt.unwrap().ms() + 120_000
    );
    e.clock.advance_ms(120_000);
    let d = e
        .wait_delivery(&did, "attempt 2", |d| d.attempts == 2)
        .await;
    // Asked for 99999 s, bounded at 600 s (longer than the schedule's 60 s).
    assert_eq!(
        d.next_attempt.unwrap().ms(),
        d.last_attempt.unwrap().ms() + 600_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_endpoint_and_later_events_are_not_sent() {
    let e = env(|_| {}).await;
    let rx = Receiver::start(Arc::new(|_, _| (410, vec![], 0))).await;
    let ep = e.endpoint(&rx.url).await;
    let evt = e.emit("pi_gone", "payment_intent.succeeded").await;
    let d = e
        .wait_delivery(&format!("{evt}:{ep}"), "the drop", |d| {
            d.status == DeliveryStatus::Dropped
        })
        .await;
    assert_eq!(d.last_status_code, Some(410));
    let view = e.webhooks.get_endpoint(&e.ctx, &ep).await.unwrap();
    assert_eq!(view.status, EndpointStatus::Disabled);
    let logs = e.webhooks.logs(&e.ctx, Default::default()).await.unwrap();
    assert!(logs.data[0].error.as_deref().unwrap().contains("410"));
    let sends = e.sends("pi_gone2");
    let later = e.emit("pi_gone2", "payment_intent.succeeded").await;
    let p = e.dispatcher_pass("pi_gone2").await;
    assert_eq!(p.sends, sends, "sent to a disabled endpoint");
    assert_eq!(rx.count(), 1);
    assert!(e.delivery(&format!("{later}:{ep}")).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_times_out_and_is_retried() {
    let e = env(|c| c.timeout_ms = 200).await;
    let rx = Receiver::start(Arc::new(|n, _| {
        (200, vec![], if n == 0 { 1_000 } else { 0 })
    }))
    .await;
    let ep = e.endpoint(&rx.url).await;
    let evt = e.emit("pi_slow", "payment_intent.succeeded").await;
    let did = format!("{evt}:{ep}");
    let d = e
        .wait_delivery(&did, "the timeout", |d| d.attempts == 1)
        .await;
    assert_eq!(d.last_error.as_deref(), Some("timeout"));
    assert_eq!(d.last_status_code, None);
    e.clock.advance_ms(10_000);
    let d = e
        .wait_delivery(&did, "the retry", |d| d.status == DeliveryStatus::Succeeded)
        .await;
    assert_eq!(d.attempts, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_larger_than_the_endpoint_room_is_delivered_once_each_in_object_order() {
    // Room for one delivery of the endpoint per shard: the rest stay in the due index (as
    // fan-out markers) and go out as attempts finish, each object's events in order.
    let e = env(|c| c.max_in_flight_per_endpoint = 1).await;
    let rx = Receiver::start(Arc::new(|_, _| (200, vec![], 3))).await;
    let _ep = e.endpoint(&rx.url).await;
    // Four objects of one shard, so they compete for that shard's room.
    let names: Vec<String> = (0..1000).map(|i| format!("pi_o{i}")).collect();
    let shard = model::shard_of(e.ctx.merchant_id, &names[0]);
    let objects: Vec<&str> = names
        .iter()
        .filter(|n| model::shard_of(e.ctx.merchant_id, n) == shard)
        .take(4)
        .map(|n| n.as_str())
        .collect();
    assert_eq!(objects.len(), 4);
    let mut emitted: HashMap<&str, Vec<String>> = HashMap::new();
    for round in 0..8 {
        for &o in &objects {
            let ty = if round % 2 == 0 {
                "payment_intent.created"
            } else {
                "payment_intent.succeeded"
            };
            emitted
                .entry(o)
                .or_default()
                .push(e.emit(o, ty).await.to_string());
            // Event ids order events by time; one event per millisecond keeps that unambiguous.
            e.clock.advance_ms(1);
        }
    }
    let total = objects.len() * 8;
    wait_until("every event", || rx.count() >= total).await;
    let hits = rx.hits();
    let ids: Vec<String> = hits
        .iter()
        .map(|h| {
            serde_json::from_str::<serde_json::Value>(&h.body).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    for id in &ids {
        assert!(seen.insert(id.clone()), "{id} delivered twice");
    }
    assert_eq!(ids.len(), total);
    for &o in &objects {
        let got: Vec<&String> = ids.iter().filter(|id| emitted[o].contains(id)).collect();
        let want: Vec<&String> = emitted[o].iter().collect();
        assert_eq!(got, want, "events of {o} out of order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_without_endpoints_writes_no_markers_and_an_added_endpoint_gets_events() {
    let e = env(|_| {}).await;
    let m = e.ctx.merchant_id;
    // Nothing is known yet: the first event has a marker, which the dispatcher resolves to no
    // endpoint at all.
    e.emit("pi_quiet", "payment_intent.created").await;
    wait_until("the dispatcher learnt there is no endpoint", || {
        e.outbox.knows_no_endpoints(m, false)
    })
    .await;
    let quiet = e.emit("pi_quiet", "payment_intent.succeeded").await;
    let due = e.due_now("pi_quiet").await;
    assert!(
        due.iter().all(|s| !s.ends_with(&format!(":f:{quiet}"))),
        "a marker was written for a merchant without endpoints: {due:?}"
    );
    // Its per-day entry is still there, for a later recovery.
    let day = model::day_partition(m, false, e.clock.now_ms());
    let entries = e
        .engine
        .ledger()
        .scan_entries(model::EVENTS_BY_DAY, &day, &EntryRange::all(10))
        .await
        .unwrap();
    assert!(entries.iter().any(|(s, _)| *s == quiet.to_string()));
    // An endpoint is added: the next event goes out.
    let rx = Receiver::start(Arc::new(|_, _| (200, vec![], 0))).await;
    let ep = e.endpoint(&rx.url).await;
    assert!(!e.outbox.knows_no_endpoints(m, false));
    let loud = e.emit("pi_loud", "payment_intent.succeeded").await;
    e.wait_delivery(&format!("{loud}:{ep}"), "the delivery", |d| {
        d.status == DeliveryStatus::Succeeded
    })
    .await;
    assert_eq!(rx.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_whose_name_resolves_inside_at_delivery_is_refused_and_dropped() {
    // The name was public when the endpoint was created; now it points at this machine's
    // receiver (DNS rebinding). The dispatcher must refuse the address, not connect to it.
    let rx = Receiver::start(Arc::new(|_, _| (200, vec![], 0))).await;
    let port = rx
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let mut names = HashMap::new();
    names.insert(
        "rebind.example.com".to_string(),
        vec!["127.0.0.1".parse().unwrap()],
    );
    let e = env_resolving(|_| {}, Arc::new(crate::url_policy::StaticLookup(names))).await;
    let ep = e
        .endpoint(&format!("https://rebind.example.com:{port}/hook"))
        .await;
    let evt = e.emit("pi_rebind", "payment_intent.succeeded").await;
    let did = format!("{evt}:{ep}");
    let d = e
        .wait_delivery(&did, "the refusal", |d| d.status == DeliveryStatus::Dropped)
        .await;
    assert_eq!(d.attempts, 1, "a refused address is not retried");
    let why = d.last_error.clone().unwrap_or_default();
    assert!(
        why.contains("rebind.example.com resolves to 127.0.0.1, a loopback address"),
        "{why}"
    );
    assert_eq!(rx.count(), 0);
    let logs = e
        .webhooks
        .logs(
            &e.ctx,
            LogParams {
                event_id: Some(evt.to_string()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(logs.data.len(), 1);
    assert_eq!(logs.data[0].status, model::AttemptStatus::Dropped);
}

impl Env {
    async fn endpoint_for(&self, url: &str, event_type: &str) -> String {
        self.webhooks
            .create_endpoint(
                &self.ctx,
                EndpointInput {
                    url: url.to_string(),
                    enabled_events: Some(vec![event_type.to_string()]),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .endpoint
            .id
    }

    /// Rows of one partition of `index`.
    async fn rows(&self, index: &str, partition: &str) -> usize {
        self.engine
            .ledger()
            .scan_entries(index, partition, &EntryRange::all(1000))
            .await
            .unwrap()
            .len()
    }

    /// Rows of the expiry index, over every shard and group of the day of `ms`.
    async fn registrations(&self, ms: i64) -> usize {
        let day = crate::clock::Timestamp(ms).to_datetime().format("%Y%m%d");
        let mut n = 0;
        for group in ['w', 'v'] {
            for shard in 0..model::SHARDS {
                n += self
                    .rows(
                        super::retention::EXPIRE,
                        &format!("{group}{shard:02}:{day}"),
                    )
                    .await;
            }
        }
        n
    }
}

const DAY: i64 = 86_400_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_and_dropped_webhook_data_is_purged_after_the_retention_period() {
    let e = env(|c| c.retention_days = 2).await;
    let ok = Receiver::start(Arc::new(|_, _| (200, vec![], 0))).await;
    let gone = Receiver::start(Arc::new(|_, _| (410, vec![], 0))).await;
    let ok_ep = e.endpoint_for(&ok.url, "payment_intent.succeeded").await;
    let gone_ep = e.endpoint_for(&gone.url, "payment_intent.canceled").await;
    let start = e.clock.now_ms();
    let paid = e.emit("pi_kept", "payment_intent.succeeded").await;
    let canceled = e.emit("pi_cut", "payment_intent.canceled").await;
    let (d_ok, d_gone) = (format!("{paid}:{ok_ep}"), format!("{canceled}:{gone_ep}"));
    e.wait_delivery(&d_ok, "the delivery", |d| {
        d.status == DeliveryStatus::Succeeded
    })
    .await;
    e.wait_delivery(&d_gone, "the drop", |d| d.status == DeliveryStatus::Dropped)
        .await;
    let m = e.ctx.merchant_id;
    let logs_part = model::day_partition(m, false, start);
    assert_eq!(e.rows(model::LOGS, &logs_part).await, 2);
    assert_eq!(e.rows(model::DROPPED, &logs_part).await, 1);
    assert!(e.registrations(start).await >= 3, "logs, dropped, events");

    // Within the period nothing goes, however often the janitor looks.
    e.clock.advance_ms(DAY);
    assert_eq!(
        e.webhooks.purge_expired().await.unwrap(),
        Default::default()
    );
    assert_eq!(e.rows(model::LOGS, &logs_part).await, 2);

    // Once the whole day is older than two days, its logs, dropped entries and finished
    // deliveries are gone; the events stay listed for recovery (31 days).
    e.clock.advance_ms(2 * DAY);
    let report = e.webhooks.purge_expired().await.unwrap();
    assert_eq!((report.logs, report.deliveries, report.dropped), (2, 2, 1));
    assert_eq!(report.events, 0);
    assert_eq!(e.rows(model::LOGS, &logs_part).await, 0);
    assert_eq!(e.rows(model::DROPPED, &logs_part).await, 0);
    for (evt, d) in [(paid, &d_ok), (canceled, &d_gone)] {
        assert!(e.delivery(d).await.is_none(), "{d} kept");
        assert_eq!(e.rows(model::LOGS_BY_EVENT, &evt.to_string()).await, 0);
    }
    assert_eq!(e.rows(model::EVENTS_BY_DAY, &logs_part).await, 2);
    // A second sweep finds nothing more; the janitor remembers how far it got.
    assert_eq!(
        e.webhooks.purge_expired().await.unwrap(),
        Default::default()
    );

    e.clock.advance_ms(31 * DAY);
    let report = e.webhooks.purge_expired().await.unwrap();
    assert_eq!(report.events, 2);
    assert_eq!(e.rows(model::EVENTS_BY_DAY, &logs_part).await, 0);
    assert_eq!(e.registrations(start).await, 0, "registrations left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_retention_the_stored_webhook_data_stops_growing() {
    let e = env(|c| {
        c.retention_days = 1;
        c.recover_max_days = 1;
    })
    .await;
    let rx = Receiver::start(Arc::new(|_, _| (200, vec![], 0))).await;
    let ep = e.endpoint(&rx.url).await;
    let m = e.ctx.merchant_id;
    let mut days = Vec::new();
    for day in 0..6 {
        let at = e.clock.now_ms();
        days.push(at);
        for i in 0..20 {
            let evt = e
                .emit(&format!("pi_{day}_{i}"), "payment_intent.succeeded")
                .await;
            e.wait_delivery(&format!("{evt}:{ep}"), "a delivery", |d| {
                d.status == DeliveryStatus::Succeeded
            })
            .await;
        }
        e.clock.advance_ms(DAY);
        e.webhooks.purge_expired().await.unwrap();
        // Only the day still within the period holds rows (logs and per-day events).
        let mut held = 0;
        for &d in &days {
            let part = model::day_partition(m, false, d);
            held += e.rows(model::LOGS, &part).await + e.rows(model::EVENTS_BY_DAY, &part).await;
        }
        assert_eq!(held, 2 * 20, "day {day}: only the latest day is kept");
    }
    assert_eq!(rx.count(), 6 * 20);
}

/// A loopback URL nothing listens on: connections are refused at once.
async fn dead_url(i: usize) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}/dead{i}")
}

impl Env {
    /// Commits one event of `merchant` (see [`Env::emit`]).
    async fn emit_for(&self, merchant: crate::ids::MerchantId, object: &str) -> EventId {
        let e = Event::new(
            merchant,
            false,
            "payment_intent.succeeded",
            self.clock.now(),
            object.to_string(),
            &serde_json::json!({"id": object}),
        );
        let id = e.id;
        let mut b = WriteBatch::new();
        b.push(WriteOp::PutEvent(e));
        self.engine.ledger().submit(b).await.unwrap();
        id
    }

    /// How many of `endpoints` have a delivery record of `evt`.
    async fn delivery_count(&self, evt: &EventId, endpoints: &[String]) -> usize {
        let mut n = 0;
        for ep in endpoints {
            n += usize::from(self.delivery(&format!("{evt}:{ep}")).await.is_some());
        }
        n
    }

    /// When the fan-out marker of `evt` (about `object` of `merchant`) is due, if it is parked
    /// in the next five minutes.
    async fn parked_marker(
        &self,
        merchant: crate::ids::MerchantId,
        object: &str,
        evt: &EventId,
    ) -> Option<i64> {
        let shard = model::shard_of(merchant, object);
        let now = model::minute_of(self.clock.now_ms());
        for minute in now..=now + 5 {
            let part = model::due_partition(shard, minute);
            let rows = self
                .engine
                .ledger()
                .scan_entries(model::DUE, &part, &EntryRange::all(1_000))
                .await
                .unwrap();
            for (sort, _) in rows {
                if let Some(due) = sort.strip_suffix(&format!(":f:{evt}")) {
                    return due.parse().ok().filter(|d| *d > self.clock.now_ms());
                }
            }
        }
        None
    }

    /// Attempt logs of the merchant of `ctx` (up to 100).
    async fn attempts_of(&self, ctx: &AuthContext) -> usize {
        self.webhooks
            .logs(
                ctx,
                LogParams {
                    limit: Some(100),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .data
            .len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_endpoints_back_off_while_another_merchants_deliveries_proceed() {
    let e = env(|c| c.backoff_after_failures = 2).await;
    // The noisy merchant: 16 endpoints that refuse every connection.
    let mut dead = Vec::new();
    for i in 0..16 {
        dead.push(e.endpoint(&dead_url(i).await).await);
    }
    // The quiet merchant: one healthy endpoint.
    let creds = create_merchant(e.engine.ledger().as_ref(), &e.clock, "Quiet")
        .await
        .unwrap();
    let quiet = e
        .engine
        .authenticate(&creds.test_secret_key, None)
        .await
        .unwrap();
    let rx = Receiver::start(Arc::new(|_, _| (200, vec![], 0))).await;
    let healthy = e
        .webhooks
        .create_endpoint(
            &quiet,
            EndpointInput {
                url: rx.url.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .endpoint
        .id;
    let noisy = e.ctx.merchant_id;
    // One event first, so every dead endpoint has failed once before the flood.
    e.emit_for(noisy, "pi_noisy_first").await;
    let ctx = e.ctx.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while e.attempts_of(&ctx).await < 16 {
        assert!(Instant::now() < deadline, "the first attempts never failed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut noisy_events = Vec::new();
    let mut quiet_events = Vec::new();
    for i in 0..30 {
        noisy_events.push(e.emit_for(noisy, &format!("pi_noisy_{i}")).await);
        quiet_events.push(
            e.emit_for(quiet.merchant_id, &format!("pi_quiet_{i}"))
                .await,
        );
    }
    for evt in &quiet_events {
        e.wait_delivery(&format!("{evt}:{healthy}"), "a healthy delivery", |d| {
            d.status == DeliveryStatus::Succeeded && d.attempts == 1
        })
        .await;
    }
    assert_eq!(rx.count(), 30);
    // Each dead endpoint gets its probe from the first event a shard fans out; after that
    // every endpoint is backing off and an event is held back as ONE parked fan-out marker,
    // not as 16 pending delivery records. Shards run in parallel, so a few events may fan out
    // before the probes are taken (at most one per shard), never one per event.
    let mut fanned_out = 0;
    for (i, evt) in noisy_events.iter().enumerate() {
        let object = format!("pi_noisy_{i}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let records = e.delivery_count(evt, &dead).await;
            if records == dead.len() {
                fanned_out += 1;
                break;
            }
            if records == 0 && e.parked_marker(noisy, &object, evt).await.is_some() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{object} neither parked nor fanned out"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert!(
        (1..=model::SHARDS as usize).contains(&fanned_out),
        "{fanned_out} of 30 events fanned out"
    );
    for ep in &dead {
        assert!(
            e.webhooks.shared.backoff.is_open(ep, e.clock.now_ms()),
            "{ep}"
        );
    }
    assert_eq!(
        e.attempts_of(&ctx).await,
        16 * 2,
        "attempts to dead endpoints"
    );
    // The window ends: one probe per endpoint, not one attempt per waiting delivery.
    e.clock.advance_ms(10_000);
    let deadline = Instant::now() + Duration::from_secs(10);
    while e.attempts_of(&ctx).await < 16 * 3 {
        assert!(Instant::now() < deadline, "no probes after the window");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for i in 0..30 {
        e.dispatcher_pass(&format!("pi_noisy_{i}")).await;
    }
    assert_eq!(e.attempts_of(&ctx).await, 16 * 3, "one probe per endpoint");
    // Held deliveries use up no attempts, but none waits longer than the retry schedule: once
    // that has passed, a held delivery that comes due while its endpoint still fails is
    // dropped, so a dead endpoint's backlog does not grow for ever.
    e.clock.advance_ms(32 * 3_600_000);
    let deadline = Instant::now() + Duration::from_secs(10);
    while e.attempts_of(&ctx).await < 16 * 4 {
        assert!(Instant::now() < deadline, "no probes after a day");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    e.clock.advance_ms(600_000);
    for evt in &noisy_events {
        for ep in &dead {
            e.wait_delivery(&format!("{evt}:{ep}"), "the drop of a held delivery", |d| {
                d.attempts > 0 || d.status == DeliveryStatus::Dropped
            })
            .await;
        }
    }
    let dropped = e
        .webhooks
        .dropped(
            &ctx,
            super::api::DroppedParams {
                limit: Some(100),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!dropped.data.is_empty());
    assert!(
        dropped.data[0]
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("whole retry schedule")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_held_by_a_dead_endpoint_are_stored_once_and_delivered_in_order_after_it_recovers() {
    let e = env(|c| c.backoff_after_failures = 1).await;
    let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let rx = {
        let (up, seen) = (up.clone(), seen.clone());
        Receiver::start(Arc::new(move |_, hit: &Hit| {
            if !up.load(std::sync::atomic::Ordering::SeqCst) {
                return (500, vec![], 0);
            }
            let v: serde_json::Value = serde_json::from_str(&hit.body).unwrap_or_default();
            seen.lock()
                .push(v["id"].as_str().unwrap_or_default().to_string());
            (200, vec![], 0)
        }))
        .await
    };
    let ep = e.endpoint(&rx.url).await;
    let ctx = e.ctx.clone();
    let m = ctx.merchant_id;
    // The first event's attempt fails: the endpoint backs off for 10 s.
    let first = e.emit_for(m, "pi_held").await;
    e.wait_delivery(&format!("{first}:{ep}"), "the failed first attempt", |d| {
        d.attempts == 1
    })
    .await;
    assert!(e.webhooks.shared.backoff.is_open(&ep, e.clock.now_ms()));
    // Forty more events of the same object while it backs off: none becomes a delivery
    // record; each is one parked marker.
    let mut held = Vec::new();
    for i in 0..40 {
        e.clock.advance_ms(1);
        let evt = e.emit_for(m, "pi_held").await;
        held.push(evt);
        if i % 10 == 0 {
            e.dispatcher_pass("pi_held").await;
        }
    }
    e.dispatcher_pass("pi_held").await;
    let mut dues = Vec::new();
    for evt in &held {
        assert!(e.delivery(&format!("{evt}:{ep}")).await.is_none(), "{evt}");
        dues.push(
            e.parked_marker(m, "pi_held", evt)
                .await
                .unwrap_or_else(|| panic!("{evt} is not parked")),
        );
    }
    // Parked in event order (a later event never due before an earlier one).
    assert!(dues.windows(2).all(|w| w[0] <= w[1]), "{dues:?}");
    assert_eq!(e.attempts_of(&ctx).await, 1, "no attempt while backing off");
    // The endpoint recovers; the window ends: the first event's retry and every held event
    // are delivered, each exactly once, in the order they happened.
    up.store(true, std::sync::atomic::Ordering::SeqCst);
    e.clock.advance_ms(60_000);
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.lock().len() < 41 {
        assert!(
            Instant::now() < deadline,
            "only {} of 41 delivered",
            seen.lock().len()
        );
        // Held markers wait one probe window after the retry that reopens the endpoint.
        e.clock.advance_ms(10_000);
        e.dispatcher_pass("pi_held").await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut want = vec![first.to_string()];
    want.extend(held.iter().map(|h| h.to_string()));
    assert_eq!(*seen.lock(), want);
}
