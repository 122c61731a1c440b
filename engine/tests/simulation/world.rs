//! One simulated run: the world (data directory, injected clock, the seed's fault plans, what
//! clients were told) and its lives. A life is one process: a fresh current-thread tokio
//! runtime with paused time, the embedded ledger opened from the data directory, an engine on
//! it. A crash ends a life at any point: requests in flight are abandoned mid-way (their
//! tasks dropped with the runtime), the engine is gone without a shutdown hand-over, and the
//! next life reopens the store from disk, sometimes after a torn journal tail was appended.

use crate::faults::{FaultyLedger, StorageFaults, tear_journal_tail};
use crate::model::{KnownIntent, Model, Stored, check_intent};
use crate::ops::{Op, Outcome, run_op};
use crate::psp::{CHANNEL, PspPlan, SimFactory};
use ipay_engine::channel::ChannelsConfig;
use ipay_engine::channels::retry::RecordingSleeper;
use ipay_engine::channels::vault::MasterKey;
use ipay_engine::channels::{ChannelConfigInput, ChannelSetup};
use ipay_engine::clock::ManualClock;
use ipay_engine::engine::{AuthContext, Engine, EngineConfig, create_merchant};
use ipay_engine::model::{IntentStatus, RefundStatus, ServiceAction, ServiceInput};
use ipay_engine::session::SessionConfig;
use ipay_engine::store::embedded::{EmbeddedLedger, EmbeddedOptions};
use ipay_engine::store::memory_hot::MemoryHotState;
use ipay_engine::store::{EventQuery, IntentQuery, Ledger, PageRequest};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Runtime;

/// Start of simulated time (2027-01-15).
const EPOCH_MS: i64 = 1_800_000_000_000;
/// Longest expiry a simulated client asks for, seconds.
const MAX_EXPIRY_SECS: i64 = 3_600;

/// Counts of what happened in a run, printed per seed.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub steps: u32,
    pub ops: u32,
    pub acked: u32,
    pub crashes: u32,
    pub mid_flight_crashes: u32,
    pub torn_tails: u32,
    pub sync_faults: u64,
    pub clock_jumps: u32,
    pub psp_calls: u64,
    pub psp_hangs: u64,
    pub intents: usize,
    /// Intents stored although no client was told they were created.
    pub unacked_intents: usize,
    /// Error codes clients got, with counts.
    pub errors: std::collections::BTreeMap<&'static str, u32>,
}

/// One process's worth of engine.
struct Life {
    rt: Runtime,
    engine: Engine,
    ledger: Arc<FaultyLedger>,
    closed: tokio::sync::watch::Receiver<bool>,
    ctx: AuthContext,
}

/// The seed's world.
pub struct World {
    rng: StdRng,
    dir: tempfile::TempDir,
    clock: ManualClock,
    storage: Arc<StorageFaults>,
    psp: Arc<PspPlan>,
    secret: Option<String>,
    service_id: String,
    model: Model,
    life: Option<Life>,
    next_id: u64,
    pub stats: Stats,
    /// What happened, step by step (printed when a seed fails).
    trace: Vec<String>,
}

impl World {
    /// A world whose every choice follows from `seed`.
    pub fn new(seed: u64) -> Result<World, String> {
        let mut rng = StdRng::seed_from_u64(seed);
        let storage =
            StorageFaults::new(StdRng::seed_from_u64(rng.random()), rng.random_range(0..40));
        let psp = PspPlan::new(
            StdRng::seed_from_u64(rng.random()),
            rng.random_range(0..300),
            rng.random_range(0..60),
            rng.random_range(0..50),
        );
        Ok(World {
            rng,
            dir: data_dir()?,
            clock: ManualClock::new(EPOCH_MS),
            storage,
            psp,
            secret: None,
            service_id: String::new(),
            model: Model::default(),
            life: None,
            next_id: 0,
            stats: Stats::default(),
            trace: Vec::new(),
        })
    }

    /// Runs `steps` steps, then the final check. A failure carries the run's trace.
    pub fn run(mut self, steps: u32) -> Result<Stats, String> {
        let r = self.open_life().and_then(|()| {
            for _ in 0..steps {
                self.stats.steps += 1;
                self.step()?;
            }
            Ok(())
        });
        if let Err(e) = r {
            return Err(self.with_trace(e));
        }
        let trace = std::mem::take(&mut self.trace);
        self.finish()
            .map_err(|e| format!("{e}\ntrace:\n{}", trace.join("\n")))
    }

    fn with_trace(&self, e: String) -> String {
        format!("{e}\ntrace:\n{}", self.trace.join("\n"))
    }

    fn step(&mut self) -> Result<(), String> {
        match self.rng.random_range(0..100) {
            0..4 => self.crash(),
            4..10 => {
                self.jump_clock();
                Ok(())
            }
            _ => self.run_ops(),
        }
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{}", self.next_id)
    }

    // ---------------------------------------------------------------- lives

    fn open_life(&mut self) -> Result<(), String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .map_err(|e| e.to_string())?;
        let raw = EmbeddedLedger::open(self.dir.path(), EmbeddedOptions::default())
            .map_err(|e| format!("reopening the ledger failed: {e}"))?;
        let closed = raw.closed();
        let ledger = FaultyLedger::new(raw, self.storage.clone());
        let engine = rt.block_on(self.start_engine(ledger.clone()))?;
        if self.secret.is_none() {
            rt.block_on(self.set_up(&engine))?;
        }
        let secret = self.secret.clone().unwrap_or_default();
        let ctx = rt
            .block_on(engine.authenticate(&secret, None))
            .map_err(|e| format!("the merchant's key is gone after a restart: {e}"))?;
        self.life = Some(Life {
            rt,
            engine,
            ledger,
            closed,
            ctx,
        });
        Ok(())
    }

    async fn start_engine(&self, ledger: Arc<FaultyLedger>) -> Result<Engine, String> {
        let sessions = SessionConfig {
            shards: 4,
            passivate_after_ms: 120_000,
            tick_interval_ms: 3_600_000,
            ..Default::default()
        };
        let cfg = EngineConfig {
            sessions,
            ..Default::default()
        };
        let engine = Engine::start(
            ledger,
            Arc::new(MemoryHotState::new()),
            Arc::new(self.clock.clone()),
            cfg,
        )
        .await
        .map_err(|e| format!("the engine did not start on the reopened store: {e}"))?;
        let config = ChannelsConfig {
            retry_delays_ms: vec![1_000, 5_000],
            breaker_failure_threshold: 3,
            breaker_cooldown_ms: 10_000,
            call_timeout_ms: 2_000,
            ..Default::default()
        };
        engine
            .set_channels(ChannelSetup {
                factory: Some(Arc::new(SimFactory(self.psp.clone()))),
                config,
                master_key: Some(MasterKey::from_bytes([7; 32])),
                sleeper: Arc::new(RecordingSleeper::with_clock(self.clock.clone())),
                psp_budget: ChannelSetup::psp_budget(30_000),
            })
            .map_err(|e| e.to_string())?;
        Ok(engine)
    }

    /// The merchant, its manifest and its channel, written before faults are armed.
    async fn set_up(&mut self, engine: &Engine) -> Result<(), String> {
        let err = |e: ipay_engine::EngineError| format!("set-up failed: {e}");
        self.storage.arm(false);
        let creds = create_merchant(engine.ledger().as_ref(), &self.clock, "sim")
            .await
            .map_err(err)?;
        let ctx = engine
            .authenticate(&creds.test_secret_key, None)
            .await
            .map_err(err)?;
        let input = ServiceInput {
            name: Some("sim".into()),
            accepted_channels: Some(vec![CHANNEL.into()]),
            ..Default::default()
        };
        let (svc, _) = engine.upsert_service(&ctx, input).await.map_err(err)?;
        let id = svc.id.to_string();
        engine
            .service_action(&ctx, &id, ServiceAction::Activate)
            .await
            .map_err(err)?;
        let input = ChannelConfigInput {
            channel: CHANNEL.into(),
            credentials: serde_json::json!({"sim": true}),
            notify_url: "https://merchant.example/callbacks".into(),
        };
        engine.configure_channel(&ctx, input).await.map_err(err)?;
        self.storage.arm(true);
        self.secret = Some(creds.test_secret_key);
        self.service_id = id;
        Ok(())
    }

    /// Ends the current life as a crash would and starts the next one from disk.
    fn crash(&mut self) -> Result<(), String> {
        self.stats.crashes += 1;
        self.trace.push(format!("step {}: crash", self.stats.steps));
        self.end_life()?;
        if self.rng.random_bool(0.5) {
            let len = self.rng.random_range(1..600);
            if tear_journal_tail(self.dir.path(), &mut self.rng, len).is_some() {
                self.stats.torn_tails += 1;
            }
        }
        self.open_life()
    }

    fn end_life(&mut self) -> Result<(), String> {
        let Some(life) = self.life.take() else {
            return Ok(());
        };
        self.stats.sync_faults += life
            .ledger
            .injected
            .load(std::sync::atomic::Ordering::SeqCst);
        let Life {
            rt,
            engine,
            ledger,
            closed,
            ..
        } = life;
        drop(engine);
        drop(ledger);
        // Every task dies with the runtime, as with the process; the writer thread then sees
        // the last handle go and releases the directory.
        rt.shutdown_timeout(Duration::from_secs(10));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !*closed.borrow() {
            if std::time::Instant::now() > deadline {
                return Err("the ledger was not released 30 s after the crash".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    // ---------------------------------------------------------------- time

    fn jump_clock(&mut self) {
        self.stats.clock_jumps += 1;
        let ms = match self.rng.random_range(0..10) {
            0 => -self.rng.random_range(1..5_000),
            1..4 => self.rng.random_range(1..2_000),
            4..8 => self.rng.random_range(1_000..120_000),
            _ => self.rng.random_range(60_000..2 * MAX_EXPIRY_SECS * 1000),
        };
        self.clock.advance_ms(ms);
        self.trace
            .push(format!("step {}: clock {ms:+} ms", self.stats.steps));
        if let Some(life) = &self.life {
            life.rt.block_on(life.engine.sessions().tick_all());
        }
    }

    // ---------------------------------------------------------------- requests

    /// Runs 1–4 requests at once; sometimes the process crashes while they are in flight.
    fn run_ops(&mut self) -> Result<(), String> {
        let n = self.rng.random_range(1..=4);
        let ops: Vec<Op> = (0..n).map(|_| self.pick_op()).collect();
        self.trace
            .push(format!("step {}: {ops:?}", self.stats.steps));
        let crash_after = self
            .rng
            .random_bool(0.08)
            .then(|| self.rng.random_range(0..40));
        let life = self.life.as_ref().ok_or("no life")?;
        let (engine, ctx) = (life.engine.clone(), life.ctx.clone());
        let seq = Arc::new(std::sync::atomic::AtomicU64::new(0));
        self.stats.ops += n;
        let outcomes = life.rt.block_on(async move {
            let handles: Vec<_> = ops
                .into_iter()
                .map(|op| tokio::spawn(run_op(engine.clone(), ctx.clone(), op, seq.clone())))
                .collect();
            let mut out = Vec::new();
            let Some(yields) = crash_after else {
                for h in handles {
                    out.push(h.await.map_err(|e| format!("a request panicked: {e}"))?);
                }
                return Ok::<_, String>(out);
            };
            for _ in 0..yields {
                tokio::task::yield_now().await;
            }
            for h in handles {
                if h.is_finished() {
                    out.push(h.await.map_err(|e| format!("a request panicked: {e}"))?);
                } else {
                    h.abort();
                }
            }
            Ok(out)
        })?;
        let mut outcomes = outcomes;
        outcomes.sort_by_key(|(at, _)| *at);
        for (_, o) in outcomes {
            self.trace.append(&mut self.storage.log.lock());
            self.trace.push(format!("  -> {}", brief(&o)));
            self.apply(o)?;
        }
        if crash_after.is_some() {
            self.stats.mid_flight_crashes += 1;
            self.crash()?;
        }
        Ok(())
    }

    fn apply(&mut self, o: Outcome) -> Result<(), String> {
        match o {
            Outcome::Created(pi, key, replayed) => {
                self.stats.acked += 1;
                self.model.acked_intent(&pi, key.as_deref(), replayed)
            }
            Outcome::Seen(pi) => {
                self.stats.acked += 1;
                self.model.observed(&pi)
            }
            Outcome::Refunded {
                intent,
                refund,
                amount,
            } => {
                self.stats.acked += 1;
                self.model.acked_refund(&intent, &refund, amount);
                Ok(())
            }
            Outcome::Refused(code, internal) => {
                *self.stats.errors.entry(code).or_default() += 1;
                match internal {
                    true => Err(format!("a request failed with an internal error: {code}")),
                    false => Ok(()),
                }
            }
        }
    }

    fn random_intent(&mut self) -> Option<(String, i64)> {
        if self.model.intents.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..self.model.intents.len());
        let (id, k) = self.model.intents.iter().nth(i)?;
        Some((id.clone(), k.amount))
    }

    fn pick_op(&mut self) -> Op {
        let roll = self.rng.random_range(0..100);
        let target = self.random_intent();
        match (roll, target) {
            (0..35, _) | (_, None) => self.pick_create(),
            (35..60, Some((id, amount))) => self.pick_callback(id, amount),
            (60..70, Some(_)) if !self.model.notifications.is_empty() => {
                let i = self.rng.random_range(0..self.model.notifications.len());
                let (intent, nid, outcome) = self.model.notifications[i].clone();
                let amount = self.model.intents.get(&intent).map_or(0, |k| k.amount);
                Op::Callback {
                    intent,
                    nid,
                    outcome,
                    amount,
                }
            }
            (60..78, Some((intent, _))) => Op::Cancel { intent },
            (_, Some((intent, amount))) => {
                let amount = self
                    .rng
                    .random_bool(0.5)
                    .then(|| self.rng.random_range(1..=amount));
                Op::Refund { intent, amount }
            }
        }
    }

    fn pick_create(&mut self) -> Op {
        let amount = self.rng.random_range(100..5_000);
        let expires_in = self.rng.random_range(60..MAX_EXPIRY_SECS);
        let key = match self.rng.random_range(0..10) {
            0..3 => None,
            3..5 if !self.model.keys.is_empty() => {
                // A client retrying: same key, same request.
                let i = self.rng.random_range(0..self.model.keys.len());
                let (k, (amount, _)) = self
                    .model
                    .keys
                    .iter()
                    .nth(i)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .unwrap_or_default();
                return Op::Create {
                    service: self.service_id.clone(),
                    key: Some(k),
                    amount,
                    expires_in: 600,
                };
            }
            _ => Some(self.fresh("key-")),
        };
        if let Some(k) = &key {
            self.model.keys.insert(k.clone(), (amount, None));
        }
        let expires_in = if key.is_some() { 600 } else { expires_in };
        Op::Create {
            service: self.service_id.clone(),
            key,
            amount,
            expires_in,
        }
    }

    fn pick_callback(&mut self, intent: String, amount: i64) -> Op {
        let nid = self.fresh("n");
        let outcome = match self.rng.random_range(0..10) {
            0..6 => "paid",
            6..8 => "failed",
            8 => "mismatch",
            _ => "waiting",
        };
        self.model
            .notifications
            .push((intent.clone(), nid.clone(), outcome));
        Op::Callback {
            intent,
            nid,
            outcome,
            amount,
        }
    }

    // ---------------------------------------------------------------- the end

    /// Recovers once more with faults off, lets every expiry pass, and checks the invariants.
    fn finish(mut self) -> Result<Stats, String> {
        self.storage.arm(false);
        self.crash()?;
        self.clock.advance_ms(2 * MAX_EXPIRY_SECS * 1000 + 60_000);
        let life = self.life.as_ref().ok_or("no life")?;
        life.rt.block_on(settle(&life.engine))?;
        // Every stored intent, acknowledged or not (a write whose fsync "failed" may be on
        // disk, and a crash may cut the answer of a write that landed): none may have moved
        // twice, be over-refunded or be stuck, and every acknowledged one must be there.
        let all = life
            .rt
            .block_on(all_intents(life.engine.ledger(), &life.ctx))?;
        for id in self.model.intents.keys() {
            if !all.contains(id) {
                return Err(format!("acknowledged intent {id} is not listed"));
            }
        }
        for id in &all {
            let stored = life
                .rt
                .block_on(stored(life.engine.ledger(), &life.ctx, id))?;
            let unacked = KnownIntent {
                amount: stored.intent.as_ref().map_or(0, |pi| pi.amount.value),
                terminal: None,
                refunds: Default::default(),
            };
            check_intent(id, self.model.intents.get(id).unwrap_or(&unacked), &stored)?;
        }
        self.stats.intents = self.model.intents.len();
        self.stats.unacked_intents = all.len() - self.model.intents.len();
        self.stats.psp_calls = self.psp.calls.load(std::sync::atomic::Ordering::SeqCst);
        self.stats.psp_hangs = self.psp.hangs.load(std::sync::atomic::Ordering::SeqCst);
        self.end_life()?;
        Ok(self.stats)
    }
}

/// A fresh data directory, in memory where the system offers it: the simulation's faults
/// are injected above the disk, so a real disk's fsync latency would only slow the seeds.
fn data_dir() -> Result<tempfile::TempDir, String> {
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    };
    dir.map_err(|e| e.to_string())
}

/// Fires due timers until no intent is pending. Each expiry is a commit on the writer thread;
/// the sleep is on the paused clock, so it takes no real time and returns only once the
/// runtime is idle, which the commit in flight prevents (see `faults.rs`).
async fn settle(engine: &Engine) -> Result<(), String> {
    for _ in 0..200 {
        engine.sessions().tick_all().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        let pending = engine
            .ledger()
            .count_intents_by_status()
            .await
            .map_err(|e| e.to_string())?[IntentStatus::Pending.to_u8() as usize];
        if pending == 0 {
            return Ok(());
        }
    }
    Err("intents still pending after every expiry passed and timers ran 200 times".into())
}

/// Ids of every intent of the simulated merchant.
async fn all_intents(
    ledger: &Arc<dyn Ledger>,
    ctx: &AuthContext,
) -> Result<std::collections::BTreeSet<String>, String> {
    let q = IntentQuery {
        status: None,
        channel: None,
        created_after: None,
        created_before: None,
        descending: false,
        page: PageRequest {
            limit: 100_000,
            offset: 0,
        },
    };
    let page = ledger
        .list_intents(ctx.merchant_id, false, &q)
        .await
        .map_err(|e| e.to_string())?;
    if page.total as usize != page.data.len() {
        return Err(format!(
            "listed {} of {} intents",
            page.data.len(),
            page.total
        ));
    }
    Ok(page.data.into_iter().map(|pi| pi.id.to_string()).collect())
}

/// What the ledger holds about intent `id`.
async fn stored(ledger: &Arc<dyn Ledger>, ctx: &AuthContext, id: &str) -> Result<Stored, String> {
    let e = |e: ipay_engine::error::StoreError| e.to_string();
    let pid = ipay_engine::ids::PaymentIntentId::parse(id).map_err(|_| format!("bad id {id}"))?;
    let intent = ledger.get_intent(pid).await.map_err(e)?;
    let page = PageRequest {
        limit: 1_000,
        offset: 0,
    };
    let q = EventQuery {
        event_type: None,
        object_id: Some(id.to_string()),
        page,
    };
    let mut events: Vec<_> = ledger
        .list_events(ctx.merchant_id, false, &q)
        .await
        .map_err(e)?
        .data;
    events.sort_by_key(|ev| ev.id);
    let listed = ledger
        .list_refunds(ctx.merchant_id, false, Some(pid), page)
        .await
        .map_err(e)?
        .data;
    let refunds_live = listed
        .iter()
        .filter(|r| r.status != RefundStatus::Failed)
        .map(|r| r.amount.value)
        .sum();
    let refund_rows = listed.len();
    let refunds = listed
        .into_iter()
        .map(|r| (r.id.to_string(), r.amount.value))
        .collect();
    Ok(Stored {
        intent,
        events: events.into_iter().map(|ev| ev.event_type).collect(),
        refunds,
        refunds_live,
        refund_rows,
    })
}

/// One line about an outcome, for the trace.
fn brief(o: &Outcome) -> String {
    match o {
        Outcome::Created(pi, key, replayed) => {
            format!(
                "created {} {:?} key {key:?} replayed {replayed}",
                pi.id, pi.status
            )
        }
        Outcome::Seen(pi) => format!("seen {} {:?}", pi.id, pi.status),
        Outcome::Refunded {
            intent,
            refund,
            amount,
        } => format!("refund {refund} of {amount} on {intent}"),
        Outcome::Refused(code, _) => format!("refused {code}"),
    }
}
