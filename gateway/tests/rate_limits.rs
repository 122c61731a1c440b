//! Request rate limits over real HTTP: a key past its limit gets `429 rate_limited` with
//! `Retry-After` and the `X-RateLimit-*` headers, other merchants are unaffected, and a
//! merchant's keys share the merchant's limit.
//!
//! The buckets refill at 1 request per second, far slower than a burst of local requests, so
//! the tests send until they are refused rather than count on exact timing.

mod common;

use common::{Resp, TestServer};
use reqwest::StatusCode;

/// Most requests sent while waiting to be refused (bursts here are 3).
const TRIES: usize = 20;

/// Lists intents with `key` until refused; returns how many succeeded and the refusal.
async fn until_refused(srv: &TestServer, key: &str) -> (usize, Resp) {
    for ok in 0..TRIES {
        let r = srv.get("/v1/payment-intents", key).await;
        if r.status != StatusCode::OK {
            return (ok, r);
        }
    }
    panic!("{TRIES} requests in a row were not refused");
}

fn header<'a>(r: &'a Resp, name: &str) -> &'a str {
    r.headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {:?}", r.headers))
        .to_str()
        .unwrap()
}

fn assert_rate_limited(r: &Resp, limit: u32) {
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{:?}", r.body);
    assert_eq!(r.code(), "rate_limited", "{:?}", r.body);
    assert!(
        r.body["error"]["request_id"].as_str().is_some(),
        "{:?}",
        r.body
    );
    let retry_after: u32 = header(r, "retry-after").parse().unwrap();
    assert!(retry_after >= 1, "Retry-After {retry_after}");
    assert_eq!(header(r, "x-ratelimit-limit"), limit.to_string());
    assert_eq!(header(r, "x-ratelimit-remaining"), "0");
    let reset: u32 = header(r, "x-ratelimit-reset").parse().unwrap();
    assert_eq!(reset, retry_after);
    assert!(r.headers.get("x-request-id").is_some());
}

#[tokio::test]
async fn a_key_over_its_limit_gets_429_and_other_merchants_are_unaffected() {
    let srv = common::start_with(|c| {
        c.limits.rate_per_key_per_sec = 1;
        c.limits.rate_per_key_burst = 3;
    })
    .await;
    let noisy = srv.merchant("noisy").await;
    let quiet = srv.merchant("quiet").await;

    let (ok, refused) = until_refused(&srv, &noisy.live_secret_key).await;
    assert!(ok >= 3, "only {ok} requests before the refusal");
    assert_rate_limited(&refused, 3);
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("API key"),
        "{:?}",
        refused.body
    );

    // Another merchant, and the same merchant's other key, have buckets of their own.
    let other = srv.get("/v1/payment-intents", &quiet.live_secret_key).await;
    assert_eq!(other.status, StatusCode::OK, "{:?}", other.body);
    let same_merchant = srv.get("/v1/payment-intents", &noisy.test_secret_key).await;
    assert_eq!(
        same_merchant.status,
        StatusCode::OK,
        "{:?}",
        same_merchant.body
    );
    srv.stop().await;
}

#[tokio::test]
async fn another_key_of_a_limited_merchant_is_refused_by_the_merchant_limit() {
    let srv = common::start_with(|c| {
        c.limits.rate_per_key_per_sec = 1_000;
        c.limits.rate_per_key_burst = 1_000;
        c.limits.rate_per_merchant_per_sec = 1;
        c.limits.rate_per_merchant_burst = 3;
    })
    .await;
    let busy = srv.merchant("busy").await;
    let calm = srv.merchant("calm").await;

    let (ok, refused) = until_refused(&srv, &busy.live_secret_key).await;
    assert!(ok >= 3, "only {ok} requests before the refusal");
    assert_rate_limited(&refused, 3);

    // The merchant's other key finds the merchant's bucket empty.
    let second_key = srv.get("/v1/payment-intents", &busy.test_secret_key).await;
    assert_rate_limited(&second_key, 3);
    assert!(
        second_key.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("merchant"),
        "{:?}",
        second_key.body
    );

    let other = srv.get("/v1/payment-intents", &calm.live_secret_key).await;
    assert_eq!(other.status, StatusCode::OK, "{:?}", other.body);
    srv.stop().await;
}

#[tokio::test]
async fn a_bad_key_spends_no_budget() {
    let srv = common::start_with(|c| {
        c.limits.rate_per_merchant_per_sec = 1;
        c.limits.rate_per_merchant_burst = 1;
    })
    .await;
    let m = srv.merchant("guarded").await;
    for _ in 0..5 {
        let r = srv.get("/v1/payment-intents", "sk_test_not_a_key").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    }
    let r = srv.get("/v1/payment-intents", &m.live_secret_key).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    srv.stop().await;
}
