//! Marketplace order sync over real HTTP against the loopback marketplace simulator: connect
//! checks credentials with the platform (refusals store nothing), sync imports each platform
//! order once, the scheduler runs on the injected clock and backs off on errors, and bol.com,
//! AliExpress and Temu each work end to end.

mod common;

use common::{LastMileUser, TestServer};
use ipay_adapters::marketplaces::Marketplace;
use ipay_adapters::marketsim::{MarketFault, MarketSim, MarketSimHandle};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::HashSet;

const ADMIN: &str = "sync-admin-token-0123456789abcdef";
const MINUTE: i64 = 60_000;

async fn setup(tick_ms: u64) -> (TestServer, MarketSimHandle) {
    let sim = MarketSim::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let urls = sim.urls();
    let srv = common::start_with(move |c| {
        c.admin.token = ADMIN.into();
        c.lastmile.sync.urls = urls;
        c.lastmile.sync.tick_ms = tick_ms;
    })
    .await;
    (srv, sim)
}

async fn post(srv: &TestServer, path: &str, token: &str, body: Option<Value>) -> common::Resp {
    srv.call(Method::POST, path, Some(token), body).await
}

async fn connect(srv: &TestServer, u: &LastMileUser, m: Marketplace) -> common::Resp {
    let path = format!("/api/integrations/{}/connect", m.as_str());
    post(srv, &path, &u.token, Some(MarketSimHandle::credentials(m))).await
}

async fn sync(srv: &TestServer, u: &LastMileUser, m: Marketplace) -> common::Resp {
    let path = format!("/api/integrations/{}/sync", m.as_str());
    post(srv, &path, &u.token, None).await
}

/// Every order of the merchant from `source`, following the cursor.
async fn orders_from(srv: &TestServer, u: &LastMileUser, source: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/orders?limit=100&source={source}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let r = srv.get(&path, &u.token).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        out.extend(r.body["data"].as_array().unwrap().iter().cloned());
        match r.body["pagination"]["next_cursor"].as_str() {
            Some(c) if r.body["pagination"]["has_more"] == json!(true) => {
                cursor = Some(c.to_string())
            }
            _ => break,
        }
    }
    out
}

fn now_ms(srv: &TestServer) -> i64 {
    use ipay_engine::clock::Clock;
    srv.clock.now().ms()
}

#[tokio::test]
async fn connect_with_bad_credentials_is_refused_and_stores_nothing() {
    let (srv, _sim) = setup(0).await;
    let u = srv.lastmile_merchant("Refused BV").await;
    for m in Marketplace::ALL {
        let mut body = MarketSimHandle::credentials(*m);
        let secret = if *m == Marketplace::Bol {
            "client_secret"
        } else {
            "app_secret"
        };
        body[secret] = json!("wrong-secret-0123456789abcdef");
        let path = format!("/api/integrations/{}/connect", m.as_str());
        let r = post(&srv, &path, &u.token, Some(body)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{m:?}: {:?}", r.body);
        assert_eq!(r.code(), "integration_credentials_rejected", "{m:?}");
        let st = srv
            .get(&format!("/api/integrations/{}/", m.as_str()), &u.token)
            .await;
        assert_eq!(st.status, StatusCode::OK);
        assert_eq!(st.body["connected"], json!(false), "{m:?}");
        let r = sync(&srv, &u, *m).await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        assert_eq!(r.code(), "integration_not_connected");
    }
    // A wrong access token is refused too (AliExpress and Temu sign with the secret, but
    // the token names the seller).
    let mut body = MarketSimHandle::credentials(Marketplace::Temu);
    body["access_token"] = json!("someone-else");
    let r = post(&srv, "/api/integrations/temu/connect", &u.token, Some(body)).await;
    assert_eq!(r.code(), "integration_credentials_rejected");
    // Missing and unknown fields are coded 400s.
    let r = post(
        &srv,
        "/api/integrations/aliexpress/connect",
        &u.token,
        Some(json!({"app_key": "1"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "parameter_missing");
    assert_eq!(r.body["error"]["param"], json!("app_secret"));
    let r = post(
        &srv,
        "/api/integrations/bol/connect",
        &u.token,
        Some(json!({"client_id": "a", "client_secret": "b", "password": "x"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    let r = post(&srv, "/api/integrations/bol/connect", &u.token, None).await;
    assert_eq!(r.code(), "parameter_missing");
    let mut body = MarketSimHandle::credentials(Marketplace::Bol);
    body["sync_interval_minutes"] = json!(0);
    let r = post(&srv, "/api/integrations/bol/connect", &u.token, Some(body)).await;
    assert_eq!(r.code(), "parameter_invalid");
    assert_eq!(r.body["error"]["param"], json!("sync_interval_minutes"));
    let st = srv.get("/api/integrations/bol/", &u.token).await;
    assert_eq!(st.body["connected"], json!(false));
}

#[tokio::test]
async fn bol_aliexpress_and_temu_each_import_their_orders_exactly_once() {
    let (srv, sim) = setup(0).await;
    let u = srv.lastmile_merchant("Marketplaces BV").await;
    for m in Marketplace::ALL {
        let ids: HashSet<String> = sim
            .add_orders(*m, 3, now_ms(&srv) - 60 * MINUTE)
            .into_iter()
            .collect();
        let r = connect(&srv, &u, *m).await;
        assert_eq!(r.status, StatusCode::OK, "{m:?}: {:?}", r.body);
        assert_eq!(r.body["connected"], json!(true));
        assert_eq!(r.body["mode"], json!("pull"));
        assert!(
            !r.body.to_string().contains("secret-0123"),
            "secrets never shown"
        );

        let first = sync(&srv, &u, *m).await;
        assert_eq!(first.status, StatusCode::OK, "{m:?}: {:?}", first.body);
        assert_eq!(first.body["fetched"], json!(3), "{m:?}");
        assert_eq!(first.body["created"], json!(3), "{m:?}: {:?}", first.body);
        let again = sync(&srv, &u, *m).await;
        assert_eq!(again.body["created"], json!(0), "{m:?}: {:?}", again.body);
        assert_eq!(again.body["failed"], json!(0));

        let stored = orders_from(&srv, &u, m.as_str()).await;
        let got: HashSet<String> = stored
            .iter()
            .map(|o| o["external_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(stored.len(), 3, "{m:?}");
        assert_eq!(got, ids, "{m:?}");
        let o = &stored[0];
        assert_eq!(o["source"], json!(m.as_str()));
        assert_eq!(o["status"], json!("CREATED"));
        assert!(o["amount"]["value"].as_i64().unwrap() > 0);
        let st = srv
            .get(&format!("/api/integrations/{}/", m.as_str()), &u.token)
            .await;
        assert_eq!(st.body["imported_total"], json!(3));
        assert_eq!(st.body["failures"], json!(0));
        // Reconnecting the same account keeps the cursor, and nothing is imported again.
        let cursor = st.body["cursor"].clone();
        assert!(cursor.is_string());
        assert_eq!(connect(&srv, &u, *m).await.body["cursor"], cursor);
        assert_eq!(sync(&srv, &u, *m).await.body["created"], json!(0));
    }
    // Per-platform details survive mapping.
    let bol = orders_from(&srv, &u, "bol").await;
    assert_eq!(bol[0]["amount"], json!({"value": 2498, "currency": "EUR"}));
    assert_eq!(bol[0]["customer"]["address"]["country"], json!("NL"));
    let ae = orders_from(&srv, &u, "aliexpress").await;
    assert_eq!(ae[0]["amount"]["value"], json!(3190));
    assert_eq!(ae[0]["carrier_code"], json!("DHL"));
    let temu = orders_from(&srv, &u, "temu").await;
    assert_eq!(temu[0]["customer"]["address"]["city"], json!("Lyon"));
    assert_eq!(temu[0]["carrier_code"], json!("COLISSIMO"));
    // The overall status lists the marketplaces next to the webhook shops.
    let all = srv.get("/api/integrations/status", &u.token).await;
    let names: Vec<&str> = all.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["provider"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"bol") && names.contains(&"shopify") && names.contains(&"temu"));
}

async fn run_now(srv: &TestServer, op: &str) -> Value {
    let r = post(srv, "/api/admin/scheduler/run-now", op, None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body
}

#[tokio::test]
async fn the_scheduler_pulls_on_schedule_and_backs_off_on_errors() {
    let (srv, sim) = setup(0).await;
    let op = srv.lastmile_user_by("operator", ADMIN, None).await.token;
    let u = srv.lastmile_merchant("Scheduled BV").await;
    sim.add_orders(Marketplace::Temu, 2, now_ms(&srv) - 10 * MINUTE);
    assert_eq!(
        connect(&srv, &u, Marketplace::Temu).await.status,
        StatusCode::OK
    );

    // A new connection is due at once; then not before its interval has passed.
    let p = run_now(&srv, &op).await;
    assert_eq!(
        (p["ran"].as_i64(), p["created"].as_i64()),
        (Some(1), Some(2)),
        "{p}"
    );
    sim.add_orders(Marketplace::Temu, 3, now_ms(&srv) + 1_000);
    assert_eq!(run_now(&srv, &op).await["ran"], json!(0));
    srv.clock.advance_ms(14 * MINUTE);
    assert_eq!(run_now(&srv, &op).await["ran"], json!(0));
    srv.clock.advance_ms(MINUTE);
    let p = run_now(&srv, &op).await;
    assert_eq!(
        (p["ran"].as_i64(), p["created"].as_i64()),
        (Some(1), Some(3)),
        "{p}"
    );

    // Errors back off: 60 s, then 120 s.
    sim.inject(Marketplace::Temu, MarketFault::Unavailable { times: 1_000 });
    srv.clock.advance_ms(15 * MINUTE);
    assert_eq!(run_now(&srv, &op).await["failed"], json!(1));
    let st = srv.get("/api/integrations/temu/", &u.token).await;
    assert_eq!(st.body["failures"], json!(1));
    assert!(
        st.body["last_error"].as_str().unwrap().contains("503"),
        "{}",
        st.body
    );
    srv.clock.advance_ms(59_000);
    assert_eq!(run_now(&srv, &op).await["ran"], json!(0));
    srv.clock.advance_ms(1_000);
    assert_eq!(run_now(&srv, &op).await["failed"], json!(1));
    srv.clock.advance_ms(119_000);
    assert_eq!(run_now(&srv, &op).await["ran"], json!(0));
    sim.clear_faults();
    sim.add_orders(Marketplace::Temu, 1, now_ms(&srv));
    srv.clock.advance_ms(1_000);
    let p = run_now(&srv, &op).await;
    assert_eq!(
        (p["ran"].as_i64(), p["created"].as_i64()),
        (Some(1), Some(1)),
        "{p}"
    );
    let st = srv.get("/api/integrations/temu/", &u.token).await;
    assert_eq!(st.body["failures"], json!(0));
    assert_eq!(st.body["imported_total"], json!(6));
    assert_eq!(orders_from(&srv, &u, "temu").await.len(), 6);

    // The log has every run, newest first, for operators only.
    let log = srv.get("/api/admin/scheduler/sync-log", &op).await;
    let entries = log.body["data"].as_array().unwrap();
    let statuses: Vec<&str> = entries
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        vec!["ok", "error", "error", "ok", "ok"],
        "{}",
        log.body
    );
    assert_eq!(entries[0]["trigger"], json!("scheduled"));
    assert_eq!(entries[0]["created"], json!(1));
    let denied = srv.get("/api/admin/scheduler/sync-log", &u.token).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let bad = srv.get("/api/admin/scheduler/sync-log?limit=0", &op).await;
    assert_eq!(bad.code(), "parameter_invalid");
    let status = srv.get("/api/admin/scheduler/status", &op).await;
    assert_eq!(status.body["connections"], json!(1));
    assert_eq!(status.body["running"], json!(false));
}

#[tokio::test]
async fn the_background_loop_syncs_when_the_clock_says_so() {
    let (srv, sim) = setup(20).await;
    let u = srv.lastmile_merchant("Loop BV").await;
    sim.add_orders(Marketplace::Aliexpress, 2, now_ms(&srv) - MINUTE);
    assert_eq!(
        connect(&srv, &u, Marketplace::Aliexpress).await.status,
        StatusCode::OK
    );
    let imported = |want: i64| {
        let srv = &srv;
        let u = &u;
        async move {
            for _ in 0..500 {
                let st = srv.get("/api/integrations/aliexpress/", &u.token).await;
                if st.body["imported_total"].as_i64() == Some(want) {
                    return true;
                }
                tokio::task::yield_now().await;
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            false
        }
    };
    assert!(imported(2).await, "the first scheduled sync runs at once");
    sim.add_orders(Marketplace::Aliexpress, 2, now_ms(&srv) + 1_000);
    srv.clock.advance_ms(15 * MINUTE + 1_000);
    assert!(
        imported(4).await,
        "the next one runs once the interval has passed"
    );
}

#[tokio::test]
async fn setup_info_status_and_disconnect_cover_both_kinds_of_integration() {
    let (srv, _sim) = setup(0).await;
    let u = srv.lastmile_merchant("Setup BV").await;
    let bol = srv.get("/api/integrations/bol/setup-info", &u.token).await;
    assert_eq!(bol.status, StatusCode::OK);
    assert_eq!(bol.body["mode"], json!("pull"));
    assert_eq!(
        bol.body["required_fields"],
        json!(["client_id", "client_secret"])
    );
    let shop = srv
        .get("/api/integrations/shopify/setup-info", &u.token)
        .await;
    assert_eq!(shop.body["mode"], json!("push"));
    assert!(
        shop.body["webhook_url"]
            .as_str()
            .unwrap()
            .contains("?account=")
    );
    let unknown = srv.get("/api/integrations/nope/setup-info", &u.token).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let r = sync(&srv, &u, Marketplace::Bol).await;
    assert_eq!(r.code(), "integration_not_connected");
    let r = post(&srv, "/api/integrations/shopify/sync", &u.token, None).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "sync_not_supported");

    assert_eq!(
        connect(&srv, &u, Marketplace::Bol).await.status,
        StatusCode::OK
    );
    let r = post(&srv, "/api/integrations/bol/disconnect", &u.token, None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["connected"], json!(false));
    let r = post(&srv, "/api/integrations/bol/disconnect", &u.token, None).await;
    assert_eq!(r.code(), "integration_not_connected");
    assert_eq!(
        sync(&srv, &u, Marketplace::Bol).await.code(),
        "integration_not_connected"
    );

    let r = post(&srv, "/api/integrations/shopify/connect", &u.token, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = post(&srv, "/api/integrations/shopify/disconnect", &u.token, None).await;
    assert_eq!(r.body["connected"], json!(false));
    let st = srv.get("/api/integrations/shopify", &u.token).await;
    assert_eq!(st.body["connected"], json!(false));
}

#[tokio::test]
async fn an_unreachable_platform_is_a_coded_503_and_stores_nothing() {
    let (srv, sim) = setup(0).await;
    let u = srv.lastmile_merchant("Down BV").await;
    sim.inject(Marketplace::Bol, MarketFault::Unavailable { times: 1 });
    let r = connect(&srv, &u, Marketplace::Bol).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    assert_eq!(r.code(), "channel_unavailable");
    let st = srv.get("/api/integrations/bol/", &u.token).await;
    assert_eq!(st.body["connected"], json!(false));
    // Slow but within the timeout still works.
    sim.inject(Marketplace::Bol, MarketFault::Slow { delay_ms: 50 });
    assert_eq!(
        connect(&srv, &u, Marketplace::Bol).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn two_nodes_passing_at_once_import_each_order_once() {
    use ipay_lastmile::{LastMile, LastMileConfig};
    let (srv, sim) = setup(0).await;
    let u = srv.lastmile_merchant("Two nodes BV").await;
    sim.add_orders(Marketplace::Bol, 40, now_ms(&srv) - 60 * MINUTE);
    // Slow answers keep the first sync running while the other node tries.
    sim.inject(Marketplace::Bol, MarketFault::Slow { delay_ms: 5 });
    assert_eq!(
        connect(&srv, &u, Marketplace::Bol).await.status,
        StatusCode::OK
    );
    // Two more last-mile nodes on the same ledger and hot state (as cluster nodes share them).
    let mut cfg = LastMileConfig::default();
    cfg.sync.urls = sim.urls();
    cfg.sync.tick_ms = 0;
    let a = LastMile::start(&srv.engine, cfg.clone()).await.unwrap();
    let b = LastMile::start(&srv.engine, cfg).await.unwrap();

    let (ra, rb) = tokio::join!(a.run_scheduler_pass(), b.run_scheduler_pass());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.created + rb.created, 40, "{ra:?} {rb:?}");
    assert_eq!(ra.ran + rb.ran, 1, "one node ran it: {ra:?} {rb:?}");

    sim.add_orders(Marketplace::Bol, 10, now_ms(&srv) + 1_000);
    let merchant = ipay_engine::ids::MerchantId::parse(u.merchant_id.as_deref().unwrap()).unwrap();
    let (sa, sb) = tokio::join!(
        a.sync_market(merchant, Marketplace::Bol),
        b.sync_market(merchant, Marketplace::Bol)
    );
    let mut created = 0;
    for r in [sa, sb] {
        match r {
            Ok(out) => created += out.created,
            Err(e) => assert_eq!(e.code(), "sync_in_progress"),
        }
    }
    assert_eq!(created, 10);
    let stored = orders_from(&srv, &u, "bol").await;
    let unique: HashSet<&str> = stored
        .iter()
        .map(|o| o["external_id"].as_str().unwrap())
        .collect();
    assert_eq!((stored.len(), unique.len()), (50, 50));
}

#[tokio::test]
async fn the_sync_routes_are_in_the_openapi_document_with_their_parameter_locations() {
    let (srv, _sim) = setup(0).await;
    let doc = srv
        .call(Method::GET, "/openapi.json", None, None)
        .await
        .body;
    let paths = &doc["paths"];
    for (path, method) in [
        ("/api/integrations/{provider}/", "get"),
        ("/api/integrations/{provider}", "get"),
        ("/api/integrations/{provider}/setup-info", "get"),
        ("/api/integrations/{provider}/connect", "post"),
        ("/api/integrations/{provider}/sync", "post"),
        ("/api/integrations/{provider}/disconnect", "post"),
    ] {
        let op = &paths[path][method];
        assert!(op.is_object(), "{method} {path} missing");
        assert_eq!(op["parameters"][0]["in"], json!("path"), "{path}");
    }
    let sync = &paths["/api/integrations/{provider}/sync"]["post"]["responses"];
    for code in ["200", "400", "401", "403", "404", "409", "503"] {
        assert!(sync[code].is_object(), "sync lacks {code}");
    }
    let log = &paths["/api/admin/scheduler/sync-log"]["get"];
    assert_eq!(log["parameters"][0]["name"], json!("limit"));
    assert_eq!(log["parameters"][0]["in"], json!("query"));
    assert!(paths["/api/admin/scheduler/run-now"]["post"].is_object());
    assert!(paths["/api/admin/scheduler/status"]["get"].is_object());
}
