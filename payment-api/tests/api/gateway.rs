//! Real requests through the nginx gateway (deploy/gateway) in front of the three service
//! processes: public paths reach their services, nothing else does, login bursts get 429,
//! and a dead upstream is a 502 problem.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::testkit::eventually;
use serde_json::{Value, json};

use crate::processes::{ThreeServices, free_port, start_three_services};

pub struct Nginx {
    child: Child,
    state: PathBuf,
}

impl Drop for Nginx {
    /// SIGQUIT: the master stops its workers and exits (SIGKILL would orphan the workers).
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

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

/// nginx with deploy/gateway's config in front of `services`, on a free port; `env` adds
/// render.sh settings (e.g. rate limits). Returns the gateway and its base URL, once it answers.
pub async fn start_gateway(services: &ThreeServices, env: &[(&str, &str)]) -> (Nginx, String) {
    if Command::new("nginx").arg("-v").output().is_err() {
        panic!("nginx is required (deploy/local/ensure-infra.sh installs it)");
    }
    let port = free_port();
    let state = std::env::temp_dir().join(format!("gateway-{}", services.id));
    let addr = |url: &str| url.trim_start_matches("http://").to_owned();
    let mut render = Command::new(repo_root().join("deploy/gateway/render.sh"));
    render
        .arg(&state)
        .env("GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("USERS_API_ADDR", addr(&services.users.url))
        .env("CONCERT_API_ADDR", addr(&services.concert.url))
        .env("PAYMENT_API_ADDR", addr(&services.payment.url));
    for (k, v) in env {
        render.env(k, v);
    }
    let rendered = render.output().unwrap();
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let conf = String::from_utf8(rendered.stdout)
        .unwrap()
        .trim()
        .to_owned();
    let child = Command::new("nginx")
        .args([
            "-c",
            &conf,
            "-p",
            state.to_str().unwrap(),
            "-g",
            "daemon off;",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let gateway = Nginx { child, state };
    let gw = format!("http://127.0.0.1:{port}");
    eventually("the gateway to listen", Duration::from_secs(10), || {
        let url = format!("{gw}/api/concerts");
        async move { (reqwest::get(url).await.ok()?.status() == 200).then_some(()) }
    })
    .await;
    (gateway, gw)
}

#[tokio::test]
async fn the_gateway_routes_exactly_the_public_contract() {
    let services = start_three_services().await;
    let (gateway, gw) = start_gateway(
        &services,
        &[("GATEWAY_AUTH_RATE", "2r/s"), ("GATEWAY_AUTH_BURST", "5")],
    )
    .await;
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
    drop(services.payment);
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
