//! Builds batch: the leader lease, the scheduled jobs, and health/metrics on its own port.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::auth::QueueKeys;
use common::config::{ConfigError, DatabaseConfig, Env, LogFormat};
use common::lifecycle::Service;
use common::metrics::Metrics;
use common::startup::{ServiceMain, ServiceParts, StartupError, build_service, connect_messaging};
use users_api::domain::queue::WaitingRoom;
use utoipa::OpenApi;

use crate::archive::{self, Budget};
use crate::backup::{self, Plan};
use crate::config::Config;
use crate::jobs::{Job, JobContext, JobMetrics, schedule};
use crate::leader::Leadership;

pub const SERVICE: &str = "batch";

/// How often the backup job asks whether a backup is due (`Plan::due`): a new leader backs
/// up within this of taking over when the last backup is an interval old.
const BACKUP_CHECK: Duration = Duration::from_secs(60);

const USAGE: &str = "usage: batch [serve | migrate | check-config | backup [--spread-secs <n>] | restore <backup-folder> --suffix <suffix> | archive]";

#[derive(OpenApi)]
#[openapi(info(
    title = "batch",
    description = "Queue admission, expiry sweeps, reconciliation, archival (health and metrics only)"
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
        let users_db = common::db::connect(&config.users_db).await?;
        let concert_db = common::db::connect(&config.concert_db).await?;
        let payment_db = common::db::connect(&config.payment_db).await?;
        let metrics = Arc::new(Metrics::new(SERVICE));
        let job_metrics = JobMetrics::register(metrics.registry());
        let backup_plan = Plan::from_config(&config);
        if backup_plan.is_none() {
            tracing::info!("local backups are off: BACKUP_DIR is not set");
        }
        let ctx = Arc::new(JobContext {
            // The rooms' settings are persisted in users-api's database: a room Redis lost is
            // restored from there by its tick, and rooms with a lottery to draw are ticked
            // even if Redis forgot them.
            room: WaitingRoom::new(
                QueueKeys::new(redis.clone()),
                config.queue.clone(),
                config.clock.clone(),
            )
            .with_store(users_db.clone()),
            users_db: users_db.clone(),
            concert_db: concert_db.clone(),
            inventory: concert_api::Inventory::new(redis.clone()),
            payment_db: payment_db.clone(),
            concerts: payment_api::concerts::ConcertClient::new(
                &config.payment.concert_api_url,
                config.payment.concert_api_timeout,
                &config.payment.internal_token,
            ),
            payment: config.payment.clone(),
            grace: config.reservation.grace,
            // The reconciliation pass that settles a payment over HTTP comes at most one
            // interval after PAYMENT_SETTLE_DIRECT_AFTER_SECS; a second interval is the margin.
            settle_bound: config.payment.settle_direct_after + 2 * config.jobs.reconcile,
            wallet_sample: config.jobs.wallet_sample,
            metrics: job_metrics.clone(),
            kafka: kafka.clone(),
            clock: config.clock.clone(),
            backup: backup_plan.clone(),
            archive_after: config.archive.after,
            seat_watch: Default::default(),
            sale_watch: Default::default(),
            money_watch: Default::default(),
        });
        let parts = ServiceParts {
            name: SERVICE,
            http: config.http.clone(),
            db: None,
            other_databases: vec![
                ("users database", users_db),
                ("concert database", concert_db),
                ("payment database", payment_db),
            ],
            redis: redis.clone(),
            kafka,
            metrics,
            openapi: ApiDoc::openapi(),
            relay: false,
            clock: config.clock.clone(),
            redis_per_worker: false,
        };
        let mut service = build_service(parts, |_| {})?;

        let instance = format!(
            "{}-{}-{}",
            hostname(),
            std::process::id(),
            common::auth::random_token()
        );
        let (leadership, lease_task) =
            Leadership::run(redis, instance, config.lease, service.cancel_token());
        service.spawn("leader lease", async move {
            let _ = lease_task.await;
        });
        let (watch, cancel) = (leadership.clone(), service.cancel_token());
        service.spawn("leader gauge", async move {
            loop {
                job_metrics.leader.set(i64::from(watch.is_leader()));
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                }
            }
        });
        let backup = backup_plan.map(|_| (Job::Backup, BACKUP_CHECK));
        for (job, every) in [
            (Job::Admission, config.queue.admit_interval),
            (Job::ExpireHolds, config.jobs.expire_holds),
            (Job::Reconcile, config.jobs.reconcile),
            (Job::OutboxHealth, config.jobs.outbox_health),
            (Job::Cleanup, config.jobs.cleanup),
            (Job::Invariants, config.jobs.invariants),
            (Job::SaleFigures, config.jobs.sale_figures),
            (Job::ConsumerGroups, config.jobs.consumer_groups),
            (Job::Archive, config.archive.every),
        ]
        .into_iter()
        .chain(backup)
        {
            let task = schedule(
                job,
                every,
                ctx.clone(),
                leadership.clone(),
                service.cancel_token(),
            );
            service.spawn(job.name(), task);
        }
        Ok(service)
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "batch".into())
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
    fn database(&self) -> Option<&DatabaseConfig> {
        None
    }
    async fn build(self) -> Result<Service, StartupError> {
        Application::build(self).await
    }
    /// `batch backup`: one backup now into `BACKUP_DIR` (with retention), its manifest on
    /// stdout; `--spread-secs <n>` waits n seconds between two databases (a restore drill's
    /// way to rehearse snapshots far apart). `batch restore <backup-folder> --suffix
    /// <suffix>`: every database of that backup into a fresh `<database><suffix>`, one JSON
    /// line each; fails unless every one restored with the manifest's row counts.
    /// `batch archive`: every date due for archival now ([`archive_backlog`]).
    async fn run_other(self, cmd: String, args: Vec<String>) -> Result<(), String> {
        match (cmd.as_str(), args.as_slice()) {
            ("backup", []) => backup_now(&self, Duration::ZERO).await,
            ("backup", [flag, secs]) if flag == "--spread-secs" => {
                let secs = secs.parse::<u16>().map_err(|_| {
                    format!("--spread-secs `{secs}`: a whole number of seconds, 0..=65535")
                })?;
                backup_now(&self, Duration::from_secs(secs.into())).await
            }
            ("restore", [folder, flag, suffix]) if flag == "--suffix" => {
                restore_now(&self, Path::new(folder), suffix).await
            }
            ("archive", []) => archive_backlog(&self).await,
            _ => Err(format!(
                "unknown command or arguments `{}`; {USAGE}",
                std::iter::once(cmd)
                    .chain(args)
                    .collect::<Vec<_>>()
                    .join(" ")
            )),
        }
    }
}

async fn backup_now(config: &Config, spread: Duration) -> Result<(), String> {
    let mut plan = Plan::from_config(config).ok_or("BACKUP_DIR is not set: where should it go?")?;
    plan.spread = spread;
    let manifest = plan.run(config.clock.now()).await?;
    let json = serde_json::to_string_pretty(&manifest).map_err(|e| e.to_string())?;
    println!("{json}");
    Ok(())
}

async fn restore_now(config: &Config, folder: &Path, suffix: &str) -> Result<(), String> {
    backup::restore(
        folder,
        suffix,
        &backup::targets(config),
        |r| match serde_json::to_string(r) {
            Ok(line) => println!("{line}"),
            Err(e) => tracing::warn!(error = %e, "could not print a restored database"),
        },
    )
    .await
    .map(|_| ())
}

/// `batch archive`: works off the archival backlog (the job archives 20 dates a minute; a
/// platform switching archival on over years of shows has hundreds of thousands due). Passes
/// of [`Budget::BACKLOG`] until one archives nothing, one JSON line each on stdout, then (if it
/// archived anything) a `VACUUM (ANALYZE)` of the tables it moved rows between, and a last
/// line saying so. A date that fails is left, as the job leaves it, and the command exits
/// non-zero at the end. Safe beside
/// a running leader: both take the same locks and a date is archived once.
async fn archive_backlog(config: &Config) -> Result<(), String> {
    let connect = |db: &DatabaseConfig| {
        let db = db.clone();
        async move {
            common::db::connect(&db)
                .await
                .map_err(|e| format!("connect to {}: {e}", db.url))
        }
    };
    let (concert_db, payment_db) = (
        connect(&config.concert_db).await?,
        connect(&config.payment_db).await?,
    );
    let started = std::time::Instant::now();
    let (mut archived, mut failed) = (0, None);
    loop {
        let pass = archive::run_pass(
            &concert_db,
            &payment_db,
            config.clock.now(),
            config.archive.after,
            Budget::BACKLOG,
        )
        .await;
        archived += pass.archived;
        let line = serde_json::json!({
            "archived": pass.archived,
            "rows": pass.rows.by_table().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
            "waiting_for_hold": pass.waiting_for_hold,
            "waiting_for_payment": pass.waiting_for_payment,
            "ledger_months_created": pass.ledger.as_ref().map(|l| l.created.len()),
            "ledger_rows_closed": pass.ledger.as_ref().and_then(|l| l.closed.as_ref()).map(|c| c.rows),
            "failed": pass.failed,
            "archived_so_far": archived,
            "seconds": started.elapsed().as_secs_f64(),
        });
        println!("{line}");
        if let Some(e) = pass.failed {
            failed.get_or_insert(e);
        }
        if pass.archived == 0 {
            break;
        }
    }
    if archived > 0 {
        // The hot tables now hold more dead rows than live ones: cleared now, rather than by
        // autovacuum in the middle of the next sale.
        let vacuum = std::time::Instant::now();
        let mut tables = Vec::new();
        match concert_api::vacuum_after_archival(&concert_db).await {
            Ok(t) => tables.extend(t.iter().map(|t| format!("concert:{t}"))),
            Err(e) => {
                failed.get_or_insert(format!("concert-api: vacuum: {e}"));
            }
        }
        match payment_api::vacuum_after_archival(&payment_db).await {
            Ok(t) => tables.extend(t.iter().map(|t| format!("payment:{t}"))),
            Err(e) => {
                failed.get_or_insert(format!("payment-api: vacuum: {e}"));
            }
        }
        let line = serde_json::json!({
            "vacuumed": tables,
            "vacuum_seconds": vacuum.elapsed().as_secs_f64(),
            "archived_so_far": archived,
            "seconds": started.elapsed().as_secs_f64(),
        });
        println!("{line}");
    }
    concert_db.close().await.ok();
    payment_db.close().await.ok();
    failed.map_or(Ok(()), Err)
}
