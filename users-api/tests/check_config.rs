//! `users-api check-config`: the configuration read exactly as `serve` reads it, nothing
//! connected, one JSON report on stdout; exit 0 when valid, 2 when not.

use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn check_config(env: &[(&str, &str)]) -> (Output, Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_users-api"));
    cmd.arg("check-config")
        .env_clear()
        .stdin(Stdio::null())
        // Unreachable stores: the check must not connect to anything.
        .env(
            "USERS_DATABASE_URL",
            "postgres://app:hunter2@127.0.0.1:1/nowhere",
        )
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .env("KAFKA_BROKERS", "127.0.0.1:1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run users-api check-config");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("one JSON object on stdout ({e}): {stdout}"));
    (out, report)
}

fn settings(report: &Value) -> Vec<&str> {
    report["settings"]
        .as_array()
        .expect("settings")
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

#[test]
fn a_good_configuration_is_ok_and_lists_every_variable_read() {
    let (out, report) = check_config(&[("QUEUE_MAX_ACTIVE", "50")]);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report["service"], "users-api");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["errors"], serde_json::json!([]));
    let names = settings(&report);
    // Set or not, every variable users-api reads is named.
    for name in [
        "QUEUE_MAX_ACTIVE",
        "USERS_DATABASE_URL",
        "USERS_API_PORT",
        "SHUTDOWN_TIMEOUT_SECS",
        "INTERNAL_API_TOKEN",
        "KAFKA_SECURITY_PROTOCOL",
        "KAFKA_CREATE_TOPICS",
        "REDIS_CA_CERT",
        "ADMIN_PASSWORD",
        "RUST_LOG",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    // Only what it reads: another service's variables are not listed.
    assert!(!names.contains(&"PAYMENT_DATABASE_URL"), "{names:?}");
    assert!(!names.contains(&"WALLET_MAX_BALANCE"), "{names:?}");
    let mut sorted = names.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, names, "sorted, each once");
}

#[test]
fn out_of_range_and_malformed_values_are_named_with_exit_2() {
    let (out, report) = check_config(&[
        ("QUEUE_MAX_ACTIVE", "0"),
        ("KAFKA_BROKERS", "kafka-without-port"),
        ("USERS_DATABASE_URL", "mysql://app:hunter2@db/users"),
        ("INTERNAL_API_TOKEN", "too-short-secret"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{report}");
    assert_eq!(report["ok"], false);
    let errors = report["errors"].as_array().unwrap();
    let vars: Vec<&str> = errors.iter().map(|e| e["var"].as_str().unwrap()).collect();
    for var in [
        "QUEUE_MAX_ACTIVE",
        "KAFKA_BROKERS",
        "USERS_DATABASE_URL",
        "INTERNAL_API_TOKEN",
    ] {
        assert!(vars.contains(&var), "{var} in {report}");
    }
    let queue = errors
        .iter()
        .find(|e| e["var"] == "QUEUE_MAX_ACTIVE")
        .unwrap();
    assert_eq!(queue["value"], "0");
    assert!(
        queue["reason"].as_str().unwrap().contains("between"),
        "{queue}"
    );
    let text = report.to_string();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains("too-short-secret"), "{text}");
    // Reading went on past the errors: the whole list is still there.
    assert!(settings(&report).contains(&"SESSION_MAX_LIFETIME_SECS"));
}

#[test]
fn serve_names_every_bad_variable_and_exits_1() {
    let out = Command::new(env!("CARGO_BIN_EXE_users-api"))
        .arg("serve")
        .env_clear()
        .env("QUEUE_MAX_ACTIVE", "0")
        .env("KAFKA_BROKERS", "nope")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("QUEUE_MAX_ACTIVE"), "{stderr}");
    assert!(stderr.contains("KAFKA_BROKERS"), "{stderr}");
}
