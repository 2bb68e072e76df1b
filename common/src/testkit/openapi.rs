//! Checks every service's OpenAPI document passes: 3.1, every path parameter declared on
//! every operation, every security scheme named exists, every error answer a `Problem`.

use serde_json::Value;

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

/// Panics naming the first operation that breaks a rule every document keeps.
pub fn assert_openapi_complete(doc: &Value) {
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "OpenAPI 3.1, not {}",
        doc["openapi"]
    );
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes");
    assert!(schemes.contains_key("bearer") && schemes.contains_key("queue_token"));
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let templated: Vec<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let at = format!("{} {path}", method.to_uppercase());
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            for name in &templated {
                assert!(
                    params.iter().any(|p| p["in"] == "path"
                        && p["name"] == *name
                        && p["required"] == true
                        && p["schema"].is_object()),
                    "{at}: path parameter `{name}` is not declared"
                );
            }
            for requirement in op["security"].as_array().into_iter().flatten() {
                for name in requirement.as_object().expect("requirement").keys() {
                    assert!(schemes.contains_key(name), "{at}: unknown scheme {name}");
                }
            }
            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{at}: no success"
            );
            for (status, r) in responses {
                assert!(
                    r["description"].as_str().is_some_and(|d| !d.is_empty()),
                    "{at} {status}: no description"
                );
                if status.starts_with(['4', '5']) {
                    assert_eq!(
                        r["content"]["application/problem+json"]["schema"]["$ref"],
                        "#/components/schemas/Problem",
                        "{at} {status}: not a Problem"
                    );
                }
            }
            if op.get("requestBody").is_some() {
                for status in ["400", "413", "415"] {
                    assert!(responses.contains_key(status), "{at}: no {status}");
                }
            }
            if op["security"].to_string().contains("bearer") {
                assert!(responses.contains_key("401"), "{at}: no 401");
            }
        }
    }
}

/// The statuses `method path` documents, sorted (`["200", "401", …]`).
pub fn documented_statuses(doc: &Value, method: &str, path: &str) -> Vec<String> {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not documented");
    op["responses"]
        .as_object()
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default()
}

/// The security schemes `method path` requires (`["bearer", "queue_token"]`).
pub fn required_schemes(doc: &Value, method: &str, path: &str) -> Vec<String> {
    let mut names: Vec<String> = doc["paths"][path][method]["security"]
        .as_array()
        .and_then(|all| all.first())
        .and_then(Value::as_object)
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default();
    names.sort();
    names
}
