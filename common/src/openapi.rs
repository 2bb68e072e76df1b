//! What every service's OpenAPI document shares: the `Problem` schema, the security schemes
//! (`bearer`, `queue_token`), and the error answers the platform itself gives, added to each
//! operation by [`Platform`] so no handler has to repeat them.
//!
//! A handler's `#[utoipa::path]` names its own outcomes (its 404 code, its 409s) with a
//! description starting with the `code`; [`Platform`] gives every error response the
//! problem+json body and adds the statuses any request of that shape can get: 400 for a
//! parameter or body, 401 and 503 for a session, 413 and 415 for a JSON body, 500 always.

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ArrayBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Response, Schema};
use utoipa::{Modify, PartialSchema, ToSchema};

use crate::error::PROBLEM_JSON;

/// The security scheme of the session token (`Authorization: Bearer <token>`).
pub const BEARER: &str = "bearer";
/// The security scheme of the waiting-room pass (`X-Queue-Token`).
pub const QUEUE_TOKEN: &str = "queue_token";

/// Every error body (RFC 9457 `application/problem+json`). `code` is stable and meant for
/// programs; `detail` is for people. Extension members appear where an operation says so.
#[derive(serde::Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDoc {
    /// Always `about:blank`.
    #[serde(rename = "type")]
    #[schema(example = "about:blank")]
    pub kind: String,
    /// The status's reason phrase.
    #[schema(example = "Conflict")]
    pub title: String,
    /// The HTTP status, repeated.
    #[schema(minimum = 400, maximum = 599, example = 409)]
    pub status: u16,
    /// For people; names the field of a 400.
    #[schema(example = "seats not available: 3, 4")]
    pub detail: String,
    /// Stable, upper snake case: the platform's `INVALID_REQUEST`, `UNAUTHENTICATED`,
    /// `QUEUE_TOKEN_INVALID`, `FORBIDDEN`, `NOT_FOUND`, `METHOD_NOT_ALLOWED`,
    /// `PAYLOAD_TOO_LARGE`, `UNSUPPORTED_MEDIA_TYPE`, `DEPENDENCY_UNAVAILABLE`, `INTERNAL`,
    /// or one an operation names in its responses.
    #[schema(pattern = "^[A-Z][A-Z0-9_]*$", example = "SEAT_UNAVAILABLE")]
    pub code: String,
    /// `SEAT_UNAVAILABLE` only: the requested seats that are taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seat_nos: Option<Vec<i32>>,
    /// `PURCHASE_LIMIT` only: how many more seats the buyer may hold for the concert.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub remaining: Option<i64>,
}

/// `seat_nos` of a hold: 1 to `max` distinct seat numbers, each 1 or more.
pub fn distinct_seat_numbers(max: usize) -> ArrayBuilder {
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
                .minimum(Some(1)),
        )
        .min_items(Some(1))
        .max_items(Some(max))
        .unique_items(true)
}

/// Completes a service's document with what the platform does for every route:
/// `#[openapi(modifiers(&common::openapi::Platform))]`.
pub struct Platform;

impl Modify for Platform {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "the session token from `POST /api/sessions`; each use extends the \
                         session",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            QUEUE_TOKEN,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Queue-Token",
                "an ACTIVE waiting-room token of the session's user, for the concert the \
                 request touches",
            ))),
        );
        components
            .schemas
            .insert("Problem".into(), ProblemDoc::schema());
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                complete(op);
                name_tags(op);
            }
        }
    }
}

/// utoipa tags an operation with its handler's module path (`crate::routes::wallet`): a
/// reader of the reference wants the resource (`wallet`).
fn name_tags(op: &mut Operation) {
    for tag in op.tags.iter_mut().flatten() {
        if let Some(name) = tag.rsplit("::").next()
            && name.len() < tag.len()
        {
            *tag = name.to_owned();
        }
    }
}

/// The security schemes an operation requires (all of its first requirement).
fn required_schemes(op: &Operation) -> Vec<String> {
    op.security
        .as_ref()
        .and_then(|all| all.first())
        .and_then(|req| serde_json::to_value(req).ok())
        .and_then(|v| v.as_object().map(|o| o.keys().cloned().collect()))
        .unwrap_or_default()
}

fn complete(op: &mut Operation) {
    let schemes = required_schemes(op);
    let session = schemes.iter().any(|s| s == BEARER);
    let pass = schemes.iter().any(|s| s == QUEUE_TOKEN);
    let body = op.request_body.is_some();
    let params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let responses = &mut op.responses.responses;
    let mut add = |status: &str, description: &str| {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(Response::new(description)));
    };
    if body || params {
        add(
            "400",
            "`INVALID_REQUEST`: a malformed, missing or out-of-range body field, parameter or \
             header; the detail names it",
        );
    }
    if session {
        add(
            "401",
            if pass {
                "`UNAUTHENTICATED`: no valid session; or `QUEUE_TOKEN_INVALID`: the queue pass \
                 is missing, unknown, another user's, still waiting, expired, or for another \
                 concert (the detail says which)"
            } else {
                "`UNAUTHENTICATED`: no valid session"
            },
        );
    }
    if body {
        add("413", "`PAYLOAD_TOO_LARGE`: the body is over 64 KiB");
        add(
            "415",
            "`UNSUPPORTED_MEDIA_TYPE`: a `Content-Type` that is not JSON",
        );
    }
    add(
        "500",
        "`INTERNAL`: our fault; the cause is logged, never shown",
    );
    if session {
        add(
            "503",
            "`DEPENDENCY_UNAVAILABLE`: the session store cannot answer right now; nothing was \
             changed",
        );
    }
    for (status, response) in responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        if !status.starts_with(['4', '5']) {
            continue;
        }
        if response.content.is_empty() {
            response.content.insert(
                PROBLEM_JSON.into(),
                ContentBuilder::new()
                    .schema(Some(RefOr::Ref(Ref::from_schema_name("Problem"))))
                    .build(),
            );
        }
        if matches!(status.as_str(), "429" | "503") {
            response
                .headers
                .entry("Retry-After".into())
                .or_insert_with(|| {
                    HeaderBuilder::new()
                        .schema(integer_schema())
                        .description(Some("seconds to wait before retrying"))
                        .build()
                });
        }
    }
}

fn integer_schema() -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
            .build(),
    )
}

/// Paths and methods a document declares, for a router's `Allow` header.
pub fn operations(doc: &OpenApi) -> Vec<(String, actix_web::http::Method)> {
    use actix_web::http::Method;
    let mut out = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (method, op) in [
            (Method::GET, &item.get),
            (Method::PUT, &item.put),
            (Method::POST, &item.post),
            (Method::DELETE, &item.delete),
            (Method::PATCH, &item.patch),
        ] {
            if op.is_some() {
                out.push((path.clone(), method));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(utoipa::OpenApi)]
    #[openapi(paths(held), modifiers(&Platform))]
    struct Doc;

    #[utoipa::path(post, path = "/api/things/{id}",
        params(("id" = i64, Path, description = "a thing")),
        request_body = String,
        security(("bearer" = [], "queue_token" = [])),
        responses((status = 201, description = "made"), (status = 404, description = "`NOT_FOUND`")))]
    #[allow(dead_code)]
    async fn held() {}

    #[test]
    fn the_platform_completes_every_operation() {
        let doc = serde_json::to_value(Doc::openapi()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["bearer"]["scheme"], "bearer");
        assert_eq!(schemes["queue_token"]["name"], "X-Queue-Token");
        let op = &doc["paths"]["/api/things/{id}"]["post"];
        for status in ["400", "401", "404", "413", "415", "500", "503"] {
            let r = &op["responses"][status];
            assert_eq!(
                r["content"][PROBLEM_JSON]["schema"]["$ref"], "#/components/schemas/Problem",
                "{status}: {r}"
            );
        }
        assert!(
            op["responses"]["401"]["description"]
                .as_str()
                .unwrap()
                .contains("QUEUE_TOKEN_INVALID")
        );
        assert!(op["responses"]["503"]["headers"]["Retry-After"].is_object());
        assert!(op["responses"]["201"]["content"].is_null());
        assert_eq!(
            doc["components"]["schemas"]["Problem"]["required"]
                .as_array()
                .unwrap()
                .len(),
            5
        );
    }

    use utoipa::OpenApi as _;
}
