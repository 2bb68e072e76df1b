//! A Redis server of a test's own, with a MONITOR of the commands it receives.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::*;

/// A Redis server of the test's own, so its command counts belong to this test alone.
pub struct PrivateRedis {
    pub url: String,
    pub port: u16,
    child: Child,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let port = free_port();
        Self {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            child: spawn_redis(port).await,
        }
    }

    /// Kills the server (SIGKILL, as a crash would) and starts an empty one on the same port:
    /// nothing survives, as the server keeps nothing on disk.
    pub async fn restart_empty(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_redis(self.port).await;
    }

    /// Starts `MONITOR`: every command a client sends from now on, excluding those run
    /// inside Lua scripts, is counted — i.e. client round trips.
    pub async fn monitor(&self) -> CommandMonitor {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect monitor");
        stream
            .write_all(b"MONITOR\r\n")
            .await
            .expect("send MONITOR");
        let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let sink = seen.clone();
        let mut lines = BufReader::new(stream).lines();
        // The first line is MONITOR's own +OK.
        let _ = lines.next_line().await;
        let task = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if !line.contains(" lua]") && line.contains('"') {
                    sink.lock().expect("monitor lock").push(line);
                }
            }
        });
        CommandMonitor { seen, task }
    }
}

/// `redis-server` on `port` with no persistence; returns once it listens.
async fn spawn_redis(port: u16) -> Child {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    eventually(
        "private redis to listen",
        Duration::from_secs(10),
        || async move { TcpStream::connect(addr).await.ok().map(|_| ()) },
    )
    .await;
    child
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct CommandMonitor {
    seen: Arc<std::sync::Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl CommandMonitor {
    /// Commands clients sent since the monitor started (names only), and resets the count.
    pub async fn take(&self) -> Vec<String> {
        self.take_commands()
            .await
            .into_iter()
            .map(|c| {
                c.into_iter()
                    .next()
                    .unwrap_or_default()
                    .to_ascii_uppercase()
            })
            .collect()
    }

    /// As [`take`](Self::take), each command whole: its name and arguments, as sent.
    pub async fn take_commands(&self) -> Vec<Vec<String>> {
        // MONITOR output trails the commands slightly.
        tokio::time::sleep(Duration::from_millis(200)).await;
        std::mem::take(&mut *self.seen.lock().expect("monitor lock"))
            .iter()
            .map(|line| words(line))
            .collect()
    }
}

impl Drop for CommandMonitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The quoted words of a MONITOR line (`<time> [0 <client>] "CMD" "arg" ...`), unescaped
/// enough for tests (`\"` and `\\`).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars();
    while chars.by_ref().any(|c| c == '"') {
        let mut word = String::new();
        loop {
            match chars.next() {
                None | Some('"') => break,
                Some('\\') => word.extend(chars.next()),
                Some(c) => word.push(c),
            }
        }
        out.push(word);
    }
    out
}
