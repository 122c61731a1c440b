//! The merchant API over HTTP against a real server on a loopback port.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn payment_lifecycle_create_pay_refund_and_events() {
    let s = start().await;
    let m = s.merchant("Shop").await;
    let key = m.test_secret_key.as_str();
    let svc = s.active_service(key).await;
    let pi = s.create_intent(key, &svc, 1000).await;
    let id = pi["id"].as_str().unwrap();
    assert_eq!(pi["status"], "pending");
    assert!(pi["qr_code"].as_str().unwrap().contains(id));
    assert_eq!(pi["livemode"], false);

    let got = s.get(&format!("/v1/payment-intents/{id}"), key).await;
    assert_eq!(got.body, pi);

    let paid = s
        .call(
            Method::POST,
            &format!("/v1/sandbox/payment-intents/{id}/succeed"),
            Some(key),
            None,
        )
        .await;
    assert_eq!(paid.status, StatusCode::OK);
    assert_eq!(paid.body["status"], "succeeded");
    let again = s
        .call(
            Method::POST,
            &format!("/v1/sandbox/payment-intents/{id}/fail"),
            Some(key),
            None,
        )
        .await;
    assert_eq!(
        (again.status, again.code()),
        (StatusCode::CONFLICT, "invalid_state_transition")
    );

    let r1 = s.post("/v1/refunds", key, json!({"payment_intent": id, "amount": {"value": 400, "currency": "EUR"}, "reason": "damaged"})).await;
    assert_eq!(r1.status, StatusCode::CREATED, "{:?}", r1.body);
    assert_eq!(r1.body["status"], "succeeded");
    let over = s
        .post(
            "/v1/refunds",
            key,
            json!({"payment_intent": id, "amount": {"value": 601, "currency": "EUR"}}),
        )
        .await;
    assert_eq!(
        (over.status, over.code()),
        (StatusCode::BAD_REQUEST, "refund_exceeds_captured")
    );
    let rest = s
        .post("/v1/refunds", key, json!({"payment_intent": id}))
        .await;
    assert_eq!(rest.body["amount"]["value"], 600);
    let none_left = s
        .post("/v1/refunds", key, json!({"payment_intent": id}))
        .await;
    assert_eq!(
        (none_left.status, none_left.code()),
        (StatusCode::CONFLICT, "charge_already_refunded")
    );
    let refunds = s
        .get(&format!("/v1/refunds?payment_intent={id}"), key)
        .await;
    assert_eq!(refunds.body["pagination"]["total"], 2);
    let one = s
        .get(
            &format!("/v1/refunds/{}", r1.body["id"].as_str().unwrap()),
            key,
        )
        .await;
    assert_eq!(one.body["amount"]["value"], 400);

    let events = s
        .get(&format!("/v1/events?object_id={id}&limit=10"), key)
        .await;
    let types: Vec<&str> = events.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "refund.succeeded",
            "refund.succeeded",
            "payment_intent.succeeded",
            "payment_intent.created"
        ]
    );
    let refund_event = &events.body["data"][0];
    assert_eq!(refund_event["data"]["refunded_payment_intent"], id);
    let ev_id = events.body["data"][2]["id"].as_str().unwrap();
    let ev = s.get(&format!("/v1/events/{ev_id}"), key).await;
    assert_eq!(ev.body["type"], "payment_intent.succeeded");
    assert_eq!(ev.body["data"]["id"], id);
    let mut keys: Vec<&str> = ev
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, ["created", "data", "id", "livemode", "type"]);
    let only = s.get("/v1/events?type=payment_intent.succeeded", key).await;
    assert_eq!(only.body["pagination"]["total"], 1);
    s.stop().await;
}

#[tokio::test]
async fn listing_paginates_filters_and_sorts() {
    let s = start().await;
    let m = s.merchant("Lister").await;
    let key = m.test_secret_key.as_str();
    let svc = s.active_service(key).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        s.clock.advance_ms(1_000);
        ids.push(
            s.create_intent(key, &svc, 100 + i).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    s.call(
        Method::POST,
        &format!("/v1/sandbox/payment-intents/{}/succeed", ids[1]),
        Some(key),
        None,
    )
    .await;
    s.call(
        Method::POST,
        &format!("/v1/payment-intents/{}/cancel", ids[2]),
        Some(key),
        Some(json!({"cancellation_reason": "customer left"})),
    )
    .await;

    let p1 = s.get("/v1/payment-intents?limit=2&offset=0", key).await;
    assert_eq!(
        p1.body["pagination"],
        json!({"total": 5, "limit": 2, "offset": 0, "next_offset": 2})
    );
    assert_eq!(p1.body["data"][0]["id"], ids[4].as_str());
    let last = s.get("/v1/payment-intents?limit=2&offset=4", key).await;
    assert_eq!(last.body["pagination"]["next_offset"], Value::Null);
    let asc = s
        .get("/v1/payment-intents?sort=created:asc&limit=1", key)
        .await;
    assert_eq!(asc.body["data"][0]["id"], ids[0].as_str());
    let ok = s.get("/v1/payment-intents?status=succeeded", key).await;
    assert_eq!(ok.body["pagination"]["total"], 1);
    assert_eq!(ok.body["data"][0]["id"], ids[1].as_str());
    let cancelled = s
        .get("/v1/payment-intents?status=cancelled&channel=sandbox", key)
        .await;
    assert_eq!(
        cancelled.body["data"][0]["cancellation_reason"],
        "customer left"
    );
    let none = s.get("/v1/payment-intents?channel=alipay", key).await;
    assert_eq!(none.body["pagination"]["total"], 0);
    let created3 = s
        .get(&format!("/v1/payment-intents/{}", ids[3]), key)
        .await
        .body["created"]
        .as_str()
        .unwrap()
        .to_string();
    let window = s
        .get(
            &format!("/v1/payment-intents?created_after={created3}"),
            key,
        )
        .await;
    assert_eq!(window.body["pagination"]["total"], 2);
    let before = s
        .get(
            &format!("/v1/payment-intents?created_before={created3}"),
            key,
        )
        .await;
    assert_eq!(before.body["pagination"]["total"], 3);
    s.stop().await;
}

/// (method, path, body, expected status, expected code)
type Case = (Method, String, Option<Value>, StatusCode, &'static str);

#[tokio::test]
async fn bad_inputs_get_coded_json_errors_never_500() {
    let s = start_with(|c| c.server.max_body_bytes = 4096).await;
    let m = s.merchant("Strict").await;
    let key = m.test_secret_key.as_str();
    let svc = s.active_service(key).await;
    let draft = s
        .post(
            "/v1/services",
            key,
            json!({"name": "draft-svc", "accepted_channels": ["sandbox", "alipay"]}),
        )
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let pi = |amount: Value, extra: Value| {
        let mut b = json!({"service_id": svc, "amount": amount, "channel": "sandbox"});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let post = Method::POST;
    let cases: Vec<Case> = vec![
        (
            post.clone(),
            "/v1/payment-intents".into(),
            Some(json!({})),
            StatusCode::BAD_REQUEST,
            "parameter_missing",
        ),
        (
            post.clone(),
            "/v1/payment-intents".into(),
            Some(json!({"service_id": svc, "channel": "sandbox"})),
            StatusCode::BAD_REQUEST,
            "parameter_missing",
        ),
        (
            post.clone(),
            "/v1/payment-intents".into(),
            Some(json!("just a string")),
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
        ),
        (
            post.clone(),
            "/v1/payment-intents".into(),
            Some(pi(json!({"value": "699", "currency": "EUR"}), json!({}))),
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
        ),
        (
            post.clone(),
            "/v1/payment-intents".into(),
            Some(pi(json!({"value": 6.99, "currency": "EUR"}), json!({}))),
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
        ),
        (
            post.clone(),
            "/v1/payment-intents".into(),
            Some(pi(json!({"value": 0, "currency": "EUR"}), json!({}))),
            StatusCode::BAD_REQUEST,
            "amount_invalid",
        ),
        (
            post.clone(),
            "/v1/payment-intents".into(),
            Some(pi(json!({"value": -5, "currency": "EUR"}), json!({}))),
            StatusCode::BAD_REQUEST,
            "amount_invalid",
        ),
        (
            post.clone(),
            "/v1/payment-intents".into(),
            Some(pi(
                json!({"value": 1_000_000_000_000_000i64, "currency": "EUR"}),
                json!({}),
            )),
            StatusCode::BAD_REQUEST,
            "amount_invalid",
        ),
        (
            post.clone(),
            "/v1/payment-intents".into(),
            Some(pi(
                json!({"value": 100_000_000_000_000_000_000u128 as f64, "currency": "EUR"}),
                json!({}),
            )),
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
        ),
        (
            post.clone(),
            "/v1/payment-intents".into(),
            Some(pi(json!({"value": 100, "currency": "XYZ"}), json!({}))),
            StatusCode::BAD_REQUEST,
            "currency_unknown",
        ),
        (
            post.clone(),
            "/v1/payment-intents".into(),
            Some(pi(json!({"value": 100, "currency": "eur"}), json!({}))),
            StatusCode::BAD_REQUEST,
            "currency_unknown",
        ),
        (
            post.clone(),
            "/v1/payment-intents".into(),
            Some(pi(
                json!({"value": 100, "currency": "EUR", "extra": 1}),
                json!({}),
            )),
            StatusCode::BAD_REQUEST,
            "parameter_unknown",
        ),
        (
            post.clone(),
            "/v1/payment-intents".into(),
            Some(pi(
                json!({"value": 100, "currency": "EUR"}),
                json!({"channel": "paypal"}),
            )),
            StatusCode::BAD_REQUEST,
            "channel_unknown",
        ),
        (
            post.clone(),
            "/v1/payment-intents".into(),
            Some(pi(
                json!({"value": 100, "currency": "EUR"}),
                json!({"channel": "alipay"}),
            )),
            StatusCode::BAD_REQUEST,
            "channel_not_accepted",
        ),
        (
            post.clone(),
            "/v1/payment-intents".into(),
            Some(pi(
                json!({"value": 100, "currency": "EUR"}),
                json!({"expires_in": 5}),
            )),
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
        ),
        (
            post.clone(),
            "/v1/payment-intents".into(),
            Some(pi(
                json!({"value": 100, "currency": "EUR"}),
                json!({"expires_in": 86401}),
            )),
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
        ),
        (
            post.clone(),
            "/v1/payment-intents".into(),
            Some(pi(
                json!({"value": 100, "currency": "EUR"}),
                json!({"metadata": {"k": {"nested": 1}}}),
            )),
            StatusCode::BAD_REQUEST,
            "metadata_invalid",
        ),
        (
            post.clone(),
            "/v1/payment-intents".into(),
            Some(pi(
                json!({"value": 100, "currency": "EUR"}),
                json!({"metadata": {"k": "x".repeat(501)}}),
            )),
            StatusCode::BAD_REQUEST,
            "metadata_invalid",
        ),
        (
            post.clone(),
            "/v1/payment-intents".into(),
            Some(pi(
                json!({"value": 100, "currency": "EUR"}),
                json!({"service_id": "nope"}),
            )),
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
        ),
        (
            post.clone(),
            "/v1/payment-intents".into(),
            Some(pi(
                json!({"value": 100, "currency": "EUR"}),
                json!({"service_id": draft}),
            )),
            StatusCode::CONFLICT,
            "service_not_active",
        ),
        (
            post.clone(),
            "/v1/payment-intents".into(),
            Some(pi(
                json!({"value": 100, "currency": "EUR"}),
                json!({"metadata": {"blob": "y".repeat(5000)}}),
            )),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            Method::GET,
            "/v1/payment-intents?limit=0".into(),
            None,
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
        ),
        (
            Method::GET,
            "/v1/payment-intents?limit=101".into(),
            None,
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
        ),
        (
            Method::GET,
            "/v1/payment-intents?limit=-1".into(),
            None,
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
        ),
        (
            Method::GET,
            "/v1/payment-intents?status=paid".into(),
            None,
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
        ),
        (
            Method::GET,
            "/v1/payment-intents?sort=amount".into(),
            None,
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
        ),
        (
            Method::GET,
            "/v1/payment-intents?created_after=yesterday".into(),
            None,
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
        ),
        (
            Method::GET,
            "/v1/payment-intents?bogus=1".into(),
            None,
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
        ),
        (
            Method::GET,
            "/v1/payment-intents/pi_doesnotexist".into(),
            None,
            StatusCode::NOT_FOUND,
            "resource_missing",
        ),
        (
            Method::GET,
            "/v1/payment-intents/pi_01M7YCP6NCDR7TGQH6E58C77JX".into(),
            None,
            StatusCode::NOT_FOUND,
            "resource_missing",
        ),
        (
            Method::GET,
            "/v1/events/evt_x".into(),
            None,
            StatusCode::NOT_FOUND,
            "resource_missing",
        ),
        (
            Method::GET,
            "/v1/services/whatever".into(),
            None,
            StatusCode::NOT_FOUND,
            "resource_missing",
        ),
        (
            Method::PATCH,
            format!("/v1/services/{svc}/explode"),
            None,
            StatusCode::NOT_FOUND,
            "route_not_found",
        ),
        (
            Method::PATCH,
            format!("/v1/services/{svc}/activate"),
            None,
            StatusCode::CONFLICT,
            "invalid_state_transition",
        ),
        (
            Method::DELETE,
            format!("/v1/services/{svc}"),
            None,
            StatusCode::CONFLICT,
            "invalid_state_transition",
        ),
        (
            post.clone(),
            "/v1/services".into(),
            Some(json!({"description": "no name"})),
            StatusCode::BAD_REQUEST,
            "parameter_missing",
        ),
        (
            post.clone(),
            "/v1/services".into(),
            Some(json!({"name": "x", "accepted_channels": ["paypal"]})),
            StatusCode::BAD_REQUEST,
            "channel_unknown",
        ),
        (
            post.clone(),
            "/v1/services".into(),
            Some(json!({"name": "x", "endpoint": "not a url"})),
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
        ),
        (
            post.clone(),
            "/v1/services".into(),
            Some(
                json!({"name": "x", "pricing": {"one_time": [{"amount": -1, "currency": "USD"}]}}),
            ),
            StatusCode::BAD_REQUEST,
            "amount_invalid",
        ),
        (
            post.clone(),
            "/v1/services".into(),
            Some(json!({"name": "x", "qr_mode": "sometimes"})),
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
        ),
        (
            post.clone(),
            "/v1/refunds".into(),
            Some(json!({"payment_intent": "pi_nope"})),
            StatusCode::BAD_REQUEST,
            "resource_missing",
        ),
        (
            post.clone(),
            "/v1/api-keys".into(),
            Some(json!({"permissions": ["root"]})),
            StatusCode::BAD_REQUEST,
            "permission_unknown",
        ),
        (
            post.clone(),
            "/v1/api-keys".into(),
            Some(json!({"ip_whitelist": ["300.1.1.1/8"]})),
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
        ),
        (
            post.clone(),
            "/v1/api-keys".into(),
            Some(json!({"expires_in_days": 0})),
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
        ),
        (
            Method::DELETE,
            "/v1/api-keys/key_nope".into(),
            None,
            StatusCode::NOT_FOUND,
            "resource_missing",
        ),
        (
            Method::PUT,
            "/v1/payment-intents".into(),
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::GET,
            "/v2/anything".into(),
            None,
            StatusCode::NOT_FOUND,
            "route_not_found",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let r = s.call(method.clone(), &path, Some(key), body.clone()).await;
        assert_eq!(
            (r.status, r.code()),
            (status, code),
            "{method} {path} {body:?} → {:?}",
            r.body
        );
        let rid = r.body["error"]["request_id"].as_str().unwrap();
        assert_eq!(r.headers["x-request-id"].to_str().unwrap(), rid);
        assert!(!r.body["error"]["message"].as_str().unwrap().is_empty());
    }
    // Raw bodies that are not JSON at all.
    for (body, ct, status, code) in [
        (
            "{not json",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "{\"a\":1}",
            "text/plain",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "\u{0}\u{1}\u{2}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
    ] {
        let r = s
            .http
            .post(format!("{}/v1/payment-intents", s.base))
            .bearer_auth(key)
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        let st = r.status();
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            (st, v["error"]["code"].as_str().unwrap()),
            (status, code),
            "{body:?}"
        );
    }
    let unknown = s
        .post(
            "/v1/payment-intents",
            key,
            pi(
                json!({"value": 1, "currency": "EUR", "extra": 1}),
                json!({}),
            ),
        )
        .await;
    assert_eq!(unknown.body["error"]["param"], "amount.extra");
    let unknown_top = s
        .post(
            "/v1/payment-intents",
            key,
            pi(json!({"value": 1, "currency": "EUR"}), json!({"bogus": 1})),
        )
        .await;
    assert_eq!(unknown_top.body["error"]["param"], "bogus");
    let bad_idem = s
        .call_with(
            post,
            "/v1/payment-intents",
            Some(key),
            Some(pi(json!({"value": 1, "currency": "EUR"}), json!({}))),
            &[("Idempotency-Key", "has space")],
        )
        .await;
    assert_eq!(
        (bad_idem.status, bad_idem.code()),
        (StatusCode::BAD_REQUEST, "parameter_invalid")
    );
    s.stop().await;
}

#[tokio::test]
async fn authentication_errors_have_their_codes() {
    let s = start().await;
    let m = s.merchant("Auth").await;
    for (header, code) in [
        (None, "auth_invalid"),
        (Some("Bearer"), "auth_invalid"),
        (Some("Basic dXNlcjpwYXNz"), "auth_invalid"),
        (
            Some("Bearer sk_test_unknownunknownunknownunknown12"),
            "auth_invalid",
        ),
        (Some("Bearer whsec_notakey"), "auth_invalid"),
    ] {
        let mut rb = s.http.get(format!("{}/v1/payment-intents", s.base));
        if let Some(h) = header {
            rb = rb.header("authorization", h);
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code);
    }
    // Lower-case scheme is accepted.
    let r = s
        .http
        .get(format!("{}/v1/payment-intents", s.base))
        .header("authorization", format!("bearer {}", m.test_secret_key))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn merchants_and_modes_are_isolated() {
    let s = start().await;
    let a = s.merchant("A").await;
    let b = s.merchant("B").await;
    let svc = s.active_service(&a.test_secret_key).await;
    let pi = s.create_intent(&a.test_secret_key, &svc, 500).await;
    let id = pi["id"].as_str().unwrap();
    for (key, who) in [
        (&b.test_secret_key, "other merchant"),
        (&a.live_secret_key, "live key of the owner"),
    ] {
        let r = s.get(&format!("/v1/payment-intents/{id}"), key).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::NOT_FOUND, "resource_missing"),
            "{who}"
        );
        let r = s
            .call(
                Method::POST,
                &format!("/v1/payment-intents/{id}/cancel"),
                Some(key),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{who}");
        let r = s.get(&format!("/v1/services/{svc}"), key).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{who}");
        let r = s.get("/v1/payment-intents", key).await;
        assert_eq!(r.body["pagination"]["total"], 0, "{who}");
        let r = s.get("/v1/events", key).await;
        assert_eq!(r.body["pagination"]["total"], 0, "{who}");
        let r = s
            .post("/v1/refunds", key, json!({"payment_intent": id}))
            .await;
        assert_eq!(r.code(), "resource_missing", "{who}");
        let r = s.post("/v1/payment-intents", key, json!({"service_id": svc, "amount": {"value": 1, "currency": "EUR"}, "channel": "sandbox"})).await;
        assert_eq!(r.code(), "resource_missing", "{who}");
    }
    let ev = s.get("/v1/events", &a.test_secret_key).await.body["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        s.get(&format!("/v1/events/{ev}"), &b.test_secret_key)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // The sandbox settles test objects only.
    let live_settle = s
        .call(
            Method::POST,
            &format!("/v1/sandbox/payment-intents/{id}/succeed"),
            Some(&a.live_secret_key),
            None,
        )
        .await;
    assert_eq!(
        (live_settle.status, live_settle.code()),
        (StatusCode::FORBIDDEN, "test_mode_only")
    );
    s.stop().await;
}

#[tokio::test]
async fn api_keys_permissions_whitelist_revocation_rotation_and_expiry() {
    let s = start().await;
    let m = s.merchant("Keys").await;
    let root = m.test_secret_key.as_str();
    let svc = s.active_service(root).await;

    let ro = s.post("/v1/api-keys", root, json!({"label": "CI/CD Pipeline", "permissions": ["payment_intents:read", "webhooks:read"]})).await;
    assert_eq!(ro.status, StatusCode::CREATED, "{:?}", ro.body);
    let ro_secret = ro.body["secret"].as_str().unwrap().to_string();
    assert!(ro_secret.starts_with("sk_test_"));
    assert_eq!(
        s.get("/v1/payment-intents", &ro_secret).await.status,
        StatusCode::OK
    );
    let denied = s.post("/v1/payment-intents", &ro_secret, json!({"service_id": svc, "amount": {"value": 1, "currency": "EUR"}, "channel": "sandbox"})).await;
    assert_eq!(
        (denied.status, denied.code()),
        (StatusCode::FORBIDDEN, "permission_denied")
    );
    let escalate = s
        .post(
            "/v1/api-keys",
            &ro_secret,
            json!({"permissions": ["payment_intents:read"]}),
        )
        .await;
    assert_eq!(escalate.code(), "permission_denied");
    // A key manager without payment rights cannot mint a stronger key by rotating one.
    let manager = s
        .post(
            "/v1/api-keys",
            root,
            json!({"permissions": ["api_keys:read", "api_keys:write"]}),
        )
        .await;
    let manager_secret = manager.body["secret"].as_str().unwrap();
    let root_id = s.get("/v1/api-keys", root).await.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["label"] == "default test key")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let steal = s
        .call(
            Method::POST,
            &format!("/v1/api-keys/{root_id}/rotate"),
            Some(manager_secret),
            None,
        )
        .await;
    assert_eq!(
        (steal.status, steal.code()),
        (StatusCode::FORBIDDEN, "permission_denied")
    );
    assert_eq!(
        s.get("/v1/payment-intents", root).await.status,
        StatusCode::OK,
        "the root key was not rotated"
    );

    let listed = s.get("/v1/api-keys", root).await;
    let text = listed.body.to_string();
    assert!(
        !text.contains(&ro_secret) && !text.contains(root),
        "secrets are never listed"
    );
    assert_eq!(listed.body["pagination"]["total"], 3);
    let paged = s.get("/v1/api-keys?limit=1&offset=1", root).await;
    assert_eq!(paged.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(paged.body["pagination"]["next_offset"], 2);
    assert_eq!(
        s.get("/v1/api-keys?limit=0", root).await.code(),
        "parameter_invalid"
    );
    assert_eq!(
        s.get("/v1/api-keys?bogus=1", root).await.code(),
        "parameter_invalid"
    );

    let far = s
        .post(
            "/v1/api-keys",
            root,
            json!({"ip_whitelist": ["203.0.113.0/24", "2001:db8::/32"]}),
        )
        .await;
    let r = s
        .get("/v1/payment-intents", far.body["secret"].as_str().unwrap())
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "ip_not_allowed")
    );
    let near = s
        .post(
            "/v1/api-keys",
            root,
            json!({"ip_whitelist": ["127.0.0.1/32"]}),
        )
        .await;
    assert_eq!(
        s.get("/v1/payment-intents", near.body["secret"].as_str().unwrap())
            .await
            .status,
        StatusCode::OK
    );

    let rid = ro.body["id"].as_str().unwrap();
    let revoked = s
        .call(
            Method::DELETE,
            &format!("/v1/api-keys/{rid}"),
            Some(root),
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK);
    let r = s.get("/v1/payment-intents", &ro_secret).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "auth_revoked")
    );

    let nid = near.body["id"].as_str().unwrap();
    let rotated = s
        .call(
            Method::POST,
            &format!("/v1/api-keys/{nid}/rotate"),
            Some(root),
            Some(json!({"grace_period_seconds": 60})),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::CREATED, "{:?}", rotated.body);
    assert_eq!(rotated.body["ip_whitelist"], json!(["127.0.0.1/32"]));
    let old = near.body["secret"].as_str().unwrap();
    assert_eq!(
        s.get("/v1/payment-intents", old).await.status,
        StatusCode::OK,
        "old key works during the grace period"
    );
    s.clock.advance_ms(61_000);
    assert_eq!(
        s.get("/v1/payment-intents", old).await.code(),
        "auth_revoked"
    );
    assert_eq!(
        s.get(
            "/v1/payment-intents",
            rotated.body["secret"].as_str().unwrap()
        )
        .await
        .status,
        StatusCode::OK
    );

    s.clock.advance_ms(366 * 86_400_000);
    let r = s.get("/v1/payment-intents", root).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "auth_expired")
    );
    s.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_requests_with_one_idempotency_key_create_one_intent() {
    let s = start().await;
    let m = s.merchant("Idem").await;
    let key = m.test_secret_key.clone();
    let svc = s.active_service(&key).await;
    let body = json!({"service_id": svc, "amount": {"value": 699, "currency": "CNY"}, "channel": "sandbox", "metadata": {"order": "A-1"}});
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let http = s.http.clone();
        let url = format!("{}/v1/payment-intents", s.base);
        let (key, body) = (key.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .header("Idempotency-Key", "idem_01J8ABC123")
                .json(&body)
                .send()
                .await
                .unwrap();
            let replayed = r.headers()["idempotent-replayed"].to_str().unwrap() == "true";
            (r.status(), replayed, r.text().await.unwrap())
        }));
    }
    let mut bodies = std::collections::HashSet::new();
    let mut fresh = 0;
    for t in tasks {
        let (status, replayed, text) = t.await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{text}");
        fresh += usize::from(!replayed);
        bodies.insert(text);
    }
    assert_eq!((fresh, bodies.len()), (1, 1));
    assert_eq!(
        s.get("/v1/payment-intents", &key).await.body["pagination"]["total"],
        1
    );
    // Same key, same body, reordered keys: still the same request.
    let reordered = json!({"metadata": {"order": "A-1"}, "channel": "sandbox", "amount": {"currency": "CNY", "value": 699}, "service_id": svc});
    let again = s
        .call_with(
            Method::POST,
            "/v1/payment-intents",
            Some(&key),
            Some(reordered),
            &[("Idempotency-Key", "idem_01J8ABC123")],
        )
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    let mut changed = body.clone();
    changed["amount"]["value"] = json!(700);
    let reused = s
        .call_with(
            Method::POST,
            "/v1/payment-intents",
            Some(&key),
            Some(changed),
            &[("Idempotency-Key", "idem_01J8ABC123")],
        )
        .await;
    assert_eq!(
        (reused.status, reused.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
    );
    // The service id written bare (as the spec's examples do) is the same request.
    let mut bare = body.clone();
    bare["service_id"] = json!(svc.trim_start_matches("svc_"));
    let r = s
        .call_with(
            Method::POST,
            "/v1/payment-intents",
            Some(&key),
            Some(bare),
            &[("Idempotency-Key", "idem_01J8ABC123")],
        )
        .await;
    assert_eq!(
        (r.status, &r.headers["idempotent-replayed"]),
        (
            StatusCode::CREATED,
            &"true".parse::<reqwest::header::HeaderValue>().unwrap()
        )
    );
    // Keys are per merchant: another merchant may use the same key.
    let other = s.merchant("Other").await;
    let osvc = s.active_service(&other.test_secret_key).await;
    let mut ob = body.clone();
    ob["service_id"] = json!(osvc);
    let r = s
        .call_with(
            Method::POST,
            "/v1/payment-intents",
            Some(&other.test_secret_key),
            Some(ob),
            &[("Idempotency-Key", "idem_01J8ABC123")],
        )
        .await;
    assert_eq!(
        (r.status, &r.headers["idempotent-replayed"]),
        (
            StatusCode::CREATED,
            &"false".parse::<reqwest::header::HeaderValue>().unwrap()
        )
    );
    // After 24 h the key is forgotten.
    s.clock.advance_ms(24 * 3_600_000 + 1);
    let mut fresh_body = body.clone();
    fresh_body["amount"]["value"] = json!(1);
    let later = s
        .call_with(
            Method::POST,
            "/v1/payment-intents",
            Some(&key),
            Some(fresh_body),
            &[("Idempotency-Key", "idem_01J8ABC123")],
        )
        .await;
    assert_eq!(later.status, StatusCode::CREATED);
    assert_eq!(later.headers["idempotent-replayed"], "false");
    s.stop().await;
}

#[tokio::test]
async fn service_manifests_upsert_and_follow_their_lifecycle() {
    let s = start().await;
    let m = s.merchant("Svc").await;
    let key = m.test_secret_key.as_str();
    let created = s
        .post(
            "/v1/services",
            key,
            json!({
                "name": "AI Document Summary",
                "description": "Summarize any PDF or text in seconds.",
                "payment_methods": {"one_time": true, "cumulative": false, "subscription": true},
                "pricing": {"one_time": [{"amount": 99, "currency": "USD", "label": "per summary"}],
                            "subscription": [{"plan_id": "plan_starter", "name": "Starter", "amount": 999, "currency": "USD", "interval": "monthly", "features": ["50 summaries/mo"]}]},
                "accepted_channels": ["sandbox", "alipay"],
                "qr_mode": "dynamic",
                "settlement_currency": "USD",
                "endpoint": "https://api.myservice.ai/itpay/webhook",
                "tags": ["summarization", "ai"]
            }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["status"], "draft");
    let id = created.body["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("svc_"));
    // Re-POST by name updates only the given fields.
    let by_name = s.post("/v1/services", key, json!({"name": "AI Document Summary", "pricing": {"one_time": [{"amount": 129, "currency": "USD", "label": "per summary"}]}})).await;
    assert_eq!(by_name.status, StatusCode::OK);
    assert_eq!(by_name.body["id"], id.as_str());
    assert_eq!(by_name.body["pricing"]["one_time"][0]["amount"], 129);
    assert_eq!(
        by_name.body["description"],
        "Summarize any PDF or text in seconds."
    );
    assert_eq!(by_name.body["tags"], json!(["summarization", "ai"]));
    // Re-POST by id, with the spec's bare 26-character form.
    let bare = &id[4..];
    let by_id = s
        .post("/v1/services", key, json!({"id": bare, "tags": ["ai"]}))
        .await;
    assert_eq!(
        (by_id.status, by_id.body["tags"].clone()),
        (StatusCode::OK, json!(["ai"]))
    );
    assert_eq!(
        s.get(&format!("/v1/services/{bare}"), key).await.body["id"],
        id.as_str()
    );

    let step = |action: &'static str| {
        let path = format!("/v1/services/{id}/{action}");
        let s = &s;
        async move { s.call(Method::PATCH, &path, Some(key), None).await }
    };
    assert_eq!(step("pause").await.code(), "invalid_state_transition");
    assert_eq!(step("activate").await.body["status"], "active");
    assert_eq!(step("pause").await.body["status"], "paused");
    let paused_pi = s.post("/v1/payment-intents", key, json!({"service_id": id, "amount": {"value": 1, "currency": "USD"}, "channel": "sandbox"})).await;
    assert_eq!(paused_pi.code(), "service_not_active");
    assert_eq!(step("resume").await.body["status"], "active");
    assert_eq!(step("deprecate").await.body["status"], "deprecated");
    let del = s
        .call(
            Method::DELETE,
            &format!("/v1/services/{id}"),
            Some(key),
            None,
        )
        .await;
    assert_eq!(del.body["status"], "deleted");
    assert_eq!(
        s.get(&format!("/v1/services/{id}"), key).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.get("/v1/services", key).await.body["pagination"]["total"],
        0
    );
    // The name is free again.
    let again = s
        .post("/v1/services", key, json!({"name": "AI Document Summary"}))
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_ne!(again.body["id"], id.as_str());
    s.stop().await;
}

#[tokio::test]
async fn admin_api_creates_merchants_only_with_the_token() {
    let off = start().await;
    let r = off
        .call(
            Method::POST,
            "/v1/admin/merchants",
            Some("anything"),
            Some(json!({"name": "X"})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "admin_disabled")
    );
    off.stop().await;

    let s = start_with(|c| c.admin.token = "adm_test_token_123".into()).await;
    let wrong = s
        .call(
            Method::POST,
            "/v1/admin/merchants",
            Some("adm_wrong"),
            Some(json!({"name": "X"})),
        )
        .await;
    assert_eq!(
        (wrong.status, wrong.code()),
        (StatusCode::UNAUTHORIZED, "auth_invalid")
    );
    let ok = s
        .call(
            Method::POST,
            "/v1/admin/merchants",
            Some("adm_test_token_123"),
            Some(json!({"name": "Admin-made"})),
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED);
    let key = ok.body["test_secret_key"].as_str().unwrap();
    assert!(
        ok.body["live_secret_key"]
            .as_str()
            .unwrap()
            .starts_with("sk_live_")
    );
    assert!(
        ok.body["webhook_secret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_")
    );
    assert_eq!(s.get("/v1/services", key).await.status, StatusCode::OK);
    let empty = s
        .call(
            Method::POST,
            "/v1/admin/merchants",
            Some("adm_test_token_123"),
            Some(json!({"name": "  "})),
        )
        .await;
    assert_eq!(empty.code(), "parameter_invalid");
    s.stop().await;
}

#[tokio::test]
async fn operations_endpoints_and_openapi() {
    let s = start().await;
    let m = s.merchant("Ops").await;
    let svc = s.active_service(&m.test_secret_key).await;
    s.create_intent(&m.test_secret_key, &svc, 10).await;
    assert_eq!(
        s.http
            .get(format!("{}/healthz", s.base))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let ready: Value = s
        .http
        .get(format!("{}/readyz", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
    let metrics = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("ipay_http_requests_total{"), "{metrics}");
    assert!(metrics.contains("route=\"/v1/payment-intents\""));
    assert!(metrics.contains("ipay_http_request_duration_seconds_bucket"));
    assert!(metrics.contains("ipay_intents{status=\"pending\"}"));
    assert!(metrics.contains("ipay_live_sessions"));
    let doc: Value = s
        .http
        .get(format!("{}/openapi.json", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for p in [
        "/v1/payment-intents",
        "/v1/refunds",
        "/v1/events/{id}",
        "/v1/services/{id}/{action}",
        "/v1/api-keys/{id}/rotate",
        "/v1/sandbox/payment-intents/{id}/succeed",
    ] {
        assert!(doc["paths"][p].is_object(), "{p} missing from OpenAPI");
    }
    let ui = s
        .http
        .get(format!("{}/docs/", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ui.status(), StatusCode::OK);
    assert!(ui.text().await.unwrap().to_lowercase().contains("swagger"));
    s.stop().await;
}

/// `PATCH path` with `body` as `who`.
async fn patch(s: &TestServer, who: &str, path: &str, body: Value) -> Resp {
    s.call(Method::PATCH, path, Some(who), Some(body)).await
}

#[tokio::test]
async fn a_keys_ip_whitelist_changes_in_place_and_applies_to_the_next_request() {
    let s = start().await;
    let m = s.merchant("Whitelists").await;
    let root = m.test_secret_key.as_str();
    let k = s
        .post(
            "/v1/api-keys",
            root,
            json!({"label": "backend", "ip_whitelist": ["127.0.0.1/32"]}),
        )
        .await;
    assert_eq!(k.status, StatusCode::CREATED, "{:?}", k.body);
    let (id, secret) = (
        k.body["id"].as_str().unwrap().to_string(),
        k.body["secret"].as_str().unwrap().to_string(),
    );
    let path = format!("/v1/api-keys/{id}");
    // The key works from loopback, and is now in the authentication cache.
    assert_eq!(
        s.get("/v1/payment-intents", &secret).await.status,
        StatusCode::OK
    );

    let bad = patch(
        &s,
        root,
        &path,
        json!({"ip_whitelist": ["10.0.0.0/8", "10.0.0.0/33"]}),
    )
    .await;
    assert_eq!(
        (bad.status, bad.code()),
        (StatusCode::BAD_REQUEST, "parameter_invalid")
    );
    assert_eq!(bad.body["error"]["param"], "ip_whitelist[1]");
    for (body, code) in [
        (json!({}), "parameter_missing"),
        (json!({"ip_whitelist": "10.0.0.0/8"}), "parameter_invalid"),
        (
            json!({"ip_whitelist": [], "label": "x"}),
            "parameter_unknown",
        ),
    ] {
        let r = patch(&s, root, &path, body.clone()).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, code),
            "{body}"
        );
    }
    let too_many: Vec<String> = (0..51).map(|i| format!("10.0.{i}.0/24")).collect();
    let r = patch(&s, root, &path, json!({"ip_whitelist": too_many})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        s.get("/v1/payment-intents", &secret).await.status,
        StatusCode::OK,
        "a refused change leaves the old list in force"
    );

    // Unknown keys and other merchants' keys are not found; a reader may not change keys.
    let r = patch(
        &s,
        root,
        "/v1/api-keys/key_nope",
        json!({"ip_whitelist": []}),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "resource_missing")
    );
    let other = s.merchant("Someone else").await;
    let r = patch(
        &s,
        other.test_secret_key.as_str(),
        &path,
        json!({"ip_whitelist": []}),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let reader = s
        .post(
            "/v1/api-keys",
            root,
            json!({"permissions": ["api_keys:read"]}),
        )
        .await;
    let r = patch(
        &s,
        reader.body["secret"].as_str().unwrap(),
        &path,
        json!({"ip_whitelist": []}),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "permission_denied")
    );

    // A list without the caller's address locks the key out at once, with the usual error.
    let moved = patch(
        &s,
        root,
        &path,
        json!({"ip_whitelist": ["203.0.113.7", "2001:db8::/32"]}),
    )
    .await;
    assert_eq!(moved.status, StatusCode::OK, "{:?}", moved.body);
    assert_eq!(
        moved.body["ip_whitelist"],
        json!(["203.0.113.7/32", "2001:db8::/32"])
    );
    assert!(moved.body.get("secret").is_none());
    let r = s.get("/v1/payment-intents", &secret).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "ip_not_allowed")
    );
    let listed = s.get("/v1/api-keys", root).await.body.to_string();
    assert!(listed.contains("203.0.113.7/32"), "{listed}");

    // An empty list allows any address again.
    let open = patch(&s, root, &path, json!({"ip_whitelist": []})).await;
    assert_eq!(open.body["ip_whitelist"], json!([]));
    assert_eq!(
        s.get("/v1/payment-intents", &secret).await.status,
        StatusCode::OK
    );

    // A revoked key stays revoked.
    s.call(Method::DELETE, &path, Some(root), None).await;
    let r = patch(&s, root, &path, json!({"ip_whitelist": []})).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "invalid_state_transition")
    );
    s.stop().await;
}
