//! The saga across real processes: concert-api, users-api and payment-api run as separate
//! OS processes (their own binaries), talking over HTTP and through the real broker.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use common::auth::QueueKeys;
use common::config::Env;
use common::redis::RedisStore;
use common::testkit::{TestDatabase, eventually, kafka_brokers, redis_url, unique_id};
use serde_json::{Value, json};

/// A service binary running as a child process; stopped with SIGTERM (graceful) on drop.
pub struct Process {
    name: &'static str,
    child: Child,
    pub url: String,
}

impl Drop for Process {
    fn drop(&mut self) {
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
        let _ = self.child.kill();
    }
}

/// The debug binaries live next to payment-api's (cargo builds every tested package's
/// binaries); build them if this package is tested alone.
pub fn binary(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_payment-api"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = dir.join(name);
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", name, "--bin", name])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p {name}");
    }
    path
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn start(name: &'static str, env: &[(&str, String)]) -> Process {
    let port = free_port();
    let port_var = match name {
        "concert-api" => "CONCERT_API_PORT",
        "users-api" => "USERS_API_PORT",
        "batch" => "BATCH_PORT",
        _ => "PAYMENT_API_PORT",
    };
    let mut cmd = Command::new(binary(name));
    cmd.arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(port_var, port.to_string())
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
    Process { name, child, url }
}

/// concert-api, users-api and payment-api as separate processes sharing one Redis prefix and
/// topic prefix (`id`), each with its own database (`dbs`: users, concert, payment).
pub struct ThreeServices {
    pub id: String,
    pub concert: Process,
    pub users: Process,
    pub payment: Process,
    pub dbs: (TestDatabase, TestDatabase, TestDatabase),
}

/// The settings every process of one test shares: its Redis prefix and topic prefix (`id`).
pub fn shared_env(id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("REDIS_URL", redis_url()),
        ("REDIS_KEY_PREFIX", format!("{id}:")),
        ("KAFKA_BROKERS", kafka_brokers()),
        ("KAFKA_TOPIC_PREFIX", format!("{id}.")),
        ("KAFKA_TOPIC_PARTITIONS", "1".into()),
        ("HTTP_WORKERS", "2".into()),
        ("DATABASE_POOL_SIZE", "4".into()),
    ]
}

pub async fn start_three_services() -> ThreeServices {
    let dbs = (
        TestDatabase::create().await,
        TestDatabase::create().await,
        TestDatabase::create().await,
    );
    let id = unique_id();
    let shared = shared_env(&id);
    let with = |extra: Vec<(&'static str, String)>| {
        shared.iter().cloned().chain(extra).collect::<Vec<_>>()
    };
    let concert = start(
        "concert-api",
        &with(vec![("CONCERT_DATABASE_URL", dbs.1.url.clone())]),
    )
    .await;
    let users = start(
        "users-api",
        &with(vec![
            ("USERS_DATABASE_URL", dbs.0.url.clone()),
            ("CONCERT_API_URL", concert.url.clone()),
        ]),
    )
    .await;
    let payment = start(
        "payment-api",
        &with(vec![
            ("PAYMENT_DATABASE_URL", dbs.2.url.clone()),
            ("CONCERT_API_URL", concert.url.clone()),
        ]),
    )
    .await;
    ThreeServices {
        id,
        concert,
        users,
        payment,
        dbs,
    }
}

#[tokio::test]
async fn pay_confirm_and_retire_across_three_service_processes() {
    let ThreeServices {
        id,
        concert,
        users,
        payment,
        dbs,
    } = start_three_services().await;
    let users_db = &dbs.0;

    // The operator's admin, through users-api's own command.
    let admin_ok = Command::new(binary("users-api"))
        .args(["create-admin", "--username", "admin"])
        .env("USERS_DATABASE_URL", &users_db.url)
        .env("ADMIN_PASSWORD", "admin-pass-test")
        .output()
        .unwrap();
    assert!(
        admin_ok.status.success(),
        "{}",
        String::from_utf8_lossy(&admin_ok.stderr)
    );

    let c = reqwest::Client::new();
    let post = |url: String, token: Option<String>, queue: Option<String>, body: Value| {
        let c = c.clone();
        async move {
            let mut req = c.post(url).json(&body);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Some(q) = queue {
                req = req.header("x-queue-token", q);
            }
            let res = req.send().await.unwrap();
            (
                res.status().as_u16(),
                res.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let login = |username: &'static str, password: &'static str| {
        post(
            format!("{}/api/sessions", users.url),
            None,
            None,
            json!({"username": username, "password": password}),
        )
    };
    let (_, admin) = login("admin", "admin-pass-test").await;
    let admin = admin["token"].as_str().unwrap().to_owned();

    let (_, concert_row) = post(
        format!("{}/api/admin/concerts", concert.url),
        Some(admin.clone()),
        None,
        json!({"title": "Processes", "performer": "Three"}),
    )
    .await;
    let concert_id = concert_row["id"].as_i64().unwrap();
    let now = Utc::now();
    let (_, schedule) = post(
        format!("{}/api/admin/concerts/{concert_id}/schedules", concert.url),
        Some(admin),
        None,
        json!({"starts_at": now + chrono::Duration::days(3), "booking_opens_at": now - chrono::Duration::minutes(1), "seat_count": 50, "price": 30000}),
    )
    .await;
    let schedule_id = schedule["id"].as_i64().unwrap();

    // A fan signs up, logs in, funds the wallet and joins the line.
    let (status, _) = post(
        format!("{}/api/users", users.url),
        None,
        None,
        json!({"username": "fan", "password": "fan-password"}),
    )
    .await;
    assert_eq!(status, 201);
    let (_, session) = login("fan", "fan-password").await;
    let token = session["token"].as_str().unwrap().to_owned();
    let (status, charged) = post(
        format!("{}/api/wallet/charges", payment.url),
        Some(token.clone()),
        None,
        json!({"amount": 100000}),
    )
    .await;
    assert_eq!((status, charged["balance"].as_i64()), (201, Some(100_000)));
    let (status, joined) = post(
        format!("{}/api/queue/tokens", users.url),
        Some(token.clone()),
        None,
        json!({"concert_id": concert_id}),
    )
    .await;
    assert_eq!(status, 201, "{joined}");
    let pass = joined["token"].as_str().unwrap().to_owned();

    // Admission is batch's job; run one tick of the same library function.
    let redis = RedisStore::connect(
        &common::config::RedisConfig::from_env(&Env::from_pairs([
            ("REDIS_URL", redis_url().as_str()),
            ("REDIS_KEY_PREFIX", format!("{id}:").as_str()),
        ]))
        .unwrap(),
    )
    .unwrap();
    let room = users_api::domain::queue::WaitingRoom::new(
        QueueKeys::new(redis),
        users_api::config::QueueConfig::from_env(&Env::from_pairs([])).unwrap(),
    );
    assert_eq!(
        room.admit(concert_id, Utc::now()).await.unwrap().admitted,
        1
    );

    let (status, held) = post(
        format!("{}/api/reservations", concert.url),
        Some(token.clone()),
        Some(pass.clone()),
        json!({"schedule_id": schedule_id, "seat_nos": [7, 8]}),
    )
    .await;
    assert_eq!(status, 201, "{held}");
    let reservation = held["id"].as_i64().unwrap();
    let (status, paid) = post(
        format!("{}/api/payments", payment.url),
        Some(token.clone()),
        Some(pass.clone()),
        json!({"reservation_id": reservation}),
    )
    .await;
    assert_eq!(
        (status, paid["amount"].as_i64()),
        (201, Some(60_000)),
        "{paid}"
    );

    let get = |url: String| {
        let c = c.clone();
        let token = token.clone();
        async move {
            c.get(url)
                .bearer_auth(token)
                .send()
                .await
                .ok()?
                .json::<Value>()
                .await
                .ok()
        }
    };
    eventually(
        "CONFIRMED, through the broker between processes",
        Duration::from_secs(30),
        || async {
            let r = get(format!("{}/api/reservations/{reservation}", concert.url)).await?;
            (r["status"] == "CONFIRMED").then_some(())
        },
    )
    .await;
    eventually(
        "the fan's queue token to be retired",
        Duration::from_secs(30),
        || async {
            let s = get(format!("{}/api/queue/tokens/{pass}", users.url)).await?;
            (s["status"] == "EXPIRED").then_some(())
        },
    )
    .await;
    let wallet = get(format!("{}/api/wallet", payment.url)).await.unwrap();
    assert_eq!(wallet["balance"], 40_000);
    let ledger = get(format!("{}/api/wallet/transactions", payment.url))
        .await
        .unwrap();
    let kinds: Vec<&str> = ledger["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["PAYMENT", "CHARGE"]);
    let payments = get(format!("{}/api/payments", payment.url)).await.unwrap();
    assert_eq!(payments["items"][0]["status"], "COMPLETED");
    let (status, _) = post(
        format!("{}/api/reservations", concert.url),
        Some(token.clone()),
        Some(pass),
        json!({"schedule_id": schedule_id, "seat_nos": [9]}),
    )
    .await;
    assert_eq!(status, 401, "the retired token no longer admits its holder");
}
