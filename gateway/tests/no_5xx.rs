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
