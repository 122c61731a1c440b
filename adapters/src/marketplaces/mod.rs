//! Marketplaces IPAY pulls orders from: [`bol`] (bol.com Retailer API v10, OAuth2 client
//! credentials), [`aliexpress`] (AliExpress open platform, HMAC-SHA256 request signing) and
//! [`temu`] (Temu open platform, MD5 request signing). Each module holds the platform's request
//! signing, its calls and the mapping of its order JSON onto a [`MarketOrder`].
//!
//! This module owns the platform list ([`Marketplace`]), the credentials, the mapped order and
//! the one client ([`MarketClient`]) that dispatches to the platform modules. It does not store
//! anything, schedule anything or decide what an order becomes: the last-mile crate
//! (`ipay_lastmile::sync`) validates, de-duplicates and stores. Base URLs come from operator
//! configuration ([`MarketUrls`]), never from merchants, so tests point them at the simulator
//! (`crate::marketsim`).

pub mod aliexpress;
pub mod bol;
pub mod temu;

use crate::http::{HttpClient, HttpTimeouts, PspResponse};
use ipay_engine::model::merchant::Secret;
use serde::{Deserialize, Serialize};

/// Most orders one sync pulls ("pull recent orders, limit 50").
pub const SYNC_LIMIT: usize = 50;
/// Orders asked for per page.
pub const PAGE_SIZE: usize = 50;
/// Most pages one sync reads before stopping (a platform that never ends its list).
pub const MAX_PAGES: u32 = 20;

/// A marketplace that IPAY pulls orders from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Marketplace {
    /// bol.com (Retailer API v10).
    Bol,
    /// AliExpress (open platform, IOP).
    Aliexpress,
    /// Temu (open platform, EU region).
    Temu,
}

impl Marketplace {
    /// Every marketplace, in status order.
    pub const ALL: &'static [Marketplace] =
        &[Marketplace::Bol, Marketplace::Aliexpress, Marketplace::Temu];

    /// The provider name in URLs and the order `source` (`bol`, `aliexpress`, `temu`).
    pub fn as_str(self) -> &'static str {
        match self {
            Marketplace::Bol => "bol",
            Marketplace::Aliexpress => "aliexpress",
            Marketplace::Temu => "temu",
        }
    }

    /// The marketplace named `name` (case-insensitive; `bol.com` and `bolcom` name bol).
    pub fn parse(name: &str) -> Option<Marketplace> {
        match name.trim().to_ascii_lowercase().as_str() {
            "bol" | "bol.com" | "bolcom" => Some(Marketplace::Bol),
            "aliexpress" => Some(Marketplace::Aliexpress),
            "temu" => Some(Marketplace::Temu),
            _ => None,
        }
    }

    /// The credential fields a merchant gives at connect, in the platform's own words.
    pub fn required_fields(self) -> &'static [&'static str] {
        match self {
            Marketplace::Bol => &["client_id", "client_secret"],
            Marketplace::Aliexpress | Marketplace::Temu => {
                &["app_key", "app_secret", "access_token"]
            }
        }
    }

    /// How requests to the platform are authenticated, for humans.
    pub fn signing(self) -> &'static str {
        match self {
            Marketplace::Bol => {
                "OAuth2 client credentials: POST /token with HTTP Basic client_id:client_secret, \
                 then Authorization: Bearer <access_token>"
            }
            Marketplace::Aliexpress => {
                "sign = upper(hex(HMAC-SHA256(app_secret, [api_path] + sorted key+value \
                 pairs))), sign_method=sha256"
            }
            Marketplace::Temu => {
                "sign = upper(hex(MD5(app_secret + sorted key+value pairs + app_secret)))"
            }
        }
    }
}

/// A merchant's credentials for one marketplace. For bol.com `key` is the client id and
/// `secret` the client secret; for AliExpress and Temu `key` is the app key, `secret` the app
/// secret and `access_token` the seller's authorisation of the app.
#[derive(Clone, Serialize, Deserialize)]
pub struct Credentials {
    /// Client id or app key.
    pub key: String,
    /// Client secret or app secret.
    pub secret: Secret,
    /// The seller's access token (AliExpress, Temu).
    #[serde(default)]
    pub access_token: Option<Secret>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The access token, or "" when none was given (the platform then refuses the call).
    pub fn token(&self) -> &str {
        self.access_token.as_ref().map_or("", |t| t.expose())
    }
}

/// One order line, unit price in minor units of the order's currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketItem {
    pub sku: String,
    pub name: String,
    pub qty: u32,
    pub unit_price: i64,
}

/// A marketplace order as the platform describes it. Mapping copies what it finds (empty when
/// absent); the last-mile order validation names what is missing or wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketOrder {
    /// The platform's order id: the import key (one order per id, whatever repeats).
    pub id: String,
    /// When the order was placed, ms since the epoch (the sync cursor follows it).
    pub placed_at_ms: i64,
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    pub country: String,
    pub items: Vec<MarketItem>,
    /// Total in minor units of `currency`.
    pub amount: i64,
    pub currency: String,
    /// The carrier the platform names, if any.
    pub carrier: Option<String>,
}

/// A page of orders placed at or after the asked time, oldest first.
#[derive(Debug, Clone, Default)]
pub struct OrderPage {
    pub orders: Vec<MarketOrder>,
    /// Whether the platform has more pages.
    pub more: bool,
}

/// Why a platform call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarketError {
    /// The platform refused the credentials (bad key, secret, token or signature).
    #[error("{0}")]
    Refused(String),
    /// The platform could not be reached, failed (5xx) or answered something unreadable:
    /// worth retrying later.
    #[error("{0}")]
    Unavailable(String),
}

/// Where each platform's API lives (`[lastmile.sync]` in configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MarketUrls {
    /// bol.com's token endpoint (POST).
    pub bol_token_url: String,
    /// bol.com's API base (`/retailer/...` is appended).
    pub bol_api_url: String,
    /// AliExpress's system-API gateway (`/sync`).
    pub aliexpress_url: String,
    /// Temu's router (`/openapi/router`).
    pub temu_url: String,
}

impl Default for MarketUrls {
    fn default() -> Self {
        MarketUrls {
            bol_token_url: "https://login.bol.com/token".into(),
            bol_api_url: "https://api.bol.com".into(),
            aliexpress_url: "https://api-sg.aliexpress.com/sync".into(),
            temu_url: "https://openapi-b-eu.temu.com/openapi/router".into(),
        }
    }
}

/// The client of every marketplace. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MarketClient {
    http: HttpClient,
    urls: MarketUrls,
}

impl MarketClient {
    /// A client for these endpoints with these timeouts.
    pub fn new(urls: MarketUrls, timeouts: HttpTimeouts) -> Result<MarketClient, String> {
        Ok(MarketClient {
            http: HttpClient::new(timeouts)?,
            urls,
        })
    }

    /// Checks credentials with the cheapest authenticated call the platform has (bol.com: a
    /// token; the others: a one-order page).
    pub async fn verify(
        &self,
        m: Marketplace,
        creds: &Credentials,
        now_ms: i64,
    ) -> Result<(), MarketError> {
        match m {
            Marketplace::Bol => bol::token(self, creds).await.map(|_| ()),
            Marketplace::Aliexpress => aliexpress::page(self, creds, now_ms, 0, 1, 1)
                .await
                .map(|_| ()),
            Marketplace::Temu => temu::page(self, creds, now_ms, 0, 1, 1).await.map(|_| ()),
        }
    }

    /// Orders placed at or after `since_ms`, oldest first, at most `limit` (≤ [`SYNC_LIMIT`]).
    pub async fn recent_orders(
        &self,
        m: Marketplace,
        creds: &Credentials,
        since_ms: i64,
        limit: usize,
        now_ms: i64,
    ) -> Result<Vec<MarketOrder>, MarketError> {
        let limit = limit.clamp(1, SYNC_LIMIT);
        if m == Marketplace::Bol {
            return bol::recent_orders(self, creds, since_ms, limit).await;
        }
        let mut out = Vec::new();
        for page_no in 1..=MAX_PAGES {
            let page = match m {
                Marketplace::Aliexpress => {
                    aliexpress::page(self, creds, now_ms, since_ms, page_no, PAGE_SIZE).await?
                }
                _ => temu::page(self, creds, now_ms, since_ms, page_no, PAGE_SIZE).await?,
            };
            out.extend(page.orders);
            if out.len() >= limit || !page.more {
                break;
            }
        }
        out.sort_by(|a, b| (a.placed_at_ms, &a.id).cmp(&(b.placed_at_ms, &b.id)));
        out.truncate(limit);
        Ok(out)
    }

    pub(crate) fn urls(&self) -> &MarketUrls {
        &self.urls
    }

    pub(crate) fn http(&self) -> &HttpClient {
        &self.http
    }
}

/// A transport failure as a [`MarketError`] (the HTTP client's texts carry no secrets).
pub(crate) fn transport(platform: &str, e: ipay_engine::channel::ChannelError) -> MarketError {
    MarketError::Unavailable(format!("{platform}: {e}"))
}

/// The answer's body as JSON, or `Unavailable` for 5xx and unreadable answers.
pub(crate) fn json_body(platform: &str, r: &PspResponse) -> Result<serde_json::Value, MarketError> {
    if r.status >= 500 {
        return Err(MarketError::Unavailable(format!(
            "{platform} answered HTTP {}",
            r.status
        )));
    }
    serde_json::from_slice(&r.body).map_err(|_| {
        MarketError::Unavailable(format!(
            "{platform} answered HTTP {} with a body that is not JSON",
            r.status
        ))
    })
}

/// Text of a JSON field, or "".
pub(crate) fn text(v: &serde_json::Value, pointer: &str) -> String {
    match v.pointer(pointer) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// An optional text field (absent or empty → `None`).
pub(crate) fn opt_text(v: &serde_json::Value, pointer: &str) -> Option<String> {
    Some(text(v, pointer)).filter(|s| !s.is_empty())
}

/// A decimal amount in major units (JSON string or number) in minor units; 0 when absent or
/// unreadable, which the order validation then reports.
pub(crate) fn minor(v: &serde_json::Value, pointer: &str, currency: &str) -> i64 {
    let exp = ipay_engine::money::Currency::parse(currency)
        .map(|c| c.exponent())
        .unwrap_or(2);
    crate::shops::parse_major(&text(v, pointer), exp).unwrap_or(0)
}

/// Sorted `key value` concatenation shared by the AliExpress and Temu schemes.
pub(crate) fn sorted_concat(params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().filter(|(k, _)| k != "sign").collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut s = String::new();
    for (k, v) in sorted {
        s.push_str(k);
        s.push_str(v);
    }
    s
}
