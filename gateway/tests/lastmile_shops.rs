//! Shop-platform webhooks over real HTTP, with signatures computed by an independent signer
//! (`adapters/tests/fixtures/shops/sign.py`, Python's hmac/hashlib). The payloads are the shop
//! platforms' vectors, kept with their wire formats in the adapters crate.

mod common;

use common::{LastMileUser, TestServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SECRET: &str = "shop-secret-0123456789abcdef";

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../adapters/tests/fixtures/shops")
        .join(name)
}

/// The signature header value computed by the Python signer.
fn py_sign(scheme: &str, secret: &str, file: &str) -> String {
    let out = std::process::Command::new("python3")
        .arg(fixture("sign.py"))
        .args([scheme, secret])
        .arg(fixture(file))
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

struct Case {
    provider: &'static str,
    file: &'static str,
    /// Signer scheme and header; `None` header: the secret goes in `token=`.
    scheme: &'static str,
    sig_header: Option<&'static str>,
    extra: &'static [(&'static str, &'static str)],
    external_id: &'static str,
    amount: i64,
    country: &'static str,
    carrier: &'static str,
}

const CASES: &[Case] = &[
    Case {
        provider: "shopify",
        file: "shopify_orders_create.json",
        scheme: "b64",
        sig_header: Some("X-Shopify-Hmac-Sha256"),
        extra: &[
            ("X-Shopify-Topic", "orders/create"),
            (
                "X-Shopify-Webhook-Id",
                "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
            ),
            ("X-Shopify-Shop-Domain", "ipay-demo.myshopify.com"),
        ],
        external_id: "5678901234567",
        amount: 3490,
        country: "NL",
        carrier: "POSTNL",
    },
    Case {
        provider: "woocommerce",
        file: "woocommerce_order_created.json",
        scheme: "b64",
        sig_header: Some("X-WC-Webhook-Signature"),
        extra: &[
            ("X-WC-Webhook-Topic", "order.created"),
            ("X-WC-Webhook-Delivery-ID", "8f1c2d3e4b5a"),
            ("X-WC-Webhook-Source", "https://shop.example.be/"),
        ],
        external_id: "727",
        amount: 2750,
        country: "BE",
        carrier: "BPOST",
    },
    Case {
        provider: "shopware",
        file: "shopware_checkout_order_placed.json",
        scheme: "hex",
        sig_header: Some("shopware-shop-signature"),
        extra: &[],
        external_id: "10073",
        amount: 4999,
        country: "DE",
        carrier: "DHL",
    },
    Case {
        provider: "bigcommerce",
        file: "bigcommerce_order_created.json",
        scheme: "sha256",
        sig_header: Some("X-Hub-Signature"),
        extra: &[],
        external_id: "250",
        amount: 2495,
        country: "FR",
        carrier: "COLISSIMO",
    },
    Case {
        provider: "magento",
        file: "magento_sales_order_save_after.json",
        scheme: "sha256",
        sig_header: Some("X-IPAY-Signature"),
        extra: &[],
        external_id: "000003081",
        amount: 6400,
        country: "IT",
        carrier: "UPS",
    },
    Case {
        provider: "prestashop",
        file: "prestashop_action_validate_order.json",
        scheme: "sha256",
        sig_header: Some("X-IPAY-Signature"),
        extra: &[],
        external_id: "XKBKNABJK",
        amount: 1840,
        country: "ES",
        carrier: "SEUR",
    },
    Case {
        provider: "lightspeed",
        file: "lightspeed_orders_created.json",
        scheme: "md5",
        sig_header: Some("X-Signature"),
        extra: &[("X-Lightspeed-Shop", "123456")],
        external_id: "ORD00421",
        amount: 2995,
        country: "NL",
        carrier: "POSTNL",
    },
    Case {
        provider: "picqer",
        file: "picqer_orders_completed.json",
        scheme: "b64",
        sig_header: Some("X-Picqer-Signature"),
        extra: &[],
        external_id: "20250412",
        amount: 2900,
        country: "NL",
        carrier: "DHL",
    },
    Case {
        provider: "odoo",
        file: "odoo_sale_order_confirmed.json",
        scheme: "token",
        sig_header: None,
        extra: &[],
        external_id: "S00042",
        amount: 9900,
        country: "CH",
        carrier: "GLS",
    },
];

async fn connect(
    srv: &TestServer,
    u: &LastMileUser,
    provider: &str,
    secret: Option<&str>,
) -> common::Resp {
    let body = match secret {
        Some(s) => json!({"secret": s, "shop_domain": format!("{provider}.example.test")}),
        None => json!({}),
    };
    srv.post(
        &format!("/api/integrations/{provider}/connect"),
        &u.token,
        body,
    )
    .await
}

async fn deliver(
    srv: &TestServer,
    provider: &str,
    query: &str,
    body: Vec<u8>,
    headers: &[(&str, String)],
) -> common::Resp {
    let mut rb = srv
        .http
        .post(format!(
            "{}/api/integrations/{provider}/webhook{query}",
            srv.base
        ))
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        rb = rb.header(*k, v);
    }
    let r = rb.send().await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body = r.json().await.unwrap_or(Value::Null);
    common::Resp {
        status,
        headers,
        body,
    }
}

fn signed(c: &Case, merchant: &str) -> (String, Vec<(&'static str, String)>) {
    let mut headers: Vec<(&str, String)> =
        c.extra.iter().map(|(k, v)| (*k, v.to_string())).collect();
    let mut query = format!("?account={merchant}");
    match c.sig_header {
        Some(h) => headers.push((h, py_sign(c.scheme, SECRET, c.file))),
        None => query.push_str(&format!("&token={SECRET}")),
    }
    (query, headers)
}

async fn orders(srv: &TestServer, u: &LastMileUser) -> Vec<Value> {
    srv.get("/api/orders?limit=100", &u.token).await.body["data"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn every_platform_webhook_with_a_valid_signature_creates_exactly_one_order() {
    let srv = common::start().await;
    let u = srv.lastmile_merchant("Shop").await;
    let merchant = u.merchant_id.clone().unwrap();
    for c in CASES {
        assert_eq!(
            connect(&srv, &u, c.provider, Some(SECRET)).await.status,
            StatusCode::OK
        );
        let body = std::fs::read(fixture(c.file)).unwrap();
        let (query, headers) = signed(c, &merchant);
        let r = deliver(&srv, c.provider, &query, body.clone(), &headers).await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{}: {:?}",
            c.provider,
            r.body
        );
        assert_eq!(r.body["result"], "created");
        let id = r.body["order_id"].as_str().unwrap().to_string();

        // The same delivery again: acknowledged, no second order.
        let again = deliver(&srv, c.provider, &query, body, &headers).await;
        assert_eq!(
            again.status,
            StatusCode::OK,
            "{}: {:?}",
            c.provider,
            again.body
        );
        let expected = if c.provider == "shopify" || c.provider == "woocommerce" {
            "duplicate_delivery"
        } else {
            "duplicate_order"
        };
        assert_eq!(again.body["result"], expected, "{}", c.provider);
        assert_eq!(again.body["order_id"], id.as_str(), "{}", c.provider);

        let o = srv.get(&format!("/api/orders/{id}"), &u.token).await.body;
        assert_eq!(o["source"], c.provider);
        assert_eq!(o["external_id"], c.external_id, "{}", c.provider);
        assert_eq!(
            o["amount"],
            json!({"value": c.amount, "currency": "EUR"}),
            "{}",
            c.provider
        );
        assert_eq!(
            o["customer"]["address"]["country"], c.country,
            "{}",
            c.provider
        );
        assert_eq!(o["carrier_code"], c.carrier, "{}", c.provider);
        assert!(!o["items"].as_array().unwrap().is_empty(), "{}", c.provider);
    }
    assert_eq!(orders(&srv, &u).await.len(), CASES.len());

    // Field mapping spot checks.
    let all = orders(&srv, &u).await;
    let shopify = all.iter().find(|o| o["source"] == "shopify").unwrap();
    assert_eq!(shopify["customer"]["name"], "Anna Jansen");
    assert_eq!(shopify["customer"]["address"]["line2"], "3hoog");
    assert_eq!(
        shopify["items"][0],
        json!({"sku": "CANDLE-01", "name": "Soy candle", "qty": 2, "unit_price": 1295})
    );
    let magento = all.iter().find(|o| o["source"] == "magento").unwrap();
    assert_eq!(
        magento["items"].as_array().unwrap().len(),
        1,
        "child line of a configurable product dropped"
    );
    let lightspeed = all.iter().find(|o| o["source"] == "lightspeed").unwrap();
    assert_eq!(
        lightspeed["customer"]["address"]["line1"],
        "Oudegracht 12 A"
    );
    srv.stop().await;
}

#[tokio::test]
async fn a_bad_or_missing_signature_is_401_and_creates_nothing() {
    let srv = common::start().await;
    let u = srv.lastmile_merchant("Shop").await;
    let other = srv.lastmile_merchant("Other").await;
    let merchant = u.merchant_id.clone().unwrap();
    for c in CASES {
        connect(&srv, &u, c.provider, Some(SECRET)).await;
        let body = std::fs::read(fixture(c.file)).unwrap();
        let extra: Vec<(&str, String)> = c.extra.iter().map(|(k, v)| (*k, v.to_string())).collect();
        // Signed with another secret.
        let mut wrong = extra.clone();
        let mut query = format!("?account={merchant}");
        match c.sig_header {
            Some(h) => wrong.push((h, py_sign(c.scheme, "not-the-secret-at-all", c.file))),
            None => query.push_str("&token=not-the-secret-at-all"),
        }
        let r = deliver(&srv, c.provider, &query, body.clone(), &wrong).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "webhook_signature_invalid"),
            "{}",
            c.provider
        );
        // No signature at all.
        let r = deliver(
            &srv,
            c.provider,
            &format!("?account={merchant}"),
            body.clone(),
            &extra,
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", c.provider);
        // The right signature over a tampered body (Odoo's URL token does not cover the body).
        let (q, good) = signed(c, &merchant);
        if c.sig_header.is_some() {
            let mut tampered = body.clone();
            tampered.push(b' ');
            let r = deliver(&srv, c.provider, &q, tampered, &good).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", c.provider);
        }
        // A right signature for a merchant that has no such connection.
        let (q, good) = signed(c, other.merchant_id.as_deref().unwrap());
        let r = deliver(&srv, c.provider, &q, body.clone(), &good).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", c.provider);
        // No account.
        let r = deliver(&srv, c.provider, "", body, &good).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", c.provider);
    }
    assert!(orders(&srv, &u).await.is_empty());
    assert!(orders(&srv, &other).await.is_empty());

    // After a refused delivery, the genuine one still goes through (the id was not burnt).
    let c = &CASES[0];
    let (q, good) = signed(c, &merchant);
    let r = deliver(
        &srv,
        c.provider,
        &q,
        std::fs::read(fixture(c.file)).unwrap(),
        &good,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    srv.stop().await;
}

#[tokio::test]
async fn unhandled_topics_are_acknowledged_and_ignored() {
    let srv = common::start().await;
    let u = srv.lastmile_merchant("Shop").await;
    let merchant = u.merchant_id.clone().unwrap();
    connect(&srv, &u, "shopify", Some(SECRET)).await;
    let c = &CASES[0];
    let (q, mut headers) = signed(c, &merchant);
    for h in headers.iter_mut() {
        if h.0 == "X-Shopify-Topic" {
            h.1 = "products/create".into();
        }
    }
    let r = deliver(
        &srv,
        "shopify",
        &q,
        std::fs::read(fixture(c.file)).unwrap(),
        &headers,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["result"], "ignored");
    assert!(orders(&srv, &u).await.is_empty());
    let r = deliver(&srv, "etsy", &q, b"{}".to_vec(), &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    srv.stop().await;
}

#[tokio::test]
async fn connect_masks_the_secret_and_status_lists_every_platform() {
    let srv = common::start().await;
    let u = srv.lastmile_merchant("Shop").await;
    let r = connect(&srv, &u, "shopify", Some(SECRET)).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["secret_masked"], "shop…cdef");
    assert!(
        r.body.get("secret").is_none(),
        "a given secret is never echoed"
    );
    assert!(!r.to_string_contains(SECRET));
    let g = connect(&srv, &u, "odoo", None).await;
    let generated = g.body["secret"].as_str().unwrap().to_string();
    assert!(generated.starts_with("shsec_") && generated.len() > 40);
    let short = connect(&srv, &u, "woocommerce", Some("short")).await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);

    let s = srv.get("/api/integrations/status", &u.token).await;
    let data = s.body["data"].as_array().unwrap();
    // 9 webhook shops and 3 pulled marketplaces (bol, aliexpress, temu).
    assert_eq!(data.len(), 12);
    let by = |p: &str| data.iter().find(|c| c["provider"] == p).unwrap().clone();
    assert_eq!(by("shopify")["connected"], true);
    assert_eq!(by("odoo")["connected"], true);
    assert_eq!(by("magento")["connected"], false);
    // Shopify names its shop in every delivery: the spec's plain path is enough. Odoo does
    // not: its URL carries the account (and the token it authenticates with).
    assert_eq!(
        by("shopify")["webhook_url"],
        "/api/integrations/shopify/webhook"
    );
    assert_eq!(
        by("odoo")["webhook_url"],
        format!(
            "/api/integrations/odoo/webhook?account={}&token=<secret>",
            u.merchant_id.as_deref().unwrap()
        )
    );
    assert!(!s.to_string_contains(SECRET) && !s.to_string_contains(&generated));
    // Another merchant sees none of it.
    let other = srv.lastmile_merchant("Other").await;
    let s2 = srv.get("/api/integrations/status", &other.token).await;
    assert!(
        s2.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["connected"] == false)
    );
    srv.stop().await;
}

#[tokio::test]
async fn simulate_fires_a_realistic_order_through_the_webhook_path() {
    let srv = common::start().await;
    let u = srv.lastmile_merchant("Shop").await;
    let r = srv
        .post("/api/integrations/shopify/simulate", &u.token, json!({}))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "integration_not_connected")
    );
    for c in CASES {
        connect(&srv, &u, c.provider, None).await;
        let r = srv
            .post(
                &format!("/api/integrations/{}/simulate", c.provider),
                &u.token,
                json!({}),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{}: {:?}",
            c.provider,
            r.body
        );
        assert_eq!(r.body["result"], "created");
    }
    let all = orders(&srv, &u).await;
    assert_eq!(all.len(), CASES.len());
    let status = srv.get("/api/integrations/status", &u.token).await;
    assert!(
        status.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["mode"] != "pull")
            .all(|c| c["last_webhook_at"].is_string())
    );
    srv.stop().await;
}

trait ContainsText {
    fn to_string_contains(&self, needle: &str) -> bool;
}

impl ContainsText for common::Resp {
    fn to_string_contains(&self, needle: &str) -> bool {
        self.body.to_string().contains(needle)
    }
}

/// Signs `body` with the Python signer (via a temporary file) and delivers it as a Shopify
/// webhook with `topic` and delivery id `webhook_id`.
async fn shopify_delivery(
    srv: &TestServer,
    merchant: &str,
    body: &Value,
    topic: &str,
    webhook_id: &str,
) -> common::Resp {
    let bytes = serde_json::to_vec(body).unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &bytes).unwrap();
    let out = std::process::Command::new("python3")
        .arg(fixture("sign.py"))
        .args(["b64", SECRET])
        .arg(file.path())
        .output()
        .expect("python3 runs");
    assert!(out.status.success());
    let sig = String::from_utf8(out.stdout).unwrap().trim().to_string();
    deliver(
        srv,
        "shopify",
        &format!("?account={merchant}"),
        bytes,
        &[
            ("X-Shopify-Hmac-Sha256", sig),
            ("X-Shopify-Topic", topic.to_string()),
            ("X-Shopify-Webhook-Id", webhook_id.to_string()),
        ],
    )
    .await
}

#[tokio::test]
async fn shopify_orders_updated_changes_the_order_until_it_is_paid() {
    let srv = common::start().await;
    let u = srv.lastmile_merchant("Update Shop").await;
    let merchant = u.merchant_id.clone().unwrap();
    connect(&srv, &u, "shopify", Some(SECRET)).await;
    let original: Value =
        serde_json::from_slice(&std::fs::read(fixture("shopify_orders_create.json")).unwrap())
            .unwrap();
    let r = shopify_delivery(&srv, &merchant, &original, "orders/create", "wh-1").await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let order_id = r.body["order_id"].as_str().unwrap().to_string();

    // Before any payment session: address, contact, items and amount follow the shop.
    let mut v1 = original.clone();
    v1["shipping_address"]["address1"] = json!("Prinsengracht 263");
    v1["email"] = json!("anna.j@example.nl");
    v1["line_items"][0]["quantity"] = json!(3);
    v1["total_price"] = json!("39.90");
    let r = shopify_delivery(&srv, &merchant, &v1, "orders/updated", "wh-2").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["result"], "updated");
    assert_eq!(r.body["order_id"], order_id.as_str());
    assert_eq!(r.body["changed"], json!(["customer", "items", "amount"]));
    let o = srv.get(&format!("/api/orders/{order_id}"), &u.token).await;
    assert_eq!(o.body["customer"]["address"]["line1"], "Prinsengracht 263");
    assert_eq!(o.body["customer"]["email"], "anna.j@example.nl");
    assert_eq!(o.body["items"][0]["qty"], 3);
    assert_eq!(o.body["amount"]["value"], 3990);
    assert_eq!(orders(&srv, &u).await.len(), 1, "an update creates nothing");
    // The same delivery again is a duplicate, not a second update.
    let r = shopify_delivery(&srv, &merchant, &v1, "orders/updated", "wh-2").await;
    assert_eq!(r.body["result"], "duplicate_delivery");

    // Paid: the new address still applies; amount and status stay, and the session's log
    // records what the shop asked for.
    let s = srv
        .post(
            &format!("/api/orders/{order_id}/create-session"),
            &u.token,
            json!({}),
        )
        .await;
    assert_eq!(s.status, StatusCode::CREATED, "{:?}", s.body);
    let token = s.body["pay_url"]
        .as_str()
        .unwrap()
        .rsplit("/pay/")
        .next()
        .unwrap()
        .to_string();
    let paid = srv
        .call(
            reqwest::Method::POST,
            &format!("/api/session/{token}/start-payment"),
            None,
            Some(json!({"channel": "sandbox", "simulate": "succeed"})),
        )
        .await;
    assert_eq!(paid.body["status"], "PAID", "{:?}", paid.body);
    let mut v2 = v1.clone();
    v2["shipping_address"]["address1"] = json!("Keizersgracht 1");
    v2["total_price"] = json!("99.00");
    v2["cancelled_at"] = json!("2025-03-15T09:00:00+01:00");
    let r = shopify_delivery(&srv, &merchant, &v2, "orders/updated", "wh-3").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["result"], "updated");
    assert_eq!(r.body["changed"], json!(["customer"]));
    assert!(
        r.body["reason"]
            .as_str()
            .unwrap()
            .contains("amount, status"),
        "{:?}",
        r.body
    );
    let o = srv.get(&format!("/api/orders/{order_id}"), &u.token).await;
    assert_eq!(o.body["customer"]["address"]["line1"], "Keizersgracht 1");
    assert_eq!(o.body["amount"]["value"], 3990);
    assert_eq!(o.body["status"], "PAID");
    let sid = s.body["id"].as_str().unwrap();
    let d = srv
        .get(&format!("/api/payment-sessions/{sid}"), &u.token)
        .await;
    let note = d.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "order.updated_by_shop")
        .cloned()
        .expect("the update is in the session's log");
    assert_eq!(note["detail"]["kept"], json!(["amount", "status"]));
    assert_eq!(note["detail"]["shop_amount"]["value"], 9900);
    assert_eq!(d.body["amount"], 3990);
    srv.stop().await;
}

/// The shop each fixture delivery names (its platform header or body field).
const NAMED_SHOPS: &[(&str, &str)] = &[
    ("shopify", "ipay-demo.myshopify.com"),
    ("woocommerce", "https://shop.example.be"),
    ("shopware", "https://shop.example.de"),
    ("bigcommerce", "abc123"),
    ("lightspeed", "123456"),
];

#[tokio::test]
async fn deliveries_that_name_their_shop_need_no_account_in_the_url() {
    let srv = common::start().await;
    let u = srv.lastmile_merchant("Named Shop").await;
    let other = srv.lastmile_merchant("Other Shop").await;
    let merchant = u.merchant_id.clone().unwrap();
    for (provider, shop) in NAMED_SHOPS {
        let c = CASES.iter().find(|c| c.provider == *provider).unwrap();
        let connect_body = json!({"secret": SECRET, "shop_domain": shop});
        let path = format!("/api/integrations/{provider}/connect");
        let r = srv.post(&path, &u.token, connect_body.clone()).await;
        assert_eq!(r.status, StatusCode::OK, "{provider}: {:?}", r.body);
        // One merchant per shop: another cannot take its deliveries over.
        let taken = srv.post(&path, &other.token, connect_body).await;
        assert_eq!(taken.status, StatusCode::CONFLICT, "{provider}");
        assert_eq!(taken.code(), "shop_already_connected");
        let body = std::fs::read(fixture(c.file)).unwrap();
        let (_, headers) = signed(c, &merchant);
        let r = deliver(&srv, provider, "", body.clone(), &headers).await;
        assert_eq!(r.status, StatusCode::CREATED, "{provider}: {:?}", r.body);
        assert_eq!(r.body["result"], "created");
        // The account parameter still works (the same order again).
        let with_account = deliver(
            &srv,
            provider,
            &format!("?account={merchant}"),
            body,
            &headers,
        )
        .await;
        assert_eq!(
            with_account.status,
            StatusCode::OK,
            "{provider}: {:?}",
            with_account.body
        );
    }
    // A shop nobody connected, and a platform whose deliveries do not name their shop.
    let c = CASES.iter().find(|c| c.provider == "shopify").unwrap();
    let body = std::fs::read(fixture(c.file)).unwrap();
    let (_, mut headers) = signed(c, &merchant);
    for h in headers
        .iter_mut()
        .filter(|(k, _)| *k == "X-Shopify-Shop-Domain")
    {
        h.1 = "someone-else.myshopify.com".into();
    }
    let r = deliver(&srv, "shopify", "", body, &headers).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    let m = CASES.iter().find(|c| c.provider == "magento").unwrap();
    srv.post(
        "/api/integrations/magento/connect",
        &u.token,
        json!({"secret": SECRET, "shop_domain": "m.example"}),
    )
    .await;
    let (_, headers) = signed(m, &merchant);
    let body = std::fs::read(fixture(m.file)).unwrap();
    let r = deliver(&srv, "magento", "", body, &headers).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
}
