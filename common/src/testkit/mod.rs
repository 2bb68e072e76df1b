//! Test kit: a fresh PostgreSQL database per test (dropped afterwards), unique Redis key and
//! Kafka topic prefixes (deleted afterwards), a TCP proxy that can cut a dependency off, a
//! private broker that can be paused or killed, a private Redis, a stub catalogue, and a
//! handle that runs a service on port 0 and stops it cleanly.

mod app;
mod broker;
mod db;
mod isolation;
mod openapi;
mod proxy;
mod redis;
mod stub;

use std::future::Future;
use std::time::Duration;

pub use app::{TestApp, assert_binary_rejects_config, assert_platform_endpoints};
pub use broker::{PrivateBroker, delete_kafka_prefix};
pub use db::TestDatabase;
pub use isolation::{INTERNAL_TEST_TOKEN, Isolation, TopicPrefix};
pub use openapi::{assert_openapi_complete, documented_statuses, required_schemes};
pub use proxy::TcpProxy;
pub use redis::{CommandMonitor, PrivateRedis};
pub use stub::StubCatalogue;

/// Admin connection used to create and drop test databases.
pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn kafka_brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A short unique id for names (`t3f9a…`).
pub fn unique_id() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..20])
}

/// The value of the first sample of a Prometheus text page whose name and labels start with
/// `series`, e.g. `settlements_total{outcome="confirmed"` (a registry's own `service` label
/// comes last); `None` if there is none.
pub fn figure(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(series))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// [`figure`] read from the `/metrics` page at `url`.
pub async fn metric(url: &str, series: &str) -> Option<f64> {
    let page = reqwest::get(url).await.ok()?.text().await.ok()?;
    figure(&page, series)
}

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
