//! The service boots against real dependencies, serves the common endpoints, stops cleanly,
//! refuses a bad configuration naming the variable, and documents every route it serves.

use common::testkit::{
    assert_binary_rejects_config, assert_openapi_complete, assert_platform_endpoints,
    documented_statuses, required_schemes,
};
use serde_json::json;
use users_api::error::UsersCode;

use crate::helpers::spawn_app;

#[tokio::test]
async fn boots_migrated_and_ready_then_stops_cleanly() {
    let spawned = spawn_app().await;
    assert_platform_endpoints(&spawned.app, &["database", "redis"]).await;
    spawned.app.stop().await.expect("clean shutdown");
}

#[test]
fn a_bad_setting_stops_the_process_naming_the_variable() {
    assert_binary_rejects_config(
        env!("CARGO_BIN_EXE_users-api"),
        "USERS_API_PORT",
        "not-a-port",
    );
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_code() {
    let spawned = spawn_app().await;
    let doc: serde_json::Value = reqwest::get(spawned.url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (path, method) in [
        ("/api/users", "post"),
        ("/api/users/me", "get"),
        ("/api/sessions", "post"),
        ("/api/sessions", "delete"),
        ("/api/queue/tokens", "post"),
        ("/api/queue/tokens/{token}", "get"),
        ("/api/queue/tokens/{token}/events", "get"),
        ("/api/queue/concerts/{id}", "get"),
        ("/api/admin/queue/concerts/{id}", "get"),
        ("/api/admin/queue/concerts/{id}", "patch"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing from {}",
            doc["paths"]
        );
    }
    let routes: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|ops| ops.as_object().unwrap().len())
        .sum();
    assert_eq!(routes, 10, "nothing beyond API.md's users-api table");
    assert_eq!(
        doc["paths"]["/api/queue/tokens/{token}"]["get"]["parameters"][0]["name"],
        "token"
    );
    let text = doc["paths"].to_string();
    for code in UsersCode::ALL {
        assert!(text.contains(code.code()), "{} is documented", code.code());
    }
}

#[tokio::test]
async fn the_openapi_document_declares_parameters_security_and_every_error() {
    let spawned = spawn_app().await;
    let doc: serde_json::Value = reqwest::get(spawned.url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_openapi_complete(&doc);
    for (method, path, statuses) in [
        (
            "post",
            "/api/users",
            &["201", "400", "409", "413", "415", "429", "500", "503"][..],
        ),
        (
            "post",
            "/api/sessions",
            &["201", "400", "401", "413", "415", "429", "500", "503"],
        ),
        ("get", "/api/users/me", &["200", "401", "500", "503"]),
        (
            "delete",
            "/api/sessions",
            &["204", "400", "401", "429", "500", "503"],
        ),
        (
            "post",
            "/api/queue/tokens",
            &[
                "200", "201", "400", "401", "404", "409", "413", "415", "429", "500", "503",
            ],
        ),
        (
            "get",
            "/api/queue/concerts/{id}",
            &["200", "400", "404", "500", "503"],
        ),
        (
            "get",
            "/api/admin/queue/concerts/{id}",
            &["200", "400", "401", "403", "404", "500", "503"],
        ),
        (
            "patch",
            "/api/admin/queue/concerts/{id}",
            &[
                "200", "400", "401", "403", "404", "409", "413", "415", "500", "503",
            ],
        ),
        (
            "get",
            "/api/queue/tokens/{token}",
            &["200", "400", "401", "404", "500", "503"],
        ),
    ] {
        assert_eq!(
            documented_statuses(&doc, method, path),
            statuses,
            "{method} {path}"
        );
    }
    assert_eq!(
        required_schemes(&doc, "post", "/api/users"),
        Vec::<String>::new()
    );
    assert_eq!(required_schemes(&doc, "get", "/api/users/me"), ["bearer"]);
    let credentials = &doc["components"]["schemas"]["Credentials"]["properties"];
    assert_eq!(credentials["username"]["minLength"], 3);
    assert_eq!(credentials["username"]["maxLength"], 32);
    assert_eq!(credentials["password"]["minLength"], 8);
    assert_eq!(credentials["password"]["maxLength"], 128);
    let log_out = &doc["paths"]["/api/sessions"]["delete"]["parameters"][0];
    assert_eq!(
        (&log_out["name"], &log_out["in"], &log_out["schema"]["type"]),
        (&json!("all"), &json!("query"), &json!("boolean"))
    );
    let session = &doc["components"]["schemas"]["Session"]["properties"];
    assert!(session["absolute_expires_at"].is_object(), "{session}");
    assert_eq!(
        doc["components"]["schemas"]["JoinRequest"]["properties"]["concert_id"]["minimum"],
        1
    );
    assert_eq!(
        required_schemes(&doc, "get", "/api/queue/concerts/{id}"),
        Vec::<String>::new(),
        "the room's public view needs no session"
    );
    assert_eq!(
        required_schemes(&doc, "patch", "/api/admin/queue/concerts/{id}"),
        ["bearer"]
    );
    let schemas = &doc["components"]["schemas"];
    let patch = &schemas["RoomSettingsPatch"]["properties"];
    assert_eq!(patch["max_active"]["maximum"], 100_000);
    assert_eq!(patch["admit_per_tick"]["maximum"], 10_000);
    let status = &schemas["QueueStatus"]["properties"];
    assert!(status["pre_queue"].is_object() && status["opens_at"].is_object());
    assert!(
        schemas["QueueState"].to_string().contains("SOLD_OUT"),
        "{}",
        schemas["QueueState"]
    );
}
