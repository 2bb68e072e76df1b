//! The service boots against real dependencies, serves the common endpoints, stops cleanly,
//! and refuses a bad configuration naming the variable.

use common::testkit::{assert_binary_rejects_config, assert_platform_endpoints};

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
