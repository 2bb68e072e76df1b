//! `spawn_app`: users-api on port 0 with its own database, Redis prefix and topic prefix,
//! and a manual clock the test moves; and what the tests do with it: sessions written
//! straight into Redis, joining and polling the queue, calls with an optional bearer.

use std::time::Duration;

use common::auth::{QueueKeys, Role, Session, SessionStore};
use common::clock::Clock;
use common::config::Env;
use common::testkit::{Isolation, StubCatalogue, TestApp};
use reqwest::{Client, Method};
use sea_orm::DatabaseConnection;
use serde_json::{Value, json};
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
    /// The app's database (where the rooms' settings are persisted).
    pub db: DatabaseConnection,
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
    // Streams are opened on the lean listener, as the gateway sends them.
    let env = tweak(
        iso.env("USERS_DATABASE_URL")
            .with("USERS_API_STREAM_PORT", "0"),
    );
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
        db: iso.db.connect().await,
        iso,
    }
}

impl Spawned {
    /// The same waiting room the app (and batch) use: same Redis prefix, settings, clock and
    /// database.
    pub fn room(&self) -> WaitingRoom {
        WaitingRoom::new(
            self.queue_keys(),
            self.config.queue.clone(),
            self.clock.clone(),
        )
        .with_store(self.db.clone())
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

    /// Users-api's session store on the app's Redis, with a 10-minute TTL.
    fn session_store(&self) -> SessionStore {
        SessionStore::new(
            common::redis::RedisStore::connect(&self.config.redis).unwrap(),
            Duration::from_secs(600),
        )
    }

    /// Stores a session as users-api does at log-in (no account behind it); returns its token.
    pub async fn write_session(&self, user_id: i64, username: &str, role: Role) -> String {
        let session = Session {
            user_id,
            username: username.to_owned(),
            role,
        };
        self.session_store().create(&session).await.unwrap().0
    }

    /// Session tokens for `n` fans with the user ids `first_id`, `first_id + 1`, …, written as
    /// users-api writes them at log-in.
    pub async fn fan_sessions(&self, n: usize, first_id: i64) -> Vec<String> {
        let store = self.session_store();
        let mut out = Vec::with_capacity(n);
        for user_id in (first_id..).take(n) {
            let session = Session {
                user_id,
                username: format!("fan_{user_id}"),
                role: Role::User,
            };
            out.push(store.create(&session).await.unwrap().0);
        }
        out
    }

    /// A session of the organiser: user 7, `organiser`, an admin.
    pub async fn admin_session(&self) -> String {
        self.write_session(7, "organiser", Role::Admin).await
    }

    /// Any request, with a bearer session and a JSON body if given; the status and the JSON
    /// answer.
    pub async fn call(
        &self,
        c: &Client,
        method: Method,
        path: &str,
        session: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = c.request(method, self.url(path));
        if let Some(t) = session {
            req = req.bearer_auth(t);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        (res.status().as_u16(), res.json().await.unwrap())
    }

    /// `POST /api/queue/tokens` for `concert`: the status and the answer.
    pub async fn join(&self, c: &Client, session: &str, concert: i64) -> (u16, Value) {
        let body = json!({"concert_id": concert});
        self.call(
            c,
            Method::POST,
            "/api/queue/tokens",
            Some(session),
            Some(body),
        )
        .await
    }

    /// `GET /api/queue/tokens/{token}`: the status and the answer.
    pub async fn poll(&self, c: &Client, session: &str, token: &str) -> (u16, Value) {
        let path = format!("/api/queue/tokens/{token}");
        self.call(c, Method::GET, &path, Some(session), None).await
    }

    /// `GET /api/queue/tokens/{token}`, which must answer 200: the token's status.
    pub async fn poll_ok(&self, c: &Client, session: &str, token: &str) -> Value {
        let (code, status) = self.poll(c, session, token).await;
        assert_eq!(code, 200, "{status}");
        status
    }

    /// `path` on the status streams' own listener (`USERS_API_STREAM_PORT`).
    pub fn stream_url(&self, path: &str) -> String {
        self.app.url_on("stream", path)
    }

    /// Opens `GET /api/queue/tokens/{token}/events`, the token's status stream, on the
    /// streams' own listener.
    pub async fn open_events(&self, c: &Client, session: &str, token: &str) -> reqwest::Response {
        let path = format!("/api/queue/tokens/{token}/events");
        c.get(self.stream_url(&path))
            .bearer_auth(session)
            .send()
            .await
            .unwrap()
    }

    /// The rows a query returns from the app's database.
    pub async fn query(&self, sql: &str) -> Vec<sea_orm::QueryResult> {
        use sea_orm::{ConnectionTrait, Statement};
        let db = self.iso.db.connect().await;
        db.query_all_raw(Statement::from_string(db.get_database_backend(), sql))
            .await
            .unwrap()
    }

    pub async fn count_users(&self) -> i64 {
        let rows = self.query("SELECT count(*)::bigint AS n FROM users").await;
        rows[0].try_get("", "n").unwrap()
    }
}

/// Reads a status stream to its end, each frame due within 10 s: its frames, as text.
pub async fn rest_of_stream(res: &mut reqwest::Response) -> Vec<String> {
    let mut frames = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), res.chunk())
        .await
        .expect("the stream moves")
        .unwrap()
    {
        frames.push(String::from_utf8(chunk.to_vec()).unwrap());
    }
    frames
}

/// The JSON a status-stream frame (`data: {...}`) carries.
pub fn frame_data(frame: &str) -> Value {
    serde_json::from_str(frame.trim().trim_start_matches("data: ")).unwrap()
}
