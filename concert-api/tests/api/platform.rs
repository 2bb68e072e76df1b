//! The service boots against real dependencies, serves the common endpoints, stops cleanly,
//! publishes its public routes (only) in its OpenAPI document, and refuses a bad
//! configuration naming the variable.

use common::testkit::{assert_binary_rejects_config, assert_platform_endpoints};

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
        env!("CARGO_BIN_EXE_concert-api"),
        "CONCERT_API_PORT",
        "not-a-port",
    );
}

#[tokio::test]
async fn the_openapi_document_lists_every_public_route_and_no_internal_one() {
    let spawned = spawn_app().await;
    let doc: serde_json::Value = reqwest::get(spawned.url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for public in [
        "/api/concerts",
        "/api/concerts/{id}",
        "/api/concerts/{id}/schedules",
        "/api/schedules/{id}/seats",
        "/api/reservations",
        "/api/reservations/{id}",
        "/api/admin/concerts",
        "/api/admin/concerts/{id}/schedules",
    ] {
        assert!(paths.contains(&public), "{public} missing from {paths:?}");
    }
    assert!(
        paths.iter().all(|p| !p.starts_with("/internal/")),
        "{paths:?}"
    );
    let status = &doc["components"]["schemas"]["ReservationStatus"]["enum"];
    assert_eq!(
        status,
        &serde_json::json!(["HELD", "CONFIRMED", "EXPIRED", "CANCELLED", "REJECTED"])
    );
}
