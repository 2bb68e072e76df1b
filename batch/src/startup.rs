//! Builds batch: health and metrics on its own port; the scheduled jobs run beside it.

use std::sync::Arc;

use common::config::{ConfigError, Env, LogFormat};
use common::lifecycle::Service;
use common::metrics::Metrics;
use common::startup::{ServiceMain, ServiceParts, StartupError, build_service, connect_messaging};
use utoipa::OpenApi;

use crate::config::Config;

pub const SERVICE: &str = "batch";

#[derive(OpenApi)]
#[openapi(info(
    title = "batch",
    description = "Queue admission, expiry sweeps, reconciliation (health and metrics only)"
))]
struct ApiDoc;

/// batch has no schema of its own.
pub struct NoSchema;

impl sea_orm_migration::MigratorTrait for NoSchema {
    fn migrations() -> Vec<Box<dyn sea_orm_migration::MigrationTrait>> {
        Vec::new()
    }
}

pub struct Application;

impl Application {
    pub async fn build(config: Config) -> Result<Service, StartupError> {
        tracing::info!(?config, "starting {SERVICE}");
        let (redis, kafka) = connect_messaging(&config.redis, &config.kafka, &[]).await?;
        let parts = ServiceParts {
            name: SERVICE,
            http: config.http.clone(),
            db: None,
            redis,
            kafka,
            metrics: Arc::new(Metrics::new(SERVICE)),
            openapi: ApiDoc::openapi(),
            relay: false,
        };
        build_service(parts, |_| {})
    }
}

impl ServiceMain for Config {
    const NAME: &'static str = SERVICE;
    /// batch owns no database: each job works on its service's database, which that service
    /// migrates.
    type Migrator = NoSchema;

    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Config::from_env(env)
    }
    fn log_format(&self) -> LogFormat {
        self.log_format
    }
    fn database(&self) -> Option<&common::config::DatabaseConfig> {
        None
    }
    async fn build(self) -> Result<Service, StartupError> {
        Application::build(self).await
    }
}
