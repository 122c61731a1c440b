//! A short low-rate replay inside the test suite: it fails on any lost lifecycle, lost webhook,
//! money mismatch or 5xx — correctness, not speed. Everything it starts is stopped at the end.
//! The figures in docs/performance.md come from the same harness run as a benchmark:
//! `cargo bench -p ipay-loadtest --bench replay` (see `benches/replay.rs`).

mod replay_harness;

use replay_harness::{provision, replay, start, stop};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_replay_loses_no_lifecycle_webhook_or_cent() {
    let w = start(&["stripe", "multisafepay"]).await;
    let setup = provision(&w, 2, 2).await;
    let extra: Vec<String> = [
        // ≈ 5 lifecycles/s around noon for 30 s: every source, channel and outcome.
        "--parcels-per-day",
        "2500",
        "--compress",
        "10m",
        "--start-hour",
        "12",
        "--duration",
        "30s",
        "--drain",
        "30s",
        "--csv-batch-wait",
        "500ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let report = replay(&w, &setup, &extra).await;
    stop(w).await;
    println!("{report}");

    let a = &report.accounting;
    assert!(a.generated >= 100, "too few lifecycles: {report}");
    assert!(a.lost.is_empty(), "lost lifecycles: {report}");
    assert_eq!(a.http_5xx, 0, "5xx answers: {report}");
    assert!(a.delivered > 0, "nothing delivered: {report}");
    for by in ["source", "outcome", "channel"] {
        assert!(
            report.generated_by[by].len() >= 2,
            "{by} not mixed: {report}"
        );
    }
    assert_eq!(a.webhooks_missing, 0, "lost webhooks: {report}");
    assert_eq!(a.webhooks.bad_signatures, 0, "{report}");
    assert_eq!(a.webhooks.conflicting_events, 0, "{report}");
    assert!(a.money_matches, "money: {report}");
    assert_eq!(a.state_mismatches, 0, "{report}");
    assert!(a.ok, "{report}");
}
