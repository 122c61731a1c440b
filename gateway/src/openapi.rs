//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use crate::routes;
use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

/// The API description served at `/openapi.json` and browsable at `/docs`.
#[derive(OpenApi)]
#[openapi(
    info(title = "IPAY Engine merchant API", description = "Payment intents, refunds, events, service manifests and API keys (`/v1`)."),
    paths(
        routes::health::healthz, routes::health::readyz, routes::health::metrics,
        routes::admin::create_merchant,
        routes::api_keys::list, routes::api_keys::create, routes::api_keys::revoke, routes::api_keys::rotate,
        routes::services::upsert, routes::services::list, routes::services::get, routes::services::action, routes::services::delete,
        routes::intents::create, routes::intents::list, routes::intents::get, routes::intents::cancel,
        routes::refunds::create, routes::refunds::list, routes::refunds::get,
        routes::events::list, routes::events::get,
        routes::sandbox::succeed, routes::sandbox::fail,
    ),
    components(schemas(routes::ErrorEnvelope, routes::ErrorBody, routes::Pagination)),
    modifiers(&Security),
    tags(
        (name = "payment_intents", description = "Collect money through a channel"),
        (name = "refunds", description = "Give money back"),
        (name = "events", description = "Everything that happened, in order"),
        (name = "services", description = "Service manifests and their lifecycle"),
        (name = "api_keys", description = "Keys, permissions, IP whitelists, rotation"),
        (name = "sandbox", description = "Settle sandbox intents (test keys only)"),
        (name = "admin", description = "Operator endpoints (admin token)"),
        (name = "operations", description = "Health, readiness, metrics"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("sk_test_… / sk_live_…")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The whole document: the core API plus each feature's own part.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(routes::channels::Doc::openapi());
    doc.merge(routes::webhooks::Doc::openapi());
    doc.merge(routes::lastmile::Doc::openapi());
    doc
}
