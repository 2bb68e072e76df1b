//! The service boots against real dependencies, serves the common endpoints, stops cleanly,
//! publishes its public routes (only) in its OpenAPI document, and refuses a bad
//! configuration naming the variable.

use common::testkit::{
    assert_binary_rejects_config, assert_openapi_complete, assert_platform_endpoints,
    documented_statuses, required_schemes,
};

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
        "/api/admin/concerts/{id}",
        "/api/admin/concerts/{id}/schedules",
        "/api/admin/concerts/{id}/sale",
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
        ("get", "/api/concerts", &["200", "400", "500"][..]),
        ("get", "/api/concerts/{id}", &["200", "400", "404", "500"]),
        (
            "get",
            "/api/schedules/{id}/seats",
            &["200", "400", "401", "404", "500", "503"],
        ),
        (
            "post",
            "/api/reservations",
            &[
                "201", "400", "401", "404", "409", "413", "415", "422", "429", "500", "503",
            ],
        ),
        (
            "delete",
            "/api/reservations/{id}",
            &["200", "400", "401", "404", "409", "429", "500", "503"],
        ),
        (
            "post",
            "/api/admin/concerts/{id}/schedules",
            &[
                "201", "400", "401", "403", "404", "413", "415", "500", "503",
            ],
        ),
        (
            "patch",
            "/api/admin/concerts/{id}",
            &[
                "200", "400", "401", "403", "404", "413", "415", "500", "503",
            ],
        ),
        (
            "get",
            "/api/admin/concerts/{id}/sale",
            &["200", "400", "401", "403", "404", "500", "503"],
        ),
    ] {
        assert_eq!(
            documented_statuses(&doc, method, path),
            statuses,
            "{method} {path}"
        );
    }
    assert_eq!(
        required_schemes(&doc, "post", "/api/reservations"),
        ["bearer", "queue_token"]
    );
    assert_eq!(
        required_schemes(&doc, "get", "/api/reservations"),
        ["bearer"]
    );
    let conflict =
        doc["paths"]["/api/reservations"]["post"]["responses"]["409"]["description"].to_string();
    assert!(conflict.contains("SEAT_UNAVAILABLE") && conflict.contains("BOOKING_CLOSED"));
    assert!(conflict.contains("PURCHASE_LIMIT") && conflict.contains("IDEMPOTENCY_KEY_IN_USE"));
    let key = &doc["paths"]["/api/reservations"]["post"]["parameters"][0];
    assert_eq!(
        (key["name"].as_str(), key["in"].as_str()),
        (Some("Idempotency-Key"), Some("header"))
    );
    let limit = &doc["paths"]["/api/concerts"]["get"]["parameters"][0];
    assert_eq!(
        (limit["name"].as_str(), limit["schema"]["minimum"].as_i64()),
        (Some("limit"), Some(1))
    );
    assert_eq!(limit["schema"]["maximum"], 100);
    let schemas = &doc["components"]["schemas"];
    let seats = &schemas["HoldRequest"]["properties"]["seat_nos"];
    assert_eq!(
        (seats["minItems"].as_i64(), seats["maxItems"].as_i64()),
        (Some(1), Some(4))
    );
    assert_eq!(seats["uniqueItems"], true);
    let schedule = &schemas["NewScheduleRequest"]["properties"];
    assert_eq!(schedule["seat_count"]["maximum"], 1000);
    assert_eq!(schedule["price"]["maximum"], 10_000_000);
    assert!(schemas["Problem"]["properties"]["seat_nos"].is_object());
    assert!(schemas["Problem"]["properties"]["remaining"].is_object());
    let limit = &schemas["Concert"]["properties"]["max_tickets_per_user"];
    assert_eq!(
        (limit["minimum"].as_i64(), limit["maximum"].as_i64()),
        (Some(1), Some(20))
    );
    let sale = &schemas["SaleStats"]["properties"];
    for field in [
        "concert_id",
        "seats_total",
        "available",
        "held",
        "sold",
        "revenue",
        "reservations",
        "holds_per_minute",
        "sold_per_minute",
        "schedules",
    ] {
        assert!(sale[field].is_object(), "SaleStats.{field}");
    }
}

#[tokio::test]
async fn a_wrong_method_is_405_naming_the_methods_the_path_takes() {
    let spawned = spawn_app().await;
    let c = reqwest::Client::new();
    for (method, path, allow) in [
        (reqwest::Method::PUT, "/api/reservations", "GET, POST"),
        (reqwest::Method::POST, "/api/reservations/7", "DELETE, GET"),
        (reqwest::Method::GET, "/internal/settlements", "POST"),
    ] {
        let res = c
            .request(method.clone(), spawned.url(path))
            // The service credential /internal/** requires (public routes ignore it).
            .header("x-internal-token", common::testkit::INTERNAL_TEST_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "{method} {path}");
        assert_eq!(res.headers()["allow"], allow, "{method} {path}");
    }
}
