//! Transport to the data stores, available by configuration: TLS to PostgreSQL
//! (`sslmode`), TLS + an ACL user to Redis (`rediss://`, `REDIS_CA_CERT`), and topics that
//! are only checked, never created, with `KAFKA_CREATE_TOPICS=false`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::config::{DatabaseConfig, Env, KafkaConfig, RedisConfig};
use common::kafka::{KafkaClient, TopicError};
use common::redis::RedisStore;
use common::startup::{StartupError, connect_messaging};
use common::testkit::{TopicPrefix, admin_database_url, eventually, kafka_brokers, redis_url};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

async fn ssl_in_use(db: &DatabaseConnection) -> bool {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        ))
        .await
        .expect("query pg_stat_ssl")
        .expect("a row for this backend");
    row.try_get_by_index::<bool>(0).expect("ssl column")
}

fn database(url: &str) -> DatabaseConfig {
    let env = Env::from_pairs([("TEST_DATABASE_URL", url), ("DATABASE_POOL_SIZE", "1")]);
    DatabaseConfig::from_env(&env, "TEST_DATABASE_URL", "postgres").expect("database config")
}

/// The local cluster has `ssl = on` (Debian's snakeoil certificate): `sslmode=require` gets
/// an encrypted connection, and a URL without `sslmode` stays plain, as before.
#[tokio::test]
async fn postgres_over_tls_when_the_url_asks_for_it() {
    let base = admin_database_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    let tls = common::db::connect(&database(&format!("{base}{sep}sslmode=require")))
        .await
        .expect("connect with sslmode=require");
    assert!(ssl_in_use(&tls).await, "sslmode=require must encrypt");
    let plain = common::db::connect(&database(&base))
        .await
        .expect("connect without sslmode");
    assert!(
        !ssl_in_use(&plain).await,
        "no sslmode: a plain connection (the local stack's loopback)"
    );
}

/// A redis-server of the test's own speaking TLS only, with a certificate made by the
/// `openssl` CLI, the default user disabled and one ACL user.
struct TlsRedis {
    port: u16,
    child: Child,
    dir: std::path::PathBuf,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TlsRedis {
    async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("tls-redis-{}", common::testkit::unique_id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A private CA, and a server certificate it signs for localhost / 127.0.0.1.
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        );
        openssl(
            &dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        );
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "san.ext",
                "-out",
                "server.pem",
            ],
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let path = |f: &str| dir.join(f).display().to_string();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--tls-cert-file", &path("server.pem")])
            .args(["--tls-key-file", &path("server.key")])
            .args(["--tls-ca-cert-file", &path("ca.pem")])
            .args(["--tls-auth-clients", "no"])
            .args(["--user", "default", "off"])
            .args(["--user", "app", "on", ">app-secret-pw", "~*", "&*", "+@all"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let addr = format!("127.0.0.1:{port}");
        eventually("TLS redis to listen", Duration::from_secs(10), || {
            let addr = addr.clone();
            async move { tokio::net::TcpStream::connect(addr).await.ok().map(|_| ()) }
        })
        .await;
        Self { port, child, dir }
    }

    fn store(&self, url: &str) -> RedisStore {
        let ca = self.dir.join("ca.pem").display().to_string();
        let env = Env::from_pairs([("REDIS_URL", url), ("REDIS_CA_CERT", ca.as_str())]);
        RedisStore::connect(&RedisConfig::from_env(&env).expect("redis config"))
            .expect("redis client")
    }
}

/// `rediss://user:password@host:port` with `REDIS_CA_CERT`: the service's own Redis code
/// talks TLS to a server whose certificate a private CA signed, as an ACL user.
#[tokio::test]
async fn redis_over_tls_as_an_acl_user() {
    let redis = TlsRedis::start().await;
    let store = redis.store(&format!(
        "rediss://app:app-secret-pw@localhost:{}",
        redis.port
    ));
    store.ping().await.expect("PING over TLS as app");
    let mut conn = store.conn();
    let key = store.key("tls-check");
    let () = redis::cmd("SET")
        .arg(&key)
        .arg("1")
        .query_async(&mut conn)
        .await
        .expect("SET");
    let who: String = redis::cmd("ACL")
        .arg("WHOAMI")
        .query_async(&mut conn)
        .await
        .expect("ACL WHOAMI");
    assert_eq!(who, "app");

    // The wrong password, or no user at all (the default user is off), is refused.
    let wrong = redis.store(&format!("rediss://app:wrong@localhost:{}", redis.port));
    assert!(wrong.ping().await.is_err(), "a wrong password must fail");
    let anonymous = redis.store(&format!("rediss://localhost:{}", redis.port));
    assert!(anonymous.ping().await.is_err(), "the default user is off");
    // Without the private CA the server's certificate is not trusted.
    let url = format!("rediss://app:app-secret-pw@localhost:{}", redis.port);
    let env = Env::from_pairs([("REDIS_URL", url.as_str())]);
    let untrusted = RedisStore::connect(&RedisConfig::from_env(&env).unwrap()).unwrap();
    assert!(untrusted.ping().await.is_err(), "an unknown CA must fail");
}

fn kafka(prefix: &str, create: bool) -> KafkaConfig {
    let brokers = kafka_brokers();
    let env = Env::from_pairs([
        ("KAFKA_BROKERS", brokers.as_str()),
        ("KAFKA_TOPIC_PREFIX", prefix),
        ("KAFKA_TOPIC_PARTITIONS", "1"),
        ("KAFKA_CREATE_TOPICS", if create { "true" } else { "false" }),
    ]);
    KafkaConfig::from_env(&env).unwrap()
}

fn redis_config() -> RedisConfig {
    let url = redis_url();
    RedisConfig::from_env(&Env::from_pairs([("REDIS_URL", url.as_str())])).unwrap()
}

/// `KAFKA_CREATE_TOPICS=false`: start-up only checks the topics, naming every missing one;
/// once they exist (made by someone else) it starts.
#[tokio::test]
async fn without_topic_creation_missing_topics_are_named_and_existing_ones_pass() {
    let prefix = TopicPrefix::new();
    let check_only = kafka(&prefix.0, false);
    let err = match connect_messaging(&redis_config(), &check_only, &["orders", "refunds"]).await {
        Ok(_) => panic!("missing topics must stop start-up"),
        Err(e) => e,
    };
    let StartupError::Topics(TopicError::Missing(missing)) = &err else {
        panic!("expected missing topics, got {err}");
    };
    let expected: Vec<String> = ["orders", "orders.dlq", "refunds", "refunds.dlq"]
        .iter()
        .map(|t| format!("{}{t}", prefix.0))
        .collect();
    assert_eq!(missing, &expected);
    let message = err.to_string();
    assert!(
        message.contains(&format!("{}refunds.dlq", prefix.0)),
        "{message}"
    );
    assert!(message.contains("KAFKA_CREATE_TOPICS=false"), "{message}");

    // Created by someone else (on Kubernetes: the KafkaTopic objects); only one of the two.
    KafkaClient::new(&kafka(&prefix.0, true))
        .unwrap()
        .ensure_topics(&["orders"])
        .await
        .expect("create orders");
    let client = KafkaClient::new(&check_only).unwrap();
    let err = client
        .ensure_topics(&["orders", "refunds"])
        .await
        .unwrap_err();
    let TopicError::Missing(missing) = err else {
        panic!("expected missing topics, got {err}");
    };
    assert_eq!(missing, &expected[2..]);
    // Nothing was created by the check itself.
    assert_eq!(
        client
            .missing_topics(&["refunds"], Duration::from_secs(10))
            .await
            .unwrap(),
        &expected[2..]
    );

    KafkaClient::new(&kafka(&prefix.0, true))
        .unwrap()
        .ensure_topics(&["refunds"])
        .await
        .expect("create refunds");
    connect_messaging(&redis_config(), &check_only, &["orders", "refunds"])
        .await
        .expect("every topic exists: start-up goes on");
}
