//! The gateway's OpenAPI document: the public documents of users-api, concert-api and
//! payment-api (each service's `openapi()`) merged into one OpenAPI 3.1 document, the
//! contract `GET /api/openapi.json` serves and `docs/openapi.json` holds.
//!
//! The merge works on the documents as JSON, so it takes whatever the services declare:
//!
//! - paths: the union; the same method on the same path in two services is an error;
//! - components (schemas, responses, parameters, security schemes, …): the union by name; the
//!   same name defined differently by two services is an error (identical definitions, e.g.
//!   the shared `Problem`, are kept once);
//! - a service's top-level `security` applies to its own operations only, so it is copied
//!   onto each of its operations that has none of its own;
//! - operation ids must be unique in one document: an id two services both use (`list`,
//!   `get`) is qualified with the service's name (`payment_api.list`), deterministically;
//! - tags: the union by name;
//! - `info`, `servers` (`/`: the document is served by the gateway it describes) and the
//!   `openapi` version are the gateway's own;
//! - OpenAPI links for the stateful flows (sign up → log in → join; hold → pay; a created
//!   resource → read it) are added here when a service's document does not declare them:
//!   they join operations of different services, which no single service document can.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value, json};

pub const TITLE: &str = "Concert ticket reservation platform";
/// The document's version: the workspace's.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Why the services' documents do not merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeError(pub Vec<String>);

impl fmt::Display for MergeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the services' OpenAPI documents do not merge:\n  {}",
            self.0.join("\n  ")
        )
    }
}

impl std::error::Error for MergeError {}

/// The three services' public documents, by service name, in the gateway's order.
pub fn service_documents() -> Vec<(&'static str, Value)> {
    [
        ("users-api", users_api::openapi()),
        ("concert-api", concert_api::openapi()),
        ("payment-api", payment_api::openapi()),
    ]
    .into_iter()
    .map(|(name, doc)| {
        let value = serde_json::to_value(&doc).expect("an OpenAPI document serialises");
        (name, value)
    })
    .collect()
}

/// The merged document of the three services.
pub fn merged() -> Result<Value, MergeError> {
    merge(&service_documents())
}

/// The merged document as the gateway serves it: pretty JSON ending with a newline.
pub fn document() -> Result<String, MergeError> {
    let doc = merged()?;
    let mut json = serde_json::to_string_pretty(&doc).expect("JSON serialises");
    json.push('\n');
    Ok(json)
}

/// Merges `services` (name, OpenAPI document as JSON) into the gateway's document.
pub fn merge(services: &[(&str, Value)]) -> Result<Value, MergeError> {
    let mut errors = Vec::new();
    let mut paths = Map::new();
    // section -> name -> (owner, definition)
    let mut components: BTreeMap<String, BTreeMap<String, (String, Value)>> = BTreeMap::new();
    let mut tags: BTreeMap<String, Value> = BTreeMap::new();
    // (service, path, method) of every operation, to qualify colliding operation ids.
    let mut owners: Vec<(String, String, String)> = Vec::new();

    for (service, doc) in services {
        let top_security = doc.get("security").cloned();
        for (path, item) in object(doc.get("paths")) {
            let Value::Object(item) = item else {
                errors.push(format!("{service}: path {path} is not an object"));
                continue;
            };
            let merged = paths
                .entry(path.clone())
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("path items are objects");
            for (key, value) in item {
                let mut value = value.clone();
                let is_method = METHODS.contains(&key.as_str());
                if is_method {
                    if let (Some(security), Value::Object(op)) = (&top_security, &mut value) {
                        op.entry("security").or_insert_with(|| security.clone());
                    }
                    owners.push((service.to_string(), path.clone(), key.clone()));
                }
                match merged.get(&key) {
                    None => {
                        merged.insert(key.clone(), value);
                    }
                    Some(_) if is_method => errors.push(format!(
                        "{} {path} is declared by two services (the second: {service})",
                        key.to_uppercase()
                    )),
                    Some(existing) if *existing != value => errors.push(format!(
                        "path {path}: `{key}` is declared differently by two services (the second: {service})"
                    )),
                    Some(_) => {}
                }
            }
        }
        for (section, entries) in object(doc.get("components")) {
            let target = components.entry(section.clone()).or_default();
            for (name, def) in object(Some(&entries)) {
                match target.get(&name) {
                    None => {
                        target.insert(name, (service.to_string(), def));
                    }
                    Some((owner, existing)) if *existing != def => errors.push(format!(
                        "components.{section}.{name} is defined differently by {owner} and {service}:\n    {owner}: {}\n    {service}: {}",
                        compact(existing),
                        compact(&def)
                    )),
                    Some(_) => {}
                }
            }
        }
        for tag in doc
            .get("tags")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(name) = tag.get("name").and_then(Value::as_str) {
                match tags.get(name) {
                    Some(existing) if existing != tag => errors.push(format!(
                        "tag {name} is described differently by two services (the second: {service})"
                    )),
                    _ => {
                        tags.insert(name.to_owned(), tag.clone());
                    }
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(MergeError(errors));
    }

    qualify_operation_ids(&mut paths, &owners);
    add_links(&mut paths);

    let mut doc = Map::new();
    doc.insert("openapi".into(), json!("3.1.0"));
    doc.insert(
        "info".into(),
        json!({
            "title": TITLE,
            "description": "Every public route of users-api, concert-api and payment-api as the \
                gateway exposes them (/api/**). Generated from the services' code by `apidoc`.",
            "version": VERSION,
        }),
    );
    doc.insert("servers".into(), json!([{"url": "/"}]));
    doc.insert("paths".into(), Value::Object(paths));
    let components: Map<String, Value> = components
        .into_iter()
        .map(|(section, entries)| {
            let entries: Map<String, Value> =
                entries.into_iter().map(|(k, (_, v))| (k, v)).collect();
            (section, Value::Object(entries))
        })
        .collect();
    if !components.is_empty() {
        doc.insert("components".into(), Value::Object(components));
    }
    if !tags.is_empty() {
        doc.insert("tags".into(), Value::Array(tags.into_values().collect()));
    }
    Ok(Value::Object(doc))
}

/// `(path, method)` of every operation of `doc`, methods upper-case: what the drift check
/// compares with the gateway's routes.
pub fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    object(doc.get("paths"))
        .into_iter()
        .flat_map(|(path, item)| {
            object(Some(&item))
                .into_iter()
                .filter(|(k, _)| METHODS.contains(&k.as_str()))
                .map(move |(k, _)| (path.clone(), k.to_uppercase()))
        })
        .collect()
}

fn object(v: Option<&Value>) -> Vec<(String, Value)> {
    match v {
        Some(Value::Object(m)) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        _ => Vec::new(),
    }
}

fn compact(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 300 {
        format!("{}…", &s[..s.floor_char_boundary(300)])
    } else {
        s
    }
}

/// Operation ids used by more than one service become `<service>.<id>` (`-` → `_`).
fn qualify_operation_ids(paths: &mut Map<String, Value>, owners: &[(String, String, String)]) {
    let id_of = |paths: &Map<String, Value>, path: &str, method: &str| {
        paths[path][method]
            .get("operationId")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let mut services_by_id: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for (service, path, method) in owners {
        if let Some(id) = id_of(paths, path, method) {
            services_by_id.entry(id).or_default().insert(service);
        }
    }
    for (service, path, method) in owners {
        if let Some(id) = id_of(paths, path, method)
            && services_by_id[&id].len() > 1
        {
            paths[path.as_str()][method.as_str()]["operationId"] =
                json!(format!("{}.{id}", service.replace('-', "_")));
        }
    }
}

/// One OpenAPI link: from a response of (method, path) to the operation (method, path).
struct Link {
    name: &'static str,
    from: (&'static str, &'static str, &'static str),
    to: (&'static str, &'static str),
    description: &'static str,
    parameters: Value,
    request_body: Option<Value>,
}

fn links() -> Vec<Link> {
    vec![
        Link {
            name: "LogIn",
            from: ("post", "/api/users", "201"),
            to: ("post", "/api/sessions"),
            description: "Log in with the credentials the account was made with.",
            parameters: json!({}),
            request_body: Some(json!({
                "username": "$request.body#/username",
                "password": "$request.body#/password",
            })),
        },
        Link {
            name: "JoinQueue",
            from: ("post", "/api/sessions", "201"),
            to: ("post", "/api/queue/tokens"),
            description: "Join a concert's waiting room with the new session.",
            parameters: json!({"header.Authorization": "Bearer {$response.body#/token}"}),
            request_body: None,
        },
        Link {
            name: "QueueStatus",
            from: ("post", "/api/queue/tokens", "201"),
            to: ("get", "/api/queue/tokens/{token}"),
            description: "Read the new queue token's status.",
            parameters: json!({"token": "$response.body#/token"}),
            request_body: None,
        },
        Link {
            name: "GetReservation",
            from: ("post", "/api/reservations", "201"),
            to: ("get", "/api/reservations/{id}"),
            description: "Read the new hold.",
            parameters: json!({"id": "$response.body#/id"}),
            request_body: None,
        },
        Link {
            name: "CancelReservation",
            from: ("post", "/api/reservations", "201"),
            to: ("delete", "/api/reservations/{id}"),
            description: "Cancel the new hold.",
            parameters: json!({"id": "$response.body#/id"}),
            request_body: None,
        },
        Link {
            name: "Pay",
            from: ("post", "/api/reservations", "201"),
            to: ("post", "/api/payments"),
            description: "Pay for the new hold with the same queue pass.",
            parameters: json!({"header.X-Queue-Token": "$request.header.X-Queue-Token"}),
            request_body: Some(json!({"reservation_id": "$response.body#/id"})),
        },
        Link {
            name: "GetPayment",
            from: ("post", "/api/payments", "201"),
            to: ("get", "/api/payments/{id}"),
            description: "Read the new payment.",
            parameters: json!({"id": "$response.body#/id"}),
            request_body: None,
        },
    ]
}

/// Adds [`links`] whose two operations exist, to a response that declares no links itself.
fn add_links(paths: &mut Map<String, Value>) {
    let mut by_response: BTreeMap<(&str, &str, &str), Map<String, Value>> = BTreeMap::new();
    for link in links() {
        let (method, path, status) = link.from;
        let (to_method, to_path) = link.to;
        let response_exists = paths
            .get(path)
            .and_then(|p| p.get(method))
            .and_then(|op| op.get("responses"))
            .and_then(|r| r.get(status))
            .is_some();
        let Some(target) = paths.get(to_path).and_then(|p| p.get(to_method)) else {
            continue;
        };
        if !response_exists {
            continue;
        }
        // `$request.header.X` needs X declared by the source operation (schemathesis rejects
        // the link otherwise): such a parameter is left out until the service declares it.
        let source = &paths[path][method];
        let parameters: Map<String, Value> = link
            .parameters
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, expr)| {
                match expr
                    .as_str()
                    .and_then(|e| e.strip_prefix("$request.header."))
                {
                    Some(header) => declares_header(source, header),
                    None => true,
                }
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut body = Map::new();
        match target.get("operationId").and_then(Value::as_str) {
            Some(id) => body.insert("operationId".into(), json!(id)),
            None => body.insert(
                "operationRef".into(),
                json!(format!("#/paths/{}/{to_method}", pointer_escape(to_path))),
            ),
        };
        body.insert("description".into(), json!(link.description));
        if !parameters.is_empty() {
            body.insert("parameters".into(), Value::Object(parameters));
        }
        if let Some(rb) = link.request_body {
            body.insert("requestBody".into(), rb);
        }
        by_response
            .entry(link.from)
            .or_default()
            .insert(link.name.into(), Value::Object(body));
    }
    for ((method, path, status), new) in by_response {
        let response = &mut paths[path][method]["responses"][status];
        // A `$ref` response cannot carry links beside it; a response with its own links
        // keeps them (the service knows better).
        if response.get("$ref").is_some() || response.get("links").is_some() {
            continue;
        }
        response["links"] = Value::Object(new);
    }
}

fn declares_header(operation: &Value, name: &str) -> bool {
    operation
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|p| {
            p.get("in").and_then(Value::as_str) == Some("header")
                && p.get("name").and_then(Value::as_str) == Some(name)
        })
}

fn pointer_escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(paths: Value, schemas: Value) -> Value {
        json!({"openapi": "3.1.0", "info": {"title": "x", "version": "1"}, "paths": paths,
            "components": {"schemas": schemas}})
    }

    #[test]
    fn the_services_documents_merge() {
        let merged = merged().expect("the services' documents merge");
        assert_eq!(merged["openapi"], "3.1.0");
        assert_eq!(merged["info"]["title"], TITLE);
        assert_eq!(merged["servers"], json!([{"url": "/"}]));
        let ops = operations(&merged);
        for (path, method) in [
            ("/api/users", "POST"),
            ("/api/concerts", "GET"),
            ("/api/payments", "POST"),
        ] {
            assert!(
                ops.contains(&(path.into(), method.into())),
                "{method} {path}"
            );
        }
        let ids: Vec<_> = ops
            .iter()
            .filter_map(|(p, m)| merged["paths"][p][m.to_lowercase()]["operationId"].as_str())
            .collect();
        let unique: BTreeSet<_> = ids.iter().collect();
        assert_eq!(ids.len(), unique.len(), "operation ids are unique: {ids:?}");
        assert!(
            operations(&merged)
                .iter()
                .all(|(p, _)| p.starts_with("/api/")),
            "public routes only"
        );
    }

    #[test]
    fn a_schema_defined_differently_by_two_services_fails_loudly() {
        let a = doc(json!({}), json!({"Problem": {"type": "object"}}));
        let b = doc(json!({}), json!({"Problem": {"type": "string"}}));
        let err = merge(&[("a", a.clone()), ("b", b)]).unwrap_err();
        assert!(
            err.to_string()
                .contains("components.schemas.Problem is defined differently by a and b"),
            "{err}"
        );
        // The same definition twice is one schema.
        let merged = merge(&[("a", a.clone()), ("c", a)]).unwrap();
        assert_eq!(
            merged["components"]["schemas"]["Problem"],
            json!({"type": "object"})
        );
    }

    #[test]
    fn the_same_operation_in_two_services_fails_and_shared_ids_are_qualified() {
        let a = doc(
            json!({"/x": {"get": {"operationId": "list", "responses": {}}}}),
            json!({}),
        );
        let err = merge(&[("a-api", a.clone()), ("b-api", a.clone())]).unwrap_err();
        assert!(
            err.to_string()
                .contains("GET /x is declared by two services")
        );
        let b = doc(
            json!({"/y": {"get": {"operationId": "list", "responses": {}}}}),
            json!({}),
        );
        let merged = merge(&[("a-api", a), ("b-api", b)]).unwrap();
        assert_eq!(merged["paths"]["/x"]["get"]["operationId"], "a_api.list");
        assert_eq!(merged["paths"]["/y"]["get"]["operationId"], "b_api.list");
    }

    #[test]
    fn a_services_top_level_security_stays_with_its_operations() {
        let mut a = doc(json!({"/x": {"get": {"responses": {}}}}), json!({}));
        a["security"] = json!([{"session": []}]);
        let b = doc(json!({"/y": {"get": {"responses": {}}}}), json!({}));
        let merged = merge(&[("a", a), ("b", b)]).unwrap();
        assert_eq!(
            merged["paths"]["/x"]["get"]["security"],
            json!([{"session": []}])
        );
        assert!(merged["paths"]["/y"]["get"].get("security").is_none());
        assert!(merged.get("security").is_none());
    }
}
