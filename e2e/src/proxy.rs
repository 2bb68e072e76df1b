//! `loadtest proxy` as a process in front of one dependency (Redis, PostgreSQL, a service),
//! for the tests that cut it off or slow it down while the platform runs.

use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use common::testkit::eventually;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::process::{binary, free_port};

/// The fault proxy: clients connect to [`FaultProxy::addr`], it forwards to the upstream
/// until [`FaultProxy::cut`]; killed when dropped.
pub struct FaultProxy {
    /// Where clients connect instead of the upstream (`127.0.0.1:port`).
    pub addr: String,
    control: String,
    child: Mutex<Child>,
}

impl FaultProxy {
    /// A proxy to `upstream` (`host:port`), ready to forward.
    pub async fn start(upstream: &str) -> Self {
        let (addr, control) = (
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
        );
        let child = Command::new(binary("loadtest"))
            .args([
                "proxy",
                "--listen",
                &addr,
                "--upstream",
                upstream,
                "--control",
                &control,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start loadtest proxy");
        let proxy = Self {
            addr,
            control,
            child: Mutex::new(child),
        };
        eventually(
            "the fault proxy to answer on its control port",
            Duration::from_secs(10),
            || async { proxy.try_command("status").await },
        )
        .await;
        proxy
    }

    /// Sends one control command; its answer line, or `None` if the proxy did not answer.
    async fn try_command(&self, command: &str) -> Option<String> {
        let stream = TcpStream::connect(&self.control).await.ok()?;
        let (read, mut write) = stream.into_split();
        write
            .write_all(format!("{command}\n").as_bytes())
            .await
            .ok()?;
        let mut answer = String::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            BufReader::new(read).read_line(&mut answer),
        )
        .await
        .ok()?
        .ok()?;
        Some(answer.trim_end().to_owned())
    }

    /// Sends one control command; panics unless it is answered `ok …`. Returns the state.
    pub async fn command(&self, command: &str) -> String {
        let mut answer = None;
        for _ in 0..3 {
            answer = self.try_command(command).await;
            if answer.is_some() {
                break;
            }
        }
        let answer = answer.unwrap_or_else(|| {
            let exited = self.child.lock().map(|mut c| c.try_wait());
            panic!("the fault proxy did not answer {command:?} (exited: {exited:?})")
        });
        answer
            .strip_prefix("ok ")
            .unwrap_or_else(|| panic!("the fault proxy answered {command:?} with {answer:?}"))
            .to_owned()
    }

    /// Resets every open connection and refuses new ones: the upstream looks unreachable.
    pub async fn cut(&self) {
        self.command("cut").await;
    }

    /// Forwards new connections again.
    pub async fn heal(&self) {
        self.command("heal").await;
    }

    /// Delays every chunk, each way, by `ms` milliseconds (0: no delay).
    pub async fn delay(&self, ms: u64) {
        self.command(&format!("delay {ms}")).await;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Ok(child) = self.child.get_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
