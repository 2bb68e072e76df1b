//! The load tool at toy scale against the whole platform (three service processes, batch,
//! nginx): its flash sale sells a small concert out and its invariant audit passes; its
//! contended hold finds exactly one winner. docs/BENCHMARKS.md rests on this tool and audit,
//! so they are kept working by the test suite, not only by benchmark runs.

use e2e::process::binary;
use e2e::{Gateway, Platform};
use serde_json::Value;

/// Runs `loadtest run <args>` against the platform; returns its exit code and JSON report.
async fn loadtest(platform: &Platform, gateway: &str, args: &[&str]) -> (i32, Value) {
    let report = std::env::temp_dir().join(format!("loadtest-{}-{}.json", platform.id, args[0]));
    let out = tokio::process::Command::new(binary("loadtest"))
        .arg("run")
        .args(args)
        .args(["--gateway", gateway, "--json"])
        .arg(&report)
        .envs(platform.env())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let json = std::fs::read(&report)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| panic!("no report from loadtest {args:?}:\n{stdout}\n{stderr}"));
    let _ = std::fs::remove_file(&report);
    (out.status.code().unwrap_or(-1), json)
}

fn answers(report: &Value, endpoint: &str, status: &str) -> u64 {
    report["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == endpoint)
        .and_then(|e| e["statuses"][status].as_u64())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_load_tool_sells_out_a_small_concert_and_its_audit_passes() {
    let platform = Platform::start().await;
    let _batch = platform
        .start_batch(&[
            ("QUEUE_MAX_ACTIVE", "8"),
            ("QUEUE_ADMIT_PER_TICK", "4"),
            ("QUEUE_ADMIT_INTERVAL_MS", "100"),
        ])
        .await;
    // All load comes from one address.
    let gateway = Gateway::start_for_one_address(&platform, 10_000, &[]).await;
    let gw = gateway.url.clone();

    // 40 fans, 20 seats, at most 8 buying at once.
    let (code, sale) = loadtest(
        &platform,
        &gw,
        &[
            "flash-sale",
            "--users",
            "40",
            "--schedules",
            "2",
            "--seats-per-schedule",
            "10",
            "--concurrency",
            "16",
            "--poll-ms",
            "200",
            "--arrival-ms",
            "200",
            "--max-duration",
            "120",
        ],
    )
    .await;
    assert_eq!(code, 0, "the sale's audit passes: {:#}", sale["audit"]);
    let checks = sale["audit"].as_array().unwrap();
    assert!(checks.len() >= 7, "{checks:?}");
    assert!(checks.iter().all(|c| c["ok"] == true));
    assert_eq!(sale["facts"]["seats"], "20");
    assert_eq!(answers(&sale, "POST /api/payments", "201"), 20);
    assert_eq!(answers(&sale, "POST /api/queue/tokens", "201"), 40);
    assert!(
        sale["latencies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["name"] == "payment → CONFIRMED (database clock)" && l["requests"] == 20)
    );

    // 30 clients on one seat for a second: one winner, the rest SEAT_UNAVAILABLE.
    let (code, contended) = loadtest(
        &platform,
        &gw,
        &["hold-contended", "--concurrency", "30", "--duration", "1"],
    )
    .await;
    assert_eq!(code, 0, "{:#}", contended["audit"]);
    let endpoint = "POST /api/reservations (one seat)";
    assert_eq!(answers(&contended, endpoint, "201"), 1);
    assert!(answers(&contended, endpoint, "409") > 0);
}
