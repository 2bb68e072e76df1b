//! A service binary running as a child process, stopped gracefully (SIGTERM) when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::testkit::eventually;

pub struct Process {
    name: &'static str,
    child: Child,
    pub url: String,
    port: u16,
    env: Vec<(String, String)>,
}

impl Process {
    /// SIGKILL, as a crash would: no drain, no goodbye to the consumer group.
    pub fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as an orchestrator stops it: drains, leaves its consumer groups. Killed if
    /// it is still running after 10 s.
    pub fn stop(&mut self) {
        // Already exited (crashed, and reaped): its pid may belong to another process now.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.name);
        self.crash();
    }

    /// Stops the process ([`Process::stop`]) and starts it again with `overrides` in its
    /// environment (e.g. its database through a fault proxy), on the same port.
    pub async fn restart_with(&mut self, overrides: &[(&str, String)]) {
        self.stop();
        for (k, v) in overrides {
            self.env.retain(|(key, _)| key != k);
            self.env.push(((*k).to_owned(), v.clone()));
        }
        self.restart().await;
    }

    /// Starts the process again (after [`Process::crash`]) with the same environment on the
    /// same port, so its URL stays valid; waits until it is ready.
    pub async fn restart(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.crash();
        }
        let env: Vec<(&str, String)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        let restarted = start_on(self.name, self.port, &env).await;
        // The old child was reaped; the new one replaces it (and is stopped on drop).
        *self = restarted;
    }

    /// Whether the process is still running (it has not exited or crashed).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The workspace's debug build of `name` (beside this test binary: `target/debug/`), built
/// first if it is missing (a `cargo test -p e2e` of its own does not build other packages'
/// binaries; `cargo test --workspace` does).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/debug/deps/api-<hash> → target/debug
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/debug")
        .to_path_buf();
    let path = dir.join(name);
    if !path.exists() {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "-p", name, "--bin", name])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p {name}");
    }
    path
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}

/// The port variable each service reads.
fn port_var(name: &str) -> &'static str {
    match name {
        "concert-api" => "CONCERT_API_PORT",
        "users-api" => "USERS_API_PORT",
        "batch" => "BATCH_PORT",
        _ => "PAYMENT_API_PORT",
    }
}

/// Starts `name serve` with only `env` (and PATH) on a free port; waits until it is ready.
pub async fn start(name: &'static str, env: &[(&str, String)]) -> Process {
    start_on(name, free_port(), env).await
}

/// [`start`] on `port`.
async fn start_on(name: &'static str, port: u16, env: &[(&str, String)]) -> Process {
    let mut cmd = Command::new(binary(name));
    cmd.arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(port_var(name), port.to_string())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
    let url = format!("http://127.0.0.1:{port}");
    let ready = format!("{url}/health/ready");
    eventually(
        &format!("{name} to be ready"),
        Duration::from_secs(60),
        || {
            let ready = ready.clone();
            async move { (reqwest::get(ready).await.ok()?.status() == 200).then_some(()) }
        },
    )
    .await;
    Process {
        name,
        child,
        url,
        port,
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    }
}
