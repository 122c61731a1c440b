//! No client input may panic the server or produce a 5xx: a seeded sweep of malformed, mutated
//! and random requests over every route.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

/// A small deterministic generator (xorshift), so a failure reproduces from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

fn weird_values(r: &mut Rng) -> Value {
    let choices = [
        json!(null),
        json!(true),
        json!(-1),
        json!(0),
        json!(9_223_372_036_854_775_807i64),
        json!(-9_223_372_036_854_775_808i64),
        json!(1e308),
        json!(0.5),
        json!(""),
        json!("x".repeat(3000)),
        json!("\u{0000}\u{FFFF}"),
        json!("EUR"),
        json!("sandbox"),
        json!("pi_01M7YCP6NCDR7TGQH6E58C77JX"),
        json!([]),
        json!([1, "a", null]),
        json!({}),
        json!({"value": 1, "currency": "EUR"}),
        json!({"value": "1", "currency": 1}),
    ];
    r.pick(&choices).clone()
}

fn mutate(base: &Value, r: &mut Rng) -> Value {
    let mut v = base.clone();
    if let Some(obj) = v.as_object_mut() {
        let keys: Vec<String> = obj.keys().cloned().collect();
        for _ in 0..(r.next() % 3 + 1) {
            match r.next() % 4 {
                0 if !keys.is_empty() => {
                    obj.remove(r.pick(&keys));
                }
                1 if !keys.is_empty() => {
                    let k = r.pick(&keys).clone();
                    obj.insert(k, weird_values(r));
                }
                2 => {
                    obj.insert(format!("k{}", r.next() % 10), weird_values(r));
                }
                _ => {}
            }
        }
    }
    v
}

#[tokio::test]
async fn no_client_input_produces_a_server_error() {
    let s = start_with(|c| c.server.max_body_bytes = 16 * 1024).await;
    let m = s.merchant("Fuzz").await;
    let key = m.test_secret_key.as_str();
    let svc = s.active_service(key).await;
    let pi = s.create_intent(key, &svc, 500).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let bases = [
        (
            Method::POST,
            "/v1/payment-intents".to_string(),
            json!({"service_id": svc, "amount": {"value": 100, "currency": "EUR"}, "channel": "sandbox", "metadata": {"a": "b"}, "expires_in": 900}),
        ),
        (
            Method::POST,
            "/v1/refunds".to_string(),
            json!({"payment_intent": pi, "amount": {"value": 10, "currency": "EUR"}, "reason": "x"}),
        ),
        (
            Method::POST,
            "/v1/services".to_string(),
            json!({"name": "fz", "accepted_channels": ["sandbox"], "pricing": {"one_time": [{"amount": 1, "currency": "USD"}]}, "tags": ["a"], "endpoint": "https://x.test/h"}),
        ),
        (
            Method::POST,
            "/v1/api-keys".to_string(),
            json!({"label": "l", "permissions": ["payment_intents:read"], "ip_whitelist": ["127.0.0.1/32"], "expires_in_days": 3}),
        ),
        (
            Method::POST,
            format!("/v1/payment-intents/{pi}/cancel"),
            json!({"cancellation_reason": "r"}),
        ),
        (
            Method::POST,
            "/v1/api-keys/key_x/rotate".to_string(),
            json!({"grace_period_seconds": 5}),
        ),
    ];
    let paths = [
        "/v1/payment-intents?limit=%FF",
        "/v1/payment-intents?created_after=%00",
        "/v1/payment-intents?offset=99999999999999999999",
        "/v1/payment-intents/%F0%9F%92%A5",
        "/v1/services/..%2F..%2Fetc",
        "/v1/events?type=%00&object_id=",
        "/v1/refunds?payment_intent=pi_",
        "/v1/services/svc_/activate",
        "/v1/sandbox/payment-intents/x/succeed",
    ];
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    let mut sent = 0;
    for round in 0..300 {
        let (method, path, body) = r.pick(&bases).clone();
        let raw: Vec<u8> = match round % 5 {
            0 => {
                let text = serde_json::to_vec(&mutate(&body, &mut r)).unwrap();
                let cut = (r.next() as usize) % (text.len() + 1);
                text[..cut].to_vec()
            }
            1 => (0..(r.next() % 64))
                .map(|_| (r.next() & 0xFF) as u8)
                .collect(),
            2 => format!("{}{}", "[".repeat(200), "]".repeat(200)).into_bytes(),
            _ => serde_json::to_vec(&mutate(&body, &mut r)).unwrap(),
        };
        let resp = s
            .http
            .request(method.clone(), format!("{}{}", s.base, path))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .header("Idempotency-Key", format!("fz-{}", r.next() % 20))
            .body(raw.clone())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(
            !status.is_server_error(),
            "round {round}: {method} {path} {:?} → {status} {text}",
            String::from_utf8_lossy(&raw)
        );
        assert!(
            serde_json::from_str::<Value>(&text).is_ok(),
            "round {round}: non-JSON body {text}"
        );
        sent += 1;
    }
    for p in paths {
        for method in [Method::GET, Method::POST, Method::PATCH, Method::DELETE] {
            let resp = s.call(method.clone(), p, Some(key), None).await;
            assert!(
                !resp.status.is_server_error(),
                "{method} {p} → {} {:?}",
                resp.status,
                resp.body
            );
            sent += 1;
        }
    }
    assert!(sent > 300);
    // The server is still healthy and consistent afterwards.
    let r = s.get(&format!("/v1/payment-intents/{pi}"), key).await;
    assert!(r.status.is_success());
    s.stop().await;
}

// ------------------------------------------------------------ outside input beyond the API

/// Sends `body` with `headers` and asserts the answer is not a 5xx and is JSON (or, for the
/// PSP routes, whatever the PSP expects: never an empty 5xx).
async fn send_checked(
    s: &TestServer,
    what: &str,
    path: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> reqwest::StatusCode {
    let mut rb = s.http.post(format!("{}{path}", s.base)).body(body.clone());
    for (k, v) in headers {
        rb = rb.header(k.as_str(), v.as_str());
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(
        !status.is_server_error(),
        "{what}: POST {path} {headers:?} {:?} → {status} {text}",
        String::from_utf8_lossy(&body[..body.len().min(300)])
    );
    status
}

/// Random bytes, mutated JSON and look-alike bodies for a PSP route.
fn psp_body(r: &mut Rng, pi: &str) -> Vec<u8> {
    let samples = [
        format!(
            "notify_id=n1&out_trade_no={pi}&trade_status=TRADE_SUCCESS&total_amount=1.00&sign_type=RSA2&sign=AAAA"
        ),
        r#"{"id":"EV-1","event_type":"TRANSACTION.SUCCESS","resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"AAAA","nonce":"0123456789ab","associated_data":""}}"#.to_string(),
        format!(
            "{{\"id\":\"evt_1\",\"type\":\"payment_intent.succeeded\",\"data\":{{\"object\":{{\"metadata\":{{\"ipay_intent\":\"{pi}\"}},\"amount\":100}}}}}}"
        ),
        format!(
            "{{\"transactionid\":\"1\",\"order_id\":\"{pi}\",\"status\":\"completed\",\"amount\":100,\"currency\":\"EUR\"}}"
        ),
        format!(
            "{{\"reference\":\"{pi}\",\"amount\":\"1.00\",\"status\":\"paid\",\"transaction_id\":\"t\"}}"
        ),
    ];
    let base = r.pick(&samples).clone().into_bytes();
    match r.next() % 4 {
        0 => (0..(r.next() % 200))
            .map(|_| (r.next() & 0xFF) as u8)
            .collect(),
        1 => {
            let mut b = base;
            for _ in 0..(r.next() % 6 + 1) {
                let at = (r.next() as usize) % (b.len() + 1);
                match r.next() % 3 {
                    0 if at < b.len() => b[at] ^= 1 << (r.next() % 8),
                    1 => b.insert(at, (r.next() & 0xFF) as u8),
                    _ => b.truncate(at),
                }
            }
            b
        }
        _ => base,
    }
}

fn psp_headers(r: &mut Rng) -> Vec<(String, String)> {
    let names = [
        "stripe-signature",
        "wechatpay-signature",
        "wechatpay-timestamp",
        "wechatpay-nonce",
        "wechatpay-serial",
        "auth",
        "x-bank-signature",
    ];
    let values = [
        "t=1,v1=00".to_string(),
        "t=99999999999999999999,v1=zz".to_string(),
        "x".repeat(4000),
        "=,=,=".to_string(),
        "MTIzNDU2Nzg6YWJj".to_string(),
        "-1".to_string(),
        String::new(),
    ];
    let mut h = vec![(
        "content-type".to_string(),
        r.pick(&[
            "application/json",
            "application/x-www-form-urlencoded",
            "text/plain",
        ])
        .to_string(),
    )];
    for _ in 0..(r.next() % 4) {
        h.push((r.pick(&names).to_string(), r.pick(&values).clone()));
    }
    h
}

#[tokio::test]
async fn psp_callbacks_of_any_shape_never_produce_a_server_error() {
    let s = start_with(|c| c.server.max_body_bytes = 16 * 1024).await;
    let m = s.merchant("Fuzz").await;
    let key = m.test_secret_key.as_str();
    let svc = s.active_service(key).await;
    let pi = s.create_intent(key, &svc, 500).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let paths = [
        "/callbacks/alipay".to_string(),
        "/callbacks/wechat".to_string(),
        format!("/callbacks/wechat/{pi}"),
        "/callbacks/stripe".to_string(),
        "/callbacks/multisafepay".to_string(),
        "/callbacks/promptpay".to_string(),
        "/callbacks/paypal".to_string(),
        "/callbacks/%00/x".to_string(),
        "/api/payments/webhook".to_string(),
        "/api/webhooks/multisafepay".to_string(),
    ];
    let mut r = Rng(0x2545_F491_4F6C_DD1D);
    for round in 0..250 {
        let path = r.pick(&paths).clone();
        let headers = psp_headers(&mut r);
        let body = psp_body(&mut r, &pi);
        send_checked(&s, &format!("round {round}"), &path, &headers, body).await;
    }
    s.stop().await;
}

/// A CSV upload body: a valid file mutated, or noise.
fn csv_body(r: &mut Rng) -> Vec<u8> {
    let good = "order id,name,address,city,zip,country,amount,currency,carrier,sku,quantity\n\
                A-1,Piet Jansen,Coolsingel 40,Rotterdam,3011 AD,NL,19.99,EUR,PostNL,MUG,2\n\
                A-2,\"Dubois, Marie\",Rue de Rivoli 1,Paris,75001,FR,45,EUR,Colissimo,,\n";
    let weird = [
        "\"",
        "\"\"",
        ",",
        ";",
        "\t",
        "\r",
        "\n",
        "\u{0}",
        "1e999",
        "-0",
        "99999999999999999999",
        "0.001",
        "\u{FEFF}",
        "Ω",
        "=cmd|' /C calc'!A0",
        "\r\n\r\n",
    ];
    let mut b = good.to_string();
    match r.next() % 4 {
        0 => (0..(r.next() % 300))
            .map(|_| (r.next() & 0xFF) as u8)
            .collect(),
        1 => {
            b.truncate((r.next() as usize) % (b.len() + 1));
            while !b.is_char_boundary(b.len()) {
                b.pop();
            }
            b.into_bytes()
        }
        _ => {
            for _ in 0..(r.next() % 8 + 1) {
                let mut at = (r.next() as usize) % (b.len() + 1);
                while !b.is_char_boundary(at) {
                    at -= 1;
                }
                let w: &&str = r.pick(&weird);
                b.insert_str(at, w);
            }
            b.into_bytes()
        }
    }
}

/// A minimal XLSX (stored, uncompressed) with these parts, written by Python's zipfile so the
/// container is independent of the code under test.
fn xlsx_of(parts: &[(&str, String)]) -> Vec<u8> {
    let script = "import json,sys,zipfile,io\n\
                  parts=json.load(sys.stdin)\n\
                  buf=io.BytesIO()\n\
                  z=zipfile.ZipFile(buf,'w',zipfile.ZIP_STORED)\n\
                  [z.writestr(n,c) for n,c in parts]\n\
                  z.close()\n\
                  sys.stdout.buffer.write(buf.getvalue())\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = serde_json::to_vec(parts).unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// Sheet XML with mutated cells: bad shared-string indexes, odd types, broken markup.
fn xlsx_body(r: &mut Rng) -> Vec<u8> {
    let cells = [
        r#"<c r="A2" t="s"><v>0</v></c>"#,
        r#"<c r="A2" t="s"><v>999999</v></c>"#,
        r#"<c r="A2" t="s"><v>-1</v></c>"#,
        r#"<c r="G2"><v>1e308</v></c>"#,
        r#"<c r="G2"><v>NaN</v></c>"#,
        r#"<c r="G2" t="b"><v>2</v></c>"#,
        r#"<c r="XFD1048576"><v>1</v></c>"#,
        r#"<c r="ZZZZZ9999999999"><v>1</v></c>"#,
        r#"<c r="B2" t="inlineStr"><is><t>Jan</t></is></c>"#,
        r#"<c r="B2" t="e"><v>#REF!</v></c>"#,
        r#"<c><v>1</v></c>"#,
        r#"<c r="B2"><f>1/0</f></c>"#,
        "<c r=\"B2\" t=\"s\"><v>1",
        "<row>",
        "&bogus;",
    ];
    let mut row = String::new();
    for _ in 0..(r.next() % 8 + 1) {
        let c: &&str = r.pick(&cells);
        row.push_str(c);
    }
    let mut parts = xlsx_parts(&row);
    if r.next().is_multiple_of(4) {
        // A part missing or cut short.
        let i = (r.next() as usize) % parts.len();
        let cut = (r.next() as usize) % (parts[i].1.len() + 1);
        parts[i].1.truncate(cut);
    }
    let mut bytes = xlsx_of(&parts);
    if r.next().is_multiple_of(5) {
        let at = (r.next() as usize) % bytes.len();
        bytes[at] ^= 0x20;
    }
    bytes
}

/// The parts of a one-sheet workbook: a header row (`order id` … `carrier`, shared strings)
/// and `row2`'s cells in sheet row 2.
fn xlsx_parts(row2: &str) -> Vec<(&'static str, String)> {
    const HEADER: [&str; 8] = [
        "order id", "name", "address", "city", "zip", "country", "amount", "carrier",
    ];
    let header: String = (0..HEADER.len())
        .map(|i| {
            format!(
                r#"<c r="{}1" t="s"><v>{i}</v></c>"#,
                (b'A' + i as u8) as char
            )
        })
        .collect();
    let main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main";
    let sheet = format!(
        r#"<?xml version="1.0"?><worksheet xmlns="{main}"><sheetData><row r="1">{header}</row><row r="2">{row2}</row></sheetData></worksheet>"#
    );
    let strings: String = HEADER
        .iter()
        .map(|s| format!("<si><t>{s}</t></si>"))
        .collect();
    let sst = format!(r#"<?xml version="1.0"?><sst xmlns="{main}">{strings}</sst>"#);
    let ns = "http://schemas.openxmlformats.org";
    let ct = "application/vnd.openxmlformats";
    vec![
        (
            "[Content_Types].xml",
            format!(
                r#"<?xml version="1.0"?><Types xmlns="{ns}/package/2006/content-types"><Default Extension="rels" ContentType="{ct}-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="{ct}-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="{ct}-officedocument.spreadsheetml.worksheet+xml"/><Override PartName="/xl/sharedStrings.xml" ContentType="{ct}-officedocument.spreadsheetml.sharedStrings+xml"/></Types>"#
            ),
        ),
        (
            "_rels/.rels",
            format!(
                r#"<?xml version="1.0"?><Relationships xmlns="{ns}/package/2006/relationships"><Relationship Id="rId1" Type="{ns}/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#
            ),
        ),
        (
            "xl/workbook.xml",
            format!(
                r#"<?xml version="1.0"?><workbook xmlns="{main}" xmlns:r="{ns}/officeDocument/2006/relationships"><sheets><sheet name="Orders" sheetId="1" r:id="rId1"/></sheets></workbook>"#
            ),
        ),
        (
            "xl/_rels/workbook.xml.rels",
            format!(
                r#"<?xml version="1.0"?><Relationships xmlns="{ns}/package/2006/relationships"><Relationship Id="rId1" Type="{ns}/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/><Relationship Id="rId2" Type="{ns}/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/></Relationships>"#
            ),
        ),
        ("xl/worksheets/sheet1.xml", sheet),
        ("xl/sharedStrings.xml", sst),
    ]
}

#[tokio::test]
async fn uploads_of_any_shape_never_produce_a_server_error() {
    let s = start().await;
    let u = s.lastmile_merchant("Fuzz uploads").await;
    let auth = vec![("authorization".to_string(), format!("Bearer {}", u.token))];
    let mut r = Rng(0x853C_49E6_748F_EA9B);
    for round in 0..120 {
        let mut headers = auth.clone();
        headers.push(("content-type".into(), "text/csv".into()));
        let q = r
            .pick(&["", "?currency=EUR", "?currency=%00", "?currency=XXXX"])
            .to_string();
        let body = csv_body(&mut r);
        send_checked(
            &s,
            &format!("csv round {round}"),
            &format!("/api/orders/upload{q}"),
            &headers,
            body,
        )
        .await;
    }
    let xlsx = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
    for round in 0..40 {
        let mut headers = auth.clone();
        headers.push(("content-type".into(), xlsx.into()));
        let body = if round % 8 == 0 {
            (0..(r.next() % 500))
                .map(|_| (r.next() & 0xFF) as u8)
                .collect()
        } else {
            xlsx_body(&mut r)
        };
        send_checked(
            &s,
            &format!("xlsx round {round}"),
            "/api/orders/upload?currency=EUR",
            &headers,
            body,
        )
        .await;
    }
    s.stop().await;
}

#[tokio::test]
async fn shop_webhooks_with_valid_signatures_and_mutated_orders_never_produce_a_server_error() {
    use ipay_adapters::shops::{self, Provider, Scheme};
    let s = start().await;
    let u = s.lastmile_merchant("Fuzz shops").await;
    let merchant = u.merchant_id.clone().unwrap();
    let secret = "fuzz-shop-secret-0123456789";
    let mut r = Rng(0xDA94_2042_E4DD_58B5);
    for p in Provider::ALL {
        let name = p.as_str();
        let body = json!({"secret": secret, "shop_domain": format!("{name}.example.test")});
        let c = s
            .post(&format!("/api/integrations/{name}/connect"), &u.token, body)
            .await;
        assert!(c.status.is_success(), "{name}: {:?}", c.body);
        for round in 0..25 {
            let (sample, sample_headers) = shops::sample(
                *p,
                ipay_engine::clock::Timestamp(chrono::Utc::now().timestamp_millis()),
            );
            let mut v: Value = serde_json::from_slice(&sample).unwrap();
            mutate_deep(&mut v, &mut r);
            let body = serde_json::to_vec(&v).unwrap();
            let mut headers: Vec<(String, String)> = sample_headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect();
            headers.push(("content-type".into(), "application/json".into()));
            let mut query = format!("?account={merchant}");
            match p.scheme() {
                Scheme::UrlToken => query.push_str(&format!("&token={secret}")),
                scheme => {
                    let h = scheme.header().unwrap().to_string();
                    headers.retain(|(k, _)| !k.eq_ignore_ascii_case(&h));
                    headers.push((h, shops::sign(scheme, secret, &body)));
                }
            }
            let path = format!("/api/integrations/{name}/webhook{query}");
            send_checked(&s, &format!("{name} round {round}"), &path, &headers, body).await;
        }
    }
    s.stop().await;
}

/// Replaces a few values somewhere inside `v` (any depth) with weird ones.
fn mutate_deep(v: &mut Value, r: &mut Rng) {
    for _ in 0..(r.next() % 4 + 1) {
        replace_somewhere(v, r);
    }
}

fn replace_somewhere(v: &mut Value, r: &mut Rng) {
    let descend = !r.next().is_multiple_of(3);
    match v {
        Value::Object(m) if descend && !m.is_empty() => {
            let k = m.keys().nth((r.next() as usize) % m.len()).cloned();
            if let Some(child) = k.and_then(|k| m.get_mut(&k)) {
                replace_somewhere(child, r);
            }
        }
        Value::Array(a) if descend && !a.is_empty() => {
            let n = a.len();
            replace_somewhere(&mut a[(r.next() as usize) % n], r);
        }
        _ => *v = weird_values(r),
    }
}

#[tokio::test]
async fn odd_headers_never_produce_a_server_error() {
    let s = start().await;
    let m = s.merchant("Fuzz headers").await;
    let key = m.test_secret_key.as_str();
    let svc = s.active_service(key).await;
    let body = serde_json::to_vec(&json!({"service_id": svc, "amount": {"value": 100, "currency": "EUR"}, "channel": "sandbox"})).unwrap();
    let auths = [
        format!("Bearer {key}"),
        format!("bearer {key}"),
        format!("Bearer  {key}"),
        format!("Basic {key}"),
        "Bearer".to_string(),
        "Bearer sk_test_".to_string(),
        format!("Bearer {}", "k".repeat(8000)),
        "Bearer \u{7f}".to_string(),
    ];
    let idem = ["", " ", "a", &"k".repeat(300), "ключ", "\t", "x\u{7f}"];
    let types = [
        "application/json",
        "application/json; charset=latin1",
        "text/plain",
        "application/x-www-form-urlencoded",
        "",
        "application/json;;;",
    ];
    let mut r = Rng(0x6A09_E667_F3BC_C908);
    for round in 0..150 {
        let mut headers = vec![
            ("authorization".to_string(), r.pick(&auths).clone()),
            ("content-type".to_string(), r.pick(&types).to_string()),
        ];
        for _ in 0..(r.next() % 3) {
            headers.push(("idempotency-key".to_string(), r.pick(&idem).to_string()));
        }
        if r.next().is_multiple_of(4) {
            headers.push((
                "x-forwarded-for".into(),
                r.pick(&["1.2.3.4", "::1", "garbage", "1.2.3.4, 5.6.7.8"])
                    .to_string(),
            ));
        }
        if r.next().is_multiple_of(5) {
            headers.push((
                "content-encoding".into(),
                r.pick(&["gzip", "br", "identity", "x"]).to_string(),
            ));
        }
        // reqwest refuses some header values itself; those never reach the server.
        let valid: Vec<(String, String)> = headers
            .into_iter()
            .filter(|(_, v)| reqwest::header::HeaderValue::from_str(v).is_ok())
            .collect();
        send_checked(
            &s,
            &format!("round {round}"),
            "/v1/payment-intents",
            &valid,
            body.clone(),
        )
        .await;
    }
    s.stop().await;
}

#[tokio::test]
async fn a_tiny_xlsx_with_a_far_away_cell_is_refused_not_allocated() {
    // One cell at XFD1048576 made the reader allocate the sheet's whole bounding box
    // (16,384 × 1,048,576 cells, 512 GiB) and the process abort: a 2 KB upload took the
    // server down.
    let s = start().await;
    let u = s.lastmile_merchant("Far cells").await;
    let upload = |body: Vec<u8>| {
        s.http
            .post(format!("{}/api/orders/upload?currency=EUR", s.base))
            .bearer_auth(&u.token)
            .header(
                "content-type",
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            )
            .body(body)
            .send()
    };
    let far_right = xlsx_of(&xlsx_parts(r#"<c r="XFD1048576"><v>1</v></c>"#));
    let r = upload(far_right).await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upload_unreadable", "{body}");
    // Far down but within the columns is only sparse: read, reported by its real row number.
    let row =
        r#"<c r="A1048576" t="inlineStr"><is><t>FAR-1</t></is></c><c r="G1048576"><v>12.5</v></c>"#;
    let r = upload(xlsx_of(&xlsx_parts(row))).await.unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert!(status.is_success(), "{status} {body}");
    assert_eq!(body["errors"][0]["row"], 1_048_576, "{body}");
    s.stop().await;
}
