//! The connection layer on a real loopback server: idle and slow connections are closed, the
//! connection cap answers clearly, closes are announced, and the HTTP contract at the edge
//! (duplicate `Idempotency-Key`, documented 401s) holds.

mod common;

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous bound on waits for the server to act; the tests wait on the socket, not on time.
const GUARD: Duration = Duration::from_secs(15);

/// One HTTP/1.1 response read off a raw socket.
struct RawResponse {
    status: u16,
    /// Header lines, lower-cased.
    head: String,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            (n.trim() == name).then(|| v.trim())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

fn addr(s: &common::TestServer) -> String {
    s.base.trim_start_matches("http://").to_string()
}

async fn read_response(sock: &mut TcpStream) -> RawResponse {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(GUARD, sock.read(&mut chunk))
            .await
            .expect("no response in time")
            .expect("read failed");
        assert!(n > 0, "connection closed before a full response head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().expect("content-length"))
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = tokio::time::timeout(GUARD, sock.read(&mut chunk))
            .await
            .expect("body in time")
            .expect("read failed");
        assert!(n > 0, "connection closed inside the body");
        body.extend_from_slice(&chunk[..n]);
    }
    RawResponse { status, head, body }
}

/// Waits until the server closes the socket (EOF or reset) and says how long that took.
async fn wait_closed(sock: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut chunk = [0u8; 1024];
    match tokio::time::timeout(GUARD, sock.read(&mut chunk)).await {
        Err(_) => panic!("the server kept the connection open for {GUARD:?}"),
        Ok(Ok(0)) | Ok(Err(_)) => started.elapsed(),
        Ok(Ok(n)) => panic!(
            "unexpected bytes from the server: {:?}",
            String::from_utf8_lossy(&chunk[..n])
        ),
    }
}

const HEALTH: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n";

#[tokio::test]
async fn idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let s = common::start_with(|c| {
        c.server.idle_timeout_ms = 300;
        c.server.header_read_timeout_ms = 10_000;
    })
    .await;
    let mut sock = TcpStream::connect(addr(&s)).await.unwrap();
    sock.write_all(HEALTH).await.unwrap();
    let r = read_response(&mut sock).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("connection"),
        None,
        "a plain GET keeps the connection"
    );
    let waited = wait_closed(&mut sock).await;
    assert!(
        waited >= Duration::from_millis(250),
        "closed too early: {waited:?}"
    );

    // A connection that never sends a byte is idle too.
    let mut silent = TcpStream::connect(addr(&s)).await.unwrap();
    wait_closed(&mut silent).await;
    s.stop().await;
}

#[tokio::test]
async fn partial_request_head_is_closed_after_the_header_timeout() {
    let s = common::start_with(|c| {
        c.server.idle_timeout_ms = 60_000;
        c.server.header_read_timeout_ms = 300;
    })
    .await;
    let mut sock = TcpStream::connect(addr(&s)).await.unwrap();
    sock.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: ")
        .await
        .unwrap();
    let waited = wait_closed(&mut sock).await;
    assert!(
        waited >= Duration::from_millis(250),
        "closed too early: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(30),
        "closed by something else than the header timeout: {waited:?}"
    );
    s.stop().await;
}

#[tokio::test]
async fn past_the_connection_cap_a_new_client_is_told_and_earlier_clients_keep_working() {
    let s = common::start_with(|c| c.server.max_connections = 2).await;
    let mut first = TcpStream::connect(addr(&s)).await.unwrap();
    let mut second = TcpStream::connect(addr(&s)).await.unwrap();
    for sock in [&mut first, &mut second] {
        sock.write_all(HEALTH).await.unwrap();
        assert_eq!(read_response(sock).await.status, 200);
    }

    let mut third = TcpStream::connect(addr(&s)).await.unwrap();
    third.write_all(HEALTH).await.unwrap();
    let r = read_response(&mut third).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body["error"]["code"], "connection_limit", "{body}");
    assert!(body["error"]["request_id"].is_string(), "{body}");
    wait_closed(&mut third).await;

    for sock in [&mut first, &mut second] {
        sock.write_all(HEALTH).await.unwrap();
        assert_eq!(read_response(sock).await.status, 200);
    }
    s.stop().await;
}

#[tokio::test]
async fn error_answered_without_reading_the_body_says_connection_close() {
    let s = common::start_with(|c| c.server.max_body_bytes = 1024).await;
    let mut sock = TcpStream::connect(addr(&s)).await.unwrap();
    sock.write_all(
        b"POST /v1/payment-intents HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer sk_test_nope\r\n\
          Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"amount\":",
    )
    .await
    .unwrap();
    let r = read_response(&mut sock).await;
    assert!(r.status == 413 || r.status == 401, "status {}", r.status);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(r.json()["error"]["code"].is_string(), "{:?}", r.json());
    wait_closed(&mut sock).await;

    // A body read to its end leaves the connection open.
    let mut sock = TcpStream::connect(addr(&s)).await.unwrap();
    let body = b"{}";
    let req = format!(
        "POST /v1/payment-intents HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer sk_test_nope\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    sock.write_all(body).await.unwrap();
    let r = read_response(&mut sock).await;
    assert_eq!(r.status, 401);
    if r.header("connection") != Some("close") {
        sock.write_all(HEALTH).await.unwrap();
        assert_eq!(read_response(&mut sock).await.status, 200);
    }
    s.stop().await;
}

#[tokio::test]
async fn oversized_headers_get_431_in_the_error_envelope() {
    let s = common::start().await;
    let mut sock = TcpStream::connect(addr(&s)).await.unwrap();
    let big = "a".repeat(40 * 1024);
    let req = format!("GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: {big}\r\n\r\n");
    sock.write_all(req.as_bytes()).await.unwrap();
    let r = read_response(&mut sock).await;
    assert_eq!(r.status, 431);
    assert_eq!(r.header("connection"), Some("close"));
    let body = r.json();
    assert_eq!(body["error"]["code"], "header_too_large", "{body}");
    assert!(body["error"]["request_id"].is_string(), "{body}");
    wait_closed(&mut sock).await;
    s.stop().await;
}

#[tokio::test]
async fn duplicate_idempotency_key_headers_are_refused() {
    let s = common::start().await;
    let m = s.merchant("dup-keys").await;
    let key = m.test_secret_key.clone();
    let service = s.active_service(&key).await;
    let intent = s.create_intent(&key, &service, 500).await;
    let intent_id = intent["id"].as_str().unwrap();
    let cases = [
        (
            "/v1/payment-intents",
            json!({"service_id": service, "amount": {"value": 100, "currency": "EUR"}, "channel": "sandbox"}),
        ),
        (
            "/v1/refunds",
            json!({"payment_intent_id": intent_id, "amount": {"value": 100, "currency": "EUR"}}),
        ),
    ];
    for (path, body) in cases {
        let r = s
            .http
            .post(format!("{}{path}", s.base))
            .bearer_auth(&key)
            .header("Idempotency-Key", "first-key")
            .header("Idempotency-Key", "second-key")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "parameter_invalid", "{path}: {v}");
        assert_eq!(v["error"]["param"], "Idempotency-Key", "{path}: {v}");
    }
    s.stop().await;
}

#[tokio::test]
async fn openapi_documents_401_on_every_secured_operation() {
    let s = common::start().await;
    let doc: Value = s
        .http
        .get(format!("{}/openapi.json", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut secured = 0;
    let mut missing = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(responses) = op.get("responses").and_then(Value::as_object) else {
                continue;
            };
            assert!(responses.contains_key("503"), "{method} {path} lacks 503");
            let is_secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            if is_secured {
                secured += 1;
                if !responses.contains_key("401") {
                    missing.push(format!("{method} {path}"));
                }
            }
        }
    }
    assert!(secured >= 40, "only {secured} secured operations found");
    assert!(missing.is_empty(), "no 401 documented on: {missing:?}");
    let responses = |method: &str, path: &str| doc["paths"][path][method]["responses"].clone();
    for path in [
        "/v1/sandbox/payment-intents/{id}/succeed",
        "/v1/sandbox/payment-intents/{id}/fail",
    ] {
        assert!(
            responses("post", path)["404"].is_object(),
            "{path} lacks 404"
        );
    }
    assert!(responses("post", "/v1/payment-intents")["400"].is_object());
    assert!(responses("delete", "/v1/webhook-endpoints/{id}")["409"].is_object());
    s.stop().await;
}
