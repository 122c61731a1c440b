//! One parcel from order to doorstep, through the real protocols: the order (API create, a
//! signed shop webhook or a row of a bulk CSV upload), the payment session and its 18-digit
//! reference, the consumer's payment at the simulated PSP (which sends its real signed
//! callback), and for paid parcels the driver's OTP check that delivers it. Each step's answer
//! is checked; the first unexpected one ends the lifecycle as lost, with the reason. Webhooks
//! are observed by the sink, not here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::client::Api;
use super::mix::{Outcome, Source};
use super::setup::{Merchant, notify_path};
use super::stats::{Stage, Stats};
use crate::error::{Error, Result};

/// How long a lifecycle keeps reading its session while waiting for a state the engine has
/// already been told about (the session settles from its intent on read).
const SETTLE_WAIT: Duration = Duration::from_secs(10);

/// Re-sends of an unacknowledged PSP callback (a real PSP retries for hours; a replay only
/// needs to ride out load shedding).
const PSP_RESENDS: u32 = 5;

/// Payer countries (ISO 3166-1 alpha-2) of the EU parcels.
const COUNTRIES: [&str; 8] = ["NL", "DE", "FR", "BE", "ES", "IT", "PL", "AT"];
/// Carriers, as their shop shipping lines name them.
const CARRIERS: [&str; 5] = [
    "PostNL Standaard",
    "DHL Parcel",
    "GLS",
    "DPD Classic",
    "bpost",
];

/// What one parcel is.
#[derive(Debug, Clone)]
pub struct Parcel {
    /// Sequence number in the run.
    pub seq: u64,
    /// Intended arrival, offset from the start of the run.
    pub at: Duration,
    /// Index of the merchant.
    pub merchant: usize,
    /// Index of the driver.
    pub driver: usize,
    /// Where the order comes from.
    pub source: Source,
    /// The payer's channel.
    pub channel: String,
    /// How it is meant to end.
    pub outcome: Outcome,
    /// Amount in euro cents.
    pub amount: i64,
}

impl Parcel {
    fn country(&self) -> &'static str {
        COUNTRIES[(self.seq % COUNTRIES.len() as u64) as usize]
    }

    fn carrier(&self) -> &'static str {
        CARRIERS[((self.seq / 7) % CARRIERS.len() as u64) as usize]
    }

    fn carrier_code(&self) -> String {
        self.carrier()
            .split_whitespace()
            .next()
            .unwrap_or("POST")
            .to_ascii_uppercase()
    }

    fn name(&self) -> String {
        format!("Replay Customer {}", self.seq)
    }
}

/// How a lifecycle ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Paid and delivered.
    Delivered,
    /// Ended in the known non-delivered state its outcome calls for.
    Known,
    /// An unexpected answer at `stage`.
    Lost {
        /// Where it stopped.
        stage: &'static str,
        /// What was answered.
        reason: String,
    },
}

/// What the accounting needs to know about one lifecycle.
#[derive(Debug, Clone)]
pub struct Record {
    /// The parcel.
    pub parcel: Parcel,
    /// Its order id, once known.
    pub order_id: Option<String>,
    /// Its payment intent, once started.
    pub intent_id: Option<String>,
    /// When the PSP callback was triggered (payment outcomes only).
    pub callback_sent: Option<Instant>,
    /// How it ended.
    pub end: End,
}

/// Everything a lifecycle needs; shared by all of them.
#[derive(Debug)]
pub struct Ctx {
    /// The HTTP client.
    pub api: Api,
    /// Measurements.
    pub stats: Arc<Stats>,
    /// The merchants.
    pub merchants: Vec<Merchant>,
    /// Driver JWTs.
    pub drivers: Vec<String>,
    /// The start of the run (intended arrivals are offsets from it).
    pub start: Instant,
    /// Per-merchant CSV batchers.
    pub csv: Vec<mpsc::Sender<CsvRow>>,
    /// A run-unique base for shop order ids (shops number their orders themselves).
    pub shop_id_base: u64,
    /// A run-unique prefix for external ids.
    pub run_tag: String,
}

impl Ctx {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

/// Drives one parcel; never fails, the outcome is in the record.
pub async fn run(ctx: Arc<Ctx>, parcel: Parcel) -> Record {
    let mut rec = Record {
        parcel,
        order_id: None,
        intent_id: None,
        callback_sent: None,
        end: End::Known,
    };
    let intended = ctx.start + rec.parcel.at;
    ctx.stats.started(rec.parcel.at);
    match drive(&ctx, &mut rec, intended).await {
        Ok(end) => rec.end = end,
        Err((stage, e)) => {
            rec.end = End::Lost {
                stage,
                reason: e.message().to_string(),
            }
        }
    }
    let now = ctx.now();
    match rec.end {
        End::Delivered => ctx.stats.completed(now, intended.elapsed()),
        End::Known => ctx.stats.ended_known(now),
        End::Lost { .. } => ctx.stats.lost(now),
    }
    rec
}

type StepResult<T> = std::result::Result<T, (&'static str, Error)>;

fn at<T>(stage: &'static str, r: Result<T>) -> StepResult<T> {
    r.map_err(|e| (stage, e))
}

async fn drive(ctx: &Ctx, rec: &mut Record, intended: Instant) -> StepResult<End> {
    let p = rec.parcel.clone();
    let merchant = &ctx.merchants[p.merchant];
    let api = &ctx.api;

    // 1. The order.
    let order_id = at("order", create_order(ctx, &p).await)?;
    ctx.stats.stage(Stage::OrderAccepted, intended.elapsed());
    rec.order_id = Some(order_id.clone());

    // 2. The payment session and its reference.
    let t = Instant::now();
    let s = at(
        "session",
        api.expect(
            "create session",
            api.engine(
                Method::POST,
                &format!("/api/orders/{order_id}/create-session"),
            )
            .bearer_auth(&merchant.token),
            &[StatusCode::CREATED],
        )
        .await,
    )?;
    ctx.stats.stage(Stage::SessionCreated, t.elapsed());
    let session_id = str_field(&s.body, "id").map_err(|e| ("session", e))?;
    let reference = str_field(&s.body, "ipay_reference_18").map_err(|e| ("session", e))?;
    at("session", check_reference(&reference))?;
    let pay_url = str_field(&s.body, "pay_url").map_err(|e| ("session", e))?;
    let token = pay_url
        .rsplit_once("/pay/")
        .map(|(_, t)| t.to_string())
        .ok_or_else(|| {
            (
                "session",
                Error::new(format!("pay_url `{pay_url}` has no /pay/ token")),
            )
        })?;

    if p.outcome == Outcome::Refused {
        // Out for delivery; the consumer refuses at the door and never pays.
        for status in ["PICKED_UP", "IN_DELIVERY"] {
            at(
                "parcel",
                parcel_status(ctx, merchant, &session_id, status).await,
            )?;
        }
        return Ok(End::Known);
    }

    // 3. The consumer starts paying on the pay page.
    let t = Instant::now();
    let started = at(
        "start_payment",
        api.expect(
            "start payment",
            api.engine(Method::POST, &format!("/api/session/{token}/start-payment"))
                .json(&json!({"channel": p.channel})),
            &[StatusCode::OK, StatusCode::CREATED],
        )
        .await,
    )?;
    ctx.stats.stage(Stage::PaymentStarted, t.elapsed());
    let detail = at(
        "start_payment",
        api.expect(
            "session detail",
            api.engine(Method::GET, &format!("/api/payment-sessions/{session_id}"))
                .bearer_auth(&merchant.token),
            &[StatusCode::OK],
        )
        .await,
    )?;
    let intent = str_field(&detail.body, "payment_intent").map_err(|e| ("start_payment", e))?;
    rec.intent_id = Some(intent.clone());
    if p.channel == "promptpay" {
        let qr = started.body["payment"]["qr_code"]
            .as_str()
            .unwrap_or_default();
        at(
            "start_payment",
            api.expect(
                "promptpay scan",
                api.sim(Method::POST, "/_sim/promptpay/scan").json(&json!({
                    "intent_id": intent,
                    "qr_code": qr,
                    "notify_url": format!("{}{}", api.engine_url_for(p.merchant), notify_path("promptpay")),
                })),
                &[StatusCode::CREATED],
            )
            .await,
        )?;
    }

    // 4. The PSP settles and sends its signed callback to the engine.
    let action = match p.outcome {
        Outcome::Paid => "pay",
        Outcome::Failed => "fail",
        _ => "expire",
    };
    let cb = Instant::now();
    rec.callback_sent = Some(cb);
    let delivered = at(
        "callback",
        api.expect(
            "simulator settle",
            api.sim(Method::POST, &format!("/_sim/orders/{intent}/{action}")),
            &[StatusCode::OK],
        )
        .await,
    )?;
    let mut ack = delivered.body["status"].as_u64().unwrap_or(0);
    // A PSP re-sends a notification the merchant did not acknowledge (an engine shedding load
    // answers 503); the simulator does not on its own, so the payer's PSP side does it here,
    // byte for byte, with the same notification id.
    let mut resent = 0;
    while !(200..300).contains(&ack) && resent < PSP_RESENDS {
        api.counts()
            .callback_refused(u16::try_from(ack).unwrap_or(0));
        resent += 1;
        tokio::time::sleep(Duration::from_millis(500) * resent).await;
        let again = at(
            "callback",
            api.expect(
                "simulator re-send",
                api.sim(Method::POST, &format!("/_sim/orders/{intent}/duplicate")),
                &[StatusCode::OK],
            )
            .await,
        )?;
        ack = again.body["status"].as_u64().unwrap_or(0);
    }
    if !(200..300).contains(&ack) {
        return Err((
            "callback",
            Error::new(format!(
                "the engine did not acknowledge the {} callback after {resent} re-sends: {}",
                p.channel,
                delivered.describe()
            )),
        ));
    }

    // 5. The session follows its intent.
    let want = if p.outcome == Outcome::Paid {
        "PAID"
    } else {
        "CREATED"
    };
    let view = at("settle", wait_session(ctx, &token, want).await)?;
    if p.outcome != Outcome::Paid {
        return Ok(End::Known);
    }
    ctx.stats.stage(Stage::PaidAfterCallback, cb.elapsed());
    let otp = view["otp"]
        .as_str()
        .ok_or_else(|| {
            (
                "settle",
                Error::new("a PAID session shows no OTP to the consumer"),
            )
        })?
        .to_string();

    // 6. Picked up, and released at the door with the OTP.
    at(
        "parcel",
        parcel_status(ctx, merchant, &session_id, "PICKED_UP").await,
    )?;
    let t = Instant::now();
    let driver = &ctx.drivers[p.driver];
    let v = at(
        "otp",
        api.expect(
            "verify OTP",
            api.engine(Method::POST, "/api/driver/verify-otp")
                .bearer_auth(driver)
                .json(&json!({"ipay_reference_18": reference, "otp_4": otp})),
            &[StatusCode::OK],
        )
        .await,
    )?;
    ctx.stats.stage(Stage::OtpVerified, t.elapsed());
    if v.body["released"] != true {
        return Err((
            "otp",
            Error::new(format!("verified but not released: {}", v.describe())),
        ));
    }
    let parcel = v.body["session"]["parcel_status"]
        .as_str()
        .unwrap_or_default();
    if parcel != "DELIVERED" {
        return Err((
            "otp",
            Error::new(format!("verified, but the parcel is `{parcel}`")),
        ));
    }
    Ok(End::Delivered)
}

fn str_field(v: &Value, name: &str) -> Result<String> {
    v[name].as_str().map(str::to_string).ok_or_else(|| {
        Error::new(format!(
            "the answer has no `{name}`: {}",
            v.to_string().chars().take(200).collect::<String>()
        ))
    })
}

/// An IPAY reference: 18 digits, the first non-zero, ISO 7064 MOD 97-10 (`N mod 97 = 1`).
pub fn check_reference(r: &str) -> Result<()> {
    let ok = r.len() == 18
        && r.bytes().all(|b| b.is_ascii_digit())
        && !r.starts_with('0')
        && r.parse::<u128>().is_ok_and(|n| n % 97 == 1);
    if ok {
        Ok(())
    } else {
        Err(Error::new(format!(
            "`{r}` is not a valid 18-digit IPAY reference"
        )))
    }
}

async fn parcel_status(ctx: &Ctx, m: &Merchant, session: &str, status: &str) -> Result<()> {
    ctx.api
        .expect(
            &format!("parcel {status}"),
            ctx.api
                .engine(
                    Method::POST,
                    &format!("/api/payment-sessions/{session}/parcel-status"),
                )
                .bearer_auth(&m.token)
                .json(&json!({"status": status})),
            &[StatusCode::OK],
        )
        .await
        .map(|_| ())
}

/// Reads the consumer view until the session is `want` (it settles from its intent on read).
async fn wait_session(ctx: &Ctx, token: &str, want: &str) -> Result<Value> {
    let deadline = Instant::now() + SETTLE_WAIT;
    let mut pause = Duration::from_millis(5);
    loop {
        let r = ctx
            .api
            .expect(
                "consumer view",
                ctx.api
                    .engine(Method::GET, &format!("/api/session/{token}")),
                &[StatusCode::OK],
            )
            .await?;
        let status = r.body["status"].as_str().unwrap_or_default();
        if status == want {
            return Ok(r.body);
        }
        if Instant::now() >= deadline {
            return Err(Error::new(format!(
                "the session stayed {status} for {SETTLE_WAIT:?} after the callback (want {want})"
            )));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

fn major(amount: i64) -> String {
    format!("{}.{:02}", amount / 100, amount % 100)
}

fn external_id(ctx: &Ctx, p: &Parcel) -> String {
    format!("{}-{}", ctx.run_tag, p.seq)
}

async fn create_order(ctx: &Ctx, p: &Parcel) -> Result<String> {
    let m = &ctx.merchants[p.merchant];
    let api = &ctx.api;
    match p.source {
        Source::Api => {
            let body = json!({
                "external_id": external_id(ctx, p),
                "customer": {
                    "name": p.name(),
                    "email": format!("c{}@example.test", p.seq),
                    "address": {"line1": "Damrak 1", "city": "Amsterdam", "postal_code": "1012 LG", "country": p.country()},
                },
                "items": [{"sku": "SKU-1", "name": "Phone case", "qty": 1, "unit_price": p.amount}],
                "amount": {"value": p.amount, "currency": "EUR"},
                "carrier_code": p.carrier_code(),
            });
            let r = api
                .expect(
                    "create order",
                    api.engine(Method::POST, "/api/orders")
                        .bearer_auth(&m.token)
                        .json(&body),
                    &[StatusCode::CREATED],
                )
                .await?;
            str_field(&r.body, "id")
        }
        Source::Shopify | Source::Woocommerce => shop_webhook(ctx, m, p).await,
        Source::Csv => {
            let (tx, rx) = oneshot::channel();
            let row = CsvRow {
                external_id: external_id(ctx, p),
                parcel: p.clone(),
                reply: tx,
            };
            ctx.csv[p.merchant]
                .send(row)
                .await
                .map_err(|_| Error::new("the CSV batcher stopped"))?;
            rx.await
                .map_err(|_| Error::new("the CSV batcher dropped the row"))?
        }
    }
}

async fn shop_webhook(ctx: &Ctx, m: &Merchant, p: &Parcel) -> Result<String> {
    let shop_id = ctx.shop_id_base + p.seq;
    let (provider, secret, body, headers) = match p.source {
        Source::Shopify => (
            "shopify",
            m.shopify_secret.as_deref(),
            json!({
                "id": shop_id,
                "email": format!("c{}@example.test", p.seq),
                "currency": "EUR",
                "total_price": major(p.amount),
                "shipping_address": {"name": p.name(), "address1": "Damrak 1", "city": "Amsterdam", "zip": "1012 LG", "country_code": p.country()},
                "line_items": [{"sku": "SKU-1", "title": "Phone case", "quantity": 1, "price": major(p.amount)}],
                "shipping_lines": [{"title": p.carrier()}],
            }),
            [
                ("X-Shopify-Topic", "orders/create".to_string()),
                ("X-Shopify-Webhook-Id", format!("{}-{}", ctx.run_tag, p.seq)),
            ],
        ),
        _ => (
            "woocommerce",
            m.woocommerce_secret.as_deref(),
            json!({
                "id": shop_id,
                "currency": "EUR",
                "total": major(p.amount),
                "status": "processing",
                "billing": {"email": format!("c{}@example.test", p.seq)},
                "shipping": {"first_name": "Replay", "last_name": format!("Customer {}", p.seq), "address_1": "Damrak 1", "city": "Amsterdam", "postcode": "1012 LG", "country": p.country()},
                "line_items": [{"sku": "SKU-1", "name": "Phone case", "quantity": 1, "price": p.amount as f64 / 100.0}],
                "shipping_lines": [{"method_title": p.carrier()}],
            }),
            [
                ("X-WC-Webhook-Topic", "order.created".to_string()),
                (
                    "X-WC-Webhook-Delivery-ID",
                    format!("{}-{}", ctx.run_tag, p.seq),
                ),
            ],
        ),
    };
    let secret = secret.ok_or_else(|| Error::new(format!("{provider} is not connected")))?;
    let raw = serde_json::to_vec(&body).map_err(|e| Error::new(e.to_string()))?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|e| Error::new(e.to_string()))?;
    mac.update(&raw);
    let sig = STANDARD.encode(mac.finalize().into_bytes());
    let sig_header = if provider == "shopify" {
        "X-Shopify-Hmac-Sha256"
    } else {
        "X-WC-Webhook-Signature"
    };
    let mut rb = ctx
        .api
        .engine(
            Method::POST,
            &format!("/api/integrations/{provider}/webhook?account={}", m.id),
        )
        .header("content-type", "application/json")
        .header(sig_header, sig)
        .body(raw);
    for (k, v) in headers {
        rb = rb.header(k, v);
    }
    let r = ctx
        .api
        .expect(&format!("{provider} webhook"), rb, &[StatusCode::CREATED])
        .await?;
    str_field(&r.body, "order_id")
}

/// One row waiting for the next bulk upload of its merchant.
#[derive(Debug)]
pub struct CsvRow {
    external_id: String,
    parcel: Parcel,
    reply: oneshot::Sender<Result<String>>,
}

/// Settings of a merchant's CSV batcher.
#[derive(Debug, Clone, Copy)]
pub struct CsvBatching {
    /// Rows per upload at most.
    pub max_rows: usize,
    /// Longest a row waits for its upload.
    pub max_wait: Duration,
}

/// Collects rows into uploads of at most `max_rows`, sent at the latest `max_wait` after
/// their first row; answers each row with its order id, found by listing the merchant's CSV
/// orders (the upload report has counts, not ids).
pub async fn csv_batcher(
    api: Api,
    token: String,
    batching: CsvBatching,
    mut rx: mpsc::Receiver<CsvRow>,
) {
    while let Some(first) = rx.recv().await {
        let mut rows = vec![first];
        let deadline = Instant::now() + batching.max_wait;
        while rows.len() < batching.max_rows {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(r)) => rows.push(r),
                Ok(None) | Err(_) => break,
            }
        }
        let outcome = upload(&api, &token, &rows).await;
        match outcome {
            Ok(mut ids) => {
                for r in rows {
                    let id = ids.remove(&r.external_id).ok_or_else(|| {
                        Error::new(format!(
                            "uploaded row {} not found among the CSV orders",
                            r.external_id
                        ))
                    });
                    let _ = r.reply.send(id);
                }
            }
            Err(e) => {
                for r in rows {
                    let _ = r.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Pages of CSV orders examined to find one upload's rows, beyond one page per 100 rows.
const EXTRA_LIST_PAGES: usize = 5;

async fn upload(api: &Api, token: &str, rows: &[CsvRow]) -> Result<HashMap<String, String>> {
    let mut csv = String::from(
        "external_id,customer_name,email,address_line1,city,postal_code,country,amount_minor,currency,carrier_code\n",
    );
    for r in rows {
        let p = &r.parcel;
        csv.push_str(&format!(
            "{},{},c{}@example.test,Damrak 1,Amsterdam,1012 LG,{},{},EUR,{}\n",
            r.external_id,
            p.name(),
            p.seq,
            p.country(),
            p.amount,
            p.carrier_code()
        ));
    }
    let rep = api
        .expect(
            "bulk upload",
            api.engine(Method::POST, "/api/orders/upload?currency=EUR&format=csv")
                .bearer_auth(token)
                .header("content-type", "text/csv")
                .body(csv),
            &[StatusCode::OK],
        )
        .await?;
    let created = rep.body["created"].as_u64().unwrap_or(0);
    if created != rows.len() as u64 {
        return Err(Error::new(format!(
            "bulk upload created {created} of {} rows: {}",
            rows.len(),
            rep.describe()
        )));
    }
    let wanted: std::collections::HashSet<&str> =
        rows.iter().map(|r| r.external_id.as_str()).collect();
    let mut found = HashMap::new();
    let mut cursor: Option<String> = None;
    let pages = rows.len().div_ceil(100) + EXTRA_LIST_PAGES;
    for _ in 0..pages {
        let mut path = "/api/orders?source=csv&limit=100".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = api
            .expect(
                "list CSV orders",
                api.engine(Method::GET, &path).bearer_auth(token),
                &[StatusCode::OK],
            )
            .await?;
        for o in page.body["data"].as_array().into_iter().flatten() {
            if let (Some(ext), Some(id)) = (o["external_id"].as_str(), o["id"].as_str())
                && wanted.contains(ext)
            {
                found.insert(ext.to_string(), id.to_string());
            }
        }
        if found.len() == rows.len() {
            break;
        }
        cursor = page.body["pagination"]["next_cursor"]
            .as_str()
            .map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    Ok(found)
}

/// A shared list of finished lifecycles.
pub type Records = Arc<Mutex<Vec<Record>>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_checked_like_the_engine_makes_them() {
        // 16 payload digits, then 98 − (payload·100 mod 97).
        let payload: u128 = 1234_5678_9012_3456;
        let check = 98 - (payload * 100 % 97);
        let good = format!("{payload}{check:02}");
        assert!(check_reference(&good).is_ok());
        let mut swapped: Vec<u8> = good.clone().into_bytes();
        swapped.swap(3, 4);
        assert!(check_reference(&String::from_utf8(swapped).expect("ascii")).is_err());
        assert!(check_reference("012345678901234567").is_err());
        assert!(check_reference("12345").is_err());
    }
}
