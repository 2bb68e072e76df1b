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
/// Dropping it drops the database and deletes the test's topics and consumer groups.
pub struct Isolation {
    pub db: TestDatabase,
    pub redis_prefix: String,
    pub topic_prefix: String,
}

impl Drop for Isolation {
    fn drop(&mut self) {
        delete_kafka_prefix_now(&kafka_brokers(), &self.topic_prefix);
    }
}

/// A unique topic prefix on the shared broker whose topics and groups are deleted when it
/// drops, for tests that use Kafka without a whole [`Isolation`].
pub struct TopicPrefix(pub String);

impl TopicPrefix {
    pub fn new() -> Self {
        Self(format!("{}.", unique_id()))
    }
}

impl Default for TopicPrefix {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TopicPrefix {
    fn drop(&mut self) {
        delete_kafka_prefix_now(&kafka_brokers(), &self.0);
    }
}

/// [`delete_kafka_prefix`] from a destructor: on a thread with a runtime of its own.
fn delete_kafka_prefix_now(brokers: &str, prefix: &str) {
    let (brokers, prefix) = (brokers.to_owned(), prefix.to_owned());
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(delete_kafka_prefix(&brokers, &prefix));
        }
    })
    .join();
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

/// The repository's root (the test kit lives in `common/`).
fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("common/ has a parent")
        .to_path_buf()
}

/// Runs `deploy/local/kafka-node.sh` with `args` on a blocking thread; panics with its
/// output if it fails.
async fn kafka_node(args: Vec<String>) {
    let script = repo_root().join("deploy/local/kafka-node.sh");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&script)
            .args(&args)
            .stdin(Stdio::null())
            .output()
    })
    .await
    .expect("kafka-node.sh runs")
    .expect("start deploy/local/kafka-node.sh");
    assert!(
        out.status.success(),
        "deploy/local/kafka-node.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Kafka node of the test kit's own (`127.0.0.1:$TEST_PRIVATE_KAFKA_PORT`, default 19092,
/// data in `.stack/test-kafka`), for the tests that pause or kill a broker without
/// disturbing every other test. Starting a JVM broker takes seconds, so the node is shared:
/// it outlives the test that started it, and a test holds an exclusive lock on it (across
/// threads and test processes) from `start` until the handle drops. The handle leaves the
/// node running and unpaused; one a test killed is started again by the next `start`.
/// `deploy/local/test.sh` removes it before and after the suite.
pub struct PrivateBroker {
    pub brokers: String,
    dir: std::path::PathBuf,
    port: u16,
    _lock: std::fs::File,
}

impl PrivateBroker {
    pub async fn start() -> Self {
        let port: u16 = std::env::var("TEST_PRIVATE_KAFKA_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(19092);
        let dir = repo_root().join(".stack/test-kafka");
        std::fs::create_dir_all(&dir).expect("create .stack/test-kafka");
        let lock_path = dir.join("test.lock");
        let lock = tokio::task::spawn_blocking(move || {
            let f = std::fs::File::create(&lock_path).expect("create the private broker's lock");
            f.lock().expect("lock the private broker");
            f
        })
        .await
        .expect("lock task");
        let broker = Self {
            brokers: format!("127.0.0.1:{port}"),
            dir,
            port,
            _lock: lock,
        };
        broker.ensure_running().await;
        broker
    }

    /// Starts the node unless it runs (a no-op when it does), and waits until it listens.
    pub async fn ensure_running(&self) {
        kafka_node(vec![
            "start".into(),
            self.dir.display().to_string(),
            self.port.to_string(),
            "256m".into(),
        ])
        .await;
    }

    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("kafka.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args([sig, &pid.to_string()])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Freezes the broker: connections stay open but nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Kills the broker with SIGKILL, as a crash would; [`Self::ensure_running`] restarts
    /// it with its topics and committed offsets.
    pub async fn kill(&self) {
        kafka_node(vec![
            "stop".into(),
            self.dir.display().to_string(),
            "--kill".into(),
        ])
        .await;
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.resume();
    }
}

/// Deletes the topics and consumer groups whose names start with `prefix` (a test's
/// [`Isolation::topic_prefix`]), so a long-lived broker does not collect thousands of test
/// partitions (each holds files open; a process here may open at most 20,000).
pub async fn delete_kafka_prefix(brokers: &str, prefix: &str) {
    use rdkafka::ClientConfig;
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;

    let Ok(admin) = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create::<AdminClient<DefaultClientContext>>()
    else {
        return;
    };
    let Ok(metadata) = admin.inner().fetch_metadata(None, Duration::from_secs(5)) else {
        return;
    };
    let topics: Vec<String> = metadata
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .filter(|t| t.starts_with(prefix))
        .collect();
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    if !topics.is_empty() {
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let _ = admin.delete_topics(&names, &opts).await;
    }
    if let Ok(groups) = admin.inner().fetch_group_list(None, Duration::from_secs(5)) {
        let names: Vec<String> = groups
            .groups()
            .iter()
            .map(|g| g.name().to_owned())
            .filter(|g| g.starts_with(prefix))
            .collect();
        if !names.is_empty() {
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let _ = admin.delete_groups(&refs, &opts).await;
        }
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A Redis server of the test's own, so its command counts belong to this test alone.
pub struct PrivateRedis {
    pub url: String,
    pub port: u16,
    child: Child,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let port = free_port();
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
        Self {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            child,
        }
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
                if !line.contains(" lua]")
                    && let Some(cmd) = line.split('"').nth(1)
                {
                    sink.lock()
                        .expect("monitor lock")
                        .push(cmd.to_ascii_uppercase());
                }
            }
        });
        CommandMonitor { seen, task }
    }
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
        // MONITOR output trails the commands slightly.
        tokio::time::sleep(Duration::from_millis(200)).await;
        std::mem::take(&mut *self.seen.lock().expect("monitor lock"))
    }
}

impl Drop for CommandMonitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A stand-in for concert-api's public `GET /api/concerts/{id}`: 200 for the given ids,
/// 404 for others. A real HTTP server, so callers exercise their real client.
pub struct StubCatalogue {
    pub url: String,
    pub requests: Arc<std::sync::atomic::AtomicU64>,
    handle: actix_web::dev::ServerHandle,
}

impl StubCatalogue {
    pub async fn start(existing: Vec<i64>) -> Self {
        use actix_web::{App, HttpResponse, HttpServer, web};
        let requests = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (ids, count) = (Arc::new(existing), requests.clone());
        let server = HttpServer::new(move || {
            let (ids, count) = (ids.clone(), count.clone());
            App::new().route(
                "/api/concerts/{id}",
                web::get().to(move |id: web::Path<i64>| {
                    let (ids, count) = (ids.clone(), count.clone());
                    async move {
                        count.fetch_add(1, Ordering::SeqCst);
                        let id = id.into_inner();
                        if ids.contains(&id) {
                            HttpResponse::Ok()
                                .json(serde_json::json!({"id": id, "title": "t", "performer": "p"}))
                        } else {
                            HttpResponse::NotFound().finish()
                        }
                    }
                }),
            )
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .expect("bind stub catalogue");
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url: format!("http://127.0.0.1:{port}"),
            requests,
            handle,
        }
    }

    /// An address where nothing listens: a catalogue that is down.
    pub fn unreachable_url() -> String {
        format!("http://127.0.0.1:{}", free_port())
    }
}

impl Drop for StubCatalogue {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        tokio::spawn(async move { handle.stop(false).await });
    }
}
