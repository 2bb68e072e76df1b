//! The wiring every service repeats, written once: open and migrate its database, connect
//! Redis and the broker, create topics, bind, serve, and run the outbox relay.

use std::sync::Arc;

use sea_orm::DatabaseConnection;
use sea_orm_migration::MigratorTrait;

use crate::config::{DatabaseConfig, HttpConfig, KafkaConfig, RedisConfig};
use crate::http::{Plumbing, Readiness};
use crate::kafka::KafkaClient;
use crate::lifecycle::Service;
use crate::metrics::Metrics;
use crate::outbox::{self, RelayConfig};
use crate::redis::RedisStore;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("broker: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("http: {0}")]
    Io(#[from] std::io::Error),
}

/// Connects to a service's database and applies its migrations (under an advisory lock).
pub async fn open_database<M: MigratorTrait>(
    service: &str,
    cfg: &DatabaseConfig,
) -> Result<DatabaseConnection, StartupError> {
    let db = crate::db::connect(cfg).await?;
    crate::db::migrate::<M>(&db, crate::db::migration_lock_key(service)).await?;
    tracing::info!(service, database = %cfg.url, "database ready and migrated");
    Ok(db)
}

/// Connects Redis and the broker, and creates the topics this service touches.
pub async fn connect_messaging(
    redis: &RedisConfig,
    kafka: &KafkaConfig,
    topics: &[&str],
) -> Result<(RedisStore, KafkaClient), StartupError> {
    let store = RedisStore::connect(redis)?;
    let client = KafkaClient::new(kafka)?;
    if !topics.is_empty() {
        client.ensure_topics(topics).await?;
    }
    Ok((store, client))
}

/// The pieces a service hands over to be served.
pub struct ServiceParts {
    pub name: &'static str,
    pub http: HttpConfig,
    pub db: Option<DatabaseConnection>,
    /// Other services' databases this process works on (batch), checked by readiness.
    pub other_databases: Vec<(&'static str, DatabaseConnection)>,
    pub redis: RedisStore,
    pub kafka: KafkaClient,
    pub metrics: Arc<Metrics>,
    pub openapi: utoipa::openapi::OpenApi,
    /// Run the outbox relay for `db` (services that publish events).
    pub relay: bool,
    /// The service's time source (the extractors judge expiry by it).
    pub clock: crate::clock::Clock,
}

impl ServiceParts {
    /// An API service: its own database (with its outbox relay), Redis and the broker.
    pub fn api(
        name: &'static str,
        http: &HttpConfig,
        db: DatabaseConnection,
        redis: RedisStore,
        kafka: KafkaClient,
        openapi: utoipa::openapi::OpenApi,
    ) -> Self {
        Self {
            name,
            http: http.clone(),
            db: Some(db),
            other_databases: Vec::new(),
            redis,
            kafka,
            metrics: Arc::new(Metrics::new(name)),
            openapi,
            relay: true,
            clock: crate::clock::Clock::system(),
        }
    }

    /// The same parts judged by `clock` (a test's manual clock).
    pub fn with_clock(mut self, clock: crate::clock::Clock) -> Self {
        self.clock = clock;
        self
    }
}

/// Binds, builds the HTTP server with the service's `routes`, and starts the outbox relay.
pub fn build_service<F>(parts: ServiceParts, routes: F) -> Result<Service, StartupError>
where
    F: Fn(&mut actix_web::web::ServiceConfig) + Send + Clone + 'static,
{
    let listener = crate::http::bind(&parts.http)?;
    let port = listener.local_addr()?.port();
    let readiness = Readiness {
        db: parts.db.clone(),
        other_databases: parts.other_databases.clone(),
        redis: Some(parts.redis.clone()),
        broker: Some(parts.metrics.clone()),
    };
    let server = crate::http::serve(
        listener,
        Plumbing {
            http: parts.http.clone(),
            metrics: parts.metrics.clone(),
            readiness,
            openapi: parts.openapi,
            clock: parts.clock,
        },
        routes,
    )?;
    let mut service = Service::new(parts.name, port, server, parts.http.shutdown_timeout);
    service.export_metrics(parts.metrics.clone());
    let cancel = service.cancel_token();
    service.spawn(
        "broker-watch",
        watch_broker(parts.kafka.clone(), parts.metrics.clone(), cancel),
    );
    if let (true, Some(db)) = (parts.relay, parts.db) {
        let cancel = service.cancel_token();
        service.spawn(
            "outbox-relay",
            outbox::run_relay(
                db,
                parts.kafka.clone(),
                RelayConfig::default(),
                Some(parts.metrics),
                cancel,
            ),
        );
    }
    service.flush_on_shutdown(parts.kafka);
    tracing::info!(service = parts.name, port, "listening");
    Ok(service)
}

/// Keeps `kafka_broker_up` current: a metadata round trip every 5 s. Readiness reports it
/// without asking the broker itself, so a hanging broker never slows a probe.
pub async fn watch_broker(
    kafka: KafkaClient,
    metrics: Arc<Metrics>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_up = None;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let result = kafka.ping(std::time::Duration::from_secs(3)).await;
        let up = result.is_ok();
        metrics.set_broker_up(up);
        if was_up != Some(up) {
            match &result {
                Ok(()) => tracing::info!("broker reachable"),
                Err(e) => tracing::warn!(error = %e, "broker unreachable"),
            }
            was_up = Some(up);
        }
    }
}

/// What a service binary was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Serve,
    Migrate,
    /// A service-specific subcommand with its arguments.
    Other(String, Vec<String>),
}

pub fn command_from_args() -> Command {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        None | Some("serve") => Command::Serve,
        Some("migrate") => Command::Migrate,
        Some(other) => Command::Other(other.to_owned(), args.collect()),
    }
}

/// Prints a startup failure the way an operator needs it and returns the exit code.
pub fn exit_with(service: &str, err: impl std::fmt::Display) -> std::process::ExitCode {
    tracing::error!(service, error = %err, "fatal");
    eprintln!("{service}: {err}");
    std::process::ExitCode::from(1)
}

/// A service binary: how it reads its config, builds itself, migrates, and any extra
/// subcommands. [`run_main`] drives it, so every `main.rs` is one line.
pub trait ServiceMain: Sized + Send + Sync + 'static {
    const NAME: &'static str;
    /// The service's own schema.
    type Migrator: MigratorTrait;
    fn from_env(env: &crate::config::Env) -> Result<Self, crate::config::ConfigError>;
    fn log_format(&self) -> crate::config::LogFormat;
    /// The service's own database, if it has one.
    fn database(&self) -> Option<&DatabaseConfig>;
    fn build(self) -> impl std::future::Future<Output = Result<Service, StartupError>> + Send;
    /// `<service> migrate`: apply the service's migrations and exit.
    fn migrate(&self) -> impl std::future::Future<Output = Result<(), StartupError>> + Send {
        async move {
            match self.database() {
                Some(db) => open_database::<Self::Migrator>(Self::NAME, db)
                    .await
                    .map(|_| ()),
                None => {
                    tracing::info!("{} owns no database; nothing to migrate", Self::NAME);
                    Ok(())
                }
            }
        }
    }
    /// A service-specific subcommand; the default knows none.
    fn run_other(
        self,
        cmd: String,
        _args: Vec<String>,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send {
        async move { Err(format!("unknown command `{cmd}` (serve | migrate)")) }
    }
}

/// `serve` (default), `migrate`, or a service-specific command; config errors exit 1 naming
/// the variable.
pub async fn run_main<S: ServiceMain>() -> std::process::ExitCode {
    let config = match S::from_env(&crate::config::Env::process()) {
        Ok(c) => c,
        Err(e) => return exit_with(S::NAME, e),
    };
    crate::telemetry::init(config.log_format());
    let outcome = match command_from_args() {
        Command::Serve => match config.build().await {
            Ok(service) => service
                .run_until(crate::lifecycle::termination_signal())
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        Command::Migrate => config.migrate().await.map_err(|e| e.to_string()),
        Command::Other(cmd, args) => config.run_other(cmd, args).await,
    };
    outcome.map_or_else(
        |e| exit_with(S::NAME, e),
        |()| std::process::ExitCode::SUCCESS,
    )
}
