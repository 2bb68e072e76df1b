//! payment-api settings: listener, database, Redis, broker, sessions.

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
    pub log_format: LogFormat,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            http: HttpConfig::from_env(env, "PAYMENT_API_PORT", 8083)?,
            database: DatabaseConfig::from_env(env, "PAYMENT_DATABASE_URL", "ticketing_payment")?,
            redis: RedisConfig::from_env(env)?,
            kafka: KafkaConfig::from_env(env)?,
            session: SessionConfig::from_env(env)?,
            log_format: log_format(env)?,
        })
    }
}
