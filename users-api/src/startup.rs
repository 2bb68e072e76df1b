//! Builds users-api: database, Redis, broker, routes, background tasks.

use actix_web::web;
use common::auth::{QueueKeys, SessionStore};
use common::config::{ConfigError, Env, LogFormat};
use common::events::{ALL_TOPICS, RESERVATION_CONFIRMED};
use common::lifecycle::Service;
use common::startup::{
    ServiceMain, ServiceParts, StartupError, build_service, connect_messaging, open_database,
};
use utoipa::OpenApi;

use crate::concerts::ConcertDirectory;
use crate::config::Config;
use crate::domain::queue::WaitingRoom;
use crate::events::RetireOnPurchase;
use crate::store::migration::Migrator;

pub const SERVICE: &str = "users-api";

#[derive(OpenApi)]
#[openapi(info(
    title = "users-api",
    description = "Accounts, sessions and the waiting room"
))]
struct ApiDoc;

pub struct Application;

impl Application {
    /// Connects, migrates and binds; the returned service is not yet serving.
    pub async fn build(config: Config) -> Result<Service, StartupError> {
        tracing::info!(?config, "starting {SERVICE}");
        let db = open_database::<Migrator>(SERVICE, &config.database).await?;
        let (redis, kafka) = connect_messaging(&config.redis, &config.kafka, &ALL_TOPICS).await?;
        let sessions = web::Data::new(SessionStore::new(redis.clone(), config.session.ttl));
        let db_data = web::Data::new(db.clone());
        let room = WaitingRoom::new(QueueKeys::new(redis.clone()), config.queue.clone());
        let room_data = web::Data::new(room.clone());
        let concerts = web::Data::new(ConcertDirectory::new(config.concert_api.clone()));
        let consumer_kafka = kafka.clone();
        let handler = RetireOnPurchase {
            db: db.clone(),
            room,
        };
        let parts = ServiceParts::api(SERVICE, &config.http, db, redis, kafka, ApiDoc::openapi());
        let mut service = build_service(parts, move |cfg: &mut web::ServiceConfig| {
            cfg.app_data(sessions.clone())
                .app_data(db_data.clone())
                .app_data(room_data.clone())
                .app_data(concerts.clone());
            crate::routes::configure(cfg);
        })?;
        service.spawn_consumer(
            "reservation.confirmed consumer",
            consumer_kafka,
            &[RESERVATION_CONFIRMED],
            handler,
        );
        Ok(service)
    }
}

impl ServiceMain for Config {
    const NAME: &'static str = SERVICE;
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
    /// admin or resets its password.
    async fn run_other(self, cmd: String, args: Vec<String>) -> Result<(), String> {
        if cmd != "create-admin" {
            return Err(format!(
                "unknown command `{cmd}` (serve | migrate | create-admin)"
            ));
        }
        let username =
            match args.as_slice() {
                [flag, name] if flag == "--username" => name.clone(),
                _ => return Err(
                    "usage: users-api create-admin --username NAME (password in ADMIN_PASSWORD)"
                        .into(),
                ),
            };
        let password =
            std::env::var("ADMIN_PASSWORD").map_err(|_| "ADMIN_PASSWORD is not set".to_owned())?;
        let row = crate::domain::account::create_admin(&self, &username, &password).await?;
        println!("admin `{}` ready (id {})", row.username, row.id);
        Ok(())
    }
}
