//! batch settings: its health/metrics listener, each service's database, Redis, the broker,
//! the rules the jobs apply, the job intervals, local backups, archival, the leader lease, and
//! the clock the jobs read.

use std::path::PathBuf;
use std::time::Duration;

use chrono::TimeDelta;

use common::clock::Clock;
use common::config::{
    ConfigError, DatabaseConfig, Env, HttpConfig, KafkaConfig, LogFormat, RedisConfig, log_format,
};

#[derive(Clone, Debug)]
pub struct Config {
    pub http: HttpConfig,
    pub users_db: DatabaseConfig,
    pub concert_db: DatabaseConfig,
    pub payment_db: DatabaseConfig,
    pub redis: RedisConfig,
    pub kafka: KafkaConfig,
    pub queue: users_api::config::QueueConfig,
    pub reservation: concert_api::config::ReservationConfig,
    pub payment: payment_api::config::PaymentConfig,
    pub jobs: JobIntervals,
    pub backup: BackupSettings,
    pub archive: ArchiveSettings,
    pub lease: Duration,
    pub log_format: LogFormat,
    /// The system clock; tests put a manual one here. Not a setting.
    pub clock: Clock,
}

/// How often each job runs (admission uses `QUEUE_ADMIT_INTERVAL_MS`).
#[derive(Clone, Debug)]
pub struct JobIntervals {
    pub expire_holds: Duration,
    pub reconcile: Duration,
    pub outbox_health: Duration,
    pub cleanup: Duration,
    pub invariants: Duration,
    pub sale_figures: Duration,
    pub consumer_groups: Duration,
    /// Wallets the invariant watchdog compares with their ledger per run.
    pub wallet_sample: u32,
}

/// Local backups (`crate::backup`): off while `BACKUP_DIR` is unset or empty.
#[derive(Clone, Debug)]
pub struct BackupSettings {
    pub dir: Option<PathBuf>,
    /// Complete backups kept; older ones are deleted after each successful backup.
    pub keep: usize,
    pub every: Duration,
}

impl BackupSettings {
    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let dir = env.string("BACKUP_DIR", "");
        Ok(Self {
            dir: (!dir.is_empty()).then(|| PathBuf::from(dir)),
            keep: env.parse("BACKUP_KEEP", 7, 1..=1000)?,
            every: env.millis("BATCH_BACKUP_INTERVAL_MS", 21_600_000, 60_000..=604_800_000)?,
        })
    }
}

/// Archival of finished shows (`crate::archive`).
#[derive(Clone, Debug)]
pub struct ArchiveSettings {
    /// A schedule whose show started this long ago is archived (`ARCHIVE_AFTER_DAYS`).
    pub after: TimeDelta,
    /// How often the archive job runs (and keeps the ledger's monthly partitions ahead).
    pub every: Duration,
}

impl ArchiveSettings {
    /// `ARCHIVE_AFTER_DAYS`: 1..=3650, 30 when unset or empty. Not 0: a show's last holds and
    /// payments settle in the minutes after it starts, and the seat watchdog checks the shows
    /// of the last day; nor is there an "off" value — the job also keeps the ledger's
    /// partitions, and 3650 (ten years) keeps every show in the hot tables.
    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let days: i64 = env.parse("ARCHIVE_AFTER_DAYS", 30, 1..=3650)?;
        Ok(Self {
            after: TimeDelta::days(days),
            every: env.millis("BATCH_ARCHIVE_INTERVAL_MS", 60_000, 10..=86_400_000)?,
        })
    }
}

/// batch's payment pool needs two connections: the ledger's upkeep holds its lock on one while
/// it creates months on another (`payment_api::keep_ledger_months`); with one it would wait for
/// itself.
fn two_or_more(env: &Env, db: DatabaseConfig) -> Result<DatabaseConfig, ConfigError> {
    if db.pool_size >= 2 {
        return Ok(db);
    }
    let err = ConfigError {
        var: "DATABASE_POOL_SIZE".into(),
        value: db.pool_size.to_string(),
        reason: "batch needs 2 or more connections per database".into(),
    };
    env.reject(err, db)
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            http: HttpConfig::from_env(env, "BATCH_PORT", 8084)?,
            users_db: DatabaseConfig::from_env(env, "USERS_DATABASE_URL", "ticketing_users")?,
            concert_db: DatabaseConfig::from_env(env, "CONCERT_DATABASE_URL", "ticketing_concert")?,
            payment_db: two_or_more(
                env,
                DatabaseConfig::from_env(env, "PAYMENT_DATABASE_URL", "ticketing_payment")?,
            )?,
            redis: RedisConfig::from_env(env)?,
            kafka: KafkaConfig::from_env(env)?,
            queue: users_api::config::QueueConfig::from_env(env)?,
            reservation: concert_api::config::ReservationConfig::from_env(env)?,
            payment: payment_api::config::PaymentConfig::from_env(env)?,
            jobs: JobIntervals {
                expire_holds: env.millis("BATCH_EXPIRE_INTERVAL_MS", 1000, 10..=3_600_000)?,
                reconcile: env.millis("BATCH_RECONCILE_INTERVAL_MS", 5000, 10..=3_600_000)?,
                outbox_health: env.millis(
                    "BATCH_OUTBOX_HEALTH_INTERVAL_MS",
                    5000,
                    10..=3_600_000,
                )?,
                cleanup: env.millis("BATCH_CLEANUP_INTERVAL_MS", 60_000, 10..=86_400_000)?,
                invariants: env.millis("BATCH_INVARIANTS_INTERVAL_MS", 15_000, 10..=3_600_000)?,
                sale_figures: env.millis("BATCH_SALE_FIGURES_INTERVAL_MS", 5000, 10..=3_600_000)?,
                consumer_groups: env.millis(
                    "BATCH_CONSUMER_GROUPS_INTERVAL_MS",
                    10_000,
                    10..=3_600_000,
                )?,
                wallet_sample: env.parse("BATCH_INVARIANTS_WALLET_SAMPLE", 500, 1..=1_000_000)?,
            },
            backup: BackupSettings::from_env(env)?,
            archive: ArchiveSettings::from_env(env)?,
            lease: env.millis("BATCH_LEASE_MS", 5000, 300..=600_000)?,
            log_format: log_format(env)?,
            clock: Clock::system(),
        })
    }
}
