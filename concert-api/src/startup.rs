//! Builds concert-api: database, Redis, broker, routes, the payment consumer.

use actix_web::web;
use common::auth::{QueueKeys, SessionStore};
use common::config::{ConfigError, Env, LogFormat};
use common::events::{ALL_TOPICS, CONCERT_API_CONSUMES};
use common::kafka::Delivery;
use common::lifecycle::Service;
use common::openapi::Platform;
use common::startup::{
    ServiceMain, ServiceParts, StartupError, build_service, connect_messaging, open_database,
};
use utoipa::OpenApi;

use crate::config::Config;
use crate::domain::box_office::BoxOffice;
use crate::domain::policy::HoldPolicy;
use crate::events::SettleOnPayment;
use crate::metrics::SaleMetrics;
use crate::routes::AppState;
use crate::store::cache::CatalogueCache;
use crate::store::inventory::{Inventory, Reach};
use crate::store::migration::Migrator;

/// Every this many resync passes, every live concert is counted; in between only those
/// changed lately (`Reach`) and those whose hash is missing or went back in time
/// (`Inventory::resync_all`). An hour at the default `INVENTORY_RESYNC_MS`: nothing else is
/// known to leave a count wrong, so this is a last resort only, and it costs a count of every
/// seat of every show to come (3.1 s of PostgreSQL for 305 concerts on the benchmark
/// machine, every minute when it ran that often, in the middle of every sale measured).
const RESYNC_LIVE_EVERY: u64 = 720;

pub const SERVICE: &str = "concert-api";

/// The public routes only: `/internal/**` is for the platform's own services (API.md).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "concert-api",
        description = "Concerts, schedules, seats and holds"
    ),
    paths(
        crate::routes::catalogue::list_concerts,
        crate::routes::catalogue::get_concert,
        crate::routes::catalogue::list_schedules,
        crate::routes::catalogue::seat_map,
        crate::routes::reservations::create,
        crate::routes::reservations::list,
        crate::routes::reservations::get,
        crate::routes::reservations::cancel,
        crate::routes::admin::create_concert,
        crate::routes::admin::update_concert,
        crate::routes::admin::create_schedule,
        crate::routes::admin::sale_view,
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
        let inventory = Inventory::new(redis.clone());
        let parts = ServiceParts::api(
            SERVICE,
            &config.http,
            db.clone(),
            redis.clone(),
            kafka.clone(),
            openapi(),
        )
        .with_clock(clock.clone());
        let sale = SaleMetrics::register(parts.metrics.registry());
        let pressure = common::pressure::Pressure::default();
        let state = web::Data::new(AppState {
            db: db.clone(),
            clock: clock.clone(),
            office: BoxOffice::new(
                db.clone(),
                HoldPolicy::new(&config.reservation),
                config.clock.clone(),
                inventory.clone(),
                common::held::HoldBoard::new(redis.clone()),
            ),
            catalogue: CatalogueCache::new(redis.clone(), config.reservation.catalogue_cache),
            sale_view: crate::domain::sale::FiguresMemo::new(
                config.sale_view_cache,
                sale.sale_view_reads.clone(),
            ),
            sale: sale.clone(),
            pressure: pressure.clone(),
        });
        let consumer_kafka = kafka.clone();
        let handler = SettleOnPayment {
            db: db.clone(),
            inventory: inventory.clone(),
            confirmations: state.office.confirmed.clone(),
            clock: clock.clone(),
            sale,
        };
        let resync_db = db.clone();
        let mut service = build_service(parts, move |cfg: &mut web::ServiceConfig| {
            cfg.app_data(sessions.clone())
                .app_data(queue_keys.clone())
                .app_data(state.clone());
            crate::routes::configure(cfg);
        })?;
        pressure.spawn_publisher(&mut service, SERVICE, &redis, &db);
        let cancel = service.cancel_token();
        let every = config.inventory_resync;
        service.spawn("inventory resync", async move {
            // Changed since the previous pass began, and a period more: a change whose
            // transaction began before it (`updated_at` is its start) is still seen.
            let mut previous: Option<std::time::Instant> = None;
            for pass in 0u64.. {
                let reach = match previous {
                    Some(began) if pass % RESYNC_LIVE_EVERY != 0 => {
                        Reach::ChangedWithin(began.elapsed() + every)
                    }
                    _ => Reach::Live,
                };
                previous = Some(std::time::Instant::now());
                match inventory.resync_all(&resync_db, reach).await {
                    Ok(n) => tracing::debug!(concerts = n, ?reach, "inventory resynced"),
                    Err(e) => tracing::warn!(error = %e, "inventory resync failed"),
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        });
        service.spawn_consumer(
            "payment.completed consumer",
            consumer_kafka,
            CONCERT_API_CONSUMES,
            // The buyer waits on this one: their seat is confirmed by it.
            Delivery::AtOnce,
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
