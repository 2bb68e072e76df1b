//! Batch under test: the three service databases (migrated by their own migrators), a shared
//! Redis prefix and topic prefix, and batch in-process or as separate processes.

use common::config::Env;
use common::testkit::{Isolation, TestApp, TestDatabase};
use sea_orm_migration::MigratorTrait;

pub struct World {
    pub iso: Isolation,
    pub users_db: TestDatabase,
    pub concert_db: TestDatabase,
    pub payment_db: TestDatabase,
}

impl World {
    pub async fn new() -> Self {
        let iso = Isolation::new().await;
        let (users_db, concert_db, payment_db) = (
            TestDatabase::create().await,
            TestDatabase::create().await,
            TestDatabase::create().await,
        );
        users_api::store::migration::Migrator::up(&users_db.connect().await, None)
            .await
            .unwrap();
        concert_api::store::migration::Migrator::up(&concert_db.connect().await, None)
            .await
            .unwrap();
        payment_api::store::migration::Migrator::up(&payment_db.connect().await, None)
            .await
            .unwrap();
        Self {
            iso,
            users_db,
            concert_db,
            payment_db,
        }
    }

    /// The environment every process of this world shares.
    pub fn env(&self) -> Env {
        self.iso
            .env("UNUSED")
            .with("USERS_DATABASE_URL", self.users_db.url.clone())
            .with("CONCERT_DATABASE_URL", self.concert_db.url.clone())
            .with("PAYMENT_DATABASE_URL", self.payment_db.url.clone())
    }

    /// The same variables as pairs, for a child process.
    pub fn vars(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = [
            "USERS_DATABASE_URL",
            "CONCERT_DATABASE_URL",
            "PAYMENT_DATABASE_URL",
            "REDIS_URL",
            "REDIS_KEY_PREFIX",
            "KAFKA_BROKERS",
            "KAFKA_TOPIC_PREFIX",
            "INTERNAL_API_TOKEN",
        ]
        .iter()
        .map(|k| (k.to_string(), self.env().raw(k).unwrap()))
        .collect();
        v.extend(
            extra
                .iter()
                .map(|(k, val)| (k.to_string(), val.to_string())),
        );
        v
    }
}

pub struct Spawned {
    pub app: TestApp,
    /// Keeps the databases alive: dropping it drops them.
    _world: World,
}

pub async fn spawn_app() -> Spawned {
    let world = World::new().await;
    let config = batch::Config::from_env(&world.env()).expect("test config");
    let app = TestApp::start(
        batch::Application::build(config)
            .await
            .expect("build batch"),
    );
    Spawned { app, _world: world }
}

/// `app`'s `/metrics` page.
pub async fn metrics(app: &TestApp) -> String {
    reqwest::get(app.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

pub use common::testkit::figure;
