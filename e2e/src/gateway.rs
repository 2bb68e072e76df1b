//! The local gateway (nginx with `deploy/gateway`'s config) in front of a [`Platform`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::testkit::eventually;

use crate::platform::Platform;
use crate::process::{binary, free_port};
use crate::repo_root;

pub struct Gateway {
    child: Child,
    state: PathBuf,
    /// `http://127.0.0.1:<port>`
    pub url: String,
}

impl Drop for Gateway {
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

impl Gateway {
    /// nginx in front of `platform` on a free port, serving the web app from `web/dist` as
    /// built (`render.sh`'s placeholder page when it is not); `env` adds `render.sh` settings
    /// (rate limits, another `GATEWAY_WEB`, …). Returns once it answers.
    pub async fn start(platform: &Platform, env: &[(&str, &str)]) -> Self {
        assert!(
            Command::new("nginx").arg("-v").output().is_ok(),
            "nginx is required (deploy/local/ensure-infra.sh installs it)"
        );
        let port = free_port();
        // Per gateway, not per platform: a test may put several gateways (different limits)
        // in front of one platform.
        let state = std::env::temp_dir().join(format!("gateway-{}-{port}", platform.id));
        // The merged OpenAPI document it serves at /api/openapi.json, from this build.
        let document = std::env::temp_dir().join(format!("openapi-{}-{port}.json", platform.id));
        let made = Command::new(binary("apidoc")).output().expect("run apidoc");
        assert!(
            made.status.success(),
            "apidoc: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        std::fs::write(&document, &made.stdout).expect("write the merged OpenAPI document");
        let addr = |url: &str| url.trim_start_matches("http://").to_owned();
        let mut render = Command::new(repo_root().join("deploy/gateway/render.sh"));
        render
            .arg(&state)
            .env("GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
            .env("USERS_API_ADDR", addr(&platform.users.url))
            .env("USERS_STREAM_ADDR", addr(&platform.users_stream))
            .env("CONCERT_API_ADDR", addr(&platform.concert.url))
            .env("PAYMENT_API_ADDR", addr(&platform.payment.url))
            .env("GATEWAY_OPENAPI", &document)
            .env("GATEWAY_WEB", repo_root().join("web/dist"));
        for (k, v) in env {
            render.env(k, v);
        }
        let rendered = render.output().expect("run deploy/gateway/render.sh");
        assert!(
            rendered.status.success(),
            "{}",
            String::from_utf8_lossy(&rendered.stderr)
        );
        let _ = std::fs::remove_file(&document);
        let conf = String::from_utf8_lossy(&rendered.stdout).trim().to_owned();
        let child = Command::new("nginx")
            .args([
                "-c",
                &conf,
                "-p",
                &state.to_string_lossy(),
                "-g",
                "daemon off;",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        let url = format!("http://127.0.0.1:{port}");
        let probe = format!("{url}/api/concerts");
        eventually("the gateway to listen", Duration::from_secs(10), || {
            let probe = probe.clone();
            async move { (reqwest::get(probe).await.ok()?.status() == 200).then_some(()) }
        })
        .await;
        Self { child, state, url }
    }

    /// [`Gateway::start`] for a test whose every client comes from one address (127.0.0.1):
    /// the per-address limits on sign-up and log-in (`GATEWAY_AUTH_*`) and on joining a line
    /// (`GATEWAY_QUEUE_*`) are raised to `per_second` requests a second with a burst as large,
    /// as the benchmarks do (bench/lib.sh); `env` adds further `render.sh` settings. The
    /// per-session limits (streams, holds) stay as in production unless `env` sets them.
    pub async fn start_for_one_address(
        platform: &Platform,
        per_second: u32,
        env: &[(&str, &str)],
    ) -> Self {
        let (rate, burst) = (format!("{per_second}r/s"), per_second.to_string());
        let mut all = vec![
            ("GATEWAY_AUTH_RATE", rate.as_str()),
            ("GATEWAY_AUTH_BURST", burst.as_str()),
            ("GATEWAY_QUEUE_RATE", rate.as_str()),
            ("GATEWAY_QUEUE_BURST", burst.as_str()),
        ];
        all.extend_from_slice(env);
        Self::start(platform, &all).await
    }

    /// `127.0.0.1:<port>`, for raw TCP clients.
    pub fn addr(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// Its state directory (the rendered config, temp dirs, logs); removed when dropped.
    pub fn state(&self) -> &Path {
        &self.state
    }

    /// nginx's error log (level warn).
    pub fn error_log(&self) -> PathBuf {
        self.state.join("error.log")
    }
}
