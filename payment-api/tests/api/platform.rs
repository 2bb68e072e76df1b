//! The service boots against real dependencies, serves the common endpoints, stops cleanly,
//! and refuses a bad configuration naming the variable.

use common::testkit::{
    assert_binary_rejects_config, assert_openapi_complete, assert_platform_endpoints,
    documented_statuses, required_schemes,
};

use crate::helpers::spawn_platform;

#[tokio::test]
async fn boots_migrated_and_ready_then_stops_cleanly() {
    let p = spawn_platform(|e| e).await;
    assert_platform_endpoints(&p.payment, &["database", "redis"]).await;
    p.payment.stop().await.expect("clean shutdown");
}

#[test]
fn a_bad_setting_stops_the_process_naming_the_variable() {
    assert_binary_rejects_config(
        env!("CARGO_BIN_EXE_payment-api"),
        "WALLET_MAX_BALANCE",
        "-5",
    );
}

#[tokio::test]
async fn the_openapi_document_declares_parameters_security_and_every_error() {
    let p = spawn_platform(|e| e).await;
    let doc: serde_json::Value = reqwest::get(p.payment.url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_openapi_complete(&doc);
    for (method, path, statuses) in [
        ("get", "/api/wallet", &["200", "401", "500", "503"][..]),
        (
            "post",
            "/api/wallet/charges",
            &[
                "201", "400", "401", "409", "413", "415", "422", "500", "503",
            ],
        ),
        (
            "get",
            "/api/wallet/transactions",
            &["200", "400", "401", "500", "503"],
        ),
        (
            "post",
            "/api/payments",
            &[
                "201", "400", "401", "402", "404", "409", "413", "415", "422", "500", "503",
            ],
        ),
        (
            "get",
            "/api/payments/{id}",
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
        required_schemes(&doc, "post", "/api/payments"),
        ["bearer", "queue_token"]
    );
    assert_eq!(
        required_schemes(&doc, "post", "/api/wallet/charges"),
        ["bearer"]
    );
    for path in ["/api/payments", "/api/wallet/charges"] {
        let params = doc["paths"][path]["post"]["parameters"].to_string();
        assert!(params.contains("Idempotency-Key"), "{path}: {params}");
    }
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 5, "only the public routes: {:?}", paths.keys());
    let amount = &doc["components"]["schemas"]["ChargeRequest"]["properties"]["amount"];
    assert_eq!(
        (amount["minimum"].as_i64(), amount["maximum"].as_i64()),
        (Some(1), Some(1_000_000))
    );
    let retry = &doc["paths"]["/api/payments"]["post"]["responses"]["503"]["headers"];
    assert!(retry["Retry-After"].is_object());
}
