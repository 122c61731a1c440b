//! The replay measurement behind the figures in docs/performance.md: the same in-process
//! harness as the smoke test, at a rate and length set by the environment, e.g.
//! `IPAY_REPLAY_ARGS="--parcels-per-day 12600000 --compress 60m --duration 60s"
//!  IPAY_REPLAY_OUT=docs/replay cargo bench -p ipay-loadtest --bench replay`.
//! Prints the report; with `IPAY_REPLAY_OUT` also writes the plots and the JSON report there.

#[path = "../tests/replay_harness/mod.rs"]
mod replay_harness;

use replay_harness::{provision, replay, start, stop};

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(measure());
}

async fn measure() {
    let w = start(&["stripe", "multisafepay"]).await;
    let setup = provision(&w, 8, 16).await;
    let extra: Vec<String> = std::env::var("IPAY_REPLAY_ARGS")
        .unwrap_or_else(|_| "--parcels-per-day 1260000 --compress 10m --duration 30s".into())
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let out = std::env::var("IPAY_REPLAY_OUT").ok();
    let report = replay(&w, &setup, &extra).await;
    stop(w).await;
    println!("{report}");
    if let Some(dir) = out {
        let files =
            ipay_loadtest::replay::plot::write_all(dir.as_ref(), "replay", &report.timeline)
                .expect("plots");
        std::fs::write(
            std::path::Path::new(&dir).join("replay-report.json"),
            report.to_json(),
        )
        .expect("report");
        println!("wrote {files:?}");
    }
}
