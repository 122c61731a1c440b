//! Shared test helpers: a callback receiver on loopback that records what arrives, and the
//! simulator + factory set-up.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Uri};
use ipay_adapters::factory::AdapterFactory;
use ipay_adapters::http::HttpTimeouts;
use ipay_adapters::sim::{SimHandle, SimOptions, Simulator};
use ipay_engine::channel::{
    ChannelAdapter, ChannelFactory, ChannelPaymentRequest, InboundCallback,
};
use ipay_engine::clock::{Clock, SystemClock, Timestamp};
use ipay_engine::ids::PaymentIntentId;
use ipay_engine::money::Money;
use parking_lot::Mutex;

/// A request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    /// The callback as the gateway hands it to the engine, with the path it arrived on.
    pub fn gateway_callback(&self) -> InboundCallback {
        InboundCallback {
            path: self.path.clone(),
            ..self.without_path()
        }
    }

    /// The same callback with no path to route by: only what the PSP signed identifies it.
    pub fn without_path(&self) -> InboundCallback {
        InboundCallback {
            method: "POST".into(),
            path: String::new(),
            query: None,
            headers: self
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect(),
            body: self.body.clone(),
        }
    }
}

/// A loopback HTTP server recording every request; answers 200 `success`.
pub struct Receiver {
    pub base_url: String,
    got: Arc<Mutex<Vec<Received>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let sink = got.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().push(Received {
                    path: uri.path().to_owned(),
                    headers,
                    body,
                });
                "success"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        Receiver {
            base_url,
            got,
            stop: Some(tx),
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().clone()
    }

    pub fn last(&self) -> Received {
        self.got.lock().last().cloned().expect("a callback arrived")
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A simulator, a receiver, and a factory pointed at the simulator.
pub struct World {
    pub sim: SimHandle,
    pub receiver: Receiver,
    pub factory: AdapterFactory,
}

pub const SHORT_TIMEOUT: Duration = Duration::from_millis(800);

impl World {
    pub async fn start() -> World {
        let sim = Simulator::start(SimOptions::default()).await.unwrap();
        let receiver = Receiver::start().await;
        let factory = AdapterFactory::with_options(
            &sim.channels_config(),
            HttpTimeouts {
                connect: Duration::from_secs(2),
                request: SHORT_TIMEOUT,
            },
            Arc::new(SystemClock),
        )
        .unwrap();
        sim.set_webhook_url("stripe", &format!("{}/callbacks/stripe", receiver.base_url));
        World {
            sim,
            receiver,
            factory,
        }
    }

    pub fn notify_url(&self, channel: &str) -> String {
        format!("{}/callbacks/{channel}", self.receiver.base_url)
    }

    pub fn adapter(&self, channel: &str) -> Arc<dyn ChannelAdapter> {
        self.factory
            .build(
                channel,
                &self.sim.credentials(channel),
                &self.notify_url(channel),
            )
            .unwrap()
    }
}

pub fn now() -> Timestamp {
    SystemClock.now()
}

pub fn request(value: i64, currency: &str) -> ChannelPaymentRequest {
    let now = now();
    ChannelPaymentRequest {
        intent_id: PaymentIntentId::new_at(now.ms()),
        amount: Money::from_parts(value, currency).unwrap(),
        expires_at: now.plus_secs(900),
        livemode: false,
    }
}
