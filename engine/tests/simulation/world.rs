//! One simulated run: the world (data directory, injected clock, the seed's fault plans, what
//! clients were told) and its lives. A life is one process: a fresh current-thread tokio
//! runtime with paused time, the embedded ledger opened from the data directory, an engine on
//! it. A crash ends a life at any point: requests in flight are abandoned mid-way (their
//! tasks dropped with the runtime), the engine is gone without a shutdown hand-over, and the
//! next life reopens the store from disk, sometimes after a torn journal tail was appended.
//!
//! Two merchants, each with its own webhook endpoints, share the engine; every life runs the
//! real webhook dispatcher, sending through the simulated receivers (`hooks.rs`).

use crate::delivery;
use crate::faults::{StorageFaults, WatchedLedger, tear_journal_tail};
use crate::hooks::{Endpoint, Profile, Receivers};
use crate::model::{KnownIntent, Model, Stored, check_intent};
use crate::ops::{Op, Outcome, run_op};
use crate::psp::{CHANNEL, PspPlan, SimFactory};
use ipay_engine::channel::ChannelsConfig;
use ipay_engine::channels::retry::RecordingSleeper;
use ipay_engine::channels::vault::MasterKey;
use ipay_engine::channels::{ChannelConfigInput, ChannelSetup};
use ipay_engine::clock::{Clock, ManualClock};
use ipay_engine::engine::{AuthContext, Engine, EngineConfig, create_merchant};
use ipay_engine::model::{IntentStatus, RefundStatus, ServiceAction, ServiceInput};
use ipay_engine::session::SessionConfig;
use ipay_engine::store::embedded::{EmbeddedLedger, EmbeddedOptions};
use ipay_engine::store::memory_hot::MemoryHotState;
use ipay_engine::store::{EventQuery, IntentQuery, Ledger, PageRequest};
use ipay_engine::webhooks::api::EndpointInput;
use ipay_engine::webhooks::{WebhookConfig, WebhookDeps, Webhooks};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Runtime;

/// Start of simulated time (2027-01-15).
const EPOCH_MS: i64 = 1_800_000_000_000;
/// Longest expiry a simulated client asks for, seconds.
const MAX_EXPIRY_SECS: i64 = 3_600;
/// Merchants sharing the engine (each with its own endpoints).
const MERCHANTS: usize = 2;
/// Drain rounds at most (each: tokio time passes, then the clock moves to the next retry).
const MAX_DRAIN_ROUNDS: usize = 400;
/// Tokio time one drain round lets pass, s: a poll, a send up to its time limit, and the
/// bookkeeping after it.
const DRAIN_ROUND_SECS: u64 = 12;
/// Shortest clock move of one drain round, ms: retries due close together go in one round
/// (a retry made later than its time is still after its delay).
const DRAIN_MIN_STEP_MS: i64 = 600_000;

/// The dispatcher's settings in the simulation: the defaults, but a slower poll (the
/// simulated clock moves only when the world moves it), long shard leases (one node), and
/// back-off windows of up to 6 h instead of 10 min, so a dead endpoint's parked markers wake
/// a few times over the 31 h retry schedule instead of 190 (each wake is a drain round).
fn webhook_config() -> WebhookConfig {
    WebhookConfig {
        poll_interval_ms: 10_000,
        lease_ttl_ms: 60_000,
        backoff_max_ms: 6 * 3_600_000,
        ..WebhookConfig::default()
    }
}

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
    /// Webhook requests the receivers processed (duplicates included).
    pub deliveries: usize,
    /// (event, endpoint) pairs delivered, and dropped without being delivered.
    pub delivered_pairs: usize,
    pub dropped_pairs: usize,
    /// Webhook attempts the receivers saw, by how they answered.
    pub hook_answers: std::collections::BTreeMap<&'static str, u64>,
    pub intents: usize,
    /// Intents stored although no client was told they were created.
    pub unacked_intents: usize,
    /// Simulated time the webhook drain took, ms (the longest, in totals), and its rounds.
    pub drained_ms: i64,
    pub drain_rounds: u32,
    /// Error codes clients got, with counts.
    pub errors: std::collections::BTreeMap<&'static str, u32>,
}

/// One process's worth of engine.
struct Life {
    rt: Runtime,
    engine: Engine,
    webhooks: Arc<Webhooks>,
    closed: tokio::sync::watch::Receiver<bool>,
    /// One per merchant.
    ctxs: Vec<AuthContext>,
}

/// A merchant as set up in the first life.
#[derive(Debug, Clone, Default)]
pub struct MerchantSetup {
    secret: String,
    service_id: String,
}

/// The seed's world.
pub struct World {
    rng: StdRng,
    dir: tempfile::TempDir,
    clock: ManualClock,
    storage: Arc<StorageFaults>,
    psp: Arc<PspPlan>,
    receivers: Arc<Receivers>,
    /// Due-index partitions written so far (see `faults.rs`).
    due_written: crate::faults::WrittenPartitions,
    /// Set up in the first life.
    merchants: Vec<MerchantSetup>,
    /// Intent id → merchant index.
    owner: std::collections::BTreeMap<String, usize>,
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
        let timeout = std::time::Duration::from_millis(webhook_config().timeout_ms);
        let receivers = Receivers::new(StdRng::seed_from_u64(rng.random()), timeout);
        Ok(World {
            rng,
            dir: data_dir()?,
            clock: ManualClock::new(EPOCH_MS),
            storage,
            psp,
            receivers,
            due_written: Default::default(),
            merchants: Vec::new(),
            owner: Default::default(),
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
            10..16 => self.let_time_pass(),
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
        let raw = EmbeddedLedger::open_with_faults(
            self.dir.path(),
            EmbeddedOptions::default(),
            self.storage.clone(),
        )
        .map_err(|e| format!("reopening the ledger failed: {e}"))?;
        let closed = raw.closed();
        let ledger = WatchedLedger::new(raw, self.due_written.clone());
        let (engine, webhooks) = rt.block_on(self.start_engine(ledger))?;
        if self.merchants.is_empty() {
            rt.block_on(self.set_up(&engine, &webhooks))?;
        }
        let mut ctxs = Vec::new();
        for m in &self.merchants {
            let ctx = rt
                .block_on(engine.authenticate(&m.secret, None))
                .map_err(|e| format!("a merchant's key is gone after a restart: {e}"))?;
            ctxs.push(ctx);
        }
        self.life = Some(Life {
            rt,
            engine,
            webhooks,
            closed,
            ctxs,
        });
        Ok(())
    }

    async fn start_engine(
        &self,
        ledger: Arc<WatchedLedger>,
    ) -> Result<(Engine, Arc<Webhooks>), String> {
        let outbox = ledger.attach_outbox().map_err(|e| e.to_string())?;
        let hot = Arc::new(MemoryHotState::new());
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
        let engine = Engine::start(ledger, hot.clone(), Arc::new(self.clock.clone()), cfg)
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
        let cfg = webhook_config();
        let deps = WebhookDeps {
            ledger: engine.ledger().clone(),
            hot,
            clock: engine.clock().clone(),
            outbox,
            url_policy: cfg.url_policy(),
            max_page_size: engine.config().limits.max_page_size,
        };
        let webhooks = Webhooks::start_with_transport(deps, cfg, self.receivers.transport())
            .await
            .map_err(|e| format!("the webhook dispatcher did not start: {e}"))?;
        Ok((engine, webhooks))
    }

    /// The merchants, their endpoints, manifests and channels, written before faults are
    /// armed. Endpoints come first, so every event a merchant has is one its endpoints want.
    async fn set_up(&mut self, engine: &Engine, webhooks: &Webhooks) -> Result<(), String> {
        let err = |e: ipay_engine::EngineError| format!("set-up failed: {e}");
        self.storage.arm(false);
        for m in 0..MERCHANTS {
            let creds = create_merchant(engine.ledger().as_ref(), &self.clock, "sim")
                .await
                .map_err(err)?;
            let ctx = engine
                .authenticate(&creds.test_secret_key, None)
                .await
                .map_err(err)?;
            let endpoints = if m == 0 {
                self.rng.random_range(1..=2)
            } else {
                1
            };
            for n in 0..endpoints {
                let url = format!("https://hooks{n}.merchant{m}.example/in");
                let input = EndpointInput {
                    url: url.clone(),
                    ..Default::default()
                };
                let made = webhooks.create_endpoint(&ctx, input).await.map_err(err)?;
                let profile = Profile::draw(&mut self.rng);
                self.receivers.endpoints.lock().insert(
                    url,
                    Endpoint {
                        id: made.endpoint.id,
                        merchant: ctx.merchant_id,
                        secret: made.secret,
                        profile,
                    },
                );
            }
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
            self.merchants.push(MerchantSetup {
                secret: creds.test_secret_key,
                service_id: id,
            });
        }
        self.storage.arm(true);
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
        let Life {
            rt,
            engine,
            webhooks,
            closed,
            ..
        } = life;
        drop(webhooks);
        drop(engine);
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

    /// Lets tokio time pass with nothing requested (the dispatcher sends, receivers answer or
    /// hang, time-outs fire); sometimes the process crashes right after, with sends in flight.
    fn let_time_pass(&mut self) -> Result<(), String> {
        let ms = self.rng.random_range(10..15_000);
        let crash = self.rng.random_bool(0.2);
        self.trace.push(format!(
            "step {}: {ms} ms pass{}",
            self.stats.steps,
            if crash { ", then a crash" } else { "" }
        ));
        let life = self.life.as_ref().ok_or("no life")?;
        life.rt
            .block_on(async { tokio::time::sleep(Duration::from_millis(ms)).await });
        if crash {
            self.stats.mid_flight_crashes += 1;
            self.crash()?;
        }
        Ok(())
    }

    // ---------------------------------------------------------------- requests

    /// Runs 1–4 requests at once; sometimes the process crashes while they are in flight.
    fn run_ops(&mut self) -> Result<(), String> {
        let n = self.rng.random_range(1..=4);
        let ops: Vec<(usize, Op)> = (0..n).map(|_| self.pick_op()).collect();
        self.trace
            .push(format!("step {}: {ops:?}", self.stats.steps));
        let crash_after = self
            .rng
            .random_bool(0.08)
            .then(|| self.rng.random_range(0..40));
        let life = self.life.as_ref().ok_or("no life")?;
        let (engine, ctxs) = (life.engine.clone(), life.ctxs.clone());
        let seq = Arc::new(std::sync::atomic::AtomicU64::new(0));
        self.stats.ops += n;
        let outcomes = life.rt.block_on(async move {
            let handles: Vec<_> = ops
                .into_iter()
                .map(|(who, op)| {
                    let run = run_op(engine.clone(), ctxs[who].clone(), op, seq.clone());
                    tokio::spawn(async move {
                        let (at, o) = run.await;
                        (at, who, o)
                    })
                })
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
        outcomes.sort_by_key(|(at, _, _)| *at);
        for (_, who, o) in outcomes {
            if let Outcome::Created(pi, ..) = &o {
                self.owner.insert(pi.id.to_string(), who);
            }
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

    /// A known intent: (id, amount, owning merchant).
    fn random_intent(&mut self) -> Option<(String, i64, usize)> {
        if self.model.intents.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..self.model.intents.len());
        let (id, k) = self.model.intents.iter().nth(i)?;
        let who = self.owner.get(id).copied().unwrap_or(0);
        Some((id.clone(), k.amount, who))
    }

    /// A request and the merchant making it.
    fn pick_op(&mut self) -> (usize, Op) {
        let roll = self.rng.random_range(0..100);
        let target = self.random_intent();
        match (roll, target) {
            (0..35, _) | (_, None) => self.pick_create(),
            (35..60, Some((id, amount, who))) => (who, self.pick_callback(id, amount)),
            (60..70, Some((_, _, who))) if !self.model.notifications.is_empty() => {
                let i = self.rng.random_range(0..self.model.notifications.len());
                let (intent, nid, outcome) = self.model.notifications[i].clone();
                let amount = self.model.intents.get(&intent).map_or(0, |k| k.amount);
                let op = Op::Callback {
                    intent,
                    nid,
                    outcome,
                    amount,
                };
                (who, op)
            }
            (60..78, Some((intent, _, who))) => (who, Op::Cancel { intent }),
            (_, Some((intent, amount, who))) => {
                let amount = self
                    .rng
                    .random_bool(0.5)
                    .then(|| self.rng.random_range(1..=amount));
                (who, Op::Refund { intent, amount })
            }
        }
    }

    fn pick_create(&mut self) -> (usize, Op) {
        let who = usize::from(self.rng.random_bool(0.3));
        let amount = self.rng.random_range(100..5_000);
        let expires_in = self.rng.random_range(60..MAX_EXPIRY_SECS);
        let key = match self.rng.random_range(0..10) {
            0..3 => None,
            3..5 if !self.model.keys.is_empty() => {
                // A client retrying: same key, same request, same merchant.
                let i = self.rng.random_range(0..self.model.keys.len());
                let (k, (amount, _)) = self
                    .model
                    .keys
                    .iter()
                    .nth(i)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .unwrap_or_default();
                let who = usize::from(k.starts_with("key1-"));
                let op = Op::Create {
                    service: self.merchants[who].service_id.clone(),
                    key: Some(k),
                    amount,
                    expires_in: 600,
                };
                return (who, op);
            }
            _ => Some(self.fresh(&format!("key{who}-"))),
        };
        if let Some(k) = &key {
            self.model.keys.insert(k.clone(), (amount, None));
        }
        let expires_in = if key.is_some() { 600 } else { expires_in };
        let op = Op::Create {
            service: self.merchants[who].service_id.clone(),
            key,
            amount,
            expires_in,
        };
        (who, op)
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

    /// Recovers once more with faults off, lets every expiry pass, and checks the invariants;
    /// then lets the whole webhook retry schedule run out and checks the deliveries.
    fn finish(mut self) -> Result<Stats, String> {
        self.storage.arm(false);
        self.crash()?;
        self.clock.advance_ms(2 * MAX_EXPIRY_SECS * 1000 + 60_000);
        let life = self.life.as_ref().ok_or("no life")?;
        life.rt.block_on(settle(&life.engine))?;
        // Every stored intent, acknowledged or not (a write whose fsync "failed" may be on
        // disk, and a crash may cut the answer of a write that landed): none may have moved
        // twice, be over-refunded or be stuck, and every acknowledged one must be there.
        let mut all = std::collections::BTreeMap::new();
        for (who, ctx) in life.ctxs.iter().enumerate() {
            for id in life.rt.block_on(all_intents(life.engine.ledger(), ctx))? {
                all.insert(id, who);
            }
        }
        for id in self.model.intents.keys() {
            if !all.contains_key(id) {
                return Err(format!("acknowledged intent {id} is not listed"));
            }
        }
        for (id, who) in &all {
            let ctx = &life.ctxs[*who];
            let stored = life.rt.block_on(stored(life.engine.ledger(), ctx, id))?;
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
        self.stats.sync_faults = self
            .storage
            .injected
            .load(std::sync::atomic::Ordering::SeqCst);
        self.drain_and_check_deliveries()?;
        self.end_life()?;
        Ok(self.stats)
    }

    /// Lets the dispatcher work through every delivery: tokio time runs (sends, time-outs,
    /// bookkeeping) and the clock moves to the next retry, until no delivery is in progress
    /// (or far past the whole schedule, which the check then reports). Then the invariant.
    fn drain_and_check_deliveries(&mut self) -> Result<(), String> {
        let life = self.life.as_ref().ok_or("no life")?;
        let ledger = life.engine.ledger().clone();
        let drain_started = self.clock.now_ms();
        let mut pairs = life
            .rt
            .block_on(delivery::pairs(&ledger, &life.ctxs, &self.receivers))?;
        for _ in 0..MAX_DRAIN_ROUNDS {
            self.stats.drain_rounds += 1;
            life.rt.block_on(async {
                tokio::time::sleep(Duration::from_secs(DRAIN_ROUND_SECS)).await
            });
            life.rt.block_on(delivery::refresh(&ledger, &mut pairs))?;
            let u = delivery::unfinished(&pairs);
            if u.open == 0 {
                break;
            }
            // Move to the next retry; while a fan-out marker is parked, no further than a
            // back-off window can last (it is due when its window ends).
            let now = self.clock.now_ms();
            let cap = if u.unrecorded {
                webhook_config().backoff_max_ms as i64
            } else {
                i64::MAX / 4
            };
            let to = u
                .next
                .unwrap_or(now + cap)
                .clamp(now + DRAIN_MIN_STEP_MS, now + cap);
            self.clock.advance_ms(to - now);
        }
        self.stats.drained_ms = self.clock.now_ms() - drain_started;
        let span = (EPOCH_MS, self.clock.now_ms());
        let report = life
            .rt
            .block_on(delivery::check(&ledger, &pairs, &self.receivers, span))?;
        self.stats.deliveries = self.receivers.got.lock().len();
        self.stats.delivered_pairs = report.delivered;
        self.stats.dropped_pairs = report.dropped;
        self.stats.hook_answers = self.receivers.seen.lock().clone();
        Ok(())
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
