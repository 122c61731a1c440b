//! Returns and lockers over real HTTP. A parcel paid through the PSP simulator's Stripe and
//! delivered with the driver's OTP is returned: `return.opened`, a return label made at the
//! simulated Sendcloud (its HTTP Basic auth checked) with the IPAY composite PDF (its QR code
//! decoded by an independent decoder), Sendcloud's signed webhooks moving it to received, the
//! refund through the simulated Stripe (pending until Stripe confirms), `return.refunded`.
//! Plus the refusals (bad signature 401, wrong states 409, unknown ids 404) and a locker pickup
//! with lock-out after wrong codes.

mod common;

use common::{LastMileUser, Resp, TestServer};
use ipay_adapters::factory::AdapterFactory;
use ipay_adapters::sendcloud::SendcloudKeys;
use ipay_adapters::sendcloud::sim::SendcloudSim;
use ipay_adapters::sim::{SimHandle, SimOptions, Simulator};
use ipay_engine::AuthContext;
use ipay_engine::channels::ChannelSetup;
use ipay_engine::channels::vault::MasterKey;
use ipay_engine::clock::Timestamp;
use ipay_engine::ids::{ApiKeyId, MerchantId};
use ipay_engine::model::{ApiKey, Permission};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;

const ADMIN: &str = "admin-token-for-returns-0123456789";
const SC_PUBLIC: &str = "sc-public-key-returns";
const SC_SECRET: &str = "sc-secret-key-returns-0123456789";
const DPD_SECRET: &str = "dpd-locker-secret-0123456789";

struct World {
    srv: TestServer,
    psp: SimHandle,
    sendcloud: SendcloudSim,
    shop: LastMileUser,
    driver: LastMileUser,
}

fn sc_keys() -> SendcloudKeys {
    SendcloudKeys {
        public_key: SC_PUBLIC.into(),
        secret_key: SC_SECRET.into(),
    }
}

/// A caller with every permission for `merchant` in test mode (test set-up only).
fn ctx(merchant: &str) -> AuthContext {
    let m = MerchantId::parse(merchant).unwrap();
    AuthContext {
        merchant_id: m,
        livemode: false,
        key: ApiKey {
            id: ApiKeyId::new_at(0),
            label: "test".into(),
            redacted: "test".into(),
            permissions: Permission::ALL.to_vec(),
            ip_whitelist: vec![],
            livemode: false,
            merchant_id: m,
            created: Timestamp(0),
            expires_at: Timestamp(i64::MAX / 2),
            revoked_at: None,
        },
    }
}

async fn world() -> World {
    let psp = Simulator::start(SimOptions::default()).await.unwrap();
    let sendcloud = SendcloudSim::start(sc_keys()).await.unwrap();
    let sc_base = sendcloud.base_url().to_string();
    let srv = common::start_with(|c| {
        c.admin.token = ADMIN.into();
        c.lastmile.sessions.channels = vec!["sandbox".into(), "stripe".into()];
        c.lastmile.returns.sendcloud_base_url = sc_base;
        c.lastmile.returns.sendcloud_public_key = Some(SC_PUBLIC.into());
        c.lastmile.returns.sendcloud_secret_key = Some(SC_SECRET.into());
        c.lastmile
            .lockers
            .carrier_secrets
            .insert("dpd".into(), DPD_SECRET.into());
    })
    .await;
    let config = psp.channels_config();
    srv.engine
        .set_channels(ChannelSetup {
            factory: Some(Arc::new(AdapterFactory::new(&config).unwrap())),
            config,
            master_key: Some(MasterKey::generate()),
            ..Default::default()
        })
        .unwrap();
    psp.set_webhook_url("stripe", &format!("{}/api/payments/webhook", srv.base));
    let shop = srv.lastmile_merchant("Return Shop BV").await;
    let input = serde_json::from_value(json!({
        "channel": "stripe",
        "credentials": psp.credentials("stripe"),
        "notify_url": format!("{}/api/payments/webhook", srv.base),
    }))
    .unwrap();
    srv.engine
        .configure_channel(&ctx(shop.merchant_id.as_deref().unwrap()), input)
        .await
        .unwrap();
    let driver = srv.lastmile_user_by("driver", ADMIN, None).await;
    World {
        srv,
        psp,
        sendcloud,
        shop,
        driver,
    }
}

fn token_of(s: &Value) -> String {
    let url = s["pay_url"].as_str().unwrap();
    url.rsplit("/pay/").next().unwrap().to_string()
}

impl World {
    async fn call(&self, m: Method, path: &str, key: Option<&str>, body: Option<Value>) -> Resp {
        self.srv.call(m, path, key, body).await
    }

    /// A new order's session (created, unpaid).
    async fn session(&self) -> Value {
        let order = json!({
            "customer": {"name": "Jan de Vries", "email": "jan@example.test",
                "address": {"line1": "Damrak 1", "city": "Amsterdam", "postal_code": "1012 LG", "country": "NL"}},
            "items": [{"sku": "MUG", "name": "Mug", "qty": 1, "unit_price": 2_599}],
            "amount": {"value": 2_599, "currency": "EUR"},
            "carrier_code": "DHL", "ipay_flag": true
        });
        let r = self.srv.post("/api/orders", &self.shop.token, order).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let oid = r.body["id"].as_str().unwrap();
        let path = format!("/api/orders/{oid}/create-session");
        let r = self
            .call(Method::POST, &path, Some(&self.shop.token), None)
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.body
    }

    /// Pays a session through the simulated Stripe: the consumer starts the payment, the PSP
    /// confirms with its signed webhook. Returns the consumer's view (PAID, with the OTP).
    async fn pay_with_stripe(&self, s: &Value) -> Value {
        let token = token_of(s);
        let r = self
            .call(
                Method::POST,
                &format!("/api/session/{token}/start-payment"),
                None,
                Some(json!({"channel": "stripe"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let detail = self
            .srv
            .get(
                &format!("/api/payment-sessions/{}", s["id"].as_str().unwrap()),
                &self.shop.token,
            )
            .await;
        let intent = detail.body["payment_intent"].as_str().unwrap().to_string();
        let delivered = self.psp.pay(&intent).await.unwrap();
        assert!(delivered.acknowledged(), "{delivered:?}");
        let view = self
            .call(Method::GET, &format!("/api/session/{token}"), None, None)
            .await;
        assert_eq!(view.body["status"], "PAID", "{:?}", view.body);
        view.body
    }

    async fn parcel(&self, s: &Value, status: &str) {
        let r = self
            .srv
            .post(
                &format!(
                    "/api/payment-sessions/{}/parcel-status",
                    s["id"].as_str().unwrap()
                ),
                &self.shop.token,
                json!({ "status": status }),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }

    /// A session paid with Stripe and delivered with the driver's OTP.
    async fn delivered(&self) -> Value {
        let s = self.session().await;
        let view = self.pay_with_stripe(&s).await;
        self.parcel(&s, "PICKED_UP").await;
        self.parcel(&s, "IN_DELIVERY").await;
        let r = self
            .srv
            .post(
                "/api/driver/verify-otp",
                &self.driver.token,
                json!({"ipay_reference_18": s["ipay_reference_18"], "otp_4": view["otp"]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(r.body["session"]["parcel_status"], "DELIVERED");
        s
    }

    /// The merchant's events of `event_type` about `object`.
    async fn events(&self, event_type: &str, object: &str) -> Vec<Value> {
        let (page, _) = self
            .srv
            .engine
            .list_events(
                &ctx(self.shop.merchant_id.as_deref().unwrap()),
                Some(event_type.into()),
                Some(object.into()),
                None,
                None,
            )
            .await
            .unwrap();
        page.data
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect()
    }

    async fn sendcloud_hook(&self, path: &str, body: &[u8], sig: &str) -> Resp {
        call_raw(&self.srv, path, body, &[("Sendcloud-Signature", sig)]).await
    }

    async fn portal(&self, token: &str) -> Resp {
        self.call(Method::GET, &format!("/api/returns/{token}"), None, None)
            .await
    }
}

/// Decodes every QR code in a PDF with PyMuPDF + zxing-cpp (`tests/qr_decode.py`) in a venv
/// under `target/`, created on first use with pinned versions.
fn decode_pdf_qr(pdf: &[u8]) -> Vec<String> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let venv = format!("{root}/target/qr-venv");
    let python = format!("{venv}/bin/python");
    if !std::path::Path::new(&python).exists() {
        let ok = std::process::Command::new("python3")
            .args(["-m", "venv", &venv])
            .status()
            .unwrap()
            .success()
            && std::process::Command::new(format!("{venv}/bin/pip"))
                .args([
                    "install",
                    "-q",
                    "zxing-cpp==3.1.1",
                    "pymupdf==2.0",
                    "numpy==2.4.6",
                ])
                .status()
                .unwrap()
                .success();
        assert!(ok, "could not create the QR decoder venv at {venv}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("label.pdf");
    std::fs::write(&path, pdf).unwrap();
    let out = std::process::Command::new(&python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/qr_decode.py"))
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Hex HMAC-SHA256 (checked against RFC 4231 in the adapter's unit tests); Sendcloud and the
/// locker carriers sign the same way.
fn hmac_hex(secret: &str, body: &[u8]) -> String {
    ipay_adapters::sendcloud::sign(secret, body)
}

/// POSTs a raw body with extra headers (signatures are over the exact bytes).
async fn call_raw(srv: &TestServer, path: &str, body: &[u8], headers: &[(&str, &str)]) -> Resp {
    let mut rb = srv
        .http
        .post(format!("{}{path}", srv.base))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (h, v) in headers {
        rb = rb.header(*h, *v);
    }
    let r = rb.send().await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Resp {
        status,
        headers,
        body,
    }
}

#[tokio::test]
async fn delivered_parcel_is_returned_labelled_received_and_refunded_through_stripe() {
    let w = world().await;
    let s = w.delivered().await;

    // The consumer opens the return with the pay token: `return.opened`.
    let pay_token = token_of(&s);
    let open = json!({"session_token": pay_token, "reason": "too small"});
    let r = w
        .call(Method::POST, "/api/returns/open", None, Some(open.clone()))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let rtoken = r.body["return_token"].as_str().unwrap().to_string();
    assert_eq!(r.body["portal"]["status"], "opened");
    assert_eq!(r.body["portal"]["amount"], 2_599);
    // Opening again answers the same return.
    let again = w
        .call(Method::POST, "/api/returns/open", None, Some(open))
        .await;
    assert_eq!(again.status, StatusCode::OK, "{:?}", again.body);
    assert_eq!(again.body["return_token"], rtoken.as_str());
    let list = w.srv.get("/api/returns", &w.shop.token).await;
    assert_eq!(list.status, StatusCode::OK, "{:?}", list.body);
    let ret = list.body["data"][0].clone();
    let rid = ret["id"].as_str().unwrap().to_string();
    assert_eq!(ret["status"], "opened");
    let opened = w.events("return.opened", &rid).await;
    assert_eq!(opened.len(), 1, "return.opened once");
    assert_eq!(opened[0]["data"]["id"], rid.as_str());

    // The label: a return parcel at Sendcloud, with our Basic auth, and the composite PDF.
    let r = w
        .call(
            Method::POST,
            "/api/labels/create",
            None,
            Some(json!({"return_token": rtoken})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert!(r.body["return"].is_null(), "consumers see no merchant view");
    let parcels = w.sendcloud.parcels();
    assert_eq!(parcels.len(), 1);
    assert_eq!(parcels[0].order_number, rid);
    assert_eq!(w.sendcloud.auth_failures(), 0);
    assert_eq!(r.body["sendcloud_parcel_id"], parcels[0].id);
    use base64::Engine as _;
    let pdf = base64::engine::general_purpose::STANDARD
        .decode(r.body["composite_pdf_base64"].as_str().unwrap())
        .unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    let qr = r.body["qr_payload"].as_str().unwrap();
    assert_eq!(
        qr,
        format!(
            "IPAY-RETURN:{rid}:{}",
            s["ipay_reference_18"].as_str().unwrap()
        )
    );
    assert_eq!(
        decode_pdf_qr(&pdf),
        vec![qr.to_string()],
        "the QR decodes to its payload"
    );
    // The merchant asking again gets the same label, no second parcel.
    let r = w
        .srv
        .post(
            "/api/labels/create",
            &w.shop.token,
            json!({"return_id": rid}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["return"]["status"], "label_created");
    assert_eq!(w.sendcloud.parcels().len(), 1);

    // Sendcloud's webhooks: a wrong signature is refused and changes nothing.
    let hook = "/api/webhooks/sendcloud/returns";
    let transit = SendcloudSim::status_body(&parcels[0], 91, "Parcel en route");
    let r = w
        .sendcloud_hook(hook, &transit, &hmac_hex("wrong", &transit))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    assert_eq!(r.code(), "webhook_signature_invalid");
    assert_eq!(w.portal(&rtoken).await.body["status"], "label_created");
    // Signed as Sendcloud signs: in transit (twice: the repeat moves nothing, still 200).
    for path in [hook, "/api/integrations/sendcloud/webhook"] {
        let code = w
            .sendcloud
            .send_status(
                &format!("{}{path}", w.srv.base),
                &parcels[0],
                91,
                "Parcel en route",
            )
            .await;
        assert_eq!(code, 200);
    }
    assert_eq!(w.portal(&rtoken).await.body["status"], "in_transit");

    // Delivered back to the merchant: received, refunded through Stripe, which answers
    // `pending` until it confirms.
    let code = w
        .sendcloud
        .send_status(
            &format!("{}{hook}", w.srv.base),
            &parcels[0],
            11,
            "Delivered",
        )
        .await;
    assert_eq!(code, 200);
    let view = w
        .srv
        .get("/api/returns?status=refund_pending", &w.shop.token)
        .await;
    assert_eq!(
        view.body["data"].as_array().unwrap().len(),
        1,
        "{:?}",
        view.body
    );
    let refund_id = view.body["data"][0]["refund_id"]
        .as_str()
        .unwrap()
        .to_string();
    let at_psp: Vec<_> = w.psp.refunds();
    assert_eq!(at_psp.len(), 1);
    assert_eq!(at_psp[0].amount, 2_599);
    assert!(w.events("return.refunded", &rid).await.is_empty());
    // A retry while pending makes no second refund.
    let r = w
        .call(
            Method::POST,
            &format!("/api/returns/{rid}/refund"),
            Some(&w.shop.token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["status"], "refund_pending");
    assert_eq!(w.psp.refunds().len(), 1);

    // Stripe confirms (its signed refund webhook): the engine commits the refund, and the
    // return follows it: refunded, `return.refunded` once.
    let delivered = w
        .psp
        .complete_refund(&refund_id, true)
        .await
        .unwrap()
        .unwrap();
    assert!(delivered.acknowledged(), "{delivered:?}");
    let portal = w.portal(&rtoken).await;
    assert_eq!(portal.body["status"], "refunded", "{:?}", portal.body);
    assert!(portal.body["refunded_at"].is_string());
    let _ = w.portal(&rtoken).await;
    let refunded = w.events("return.refunded", &rid).await;
    assert_eq!(refunded.len(), 1, "return.refunded once");
    assert_eq!(refunded[0]["data"]["refund_id"], refund_id.as_str());
    assert_eq!(w.psp.refunds().len(), 1, "the money moved once");

    // Wrong states are 409: no second label flow, no rejecting a refunded return, a late
    // in-transit webhook moves nothing.
    let r = w
        .call(
            Method::POST,
            &format!("/api/returns/{rid}/reject"),
            Some(&w.shop.token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.code(), "invalid_state_transition");
    let r = w
        .call(
            Method::POST,
            &format!("/api/returns/{rid}/refund"),
            Some(&w.shop.token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    let late = SendcloudSim::status_body(&parcels[0], 91, "Parcel en route");
    let r = w
        .sendcloud_hook(hook, &late, &hmac_hex(SC_SECRET, &late))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["handled"], false);
    assert_eq!(r.body["status"], "refunded");
}

#[tokio::test]
async fn returns_refuse_wrong_states_unknown_ids_and_bad_input() {
    let w = world().await;
    // A parcel that was not delivered cannot be returned.
    let s = w.session().await;
    let r = w
        .call(
            Method::POST,
            "/api/returns/open",
            None,
            Some(json!({"session_token": token_of(&s)})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.code(), "parcel_not_delivered");
    // Unknown tokens, ids and sessions are 404.
    let r = w.portal("nope").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = w
        .call(
            Method::POST,
            "/api/returns/open",
            None,
            Some(json!({"session_token": "x".repeat(43)})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = w
        .srv
        .post(
            "/api/labels/create",
            &w.shop.token,
            json!({"return_id": "ret_01MCC5RM00000000000000000B"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
    let r = w
        .call(
            Method::POST,
            "/api/returns/ret_01MCC5RM00000000000000000B/reject",
            Some(&w.shop.token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Bad input is a coded 400.
    let r = w
        .call(Method::POST, "/api/returns/open", None, Some(json!({})))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "parameter_missing");
    let r = w
        .call(Method::POST, "/api/labels/create", None, Some(json!({})))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = w.srv.get("/api/returns?status=lost", &w.shop.token).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = w
        .sendcloud_hook(
            "/api/webhooks/sendcloud/returns",
            b"not json",
            &hmac_hex(SC_SECRET, b"not json"),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    let r = w
        .sendcloud_hook("/api/webhooks/sendcloud/returns", b"{}", "")
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // A delivered parcel: the merchant opens the return; an amount above what was paid is 400.
    let s = w.delivered().await;
    let sid = s["id"].as_str().unwrap();
    let r = w
        .srv
        .post(
            "/api/returns/open",
            &w.shop.token,
            json!({"session_id": sid, "amount": 9_999}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    let r = w
        .srv
        .post(
            "/api/returns/open",
            &w.shop.token,
            json!({"session_id": sid, "amount": 1_000}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["opened_by"], "merchant");
    let rid = r.body["id"].as_str().unwrap().to_string();
    // Another merchant sees nothing of it.
    let other = w.srv.lastmile_merchant("Other BV").await;
    let r = w
        .call(
            Method::POST,
            &format!("/api/returns/{rid}/reject"),
            Some(&other.token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Refunding before it is received is a wrong state.
    let r = w
        .call(
            Method::POST,
            &format!("/api/returns/{rid}/refund"),
            Some(&w.shop.token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // Rejected: no label any more.
    let r = w
        .call(
            Method::POST,
            &format!("/api/returns/{rid}/reject"),
            Some(&w.shop.token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["status"], "rejected");
    let r = w
        .srv
        .post(
            "/api/labels/create",
            &w.shop.token,
            json!({"return_id": rid}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert!(w.sendcloud.parcels().is_empty());

    // The simulated Sendcloud checks credentials: wrong keys are refused.
    let r = reqwest::Client::new()
        .post(format!("{}/api/v2/parcels", w.sendcloud.base_url()))
        .basic_auth(SC_PUBLIC, Some("wrong"))
        .json(&json!({"parcel": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(w.sendcloud.auth_failures(), 1);
}

async fn locker_call(w: &World, path: &str, body: Value, secret: &str) -> Resp {
    let raw = serde_json::to_vec(&body).unwrap();
    let sig = hmac_hex(secret, &raw);
    call_raw(&w.srv, path, &raw, &[("X-IPAY-Signature", &sig)]).await
}

#[tokio::test]
async fn a_locker_parcel_is_picked_up_with_its_code_and_locks_after_wrong_codes() {
    let w = world().await;
    let s = w.session().await;
    let reference = s["ipay_reference_18"].as_str().unwrap().to_string();
    let token = token_of(&s);
    let issue =
        json!({"ipay_reference_18": reference, "locker_id": "NL-AMS-0042", "compartment": "B7"});

    // Unpaid: no code yet. Unsigned or wrongly signed: 401. Unknown carrier: 404.
    let r = locker_call(&w, "/api/lockers/dpd/issue-code", issue.clone(), DPD_SECRET).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.code(), "session_not_paid");
    w.pay_with_stripe(&s).await;
    w.parcel(&s, "PICKED_UP").await;
    let r = locker_call(&w, "/api/lockers/dpd/issue-code", issue.clone(), "wrong").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = locker_call(&w, "/api/lockers/ups/issue-code", issue.clone(), DPD_SECRET).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "no secret for ups");
    let r = locker_call(&w, "/api/lockers/dhl/issue-code", issue.clone(), DPD_SECRET).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let mut unknown = issue.clone();
    unknown["ipay_reference_18"] = json!("000000000000000097");
    let r = locker_call(&w, "/api/lockers/dpd/issue-code", unknown, DPD_SECRET).await;
    assert!(
        matches!(r.status, StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST),
        "{:?}",
        r.body
    );

    // Issued through the carrier-in-body path: `locker.code_issued`, code only for the consumer.
    let mut any = issue.clone();
    any["carrier"] = json!("DPD");
    let r = locker_call(&w, "/api/lockers/issue-code", any, DPD_SECRET).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(r.body.get("code").is_none());
    let sid = s["id"].as_str().unwrap();
    let issued = w.events("locker.code_issued", sid).await;
    assert_eq!(issued.len(), 1);
    assert!(!issued[0]["data"].to_string().contains("\"code\""));
    let mine = w
        .call(
            Method::GET,
            &format!("/api/session/{token}/locker"),
            None,
            None,
        )
        .await;
    assert_eq!(mine.status, StatusCode::OK, "{:?}", mine.body);
    assert_eq!(mine.body["locker_id"], "NL-AMS-0042");
    let code = mine.body["code"].as_str().unwrap().to_string();
    assert_eq!(code.len(), 4);

    // Wrong codes count down; the right one releases the parcel.
    let wrong = format!("{:04}", (code.parse::<u32>().unwrap() + 1) % 10_000);
    let pickup = |c: &str| json!({"ipay_reference_18": reference, "code": c});
    let r = locker_call(&w, "/api/lockers/dpd/pickup", pickup(&wrong), DPD_SECRET).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert_eq!(r.code(), "locker_code_incorrect");
    let r = locker_call(&w, "/api/lockers/dpd/pickup", pickup("12a4"), DPD_SECRET).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = locker_call(&w, "/api/lockers/dpd/pickup", pickup(&code), DPD_SECRET).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["session"]["status"], "RELEASED");
    assert_eq!(r.body["session"]["parcel_status"], "DELIVERED");
    assert_eq!(w.events("parcel.delivered", sid).await.len(), 1);
    let r = locker_call(&w, "/api/lockers/dpd/pickup", pickup(&code), DPD_SECRET).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "picked up once");

    // Another parcel: five wrong codes lock it; then even the right code is refused (423).
    let s2 = w.session().await;
    w.pay_with_stripe(&s2).await;
    w.parcel(&s2, "PICKED_UP").await;
    let ref2 = s2["ipay_reference_18"].as_str().unwrap().to_string();
    let r = locker_call(
        &w,
        "/api/lockers/dpd/issue-code",
        json!({"ipay_reference_18": ref2, "locker_id": "NL-AMS-0043"}),
        DPD_SECRET,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let code2 = w
        .call(
            Method::GET,
            &format!("/api/session/{}/locker", token_of(&s2)),
            None,
            None,
        )
        .await
        .body["code"]
        .as_str()
        .unwrap()
        .to_string();
    let wrong2 = format!("{:04}", (code2.parse::<u32>().unwrap() + 5_000) % 10_000);
    let body2 = |c: &str| json!({"ipay_reference_18": ref2, "code": c});
    for i in 1..=5 {
        let r = locker_call(&w, "/api/lockers/dpd/pickup", body2(&wrong2), DPD_SECRET).await;
        if i < 5 {
            assert_eq!(
                r.status,
                StatusCode::BAD_REQUEST,
                "attempt {i}: {:?}",
                r.body
            );
        } else {
            assert_eq!(r.status, StatusCode::LOCKED, "attempt {i}: {:?}", r.body);
            assert_eq!(r.code(), "locker_code_locked");
        }
    }
    let r = locker_call(&w, "/api/lockers/dpd/pickup", body2(&code2), DPD_SECRET).await;
    assert_eq!(r.status, StatusCode::LOCKED);
    let mine = w
        .call(
            Method::GET,
            &format!("/api/session/{}/locker", token_of(&s2)),
            None,
            None,
        )
        .await;
    assert_eq!(mine.body["locked"], true);
    assert!(mine.body["code"].is_null(), "a locked code is not shown");

    // Only an operator unlocks it; then the right code releases the parcel.
    let unlock = json!({"ipay_reference_18": ref2});
    let r = w
        .srv
        .post("/api/lockers/unlock", &w.shop.token, unlock.clone())
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    let op = w.srv.lastmile_user_by("operator", ADMIN, None).await;
    let r = w.srv.post("/api/lockers/unlock", &op.token, unlock).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["failures_cleared"], 5);
    let r = locker_call(&w, "/api/lockers/dpd/pickup", body2(&code2), DPD_SECRET).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["session"]["parcel_status"], "DELIVERED");
}

/// Opens a return as the merchant, makes its label and has Sendcloud deliver it back.
async fn returned_to_merchant(w: &World, s: &Value) -> String {
    let r = w
        .srv
        .post(
            "/api/returns/open",
            &w.shop.token,
            json!({"session_id": s["id"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let rid = r.body["id"].as_str().unwrap().to_string();
    let r = w
        .srv
        .post(
            "/api/labels/create",
            &w.shop.token,
            json!({"return_id": rid}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let parcel = w
        .sendcloud
        .parcels()
        .into_iter()
        .find(|p| p.order_number == rid)
        .unwrap();
    let url = format!("{}/api/webhooks/sendcloud/returns", w.srv.base);
    assert_eq!(
        w.sendcloud
            .send_status(&url, &parcel, 11, "Delivered")
            .await,
        200
    );
    rid
}

async fn merchant_return(w: &World, rid: &str) -> Value {
    let r = w.srv.get("/api/returns?limit=100", &w.shop.token).await;
    r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == rid)
        .cloned()
        .unwrap()
}

#[tokio::test]
async fn refunds_that_succeed_at_once_or_fail_then_succeed_on_retry_refund_the_return_once() {
    let w = world().await;

    // Paid through the sandbox: the refund succeeds at once, so the delivery webhook itself
    // ends the return as refunded.
    let s = w.session().await;
    let r = w
        .call(
            Method::POST,
            &format!("/api/session/{}/start-payment", token_of(&s)),
            None,
            Some(json!({"channel": "sandbox", "simulate": "succeed"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let otp = r.body["otp"].clone();
    w.parcel(&s, "PICKED_UP").await;
    let r = w
        .srv
        .post(
            "/api/driver/verify-otp",
            &w.driver.token,
            json!({"ipay_reference_18": s["ipay_reference_18"], "otp_4": otp}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let rid = returned_to_merchant(&w, &s).await;
    let ret = merchant_return(&w, &rid).await;
    assert_eq!(ret["status"], "refunded", "{ret}");
    assert_eq!(w.events("return.refunded", &rid).await.len(), 1);

    // Paid through Stripe, whose refund then fails: refund_failed with the reason; the
    // merchant's retry makes a new refund (a new attempt), which succeeds.
    let s = w.delivered().await;
    let rid = returned_to_merchant(&w, &s).await;
    let ret = merchant_return(&w, &rid).await;
    assert_eq!(ret["status"], "refund_pending", "{ret}");
    let first = ret["refund_id"].as_str().unwrap().to_string();
    w.psp.complete_refund(&first, false).await.unwrap().unwrap();
    let path = format!("/api/returns/{rid}/refund");
    let r = w.call(Method::POST, &path, Some(&w.shop.token), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["status"], "refund_pending", "{:?}", r.body);
    let second = r.body["refund_id"].as_str().unwrap().to_string();
    assert_ne!(first, second, "a retry is a new refund");
    let history: Vec<&str> = r.body["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert!(history.contains(&"refund_failed"), "{history:?}");
    assert!(w.events("return.refunded", &rid).await.is_empty());
    w.psp.complete_refund(&second, true).await.unwrap().unwrap();
    // The simulator confirms through Stripe's webhook, which lands a moment later; the
    // refund's committed event (or a read after it) settles the return.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let ret = merchant_return(&w, &rid).await;
        if ret["status"] == "refunded" {
            break;
        }
        assert_eq!(ret["status"], "refund_pending", "{ret}");
        assert!(
            std::time::Instant::now() < deadline,
            "never refunded: {ret}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(w.events("return.refunded", &rid).await.len(), 1);
    let at_psp: Vec<_> = w
        .psp
        .refunds()
        .into_iter()
        .filter(|x| x.amount == 2_599)
        .collect();
    assert_eq!(
        at_psp.len(),
        2,
        "one failed and one succeeded refund at Stripe"
    );
}

#[tokio::test]
async fn malformed_requests_to_return_and_locker_routes_get_coded_4xx_answers() {
    let w = world().await;
    let bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"\"x\"".to_vec(),
        b"{".to_vec(),
        br#"{"session_token": 5}"#.to_vec(),
        br#"{"return_id": "ret_", "return_token": "t"}"#.to_vec(),
        br#"{"ipay_reference_18": "1234", "locker_id": "", "code": "abcd"}"#.to_vec(),
        format!(
            r#"{{"ipay_reference_18": "{}", "carrier": "dpd"}}"#,
            "9".repeat(5000)
        )
        .into_bytes(),
        br#"{"action": "parcel_status_changed", "parcel": {"id": -1, "status": {"id": "x"}}}"#
            .to_vec(),
        br#"{"action": "parcel_status_changed", "parcel": {"id": 1, "status": {"id": 11}}}"#
            .to_vec(),
    ];
    let paths = [
        "/api/returns/open",
        "/api/labels/create",
        "/api/returns/ret_01MCC5RM00000000000000000B/reject",
        "/api/returns/x/refund",
        "/api/webhooks/sendcloud/returns",
        "/api/integrations/sendcloud/webhook",
        "/api/lockers/issue-code",
        "/api/lockers/dpd/issue-code",
        "/api/lockers/inpost/pickup",
        "/api/lockers/unlock",
    ];
    let mut answered = 0;
    for path in paths {
        for body in &bodies {
            for secret in [None, Some(SC_SECRET), Some(DPD_SECRET)] {
                let sig = secret.map(|s| hmac_hex(s, body)).unwrap_or_default();
                let auth = format!("Bearer {}", w.shop.token);
                let mut headers = vec![
                    ("Sendcloud-Signature", sig.as_str()),
                    ("X-IPAY-Signature", sig.as_str()),
                ];
                if secret.is_none() {
                    headers.push(("Authorization", auth.as_str()));
                }
                let r = call_raw(&w.srv, path, body, &headers).await;
                assert!(
                    r.status.is_client_error() || r.status.is_success(),
                    "{path} {:?}: {} {:?}",
                    String::from_utf8_lossy(body),
                    r.status,
                    r.body
                );
                if r.status.is_client_error() {
                    assert_ne!(r.code(), "<none>", "{path}: uncoded {:?}", r.body);
                }
                answered += 1;
            }
        }
    }
    assert_eq!(answered, paths.len() * bodies.len() * 3);
    for path in [
        "/api/returns/%00",
        &format!("/api/returns/{}", "a".repeat(500)),
        "/api/session/x/locker",
    ] {
        let r = w.call(Method::GET, path, None, None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {:?}", r.body);
    }
}
