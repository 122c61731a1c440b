//! Ledger backend conformance: one set of behaviour checks, written against `Arc<dyn Ledger>`,
//! run unchanged against the embedded ledger (a temp dir per test) and the CQL ledger.
//!
//! CQL: the node comes from `IPAY_TEST_CQL_ADDR`; when that is not set the suite starts the
//! local test node itself (`scripts/services/cassandra.sh start`, then `… env`). One keyspace
//! (`ipay_test_<unix secs>_<random>`) and one connection serve the whole binary; the last test
//! to finish drops the keyspace, and keyspaces of this form older than an hour (left by an
//! interrupted run) are dropped at start. Tests share the keyspace and keep apart by using
//! their own merchants; the two checks over global state (`count_intents_by_status`,
//! `pending_expiries` ordering) take an exclusive lock so their before/after deltas are exact.
//!
//! Everything runs on one shared tokio runtime, because a driver session lives on the runtime
//! that created it.

use ipay_engine::clock::Timestamp;
use ipay_engine::error::StoreError;
use ipay_engine::ids::{ApiKeyId, EventId, MerchantId, PaymentIntentId, RefundId, ServiceId};
use ipay_engine::model::service::{PaymentMethods, Pricing, QrMode};
use ipay_engine::model::{
    ApiKey, Event, IntentStatus, Merchant, PaymentIntent, Permission, Refund, RefundStatus, Secret,
    Service, ServiceStatus,
};
use ipay_engine::money::Money;
use ipay_engine::store::cql::{CqlConfig, CqlLedger, MIGRATIONS, intent_home};
use ipay_engine::store::embedded::{EmbeddedLedger, EmbeddedOptions};
use ipay_engine::store::{
    EntryRange, EventQuery, IdempotencyRecord, IntentQuery, Ledger, PageRequest, WriteBatch,
    WriteOp, is_fenced,
};
use std::future::Future;
use std::ops::Bound;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{RwLock, broadcast};

const DAY_MS: i64 = 86_400_000;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// What a check gets: the ledger under test and its committed-event stream.
#[derive(Clone)]
struct Ctx {
    ledger: Arc<dyn Ledger>,
    events: broadcast::Sender<Arc<Event>>,
}

type BoxFut = Pin<Box<dyn Future<Output = ()>>>;
type Check = fn(Ctx) -> BoxFut;
type CqlCheck = fn(&'static CqlFixture) -> BoxFut;

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime for the conformance tests")
    })
}

fn run_embedded(check: Check) {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let ledger = EmbeddedLedger::open(dir.path(), EmbeddedOptions::default()).unwrap();
        let ctx = Ctx {
            ledger: ledger.clone(),
            events: ledger.event_sender(),
        };
        let mut closed = ledger.closed();
        drop(ledger);
        check(ctx).await;
        // Let the writer threads release the file before the directory goes.
        let _ = tokio::time::timeout(Duration::from_secs(5), closed.wait_for(|c| *c)).await;
    });
}

struct CqlFixture {
    ledger: Arc<CqlLedger>,
    config: CqlConfig,
}

static CQL: tokio::sync::OnceCell<CqlFixture> = tokio::sync::OnceCell::const_new();
static FINISHED: AtomicUsize = AtomicUsize::new(0);

fn global_lock() -> &'static RwLock<()> {
    static L: OnceLock<RwLock<()>> = OnceLock::new();
    L.get_or_init(|| RwLock::new(()))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The test node's address: `IPAY_TEST_CQL_ADDR`, or the local node started on demand.
fn cql_addr() -> String {
    if let Ok(a) = std::env::var("IPAY_TEST_CQL_ADDR")
        && !a.trim().is_empty()
    {
        return a.trim().to_string();
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/services/cassandra.sh"
    );
    eprintln!("IPAY_TEST_CQL_ADDR is not set: starting the test node with {script} start");
    let status = std::process::Command::new(script)
        .arg("start")
        .status()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    assert!(
        status.success(),
        "{script} start failed ({status}); see its output above, or set IPAY_TEST_CQL_ADDR"
    );
    let out = std::process::Command::new(script)
        .arg("env")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script} env: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("export IPAY_TEST_CQL_ADDR="))
        .map(|a| a.trim_matches(['"', '\'']).to_string())
        .unwrap_or_else(|| panic!("{script} env printed no IPAY_TEST_CQL_ADDR: {text}"))
}

async fn ddl(ledger: &CqlLedger, cql: String) {
    let mut st = scylla::statement::Statement::new(cql.clone());
    st.set_request_timeout(Some(Duration::from_secs(60)));
    if let Err(e) = ledger.session().query_unpaged(st, ()).await {
        eprintln!("`{cql}` failed: {e}");
    }
}

async fn fixture() -> &'static CqlFixture {
    CQL.get_or_init(|| async {
        let started = Instant::now();
        let addr = tokio::task::spawn_blocking(cql_addr).await.unwrap();
        let keyspace = format!("ipay_test_{}_{:08x}", now_secs(), rand::random::<u32>());
        let config = CqlConfig {
            contact_points: vec![addr.clone()],
            keyspace: keyspace.clone(),
            ..Default::default()
        };
        let report = CqlLedger::migrate(&config)
            .await
            .unwrap_or_else(|e| panic!("migrating test keyspace on {addr}: {e}"));
        assert_eq!(report.applied.len(), MIGRATIONS.len(), "{report:?}");
        let ledger = CqlLedger::connect(config.clone())
            .await
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        drop_stale_keyspaces(&ledger).await;
        eprintln!(
            "CQL keyspace {keyspace} on {addr} ready in {} ms",
            started.elapsed().as_millis()
        );
        CqlFixture { ledger, config }
    })
    .await
}

/// Drops `ipay_test_<secs>_<hex>` keyspaces older than an hour (left by interrupted runs).
async fn drop_stale_keyspaces(ledger: &CqlLedger) {
    let Ok(res) = ledger
        .session()
        .query_unpaged("SELECT keyspace_name FROM system_schema.keyspaces", ())
        .await
    else {
        return;
    };
    let Ok(rows) = res.into_rows_result() else {
        return;
    };
    let Ok(names) = rows.rows::<(String,)>() else {
        return;
    };
    let cutoff = now_secs().saturating_sub(3600);
    let stale: Vec<String> = names
        .filter_map(|r| r.ok().map(|(n,)| n))
        .filter(|n| {
            n.strip_prefix("ipay_test_")
                .and_then(|rest| rest.split('_').next())
                .and_then(|secs| secs.parse::<u64>().ok())
                .is_some_and(|secs| secs < cutoff)
        })
        .collect();
    for ks in stale {
        ddl(ledger, format!("DROP KEYSPACE IF EXISTS {ks}")).await;
    }
}

/// Counts finished CQL tests; the last one drops the keyspace.
struct Finished;

impl Drop for Finished {
    fn drop(&mut self) {
        if FINISHED.fetch_add(1, Ordering::SeqCst) + 1 == cql::TESTS
            && let Some(fx) = CQL.get()
        {
            rt().block_on(ddl(
                &fx.ledger,
                format!("DROP KEYSPACE IF EXISTS {}", fx.config.keyspace),
            ));
        }
    }
}

fn run_cql(check: Check, exclusive: bool) {
    let _finished = Finished;
    rt().block_on(async {
        let fx = fixture().await;
        let ctx = Ctx {
            ledger: fx.ledger.clone(),
            events: fx.ledger.event_sender(),
        };
        if exclusive {
            let _g = global_lock().write().await;
            check(ctx).await;
        } else {
            let _g = global_lock().read().await;
            check(ctx).await;
        }
    });
}

/// `exclusive`: the check leaves batches half done on purpose, so no other test may connect
/// a ledger meanwhile (connecting completes every half-done batch).
fn run_cql_only(check: CqlCheck, exclusive: bool) {
    let _finished = Finished;
    rt().block_on(async {
        let fx = fixture().await;
        if exclusive {
            let _g = global_lock().write().await;
            check(fx).await;
        } else {
            let _g = global_lock().read().await;
            check(fx).await;
        }
    });
}

macro_rules! conformance {
    (
        shared: [$($s:ident),* $(,)?],
        exclusive: [$($x:ident),* $(,)?],
        cql_only: [$($c:ident),* $(,)?],
        cql_exclusive: [$($ce:ident),* $(,)?] $(,)?
    ) => {
        mod embedded {
            $( #[test] fn $s() { super::run_embedded(|c| Box::pin(super::$s(c))) } )*
            $( #[test] fn $x() { super::run_embedded(|c| Box::pin(super::$x(c))) } )*
        }
        mod cql {
            /// Tests that use the shared keyspace (the last one to finish drops it).
            pub const TESTS: usize =
                [$(stringify!($s),)* $(stringify!($x),)* $(stringify!($c),)* $(stringify!($ce),)*]
                    .len();
            $( #[test] fn $s() { super::run_cql(|c| Box::pin(super::$s(c)), false) } )*
            $( #[test] fn $x() { super::run_cql(|c| Box::pin(super::$x(c)), true) } )*
            $( #[test] fn $c() { super::run_cql_only(|f| Box::pin(super::$c(f)), false) } )*
            $( #[test] fn $ce() { super::run_cql_only(|f| Box::pin(super::$ce(f)), true) } )*
        }
    };
}

conformance! {
    shared: [
        merchants_round_trip,
        api_keys_by_id_hash_and_merchant,
        services_get_find_and_list,
        service_rename_and_delete_move_the_name,
        intent_status_change_updates_listing_and_expiry,
        intent_listing_filters_pages_sorts_and_bounds,
        refunds_by_intent_and_by_merchant,
        events_by_merchant_type_and_object,
        idempotency_records_round_trip,
        batch_is_atomic_and_events_are_broadcast_after_commit,
        submit_then_calls_back_after_commit,
        later_submitted_batch_for_an_intent_wins,
        later_op_in_one_batch_wins,
        records_put_get_replace_delete,
        entries_scan_ranges_orders_and_limits,
        entries_and_records_are_atomic_with_their_batch,
        a_batch_fenced_with_a_stale_epoch_is_refused_whole,
        the_newest_of_concurrent_fenced_batches_commits,
        a_batch_with_two_fences_is_refused,
    ],
    exclusive: [
        pending_expiries_list_every_pending_intent,
        count_intents_by_status_counts_every_intent,
    ],
    cql_only: [
        migrate_again_applies_nothing,
        full_write_queue_fails_at_once,
        missing_schema_is_reported_with_the_fix,
        unanswered_requests_fail_within_the_request_timeout,
        fence_cost_on_cassandra,
    ],
    cql_exclusive: [
        a_stale_writer_is_refused_between_any_two_steps,
        an_interrupted_batch_is_completed_by_a_read_and_at_start,
        a_keyed_create_interrupted_after_its_durable_step_is_found_by_its_key,
    ],
}

// ---------------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------------

fn new_merchant() -> Merchant {
    let now = now_ms();
    Merchant {
        id: MerchantId::new_at(now),
        name: "Conformance Co".into(),
        webhook_secret: Secret::new(format!("whsec_{}", rand::random::<u64>())),
        created: Timestamp(now),
    }
}

fn api_key(m: MerchantId, livemode: bool, at: i64) -> ApiKey {
    ApiKey {
        id: ApiKeyId::new_at(at),
        label: format!("key at {at}"),
        redacted: "sk_test_…abcd".into(),
        permissions: vec![Permission::ApiKeysRead],
        ip_whitelist: vec![],
        livemode,
        merchant_id: m,
        created: Timestamp(at),
        expires_at: Timestamp(at + 365 * DAY_MS),
        revoked_at: None,
    }
}

fn service(m: MerchantId, livemode: bool, name: &str, at: i64) -> Service {
    Service {
        id: ServiceId::new_at(at),
        name: name.into(),
        description: Some("a manifest".into()),
        payment_methods: PaymentMethods::default(),
        pricing: Pricing::default(),
        accepted_channels: vec!["sandbox".into()],
        qr_mode: QrMode::Dynamic,
        settlement_currency: None,
        endpoint: None,
        tags: vec!["t".into()],
        status: ServiceStatus::Active,
        livemode,
        merchant_id: m,
        created: Timestamp(at),
        updated: Timestamp(at),
    }
}

fn intent(m: MerchantId, livemode: bool, at: i64, status: IntentStatus, ch: &str) -> PaymentIntent {
    let mut metadata = serde_json::Map::new();
    metadata.insert("order".into(), serde_json::json!(format!("o-{at}")));
    PaymentIntent {
        id: PaymentIntentId::new_at(at),
        status,
        amount: Money::from_parts(1_000, "CNY").unwrap(),
        amount_refunded: 0,
        refunds_pending: Vec::new(),
        payer: None,
        channel: ch.into(),
        service_id: ServiceId::new_at(at),
        qr_code: "sandbox://pay".into(),
        channel_reference: None,
        metadata,
        failure_reason: None,
        cancellation_reason: None,
        settlement: None,
        livemode,
        merchant_id: m,
        expires_at: Timestamp(at + 900_000),
        created: Timestamp(at),
        updated: Timestamp(at),
    }
}

fn refund(pi: &PaymentIntent, at: i64, value: i64) -> Refund {
    Refund {
        id: RefundId::new_at(at),
        payment_intent: pi.id,
        amount: Money::from_parts(value, "CNY").unwrap(),
        reason: Some("requested_by_customer".into()),
        status: RefundStatus::Succeeded,
        failure_reason: None,
        psp_reference: None,
        source: Default::default(),
        manual: false,
        livemode: pi.livemode,
        merchant_id: pi.merchant_id,
        created: Timestamp(at),
        settled: None,
    }
}

fn event(m: MerchantId, livemode: bool, at: i64, ty: &str, object: &str) -> Event {
    Event::with_json(
        m,
        livemode,
        ty,
        Timestamp(at),
        object.to_string(),
        format!("{{\"object\":\"{object}\",\"n\":{at}}}"),
    )
}

async fn commit(l: &dyn Ledger, ops: Vec<WriteOp>) {
    l.submit(WriteBatch { ops }).await.expect("commit");
}

fn page(limit: usize, offset: usize) -> PageRequest {
    PageRequest { limit, offset }
}

fn all() -> PageRequest {
    page(1_000, 0)
}

fn iq() -> IntentQuery {
    IntentQuery {
        status: None,
        channel: None,
        created_after: None,
        created_before: None,
        descending: true,
        page: all(),
    }
}

fn eq() -> EventQuery {
    EventQuery {
        event_type: None,
        object_id: None,
        page: all(),
    }
}

// ---------------------------------------------------------------------------------------------
// Checks (shared by every backend)
// ---------------------------------------------------------------------------------------------

async fn merchants_round_trip(c: Ctx) {
    let l = c.ledger.as_ref();
    let m = new_merchant();
    commit(l, vec![WriteOp::PutMerchant(m.clone())]).await;
    let got = l
        .get_merchant(m.id)
        .await
        .unwrap()
        .expect("stored merchant");
    assert_eq!(got.id, m.id);
    assert_eq!(got.name, m.name);
    assert_eq!(got.webhook_secret.expose(), m.webhook_secret.expose());
    assert_eq!(got.created, m.created);
    let mut renamed = m.clone();
    renamed.name = "Renamed Co".into();
    commit(l, vec![WriteOp::PutMerchant(renamed)]).await;
    assert_eq!(
        l.get_merchant(m.id).await.unwrap().unwrap().name,
        "Renamed Co"
    );
    assert!(l.get_merchant(new_merchant().id).await.unwrap().is_none());
}

async fn api_keys_by_id_hash_and_merchant(c: Ctx) {
    let l = c.ledger.as_ref();
    let m = new_merchant();
    let t = now_ms();
    let k1 = api_key(m.id, false, t - 2_000);
    let k2 = api_key(m.id, false, t - 1_000);
    let live = api_key(m.id, true, t);
    let h = |b: u8| -> [u8; 32] {
        let mut x: [u8; 32] = rand::random();
        x[0] = b;
        x
    };
    let (h1, h2, h3) = (h(1), h(2), h(3));
    commit(
        l,
        vec![
            WriteOp::PutApiKey {
                key: k1.clone(),
                secret_hash: Some(h1),
            },
            WriteOp::PutApiKey {
                key: k2.clone(),
                secret_hash: Some(h2),
            },
            WriteOp::PutApiKey {
                key: live.clone(),
                secret_hash: Some(h3),
            },
        ],
    )
    .await;
    assert_eq!(l.get_api_key(k1.id).await.unwrap(), Some(k1.clone()));
    assert_eq!(l.find_api_key_by_hash(h2).await.unwrap(), Some(k2.clone()));
    assert_eq!(
        l.find_api_key_by_hash(h3).await.unwrap(),
        Some(live.clone())
    );
    assert_eq!(l.find_api_key_by_hash(h(9)).await.unwrap(), None);
    assert_eq!(l.get_api_key(ApiKeyId::new_at(t)).await.unwrap(), None);
    // Newest first, per mode.
    assert_eq!(
        l.list_api_keys(m.id, false).await.unwrap(),
        vec![k2.clone(), k1.clone()]
    );
    assert_eq!(l.list_api_keys(m.id, true).await.unwrap(), vec![live]);
    assert!(
        l.list_api_keys(new_merchant().id, false)
            .await
            .unwrap()
            .is_empty()
    );
    // An update without a hash keeps the hash index pointing at the (updated) key.
    let mut revoked = k1.clone();
    revoked.revoked_at = Some(Timestamp(t));
    commit(
        l,
        vec![WriteOp::PutApiKey {
            key: revoked.clone(),
            secret_hash: None,
        }],
    )
    .await;
    assert_eq!(
        l.find_api_key_by_hash(h1).await.unwrap(),
        Some(revoked.clone())
    );
    assert_eq!(
        l.list_api_keys(m.id, false).await.unwrap(),
        vec![k2, revoked]
    );
}

async fn services_get_find_and_list(c: Ctx) {
    let l = c.ledger.as_ref();
    let m = new_merchant();
    let t = now_ms();
    let svcs: Vec<Service> = (0..5)
        .map(|i| service(m.id, false, &format!("svc {i}"), t - 5_000 + i * 1_000))
        .collect();
    let live = service(m.id, true, "svc 0", t);
    let mut ops: Vec<WriteOp> = svcs.iter().cloned().map(WriteOp::PutService).collect();
    ops.push(WriteOp::PutService(live.clone()));
    commit(l, ops).await;
    assert_eq!(
        l.get_service(svcs[2].id).await.unwrap(),
        Some(svcs[2].clone())
    );
    assert_eq!(l.get_service(ServiceId::new_at(t)).await.unwrap(), None);
    assert_eq!(
        l.find_service_by_name(m.id, false, "svc 3").await.unwrap(),
        Some(svcs[3].clone())
    );
    // Names are per mode.
    assert_eq!(
        l.find_service_by_name(m.id, true, "svc 0").await.unwrap(),
        Some(live.clone())
    );
    assert_eq!(
        l.find_service_by_name(m.id, true, "svc 1").await.unwrap(),
        None
    );
    let p = l.list_services(m.id, false, all()).await.unwrap();
    assert_eq!(p.total, 5);
    let newest_first: Vec<Service> = svcs.iter().rev().cloned().collect();
    assert_eq!(p.data, newest_first);
    let p = l.list_services(m.id, false, page(2, 1)).await.unwrap();
    assert_eq!(p.total, 5);
    assert_eq!(p.data, newest_first[1..3].to_vec());
    let p = l.list_services(m.id, false, page(10, 5)).await.unwrap();
    assert_eq!((p.total, p.data.len()), (5, 0));
    let p = l.list_services(m.id, true, all()).await.unwrap();
    assert_eq!((p.total, p.data), (1, vec![live]));
}

async fn service_rename_and_delete_move_the_name(c: Ctx) {
    let l = c.ledger.as_ref();
    let m = new_merchant();
    let t = now_ms();
    let a = service(m.id, false, "alpha", t - 1_000);
    let b = service(m.id, false, "beta", t);
    commit(
        l,
        vec![
            WriteOp::PutService(a.clone()),
            WriteOp::PutService(b.clone()),
        ],
    )
    .await;
    // Rename alpha → gamma.
    let mut a2 = a.clone();
    a2.name = "gamma".into();
    a2.updated = Timestamp(t + 1);
    commit(l, vec![WriteOp::PutService(a2.clone())]).await;
    assert_eq!(
        l.find_service_by_name(m.id, false, "alpha").await.unwrap(),
        None
    );
    assert_eq!(
        l.find_service_by_name(m.id, false, "gamma").await.unwrap(),
        Some(a2.clone())
    );
    // An update that keeps the name keeps the index.
    let mut a3 = a2.clone();
    a3.status = ServiceStatus::Paused;
    commit(l, vec![WriteOp::PutService(a3.clone())]).await;
    assert_eq!(
        l.find_service_by_name(m.id, false, "gamma").await.unwrap(),
        Some(a3.clone())
    );
    // Delete beta: its name and listing entry go, the record stays.
    let mut b2 = b.clone();
    b2.status = ServiceStatus::Deleted;
    commit(l, vec![WriteOp::PutService(b2.clone())]).await;
    assert_eq!(
        l.find_service_by_name(m.id, false, "beta").await.unwrap(),
        None
    );
    assert_eq!(l.get_service(b.id).await.unwrap(), Some(b2));
    let p = l.list_services(m.id, false, all()).await.unwrap();
    assert_eq!((p.total, p.data), (1, vec![a3.clone()]));
    // The freed names can be taken by new manifests.
    let c2 = service(m.id, false, "beta", t + 5);
    let d = service(m.id, false, "alpha", t + 6);
    commit(
        l,
        vec![
            WriteOp::PutService(c2.clone()),
            WriteOp::PutService(d.clone()),
        ],
    )
    .await;
    assert_eq!(
        l.find_service_by_name(m.id, false, "beta").await.unwrap(),
        Some(c2)
    );
    assert_eq!(
        l.find_service_by_name(m.id, false, "alpha").await.unwrap(),
        Some(d)
    );
    // Rename twice within one batch: only the last name is indexed.
    let mut r1 = a3.clone();
    r1.name = "delta".into();
    let mut r2 = a3.clone();
    r2.name = "epsilon".into();
    commit(
        l,
        vec![WriteOp::PutService(r1), WriteOp::PutService(r2.clone())],
    )
    .await;
    for gone in ["gamma", "delta"] {
        assert_eq!(
            l.find_service_by_name(m.id, false, gone).await.unwrap(),
            None,
            "{gone}"
        );
    }
    assert_eq!(
        l.find_service_by_name(m.id, false, "epsilon")
            .await
            .unwrap(),
        Some(r2)
    );
}

fn ids(v: &[PaymentIntent]) -> Vec<PaymentIntentId> {
    v.iter().map(|p| p.id).collect()
}

async fn intent_status_change_updates_listing_and_expiry(c: Ctx) {
    let l = c.ledger.as_ref();
    let m = new_merchant();
    let t = now_ms();
    let pi = intent(m.id, false, t, IntentStatus::Pending, "sandbox");
    commit(l, vec![WriteOp::PutIntent(pi.clone())]).await;
    assert_eq!(l.get_intent(pi.id).await.unwrap(), Some(pi.clone()));
    let pending = l.pending_expiries().await.unwrap();
    assert!(pending.contains(&(pi.id, pi.expires_at)));
    let by_status = |s: IntentStatus| IntentQuery {
        status: Some(s),
        ..iq()
    };
    let p = l
        .list_intents(m.id, false, &by_status(IntentStatus::Pending))
        .await
        .unwrap();
    assert_eq!((p.total, ids(&p.data)), (1, vec![pi.id]));

    let mut done = pi.clone();
    done.status = IntentStatus::Succeeded;
    done.channel_reference = Some("psp-1".into());
    done.updated = Timestamp(t + 10);
    commit(l, vec![WriteOp::PutIntent(done.clone())]).await;
    assert_eq!(l.get_intent(pi.id).await.unwrap(), Some(done.clone()));
    let pending = l.pending_expiries().await.unwrap();
    assert!(!pending.iter().any(|(id, _)| *id == pi.id));
    let p = l
        .list_intents(m.id, false, &by_status(IntentStatus::Pending))
        .await
        .unwrap();
    assert_eq!(p.total, 0);
    let p = l
        .list_intents(m.id, false, &by_status(IntentStatus::Succeeded))
        .await
        .unwrap();
    assert_eq!((p.total, p.data), (1, vec![done]));
    assert_eq!(
        l.get_intent(PaymentIntentId::new_at(t)).await.unwrap(),
        None
    );
}

/// The listing as the embedded ledger defines it, computed from the records.
fn expected(all: &[PaymentIntent], q: &IntentQuery) -> (u64, Vec<PaymentIntentId>) {
    let mut v: Vec<&PaymentIntent> = all
        .iter()
        .filter(|p| q.status.is_none_or(|s| p.status == s))
        .filter(|p| q.channel.as_deref().is_none_or(|c| p.channel == c))
        .filter(|p| q.created_after.is_none_or(|a| p.id.timestamp_ms() >= a))
        .filter(|p| q.created_before.is_none_or(|b| p.id.timestamp_ms() < b))
        .collect();
    v.sort_by_key(|p| p.id);
    if q.descending {
        v.reverse();
    }
    let total = v.len() as u64;
    let page = v
        .into_iter()
        .skip(q.page.offset)
        .take(q.page.limit)
        .map(|p| p.id)
        .collect();
    (total, page)
}

async fn intent_listing_filters_pages_sorts_and_bounds(c: Ctx) {
    let l = c.ledger.as_ref();
    let m = new_merchant();
    let t = now_ms();
    let statuses = [
        IntentStatus::Pending,
        IntentStatus::Succeeded,
        IntentStatus::Failed,
        IntentStatus::Cancelled,
        IntentStatus::Expired,
    ];
    let channels = ["sandbox", "alipay", "wechat"];
    // 15 intents over three UTC days (so over several listing partitions).
    let mut intents = Vec::new();
    for i in 0..15i64 {
        let at = t - 2 * DAY_MS + i * (DAY_MS / 7);
        intents.push(intent(
            m.id,
            false,
            at,
            statuses[(i % 5) as usize],
            channels[(i % 3) as usize],
        ));
    }
    // Other merchants and modes never show up.
    let other_mode = intent(m.id, true, t, IntentStatus::Pending, "sandbox");
    let other_merchant = intent(
        new_merchant().id,
        false,
        t,
        IntentStatus::Pending,
        "sandbox",
    );
    let mut ops: Vec<WriteOp> = intents.iter().cloned().map(WriteOp::PutIntent).collect();
    ops.push(WriteOp::PutIntent(other_mode));
    ops.push(WriteOp::PutIntent(other_merchant));
    commit(l, ops).await;

    let at = |i: usize| intents[i].id.timestamp_ms();
    let mut queries = vec![
        iq(),
        IntentQuery {
            descending: false,
            ..iq()
        },
        IntentQuery {
            page: page(4, 0),
            ..iq()
        },
        IntentQuery {
            page: page(4, 4),
            ..iq()
        },
        IntentQuery {
            page: page(4, 12),
            ..iq()
        },
        IntentQuery {
            page: page(5, 15),
            ..iq()
        },
        IntentQuery {
            page: page(3, 5),
            descending: false,
            ..iq()
        },
        IntentQuery {
            status: Some(IntentStatus::Pending),
            ..iq()
        },
        IntentQuery {
            status: Some(IntentStatus::Failed),
            page: page(2, 1),
            ..iq()
        },
        IntentQuery {
            channel: Some("alipay".into()),
            ..iq()
        },
        IntentQuery {
            channel: Some("nope".into()),
            ..iq()
        },
        IntentQuery {
            status: Some(IntentStatus::Succeeded),
            channel: Some("alipay".into()),
            ..iq()
        },
        IntentQuery {
            created_after: Some(at(3)),
            ..iq()
        },
        IntentQuery {
            created_before: Some(at(10)),
            ..iq()
        },
        IntentQuery {
            created_after: Some(at(3)),
            created_before: Some(at(10)),
            page: page(3, 2),
            ..iq()
        },
        IntentQuery {
            created_after: Some(at(3) + 1),
            created_before: Some(at(10) + 1),
            descending: false,
            ..iq()
        },
        IntentQuery {
            created_after: Some(at(7)),
            created_before: Some(at(7)),
            ..iq()
        },
        IntentQuery {
            created_after: Some(at(9)),
            created_before: Some(at(2)),
            ..iq()
        },
        IntentQuery {
            created_after: Some(t + DAY_MS),
            ..iq()
        },
        IntentQuery {
            created_before: Some(t - 3 * DAY_MS),
            ..iq()
        },
    ];
    queries.push(IntentQuery {
        status: Some(IntentStatus::Pending),
        channel: Some("sandbox".into()),
        created_after: Some(at(0)),
        created_before: Some(at(14) + 1),
        descending: false,
        page: page(10, 0),
    });
    for q in &queries {
        let p = l.list_intents(m.id, false, q).await.unwrap();
        let (total, want) = expected(&intents, q);
        assert_eq!((p.total, ids(&p.data)), (total, want), "{q:?}");
    }
    // Records come back whole.
    let p = l.list_intents(m.id, false, &iq()).await.unwrap();
    assert_eq!(p.data[0], intents[14]);
    let p = l.list_intents(m.id, true, &iq()).await.unwrap();
    assert_eq!(p.total, 1);
}

async fn refunds_by_intent_and_by_merchant(c: Ctx) {
    let l = c.ledger.as_ref();
    let m = new_merchant();
    let t = now_ms();
    let a = intent(m.id, false, t - DAY_MS, IntentStatus::Succeeded, "sandbox");
    let b = intent(m.id, false, t - 10, IntentStatus::Succeeded, "sandbox");
    let live = intent(m.id, true, t - 5, IntentStatus::Succeeded, "sandbox");
    let r1 = refund(&a, t - DAY_MS + 5, 100);
    let r2 = refund(&a, t - 3, 200);
    let r3 = refund(&b, t - 2, 300);
    let r4 = refund(&live, t - 1, 400);
    commit(
        l,
        vec![
            WriteOp::PutIntent(a.clone()),
            WriteOp::PutIntent(b.clone()),
            WriteOp::PutIntent(live.clone()),
            WriteOp::PutRefund(r1.clone()),
            WriteOp::PutRefund(r2.clone()),
            WriteOp::PutRefund(r3.clone()),
            WriteOp::PutRefund(r4.clone()),
        ],
    )
    .await;
    assert_eq!(l.get_refund(r2.id).await.unwrap(), Some(r2.clone()));
    assert_eq!(l.get_refund(RefundId::new_at(t)).await.unwrap(), None);
    let p = l
        .list_refunds(m.id, false, Some(a.id), all())
        .await
        .unwrap();
    assert_eq!((p.total, p.data), (2, vec![r2.clone(), r1.clone()]));
    let p = l
        .list_refunds(m.id, false, Some(a.id), page(1, 1))
        .await
        .unwrap();
    assert_eq!((p.total, p.data), (2, vec![r1.clone()]));
    // The intent's refunds are only visible to its merchant and mode.
    let p = l.list_refunds(m.id, true, Some(a.id), all()).await.unwrap();
    assert_eq!(p.total, 0);
    let p = l
        .list_refunds(new_merchant().id, false, Some(a.id), all())
        .await
        .unwrap();
    assert_eq!(p.total, 0);
    let p = l.list_refunds(m.id, false, None, all()).await.unwrap();
    assert_eq!(
        (p.total, p.data),
        (3, vec![r3.clone(), r2.clone(), r1.clone()])
    );
    let p = l.list_refunds(m.id, false, None, page(2, 1)).await.unwrap();
    assert_eq!((p.total, p.data), (3, vec![r2, r1]));
    let p = l.list_refunds(m.id, true, None, all()).await.unwrap();
    assert_eq!((p.total, p.data), (1, vec![r4]));
}

fn event_ids(v: &[Event]) -> Vec<EventId> {
    v.iter().map(|e| e.id).collect()
}

async fn events_by_merchant_type_and_object(c: Ctx) {
    let l = c.ledger.as_ref();
    let m = new_merchant();
    let t = now_ms();
    let (o1, o2) = ("pi_object_one", "pi_object_two");
    let e = [
        event(m.id, false, t - DAY_MS, "payment_intent.created", o1),
        event(m.id, false, t - DAY_MS + 1, "payment_intent.created", o2),
        event(m.id, false, t - 5, "payment_intent.succeeded", o1),
        event(m.id, false, t - 4, "refund.succeeded", o1),
        event(m.id, false, t - 3, "payment_intent.failed", o2),
    ];
    let live = event(m.id, true, t, "payment_intent.created", o1);
    let stranger = event(new_merchant().id, false, t, "payment_intent.created", o1);
    let mut ops: Vec<WriteOp> = e.iter().cloned().map(WriteOp::PutEvent).collect();
    ops.push(WriteOp::PutEvent(live.clone()));
    ops.push(WriteOp::PutEvent(stranger));
    commit(l, ops).await;

    let got = l.get_event(e[2].id).await.unwrap().expect("stored event");
    assert_eq!(got.id, e[2].id);
    assert_eq!(got.event_type, e[2].event_type);
    assert_eq!(got.data.get(), e[2].data.get());
    assert_eq!(
        (got.created, got.livemode, got.merchant_id),
        (e[2].created, false, m.id)
    );
    assert_eq!(got.object_id, o1);
    assert!(l.get_event(EventId::new_at(t)).await.unwrap().is_none());

    let list = |q: EventQuery| async move { l.list_events(m.id, false, &q).await.unwrap() };
    let p = list(eq()).await;
    assert_eq!(
        (p.total, event_ids(&p.data)),
        (5, vec![e[4].id, e[3].id, e[2].id, e[1].id, e[0].id])
    );
    let p = list(EventQuery {
        page: page(2, 2),
        ..eq()
    })
    .await;
    assert_eq!((p.total, event_ids(&p.data)), (5, vec![e[2].id, e[1].id]));
    let p = list(EventQuery {
        event_type: Some("payment_intent.created".into()),
        ..eq()
    })
    .await;
    assert_eq!((p.total, event_ids(&p.data)), (2, vec![e[1].id, e[0].id]));
    let p = list(EventQuery {
        object_id: Some(o1.into()),
        ..eq()
    })
    .await;
    assert_eq!(
        (p.total, event_ids(&p.data)),
        (3, vec![e[3].id, e[2].id, e[0].id])
    );
    let p = list(EventQuery {
        object_id: Some(o1.into()),
        page: page(1, 1),
        ..eq()
    })
    .await;
    assert_eq!((p.total, event_ids(&p.data)), (3, vec![e[2].id]));
    let p = list(EventQuery {
        object_id: Some(o2.into()),
        event_type: Some("payment_intent.failed".into()),
        ..eq()
    })
    .await;
    assert_eq!((p.total, event_ids(&p.data)), (1, vec![e[4].id]));
    let p = list(EventQuery {
        object_id: Some("pi_nothing".into()),
        ..eq()
    })
    .await;
    assert_eq!(p.total, 0);
    let p = l.list_events(m.id, true, &eq()).await.unwrap();
    assert_eq!((p.total, event_ids(&p.data)), (1, vec![live.id]));
}

async fn idempotency_records_round_trip(c: Ctx) {
    let l = c.ledger.as_ref();
    let scope = format!(
        "m_x|test|POST /v1/payment-intents|{}",
        rand::random::<u64>()
    );
    let rec = IdempotencyRecord {
        request_hash: "ab".repeat(32),
        status: 201,
        body: "{\"id\":\"pi_1\"}".into(),
        created: Timestamp(now_ms()),
    };
    assert_eq!(l.get_idempotency(&scope).await.unwrap(), None);
    commit(
        l,
        vec![WriteOp::PutIdempotency {
            scope: scope.clone(),
            record: rec.clone(),
        }],
    )
    .await;
    assert_eq!(l.get_idempotency(&scope).await.unwrap(), Some(rec.clone()));
    // Purging older records leaves a fresh one alone.
    commit(
        l,
        vec![WriteOp::PurgeIdempotencyBefore(Timestamp(
            rec.created.ms() - 3_600_000,
        ))],
    )
    .await;
    assert_eq!(l.get_idempotency(&scope).await.unwrap(), Some(rec));
}

async fn batch_is_atomic_and_events_are_broadcast_after_commit(c: Ctx) {
    let l = c.ledger.as_ref();
    let mut sub = c.events.subscribe();
    let m = new_merchant();
    let t = now_ms();
    let pi = intent(m.id, false, t, IntentStatus::Succeeded, "sandbox");
    let r = refund(&pi, t + 1, 500);
    let ev = event(m.id, false, t + 2, "refund.succeeded", &pi.id.to_string());
    let scope = format!("{}|refund|{}", m.id, rand::random::<u64>());
    let rec = IdempotencyRecord {
        request_hash: "cd".repeat(32),
        status: 201,
        body: "{}".into(),
        created: Timestamp(t),
    };
    let ticket = l.submit(WriteBatch {
        ops: vec![
            WriteOp::PutMerchant(m.clone()),
            WriteOp::PutIntent(pi.clone()),
            WriteOp::PutRefund(r.clone()),
            WriteOp::PutEvent(ev.clone()),
            WriteOp::PutIdempotency {
                scope: scope.clone(),
                record: rec.clone(),
            },
        ],
    });
    ticket.await.unwrap();
    // Everything of the batch is visible once its ticket resolved.
    assert!(l.get_merchant(m.id).await.unwrap().is_some());
    assert_eq!(l.get_intent(pi.id).await.unwrap(), Some(pi.clone()));
    assert_eq!(l.get_refund(r.id).await.unwrap(), Some(r.clone()));
    assert!(l.get_event(ev.id).await.unwrap().is_some());
    assert_eq!(l.get_idempotency(&scope).await.unwrap(), Some(rec));
    assert_eq!(
        l.list_refunds(m.id, false, Some(pi.id), all())
            .await
            .unwrap()
            .total,
        1
    );
    assert_eq!(l.list_events(m.id, false, &eq()).await.unwrap().total, 1);
    // The committed event reaches subscribers (other tests' events may be interleaved).
    let seen = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match sub.recv().await {
                Ok(e) if e.id == ev.id => return e,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(e) => panic!("event stream closed: {e}"),
            }
        }
    })
    .await
    .expect("committed event broadcast");
    assert_eq!(seen.data.get(), ev.data.get());
}

async fn submit_then_calls_back_after_commit(c: Ctx) {
    let l = c.ledger.clone();
    let m = new_merchant();
    let pi = intent(m.id, false, now_ms(), IntentStatus::Pending, "sandbox");
    let (tx, rx) = tokio::sync::oneshot::channel::<Result<(), StoreError>>();
    l.submit_then(
        WriteBatch {
            ops: vec![WriteOp::PutIntent(pi.clone())],
        },
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("callback within 10 s")
        .expect("callback called")
        .expect("commit ok");
    assert_eq!(l.get_intent(pi.id).await.unwrap(), Some(pi));
    assert!(l.writable());
}

async fn later_submitted_batch_for_an_intent_wins(c: Ctx) {
    let l = c.ledger.as_ref();
    let m = new_merchant();
    let t = now_ms();
    let mut finals = Vec::new();
    let mut tickets = Vec::new();
    for i in 0..40 {
        let pending = intent(m.id, false, t + i, IntentStatus::Pending, "sandbox");
        let mut paid = pending.clone();
        paid.status = IntentStatus::Succeeded;
        paid.updated = Timestamp(t + i + 1);
        let mut refunded = paid.clone();
        refunded.amount_refunded = 300;
        refunded.updated = Timestamp(t + i + 2);
        // Two or three batches for one intent, submitted back to back without waiting.
        tickets.push(l.submit(WriteBatch {
            ops: vec![WriteOp::PutIntent(pending)],
        }));
        tickets.push(l.submit(WriteBatch {
            ops: vec![WriteOp::PutIntent(paid.clone())],
        }));
        if i % 2 == 0 {
            tickets.push(l.submit(WriteBatch {
                ops: vec![WriteOp::PutIntent(refunded.clone())],
            }));
            finals.push(refunded);
        } else {
            finals.push(paid);
        }
    }
    for t in tickets {
        t.await.unwrap();
    }
    let pending = l.pending_expiries().await.unwrap();
    for want in &finals {
        assert_eq!(l.get_intent(want.id).await.unwrap().as_ref(), Some(want));
        assert!(!pending.iter().any(|(id, _)| *id == want.id), "{}", want.id);
    }
    let q = IntentQuery {
        status: Some(IntentStatus::Succeeded),
        ..iq()
    };
    assert_eq!(
        l.list_intents(m.id, false, &q).await.unwrap().total,
        finals.len() as u64
    );
    let q = IntentQuery {
        status: Some(IntentStatus::Pending),
        ..iq()
    };
    assert_eq!(l.list_intents(m.id, false, &q).await.unwrap().total, 0);
}

async fn later_op_in_one_batch_wins(c: Ctx) {
    let l = c.ledger.as_ref();
    let m = new_merchant();
    let t = now_ms();
    let pending = intent(m.id, false, t, IntentStatus::Pending, "sandbox");
    let mut expired = pending.clone();
    expired.status = IntentStatus::Expired;
    expired.updated = Timestamp(t + 1);
    commit(
        l,
        vec![
            WriteOp::PutIntent(pending.clone()),
            WriteOp::PutIntent(expired.clone()),
        ],
    )
    .await;
    assert_eq!(l.get_intent(pending.id).await.unwrap(), Some(expired));
    let pend = l.pending_expiries().await.unwrap();
    assert!(!pend.iter().any(|(id, _)| *id == pending.id));
    let q = IntentQuery {
        status: Some(IntentStatus::Expired),
        ..iq()
    };
    assert_eq!(l.list_intents(m.id, false, &q).await.unwrap().total, 1);
}

async fn pending_expiries_list_every_pending_intent(c: Ctx) {
    let l = c.ledger.as_ref();
    let m = new_merchant();
    let t = now_ms();
    let before = l.pending_expiries().await.unwrap();
    let mut pending = Vec::new();
    let mut settled = Vec::new();
    let mut ops = Vec::new();
    for i in 0..150 {
        let mut pi = intent(m.id, i % 2 == 0, t + i, IntentStatus::Pending, "sandbox");
        pi.expires_at = Timestamp(t + 60_000 + (i * 7919) % 5_000);
        if i % 10 == 0 {
            pi.status = IntentStatus::Succeeded;
            settled.push(pi.id);
        } else {
            pending.push((pi.id, pi.expires_at));
        }
        ops.push(WriteOp::PutIntent(pi));
    }
    // Batches of ten, in flight together (a CQL batch has a size limit).
    let tickets: Vec<_> = ops
        .chunks(10)
        .map(|c| l.submit(WriteBatch { ops: c.to_vec() }))
        .collect();
    for t in tickets {
        t.await.unwrap();
    }
    let after = l.pending_expiries().await.unwrap();
    assert_eq!(after.len(), before.len() + pending.len());
    for p in &pending {
        assert!(after.contains(p), "{p:?} missing");
    }
    for s in &settled {
        assert!(!after.iter().any(|(id, _)| id == s), "{s} is not pending");
    }
    let mut sorted = after.clone();
    sorted.sort_by_key(|(id, at)| (*at, *id));
    assert_eq!(after, sorted, "sorted by expiry time, then id");
}

async fn count_intents_by_status_counts_every_intent(c: Ctx) {
    let l = c.ledger.as_ref();
    let before = l.count_intents_by_status().await.unwrap();
    let t = now_ms();
    let (m1, m2) = (new_merchant(), new_merchant());
    let mut ops = Vec::new();
    let mut want = [0u64; 5];
    for (i, s) in [
        IntentStatus::Pending,
        IntentStatus::Pending,
        IntentStatus::Pending,
        IntentStatus::Succeeded,
        IntentStatus::Succeeded,
        IntentStatus::Failed,
        IntentStatus::Expired,
        IntentStatus::Cancelled,
    ]
    .into_iter()
    .enumerate()
    {
        let m = if i % 2 == 0 { m1.id } else { m2.id };
        ops.push(WriteOp::PutIntent(intent(
            m,
            i % 3 == 0,
            t - (i as i64) * DAY_MS,
            s,
            "sandbox",
        )));
        want[s.to_u8() as usize] += 1;
    }
    let first = match &ops[0] {
        WriteOp::PutIntent(p) => p.clone(),
        _ => unreachable!(),
    };
    commit(l, ops).await;
    // A status change moves the intent between counts; it is not counted twice.
    let mut cancelled = first;
    cancelled.status = IntentStatus::Cancelled;
    commit(l, vec![WriteOp::PutIntent(cancelled)]).await;
    want[IntentStatus::Pending.to_u8() as usize] -= 1;
    want[IntentStatus::Cancelled.to_u8() as usize] += 1;
    let after = l.count_intents_by_status().await.unwrap();
    let delta: Vec<u64> = (0..5).map(|i| after[i] - before[i]).collect();
    assert_eq!(delta, want.to_vec());
}

// ---------------------------------------------------------------------------------------------
// CQL-only checks
// ---------------------------------------------------------------------------------------------

async fn migrate_again_applies_nothing(fx: &'static CqlFixture) {
    let report = CqlLedger::migrate(&fx.config).await.unwrap();
    assert!(report.applied.is_empty(), "{report:?}");
    assert_eq!(report.already_applied.len(), MIGRATIONS.len());
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}

async fn full_write_queue_fails_at_once(fx: &'static CqlFixture) {
    let cfg = CqlConfig {
        max_inflight_batches: 1,
        ..fx.config.clone()
    };
    let tiny = CqlLedger::connect(cfg).await.unwrap();
    let m = new_merchant();
    let a = intent(m.id, false, now_ms(), IntentStatus::Pending, "sandbox");
    let b = intent(m.id, false, now_ms(), IntentStatus::Pending, "sandbox");
    let first = tiny.submit(WriteBatch {
        ops: vec![WriteOp::PutIntent(a.clone())],
    });
    let started = Instant::now();
    let second = tiny
        .submit(WriteBatch {
            ops: vec![WriteOp::PutIntent(b.clone())],
        })
        .await;
    assert!(started.elapsed() < Duration::from_millis(50));
    let err = second.expect_err("the second batch finds the queue full");
    assert!(err.0.contains("queue is full"), "{err}");
    first.await.unwrap();
    assert!(tiny.get_intent(a.id).await.unwrap().is_some());
    assert!(tiny.get_intent(b.id).await.unwrap().is_none());
    // The slot is free again once the first batch is done.
    tiny.submit(WriteBatch {
        ops: vec![WriteOp::PutIntent(b.clone())],
    })
    .await
    .unwrap();
}

async fn missing_schema_is_reported_with_the_fix(fx: &'static CqlFixture) {
    let cfg = CqlConfig {
        keyspace: format!("{}_none", fx.config.keyspace),
        ..fx.config.clone()
    };
    let err = CqlLedger::connect(cfg)
        .await
        .err()
        .expect("no schema there");
    assert!(err.0.contains("ipay migrate"), "{err}");
}

/// A TCP relay to the node that can stop passing bytes on (the node seems to hang).
async fn freezable_relay(target: String) -> (String, Arc<std::sync::atomic::AtomicBool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let f = frozen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            for (mut r, mut w) in [(cr, sw), (sr, cw)] {
                let f = f.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match r.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        while f.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        if w.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    (addr, frozen)
}

async fn unanswered_requests_fail_within_the_request_timeout(fx: &'static CqlFixture) {
    let (relay, frozen) = freezable_relay(fx.config.contact_points[0].clone()).await;
    let cfg = CqlConfig {
        contact_points: vec![relay],
        request_timeout: Duration::from_millis(1_000),
        ..fx.config.clone()
    };
    let l = CqlLedger::connect(cfg).await.unwrap();
    let m = new_merchant();
    commit(l.as_ref(), vec![WriteOp::PutMerchant(m.clone())]).await;
    assert!(l.get_merchant(m.id).await.unwrap().is_some());

    frozen.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let err = l
        .get_merchant(m.id)
        .await
        .expect_err("a hung node fails the read");
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2_500),
        "read failed after {took:?}"
    );
    assert!(!err.0.is_empty());
    let started = Instant::now();
    let pi = intent(m.id, false, now_ms(), IntentStatus::Pending, "sandbox");
    let err = l
        .submit(WriteBatch {
            ops: vec![WriteOp::PutIntent(pi)],
        })
        .await
        .expect_err("a hung node fails the write");
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2_500),
        "write failed after {took:?}: {err}"
    );
    let started = Instant::now();
    assert!(l.list_intents(m.id, false, &iq()).await.is_err());
    assert!(started.elapsed() < Duration::from_millis(2_500));

    // Once the node answers again, so does the ledger.
    frozen.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match l.get_merchant(m.id).await {
            Ok(Some(_)) => break,
            other if Instant::now() > deadline => panic!("no recovery: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Not tied to the shared keyspace: a node that is not there fails fast with a clear error.
#[test]
fn unreachable_cluster_fails_within_the_connect_timeout() {
    rt().block_on(async {
        // A port nobody listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = CqlConfig {
            contact_points: vec![format!("127.0.0.1:{port}")],
            connect_timeout: Duration::from_millis(500),
            ..Default::default()
        };
        let started = Instant::now();
        let err = CqlLedger::connect(cfg)
            .await
            .err()
            .expect("nothing listens");
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(err.0.contains("cannot connect"), "{err}");
    });
}

// ---------------------------------------------------------------------------------------------
// Generic records and sorted indexes
// ---------------------------------------------------------------------------------------------

fn uniq(tag: &str) -> String {
    format!("{tag}_{}", MerchantId::new_at(now_ms()))
}

async fn records_put_get_replace_delete(c: Ctx) {
    let l = &*c.ledger;
    let key = uniq("rec");
    assert_eq!(l.get_record("test_things", &key).await.unwrap(), None);
    let put = |v: &[u8]| WriteOp::PutRecord {
        kind: "test_things",
        key: key.clone(),
        value: v.to_vec(),
    };
    commit(l, vec![put(b"{\"v\":1}")]).await;
    assert_eq!(
        l.get_record("test_things", &key).await.unwrap().as_deref(),
        Some(&b"{\"v\":1}"[..])
    );
    // Same key in another kind is another record.
    assert_eq!(l.get_record("test_other", &key).await.unwrap(), None);
    commit(l, vec![put(b"{\"v\":2}")]).await;
    assert_eq!(
        l.get_record("test_things", &key).await.unwrap().as_deref(),
        Some(&b"{\"v\":2}"[..])
    );
    // Binary values round-trip unchanged.
    let bin: Vec<u8> = (0..=255u8).collect();
    commit(l, vec![put(&bin)]).await;
    assert_eq!(l.get_record("test_things", &key).await.unwrap(), Some(bin));
    commit(
        l,
        vec![WriteOp::DeleteRecord {
            kind: "test_things",
            key: key.clone(),
        }],
    )
    .await;
    assert_eq!(l.get_record("test_things", &key).await.unwrap(), None);
    // Invalid names are refused, not stored.
    let mut b = WriteBatch::new();
    b.push(WriteOp::PutRecord {
        kind: "",
        key: "x".into(),
        value: vec![],
    });
    assert!(l.submit(b).await.is_err());
}

async fn entries_scan_ranges_orders_and_limits(c: Ctx) {
    let l = &*c.ledger;
    let part = uniq("p");
    let other = uniq("q");
    let sorts = ["a", "b", "b1", "b2", "c", "d"];
    let mut ops: Vec<WriteOp> = sorts
        .iter()
        .map(|s| WriteOp::PutEntry {
            index: "test_idx",
            partition: part.clone(),
            sort: s.to_string(),
            value: s.as_bytes().to_vec(),
        })
        .collect();
    ops.push(WriteOp::PutEntry {
        index: "test_idx",
        partition: other.clone(),
        sort: "a".into(),
        value: vec![],
    });
    commit(l, ops).await;
    let scan = |r: EntryRange| {
        let part = part.clone();
        async move {
            l.scan_entries("test_idx", &part, &r)
                .await
                .unwrap()
                .into_iter()
                .map(|(s, v)| {
                    assert_eq!(s.as_bytes(), &v[..]);
                    s
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(scan(EntryRange::all(100)).await, sorts);
    assert_eq!(scan(EntryRange::all(2)).await, ["a", "b"]);
    assert_eq!(scan(EntryRange::all(2).rev()).await, ["d", "c"]);
    assert_eq!(scan(EntryRange::prefix("b", 100)).await, ["b", "b1", "b2"]);
    assert_eq!(
        scan(EntryRange::prefix("b", 100).rev()).await,
        ["b2", "b1", "b"]
    );
    assert_eq!(scan(EntryRange::after("b1", 100)).await, ["b2", "c", "d"]);
    let r = EntryRange {
        start: Bound::Excluded("a".into()),
        end: Bound::Included("c".into()),
        limit: 100,
        descending: true,
    };
    assert_eq!(scan(r).await, ["c", "b2", "b1", "b"]);
    let r = EntryRange {
        start: Bound::Included("b".into()),
        end: Bound::Excluded("c".into()),
        limit: 100,
        descending: false,
    };
    assert_eq!(scan(r).await, ["b", "b1", "b2"]);
    // Other partitions and indexes are separate.
    assert_eq!(
        l.scan_entries("test_idx", &other, &EntryRange::all(100))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        l.scan_entries("test_idx2", &part, &EntryRange::all(100))
            .await
            .unwrap()
            .is_empty()
    );
    commit(
        l,
        vec![WriteOp::DeleteEntry {
            index: "test_idx",
            partition: part.clone(),
            sort: "b1".into(),
        }],
    )
    .await;
    assert_eq!(scan(EntryRange::prefix("b", 100)).await, ["b", "b2"]);
}

async fn entries_and_records_are_atomic_with_their_batch(c: Ctx) {
    let l = &*c.ledger;
    let key = uniq("atom");
    // A batch with an invalid op is refused whole: nothing of it is applied.
    let mut b = WriteBatch::new();
    b.push(WriteOp::PutRecord {
        kind: "test_things",
        key: key.clone(),
        value: b"1".to_vec(),
    });
    b.push(WriteOp::PutEntry {
        index: "test_idx",
        partition: "bad\0partition".into(),
        sort: "x".into(),
        value: vec![],
    });
    assert!(l.submit(b).await.is_err());
    assert_eq!(l.get_record("test_things", &key).await.unwrap(), None);
    // A good batch applies record, entry and event together.
    let m = new_merchant();
    let e = event(m.id, false, now_ms(), "order.created", &key);
    commit(
        l,
        vec![
            WriteOp::PutRecord {
                kind: "test_things",
                key: key.clone(),
                value: b"2".to_vec(),
            },
            WriteOp::PutEntry {
                index: "test_idx",
                partition: key.clone(),
                sort: e.id.to_string(),
                value: vec![],
            },
            WriteOp::PutEvent(e.clone()),
        ],
    )
    .await;
    assert!(l.get_record("test_things", &key).await.unwrap().is_some());
    let got = l
        .scan_entries("test_idx", &key, &EntryRange::all(10))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, e.id.to_string());
    assert!(l.get_event(e.id).await.unwrap().is_some());
}

// ---------------------------------------------------------------------------------------------
// Fencing
// ---------------------------------------------------------------------------------------------

/// A batch that puts record `key` = `value` and an event, fenced on `fence` with `epoch`.
fn fenced_batch(fence: &str, epoch: u64, key: &str, value: &str, ev: &Event) -> WriteBatch {
    let mut b = WriteBatch::new();
    b.push(WriteOp::PutRecord {
        kind: "test_fenced",
        key: key.to_string(),
        value: value.as_bytes().to_vec(),
    });
    b.push(WriteOp::PutEvent(ev.clone()));
    b.push(WriteOp::Fence {
        key: fence.to_string(),
        epoch,
    });
    b
}

async fn record_value(l: &dyn Ledger, key: &str) -> Option<String> {
    l.get_record("test_fenced", key)
        .await
        .unwrap()
        .map(|v| String::from_utf8(v).unwrap())
}

async fn a_batch_fenced_with_a_stale_epoch_is_refused_whole(c: Ctx) {
    let l = &*c.ledger;
    let (fence, key) = (uniq("fence"), uniq("fenced"));
    let m = new_merchant();
    let e5 = event(m.id, false, now_ms(), "test.five", &key);
    l.submit(fenced_batch(&fence, 5, &key, "five", &e5))
        .await
        .unwrap();
    // An older epoch: refused as fenced, and nothing of the batch is written.
    let e3 = event(m.id, false, now_ms(), "test.three", &key);
    let err = l
        .submit(fenced_batch(&fence, 3, &key, "three", &e3))
        .await
        .expect_err("a stale epoch must be refused");
    assert!(is_fenced(&err), "{err}");
    assert_eq!(record_value(l, &key).await.as_deref(), Some("five"));
    assert!(l.get_event(e3.id).await.unwrap().is_none());
    assert!(l.get_event(e5.id).await.unwrap().is_some());
    // The same epoch again (further decisions of one owner) and a newer one are applied.
    let e5b = event(m.id, false, now_ms(), "test.five_again", &key);
    l.submit(fenced_batch(&fence, 5, &key, "five again", &e5b))
        .await
        .unwrap();
    let e9 = event(m.id, false, now_ms(), "test.nine", &key);
    l.submit(fenced_batch(&fence, 9, &key, "nine", &e9))
        .await
        .unwrap();
    assert_eq!(record_value(l, &key).await.as_deref(), Some("nine"));
    // Now 5 is stale too; other fence keys are independent; unfenced batches are not checked.
    let e5c = event(m.id, false, now_ms(), "test.five_late", &key);
    let err = l
        .submit(fenced_batch(&fence, 5, &key, "five late", &e5c))
        .await
        .expect_err("epoch 5 after 9 must be refused");
    assert!(is_fenced(&err), "{err}");
    let other = uniq("fence");
    let e1 = event(m.id, false, now_ms(), "test.other", &key);
    l.submit(fenced_batch(&other, 1, &key, "other fence", &e1))
        .await
        .unwrap();
    commit(
        l,
        vec![WriteOp::PutRecord {
            kind: "test_fenced",
            key: key.clone(),
            value: b"unfenced".to_vec(),
        }],
    )
    .await;
    assert_eq!(record_value(l, &key).await.as_deref(), Some("unfenced"));
}

async fn the_newest_of_concurrent_fenced_batches_commits(c: Ctx) {
    let l = &*c.ledger;
    let (fence, key) = (uniq("fence"), uniq("fenced"));
    let m = new_merchant();
    let (e20, e19) = (
        event(m.id, false, now_ms(), "test.twenty", &key),
        event(m.id, false, now_ms(), "test.nineteen", &key),
    );
    // Submitted together: the newer epoch always commits; the older one only if it got in
    // first (the embedded writer checks them in submission order, in one group).
    let newer = l.submit(fenced_batch(&fence, 20, &key, "twenty", &e20));
    let older = l.submit(fenced_batch(&fence, 19, &key, "nineteen", &e19));
    let (newer, older) = tokio::join!(newer, older);
    newer.unwrap();
    if let Err(e) = &older {
        assert!(is_fenced(e), "{e}");
        assert!(l.get_event(e19.id).await.unwrap().is_none());
    }
    assert!(l.get_event(e20.id).await.unwrap().is_some());
    // Whatever the order, epoch 19 is stale from now on.
    let late = event(m.id, false, now_ms(), "test.late", &key);
    let err = l
        .submit(fenced_batch(&fence, 19, &key, "late", &late))
        .await
        .expect_err("19 after 20 must be refused");
    assert!(is_fenced(&err), "{err}");
}

async fn a_batch_with_two_fences_is_refused(c: Ctx) {
    let l = &*c.ledger;
    let key = uniq("fenced");
    let m = new_merchant();
    let e = event(m.id, false, now_ms(), "test.two_fences", &key);
    let mut b = fenced_batch(&uniq("fence"), 1, &key, "x", &e);
    b.push(WriteOp::Fence {
        key: uniq("fence"),
        epoch: 1,
    });
    let err = l.submit(b).await.expect_err("two fences");
    assert!(!is_fenced(&err), "{err}");
    assert_eq!(record_value(l, &key).await, None);
}

/// (median, p99, mean) of latencies in ms.
fn summary(mut ms: Vec<f64>) -> (f64, f64, f64) {
    let n = ms.len();
    let mean = ms.iter().sum::<f64>() / n as f64;
    ms.sort_by(f64::total_cmp);
    (ms[n / 2], ms[n * 99 / 100], mean)
}

/// What a fence costs on the CQL ledger: the same settle-sized batch (a record and an event)
/// without a fence, with the first fence of a key (a session's first decision), with a fence
/// at a steady epoch (an owner's later decisions) and with a new epoch each time (every
/// decision after a take-over), submitted one after the other and
/// interleaved (so load on the shared box hits all four alike). Prints the figures for
/// docs/performance.md; asserts only that every batch commits.
async fn fence_cost_on_cassandra(fx: &'static CqlFixture) {
    let l: &dyn Ledger = fx.ledger.as_ref();
    let m = new_merchant();
    let n = 300;
    let key = uniq("cost");
    let (steady, moving) = (uniq("fence"), uniq("fence"));
    let batch = |i: usize, fence: Option<(&str, u64)>| {
        let mut b = WriteBatch::new();
        b.push(WriteOp::PutRecord {
            kind: "test_fenced",
            key: format!("{key}-{i}"),
            value: b"x".to_vec(),
        });
        let e = event(m.id, false, now_ms(), "test.cost", &format!("{key}-{i}"));
        b.push(WriteOp::PutEvent(e));
        if let Some((k, epoch)) = fence {
            b.push(WriteOp::Fence {
                key: k.to_string(),
                epoch,
            });
        }
        b
    };
    let mut ms: [Vec<f64>; 4] = Default::default();
    for i in 0..n + 20 {
        let first = uniq("fence");
        let fences = [
            None,
            Some((first.as_str(), 3)),
            Some((steady.as_str(), 7)),
            Some((moving.as_str(), i as u64 + 1)),
        ];
        for (kind, fence) in fences.into_iter().enumerate() {
            let b = batch(i * 4 + kind, fence);
            let t = Instant::now();
            l.submit(b).await.unwrap();
            // The first 20 rounds warm connections and prepared statements up.
            if i >= 20 {
                ms[kind].push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    let names = [
        "no fence",
        "first fence of a key",
        "fence, same epoch",
        "fence, new epoch",
    ];
    for (what, v) in names.into_iter().zip(ms) {
        let (p50, p99, mean) = summary(v);
        eprintln!(
            "fence cost: {what:<18} {n} batches: median {p50:.2} ms, p99 {p99:.2} ms, mean {mean:.2} ms"
        );
    }
}

/// A decision on `pi` by the owner holding `epoch`: the intent in `status` and an event.
fn decision(pi: &PaymentIntent, epoch: u64, status: IntentStatus, ty: &str) -> (WriteBatch, Event) {
    let mut p = pi.clone();
    p.status = status;
    p.updated = Timestamp(now_ms());
    let e = event(pi.merchant_id, false, now_ms(), ty, &pi.id.to_string());
    let mut b = WriteBatch::new();
    b.push(WriteOp::PutIntent(p));
    b.push(WriteOp::PutEvent(e.clone()));
    b.push(WriteOp::Fence {
        key: intent_home(pi.id),
        epoch,
    });
    (b, e)
}

/// The intent's status as its listing row says (filtered listing by status).
async fn listed_status(l: &dyn Ledger, pi: &PaymentIntent) -> Vec<IntentStatus> {
    let mut out = Vec::new();
    for s in [
        IntentStatus::Pending,
        IntentStatus::Succeeded,
        IntentStatus::Cancelled,
    ] {
        let q = IntentQuery {
            status: Some(s),
            ..iq()
        };
        let p = l.list_intents(pi.merchant_id, false, &q).await.unwrap();
        if p.data.iter().any(|x| x.id == pi.id) {
            out.push(s);
        }
    }
    out
}

/// Node A owns a session under epoch 1 and is stopped before, between or after the steps of
/// its decision (durable write, follow-up rows, journal delete); node B takes the session over
/// under epoch 2 and decides. Whatever the stall point: nothing of A lands after B's decision,
/// the intent and its listing row end in B's state, and A's next decision is refused.
async fn a_stale_writer_is_refused_between_any_two_steps(fx: &'static CqlFixture) {
    let l = &fx.ledger;
    let d: &dyn Ledger = l.as_ref();
    for stall in 0..3 {
        let m = new_merchant();
        let pi = intent(m.id, false, now_ms(), IntentStatus::Pending, "sandbox");
        commit(d, vec![WriteOp::PutIntent(pi.clone())]).await;
        let (a_batch, a_event) = decision(&pi, 1, IntentStatus::Cancelled, "test.a");
        let a = l.steps(a_batch).unwrap();
        assert_eq!(a.home(), intent_home(pi.id));
        if stall >= 1 {
            a.durable().await.unwrap();
        }
        if stall >= 2 {
            a.follow().await.unwrap();
        }
        // B takes over: it reads the intent (A's decision is visible once durable), decides.
        let seen = d.get_intent(pi.id).await.unwrap().unwrap();
        let expect_seen = if stall >= 1 {
            IntentStatus::Cancelled
        } else {
            IntentStatus::Pending
        };
        assert_eq!(seen.status, expect_seen, "stall {stall}");
        let (b_batch, b_event) = decision(&pi, 2, IntentStatus::Succeeded, "test.b");
        d.submit(b_batch).await.unwrap();
        // A resumes where it stopped.
        match stall {
            0 => {
                let err = a.durable().await.expect_err("stale epoch after take-over");
                assert!(is_fenced(&err), "{err}");
                assert!(d.get_event(a_event.id).await.unwrap().is_none());
            }
            1 => {
                a.follow().await.unwrap();
                a.finish().await.unwrap();
            }
            _ => a.finish().await.unwrap(),
        }
        let got = d.get_intent(pi.id).await.unwrap().unwrap();
        assert_eq!(got.status, IntentStatus::Succeeded, "stall {stall}");
        assert_eq!(
            listed_status(d, &pi).await,
            vec![IntentStatus::Succeeded],
            "stall {stall}"
        );
        assert!(d.get_event(b_event.id).await.unwrap().is_some());
        // A decided once more under its old epoch: refused whole.
        let (late, late_event) = decision(&pi, 1, IntentStatus::Cancelled, "test.a_late");
        let err = d.submit(late).await.expect_err("stale epoch");
        assert!(is_fenced(&err), "{err}");
        assert!(d.get_event(late_event.id).await.unwrap().is_none());
        assert_eq!(
            d.get_intent(pi.id).await.unwrap().unwrap().status,
            IntentStatus::Succeeded
        );
    }
}

/// A create whose writer stopped right after its durable step: the listing and the event
/// (rows that follow it) appear once the intent is read, or once a ledger connects.
async fn an_interrupted_batch_is_completed_by_a_read_and_at_start(fx: &'static CqlFixture) {
    let l = &fx.ledger;
    let d: &dyn Ledger = l.as_ref();
    let half_done = |pi: &PaymentIntent| {
        let e = event(
            pi.merchant_id,
            false,
            now_ms(),
            "payment_intent.created",
            &pi.id.to_string(),
        );
        let mut b = WriteBatch::new();
        b.push(WriteOp::PutIntent(pi.clone()));
        b.push(WriteOp::PutEvent(e.clone()));
        (l.steps(b).unwrap(), e)
    };
    let listed =
        |m: MerchantId| async move { d.list_intents(m, false, &iq()).await.unwrap().total };
    // Completed by a read of the intent.
    let m = new_merchant();
    let pi = intent(m.id, false, now_ms(), IntentStatus::Pending, "sandbox");
    let (steps, ev) = half_done(&pi);
    steps.durable().await.unwrap();
    assert_eq!(
        listed(m.id).await,
        0,
        "the listing row follows the durable step"
    );
    assert!(d.get_event(ev.id).await.unwrap().is_none());
    assert_eq!(d.get_intent(pi.id).await.unwrap(), Some(pi.clone()));
    assert_eq!(listed(m.id).await, 1);
    assert!(d.get_event(ev.id).await.unwrap().is_some());
    assert!(
        d.pending_expiries()
            .await
            .unwrap()
            .contains(&(pi.id, pi.expires_at))
    );
    // Completed when a ledger connects (a node starting after the writer crashed).
    let m2 = new_merchant();
    let pi2 = intent(m2.id, false, now_ms(), IntentStatus::Pending, "sandbox");
    let (steps, ev2) = half_done(&pi2);
    steps.durable().await.unwrap();
    drop(steps);
    assert_eq!(listed(m2.id).await, 0);
    let restarted = CqlLedger::connect(fx.config.clone()).await.unwrap();
    assert_eq!(
        restarted
            .list_intents(m2.id, false, &iq())
            .await
            .unwrap()
            .total,
        1
    );
    assert!(restarted.get_event(ev2.id).await.unwrap().is_some());
}

/// What the engine does with an idempotent create: replay the stored record's intent, or
/// create `pi` with its record. Returns the id of the intent the caller is answered with.
async fn create_once(l: &dyn Ledger, scope: &str, pi: &PaymentIntent) -> String {
    if let Some(rec) = l.get_idempotency(scope).await.unwrap() {
        return rec.body;
    }
    let record = IdempotencyRecord {
        request_hash: "cd".repeat(32),
        status: 201,
        body: pi.id.to_string(),
        created: Timestamp(now_ms()),
    };
    commit(
        l,
        vec![
            WriteOp::PutIntent(pi.clone()),
            WriteOp::PutIdempotency {
                scope: scope.to_string(),
                record,
            },
        ],
    )
    .await;
    pi.id.to_string()
}

/// A create with an idempotency key whose writer stopped right after its durable step (a
/// crashed node): another node looking the key up gets the create's record, so a retry there
/// replays it and exactly one intent exists. A writer that stopped before its durable step
/// left only a claim, which reads as no record (the create was never acknowledged).
async fn a_keyed_create_interrupted_after_its_durable_step_is_found_by_its_key(
    fx: &'static CqlFixture,
) {
    // Connected before the writer stops: a connecting ledger repairs every home at start,
    // which would hide the look-up path under test.
    let other = CqlLedger::connect(fx.config.clone()).await.unwrap();
    let o: &dyn Ledger = other.as_ref();
    let keyed_create = |pi: &PaymentIntent, scope: &str| {
        let mut b = WriteBatch::new();
        b.push(WriteOp::PutIntent(pi.clone()));
        b.push(WriteOp::PutIdempotency {
            scope: scope.to_string(),
            record: IdempotencyRecord {
                request_hash: "cd".repeat(32),
                status: 201,
                body: pi.id.to_string(),
                created: Timestamp(now_ms()),
            },
        });
        fx.ledger.steps(b).unwrap()
    };
    let m = new_merchant();
    let scope = format!("{}|test|create|{}", m.id, rand::random::<u64>());
    let pi = intent(m.id, false, now_ms(), IntentStatus::Pending, "sandbox");
    let steps = keyed_create(&pi, &scope);
    steps.claim().await.unwrap();
    steps.durable().await.unwrap();
    drop(steps);
    let rec = o.get_idempotency(&scope).await.unwrap();
    assert_eq!(rec.map(|r| r.body), Some(pi.id.to_string()));
    let retry = intent(m.id, false, now_ms(), IntentStatus::Pending, "sandbox");
    assert_eq!(create_once(o, &scope, &retry).await, pi.id.to_string());
    assert_eq!(o.list_intents(m.id, false, &iq()).await.unwrap().total, 1);
    assert!(o.get_intent(retry.id).await.unwrap().is_none());
    assert_eq!(o.get_intent(pi.id).await.unwrap(), Some(pi.clone()));

    // Stopped after its claim, before its durable step: nothing was committed.
    let m2 = new_merchant();
    let scope2 = format!("{}|test|create|{}", m2.id, rand::random::<u64>());
    let lost = intent(m2.id, false, now_ms(), IntentStatus::Pending, "sandbox");
    let steps = keyed_create(&lost, &scope2);
    steps.claim().await.unwrap();
    drop(steps);
    assert_eq!(o.get_idempotency(&scope2).await.unwrap(), None);
    let retry2 = intent(m2.id, false, now_ms(), IntentStatus::Pending, "sandbox");
    assert_eq!(
        create_once(o, &scope2, &retry2).await,
        retry2.id.to_string()
    );
    let rec2 = o.get_idempotency(&scope2).await.unwrap();
    assert_eq!(rec2.map(|r| r.body), Some(retry2.id.to_string()));
    assert_eq!(o.list_intents(m2.id, false, &iq()).await.unwrap().total, 1);
    assert!(o.get_intent(lost.id).await.unwrap().is_none());
}
