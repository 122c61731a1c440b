//! The OpenAPI 3.1 document, generated from the handlers' annotations, then completed with the
//! responses every operation of a kind can give (401 on secured operations, 503 on all, …).
//!
//! Handlers' annotations list what is particular to each operation; the error answers that come
//! from shared layers (authentication, rate limits, the concurrency limit, path lookups, query
//! parsing) are added here in one pass so that no operation can forget them. This module does
//! not decide any status: it documents what `error.rs` and the middleware already answer.
//!
//! It also corrects what utoipa gets wrong from the handlers' `IntoParams` structs: fields of a
//! query struct come out as required, nullable path parameters; they are optional query
//! parameters. `scripts/contract.sh` checks the result against the running server.

use crate::routes;
use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required, ResponseBuilder};

/// The API description served at `/openapi.json` and browsable at `/docs`.
#[derive(OpenApi)]
#[openapi(
    info(title = "IPAY Engine merchant API", description = "Payment intents, refunds, events, service manifests and API keys (`/v1`)."),
    paths(
        routes::health::healthz, routes::health::readyz, routes::health::metrics,
        routes::admin::create_merchant,
        routes::api_keys::list, routes::api_keys::create, routes::api_keys::update, routes::api_keys::revoke, routes::api_keys::rotate,
        routes::services::upsert, routes::services::list, routes::services::get, routes::services::action, routes::services::delete,
        routes::intents::create, routes::intents::list, routes::intents::get, routes::intents::cancel,
        routes::refunds::create, routes::refunds::list, routes::refunds::get, routes::refunds::confirm,
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
        // The last-mile API's operations name this scheme; without its definition clients
        // (and contract tests) cannot tell how to authenticate them.
        components.add_security_scheme(
            "bearer_jwt",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT (POST /api/auth/login)")
                    .build(),
            ),
        );
    }
}

/// The whole document: the core API plus each feature's own part.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(routes::channels::Doc::openapi());
    doc.merge(routes::subscriptions::Doc::openapi());
    doc.merge(routes::webhooks::Doc::openapi());
    doc.merge(routes::settlement::Doc::openapi());
    doc.merge(routes::lastmile::Doc::openapi());
    doc.merge(routes::analytics::Doc::openapi());
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

/// Moves the parameters utoipa placed in the path although the path has no `{name}` for them
/// (the fields of a query struct) to the query, optional and never `null` (a query string cannot
/// carry one; an absent parameter is the handler's `None`). True when the operation has query
/// parameters afterwards.
fn fix_query_parameters(path: &str, op: &mut Operation) -> bool {
    let Some(params) = op.parameters.as_mut() else {
        return false;
    };
    let mut any = false;
    for p in params.iter_mut() {
        let RefOr::T(p) = p else { continue };
        if p.parameter_in == ParameterIn::Path && !path.contains(&format!("{{{}}}", p.name)) {
            p.parameter_in = ParameterIn::Query;
            p.required = Required::False;
        }
        if p.parameter_in != ParameterIn::Query {
            continue;
        }
        any = true;
        if let Some(RefOr::T(Schema::Object(o))) = p.schema.as_mut()
            && let SchemaType::Array(types) = &o.schema_type
        {
            let kept: Vec<Type> = types
                .iter()
                .filter(|t| **t != Type::Null)
                .cloned()
                .collect();
            o.schema_type = match kept.as_slice() {
                [one] => SchemaType::Type(one.clone()),
                _ => SchemaType::Array(kept),
            };
        }
    }
    any
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
            if let Some(op) = op.as_mut() {
                add_operation_responses(method, path, op);
            }
        }
    }
}

/// [`add_common_responses`] for one operation.
fn add_operation_responses(method: &str, path: &str, op: &mut Operation) {
    if fix_query_parameters(path, op) {
        ensure(
            op,
            400,
            "`parameter_unknown` or `parameter_invalid`: a query parameter the operation does not know, or a value it cannot read; `param` names it",
        );
    }
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
    if MANIFEST_MANAGED.contains(&(method, path)) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if op.get("responses").is_some() {
                    out.push((method.clone(), path.clone(), op.clone()));
                }
            }
        }
        out
    }

    #[test]
    fn path_parameters_are_in_the_path_and_query_parameters_optional() {
        let doc = serde_json::to_value(document()).unwrap();
        let mut queries = 0;
        for (method, path, op) in operations(&doc) {
            for p in op["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap();
                match p["in"].as_str().unwrap() {
                    "path" => assert!(
                        path.contains(&format!("{{{name}}}")),
                        "{method} {path}: path parameter {name} is not in the path"
                    ),
                    "query" => {
                        queries += 1;
                        assert_eq!(p["required"], false, "{method} {path} {name}");
                        assert!(
                            !p["schema"]["type"].to_string().contains("null"),
                            "{method} {path} {name}: {p}"
                        );
                        assert!(
                            op["responses"].get("400").is_some(),
                            "{method} {path}: query parameters but no 400"
                        );
                    }
                    _ => {}
                }
            }
        }
        // /v1/payment-intents alone has seven.
        assert!(queries > 20, "{queries}");
        let list = &doc["paths"]["/v1/payment-intents"]["get"]["parameters"];
        assert!(list.to_string().contains(r#""in":"query""#), "{list}");
    }

    #[test]
    fn every_security_scheme_an_operation_names_is_defined() {
        let doc = serde_json::to_value(document()).unwrap();
        let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
        for (method, path, op) in operations(&doc) {
            for req in op["security"].as_array().into_iter().flatten() {
                for name in req.as_object().unwrap().keys() {
                    assert!(schemes.contains_key(name), "{method} {path}: {name}");
                }
            }
        }
        assert!(schemes.contains_key("bearer_jwt"));
    }
}
