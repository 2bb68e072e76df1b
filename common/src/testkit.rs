//! Test kit: a fresh PostgreSQL database per test (dropped afterwards), unique Redis key and
//! Kafka topic prefixes, a TCP proxy that can cut a dependency off, a private broker that can
//! be paused, and a handle that runs a service on port 0 and stops it cleanly.

use std::future::Future;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::Env;
use crate::lifecycle::Service;

/// Admin connection used to create and drop test databases.
pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn kafka_brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A short unique id for names (`t3f9a…`).
pub fn unique_id() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..20])
}

/// A database that exists for one test and is dropped (with its connections) afterwards.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let name = unique_id();
        let admin = Database::connect(admin_database_url())
            .await
            .expect("connect as admin to create a test database");
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create test database");
        admin.close().await.ok();
        let base = admin_database_url();
        let url = match base.rfind('/') {
            Some(i) if base[..i].contains("://") && i > base.find("://").unwrap() + 2 => {
                format!("{}/{name}", &base[..i])
            }
            _ => format!("{base}/{name}"),
        };
        Self { name, url }
    }

    pub async fn connect(&self) -> DatabaseConnection {
        Database::connect(&self.url)
            .await
            .expect("connect to test database")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any async context guarantee: use a private runtime on a thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    if let Ok(admin) = Database::connect(admin_database_url()).await {
                        let _ = admin
                            .execute_unprepared(&format!(
                                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                            ))
                            .await;
                        admin.close().await.ok();
                    }
                });
            }
        })
        .join();
    }
}

/// Everything one test needs to be isolated from every other test running in parallel.
pub struct Isolation {
    pub db: TestDatabase,
    pub redis_prefix: String,
    pub topic_prefix: String,
}

impl Isolation {
    pub async fn new() -> Self {
        let id = unique_id();
        Self {
            db: TestDatabase::create().await,
            redis_prefix: format!("{id}:"),
            topic_prefix: format!("{id}."),
        }
    }

    /// An environment for a service under test: its database (`db_var`), prefixes, port 0,
    /// fast consumer retries. Add or override variables with [`Env::with`].
    pub fn env(&self, db_var: &str) -> Env {
        Env::from_pairs([])
            .with(db_var, self.db.url.clone())
            .with("REDIS_URL", redis_url())
            .with("REDIS_KEY_PREFIX", self.redis_prefix.clone())
            .with("KAFKA_BROKERS", kafka_brokers())
            .with("KAFKA_TOPIC_PREFIX", self.topic_prefix.clone())
            .with("KAFKA_TOPIC_PARTITIONS", "1")
            .with("CONSUMER_BACKOFF_MS", "20")
            .with("HTTP_WORKERS", "2")
            .with("DATABASE_POOL_SIZE", "8")
            .with("SHUTDOWN_TIMEOUT_SECS", "5")
            .with("USERS_API_PORT", "0")
            .with("CONCERT_API_PORT", "0")
            .with("PAYMENT_API_PORT", "0")
            .with("BATCH_PORT", "0")
    }
}

/// A service running in the test process on a free port.
pub struct TestApp {
    pub address: String,
    pub port: u16,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestApp {
    pub fn start(service: Service) -> Self {
        let port = service.port();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(service.run_until(async {
            let _ = rx.await;
        }));
        Self {
            address: format!("http://127.0.0.1:{port}"),
            port,
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
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

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A TCP proxy in front of a dependency; `cut()` drops every connection and refuses new ones
/// until `restore()`. Used to take Redis, PostgreSQL or another service away from a test.
pub struct TcpProxy {
    pub addr: SocketAddr,
    open: Arc<AtomicBool>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let open = Arc::new(AtomicBool::new(true));
        let (gen_tx, _) = tokio::sync::watch::channel(0u64);
        let generation = Arc::new(gen_tx);
        let (open2, gen2) = (open.clone(), generation.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !open2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut cut = gen2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self {
            addr,
            open,
            generation,
            task,
        }
    }

    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The tansu binary: `TANSU_BIN`, else on `PATH`, else `~/.cargo/bin/tansu`.
pub fn tansu_binary() -> String {
    if let Ok(bin) = std::env::var("TANSU_BIN") {
        return bin;
    }
    let home = std::env::var("CARGO_HOME").unwrap_or_else(|_| {
        format!(
            "{}/.cargo",
            std::env::var("HOME").unwrap_or_else(|_| "/root".into())
        )
    });
    let cargo_bin = format!("{home}/bin/tansu");
    if std::path::Path::new(&cargo_bin).exists() {
        cargo_bin
    } else {
        "tansu".into()
    }
}

/// A broker of the test's own (in-memory tansu on a free port), so a test can pause it with
/// SIGSTOP/SIGCONT without disturbing other tests. A restart would lose its topics.
pub struct PrivateBroker {
    pub brokers: String,
    child: Child,
}

impl PrivateBroker {
    pub async fn start() -> Self {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu_binary())
            .args(["broker", "--storage-engine", "memory://tansu/"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu (install it: cargo install tansu --locked --features dynostore)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        eventually(
            "private broker to listen",
            Duration::from_secs(20),
            || async move { TcpStream::connect(addr).await.ok().map(|_| ()) },
        )
        .await;
        Self {
            brokers: format!("127.0.0.1:{port}"),
            child,
        }
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status();
    }

    /// Freezes the broker: connections stay open but nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.resume();
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    let metrics = c
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("http_requests_total"), "{metrics}");
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
