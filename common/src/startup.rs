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
    #[error("broker: {0}")]
    Topics(#[from] crate::kafka::TopicError),
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
    if let Some(bound) = cfg.lock_timeout {
        crate::db::persist_lock_timeout(&db, bound).await;
    }
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
    /// HTTP workers with Redis connections of their own (see `http::Plumbing`).
    pub redis_per_worker: bool,
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
            redis_per_worker: false,
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
            redis_per_worker: parts.redis_per_worker,
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
    /// Read the configuration as `serve` would, connect to nothing, print a JSON report.
    CheckConfig,
    /// A service-specific subcommand with its arguments.
    Other(String, Vec<String>),
}

pub fn command_from_args() -> Command {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        None | Some("serve") => Command::Serve,
        Some("migrate") => Command::Migrate,
        Some("check-config") => Command::CheckConfig,
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
    /// Variables the binary reads outside [`ServiceMain::from_env`] (a subcommand's own),
    /// listed by `check-config`.
    const EXTRA_SETTINGS: &'static [&'static str] = &[];
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

/// Variables every service reads outside its config struct (the log filter).
const PLATFORM_SETTINGS: [&str; 1] = ["RUST_LOG"];

/// What `check-config` prints: whether the configuration is valid, every error (values of
/// secrets redacted), and every variable name the service reads, set or not.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigReport {
    pub service: String,
    pub ok: bool,
    pub errors: Vec<ReportedError>,
    pub settings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReportedError {
    pub var: String,
    pub value: String,
    pub reason: String,
}

impl ConfigReport {
    /// Exit code of `check-config`: 0 when ok, 2 when not.
    pub fn exit_code(&self) -> std::process::ExitCode {
        std::process::ExitCode::from(if self.ok { 0 } else { 2 })
    }
}

/// Reads a configuration with `read` in check mode (every bad value reported, defaults used
/// for the rest of the pass) and reports what it found.
pub fn check_config<T>(
    service: &str,
    env: &crate::config::Env,
    read: impl FnOnce(&crate::config::Env) -> Result<T, crate::config::ConfigError>,
    extra_settings: &[&str],
) -> ConfigReport {
    let env = env.clone().checking();
    let read = read(&env);
    let mut errors = env.errors();
    if let Err(e) = read {
        errors.push(e);
    }
    let mut seen = std::collections::BTreeSet::new();
    let errors: Vec<ReportedError> = errors
        .into_iter()
        .filter(|e| seen.insert((e.var.clone(), e.reason.clone())))
        .map(|e| ReportedError {
            value: redact_value(&e.var, &e.value),
            var: e.var,
            reason: e.reason,
        })
        .collect();
    let mut settings: std::collections::BTreeSet<String> = env.names_read().into_iter().collect();
    settings.extend(
        PLATFORM_SETTINGS
            .iter()
            .chain(extra_settings)
            .map(|s| (*s).to_owned()),
    );
    ConfigReport {
        service: service.to_owned(),
        ok: errors.is_empty(),
        errors,
        settings: settings.into_iter().collect(),
    }
}

/// A value fit for a report: never a secret, never a URL's password.
fn redact_value(var: &str, value: &str) -> String {
    let secret = ["PASSWORD", "TOKEN", "SECRET", "KEY"]
        .iter()
        .any(|w| var.contains(w) && !var.ends_with("_PREFIX"));
    if secret && !value.is_empty() {
        "***".to_owned()
    } else {
        crate::config::redact_url(value)
    }
}

/// `S`'s own settings and the platform's (the traces' endpoint).
fn read_settings<S: ServiceMain>(
    env: &crate::config::Env,
) -> Result<(S, Option<String>), crate::config::ConfigError> {
    let traces = crate::config::traces_endpoint(env);
    Ok((S::from_env(env)?, traces?))
}

/// Reads `S`'s configuration as `serve` would; every bad value is named, not just the first.
fn read_config<S: ServiceMain>(
    env: &crate::config::Env,
) -> Result<(S, Option<String>), Vec<crate::config::ConfigError>> {
    let env = env.clone().checking();
    let read = read_settings::<S>(&env);
    let mut errors = env.errors();
    match read {
        Ok(config) if errors.is_empty() => Ok(config),
        Ok(_) => Err(errors),
        Err(e) => {
            errors.push(e);
            Err(errors)
        }
    }
}

/// `serve` (default), `migrate`, `check-config`, or a service-specific command; config
/// errors exit 1 naming every bad variable.
pub async fn run_main<S: ServiceMain>() -> std::process::ExitCode {
    let env = crate::config::Env::process();
    let command = command_from_args();
    if command == Command::CheckConfig {
        // Nothing but the report on stdout: no telemetry, no connections.
        let report = check_config(S::NAME, &env, read_settings::<S>, S::EXTRA_SETTINGS);
        match serde_json::to_string(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => return exit_with(S::NAME, e),
        }
        return report.exit_code();
    }
    let (config, traces) = match read_config::<S>(&env) {
        Ok(c) => c,
        Err(errors) => {
            let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
            return exit_with(S::NAME, all.join("; "));
        }
    };
    // A command's standard output is its answer (JSON lines): its log goes to stderr.
    let log_to = match command {
        Command::Serve => crate::telemetry::LogTo::Stdout,
        _ => crate::telemetry::LogTo::Stderr,
    };
    crate::telemetry::init(config.log_format(), log_to, S::NAME, traces.as_deref());
    let outcome = match command {
        Command::Serve => match config.build().await {
            Ok(service) => {
                let deadline = service.shutdown_timeout();
                service
                    .run_until(async move {
                        crate::lifecycle::termination_signal().await;
                        // The steps end by the deadline; this ends the process if something
                        // the runtime waits for as it drops still hangs just after it.
                        crate::lifecycle::exit_after(
                            S::NAME,
                            deadline + std::time::Duration::from_secs(1),
                        );
                    })
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        },
        Command::Migrate => config.migrate().await.map_err(|e| e.to_string()),
        Command::CheckConfig => Ok(()),
        Command::Other(cmd, args) => config.run_other(cmd, args).await,
    };
    // Off the runtime's threads: the exporter's last send blocks.
    let _ = tokio::task::spawn_blocking(crate::telemetry::flush).await;
    outcome.map_or_else(
        |e| exit_with(S::NAME, e),
        |()| std::process::ExitCode::SUCCESS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Env, KafkaConfig, RedisConfig};

    fn read(env: &Env) -> Result<(), crate::config::ConfigError> {
        RedisConfig::from_env(env)?;
        KafkaConfig::from_env(env)?;
        Ok(())
    }

    #[test]
    fn a_good_configuration_lists_every_variable_read_set_or_not() {
        let env = Env::from_pairs([("KAFKA_BROKERS", "k1:9092,k2:9092")]);
        let report = check_config("svc", &env, read, &["EXTRA_ONE"]);
        assert!(report.ok, "{report:?}");
        assert!(report.errors.is_empty());
        for name in [
            "REDIS_URL",
            "REDIS_CA_CERT",
            "KAFKA_BROKERS",
            "KAFKA_SECURITY_PROTOCOL",
            "KAFKA_SASL_PASSWORD",
            "KAFKA_CREATE_TOPICS",
            "KAFKA_TOPIC_REPLICATION",
            "EXTRA_ONE",
            "RUST_LOG",
        ] {
            assert!(
                report.settings.iter().any(|s| s == name),
                "{name}: {report:?}"
            );
        }
        assert_eq!(report.exit_code(), std::process::ExitCode::from(0));
    }

    #[test]
    fn every_bad_value_is_reported_and_secrets_are_redacted() {
        let env = Env::from_pairs([
            ("REDIS_URL", "http://u:hunter2@redis:6379"),
            ("KAFKA_BROKERS", "k1"),
            ("KAFKA_TOPIC_REPLICATION", "9"),
            ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
            ("KAFKA_SASL_PASSWORD", "x y"),
        ]);
        let report = check_config("svc", &env, read, &[]);
        assert!(!report.ok);
        let vars: Vec<&str> = report.errors.iter().map(|e| e.var.as_str()).collect();
        assert_eq!(
            vars,
            [
                "REDIS_URL",
                "KAFKA_BROKERS",
                "KAFKA_TOPIC_REPLICATION",
                "KAFKA_SASL_PASSWORD",
                "KAFKA_SASL_USERNAME",
            ],
            "{report:?}"
        );
        let json = serde_json::to_string(&report).unwrap();
        assert!(!json.contains("hunter2"), "{json}");
        assert!(!json.contains("x y"), "{json}");
        // Reading went on past the first error: later variables are listed too.
        assert!(report.settings.iter().any(|s| s == "KAFKA_CREATE_TOPICS"));
        assert_eq!(report.exit_code(), std::process::ExitCode::from(2));
    }
}
