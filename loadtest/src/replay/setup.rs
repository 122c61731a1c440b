//! Who takes part in a replay and how they are wired before the first parcel: the merchants
//! (last-mile JWT plus a test-mode secret key of the same engine merchant) and drivers from the
//! setup file, each merchant's channels configured with the simulator's credentials, a webhook
//! endpoint pointing at the load tool's sink, and Shopify/WooCommerce connections with secrets
//! the tool signs with. Everything goes over the public HTTP API. Without a setup file the
//! accounts are created first ([`provision`]), also over HTTP: merchant users register
//! themselves and mint their secret key on the dashboard, as a merchant would; drivers are
//! registered with the operator's admin token.

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

/// Where a run's accounts come from.
#[derive(Debug, Clone)]
pub enum SetupSource {
    /// Named by a setup file (already read).
    File(Setup),
    /// Created over HTTP before the run.
    Provision(Provisioning),
}

/// What [`provision`] creates.
#[derive(Debug, Clone)]
pub struct Provisioning {
    /// Merchant accounts.
    pub merchants: usize,
    /// Driver accounts.
    pub drivers: usize,
    /// The engine's admin token (`admin.token`), needed to register drivers.
    pub admin_token: String,
    /// Where to save the created setup (so a later run can reuse the accounts).
    pub save_to: Option<std::path::PathBuf>,
}

/// Fixed CSRF token of the provisioning's dashboard form posts: the pages check that the
/// form field equals the cookie (double submit), so any well-formed value of ours works.
const CSRF_TOKEN: &str = "replayreplayreplayreplayreplayreplayreplay1";

/// Password of the accounts the replay creates (loopback test accounts only).
const PASSWORD: &str = "replay-load-test-password";

/// Creates `p.merchants` merchant users (each with a test-mode secret key minted on the
/// dashboard) and `p.drivers` drivers over HTTP, and saves the setup when asked.
pub async fn provision(api: &Api, p: &Provisioning, tag: &str) -> Result<Setup> {
    if p.merchants == 0 || p.merchants > MAX_PARTICIPANTS {
        return Err(Error::new(format!(
            "provision 1 to {MAX_PARTICIPANTS} merchants"
        )));
    }
    if p.drivers == 0 || p.drivers > MAX_PARTICIPANTS {
        return Err(Error::new(format!(
            "provision 1 to {MAX_PARTICIPANTS} drivers"
        )));
    }
    let mut setup = Setup {
        merchants: Vec::with_capacity(p.merchants),
        drivers: Vec::with_capacity(p.drivers),
    };
    for i in 0..p.merchants {
        let body = json!({
            "email": format!("shop{i}.{tag}@replay.example.test"),
            "password": PASSWORD,
            "name": format!("Replay Shop {i}"),
            "role": "merchant",
            "company_name": format!("Replay Marketplace {i} ({tag})"),
        });
        let r = api
            .expect(
                "register a merchant user",
                api.engine(Method::POST, "/api/auth/register").json(&body),
                &[StatusCode::CREATED],
            )
            .await?;
        let token = json_str(&r.body["token"], "token")?;
        let merchant_id = json_str(&r.body["user"]["merchant_id"], "user.merchant_id")?;
        let secret_key = mint_key(api, &token).await?;
        setup.merchants.push(MerchantSetup {
            merchant_id,
            token,
            secret_key,
        });
    }
    for i in 0..p.drivers {
        let body = json!({
            "email": format!("driver{i}.{tag}@replay.example.test"),
            "password": PASSWORD,
            "name": format!("Replay Driver {i}"),
            "role": "driver",
        });
        let r = api
            .expect(
                "register a driver (admin token)",
                api.engine(Method::POST, "/api/auth/register")
                    .bearer_auth(&p.admin_token)
                    .json(&body),
                &[StatusCode::CREATED],
            )
            .await?;
        setup.drivers.push(json_str(&r.body["token"], "token")?);
    }
    if let Some(path) = &p.save_to {
        let text = serde_json::to_string_pretty(&setup)
            .map_err(|e| Error::new(format!("cannot encode the setup: {e}")))?;
        std::fs::write(path, text)
            .map_err(|e| Error::new(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(setup)
}

fn json_str(v: &serde_json::Value, what: &str) -> Result<String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| Error::new(format!("the registration answer has no `{what}`")))
}

/// Creates a secret key for the merchant user with JWT `token` through the dashboard's
/// new-key form (the only place a last-mile merchant gets one) and reads it off the page.
async fn mint_key(api: &Api, token: &str) -> Result<String> {
    let rb = api
        .engine(Method::POST, "/dashboard/keys")
        .header(
            reqwest::header::COOKIE,
            format!("ipay_session=j.{token}; ipay_csrf={CSRF_TOKEN}"),
        )
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(format!("csrf={CSRF_TOKEN}&label=ipay-loadtest+replay"));
    let resp = rb
        .send()
        .await
        .map_err(|e| Error::new(format!("dashboard new key: transport: {e}")))?;
    let status = resp.status();
    let page = resp
        .text()
        .await
        .map_err(|e| Error::new(format!("dashboard new key: reading the page: {e}")))?;
    secret_on_page(&page).ok_or_else(|| {
        Error::new(format!(
            "dashboard new key: HTTP {status}, no new secret on the page"
        ))
    })
}

/// The secret shown once on the dashboard after creating a key.
fn secret_on_page(page: &str) -> Option<String> {
    let start = page.find("id=\"new-secret\">")? + "id=\"new-secret\">".len();
    let rest = &page[start..];
    let secret = &rest[..rest.find('<')?];
    secret.starts_with("sk_").then(|| secret.to_string())
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
                        "notify_url": format!("{}{}", api.engine_url_for(i), notify_path(channel)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_new_secret_is_read_off_the_dashboard_page() {
        let page = r#"<p class="card">New secret (shown once): <code id="new-secret">sk_test_abc123</code></p>"#;
        assert_eq!(secret_on_page(page).as_deref(), Some("sk_test_abc123"));
        assert_eq!(secret_on_page("<p>no key here</p>"), None);
        assert_eq!(secret_on_page(r#"<code id="new-secret">oops</code>"#), None);
    }

    #[test]
    fn the_csrf_token_has_the_shape_the_pages_accept() {
        // 43 characters of URL-safe base64, like 32 random bytes.
        assert_eq!(CSRF_TOKEN.len(), 43);
        assert!(CSRF_TOKEN.bytes().all(|c| c.is_ascii_alphanumeric()));
    }
}
