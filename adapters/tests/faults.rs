//! Fault modes of the simulated PSP APIs as the adapters observe them: 503 outages, hangs,
//! slow and malformed answers, unreachable endpoints, and requests the PSP refuses.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{SHORT_TIMEOUT, World, request};
use ipay_adapters::factory::AdapterFactory;
use ipay_adapters::http::HttpTimeouts;
use ipay_adapters::sim::{Fault, FaultKind};
use ipay_engine::channel::{ChannelError, ChannelFactory, ChannelsConfig};
use ipay_engine::clock::SystemClock;

const API_CHANNELS: [(&str, &str); 4] = [
    ("alipay", "CNY"),
    ("wechat", "CNY"),
    ("stripe", "EUR"),
    ("multisafepay", "EUR"),
];

#[tokio::test]
async fn outage_answers_503_and_is_unavailable_then_recovers() {
    let w = World::start().await;
    for (channel, currency) in API_CHANNELS {
        let adapter = w.adapter(channel);
        w.sim
            .inject(Fault::new(channel, FaultKind::Unavailable).times(2));
        for _ in 0..2 {
            let err = adapter
                .create_payment(&request(100, currency))
                .await
                .unwrap_err();
            assert!(
                matches!(&err, ChannelError::Unavailable(m) if m.contains("503")),
                "{channel}: {err:?}"
            );
        }
        // The window was two requests: the third goes through.
        adapter
            .create_payment(&request(100, currency))
            .await
            .unwrap_or_else(|e| panic!("{channel} after the outage: {e}"));
        assert_eq!(w.sim.request_count(channel), 3);
    }
}

#[tokio::test]
async fn an_outage_without_a_count_lasts_until_cleared() {
    let w = World::start().await;
    let adapter = w.adapter("wechat");
    w.sim.inject(Fault {
        channel: None,
        kind: FaultKind::Unavailable,
        count: None,
        duration_ms: None,
    });
    for _ in 0..3 {
        assert!(matches!(
            adapter.create_payment(&request(100, "CNY")).await,
            Err(ChannelError::Unavailable(_))
        ));
    }
    w.sim.clear_faults();
    adapter.create_payment(&request(100, "CNY")).await.unwrap();
}

#[tokio::test]
async fn hanging_psp_is_unavailable_after_the_request_timeout() {
    let w = World::start().await;
    for (channel, currency) in API_CHANNELS {
        let adapter = w.adapter(channel);
        w.sim.inject(Fault::new(channel, FaultKind::Hang).times(1));
        let started = Instant::now();
        let err = adapter
            .create_payment(&request(100, currency))
            .await
            .unwrap_err();
        let waited = started.elapsed();
        assert!(
            matches!(&err, ChannelError::Unavailable(m) if m.contains("timed out")),
            "{channel}: {err:?}"
        );
        // It gave up because of its own timeout, not because the simulator let go.
        assert!(
            waited >= SHORT_TIMEOUT,
            "{channel} gave up after {waited:?}"
        );
    }
    w.sim.stop().await;
}

#[tokio::test]
async fn malformed_answers_are_unavailable() {
    let w = World::start().await;
    for (channel, currency) in API_CHANNELS {
        let adapter = w.adapter(channel);
        w.sim
            .inject(Fault::new(channel, FaultKind::Malformed).times(1));
        let err = adapter
            .create_payment(&request(100, currency))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ChannelError::Unavailable(_)),
            "{channel}: {err:?}"
        );
    }
}

#[tokio::test]
async fn slow_answers_within_the_timeout_succeed() {
    let w = World::start().await;
    let adapter = w.adapter("alipay");
    w.sim
        .inject(Fault::new("alipay", FaultKind::Slow { delay_ms: 100 }).times(1));
    adapter.create_payment(&request(100, "CNY")).await.unwrap();
    w.sim.inject(
        Fault::new(
            "alipay",
            FaultKind::Slow {
                delay_ms: (SHORT_TIMEOUT * 3).as_millis() as u64,
            },
        )
        .times(1),
    );
    assert!(matches!(
        adapter.create_payment(&request(100, "CNY")).await,
        Err(ChannelError::Unavailable(_))
    ));
    w.sim.stop().await;
}

#[tokio::test]
async fn unreachable_endpoint_is_unavailable() {
    // Bind then drop a listener: nothing listens on that port any more.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut config = ChannelsConfig::default();
    config
        .endpoints
        .insert("stripe".into(), format!("http://127.0.0.1:{port}"));
    let factory = AdapterFactory::with_options(
        &config,
        HttpTimeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_secs(2),
        },
        Arc::new(SystemClock),
    )
    .unwrap();
    let creds = ipay_adapters::sim::keys::credentials("stripe").unwrap();
    let adapter = factory.build("stripe", &creds, "http://x/cb").unwrap();
    let err = adapter
        .create_payment(&request(100, "EUR"))
        .await
        .unwrap_err();
    assert!(matches!(err, ChannelError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn psp_refuses_requests_signed_with_the_wrong_key_and_that_is_rejected() {
    let w = World::start().await;
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let other_key =
        std::fs::read_to_string(format!("{fixtures}/alipay/app_private_key.pem")).unwrap();
    let cases = [
        ("alipay", "private_key_pem", other_key.clone(), "CNY"),
        ("wechat", "private_key_pem", other_key, "CNY"),
        (
            "stripe",
            "secret_key",
            "sk_test_someoneElsesKey000000".to_owned(),
            "EUR",
        ),
        (
            "multisafepay",
            "api_key",
            "someoneElsesKey0000000000".to_owned(),
            "EUR",
        ),
    ];
    for (channel, field, value, currency) in cases {
        let mut creds = w.sim.credentials(channel);
        creds[field] = serde_json::Value::String(value);
        let adapter = w
            .factory
            .build(channel, &creds, &w.notify_url(channel))
            .unwrap();
        let err = adapter
            .create_payment(&request(100, currency))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ChannelError::Rejected(_)),
            "{channel}: {err:?}"
        );
        let text = err.to_string();
        assert!(
            !text.contains("someoneElses"),
            "{channel} echoed a secret: {text}"
        );
    }
    assert!(w.sim.orders().is_empty());
}

#[tokio::test]
async fn currencies_a_channel_cannot_collect_are_rejected_before_any_call() {
    let w = World::start().await;
    for (channel, currency) in [("alipay", "EUR"), ("wechat", "USD"), ("promptpay", "CNY")] {
        let adapter = w.adapter(channel);
        assert!(!adapter.supports_currency(request(1, currency).amount.currency));
        let err = adapter
            .create_payment(&request(100, currency))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ChannelError::Rejected(_)),
            "{channel}: {err:?}"
        );
        assert_eq!(w.sim.request_count(channel), 0);
    }
}
