//! Builds users-api: database, Redis, broker, routes, background tasks.

use actix_web::web;
use common::auth::{QueueKeys, SessionStore};
use common::config::{ConfigError, Env, LogFormat};
use common::events::{ALL_TOPICS, USERS_API_CONSUMES};
use common::kafka::Delivery;
use common::lifecycle::Service;
use common::openapi::Platform;
use common::startup::{
    ServiceMain, ServiceParts, StartupError, build_service, connect_messaging, open_database,
};
use utoipa::OpenApi;

use crate::concerts::ConcertDirectory;
use crate::config::{ADMIN_PASSWORD, Config, admin_password};
use crate::domain::account::{self, Password, Username};
use crate::domain::queue::{Lines, WaitingRoom};
use crate::domain::throttle::LoginThrottle;
use crate::events::RetireOnPurchase;
use crate::routes::AppState;
use crate::store::migration::Migrator;
use crate::stream_port::StreamPort;

pub const SERVICE: &str = "users-api";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "users-api",
        description = "Accounts, sessions and the waiting room"
    ),
    paths(
        crate::routes::accounts::sign_up,
        crate::routes::accounts::log_in,
        crate::routes::accounts::log_out,
        crate::routes::accounts::me,
        crate::routes::queue::join,
        crate::routes::queue::status,
        crate::routes::queue::events,
        crate::routes::rooms::public_view,
        crate::routes::rooms::admin_view,
        crate::routes::rooms::update,
    ),
    modifiers(&Platform)
)]
struct ApiDoc;

/// The OpenAPI document of this service's public routes (what `/openapi.json` serves, and
/// what the gateway's merged document is made of).
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub struct Application;

impl Application {
    /// Connects, migrates and binds; the returned service is not yet serving.
    pub async fn build(config: Config) -> Result<Service, StartupError> {
        tracing::info!(?config, "starting {SERVICE}");
        let clock = config.clock.clone();
        let db = open_database::<Migrator>(SERVICE, &config.database).await?;
        let (redis, kafka) = connect_messaging(&config.redis, &config.kafka, &ALL_TOPICS).await?;
        let sessions = SessionStore::new(redis.clone(), config.session.ttl)
            .with_max_lifetime(config.session_max_lifetime)
            .with_clock(clock.clone());
        let throttle = LoginThrottle::new(redis.clone(), config.throttle.clone(), clock.clone());
        let room = WaitingRoom::new(
            QueueKeys::new(redis.clone()),
            config.queue.clone(),
            clock.clone(),
        )
        .with_store(db.clone());
        let handler = RetireOnPurchase { room: room.clone() };
        let state = std::sync::Arc::new(AppState {
            db: db.clone(),
            sessions: sessions.clone(),
            lines: Lines::new(room.clone()),
            room,
            concerts: ConcertDirectory::new(config.concert_api.clone()),
            clock: clock.clone(),
            hashing: config.hashing.clone(),
            throttle,
        });
        let consumer_kafka = kafka.clone();
        let mut parts =
            ServiceParts::api(SERVICE, &config.http, db, redis, kafka, openapi()).with_clock(clock);
        // Joins, polls and stream checks are Redis alone: each worker drives its own
        // connection (see `common::redis`).
        parts.redis_per_worker = true;
        let lean = config.stream_port.map(|_| StreamPort {
            state: state.clone(),
            sessions: sessions.clone(),
            metrics: parts.metrics.clone(),
        });
        // The session extractor (`AuthUser`) looks the store up on its own, as app data.
        let (sessions, state) = (web::Data::new(sessions), web::Data::from(state));
        let mut service = build_service(parts, move |cfg: &mut web::ServiceConfig| {
            cfg.app_data(sessions.clone()).app_data(state.clone());
            crate::routes::configure(cfg);
        })?;
        if let (Some(lean), Some(port)) = (lean, config.stream_port) {
            let cancel = service.cancel_token();
            let (port, served) =
                lean.start(&config.http.host, port, config.http.workers, cancel)?;
            tracing::info!(port, "status streams also served on their own port");
            service.add_port("stream", port);
            service.spawn("stream port", served);
        }
        service.spawn_consumer(
            "reservation.confirmed consumer",
            consumer_kafka,
            USERS_API_CONSUMES,
            // The buyer already sees CONFIRMED on the reservation: retiring their pass can
            // wait for a batch (a sale fills one in tens of milliseconds).
            Delivery::Batched,
            handler,
        );
        Ok(service)
    }
}

impl ServiceMain for Config {
    const NAME: &'static str = SERVICE;
    /// `create-admin` reads it (check-config lists it).
    const EXTRA_SETTINGS: &'static [&'static str] = &[ADMIN_PASSWORD];
    type Migrator = Migrator;

    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Config::from_env(env)
    }
    fn log_format(&self) -> LogFormat {
        self.log_format
    }
    fn database(&self) -> Option<&common::config::DatabaseConfig> {
        Some(&self.database)
    }
    async fn build(self) -> Result<Service, StartupError> {
        Application::build(self).await
    }
    /// `users-api create-admin --username NAME` (password from `ADMIN_PASSWORD`): creates the
    /// admin or resets its password, ending every session it had. The credentials are checked
    /// (length and the password policy) before the database opens.
    async fn run_other(self, cmd: String, args: Vec<String>) -> Result<(), String> {
        if cmd != "create-admin" {
            return Err(format!(
                "unknown command `{cmd}` (serve | migrate | create-admin)"
            ));
        }
        let username = match args.as_slice() {
            [flag, name] if flag == "--username" => name.clone(),
            _ => {
                return Err(format!(
                    "usage: users-api create-admin --username NAME (password in {ADMIN_PASSWORD})"
                ));
            }
        };
        let password = admin_password(&Env::process())?;
        let username =
            Username::parse(&username).map_err(|e| format!("--username: {}", e.reason))?;
        let password = Password::parse(password.expose())
            .map_err(|e| format!("{ADMIN_PASSWORD}: {}", e.reason))?;
        password
            .check_policy(username.as_str())
            .map_err(|e| format!("{ADMIN_PASSWORD}: {}", e.0))?;
        let db = open_database::<Migrator>(SERVICE, &self.database)
            .await
            .map_err(|e| e.to_string())?;
        let redis = common::redis::RedisStore::connect(&self.redis).map_err(|e| e.to_string())?;
        let sessions =
            SessionStore::new(redis, self.session.ttl).with_max_lifetime(self.session_max_lifetime);
        let admin = account::create_admin(&db, &sessions, &username, &password)
            .await
            .map_err(|e| e.to_string())?;
        println!("admin `{}` ready (id {})", admin.username, admin.id);
        Ok(())
    }
}
