//! `spawn_app`: concert-api on port 0 with its own database, Redis prefix and topic prefix.

use common::testkit::{Isolation, TestApp};
use concert_api::{Application, Config};

pub struct Spawned {
    pub app: TestApp,
    /// Held so the test database outlives the app; dropping it drops the database.
    #[allow(dead_code)]
    pub iso: Isolation,
}

pub async fn spawn_app() -> Spawned {
    let iso = Isolation::new().await;
    let env = iso.env("CONCERT_DATABASE_URL");
    let config = Config::from_env(&env).expect("test config");
    let service = Application::build(config).await.expect("build concert-api");
    Spawned {
        app: TestApp::start(service),
        iso,
    }
}
