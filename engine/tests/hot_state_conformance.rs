//! `HotState` conformance: every check is written once against `Arc<dyn HotState>` and run
//! unchanged against the in-process backend (`memory::…`) and the Redis backend (`redis::…`).
//!
//! Each check gets two handles on one shared state, as two nodes of a cluster hold them: for
//! memory both are the same object, for Redis two independent clients (own pools, own
//! subscriber connections) with the same key prefix, so cross-node behaviour (a release on
//! one node waking a waiter on the other, pub/sub between nodes) is exercised too.
//!
//! Redis: the URL comes from `IPAY_TEST_REDIS_URL`; when it is not set the tests start the
//! private test Redis with `scripts/services/redis.sh start` and read `redis.sh env`. If
//! neither works the Redis tests fail; they are never skipped. Keys are namespaced by a prefix
//! unique to the test run, so runs never see each other's state.
//!
//! Timing: TTL checks let time pass with [`Nodes::pass`]. The in-process backend runs its TTLs
//! on an injected clock, which `pass` moves forward at once (no race between a sleep and a
//! TTL). Redis runs TTLs on the Redis server's own clock, which a test cannot move, so there
//! `pass` really sleeps, with margins of 100 ms or more past each TTL. Nothing sleeps to
//! synchronise with another task.

use ipay_engine::clock::{Clock, SystemClock};
use ipay_engine::error::StoreError;
use ipay_engine::store::memory_hot::MemoryHotState;
use ipay_engine::store::redis_hot::{RedisHotState, RedisOptions};
use ipay_engine::store::{HotState, Reservation};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::time::{sleep, timeout};

/// Upper bound on any single check, so a bug shows up as a failure, not a hung run.
const CHECK_LIMIT: Duration = Duration::from_secs(60);

/// The wall clock plus an offset a test moves forward: real waits (a waiter's timeout) still
/// take real time, while TTLs can be skipped past at once.
#[derive(Default)]
struct OffsetClock(AtomicI64);

impl Clock for OffsetClock {
    fn now_ms(&self) -> i64 {
        SystemClock.now_ms() + self.0.load(Ordering::SeqCst)
    }
}

/// Two handles on one shared hot state, and a namespace unique to this check.
struct Nodes {
    a: Arc<dyn HotState>,
    b: Arc<dyn HotState>,
    ns: String,
    /// The in-process backend's clock; `None` for Redis (its server's clock).
    clock: Option<Arc<OffsetClock>>,
}

impl Nodes {
    fn k(&self, name: &str) -> String {
        format!("{}:{name}", self.ns)
    }

    /// Lets `d` pass for TTL purposes: moves the injected clock, or sleeps for Redis.
    async fn pass(&self, d: Duration) {
        match &self.clock {
            Some(c) => {
                c.0.fetch_add(d.as_millis() as i64, Ordering::SeqCst);
            }
            None => sleep(d).await,
        }
    }
}

fn run_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| ulid::Ulid::new().to_string().to_lowercase())
}

async fn memory(check: &str) -> Nodes {
    let clock = Arc::new(OffsetClock::default());
    let h: Arc<dyn HotState> = Arc::new(MemoryHotState::with_clock(clock.clone()));
    Nodes {
        a: h.clone(),
        b: h,
        ns: format!("{}:{check}", run_id()),
        clock: Some(clock),
    }
}

/// The test Redis: `IPAY_TEST_REDIS_URL`, or the one `scripts/services/redis.sh` starts.
fn redis_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("IPAY_TEST_REDIS_URL")
            && !url.trim().is_empty()
        {
            return url.trim().to_string();
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/services/redis.sh");
        let run = |arg: &str| {
            let out = Command::new("bash")
                .arg(&script)
                .arg(arg)
                .output()
                .unwrap_or_else(|e| panic!("cannot run {} {arg}: {e}", script.display()));
            assert!(
                out.status.success(),
                "IPAY_TEST_REDIS_URL is not set and `{} {arg}` failed ({}):\n{}{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        run("start");
        let env = run("env");
        env.lines()
            .find_map(|l| l.trim().strip_prefix("export IPAY_TEST_REDIS_URL="))
            .map(|v| v.trim_matches(|c| c == '"' || c == '\'').to_string())
            .unwrap_or_else(|| panic!("`redis.sh env` printed no IPAY_TEST_REDIS_URL: {env:?}"))
    })
    .clone()
}

fn redis_options() -> RedisOptions {
    RedisOptions {
        prefix: format!("ipay-test-{}:", run_id()),
        // Far above the wake-up bound asserted below, so a prompt wake-up can only come from
        // the release notification, never from the polling fallback.
        release_poll: Duration::from_secs(5),
        ..RedisOptions::default()
    }
}

async fn redis(check: &str) -> Nodes {
    let url = redis_url();
    let a = RedisHotState::connect(&url, redis_options())
        .await
        .expect("redis backend");
    let b = RedisHotState::connect(&url, redis_options())
        .await
        .expect("redis backend");
    a.ping()
        .await
        .unwrap_or_else(|e| panic!("the test Redis at {url} does not answer: {e}"));
    Nodes {
        a,
        b,
        ns: check.to_string(),
        clock: None,
    }
}

const LONG: Duration = Duration::from_secs(30);

// --- reservations ---

async fn reservations_are_exclusive(n: Nodes) {
    let s = n.k("scope");
    let r = n.a.reserve(&s, LONG).await.unwrap().expect("free scope");
    assert_eq!(r.scope(), s);
    assert!(n.a.reserve(&s, LONG).await.unwrap().is_none());
    assert!(n.b.reserve(&s, LONG).await.unwrap().is_none());
    // Other scopes are independent.
    let other = n.b.reserve(&n.k("other"), LONG).await.unwrap();
    assert!(other.is_some());
    assert!(n.a.release(r).await.unwrap(), "the holder releases");
    let r2 = n.b.reserve(&s, LONG).await.unwrap().expect("free again");
    assert!(n.b.release(r2).await.unwrap());
    assert!(n.b.release(other.unwrap()).await.unwrap());
}

async fn a_reservation_lapses_at_its_ttl(n: Nodes) {
    let s = n.k("scope");
    let _abandoned = n.a.reserve(&s, Duration::from_millis(200)).await.unwrap();
    assert!(_abandoned.is_some());
    assert!(n.b.reserve(&s, LONG).await.unwrap().is_none());
    n.pass(Duration::from_millis(400)).await;
    assert!(n.b.reserve(&s, LONG).await.unwrap().is_some(), "lapsed");
}

async fn only_the_holder_releases_a_reservation(n: Nodes) {
    let s = n.k("scope");
    let old = n.a.reserve(&s, Duration::from_millis(200)).await.unwrap();
    let old = old.expect("free scope");
    n.pass(Duration::from_millis(400)).await;
    let new = n.b.reserve(&s, LONG).await.unwrap().expect("lapsed");
    // The former holder's late release must not free the new holder's reservation.
    assert!(!n.a.release(old.clone()).await.unwrap());
    assert!(n.a.reserve(&s, LONG).await.unwrap().is_none(), "still held");
    // Nor may anyone with the scope but not the token.
    let forged = Reservation::new(s.clone(), new.token().wrapping_add(1));
    assert!(!n.a.release(forged).await.unwrap());
    assert!(n.a.reserve(&s, LONG).await.unwrap().is_none(), "still held");
    assert!(n.b.release(new.clone()).await.unwrap());
    // Releasing twice is harmless and says it was no longer ours.
    assert!(!n.b.release(new).await.unwrap());
    // A lapsed reservation nobody took is not "ours" either.
    let short = n.a.reserve(&s, Duration::from_millis(100)).await.unwrap();
    n.pass(Duration::from_millis(300)).await;
    assert!(!n.a.release(short.expect("free")).await.unwrap());
}

async fn a_waiter_is_woken_promptly_on_release(n: Nodes) {
    let s = n.k("scope");
    let r = n.a.reserve(&s, LONG).await.unwrap().expect("free scope");
    let b = n.b.clone();
    let scope = s.clone();
    let mut waiter = tokio::spawn(async move {
        b.wait_released(&scope, Duration::from_secs(20)).await;
        Instant::now()
    });
    // While the scope is held the waiter must not return (a bounded look, not a sync point).
    assert!(
        timeout(Duration::from_millis(300), &mut waiter)
            .await
            .is_err(),
        "wait_released returned while the scope was still reserved"
    );
    let released = Instant::now();
    assert!(n.a.release(r).await.unwrap());
    let woke = timeout(Duration::from_secs(10), waiter)
        .await
        .expect("waiter not woken within 10 s")
        .unwrap();
    let after = woke.saturating_duration_since(released);
    assert!(
        after < Duration::from_secs(1),
        "waiter woke {after:?} after the release (timeout 20 s)"
    );
    assert!(n.b.reserve(&s, LONG).await.unwrap().is_some());
}

async fn wait_released_returns_at_once_on_a_free_scope(n: Nodes) {
    let t = Instant::now();
    n.b.wait_released(&n.k("never-reserved"), Duration::from_secs(20))
        .await;
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

async fn a_waiter_returns_when_the_reservation_lapses(n: Nodes) {
    let s = n.k("scope");
    let _r = n.a.reserve(&s, Duration::from_millis(300)).await.unwrap();
    assert!(_r.is_some());
    let t = Instant::now();
    n.b.wait_released(&s, Duration::from_secs(20)).await;
    let took = t.elapsed();
    assert!(took < Duration::from_secs(3), "returned after {took:?}");
    assert!(n.b.reserve(&s, LONG).await.unwrap().is_some());
    // Short TTLs, so the waiter often looks in the reservation's last millisecond.
    for (i, ttl) in [5u64, 10, 20, 30, 40, 60, 80, 100].into_iter().enumerate() {
        let s = n.k(&format!("short-{i}"));
        let r = n.a.reserve(&s, Duration::from_millis(ttl)).await.unwrap();
        assert!(r.is_some());
        let t = Instant::now();
        n.b.wait_released(&s, Duration::from_secs(20)).await;
        let took = t.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "ttl {ttl} ms: returned after {took:?}"
        );
    }
}

async fn a_waiter_gives_up_at_its_timeout(n: Nodes) {
    let s = n.k("scope");
    let _r = n.a.reserve(&s, LONG).await.unwrap().expect("free scope");
    let t = Instant::now();
    n.b.wait_released(&s, Duration::from_millis(200)).await;
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(190),
        "returned early: {took:?}"
    );
    assert!(took < Duration::from_secs(2), "returned late: {took:?}");
    assert!(n.b.reserve(&s, LONG).await.unwrap().is_none(), "still held");
}

async fn extreme_durations_are_accepted(n: Nodes) {
    let max = Duration::MAX;
    let s = n.k("scope");
    let r = n.a.reserve(&s, max).await.unwrap().expect("free scope");
    n.b.wait_released(&s, Duration::ZERO).await;
    let t = Instant::now();
    n.b.wait_released(&n.k("free"), max).await;
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(n.a.release(r).await.unwrap());
    assert!(
        n.a.acquire_lease(&n.k("lease"), "node-1", max)
            .await
            .unwrap()
    );
    assert!(n.a.renew_lease(&n.k("lease"), "node-1", max).await.unwrap());
    assert!(n.a.release_lease(&n.k("lease"), "node-1").await.unwrap());
    n.a.put_snapshot(&n.k("snap"), b"x", max).await.unwrap();
    assert!(n.a.get_snapshot(&n.k("snap")).await.unwrap().is_some());
    n.a.delete_snapshot(&n.k("snap")).await.unwrap();
    assert_eq!(n.a.incr(&n.k("ctr"), max).await.unwrap(), 1);
    n.a.reset(&n.k("ctr")).await.unwrap();
    // A zero TTL is accepted and lapses at once (Redis: within a millisecond).
    n.a.put_snapshot(&n.k("gone"), b"x", Duration::ZERO)
        .await
        .unwrap();
    n.pass(Duration::from_millis(20)).await;
    assert_eq!(n.a.get_snapshot(&n.k("gone")).await.unwrap(), None);
}

// --- leases ---

async fn leases_are_exclusive_and_only_the_owner_renews_or_releases(n: Nodes) {
    let k = n.k("session");
    assert_eq!(n.a.lease_owner(&k).await.unwrap(), None);
    assert!(n.a.acquire_lease(&k, "node-1", LONG).await.unwrap());
    assert!(!n.b.acquire_lease(&k, "node-2", LONG).await.unwrap());
    assert_eq!(
        n.b.lease_owner(&k).await.unwrap().as_deref(),
        Some("node-1")
    );
    // Re-entrant for the same owner.
    assert!(n.b.acquire_lease(&k, "node-1", LONG).await.unwrap());
    assert!(!n.b.renew_lease(&k, "node-2", LONG).await.unwrap());
    assert!(n.a.renew_lease(&k, "node-1", LONG).await.unwrap());
    assert!(!n.b.release_lease(&k, "node-2").await.unwrap());
    assert_eq!(
        n.a.lease_owner(&k).await.unwrap().as_deref(),
        Some("node-1")
    );
    assert!(n.a.release_lease(&k, "node-1").await.unwrap());
    assert_eq!(n.a.lease_owner(&k).await.unwrap(), None);
    assert!(!n.a.release_lease(&k, "node-1").await.unwrap());
    assert!(!n.a.renew_lease(&k, "node-1", LONG).await.unwrap());
    assert!(n.b.acquire_lease(&k, "node-2", LONG).await.unwrap());
    assert_eq!(
        n.a.lease_owner(&k).await.unwrap().as_deref(),
        Some("node-2")
    );
    assert!(n.b.release_lease(&k, "node-2").await.unwrap());
}

async fn lease_epochs_grow_with_every_new_lease_and_stay_while_it_is_held(n: Nodes) {
    let (k, other) = (n.k("fenced"), n.k("fenced-other"));
    let e1 = n.a.acquire_lease_epoch(&k, "node-1", LONG).await.unwrap();
    let e1 = e1.expect("a free lease is taken");
    assert!(e1 > 0);
    // Held: the other owner gets nothing; the holder keeps its epoch when it acquires again
    // or renews; the plain acquire agrees.
    assert_eq!(
        n.b.acquire_lease_epoch(&k, "node-2", LONG).await.unwrap(),
        None
    );
    assert_eq!(
        n.b.acquire_lease_epoch(&k, "node-1", LONG).await.unwrap(),
        Some(e1)
    );
    assert!(n.a.renew_lease(&k, "node-1", LONG).await.unwrap());
    assert!(n.a.acquire_lease(&k, "node-1", LONG).await.unwrap());
    assert_eq!(
        n.a.acquire_lease_epoch(&k, "node-1", LONG).await.unwrap(),
        Some(e1)
    );
    // A new lease, by anyone, on this key or another, gets a larger epoch.
    assert!(n.a.release_lease(&k, "node-1").await.unwrap());
    let e2 = n.b.acquire_lease_epoch(&k, "node-2", LONG).await.unwrap();
    let e2 = e2.expect("a released lease is free");
    assert!(e2 > e1, "{e2} > {e1}");
    let e3 =
        n.a.acquire_lease_epoch(&other, "node-1", LONG)
            .await
            .unwrap();
    assert!(e3.expect("free") > e2);
    assert!(n.b.release_lease(&k, "node-2").await.unwrap());
    let e4 = n.a.acquire_lease_epoch(&k, "node-2", LONG).await.unwrap();
    assert!(e4.expect("free again") > e3.unwrap_or(0));
    assert_eq!(
        n.a.lease_owner(&k).await.unwrap().as_deref(),
        Some("node-2")
    );
    assert!(n.a.release_lease(&k, "node-2").await.unwrap());
    assert!(n.a.release_lease(&other, "node-1").await.unwrap());
}

async fn an_expired_lease_hands_over(n: Nodes) {
    let k = n.k("session");
    assert!(
        n.a.acquire_lease(&k, "node-1", Duration::from_millis(200))
            .await
            .unwrap()
    );
    n.pass(Duration::from_millis(400)).await;
    assert_eq!(n.b.lease_owner(&k).await.unwrap(), None);
    assert!(
        !n.a.renew_lease(&k, "node-1", LONG).await.unwrap(),
        "too late"
    );
    assert!(n.b.acquire_lease(&k, "node-2", LONG).await.unwrap());
    assert!(!n.a.release_lease(&k, "node-1").await.unwrap());
    assert_eq!(
        n.a.lease_owner(&k).await.unwrap().as_deref(),
        Some("node-2")
    );
}

async fn renewing_extends_a_lease(n: Nodes) {
    let k = n.k("session");
    let ms = Duration::from_millis;
    assert!(n.a.acquire_lease(&k, "node-1", ms(300)).await.unwrap());
    n.pass(ms(150)).await;
    assert!(n.a.renew_lease(&k, "node-1", ms(1500)).await.unwrap());
    n.pass(ms(400)).await; // past the first TTL, well within the renewed one
    assert_eq!(
        n.b.lease_owner(&k).await.unwrap().as_deref(),
        Some("node-1")
    );
    assert!(!n.b.acquire_lease(&k, "node-2", LONG).await.unwrap());
}

// --- snapshots ---

async fn snapshots_put_get_delete(n: Nodes) {
    let k = n.k("snap");
    assert_eq!(n.a.get_snapshot(&k).await.unwrap(), None);
    // Opaque bytes: zeros, every byte value, 64 KiB.
    let big: Vec<u8> = (0..65_536u32).map(|i| (i % 256) as u8).collect();
    n.a.put_snapshot(&k, &big, LONG).await.unwrap();
    assert_eq!(
        n.b.get_snapshot(&k).await.unwrap().as_deref(),
        Some(&big[..])
    );
    n.b.put_snapshot(&k, b"v2\0", LONG).await.unwrap();
    assert_eq!(
        n.a.get_snapshot(&k).await.unwrap().as_deref(),
        Some(&b"v2\0"[..])
    );
    n.a.put_snapshot(&k, b"", LONG).await.unwrap();
    assert_eq!(
        n.a.get_snapshot(&k).await.unwrap().as_deref(),
        Some(&b""[..])
    );
    n.a.delete_snapshot(&k).await.unwrap();
    assert_eq!(n.b.get_snapshot(&k).await.unwrap(), None);
    n.a.delete_snapshot(&k).await.unwrap(); // deleting nothing is fine
}

async fn a_snapshot_expires_at_its_ttl(n: Nodes) {
    let k = n.k("snap");
    n.a.put_snapshot(&k, b"state", Duration::from_millis(200))
        .await
        .unwrap();
    assert!(n.b.get_snapshot(&k).await.unwrap().is_some());
    n.pass(Duration::from_millis(400)).await;
    assert_eq!(n.b.get_snapshot(&k).await.unwrap(), None);
}

// --- counters ---

async fn counters_increment_and_reset(n: Nodes) {
    let k = n.k("attempts");
    assert_eq!(n.a.incr(&k, LONG).await.unwrap(), 1);
    assert_eq!(n.a.incr(&k, LONG).await.unwrap(), 2);
    assert_eq!(n.b.incr(&k, LONG).await.unwrap(), 3);
    n.b.reset(&k).await.unwrap();
    assert_eq!(n.a.incr(&k, LONG).await.unwrap(), 1);
    n.a.reset(&n.k("never-counted")).await.unwrap();
    // Concurrent increments from both nodes are all counted, each value handed out once.
    let c = n.k("concurrent");
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let h = if i % 2 == 0 { n.a.clone() } else { n.b.clone() };
            let c = c.clone();
            tokio::spawn(async move { h.incr(&c, LONG).await.unwrap() })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=40).collect::<Vec<i64>>());
}

async fn a_counter_expires_after_its_window(n: Nodes) {
    let ms = Duration::from_millis;
    let k = n.k("attempts");
    assert_eq!(n.a.incr(&k, ms(300)).await.unwrap(), 1);
    assert_eq!(n.b.incr(&k, ms(300)).await.unwrap(), 2);
    n.pass(ms(500)).await;
    assert_eq!(n.a.incr(&k, ms(300)).await.unwrap(), 1, "expired");
    // The window counts from the first increment; later increments do not extend it.
    let w = n.k("window");
    assert_eq!(n.a.incr(&w, ms(1000)).await.unwrap(), 1);
    n.pass(ms(500)).await;
    assert_eq!(n.a.incr(&w, ms(1000)).await.unwrap(), 2);
    n.pass(ms(700)).await;
    assert_eq!(
        n.a.incr(&w, ms(1000)).await.unwrap(),
        1,
        "window not extended"
    );
}

// --- pub/sub ---

async fn recv(s: &mut ipay_engine::store::Subscription) -> Vec<u8> {
    timeout(Duration::from_secs(5), s.recv())
        .await
        .expect("no message within 5 s")
        .expect("subscription closed")
        .to_vec()
}

async fn subscribers_receive_published_messages_in_order(n: Nodes) {
    let ch = n.k("events");
    let mut s1 = n.a.subscribe(&ch).await.unwrap();
    let mut s2 = n.b.subscribe(&ch).await.unwrap();
    let mut other = n.b.subscribe(&n.k("other")).await.unwrap();
    for i in 0..100u32 {
        n.a.publish(&ch, format!("m{i}").as_bytes()).await.unwrap();
    }
    for i in 0..100u32 {
        let want = format!("m{i}").into_bytes();
        assert_eq!(recv(&mut s1).await, want);
        assert_eq!(recv(&mut s2).await, want);
    }
    // Across nodes, binary payloads, and nothing leaks between channels.
    n.b.publish(&ch, &[0, 255, 0]).await.unwrap();
    assert_eq!(recv(&mut s1).await, vec![0, 255, 0]);
    n.a.publish(&n.k("other"), b"x").await.unwrap();
    assert_eq!(recv(&mut other).await, b"x");
    assert_eq!(s1.missed(), 0);
    // Publishing with nobody listening is fine; a dropped subscription can be made again.
    drop(s1);
    drop(s2);
    n.a.publish(&ch, b"nobody").await.unwrap();
    let mut again = n.b.subscribe(&ch).await.unwrap();
    n.a.publish(&ch, b"back").await.unwrap();
    assert_eq!(recv(&mut again).await, b"back");
}

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let nodes = super::memory(stringify!($check)).await;
                    tokio::time::timeout(super::CHECK_LIMIT, super::$check(nodes))
                        .await
                        .expect("check timed out");
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let nodes = super::redis(stringify!($check)).await;
                    tokio::time::timeout(super::CHECK_LIMIT, super::$check(nodes))
                        .await
                        .expect("check timed out");
                }
            )*
        }
    };
}

conformance!(
    reservations_are_exclusive,
    a_reservation_lapses_at_its_ttl,
    only_the_holder_releases_a_reservation,
    a_waiter_is_woken_promptly_on_release,
    wait_released_returns_at_once_on_a_free_scope,
    a_waiter_returns_when_the_reservation_lapses,
    a_waiter_gives_up_at_its_timeout,
    extreme_durations_are_accepted,
    leases_are_exclusive_and_only_the_owner_renews_or_releases,
    an_expired_lease_hands_over,
    renewing_extends_a_lease,
    snapshots_put_get_delete,
    a_snapshot_expires_at_its_ttl,
    counters_increment_and_reset,
    a_counter_expires_after_its_window,
    subscribers_receive_published_messages_in_order,
    lease_epochs_grow_with_every_new_lease_and_stay_while_it_is_held,
);

// --- Redis only: faults ---

/// Runs `op`, asserting it ends within 1.5 s with a `StoreError` that names the endpoint and
/// does not leak the password.
async fn fails_fast<T: std::fmt::Debug>(
    name: &str,
    endpoint: &str,
    op: impl std::future::Future<Output = Result<T, StoreError>>,
) {
    let t = Instant::now();
    let r = timeout(Duration::from_secs(10), op)
        .await
        .unwrap_or_else(|_| panic!("{name} hung"));
    let took = t.elapsed();
    let e = r.expect_err(name);
    assert!(
        took < Duration::from_millis(1500),
        "{name} took {took:?} to fail"
    );
    assert!(e.0.contains(endpoint), "{name}: {e}");
    assert!(!e.0.contains("s3cret"), "{name} leaks the password: {e}");
}

async fn every_operation_fails_fast(url: &str, endpoint: &str) {
    use futures::FutureExt;
    let h = RedisHotState::connect(url, RedisOptions::default())
        .await
        .expect("connect performs no I/O");
    let d = Duration::from_secs(30);
    let ep = endpoint;
    // All at once: each is timed on its own, and together they also show that a burst of
    // failing calls does not queue up behind one another past the bound.
    let checks = vec![
        fails_fast("ping", ep, h.ping()).boxed(),
        fails_fast("reserve", ep, h.reserve("s", d)).boxed(),
        fails_fast("release", ep, h.release(Reservation::new("s", 1))).boxed(),
        fails_fast("acquire_lease", ep, h.acquire_lease("l", "n", d)).boxed(),
        fails_fast(
            "acquire_lease_epoch",
            ep,
            h.acquire_lease_epoch("l", "n", d),
        )
        .boxed(),
        fails_fast("renew_lease", ep, h.renew_lease("l", "n", d)).boxed(),
        fails_fast("release_lease", ep, h.release_lease("l", "n")).boxed(),
        fails_fast("lease_owner", ep, h.lease_owner("l")).boxed(),
        fails_fast("put_snapshot", ep, h.put_snapshot("p", b"x", d)).boxed(),
        fails_fast("get_snapshot", ep, h.get_snapshot("p")).boxed(),
        fails_fast("delete_snapshot", ep, h.delete_snapshot("p")).boxed(),
        fails_fast("incr", ep, h.incr("c", d)).boxed(),
        fails_fast("reset", ep, h.reset("c")).boxed(),
        fails_fast("publish", ep, h.publish("ch", b"x")).boxed(),
        fails_fast("subscribe", ep, h.subscribe("ch")).boxed(),
        fails_fast("subscribe again", ep, h.subscribe("ch2")).boxed(),
        async {
            let t = Instant::now();
            h.wait_released("s", Duration::from_secs(30)).await;
            let took = t.elapsed();
            assert!(
                took < Duration::from_millis(1500),
                "wait_released took {took:?}"
            );
        }
        .boxed(),
    ];
    futures::future::join_all(checks).await;
    // And once more one by one, now that the first attempts have failed.
    fails_fast("reserve", ep, h.reserve("s", d)).await;
    fails_fast("subscribe", ep, h.subscribe("ch")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_nothing_listening_every_operation_fails_fast() {
    // A port that was free a moment ago: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("127.0.0.1:{port}");
    every_operation_fails_fast(&format!("redis://ipay:s3cret@{endpoint}"), &endpoint).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_that_never_answers_every_operation_fails_fast() {
    // Connections are accepted by the kernel, but nothing is ever answered.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = silent.local_addr().unwrap().to_string();
    every_operation_fails_fast(&format!("redis://ipay:s3cret@{endpoint}"), &endpoint).await;
    drop(silent);
}

#[tokio::test]
async fn redis_rejects_an_invalid_url_without_echoing_it() {
    for url in [
        "http://ipay:s3cret@localhost",
        "redis://ipay:s3cret@localhost:notaport",
        "redis://ipay:s3cret@localhost/notadb",
        "ipay:s3cret@localhost",
    ] {
        let e = RedisHotState::connect(url, RedisOptions::default())
            .await
            .expect_err(url);
        assert!(!e.0.contains("s3cret"), "{e}");
        assert!(e.0.contains("invalid Redis URL"), "{e}");
    }
    let zero = RedisOptions {
        release_poll: Duration::ZERO,
        ..RedisOptions::default()
    };
    assert!(
        RedisHotState::connect("redis://127.0.0.1:6379", zero)
            .await
            .is_err()
    );
}

/// Kills this client's connections (pool and subscriber) inside Redis, as a Redis restart
/// would, without disturbing other tests: the client logs in as its own ACL user and only that
/// user's connections are killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_recovers_when_its_connections_are_cut() {
    let url = redis_url();
    let admin_client = ::redis::Client::open(url.as_str()).unwrap();
    let mut admin = admin_client
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let user = format!("ipay-test-{}", run_id());
    let password = "s3cret-recovery";
    let _: () = ::redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg("on")
        .arg(format!(">{password}"))
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .query_async(&mut admin)
        .await
        .unwrap();
    let mut user_url = url::Url::parse(&url).unwrap();
    user_url.set_username(&user).unwrap();
    user_url.set_password(Some(password)).unwrap();

    let h = RedisHotState::connect(user_url.as_str(), redis_options())
        .await
        .unwrap();
    let ns = format!("recovery-{}", run_id());
    let ch = format!("{ns}:events");
    let mut sub = h.subscribe(&ch).await.unwrap();
    h.publish(&ch, b"before").await.unwrap();
    assert_eq!(recv(&mut sub).await, b"before");
    assert_eq!(h.incr(&ns, LONG).await.unwrap(), 1);

    let killed: i64 = ::redis::cmd("CLIENT")
        .arg("KILL")
        .arg("USER")
        .arg(&user)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(killed >= 2, "killed {killed} connections");

    // Commands: the pool finds the dead connection when it checks it out and opens a new one.
    let t = Instant::now();
    let n = loop {
        match h.incr(&ns, LONG).await {
            Ok(n) => break n,
            Err(e) if t.elapsed() < Duration::from_secs(5) => {
                eprintln!("not yet recovered: {e}");
                tokio::task::yield_now().await;
            }
            Err(e) => panic!("commands did not recover within 5 s: {e}"),
        }
    };
    assert_eq!(n, 2, "the counter survived in Redis");

    // Pub/sub: the subscriber task reconnects and re-subscribes on its own. Messages sent
    // while it was away are lost (at-most-once), so keep publishing until one arrives.
    let t = Instant::now();
    let got = loop {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "subscription did not recover within 10 s"
        );
        h.publish(&ch, b"after").await.unwrap();
        if let Ok(m) = timeout(Duration::from_millis(200), sub.recv()).await {
            break m;
        }
    };
    assert_eq!(got.as_deref(), Some(&b"after"[..]));

    // Release notifications work again too (they ride on the same subscriber connection).
    let s = format!("{ns}:scope");
    let r = h.reserve(&s, LONG).await.unwrap().unwrap();
    let h2 = h.clone();
    let s2 = s.clone();
    let mut waiter = tokio::spawn(async move {
        h2.wait_released(&s2, Duration::from_secs(20)).await;
        Instant::now()
    });
    assert!(
        timeout(Duration::from_millis(300), &mut waiter)
            .await
            .is_err()
    );
    let released = Instant::now();
    assert!(h.release(r).await.unwrap());
    let woke = timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(woke.saturating_duration_since(released) < Duration::from_secs(1));

    let _: i64 = ::redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&user)
        .query_async(&mut admin)
        .await
        .unwrap();
}
