//! The test kit's private Kafka node, and deleting a test's topics from a broker.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::eventually;

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
        // The script is done once the JVM's main thread is a zombie, but its sockets close
        // only when the last of its threads has exited: until then its ports still accept
        // connections, and a start in that window finds the port "taken by another process".
        for port in [self.port, self.port + 1] {
            eventually(
                "the killed broker's ports to close",
                Duration::from_secs(30),
                || async move {
                    tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .is_err()
                        .then_some(())
                },
            )
            .await;
        }
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
