//! The public contract as the gateway publishes it: `GET /api/openapi.json` (the merged
//! document `apidoc` makes from the services' code) and `GET /api/docs`, and schemathesis
//! driving every documented operation through the gateway against the running services,
//! checking each answer against the document (`--checks all`).
//!
//! Schemathesis comes from PyPI, pinned, in a virtualenv `deploy/local/test.sh` prepares; its
//! `schemathesis` executable is passed in `SCHEMATHESIS`. Without it the test fails (it never
//! skips silently).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use e2e::{Client, Gateway, Platform};
use reqwest::Method;
use serde_json::Value;

#[tokio::test]
async fn the_gateway_serves_the_merged_document_and_its_reference_page() {
    let platform = Platform::start().await;
    let gateway = Gateway::start(&platform, &[]).await;
    let gw = &gateway.url;
    let c = reqwest::Client::new();

    let res = c
        .get(format!("{gw}/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert!(res.headers().get("x-request-id").is_some());
    let served: Value = res.json().await.unwrap();
    assert_eq!(
        served,
        apidoc_document(),
        "the gateway serves apidoc's document"
    );
    assert_eq!(served["servers"][0]["url"], "/");

    let res = c.get(format!("{gw}/api/docs")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/html");
    let page = res.text().await.unwrap();
    assert!(
        !page.contains("://"),
        "the page loads everything from the gateway (relative URLs): {page}"
    );
    assert!(
        page.contains("swagger-ui-bundle.js"),
        "the real reference page, not the placeholder: run `npm ci --ignore-scripts` in \
         deploy/gateway/docs (deploy/local/test.sh does): {page}"
    );
    for asset in [
        "docs/swagger-ui-bundle.js",
        "docs/swagger-ui.css",
        "docs/init.js",
    ] {
        let res = c.get(format!("{gw}/api/{asset}")).send().await.unwrap();
        assert_eq!(res.status(), 200, "{asset}");
    }

    // Read-only: another method is a 405 problem with Allow.
    let res = c
        .post(format!("{gw}/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "GET, HEAD");
    assert_eq!(res.headers()["content-type"], "application/problem+json");
}

/// What `apidoc` prints for this build (the workspace's debug binary).
fn apidoc_document() -> Value {
    let out = Command::new(e2e::process::binary("apidoc"))
        .output()
        .expect("run apidoc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("apidoc prints JSON")
}

/// Examples per operation and phase: the whole run stays around 2 minutes on 2 cores.
const MAX_EXAMPLES: &str = "15";

#[tokio::test]
async fn schemathesis_finds_the_services_true_to_the_published_document() {
    let schemathesis = std::env::var_os("SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "SCHEMATHESIS is not set: this test runs schemathesis (PyPI, pinned in \
             deploy/local/test.sh) against the gateway. Run the tests with deploy/local/test.sh, \
             which prepares the virtualenv and sets it, or set it yourself: \
             python3 -m venv ~/.cache/ticketing/schemathesis-venv && \
             ~/.cache/ticketing/schemathesis-venv/bin/pip install schemathesis==<the version in \
             deploy/local/test.sh> && \
             export SCHEMATHESIS=~/.cache/ticketing/schemathesis-venv/bin/schemathesis"
            )
        });
    assert!(
        schemathesis.is_file(),
        "SCHEMATHESIS={} is not a file (deploy/local/test.sh installs it)",
        schemathesis.display()
    );

    let platform = Platform::start().await;
    let _batch = platform
        .start_batch(&[("QUEUE_ADMIT_INTERVAL_MS", "200")])
        .await;
    // The gateway's rate limits are its own (429 is not the services' contract): generous
    // here, the per-session hold limit too, so the run tests the services rather than the
    // limiter.
    let gateway = Gateway::start_for_one_address(
        &platform,
        1000,
        &[
            ("GATEWAY_HOLD_RATE", "1000r/s"),
            ("GATEWAY_HOLD_BURST", "1000"),
        ],
    )
    .await;
    let gw = gateway.url.clone();

    // What no generated request can make: an admin session, a concert on sale, a user's
    // session with money in the wallet and an ACTIVE queue pass (batch admits).
    let admin = platform.admin(&gw).await;
    let (concert_id, _schedule_id) = admin.concert_on_sale("Contract", 200, 1000).await;
    let mut fan = Client::new(&gw);
    fan.sign_up("contract_fan", "contract-password").await;
    let (status, charged) = fan
        .send(
            fan.request(Method::POST, "/api/wallet/charges")
                .header("idempotency-key", "contract-charge")
                .json(&serde_json::json!({"amount": 1_000_000})),
        )
        .await;
    assert_eq!(status, 201, "{charged}");
    let pass = fan.join(concert_id).await;
    let statuses = fan
        .stream_until_end(&format!("/api/queue/tokens/{pass}/events"))
        .await;
    assert_eq!(
        statuses.last().map(|s| s["status"].clone()),
        Some("ACTIVE".into()),
        "{statuses:?}"
    );
    // Log-out ends the session it is sent with, and with `all=true` every session of its
    // user: it runs as a user of its own, so it cannot end the one every other operation
    // runs with.
    let mut leaving = Client::new(&gw);
    leaving
        .sign_up("contract_leaver", "contract-password")
        .await;

    let work = std::env::temp_dir().join(format!("schemathesis-{}", platform.id));
    std::fs::create_dir_all(&work).unwrap();
    let config = work.join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            r#"# The fixture's credentials, per operation (the -H headers apply to the rest). Filters in
# one entry are alternatives, so an entry names its operations exactly.
[[operations]]
include-path-regex = "^/api/admin/"
headers = {{ Authorization = "Bearer {admin}" }}

[[operations]]
include-name = "DELETE /api/sessions"
headers = {{ Authorization = "Bearer {leaving}" }}

# Rules JSON Schema cannot state, each a documented 4xx that schemathesis would otherwise
# count as a valid request refused. They widen what counts as accepted for these operations
# only; every other check stays on.
# - A cursor is only one this list returned (opaque; a made-up one is 400).
[[operations]]
include-name = ["GET /api/concerts", "GET /api/concerts/{{id}}/schedules", "GET /api/wallet/transactions"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]

# - A password can be weak (only whitespace, the username, a common one: 400 WEAK_PASSWORD)
#   and a username taken (409); failed log-ins of one username back off (429 LOGIN_THROTTLED).
[[operations]]
include-name = ["POST /api/users", "POST /api/sessions"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]

# - Booking cannot open after the show starts (two fields compared: 400); a sale cannot be
#   set to open in the past (compared with the clock: 400).
[[operations]]
include-name = ["POST /api/admin/concerts/{{id}}/schedules", "PATCH /api/admin/queue/concerts/{{id}}"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]

# - The same Idempotency-Key with another body (generated cases reuse keys) is 422.
[[operations]]
include-name = ["POST /api/payments", "POST /api/wallet/charges"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "402", "403", "404", "409", "422", "429", "5xx"]

# - A hold's Idempotency-Key with another body is 422 too; and a seat number the schedule does
#   not have (the schema cannot know its seat count) is 400.
[[operations]]
include-name = "POST /api/reservations"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "422", "429", "5xx"]
"#,
            admin = admin.session.as_deref().unwrap(),
            leaving = leaving.session.as_deref().unwrap(),
        ),
    )
    .unwrap();

    let args: Vec<String> = vec![
        "--config-file".into(),
        config.display().to_string(),
        "run".into(),
        format!("{gw}/api/openapi.json"),
        "--checks".into(),
        "all".into(),
        "--header".into(),
        format!("Authorization: Bearer {}", fan.session.as_deref().unwrap()),
        "--header".into(),
        format!("X-Queue-Token: {pass}"),
        "--max-examples".into(),
        MAX_EXAMPLES.into(),
        // One worker: CPython 3.11's `ast.parse` is not safe across threads (its AST
        // constructor's depth counter is shared, python/cpython#106905), hypothesis parses
        // source while it describes a strategy, and two workers stopped schemathesis with
        // that runtime error of its own.
        "--workers".into(),
        "1".into(),
        "--seed".into(),
        "14".into(),
        "--request-timeout".into(),
        "20".into(),
        "--continue-on-failure".into(),
        "--no-color".into(),
        "--report".into(),
        "junit".into(),
        "--report-dir".into(),
        work.join("report").display().to_string(),
    ];
    println!("{} {}", schemathesis.display(), args.join(" "));
    let started = Instant::now();
    let cwd = work.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&schemathesis)
            .args(&args)
            // Its cache (.schemathesis/) goes into the run's directory, not the repository.
            .current_dir(&cwd)
            .output()
            .expect("run schemathesis")
    })
    .await
    .unwrap();
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}\n(schemathesis took {took:?})");
    assert!(
        out.status.success(),
        "schemathesis found the services and the published document disagreeing \
         (exit {:?}; its output is above; JUnit report in {})",
        out.status.code(),
        work.display()
    );
    println!("(MAX_EXAMPLES bounds a run)");
    let _ = std::fs::remove_dir_all(&work);
}
