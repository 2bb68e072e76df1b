//! Builds payment-api: database, Redis, broker, routes, the settlement consumer, one clock.

use actix_web::web;
use common::auth::{QueueKeys, SessionStore};
use common::config::{ConfigError, Env, LogFormat};
use common::events::{ALL_TOPICS, PAYMENT_API_CONSUMES};
use common::kafka::Delivery;
use common::lifecycle::Service;
use common::openapi::Platform;
use common::startup::{
    ServiceMain, ServiceParts, StartupError, build_service, connect_messaging, open_database,
};
use utoipa::OpenApi;

use crate::concerts::ConcertClient;
use crate::config::Config;
use crate::events::SettlementEvents;
use crate::metrics::MoneyMetrics;
use crate::routes::AppState;
use crate::store::migration::Migrator;

pub const SERVICE: &str = "payment-api";

#[derive(OpenApi)]
#[openapi(
    info(title = "payment-api", description = "Wallets, payments and refunds"),
    paths(
        crate::routes::wallet::balance,
        crate::routes::wallet::charge,
        crate::routes::wallet::transactions,
        crate::routes::payments::pay,
        crate::routes::payments::list,
        crate::routes::payments::get,
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
        let db = open_database::<Migrator>(SERVICE, &config.database).await?;
        let (redis, kafka) = connect_messaging(&config.redis, &config.kafka, &ALL_TOPICS).await?;
        let clock = config.clock.clone();
        let sessions = web::Data::new(
            SessionStore::new(redis.clone(), config.session.ttl).with_clock(clock.clone()),
        );
        let queue_keys = web::Data::new(QueueKeys::new(redis.clone()));
        let parts = ServiceParts::api(
            SERVICE,
            &config.http,
            db.clone(),
            redis.clone(),
            kafka.clone(),
            openapi(),
        )
        .with_clock(clock.clone());
        let money = MoneyMetrics::register(parts.metrics.registry());
        let pressure = common::pressure::Pressure::default();
        let state = web::Data::new(AppState {
            db: db.clone(),
            cfg: config.payment.clone(),
            concerts: ConcertClient::new(
                &config.payment.concert_api_url,
                config.payment.concert_api_timeout,
                &config.payment.internal_token,
            ),
            board: common::held::HoldBoard::new(redis.clone()),
            clock: clock.clone(),
            money: money.clone(),
            pressure: pressure.clone(),
        });
        let consumer_kafka = kafka.clone();
        let handler = SettlementEvents {
            db: db.clone(),
            clock: clock.clone(),
            money,
        };
        let mut service = build_service(parts, move |cfg: &mut web::ServiceConfig| {
            cfg.app_data(sessions.clone())
                .app_data(queue_keys.clone())
                .app_data(state.clone());
            crate::routes::configure(cfg);
        })?;
        pressure.spawn_publisher(&mut service, SERVICE, &redis, &db);
        service.spawn_consumer(
            "settlement consumer",
            consumer_kafka,
            PAYMENT_API_CONSUMES,
            // The settlement's verdict is already on the reservation the buyer watches: this
            // only records it (or refunds a rejection), so it waits for a batch.
            Delivery::Batched,
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
}
