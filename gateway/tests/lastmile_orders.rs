//! Last-mile accounts, orders and bulk upload over real HTTP.

mod common;

use common::{LastMileUser, TestServer};
use ipay_engine::ids::MerchantId;
use ipay_engine::store::{EventQuery, PageRequest};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-for-tests-0123456789";

async fn server() -> TestServer {
    common::start_with(|c| c.admin.token = ADMIN.into()).await
}

fn order_body(ext: Option<&str>, country: &str, carrier: &str, value: i64) -> Value {
    let mut b = json!({
        "customer": {
            "name": "Jan de Vries",
            "email": "Jan@Example.nl",
            "phone": "+31 6 1234 5678",
            "address": {"line1": "Damrak 1", "city": "Amsterdam", "postal_code": "1012 LG", "country": country}
        },
        "items": [{"sku": "TSHIRT-M", "name": "T-shirt M", "qty": 2, "unit_price": 999}],
        "amount": {"value": value, "currency": "EUR"},
        "carrier_code": carrier,
        "ipay_flag": true
    });
    if let Some(e) = ext {
        b["external_id"] = json!(e);
    }
    b
}

async fn create(srv: &TestServer, u: &LastMileUser, body: Value) -> common::Resp {
    srv.post("/api/orders", &u.token, body).await
}

#[tokio::test]
async fn register_login_and_me_round_trip() {
    let srv = server().await;
    let u = srv.lastmile_merchant("Shop One BV").await;
    assert!(u.merchant_id.as_deref().unwrap().starts_with("m_"));

    let me = srv.get("/api/auth/me", &u.token).await;
    assert_eq!(me.status, StatusCode::OK, "{:?}", me.body);
    assert_eq!(me.body["role"], "merchant");
    assert_eq!(me.body["email"], u.email.as_str());
    assert_eq!(me.body["merchant_name"], "Shop One BV");
    assert!(me.body.get("password_hash").is_none());

    let login = srv
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"email": u.email.to_uppercase(), "password": "correct horse battery"})),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
    assert_eq!(login.body["token_type"], "bearer");
    assert_eq!(login.body["expires_in"], 7 * 86_400);
    let me2 = srv
        .get("/api/auth/me", login.body["token"].as_str().unwrap())
        .await;
    assert_eq!(me2.body["id"], u.user_id.as_str());
    srv.stop().await;
}

#[tokio::test]
async fn wrong_password_unknown_email_and_bad_tokens_are_401() {
    let srv = server().await;
    let u = srv.lastmile_merchant("Shop").await;
    for (email, pw) in [
        (u.email.as_str(), "wrong password!!"),
        ("nobody@example.test", "correct horse battery"),
    ] {
        let r = srv
            .call(
                Method::POST,
                "/api/auth/login",
                None,
                Some(json!({"email": email, "password": pw})),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.code(), "invalid_credentials");
    }
    let r = srv.call(Method::GET, "/api/auth/me", None, None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "token_missing")
    );
    let r = srv.get("/api/auth/me", "not.a.jwt").await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "token_invalid")
    );
    // A token signed with another key.
    let forged = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c3JfMDFKN1haMUEyQjNDNEQ1RTZGN0c4SDlJS00iLCJyb2xlIjoib3BlcmF0b3IiLCJpc3MiOiJpcGF5LWxhc3RtaWxlIiwiYXVkIjoiaXBheS1sYXN0bWlsZSIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjo0MTAwMDAwMDAwfQ.c2lnbmF0dXJlLW9mLWFub3RoZXIta2V5LXh4eHh4eHh4eA";
    let r = srv.get("/api/auth/me", forged).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "token_invalid")
    );
    srv.stop().await;
}

#[tokio::test]
async fn tokens_expire_after_seven_days() {
    let srv = server().await;
    let u = srv.lastmile_merchant("Shop").await;
    srv.clock.advance_ms(7 * 86_400_000 - 60_000);
    assert_eq!(
        srv.get("/api/auth/me", &u.token).await.status,
        StatusCode::OK
    );
    srv.clock.advance_ms(120_000);
    let r = srv.get("/api/auth/me", &u.token).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "token_invalid")
    );
    srv.stop().await;
}

#[tokio::test]
async fn registration_rules_are_enforced() {
    let srv = server().await;
    let u = srv.lastmile_merchant("Shop").await;
    let reg = |body: Value, tok: Option<&'static str>| {
        let srv = &srv;
        async move {
            srv.call(Method::POST, "/api/auth/register", tok, Some(body))
                .await
        }
    };
    let dup = reg(
        json!({"email": u.email, "password": "another long pw", "name": "X"}),
        None,
    )
    .await;
    assert_eq!(
        (dup.status, dup.code()),
        (StatusCode::CONFLICT, "email_taken")
    );
    let weak = reg(
        json!({"email": "weak@example.test", "password": "short", "name": "X"}),
        None,
    )
    .await;
    assert_eq!(
        (weak.status, weak.code()),
        (StatusCode::BAD_REQUEST, "password_too_weak")
    );
    let bad_email = reg(
        json!({"email": "not-an-email", "password": "long enough pw", "name": "X"}),
        None,
    )
    .await;
    assert_eq!(bad_email.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_email.body["error"]["param"], "email");
    let op = reg(
        json!({"email": "op@example.test", "password": "long enough pw", "name": "Op", "role": "operator"}),
        None,
    )
    .await;
    assert_eq!(
        (op.status, op.code()),
        (StatusCode::FORBIDDEN, "operator_required")
    );
    // A merchant's token does not make it an operator.
    let op2 = srv
        .call(
            Method::POST,
            "/api/auth/register",
            Some(&u.token),
            Some(json!({"email": "op@example.test", "password": "long enough pw", "name": "Op", "role": "driver"})),
        )
        .await;
    assert_eq!(op2.status, StatusCode::FORBIDDEN);

    // The admin token bootstraps an operator, who registers a driver for the merchant.
    let operator = srv.lastmile_user_by("operator", ADMIN, None).await;
    assert!(operator.merchant_id.is_none());
    let driver = srv
        .lastmile_user_by("driver", &operator.token, u.merchant_id.as_deref())
        .await;
    assert_eq!(driver.merchant_id, u.merchant_id);
    let me = srv.get("/api/auth/me", &driver.token).await;
    assert_eq!(me.body["role"], "driver");
    // Drivers and operators are not merchants.
    let r = srv.get("/api/orders", &driver.token).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "role_forbidden")
    );
    srv.stop().await;
}

#[tokio::test]
async fn create_and_get_order_emits_order_created() {
    let srv = server().await;
    let u = srv.lastmile_merchant("Shop").await;
    let r = create(&srv, &u, order_body(Some("A-1001"), "nl", "dhl", 1998)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("ord_"));
    assert_eq!(r.body["status"], "CREATED");
    assert_eq!(r.body["customer"]["address"]["country"], "NL");
    assert_eq!(r.body["customer"]["email"], "jan@example.nl");
    assert_eq!(r.body["carrier_code"], "DHL");
    assert_eq!(r.body["amount"], json!({"value": 1998, "currency": "EUR"}));
    assert_eq!(r.body["source"], "api");

    let g = srv.get(&format!("/api/orders/{id}"), &u.token).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(g.body, r.body);

    let mid = MerchantId::parse(u.merchant_id.as_deref().unwrap()).unwrap();
    let events = srv
        .ledger
        .as_ref()
        .list_events(
            mid,
            false,
            &EventQuery {
                event_type: Some("order.created".into()),
                object_id: Some(id.clone()),
                page: PageRequest {
                    limit: 10,
                    offset: 0,
                },
            },
        )
        .await
        .unwrap();
    assert_eq!(events.data.len(), 1);
    let data: Value = serde_json::from_str(events.data[0].data.get()).unwrap();
    assert_eq!(data["id"], id.as_str());

    let dup = create(&srv, &u, order_body(Some("A-1001"), "NL", "DHL", 500)).await;
    assert_eq!(
        (dup.status, dup.code()),
        (StatusCode::CONFLICT, "order_duplicate")
    );
    srv.stop().await;
}

use ipay_engine::store::Ledger as _;

#[tokio::test]
async fn a_merchant_never_sees_another_merchants_orders() {
    let srv = server().await;
    let a = srv.lastmile_merchant("A").await;
    let b = srv.lastmile_merchant("B").await;
    let r = create(&srv, &a, order_body(Some("X1"), "NL", "DHL", 100)).await;
    let id = r.body["id"].as_str().unwrap();
    let g = srv.get(&format!("/api/orders/{id}"), &b.token).await;
    assert_eq!(
        (g.status, g.code()),
        (StatusCode::NOT_FOUND, "resource_missing")
    );
    let l = srv.get("/api/orders", &b.token).await;
    assert_eq!(l.body["data"], json!([]));
    // B may use the same external id: the namespace is per merchant.
    let r = create(&srv, &b, order_body(Some("X1"), "NL", "DHL", 100)).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let la = srv.get("/api/orders", &a.token).await;
    assert_eq!(la.body["data"].as_array().unwrap().len(), 1);
    srv.stop().await;
}

#[tokio::test]
async fn bad_order_inputs_are_400_with_the_parameter() {
    let srv = server().await;
    let u = srv.lastmile_merchant("Shop").await;
    type Mutation = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(Mutation, &str, &str)> = vec![
        (
            Box::new(|b| b["customer"]["address"]["country"] = json!("NLD")),
            "customer.address.country",
            "parameter_invalid",
        ),
        (
            Box::new(|b| b["amount"]["currency"] = json!("EURO")),
            "amount.currency",
            "parameter_invalid",
        ),
        (
            Box::new(|b| b["amount"]["value"] = json!(0)),
            "amount.value",
            "parameter_invalid",
        ),
        (
            Box::new(|b| b["customer"]["name"] = json!("  ")),
            "customer.name",
            "parameter_invalid",
        ),
        (
            Box::new(|b| b["customer"]["email"] = json!("jan-at-example")),
            "customer.email",
            "parameter_invalid",
        ),
        (
            Box::new(|b| b["customer"]["phone"] = json!("call me")),
            "customer.phone",
            "parameter_invalid",
        ),
        (
            Box::new(|b| b["items"][0]["qty"] = json!(0)),
            "items[0].qty",
            "parameter_invalid",
        ),
        (
            Box::new(|b| b["carrier_code"] = json!("D H L")),
            "carrier_code",
            "parameter_invalid",
        ),
        (
            Box::new(|b| {
                b["customer"].as_object_mut().unwrap().remove("address");
            }),
            "customer.address",
            "parameter_missing",
        ),
        (
            Box::new(|b| b["surprise"] = json!(1)),
            "surprise",
            "parameter_unknown",
        ),
    ];
    for (mutate, param, code) in cases {
        let mut b = order_body(None, "NL", "DHL", 100);
        mutate(&mut b);
        let r = create(&srv, &u, b).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{param}: {:?}", r.body);
        assert_eq!(r.code(), code, "{param}: {:?}", r.body);
        assert_eq!(r.body["error"]["param"], param, "{:?}", r.body);
    }
    let l = srv.get("/api/orders", &u.token).await;
    assert_eq!(l.body["data"], json!([]), "nothing stored");
    srv.stop().await;
}

#[tokio::test]
async fn orders_list_filters_and_paginates_newest_first() {
    let srv = server().await;
    let u = srv.lastmile_merchant("Shop").await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let (country, carrier) = if i % 2 == 0 {
            ("NL", "DHL")
        } else {
            ("DE", "POSTNL")
        };
        let r = create(&srv, &u, order_body(None, country, carrier, 100 + i)).await;
        assert_eq!(r.status, StatusCode::CREATED);
        ids.push(r.body["id"].as_str().unwrap().to_string());
        srv.clock.advance_ms(3_600_000 * 10); // spread over several days
    }
    ids.reverse(); // newest first
    // Pages of 3 walk all seven, newest first, with no overlap.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/orders?limit=3&cursor={c}"),
            None => "/api/orders?limit=3".into(),
        };
        let r = srv.get(&path, &u.token).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        for o in r.body["data"].as_array().unwrap() {
            seen.push(o["id"].as_str().unwrap().to_string());
        }
        if !r.body["pagination"]["has_more"].as_bool().unwrap() {
            assert!(r.body["pagination"]["next_cursor"].is_null());
            break;
        }
        cursor = r.body["pagination"]["next_cursor"]
            .as_str()
            .map(str::to_string);
    }
    assert_eq!(seen, ids);

    let de = srv.get("/api/orders?country=de&limit=100", &u.token).await;
    assert_eq!(de.body["data"].as_array().unwrap().len(), 3);
    assert!(
        de.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["customer"]["address"]["country"] == "DE")
    );
    let dhl = srv
        .get("/api/orders?carrier_code=DHL&status=created", &u.token)
        .await;
    assert_eq!(dhl.body["data"].as_array().unwrap().len(), 4);
    let none = srv.get("/api/orders?status=PAID", &u.token).await;
    assert_eq!(none.body["data"], json!([]));

    // Created range: the three oldest orders (created 0h, 10h, 20h after the first).
    let first = srv.get(&format!("/api/orders/{}", ids[6]), &u.token).await;
    let t0 = first.body["created"].as_str().unwrap().to_string();
    let t0ms = chrono::DateTime::parse_from_rfc3339(&t0)
        .unwrap()
        .timestamp_millis();
    let before = chrono::DateTime::from_timestamp_millis(t0ms + 25 * 3_600_000)
        .unwrap()
        .to_rfc3339();
    let after = chrono::DateTime::from_timestamp_millis(t0ms + 5 * 3_600_000)
        .unwrap()
        .to_rfc3339();
    let r = srv
        .get(
            &format!(
                "/api/orders?created_after={}&created_before={}",
                urlenc(&after),
                urlenc(&before)
            ),
            &u.token,
        )
        .await;
    let got: Vec<&str> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![ids[4].as_str(), ids[5].as_str()], "{:?}", r.body);

    for bad in [
        "limit=0",
        "limit=101",
        "status=LOST",
        "cursor=abc",
        "created_after=yesterday",
        "colour=red",
    ] {
        let r = srv.get(&format!("/api/orders?{bad}"), &u.token).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {:?}", r.body);
    }
    srv.stop().await;
}

fn urlenc(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

async fn upload(
    srv: &TestServer,
    u: &LastMileUser,
    query: &str,
    content_type: &str,
    body: Vec<u8>,
) -> common::Resp {
    let r = srv
        .http
        .post(format!("{}/api/orders/upload{query}", srv.base))
        .bearer_auth(&u.token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body = r.json().await.unwrap_or(Value::Null);
    common::Resp {
        status,
        headers,
        body,
    }
}

async fn all_orders(srv: &TestServer, u: &LastMileUser) -> Vec<Value> {
    let r = srv.get("/api/orders?limit=100", &u.token).await;
    r.body["data"].as_array().unwrap().clone()
}

#[tokio::test]
async fn csv_upload_accepts_good_rows_reports_bad_and_skips_duplicates() {
    let srv = server().await;
    let u = srv.lastmile_merchant("Shop").await;
    // An order made through the API first: its external id makes row 6 a duplicate.
    assert_eq!(
        create(&srv, &u, order_body(Some("EXISTING-1"), "NL", "DHL", 100))
            .await
            .status,
        StatusCode::CREATED
    );
    // Semicolons (Excel, EU locale), synonyms, a BOM, a blank line and an unknown column.
    let csv = "\u{feff}Order Number;Recipient;E-mail;Street;Zip;Town;Country Code;Total;Currency;Courier;Colour\n\
        A-1;Jan de Vries;jan@example.nl;Damrak 1;1012 LG;Amsterdam;nl;24,95;EUR;postnl;red\n\
        A-2;Lena Müller;lena@example.de;Unter den Linden 5;10117;Berlin;DE;59.90;EUR;DHL;blue\n\
        A-3;No Country;x@example.nl;Street 1;1000;Town;Netherlands;10.00;EUR;DHL;\n\
        A-4;Bad Amount;y@example.nl;Street 2;1000;Town;NL;ten;EUR;DHL;\n\
        EXISTING-1;Dup Of Api;z@example.nl;Street 3;1000;Town;NL;5.00;EUR;DHL;\n\
        \n\
        A-1;Dup In File;q@example.nl;Street 4;1000;Town;NL;5.00;EUR;DHL;\n\
        A-5;Bad Currency;w@example.nl;Street 5;1000;Town;BE;5.00;EURO;GLS;\n";
    let r = upload(&srv, &u, "", "text/csv", csv.as_bytes().to_vec()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let b = &r.body;
    assert_eq!(b["rows"], 7, "{b}");
    assert_eq!(b["created"], 2, "{b}");
    assert_eq!(b["failed"], 3, "{b}");
    assert_eq!(b["duplicates"], 2, "{b}");
    assert_eq!(
        b["errors"],
        json!([
            {"row": 4, "column": "Country Code", "reason": "must be an ISO 3166-1 alpha-2 country code such as NL or DE"},
            {"row": 5, "column": "Total", "reason": "`ten` is not an amount like 12.50"},
            {"row": 9, "column": "Currency", "reason": "`EURO` is not an ISO 4217 currency code"},
        ])
    );
    let dups = b["duplicate_rows"].as_array().unwrap();
    assert_eq!(dups[0]["row"], 6);
    assert_eq!(dups[0]["external_id"], "EXISTING-1");
    assert!(
        dups[0]["existing_order_id"]
            .as_str()
            .unwrap()
            .starts_with("ord_")
    );
    assert_eq!(dups[1]["row"], 8);
    assert_eq!(dups[1]["external_id"], "A-1");
    assert_eq!(b["column_mapping"]["Zip"], "postal_code");
    assert_eq!(b["ignored_columns"], json!(["Colour"]));

    let orders = all_orders(&srv, &u).await;
    assert_eq!(orders.len(), 3);
    let a1 = orders.iter().find(|o| o["external_id"] == "A-1").unwrap();
    assert_eq!(a1["amount"], json!({"value": 2495, "currency": "EUR"}));
    assert_eq!(a1["customer"]["address"]["country"], "NL");
    assert_eq!(a1["carrier_code"], "POSTNL");
    assert_eq!(a1["source"], "csv");
    assert_eq!(a1["customer"]["name"], "Jan de Vries");

    // The same file again: everything valid is now a duplicate, nothing new is created.
    let again = upload(&srv, &u, "", "text/csv", csv.as_bytes().to_vec()).await;
    assert_eq!(again.body["created"], 0);
    assert_eq!(again.body["duplicates"], 4);
    assert_eq!(all_orders(&srv, &u).await.len(), 3);
    srv.stop().await;
}

#[tokio::test]
async fn csv_upload_refuses_files_without_required_columns_or_format() {
    let srv = server().await;
    let u = srv.lastmile_merchant("Shop").await;
    let r = upload(
        &srv,
        &u,
        "",
        "text/csv",
        b"name,city\nJan,Amsterdam\n".to_vec(),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "upload_columns_missing"),
        "{:?}",
        r.body
    );
    let msg = r.body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("address_line1") && msg.contains("carrier_code") && msg.contains("currency"),
        "{msg}"
    );
    let r = upload(&srv, &u, "", "text/csv", Vec::new()).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "upload_empty")
    );
    let r = upload(&srv, &u, "", "application/pdf", b"%PDF".to_vec()).await;
    assert_eq!(
        (r.status, r.code()),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "upload_format_unsupported"
        )
    );
    let r = upload(
        &srv,
        &u,
        "?format=xlsx",
        "application/octet-stream",
        b"not a zip".to_vec(),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "upload_unreadable")
    );
    assert!(all_orders(&srv, &u).await.is_empty());
    srv.stop().await;
}

#[tokio::test]
async fn sample_csv_uploads_cleanly_and_multipart_works() {
    let srv = server().await;
    let u = srv.lastmile_merchant("Shop").await;
    let s = srv
        .http
        .get(format!("{}/api/orders/sample.csv", srv.base))
        .send()
        .await
        .unwrap();
    assert_eq!(s.status(), StatusCode::OK);
    assert!(
        s.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let sample = s.bytes().await.unwrap().to_vec();
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(sample).file_name("orders.csv"),
    );
    let r = srv
        .http
        .post(format!("{}/api/orders/upload", srv.base))
        .bearer_auth(&u.token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let b: Value = r.json().await.unwrap();
    assert_eq!(
        (b["created"].as_u64(), b["failed"].as_u64()),
        (Some(2), Some(0)),
        "{b}"
    );
    assert_eq!(b["ignored_columns"], json!([]));
    let orders = all_orders(&srv, &u).await;
    let lena = orders
        .iter()
        .find(|o| o["external_id"] == "SHOP-10002")
        .unwrap();
    assert_eq!(
        lena["items"],
        json!([{"sku": "SNEAKER-42", "name": "Sneakers size 42", "qty": 2, "unit_price": 2995}])
    );
    assert_eq!(lena["customer"]["address"]["line2"], "2. OG");
    srv.stop().await;
}

#[tokio::test]
async fn xlsx_upload_accepts_good_rows_reports_bad_and_skips_duplicates() {
    let srv = server().await;
    let u = srv.lastmile_merchant("Shop").await;
    let rows = json!([
        [
            "Order ID",
            "Customer Name",
            "Address",
            "Postcode",
            "City",
            "Country",
            "Amount",
            "Carrier",
            "SKU",
            "Quantity"
        ],
        [
            "X-1",
            "Piet Jansen",
            "Coolsingel 40",
            "3011 AD",
            "Rotterdam",
            "NL",
            19.99,
            "PostNL",
            "MUG",
            2
        ],
        [
            "X-2",
            "Marie Dubois",
            "Rue de Rivoli 1",
            "75001",
            "Paris",
            "FR",
            45,
            "Colissimo",
            "",
            ""
        ],
        [
            "X-3",
            "",
            "Somewhere 1",
            "1000",
            "Brussel",
            "BE",
            10,
            "BPOST",
            "",
            ""
        ],
        [
            "X-1",
            "Piet Again",
            "Coolsingel 40",
            "3011 AD",
            "Rotterdam",
            "NL",
            5,
            "PostNL",
            "",
            ""
        ],
        [
            "X-4",
            "Too Precise",
            "Street 9",
            "1000",
            "Town",
            "NL",
            1.234,
            "DHL",
            "",
            ""
        ]
    ]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders.xlsx");
    let mut child = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/lastmile/make_xlsx.py"
        ))
        .arg(&path)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rows.to_string().as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    let bytes = std::fs::read(&path).unwrap();
    let r = upload(
        &srv,
        &u,
        "?currency=EUR",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        bytes,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let b = &r.body;
    assert_eq!(
        (
            b["rows"].as_u64(),
            b["created"].as_u64(),
            b["failed"].as_u64(),
            b["duplicates"].as_u64()
        ),
        (Some(5), Some(2), Some(2), Some(1)),
        "{b}"
    );
    assert_eq!(
        b["errors"][0],
        json!({"row": 4, "column": "Customer Name", "reason": "is required"})
    );
    assert_eq!(b["errors"][1]["row"], 6);
    assert_eq!(b["errors"][1]["column"], "Amount");
    assert_eq!(b["duplicate_rows"][0]["row"], 5);
    let orders = all_orders(&srv, &u).await;
    let x1 = orders.iter().find(|o| o["external_id"] == "X-1").unwrap();
    assert_eq!(x1["amount"], json!({"value": 1999, "currency": "EUR"}));
    assert_eq!(
        x1["items"],
        json!([{"sku": "MUG", "name": "MUG", "qty": 2, "unit_price": 999}])
    );
    assert_eq!(x1["source"], "xlsx");
    srv.stop().await;
}

/// Sends `body` over a raw connection in `parts` pieces, `gap` apart (a slow client on a slow
/// link), and returns the status code and the response body.
async fn slow_post(
    srv: &TestServer,
    path: &str,
    token: &str,
    content_type: &str,
    body: &[u8],
    parts: usize,
    gap: std::time::Duration,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = srv.base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(body.len().div_ceil(parts)) {
        tokio::time::sleep(gap).await;
        // The server may answer (and close) before the body is complete: stop writing then.
        if conn.write_all(chunk).await.is_err() {
            break;
        }
    }
    let mut raw = Vec::new();
    let _ = conn.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("an HTTP status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn upload_is_not_cut_at_the_global_timeout_but_other_routes_are() {
    let srv = common::start_with(|c| {
        c.admin.token = ADMIN.into();
        c.server.request_timeout_ms = 2_000;
    })
    .await;
    let u = srv.lastmile_merchant("Slow Link BV").await;
    let gap = std::time::Duration::from_millis(800);

    // An ordinary route whose body trickles in longer than the global bound: 408.
    let order = serde_json::to_vec(&order_body(Some("SLOW-1"), "NL", "DHL", 1_000)).unwrap();
    let (status, body) = slow_post(
        &srv,
        "/api/orders",
        &u.token,
        "application/json",
        &order,
        4,
        gap,
    )
    .await;
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("request_timeout"), "{body}");

    // The upload route has its own bound (15 minutes by default): the same slow link works.
    let mut csv = String::from("order id,name,address,city,zip,country,amount,currency,carrier\n");
    for i in 0..50 {
        csv.push_str(&format!(
            "SLOW-CSV-{i},Jan de Vries,Damrak {i},Amsterdam,1012 LG,NL,12.50,EUR,DHL\n"
        ));
    }
    let (status, body) = slow_post(
        &srv,
        "/api/orders/upload",
        &u.token,
        "text/csv",
        csv.as_bytes(),
        5,
        gap,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(report["created"], 50, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    srv.stop().await;
}

#[tokio::test]
async fn upload_has_a_timeout_of_its_own() {
    let srv = common::start_with(|c| {
        c.admin.token = ADMIN.into();
        c.lastmile.upload_timeout_ms = 1_000;
    })
    .await;
    let u = srv.lastmile_merchant("Slower Link BV").await;
    let csv = "order id,name,address,city,zip,country,amount,currency,carrier\n\
               T-1,Jan de Vries,Damrak 1,Amsterdam,1012 LG,NL,12.50,EUR,DHL\n";
    let (status, body) = slow_post(
        &srv,
        "/api/orders/upload",
        &u.token,
        "text/csv",
        csv.as_bytes(),
        4,
        std::time::Duration::from_millis(600),
    )
    .await;
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("request_timeout"), "{body}");
    srv.stop().await;
}

/// A second gateway on the same engine: its own last-mile subsystem (per-node state), the same
/// ledger and HotState, as two cluster nodes share Cassandra and Redis.
async fn second_node(srv: &TestServer) -> (ipay_gateway::app::RunningServer, String) {
    let mut cfg = ipay_gateway::config::Config::default();
    cfg.server.listen = "127.0.0.1:0".parse().unwrap();
    let node = ipay_gateway::app::start(srv.engine.clone(), &cfg)
        .await
        .unwrap();
    let base = format!("http://{}", node.addr);
    (node, base)
}

#[tokio::test]
async fn two_nodes_racing_on_one_external_id_or_email_store_it_once() {
    let srv = server().await;
    let (node_b, base_b) = second_node(&srv).await;
    let u = srv.lastmile_merchant("Race BV").await;
    let bases = [srv.base.clone(), base_b.clone()];
    let calls = (0..12).map(|i| {
        let url = format!("{}/api/orders", bases[i % 2]);
        let req = srv.http.post(url).bearer_auth(&u.token).json(&order_body(
            Some("RACE-1"),
            "NL",
            "DHL",
            1_500,
        ));
        async move { req.send().await.unwrap().status() }
    });
    let statuses = futures::future::join_all(calls).await;
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let dup = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, dup), (1, 11), "{statuses:?}");
    assert_eq!(all_orders(&srv, &u).await.len(), 1);

    let calls = (0..6).map(|i| {
        let url = format!("{}/api/auth/register", bases[i % 2]);
        let req = srv.http.post(url).json(&json!({
            "email": "Race@Example.test",
            "password": "correct horse battery",
            "name": "Racer",
            "company_name": format!("Racer {i}"),
        }));
        async move { req.send().await.unwrap().status() }
    });
    let statuses = futures::future::join_all(calls).await;
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    assert_eq!(created, 1, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT),
        "{statuses:?}"
    );
    node_b.stop().await;
    srv.stop().await;
}
