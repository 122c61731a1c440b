//! `ipay-loadtest replay`: a China→EU parcel day against a running engine, every parcel a full
//! lifecycle through the public protocols (order → payment session → PSP payment and signed
//! callback → merchant webhooks → driver OTP → delivered), on an open-loop schedule shaped by
//! the daily volume, a diurnal curve, a compression of the day and a peak factor.
//!
//! This module owns the run: it wires the participants ([`setup`]), starts the webhook sink
//! ([`sink`]), releases lifecycles ([`lifecycle`]) at their intended times, shows progress,
//! and at the end does the accounting and builds the [`ReplayReport`]. It speaks HTTP only,
//! like any client; it never links the engine.

pub mod client;
pub mod lifecycle;
pub mod mix;
pub mod plot;
pub mod schedule;
pub mod setup;
pub mod sink;
pub mod stats;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parking_lot::Mutex;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::time::Instant;

use self::client::Api;
use self::lifecycle::{CsvBatching, Ctx, End, Parcel, Record};
use self::mix::{Outcome, Source, Weighted, draw};
use self::schedule::Shape;
use self::setup::{Setup, SetupSource};
use self::sink::{Sink, SinkCounts};
use self::stats::{Stage, Stats, TimelinePoint};
use crate::error::{Error, Result};
use crate::report::LatencyMs;
use crate::target::Target;

/// Most lifecycles in flight at once; arrivals beyond it are counted as not sent (the
/// generator's own bound, so a stalled engine cannot exhaust the load tool's memory).
pub const MAX_IN_FLIGHT: usize = 200_000;

/// Most lost lifecycles kept as samples in the report.
const MAX_LOST_SAMPLES: usize = 10;

/// Final-state checks run at once during the accounting.
const VERIFY_CONCURRENCY: usize = 64;

/// Everything a replay is told.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    /// The engine's nodes (loopback; one in embedded mode, several in a cluster).
    pub targets: Vec<Target>,
    /// The PSP simulator (loopback).
    pub sim: Target,
    /// The accounts, or how to create them.
    pub setup: SetupSource,
    /// When parcels arrive.
    pub shape: Shape,
    /// Where orders come from.
    pub sources: Weighted<Source>,
    /// Which channels payers use.
    pub channels: Weighted<usize>,
    /// Channel names, indexed by the values of `channels`.
    pub channel_names: Vec<String>,
    /// How lifecycles end.
    pub outcomes: Weighted<Outcome>,
    /// Lifecycles in flight at most.
    pub max_in_flight: usize,
    /// Bound of one HTTP exchange.
    pub request_timeout: Duration,
    /// How long to wait after the last lifecycle for outstanding webhooks.
    pub drain: Duration,
    /// CSV upload batching.
    pub csv: CsvBatching,
    /// Read every order back at the end and check its final status.
    pub verify_states: bool,
    /// Show a progress bar on stderr (only drawn on a terminal).
    pub progress: bool,
}

/// Percentiles and count of one stage.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    /// Measurements.
    pub count: u64,
    /// Latency percentiles.
    pub latency_ms: LatencyMs,
}

/// The accounting at the end of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Accounting {
    /// Lifecycles generated (sent).
    pub generated: u64,
    /// Arrivals not sent because `max_in_flight` lifecycles were running.
    pub not_sent: u64,
    /// Paid and delivered.
    pub delivered: u64,
    /// Ended in their known unpaid state, by outcome.
    pub known_unpaid: BTreeMap<String, u64>,
    /// Ended by an unexpected answer, by stage.
    pub lost: BTreeMap<String, u64>,
    /// A few lost lifecycles with the answer that stopped them.
    pub lost_samples: Vec<String>,
    /// Orders whose stored status differs from what their lifecycle reached.
    pub state_mismatches: u64,
    /// Whether final states were read back.
    pub states_verified: bool,
    /// Webhooks expected (per order and event type) that never arrived.
    pub webhooks_missing: u64,
    /// A few missing webhooks.
    pub webhooks_missing_samples: Vec<String>,
    /// What the sink saw.
    pub webhooks: SinkCounts,
    /// Paid sessions' totals by currency (minor units).
    pub paid_totals: BTreeMap<String, i64>,
    /// What the simulator reports captured for this run's intents, by currency.
    pub psp_captured: BTreeMap<String, i64>,
    /// Paid orders at the simulator for this run's intents.
    pub psp_paid_orders: u64,
    /// Whether the two money totals agree.
    pub money_matches: bool,
    /// HTTP answers with a 5xx status (any request of the run), 503 included.
    pub http_5xx: u64,
    /// Of those, `503` answers: load shedding, retried after `Retry-After`; they fail the
    /// accounting only through the lifecycles they end up losing.
    pub http_503: u64,
    /// Requests retried after 429/503.
    pub retried: u64,
    /// Transport failures.
    pub transport_errors: u64,
    /// `503` answers without a `Retry-After` header (must be 0: shedding says when to retry).
    pub http_503_without_retry_after: u64,
    /// PSP callbacks the engine did not acknowledge at first (re-sent by the replay), by the
    /// engine's answer.
    pub callbacks_refused: BTreeMap<u16, u64>,
    /// Every check passed.
    pub ok: bool,
}

/// The result of a replay.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    /// Always `replay`.
    pub scenario: &'static str,
    /// Engine URL (nodes separated by commas).
    pub target: String,
    /// Parcels per replayed day.
    pub parcels_per_day: u64,
    /// Wall seconds per replayed day.
    pub day_wall_secs: f64,
    /// Peak factor.
    pub peak_factor: f64,
    /// Hour of the day the run started at.
    pub start_hour: u32,
    /// Peak intended arrival rate (lifecycles/s).
    pub peak_rate: f64,
    /// Wall seconds of the arrival schedule.
    pub run_secs: f64,
    /// Wall seconds until the last lifecycle ended.
    pub elapsed_secs: f64,
    /// Delivered lifecycles per second of the schedule.
    pub delivered_per_sec: f64,
    /// Lifecycles (any end) per second of the schedule.
    pub lifecycles_per_sec: f64,
    /// Mix that was used.
    pub mix: BTreeMap<String, String>,
    /// Generated lifecycles by source, channel and outcome.
    pub generated_by: BTreeMap<String, BTreeMap<String, u64>>,
    /// Per-stage latency.
    pub stages: BTreeMap<String, StageReport>,
    /// HTTP answers by status.
    pub status_counts: BTreeMap<u16, u64>,
    /// The accounting.
    pub accounting: Accounting,
    /// Per-second timeline.
    pub timeline: Vec<TimelinePoint>,
}

impl ReplayReport {
    /// The report as one JSON document.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// Webhook event types a lifecycle that reached `end` with `outcome` must produce.
fn expected_events(outcome: Outcome, end: &End) -> &'static [&'static str] {
    match (end, outcome) {
        (End::Delivered, _) => &[
            "order.created",
            "session.created",
            "session.paid",
            "session.otp_verified",
            "parcel.delivered",
        ],
        (End::Known, _) => &["order.created", "session.created"],
        (End::Lost { .. }, _) => &[],
    }
}

/// Runs a replay and returns its report (the accounting says whether it passed).
pub async fn run(cfg: ReplayConfig) -> Result<ReplayReport> {
    cfg.shape.validate()?;
    if let SetupSource::File(s) = &cfg.setup {
        s.validate()?;
    }
    if cfg.max_in_flight == 0 || cfg.max_in_flight > MAX_IN_FLIGHT {
        return Err(Error::new(format!(
            "--max-in-flight must be 1 to {MAX_IN_FLIGHT}"
        )));
    }
    let stats = Arc::new(Stats::new());
    let api = Api::new(
        &cfg.targets,
        &cfg.sim,
        cfg.request_timeout,
        Arc::clone(&stats),
    )?;
    for node in 0..cfg.targets.len() {
        api.expect(
            "engine health",
            api.engine_at(node, Method::GET, "/healthz"),
            &[StatusCode::OK],
        )
        .await?;
    }
    api.expect(
        "simulator health",
        api.sim(Method::GET, "/_sim/health"),
        &[StatusCode::OK],
    )
    .await?;

    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let run_tag = format!(
        "rp{:x}",
        draw(nonce, u64::from(std::process::id())) & 0xFFFF_FFFF
    );
    let setup = match &cfg.setup {
        SetupSource::File(s) => s.clone(),
        SetupSource::Provision(p) => setup::provision(&api, p, &run_tag).await?,
    };
    let sink = Sink::start().await?;
    let channels: BTreeSet<String> = cfg
        .channels
        .items()
        .map(|i| cfg.channel_names[i].clone())
        .collect();
    let sources: BTreeSet<Source> = cfg.sources.items().collect();
    let merchants = setup::prepare(&api, &sink, &setup, &channels, &sources).await?;

    let mut csv = Vec::new();
    let mut batchers = Vec::new();
    for m in &merchants {
        let (tx, rx) = mpsc::channel(cfg.csv.max_rows * 4);
        csv.push(tx);
        batchers.push(tokio::spawn(lifecycle::csv_batcher(
            api.clone(),
            m.token.clone(),
            cfg.csv,
            rx,
        )));
    }
    let start = Instant::now() + Duration::from_millis(200);
    let ctx = Arc::new(Ctx {
        api: api.clone(),
        stats: Arc::clone(&stats),
        merchants,
        drivers: setup.drivers.clone(),
        start,
        csv,
        shop_id_base: (nonce % 1_000_000) * 10_000_000_000,
        run_tag,
    });

    let expected = cfg.shape.expected_arrivals();
    let bar = progress_bar(cfg.progress, expected);
    let records: Arc<Mutex<Vec<Record>>> = Arc::new(Mutex::new(Vec::new()));
    let permits = Arc::new(Semaphore::new(cfg.max_in_flight));
    let idle = Arc::new(Notify::new());
    let done = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let mut not_sent = 0u64;
    let mut generated = 0u64;
    let mut generated_by: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();

    let ticker = spawn_ticker(
        bar.clone(),
        Arc::clone(&done),
        Arc::clone(&lost),
        Arc::clone(&stats),
    );
    for (seq, at) in cfg.shape.arrivals().enumerate() {
        let seq = seq as u64;
        tokio::time::sleep_until(start + at).await;
        bar.set_position(seq + 1);
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            not_sent += 1;
            continue;
        };
        let parcel = Parcel {
            seq,
            at,
            merchant: (draw(seq, 1) % ctx.merchants.len() as u64) as usize,
            driver: (draw(seq, 2) % ctx.drivers.len() as u64) as usize,
            source: cfg.sources.pick(draw(seq, 3)),
            channel: cfg.channel_names[cfg.channels.pick(draw(seq, 4))].clone(),
            outcome: cfg.outcomes.pick(draw(seq, 5)),
            // Low-value consignments: €1.00 to €150.00.
            amount: 100 + (draw(seq, 6) % 14_901) as i64,
        };
        generated += 1;
        for (dim, value) in [
            ("source", parcel.source.as_str().to_string()),
            ("channel", parcel.channel.clone()),
            ("outcome", parcel.outcome.as_str().to_string()),
        ] {
            *generated_by
                .entry(dim.to_string())
                .or_default()
                .entry(value)
                .or_insert(0) += 1;
        }
        let ctx = Arc::clone(&ctx);
        let records = Arc::clone(&records);
        let (done, lost, idle) = (Arc::clone(&done), Arc::clone(&lost), Arc::clone(&idle));
        tokio::spawn(async move {
            let rec = lifecycle::run(ctx, parcel).await;
            if matches!(rec.end, End::Lost { .. }) {
                lost.fetch_add(1, Ordering::Relaxed);
            }
            records.lock().push(rec);
            done.fetch_add(1, Ordering::Relaxed);
            drop(permit);
            idle.notify_one();
        });
    }
    let run_secs = cfg.shape.run_wall.as_secs_f64();
    while done.load(Ordering::Relaxed) < generated {
        // Woken by each finishing lifecycle; the timeout only guards against a missed wake.
        let _ = tokio::time::timeout(Duration::from_millis(200), idle.notified()).await;
    }
    let elapsed_secs = start.elapsed().as_secs_f64();
    ticker.abort();
    bar.finish_and_clear();
    // The batchers end when their senders (in the context) are gone.
    drop(ctx);
    for b in batchers {
        let _ = b.await;
    }

    let records = std::mem::take(&mut *records.lock());
    let runs = Finished {
        setup: &setup,
        records: &records,
        generated,
        not_sent,
    };
    let accounting = account(&cfg, &api, &sink, &stats, runs).await?;
    sink.stop().await;

    let stages = stats
        .stage_summary()
        .into_iter()
        .map(|(s, (count, latency_ms))| (s.as_str().to_string(), StageReport { count, latency_ms }))
        .collect();
    let mut mix = BTreeMap::new();
    mix.insert("sources".to_string(), cfg.sources.to_string());
    mix.insert(
        "channels".to_string(),
        cfg.channels
            .items()
            .map(|i| cfg.channel_names[i].clone())
            .collect::<Vec<_>>()
            .join(","),
    );
    mix.insert("outcomes".to_string(), cfg.outcomes.to_string());
    let ended = accounting.delivered + accounting.known_unpaid.values().sum::<u64>();
    Ok(ReplayReport {
        scenario: "replay",
        target: api.engine_urls().join(","),
        parcels_per_day: cfg.shape.parcels_per_day,
        day_wall_secs: cfg.shape.day_wall.as_secs_f64(),
        peak_factor: cfg.shape.peak_factor,
        start_hour: cfg.shape.start_hour,
        peak_rate: cfg.shape.peak_wall_rate(),
        run_secs,
        elapsed_secs,
        delivered_per_sec: accounting.delivered as f64 / run_secs,
        lifecycles_per_sec: ended as f64 / run_secs,
        mix,
        generated_by,
        stages,
        status_counts: stats.statuses(),
        accounting,
        timeline: stats.timeline(),
    })
}

fn progress_bar(enabled: bool, len: u64) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} arrivals  {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Refreshes the progress message twice a second with live rates.
fn spawn_ticker(
    bar: ProgressBar,
    done: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
    stats: Arc<Stats>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = (Instant::now(), 0u64);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let now = Instant::now();
            let d = done.load(Ordering::Relaxed);
            let rate = (d - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-3);
            last = (now, d);
            let s5xx: u64 = stats
                .statuses()
                .iter()
                .filter(|(c, _)| **c >= 500)
                .map(|(_, n)| n)
                .sum();
            bar.set_message(format!(
                "ended {d} ({rate:.0}/s)  lost {}  5xx {s5xx}",
                lost.load(Ordering::Relaxed)
            ));
        }
    })
}

/// What the schedule left for the accounting.
struct Finished<'a> {
    setup: &'a Setup,
    records: &'a [Record],
    generated: u64,
    not_sent: u64,
}

async fn account(
    cfg: &ReplayConfig,
    api: &Api,
    sink: &Sink,
    stats: &Stats,
    run: Finished<'_>,
) -> Result<Accounting> {
    let Finished {
        setup,
        records,
        generated,
        not_sent,
    } = run;
    let mut a = Accounting {
        generated,
        not_sent,
        ..Accounting::default()
    };
    for r in records {
        match &r.end {
            End::Delivered => a.delivered += 1,
            End::Known => {
                *a.known_unpaid
                    .entry(r.parcel.outcome.as_str().to_string())
                    .or_insert(0) += 1
            }
            End::Lost { stage, reason } => {
                *a.lost.entry((*stage).to_string()).or_insert(0) += 1;
                if a.lost_samples.len() < MAX_LOST_SAMPLES {
                    a.lost_samples.push(format!(
                        "#{} {} via {} ({}): {stage}: {reason}",
                        r.parcel.seq, r.parcel.outcome, r.parcel.source, r.parcel.channel
                    ));
                }
            }
        }
    }

    // Webhooks: wait (bounded) for every expected one.
    let expected: Vec<(String, &'static str)> = records
        .iter()
        .filter_map(|r| r.order_id.as_ref().map(|o| (o, r)))
        .flat_map(|(o, r)| {
            expected_events(r.parcel.outcome, &r.end)
                .iter()
                .map(move |k| (o.clone(), *k))
        })
        .collect();
    let deadline = Instant::now() + cfg.drain;
    let missing = loop {
        let missing = sink.missing(expected.iter().map(|(o, k)| (o.as_str(), *k)));
        if missing.is_empty() || Instant::now() >= deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    a.webhooks_missing = missing.len() as u64;
    a.webhooks_missing_samples = missing
        .iter()
        .take(MAX_LOST_SAMPLES)
        .map(|(o, k)| format!("{k} for {o}"))
        .collect();
    for r in records {
        if let (Some(o), Some(sent), End::Delivered) = (&r.order_id, r.callback_sent, &r.end)
            && let Some(arrived) = sink.arrival(o, "session.paid")
        {
            stats.stage(
                Stage::WebhookDelivered,
                arrived.saturating_duration_since(sent),
            );
        }
    }
    a.webhooks = sink.counts();

    // Final states, read back.
    if cfg.verify_states {
        a.states_verified = true;
        a.state_mismatches = verify_states(api, setup, records).await;
    }

    // Money: paid sessions against what the simulator captured for this run's intents.
    let mut ours: HashMap<&str, ()> = HashMap::new();
    for r in records {
        if r.end == End::Delivered {
            *a.paid_totals.entry("EUR".to_string()).or_insert(0) += r.parcel.amount;
        }
        if let Some(i) = &r.intent_id {
            ours.insert(i.as_str(), ());
        }
    }
    let orders = api
        .expect(
            "simulator orders",
            api.sim(Method::GET, "/_sim/orders"),
            &[StatusCode::OK],
        )
        .await?;
    for o in orders.body.as_array().into_iter().flatten() {
        let intent = o["intent_id"].as_str().unwrap_or_default();
        if o["status"] == "paid" && ours.contains_key(intent) {
            a.psp_paid_orders += 1;
            let cur = o["currency"].as_str().unwrap_or("?").to_string();
            *a.psp_captured.entry(cur).or_insert(0) += o["amount"].as_i64().unwrap_or(0);
        }
    }
    a.money_matches = a.paid_totals == a.psp_captured && a.psp_paid_orders == a.delivered;

    a.http_5xx = stats
        .statuses()
        .iter()
        .filter(|(c, _)| **c >= 500)
        .map(|(_, n)| n)
        .sum();
    a.http_503 = stats.statuses().get(&503).copied().unwrap_or(0);
    a.retried = api.counts().retried.load(Ordering::Relaxed);
    a.transport_errors = api.counts().transport_errors.load(Ordering::Relaxed);
    a.http_503_without_retry_after = api
        .counts()
        .unavailable_without_retry_after
        .load(Ordering::Relaxed);
    a.callbacks_refused = api.counts().callbacks_refused();
    let lost: u64 = a.lost.values().sum();
    let accounted = a.delivered + a.known_unpaid.values().sum::<u64>() + lost == a.generated;
    a.ok = accounted
        && lost == 0
        && a.not_sent == 0
        && a.state_mismatches == 0
        && a.webhooks_missing == 0
        && a.webhooks.conflicting_events == 0
        && a.webhooks.bad_signatures == 0
        && a.money_matches
        && a.http_5xx == a.http_503
        && a.http_503_without_retry_after == 0;
    Ok(a)
}

/// Reads every order back and counts those whose status is not what its lifecycle reached.
async fn verify_states(api: &Api, setup: &Setup, records: &[Record]) -> u64 {
    let sem = Arc::new(Semaphore::new(VERIFY_CONCURRENCY));
    let mut tasks = Vec::new();
    for r in records {
        let want = match r.end {
            End::Delivered => "DELIVERED",
            End::Known => "SESSION_CREATED",
            End::Lost { .. } => continue,
        };
        let Some(order) = r.order_id.clone() else {
            continue;
        };
        let token = setup.merchants[r.parcel.merchant].token.clone();
        let api = api.clone();
        let sem = Arc::clone(&sem);
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.ok()?;
            let r = api
                .expect(
                    "read order",
                    api.engine(Method::GET, &format!("/api/orders/{order}"))
                        .bearer_auth(&token),
                    &[StatusCode::OK],
                )
                .await
                .ok()?;
            (r.body["status"] == want).then_some(())
        }));
    }
    let mut bad = 0;
    for t in tasks {
        if !matches!(t.await, Ok(Some(()))) {
            bad += 1;
        }
    }
    bad
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = &self.accounting;
        writeln!(f, "replay of a China→EU parcel day against {}", self.target)?;
        writeln!(
            f,
            "  day: {} parcels × peak factor {} in {:.0} s of wall time, from {:02}:00; peak {:.1} lifecycles/s",
            self.parcels_per_day,
            self.peak_factor,
            self.day_wall_secs,
            self.start_hour,
            self.peak_rate
        )?;
        writeln!(
            f,
            "  schedule {:.1} s, all ended after {:.1} s; {:.1} lifecycles/s ended, {:.1} delivered/s",
            self.run_secs, self.elapsed_secs, self.lifecycles_per_sec, self.delivered_per_sec
        )?;
        for (k, v) in &self.mix {
            writeln!(f, "  mix {k}: {v}")?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "  {:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "stage (ms)", "count", "p50", "p90", "p99", "p99.9", "max"
        )?;
        for s in Stage::ALL {
            if let Some(r) = self.stages.get(s.as_str()) {
                let l = &r.latency_ms;
                writeln!(
                    f,
                    "  {:<22} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                    s.as_str(),
                    r.count,
                    l.p50,
                    l.p90,
                    l.p99,
                    l.p999,
                    l.max
                )?;
            }
        }
        writeln!(f)?;
        writeln!(
            f,
            "  generated {}  delivered {}  known unpaid {:?}  lost {:?}  not sent {}",
            a.generated, a.delivered, a.known_unpaid, a.lost, a.not_sent
        )?;
        for s in &a.lost_samples {
            writeln!(f, "    lost: {s}")?;
        }
        writeln!(
            f,
            "  webhooks: received {}  unique {}  duplicates (same id) {}  conflicting {}  bad signatures {}  missing {}",
            a.webhooks.received,
            a.webhooks.unique_events,
            a.webhooks.duplicates_same_id,
            a.webhooks.conflicting_events,
            a.webhooks.bad_signatures,
            a.webhooks_missing
        )?;
        for s in a.webhooks_missing_samples.iter().chain(&a.webhooks.samples) {
            writeln!(f, "    webhook: {s}")?;
        }
        writeln!(
            f,
            "  money: paid sessions {:?}  PSP captured {:?} ({} orders)  {}",
            a.paid_totals,
            a.psp_captured,
            a.psp_paid_orders,
            if a.money_matches { "match" } else { "MISMATCH" }
        )?;
        if a.states_verified {
            writeln!(
                f,
                "  final states read back: {} mismatches",
                a.state_mismatches
            )?;
        }
        let statuses: Vec<String> = self
            .status_counts
            .iter()
            .map(|(c, n)| format!("{c}={n}"))
            .collect();
        writeln!(
            f,
            "  HTTP: {}  (5xx {} of which 503 {} ({} without Retry-After), retried {}, transport errors {})",
            statuses.join(" "),
            a.http_5xx,
            a.http_503,
            a.http_503_without_retry_after,
            a.retried,
            a.transport_errors
        )?;
        if !a.callbacks_refused.is_empty() {
            writeln!(
                f,
                "  PSP callbacks not acknowledged at first (re-sent): {:?}",
                a.callbacks_refused
            )?;
        }
        writeln!(f, "  accounting: {}", if a.ok { "OK" } else { "FAILED" })
    }
}
