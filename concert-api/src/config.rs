//! concert-api settings: listener, database, Redis, broker, sessions, hold rules, and the
//! clock it runs by.

use std::time::Duration;

use common::clock::Clock;
use common::config::{
    ConfigError, DatabaseConfig, Env, HttpConfig, KafkaConfig, LogFormat, RedisConfig,
    SessionConfig, log_format,
};

#[derive(Clone, Debug)]
pub struct Config {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub kafka: KafkaConfig,
    pub session: SessionConfig,
    pub reservation: ReservationConfig,
    /// How often the inventory hashes are rewritten from the database (and once at start-up).
    pub inventory_resync: Duration,
    /// How long a sale view's reservation figures serve every poll of the concert.
    pub sale_view_cache: Duration,
    pub log_format: LogFormat,
    /// Not a setting: the system clock, or a test's manual one.
    pub clock: Clock,
}

/// Hold rules (DESIGN §3).
#[derive(Clone, Debug)]
pub struct ReservationConfig {
    pub hold: Duration,
    /// After `held_until`, how long an in-flight payment still has before the seats are reusable.
    pub grace: Duration,
    pub max_seats: usize,
    /// How long public catalogue lists stay cached in Redis.
    pub catalogue_cache: Duration,
}

impl ReservationConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            hold: env.secs("RESERVATION_HOLD_SECS", 300, 1..=86_400)?,
            grace: env.secs("RESERVATION_GRACE_SECS", 30, 0..=3600)?,
            max_seats: env.parse("RESERVATION_MAX_SEATS", 4, 1..=50)?,
            catalogue_cache: env.secs("CATALOGUE_CACHE_SECS", 2, 0..=300)?,
        })
    }
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            http: HttpConfig::from_env(env, "CONCERT_API_PORT", 8082)?,
            database: DatabaseConfig::from_env(env, "CONCERT_DATABASE_URL", "ticketing_concert")?,
            redis: RedisConfig::from_env(env)?,
            kafka: KafkaConfig::from_env(env)?,
            session: SessionConfig::from_env(env)?,
            reservation: ReservationConfig::from_env(env)?,
            inventory_resync: env.millis("INVENTORY_RESYNC_MS", 5000, 100..=600_000)?,
            sale_view_cache: env.millis("SALE_VIEW_CACHE_MS", 1000, 0..=60_000)?,
            log_format: log_format(env)?,
            clock: Clock::system(),
        })
    }
}
