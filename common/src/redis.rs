//! Redis access: one multiplexed `ConnectionManager` per process, a key prefix so tests and
//! tenants never collide, and Lua scripts loaded once (`EVALSHA`, falling back to `EVAL`).

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::RedisConfig;

/// A cheap-to-clone handle: the manager multiplexes every caller over one connection.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: Arc<str>,
}

impl RedisStore {
    /// Builds the handle without waiting for Redis: a service whose Redis is down still starts,
    /// reports not-ready, and recovers when Redis returns.
    /// `rediss://user:password@host:port` connects over TLS (rustls) as an ACL user, trusting
    /// the system's roots or, with `REDIS_CA_CERT`, that CA only.
    pub fn connect(cfg: &RedisConfig) -> redis::RedisResult<Self> {
        let client = match &cfg.ca_cert {
            Some(path) => {
                let root_cert = std::fs::read(path).map_err(|e| {
                    redis::RedisError::from((
                        redis::ErrorKind::InvalidClientConfig,
                        "REDIS_CA_CERT cannot be read",
                        format!("{}: {e}", path.display()),
                    ))
                })?;
                redis::Client::build_with_tls(
                    cfg.url.expose(),
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(root_cert),
                    },
                )?
            }
            None => redis::Client::open(cfg.url.expose())?,
        };
        let manager_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, manager_cfg)?;
        Ok(Self {
            conn,
            prefix: Arc::from(cfg.key_prefix.as_str()),
        })
    }

    /// The full key for a logical key such as `session:<hash>`.
    pub fn key(&self, logical: &str) -> String {
        format!("{}{}", self.prefix, logical)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A connection handle (a clone of the shared multiplexed connection).
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    pub async fn ping(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }
}

/// Whether `e` says Redis cannot be reached right now (refused, reset, timed out, still
/// loading its data) rather than that a command is wrong: worth waiting out, not giving up on.
pub fn is_unavailable(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.retry_method(),
            redis::RetryMethod::WaitAndRetry | redis::RetryMethod::Reconnect
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_is_unavailable_and_a_wrong_command_is_not() {
        let refused =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(is_unavailable(&refused));
        let reset =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(is_unavailable(&reset));
        let wrong =
            redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "not a string"));
        assert!(!is_unavailable(&wrong));
    }
}
