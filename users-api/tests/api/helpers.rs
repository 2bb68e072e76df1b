//! `spawn_app`: users-api on port 0 with its own database, Redis prefix and topic prefix,
//! and a manual clock the test moves.

use common::auth::QueueKeys;
use common::clock::Clock;
use common::config::Env;
use common::testkit::{Isolation, StubCatalogue, TestApp};
use users_api::domain::queue::WaitingRoom;
use users_api::{Application, Config};

/// Concerts the stub catalogue knows.
pub const CONCERTS: [i64; 3] = [1, 2, 3];

pub struct Spawned {
    pub app: TestApp,
    pub config: Config,
    /// The app's clock: `advance` it instead of sleeping until a pass runs out.
    pub clock: Clock,
    pub catalogue: Option<StubCatalogue>,
    /// Also keeps the test database alive: dropping it drops the database.
    pub iso: Isolation,
}

pub async fn spawn_app() -> Spawned {
    spawn_app_with(|env| env).await
}

/// Spawns with extra settings; a stub catalogue serves `CONCERTS` unless `tweak` sets
/// `CONCERT_API_URL`.
pub async fn spawn_app_with(tweak: impl FnOnce(Env) -> Env) -> Spawned {
    let iso = Isolation::new().await;
    let env = tweak(iso.env("USERS_DATABASE_URL"));
    let (env, catalogue) = if env.raw("CONCERT_API_URL").is_some() {
        (env, None)
    } else {
        let stub = StubCatalogue::start(CONCERTS.to_vec()).await;
        (env.with("CONCERT_API_URL", stub.url.clone()), Some(stub))
    };
    let mut config = Config::from_env(&env).expect("test config");
    config.clock = Clock::manual();
    let service = Application::build(config.clone())
        .await
        .expect("build users-api");
    Spawned {
        app: TestApp::start(service),
        clock: config.clock.clone(),
        config,
        catalogue,
        iso,
    }
}

impl Spawned {
    /// The same waiting room the app uses (same Redis prefix, settings and clock).
    pub fn room(&self) -> WaitingRoom {
        WaitingRoom::new(
            self.queue_keys(),
            self.config.queue.clone(),
            self.clock.clone(),
        )
    }

    pub fn queue_keys(&self) -> QueueKeys {
        QueueKeys::new(common::redis::RedisStore::connect(&self.config.redis).unwrap())
    }

    pub fn url(&self, path: &str) -> String {
        self.app.url(path)
    }

    /// Signs up and logs in; returns the session token.
    pub async fn session(&self, username: &str) -> String {
        let c = reqwest::Client::new();
        let creds = serde_json::json!({"username": username, "password": "password-123"});
        let res = c
            .post(self.url("/api/users"))
            .json(&creds)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "sign up {username}");
        let res = c
            .post(self.url("/api/sessions"))
            .json(&creds)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "log in {username}");
        res.json::<serde_json::Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn count_users(&self) -> i64 {
        use sea_orm::{ConnectionTrait, Statement};
        let db = self.iso.db.connect().await;
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT count(*)::bigint AS n FROM users",
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get("", "n").unwrap()
    }
}
