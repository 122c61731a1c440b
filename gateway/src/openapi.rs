//! The OpenAPI 3.1 document, generated from the handlers' annotations, then completed with the
//! responses every operation of a kind can give (401 on secured operations, 503 on all, …).
//!
//! Handlers' annotations list what is particular to each operation; the error answers that come
//! from shared layers (authentication, rate limits, the concurrency limit, path lookups) are added
//! here in one pass so that no operation can forget them. This module does not decide any
//! status: it documents what `error.rs` and the middleware already answer.

use crate::routes;
use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

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
    doc.merge(routes::settlement::Doc::openapi());
    doc.merge(routes::lastmile::Doc::openapi());
    add_common_responses(&mut doc);
    doc
}

/// Operations whose endpoint may belong to a service manifest, which refuses direct changes
/// with 409 `endpoint_managed_by_manifest`.
const MANIFEST_MANAGED: &[(&str, &str)] = &[
    ("delete", "/v1/webhook-endpoints/{id}"),
    ("post", "/v1/webhook-endpoints/{id}/rotate"),
];

/// Adds a response for `status` unless the operation documents that status already (its own
/// description is more precise than the generic one).
fn ensure(op: &mut Operation, status: u16, description: &str) {
    let key = status.to_string();
    if op.responses.responses.contains_key(&key) {
        return;
    }
    let response = ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                .build(),
        )
        .build();
    op.responses.responses.insert(key, RefOr::T(response));
}

/// The responses shared layers give, added to every operation they apply to.
fn add_common_responses(doc: &mut utoipa::openapi::OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            ("get", &mut item.get),
            ("put", &mut item.put),
            ("post", &mut item.post),
            ("delete", &mut item.delete),
            ("patch", &mut item.patch),
        ];
        for (method, op) in ops {
            let Some(op) = op.as_mut() else { continue };
            let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
            if secured {
                ensure(
                    op,
                    401,
                    "`auth_invalid`, `auth_revoked` or `auth_expired`: missing, unknown, revoked or expired credentials",
                );
                ensure(
                    op,
                    429,
                    "`rate_limited`: too many requests for this key or merchant; retry after `Retry-After` seconds",
                );
            }
            if path.contains('{') {
                ensure(
                    op,
                    404,
                    "no such object (or it belongs to another merchant)",
                );
            }
            if op.request_body.is_some() {
                ensure(
                    op,
                    400,
                    "`invalid_json`, `parameter_missing`, `parameter_unknown` or `parameter_invalid`; `param` names the field",
                );
                ensure(
                    op,
                    413,
                    "`payload_too_large`: the body is larger than the server accepts",
                );
            }
            if MANIFEST_MANAGED.contains(&(method, path.as_str())) {
                ensure(
                    op,
                    409,
                    "`endpoint_managed_by_manifest`: change this endpoint through its service manifest",
                );
            }
            ensure(
                op,
                503,
                "`overloaded` or a backend unavailable; retry after `Retry-After` seconds",
            );
        }
    }
}
