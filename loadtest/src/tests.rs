//! End-to-end tests: the load generator against the in-process ceiling
//! server, through the same command-line parsing the binary uses.

use clap::Parser;
use tokio::sync::oneshot;

use crate::ceiling;
use crate::cli::{self, Cli, Command};

/// Starts the ceiling server on an ephemeral loopback port; the listener is
/// bound before this returns, so connections are accepted from then on.
async fn start_ceiling() -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = ceiling::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind ceiling");
    let addr = listener.local_addr().expect("local addr");
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let shutdown = async {
            let _ = stop_rx.await;
        };
        ceiling::serve(listener, shutdown).await.expect("serve");
    });
    (format!("http://{addr}"), stop_tx, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_create_intents_against_ceiling() {
    let (target, stop, server) = start_ceiling().await;
    let cli = Cli::try_parse_from([
        "ipay-loadtest",
        "create-intents",
        "--target",
        &target,
        "--key",
        "sk_test_e2e",
        "--service-id",
        "svc_e2e",
        "--connections",
        "4",
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "--idempotency",
    ])
    .expect("valid arguments");
    let Command::CreateIntents(args) = cli.command else {
        panic!("parsed the wrong subcommand");
    };

    let report = cli::create_intents(&args).await.expect("run completes");

    assert!(report.ok > 0, "no successes: {report}");
    assert_eq!(report.errors, 0, "errors: {report}");
    assert_eq!(report.requests, report.ok);
    assert_eq!(report.status_counts.len(), 1, "{report}");
    assert_eq!(report.status_counts.get(&201), Some(&report.ok));
    assert_eq!(report.mode, "closed-loop");
    assert!(report.latency_ms.max >= report.latency_ms.p50);

    let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("json");
    assert_eq!(json["status_counts"]["201"], report.ok);

    let _ = stop.send(());
    server.await.expect("server task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_get_keeps_a_modest_rate() {
    let (target, stop, server) = start_ceiling().await;
    let cli = Cli::try_parse_from([
        "ipay-loadtest",
        "get",
        "--target",
        &target,
        "--rate",
        "200",
        "--connections",
        "2",
        "--duration",
        "500ms",
        "--warmup",
        "100ms",
    ])
    .expect("valid arguments");
    let Command::Get(args) = cli.command else {
        panic!("parsed the wrong subcommand");
    };

    let report = cli::get(&args).await.expect("run completes");

    // 200/s for 500 ms after a 100 ms warmup: slots 20..120 are measured.
    assert_eq!(report.scheduled, Some(100));
    assert_eq!(report.mode, "open-loop");
    assert!(report.rate_kept.is_some());
    // A stalled test machine may miss the last slots, never add any.
    assert!((90..=100).contains(&report.requests), "{report}");
    assert_eq!(report.errors, 0, "{report}");
    assert_eq!(report.status_counts.get(&200), Some(&report.requests));

    let _ = stop.send(());
    server.await.expect("server task");
}

#[tokio::test]
async fn refuses_unreachable_target_with_a_message() {
    // Bind then drop to get a loopback port that is (very likely) closed.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let cli = Cli::try_parse_from([
        "ipay-loadtest",
        "get",
        "--target",
        &format!("http://{addr}"),
        "--duration",
        "1s",
    ])
    .expect("valid arguments");
    let Command::Get(args) = cli.command else {
        panic!("parsed the wrong subcommand");
    };
    let error = cli::get(&args).await.expect_err("must fail");
    assert!(error.message().contains("cannot connect"), "{error}");
}

#[test]
fn bad_cli_input_is_an_error_not_a_panic() {
    let base = [
        "ipay-loadtest",
        "create-intents",
        "--key",
        "k",
        "--service-id",
        "s",
    ];
    for extra in [
        &["--target", "http://127.0.0.1:1", "--connections", "0"][..],
        &["--target", "http://127.0.0.1:1", "--connections", "4097"],
        &["--target", "http://127.0.0.1:1", "--rate", "10000001"],
        &["--target", "http://127.0.0.1:1", "--rate", "-1"],
        &["--target", "http://127.0.0.1:1", "--duration", "2h"],
        &["--target", "http://127.0.0.1:1", "--duration", "0s"],
        &["--target", "http://127.0.0.1:1", "--warmup", "soon"],
    ] {
        let args: Vec<&str> = base.iter().chain(extra.iter()).copied().collect();
        assert!(Cli::try_parse_from(&args).is_err(), "{args:?}");
    }
    assert!(Cli::try_parse_from(["ipay-loadtest", "ceiling-server", "--listen", "nope"]).is_err());
}

#[tokio::test]
async fn ceiling_refuses_non_loopback_listen() {
    let error = ceiling::bind("0.0.0.0:0".parse().expect("addr"))
        .await
        .expect_err("must refuse");
    assert!(error.message().contains("loopback"), "{error}");
}
