//! Real requests through the nginx gateway (deploy/gateway) in front of the three service
//! processes: public paths reach their services, nothing else does, login bursts get 429,
//! and a dead upstream is a 502 problem.

use e2e::{Gateway, Platform};
use serde_json::{Value, json};

async fn problem(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    assert_eq!(
        res.headers()["content-type"],
        "application/problem+json",
        "status {status}"
    );
    assert!(res.headers().get("x-request-id").is_some());
    (status, res.json().await.unwrap())
}

#[tokio::test]
async fn the_gateway_routes_exactly_the_public_contract() {
    let platform = Platform::start().await;
    let gateway = Gateway::start(
        &platform,
        &[("GATEWAY_AUTH_RATE", "2r/s"), ("GATEWAY_AUTH_BURST", "5")],
    )
    .await;
    let gw = gateway.url.clone();
    let c = reqwest::Client::new();

    // Each service by its public paths, with the request id passed through.
    let res = c
        .post(format!("{gw}/api/users"))
        .json(&json!({"username": "gw_fan", "password": "fan-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "users-api");
    let res = c
        .post(format!("{gw}/api/sessions"))
        .header("x-request-id", "trace-me-123")
        .json(&json!({"username": "gw_fan", "password": "fan-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "trace-me-123");
    let token = res.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        c.get(format!("{gw}/api/concerts"))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "concert-api"
    );
    let wallet = c
        .get(format!("{gw}/api/wallet"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        wallet.json::<Value>().await.unwrap()["balance"],
        0,
        "payment-api"
    );
    let (status, p) = problem(
        c.get(format!("{gw}/api/reservations/999999"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, p["code"].as_str()),
        (404, Some("NOT_FOUND")),
        "a service's own problem passes through"
    );

    // Nothing else is reachable.
    for path in [
        "/internal/reservations/1",
        "/health/ready",
        "/health/live",
        "/metrics",
        "/openapi.json",
        "/api/nope",
        "/",
    ] {
        let (status, p) = problem(c.get(format!("{gw}{path}")).send().await.unwrap()).await;
        assert_eq!(
            (status, p["code"].as_str()),
            (404, Some("NOT_FOUND")),
            "{path}"
        );
    }
    let big = json!({"username": "x", "password": "p".repeat(70_000)});
    let (status, _) = problem(
        c.post(format!("{gw}/api/users"))
            .json(&big)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 413);

    // A burst of log-ins from one address is cut off with 429 and Retry-After.
    let burst = futures_util::future::join_all((0..30).map(|_| {
        c.post(format!("{gw}/api/sessions"))
            .json(&json!({"username": "gw_fan", "password": "wrong-password"}))
            .send()
    }))
    .await;
    let limited: Vec<&reqwest::Response> = burst
        .iter()
        .map(|r| r.as_ref().unwrap())
        .filter(|r| r.status() == 429)
        .collect();
    assert!(!limited.is_empty(), "a burst of 30 log-ins is rate limited");
    assert!(
        limited
            .iter()
            .all(|r| r.headers().get("retry-after").is_some()
                && r.headers()["content-type"] == "application/problem+json")
    );

    // An upstream that is gone is a 502 problem, not a hang or an HTML page.
    drop(platform.payment);
    let (status, p) = problem(
        c.get(format!("{gw}/api/wallet"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, p["code"].as_str()),
        (502, Some("UPSTREAM_UNAVAILABLE"))
    );
    drop(gateway);
}
