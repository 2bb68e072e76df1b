//! A service running in the test process, and the checks every service must pass.

use std::process::{Command, Stdio};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::lifecycle::Service;

/// A service running in the test process on a free port.
pub struct TestApp {
    pub address: String,
    pub port: u16,
    /// The service's further listeners ([`Service::other_ports`]).
    pub other_ports: Vec<(&'static str, u16)>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestApp {
    pub fn start(service: Service) -> Self {
        let port = service.port();
        let other_ports = service.other_ports().to_vec();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(service.run_until(async {
            let _ = rx.await;
        }));
        Self {
            address: format!("http://127.0.0.1:{port}"),
            port,
            other_ports,
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// `path` on the further listener `name`; panics when the service has none by that name.
    pub fn url_on(&self, name: &str, path: &str) -> String {
        let (_, port) = self
            .other_ports
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("the service has no `{name}` listener"));
        format!("http://127.0.0.1:{port}{path}")
    }

    /// Triggers shutdown without waiting for it.
    pub fn trigger_stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Shuts down cleanly and returns how the server ended.
    pub async fn stop(mut self) -> std::io::Result<()> {
        self.trigger_stop();
        match self.handle.take() {
            Some(h) => h.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.trigger_stop();
    }
}

/// Asserts what every service serves: live, ready (naming its dependencies), metrics, OpenAPI.
pub async fn assert_platform_endpoints(app: &TestApp, dependencies: &[&str]) {
    let c = reqwest::Client::new();
    let live = c.get(app.url("/health/live")).send().await.expect("live");
    assert_eq!(live.status(), 200);
    let ready = c.get(app.url("/health/ready")).send().await.expect("ready");
    let status = ready.status();
    let body: serde_json::Value = ready.json().await.expect("ready body");
    assert_eq!(status, 200, "ready: {body}");
    for dep in dependencies {
        assert_eq!(body["checks"][dep], "ok", "{dep} in {body}");
    }
    assert!(
        body["checks"].get("broker").is_none(),
        "the broker is not a readiness check: {body}"
    );
    let metrics = c
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("http_requests_total"), "{metrics}");
    assert!(metrics.contains("kafka_broker_up"), "{metrics}");
    let doc: serde_json::Value = c
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .unwrap();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );
}

/// Runs a service binary with `env` and expects it to refuse to start, naming `var`.
pub fn assert_binary_rejects_config(binary: &str, var: &str, value: &str) {
    let out = Command::new(binary)
        .arg("serve")
        .env(var, value)
        .stdin(Stdio::null())
        .output()
        .expect("run service binary");
    assert!(
        !out.status.success(),
        "{binary} must not start with {var}={value}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(var), "stderr must name {var}: {stderr}");
}
