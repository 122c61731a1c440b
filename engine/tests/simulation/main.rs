//! Deterministic simulation of the engine core: payment sessions, the embedded ledger, the
//! channel breakers and retries, callbacks and refunds, driven by simulated clients on a
//! seeded schedule with injected faults (crashes at any point, failed `fdatasync`, torn
//! journal tails, clock jumps, PSP errors and time-outs, duplicate callbacks, webhook
//! receivers that fail, hang or lose their answers), and checked against invariants at the
//! end of every run (see `model.rs` and `delivery.rs`). docs/simulation.md says what
//! is simulated and what is not.
//!
//! `SIM_SEED=<n>` runs one seed; `SIM_SEEDS=<count>` and `SIM_FIRST_SEED=<n>` choose a range;
//! `SIM_BUDGET_SECS` bounds the wall time of the range (default 90 s; seeds past it are
//! skipped and the count run is printed).

mod delivery;
mod faults;
mod hooks;
mod model;
mod ops;
mod psp;
mod world;

use std::time::{Duration, Instant};

/// Seeds run by default.
const DEFAULT_SEEDS: u64 = 400;
/// First default seed.
const DEFAULT_FIRST_SEED: u64 = 1;
/// Default wall-time budget of a range, seconds (CI must stay under two minutes).
const DEFAULT_BUDGET_SECS: u64 = 90;
/// Steps of one run.
const STEPS: u32 = 80;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn run_seed(seed: u64) -> Result<world::Stats, String> {
    let w = world::World::new(seed)?;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.run(STEPS))) {
        Ok(r) => r,
        Err(p) => Err(p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into())),
    }
}

#[test]
fn every_seed_keeps_the_invariants() {
    let (first, count) = match env_u64("SIM_SEED") {
        Some(s) => (s, 1),
        None => (
            env_u64("SIM_FIRST_SEED").unwrap_or(DEFAULT_FIRST_SEED),
            env_u64("SIM_SEEDS").unwrap_or(DEFAULT_SEEDS),
        ),
    };
    let budget = Duration::from_secs(env_u64("SIM_BUDGET_SECS").unwrap_or(DEFAULT_BUDGET_SECS));
    let started = Instant::now();
    let mut ran = 0;
    let mut totals = world::Stats::default();
    for seed in first..first.saturating_add(count) {
        if started.elapsed() > budget && ran > 0 {
            break;
        }
        match run_seed(seed) {
            Ok(s) => {
                ran += 1;
                add(&mut totals, &s);
                if count == 1 {
                    println!("seed {seed}: {s:?}");
                }
            }
            Err(e) => panic!(
                "simulation seed {seed} broke an invariant: {e}\n\
                 rerun it alone with: SIM_SEED={seed} cargo test --workspace --test simulation -- --nocapture"
            ),
        }
    }
    println!(
        "simulated {ran} seeds ({first}..{}) in {:.1} s: {totals:?}",
        first + ran,
        started.elapsed().as_secs_f64()
    );
}

fn add(t: &mut world::Stats, s: &world::Stats) {
    t.steps += s.steps;
    t.ops += s.ops;
    t.acked += s.acked;
    t.crashes += s.crashes;
    t.mid_flight_crashes += s.mid_flight_crashes;
    t.torn_tails += s.torn_tails;
    t.sync_faults += s.sync_faults;
    t.clock_jumps += s.clock_jumps;
    t.psp_calls += s.psp_calls;
    t.psp_hangs += s.psp_hangs;
    t.intents += s.intents;
    t.unacked_intents += s.unacked_intents;
    t.deliveries += s.deliveries;
    t.delivered_pairs += s.delivered_pairs;
    t.dropped_pairs += s.dropped_pairs;
    t.drained_ms = t.drained_ms.max(s.drained_ms);
    t.drain_rounds += s.drain_rounds;
    for (k, v) in &s.hook_answers {
        *t.hook_answers.entry(k).or_default() += v;
    }
    for (k, v) in &s.errors {
        *t.errors.entry(k).or_default() += v;
    }
}
