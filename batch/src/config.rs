//! batch settings: its health/metrics listener, Redis and the broker.

use common::config::{
    ConfigError, Env, HttpConfig, KafkaConfig, LogFormat, RedisConfig, log_format,
};

#[derive(Clone, Debug)]
pub struct Config {
    pub http: HttpConfig,
    pub redis: RedisConfig,
    pub kafka: KafkaConfig,
    pub log_format: LogFormat,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            http: HttpConfig::from_env(env, "BATCH_PORT", 8084)?,
            redis: RedisConfig::from_env(env)?,
            kafka: KafkaConfig::from_env(env)?,
            log_format: log_format(env)?,
        })
    }
}
