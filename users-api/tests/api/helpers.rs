//! `spawn_app`: users-api on port 0 with its own database, Redis prefix and topic prefix.

use common::testkit::{Isolation, TestApp};
use users_api::{Application, Config};

pub struct Spawned {
    pub app: TestApp,
    /// Also keeps the test database alive: dropping it drops the database.
    pub iso: Isolation,
}

pub async fn spawn_app() -> Spawned {
    let iso = Isolation::new().await;
    let env = iso.env("USERS_DATABASE_URL");
    let config = Config::from_env(&env).expect("test config");
    let service = Application::build(config).await.expect("build users-api");
    Spawned {
        app: TestApp::start(service),
        iso,
    }
}

impl Spawned {
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
