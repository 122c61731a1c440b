//! The marketplace simulator: one loopback HTTP server that speaks bol.com's Retailer API v10
//! (token endpoint and orders), AliExpress's system gateway (`aliexpress.solution.order.get`)
//! and Temu's router (`bg.order.list.v2.get`), checks each platform's real request
//! authentication (OAuth2 client credentials and bearer tokens, the HMAC-SHA256 and MD5
//! signatures) and serves paged orders placed at or after the asked time. Bad credentials
//! get each platform's refusal (bol.com 401, AliExpress `IncompleteSignature` /
//! `IllegalAccessToken`, Temu `success:false`). Faults (5xx, slow answers) are injected per
//! platform.
//!
//! It runs in-process ([`MarketSim::start`]) for tests, and inside the `psp-sim` binary. It
//! owns no IPAY logic: it is the world outside. Simplification: AliExpress and Temu list
//! entries carry the receipt address inline (the real platforms serve it from a second call),
//! documented in `docs/integrations.md`.

mod platforms;

use crate::marketplaces::{MarketUrls, Marketplace};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// bol.com client credentials the simulator accepts.
pub const BOL_CLIENT_ID: &str = "bol-sim-client-id";
/// The matching client secret.
pub const BOL_CLIENT_SECRET: &str = "bol-sim-client-secret-0123456789";
/// AliExpress app key, secret and seller token the simulator accepts.
pub const AE_APP_KEY: &str = "500123";
/// The matching app secret.
pub const AE_APP_SECRET: &str = "ae-sim-app-secret-0123456789abcd";
/// The seller's access token.
pub const AE_ACCESS_TOKEN: &str = "ae-sim-access-token";
/// Temu app key, secret and seller token the simulator accepts.
pub const TEMU_APP_KEY: &str = "temu-sim-app-key";
/// The matching app secret.
pub const TEMU_APP_SECRET: &str = "temu-sim-app-secret-0123456789ab";
/// The seller's access token.
pub const TEMU_ACCESS_TOKEN: &str = "temu-sim-access-token";

/// A fault on one platform's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarketFault {
    /// Answer HTTP 503 to the next `times` requests.
    Unavailable { times: u32 },
    /// Answer every request after `delay_ms` until cleared.
    Slow { delay_ms: u64 },
}

/// One simulated order (rendered in each platform's JSON on the way out).
#[derive(Debug, Clone)]
pub(crate) struct SimOrder {
    pub id: String,
    pub placed_ms: i64,
    pub seq: u64,
}

#[derive(Default)]
pub(crate) struct State {
    pub orders: Mutex<HashMap<Marketplace, Vec<SimOrder>>>,
    pub bol_tokens: Mutex<HashSet<String>>,
    pub faults: Mutex<HashMap<Marketplace, MarketFault>>,
    pub requests: Mutex<HashMap<Marketplace, u64>>,
    pub seq: AtomicU64,
}

impl State {
    /// Counts a request and applies the platform's fault: `true` means answer 503.
    pub(crate) async fn enter(&self, m: Marketplace) -> bool {
        *self.requests.lock().entry(m).or_default() += 1;
        let fault = {
            let mut faults = self.faults.lock();
            match faults.get(&m).copied() {
                Some(MarketFault::Unavailable { times }) => {
                    if times <= 1 {
                        faults.remove(&m);
                    } else {
                        faults.insert(m, MarketFault::Unavailable { times: times - 1 });
                    }
                    Some(MarketFault::Unavailable { times })
                }
                other => other,
            }
        };
        match fault {
            Some(MarketFault::Unavailable { .. }) => true,
            Some(MarketFault::Slow { delay_ms }) => {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                false
            }
            None => false,
        }
    }

    /// Orders of `m` placed at or after `since_ms`, oldest first.
    pub(crate) fn since(&self, m: Marketplace, since_ms: i64) -> Vec<SimOrder> {
        let mut v: Vec<SimOrder> = self
            .orders
            .lock()
            .get(&m)
            .map(|o| {
                o.iter()
                    .filter(|o| o.placed_ms >= since_ms)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by(|a, b| (a.placed_ms, &a.id).cmp(&(b.placed_ms, &b.id)));
        v
    }
}

/// Starts marketplace simulators.
#[derive(Debug)]
pub struct MarketSim;

/// A running simulator.
pub struct MarketSimHandle {
    addr: SocketAddr,
    state: Arc<State>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl MarketSim {
    /// Binds `bind` (port 0 picks one) and serves on the current tokio runtime.
    pub async fn start(bind: SocketAddr) -> std::io::Result<MarketSimHandle> {
        let listener = tokio::net::TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let app = platforms::router(state.clone());
        let (stop, mut rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::warn!(error = %e, "marketplace simulator stopped with an error");
            }
        });
        Ok(MarketSimHandle { addr, state, stop })
    }
}

impl MarketSimHandle {
    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The platform endpoints to configure (`[lastmile.sync]`).
    pub fn urls(&self) -> MarketUrls {
        let b = format!("http://{}", self.addr);
        MarketUrls {
            bol_token_url: format!("{b}/bol/token"),
            bol_api_url: format!("{b}/bol"),
            aliexpress_url: format!("{b}/aliexpress/sync"),
            temu_url: format!("{b}/temu/openapi/router"),
        }
    }

    /// The `connect` body with the credentials the simulator accepts.
    pub fn credentials(m: Marketplace) -> serde_json::Value {
        match m {
            Marketplace::Bol => serde_json::json!({
                "client_id": BOL_CLIENT_ID, "client_secret": BOL_CLIENT_SECRET}),
            Marketplace::Aliexpress => serde_json::json!({
                "app_key": AE_APP_KEY, "app_secret": AE_APP_SECRET,
                "access_token": AE_ACCESS_TOKEN}),
            Marketplace::Temu => serde_json::json!({
                "app_key": TEMU_APP_KEY, "app_secret": TEMU_APP_SECRET,
                "access_token": TEMU_ACCESS_TOKEN}),
        }
    }

    /// Adds `n` orders to `m`, placed one second apart from `first_ms` (whole seconds, as
    /// the platforms count); returns their ids.
    pub fn add_orders(&self, m: Marketplace, n: usize, first_ms: i64) -> Vec<String> {
        let first = first_ms - first_ms.rem_euclid(1000);
        let mut ids = Vec::with_capacity(n);
        let mut orders = self.state.orders.lock();
        let list = orders.entry(m).or_default();
        for i in 0..n {
            let seq = self.state.seq.fetch_add(1, Ordering::Relaxed) + 1;
            let id = match m {
                Marketplace::Bol => format!("B{:09}", seq),
                Marketplace::Aliexpress => format!("8{:015}", seq),
                Marketplace::Temu => format!("PO-211-{:014}", seq),
            };
            list.push(SimOrder {
                id: id.clone(),
                placed_ms: first + i as i64 * 1000,
                seq,
            });
            ids.push(id);
        }
        ids
    }

    /// Injects a fault on `m`'s API (replacing any).
    pub fn inject(&self, m: Marketplace, f: MarketFault) {
        self.state.faults.lock().insert(m, f);
    }

    /// Clears every fault.
    pub fn clear_faults(&self) {
        self.state.faults.lock().clear();
    }

    /// Requests `m`'s API received so far.
    pub fn requests(&self, m: Marketplace) -> u64 {
        self.state.requests.lock().get(&m).copied().unwrap_or(0)
    }

    /// Stops serving.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}
