//! Who takes part in a replay and how they are wired before the first parcel: the merchants
//! (last-mile JWT plus a test-mode secret key of the same engine merchant) and drivers from the
//! setup file, each merchant's channels configured with the simulator's credentials, a webhook
//! endpoint pointing at the load tool's sink, and Shopify/WooCommerce connections with secrets
//! the tool signs with. Everything goes over the public HTTP API; nothing is created here that
//! the setup file does not name.

use std::collections::BTreeSet;
use std::path::Path;

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::client::Api;
use super::mix::{Source, draw};
use super::sink::Sink;
use crate::error::{Error, Result};

/// Most merchants and drivers one setup may name.
pub const MAX_PARTICIPANTS: usize = 1_000;

/// One merchant as the setup file names it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantSetup {
    /// Engine merchant id (`mer_…`).
    pub merchant_id: String,
    /// A last-mile merchant user's JWT for this merchant.
    pub token: String,
    /// A test-mode secret key (`sk_test_…`) of the same merchant, for channels and webhooks.
    pub secret_key: String,
}

/// The setup file (`--setup`): the accounts a replay uses.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setup {
    /// Merchants (marketplaces and shops) parcels are spread over.
    pub merchants: Vec<MerchantSetup>,
    /// JWTs of driver users; parcels are spread over them (each has its own OTP rate limit).
    pub drivers: Vec<String>,
}

impl Setup {
    /// Reads and checks a setup file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::new(format!("cannot read {}: {e}", path.display())))?;
        let setup: Setup = serde_json::from_str(&text).map_err(|e| {
            Error::new(format!("{} is not a valid setup file: {e}", path.display()))
        })?;
        setup.validate()?;
        Ok(setup)
    }

    /// Checks the counts.
    pub fn validate(&self) -> Result<()> {
        if self.merchants.is_empty() || self.merchants.len() > MAX_PARTICIPANTS {
            return Err(Error::new(format!(
                "the setup needs 1 to {MAX_PARTICIPANTS} merchants, has {}",
                self.merchants.len()
            )));
        }
        if self.drivers.is_empty() || self.drivers.len() > MAX_PARTICIPANTS {
            return Err(Error::new(format!(
                "the setup needs 1 to {MAX_PARTICIPANTS} drivers, has {}",
                self.drivers.len()
            )));
        }
        Ok(())
    }
}

/// A merchant ready for the replay.
#[derive(Debug, Clone)]
pub struct Merchant {
    /// Engine merchant id.
    pub id: String,
    /// Last-mile JWT.
    pub token: String,
    /// Shopify webhook secret, when Shopify orders are in the mix.
    pub shopify_secret: Option<String>,
    /// WooCommerce webhook secret, when WooCommerce orders are in the mix.
    pub woocommerce_secret: Option<String>,
}

/// Where a channel's callbacks go on the engine.
pub fn notify_path(channel: &str) -> String {
    match channel {
        "stripe" => "/api/payments/webhook".to_string(),
        "multisafepay" => "/api/webhooks/multisafepay".to_string(),
        other => format!("/callbacks/{other}"),
    }
}

fn fresh_secret(salt: u64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!(
        "{:016x}{:016x}",
        draw(nanos, salt),
        draw(nanos ^ u64::from(std::process::id()), salt + 1)
    )
}

/// Wires every merchant of `setup` for a run over `channels` and `sources`.
pub async fn prepare(
    api: &Api,
    sink: &Sink,
    setup: &Setup,
    channels: &BTreeSet<String>,
    sources: &BTreeSet<Source>,
) -> Result<Vec<Merchant>> {
    let mut credentials = Vec::new();
    for channel in channels {
        let r = api
            .expect(
                &format!("simulator credentials for {channel}"),
                api.sim(Method::GET, &format!("/_sim/credentials/{channel}")),
                &[StatusCode::OK],
            )
            .await?;
        credentials.push((channel.clone(), r.body));
    }
    if channels.contains("stripe") {
        // Stripe has no per-payment notify URL: its events go to the account's endpoint.
        api.expect(
            "simulator Stripe endpoint",
            api.sim(Method::POST, "/_sim/webhook-endpoints")
                .json(&json!({
                    "channel": "stripe",
                    "url": format!("{}{}", api.engine_url(), notify_path("stripe")),
                })),
            &[StatusCode::NO_CONTENT, StatusCode::OK],
        )
        .await?;
    }

    let mut out = Vec::with_capacity(setup.merchants.len());
    for (i, m) in setup.merchants.iter().enumerate() {
        for (channel, creds) in &credentials {
            api.expect(
                &format!("configure {channel} for {}", m.merchant_id),
                api.engine(Method::POST, "/v1/channels")
                    .bearer_auth(&m.secret_key)
                    .json(&json!({
                        "channel": channel,
                        "credentials": creds,
                        "notify_url": format!("{}{}", api.engine_url(), notify_path(channel)),
                    })),
                &[StatusCode::CREATED, StatusCode::OK],
            )
            .await?;
        }
        remove_stale_endpoints(api, &m.secret_key).await?;
        let url = sink.url(i);
        let r = api
            .expect(
                &format!("webhook endpoint for {}", m.merchant_id),
                api.engine(Method::POST, "/v1/webhook-endpoints")
                    .bearer_auth(&m.secret_key)
                    .json(&json!({"url": url, "description": "ipay-loadtest replay sink"})),
                &[StatusCode::CREATED],
            )
            .await?;
        let secret = r.body["secret"]
            .as_str()
            .ok_or_else(|| Error::new("the webhook endpoint answer has no secret"))?;
        sink.set_secret(i, secret.to_string());

        let mut merchant = Merchant {
            id: m.merchant_id.clone(),
            token: m.token.clone(),
            shopify_secret: None,
            woocommerce_secret: None,
        };
        for (source, slot) in [
            (Source::Shopify, &mut merchant.shopify_secret),
            (Source::Woocommerce, &mut merchant.woocommerce_secret),
        ] {
            if !sources.contains(&source) {
                continue;
            }
            let secret = fresh_secret(i as u64 * 8 + source as u64);
            api.expect(
                &format!("connect {source} for {}", m.merchant_id),
                api.engine(Method::POST, &format!("/api/integrations/{source}/connect"))
                    .bearer_auth(&m.token)
                    .json(&json!({
                        "secret": secret,
                        "shop_domain": format!("replay-{i}.{source}.example.test"),
                        "default_currency": "EUR",
                    })),
                &[StatusCode::OK, StatusCode::CREATED],
            )
            .await?;
            *slot = Some(secret);
        }
        out.push(merchant);
    }
    Ok(out)
}

/// Deletes sink endpoints left by earlier replays (loopback `/hook/` URLs): their sinks are
/// gone, and every event would otherwise wait in their retry schedule.
async fn remove_stale_endpoints(api: &Api, key: &str) -> Result<()> {
    let r = api
        .expect(
            "list webhook endpoints",
            api.engine(Method::GET, "/v1/webhook-endpoints?limit=100")
                .bearer_auth(key),
            &[StatusCode::OK],
        )
        .await?;
    let stale: Vec<String> = r.body["data"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| {
                    let url = e["url"].as_str().unwrap_or_default();
                    url.starts_with("http://127.0.0.1:") && url.contains("/hook/")
                })
                .filter_map(|e| {
                    e["id"]
                        .as_str()
                        .filter(|id| id.starts_with("we_"))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    for id in stale {
        api.expect(
            "delete a stale webhook endpoint",
            api.engine(Method::DELETE, &format!("/v1/webhook-endpoints/{id}"))
                .bearer_auth(key),
            &[StatusCode::OK, StatusCode::NO_CONTENT],
        )
        .await?;
    }
    Ok(())
}
