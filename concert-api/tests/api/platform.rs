//! The service boots against real dependencies, serves the common endpoints, stops cleanly,
//! and refuses a bad configuration naming the variable.

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
