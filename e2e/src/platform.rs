//! The platform as processes: concert-api, users-api and payment-api, each with its own
//! database, sharing one Redis key prefix and one topic prefix; batch on demand; the admin
//! account made the way an operator makes it.

use std::process::Command;

use common::testkit::{TestDatabase, TopicPrefix, kafka_brokers, redis_url, unique_id};

use crate::client::Client;
use crate::process::{Process, binary, start};

/// The operator's admin account of every test platform ([`Platform::create_admin`]).
pub const ADMIN_USERNAME: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin-pass-test";

pub struct Platform {
    /// The Redis and topic prefix of this platform (its isolation id).
    pub id: String,
    pub concert: Process,
    pub users: Process,
    /// users-api's status-stream listener (`USERS_API_STREAM_PORT`), `http://127.0.0.1:port`:
    /// where the gateway sends the streams.
    pub users_stream: String,
    pub payment: Process,
    pub users_db: TestDatabase,
    pub concert_db: TestDatabase,
    pub payment_db: TestDatabase,
    /// Settings every process of this platform gets on top of [`shared_env`]
    /// ([`Platform::start_with`]).
    settings: Vec<(&'static str, String)>,
    /// Deletes this platform's topics when dropped (declared last: dropped after the services).
    _topics: TopicPrefix,
}

impl Platform {
    /// The three APIs, started in dependency order and ready.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// [`Platform::start`] with `settings` added to the environment of every process of the
    /// platform: the three services, batch ([`Platform::start_batch`]) and whatever else is
    /// given [`Platform::env`] (the load tool). For rules that several processes read and
    /// must agree on, e.g. `RESERVATION_HOLD_SECS` and `RESERVATION_GRACE_SECS` (concert-api
    /// and batch).
    pub async fn start_with(settings: &[(&'static str, &str)]) -> Self {
        let dbs = [
            TestDatabase::create().await,
            TestDatabase::create().await,
            TestDatabase::create().await,
        ];
        Self::start_on(dbs, settings).await
    }

    /// [`Platform::start_with`] on databases that already exist, `[users, concert, payment]`
    /// (restored from a backup), with a Redis prefix and topics of its own: a fresh stack.
    pub async fn start_on(dbs: [TestDatabase; 3], settings: &[(&'static str, &str)]) -> Self {
        let id = unique_id();
        let [users_db, concert_db, payment_db] = dbs;
        let settings: Vec<(&'static str, String)> = settings
            .iter()
            .map(|(k, v)| (*k, (*v).to_owned()))
            .collect();
        let shared: Vec<_> = shared_env(&id)
            .into_iter()
            .chain(settings.clone())
            .collect();
        let with = |extra: Vec<(&'static str, String)>| {
            shared.iter().cloned().chain(extra).collect::<Vec<_>>()
        };
        let concert = start(
            "concert-api",
            &with(vec![("CONCERT_DATABASE_URL", concert_db.url.clone())]),
        )
        .await;
        let stream_port = crate::process::free_port();
        let users = start(
            "users-api",
            &with(vec![
                ("USERS_API_STREAM_PORT", stream_port.to_string()),
                ("USERS_DATABASE_URL", users_db.url.clone()),
                ("CONCERT_API_URL", concert.url.clone()),
            ]),
        )
        .await;
        let payment = start(
            "payment-api",
            &with(vec![
                ("PAYMENT_DATABASE_URL", payment_db.url.clone()),
                ("CONCERT_API_URL", concert.url.clone()),
            ]),
        )
        .await;
        Self {
            _topics: TopicPrefix(format!("{id}.")),
            id,
            concert,
            users,
            users_stream: format!("http://127.0.0.1:{stream_port}"),
            payment,
            users_db,
            concert_db,
            payment_db,
            settings,
        }
    }

    /// The variables every process of this platform shares (with the settings it was started
    /// with), plus the three databases: what batch and the load tool need.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = shared_env(&self.id);
        env.extend(self.settings.iter().cloned());
        env.extend([
            ("USERS_DATABASE_URL", self.users_db.url.clone()),
            ("CONCERT_DATABASE_URL", self.concert_db.url.clone()),
            ("PAYMENT_DATABASE_URL", self.payment_db.url.clone()),
        ]);
        env
    }

    /// batch as its own process (admission, expiry, reconciliation), with `extra` settings.
    pub async fn start_batch(&self, extra: &[(&'static str, &str)]) -> Process {
        let mut env = self.env();
        env.push(("BATCH_LEASE_MS", "1000".into()));
        // Reconciliation settles overdue payments directly with concert-api.
        env.push(("CONCERT_API_URL", self.concert.url.clone()));
        env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        start("batch", &env).await
    }

    /// Creates (or resets) the operator's admin, [`ADMIN_USERNAME`] with [`ADMIN_PASSWORD`],
    /// with `users-api create-admin`, as an operator does.
    pub fn create_admin(&self) {
        let made = Command::new(binary("users-api"))
            .args(["create-admin", "--username", ADMIN_USERNAME])
            .env("USERS_DATABASE_URL", &self.users_db.url)
            .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
            .output()
            .expect("run users-api create-admin");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
    }

    /// Creates (or resets) the operator's admin ([`Platform::create_admin`]) and returns a
    /// client logged in as it against `base`.
    /// The hold board the platform's concert-api pins holds on (`common::held`).
    pub fn hold_board(&self) -> common::held::HoldBoard {
        let (url, prefix) = (redis_url(), format!("{}:", self.id));
        let env = common::config::Env::from_pairs([
            ("REDIS_URL", url.as_str()),
            ("REDIS_KEY_PREFIX", prefix.as_str()),
        ]);
        let cfg = common::config::RedisConfig::from_env(&env).expect("the test's Redis settings");
        common::held::HoldBoard::new(
            common::redis::RedisStore::connect(&cfg).expect("built without connecting"),
        )
    }

    pub async fn admin(&self, base: &str) -> Client {
        self.create_admin();
        let mut admin = Client::new(base);
        admin.log_in(ADMIN_USERNAME, ADMIN_PASSWORD).await;
        admin
    }
}

/// What every process of one platform shares: its Redis prefix and topic prefix (`id`).
pub fn shared_env(id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("REDIS_URL", redis_url()),
        ("REDIS_KEY_PREFIX", format!("{id}:")),
        ("KAFKA_BROKERS", kafka_brokers()),
        ("KAFKA_TOPIC_PREFIX", format!("{id}.")),
        ("KAFKA_TOPIC_PARTITIONS", "1".into()),
        ("HTTP_WORKERS", "2".into()),
        ("DATABASE_POOL_SIZE", "4".into()),
        (
            "INTERNAL_API_TOKEN",
            common::testkit::INTERNAL_TEST_TOKEN.into(),
        ),
    ]
}
