//! Shared setup: a test server built from common's plumbing, and broker reading helpers.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use common::config::{Env, HttpConfig, KafkaConfig, RedisConfig};
use common::http::{Plumbing, Readiness};
use common::kafka::KafkaClient;
use common::lifecycle::Service;
use common::metrics::Metrics;
use common::redis::RedisStore;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use sea_orm_migration::prelude::*;

pub fn http_config() -> HttpConfig {
    let env = Env::from_pairs([
        ("TEST_PORT", "0"),
        ("HTTP_WORKERS", "2"),
        ("SHUTDOWN_TIMEOUT_SECS", "10"),
    ]);
    HttpConfig::from_env(&env, "TEST_PORT", 0).unwrap()
}

pub fn redis_store(prefix: &str, url: &str) -> RedisStore {
    let env = Env::from_pairs([("REDIS_URL", url), ("REDIS_KEY_PREFIX", prefix)]);
    RedisStore::connect(&RedisConfig::from_env(&env).unwrap()).unwrap()
}

pub fn kafka_config(brokers: &str, prefix: &str) -> KafkaConfig {
    let debug = std::env::var("KAFKA_DEBUG").unwrap_or_default();
    let env = Env::from_pairs([
        ("KAFKA_DEBUG", debug.as_str()),
        ("KAFKA_BROKERS", brokers),
        ("KAFKA_TOPIC_PREFIX", prefix),
        ("KAFKA_TOPIC_PARTITIONS", "1"),
        ("CONSUMER_BACKOFF_MS", "20"),
        ("CONSUMER_MAX_ATTEMPTS", "3"),
    ]);
    KafkaConfig::from_env(&env).unwrap()
}

/// A service made only of common's plumbing plus the given routes.
pub fn service_with(
    readiness: Readiness,
    routes: impl Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
) -> Service {
    service_documented(
        readiness,
        utoipa::openapi::OpenApiBuilder::new().build(),
        routes,
    )
}

/// The same, publishing `openapi` as its document.
pub fn service_documented(
    readiness: Readiness,
    openapi: utoipa::openapi::OpenApi,
    routes: impl Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
) -> Service {
    let http = http_config();
    let listener = common::http::bind(&http).unwrap();
    let port = listener.local_addr().unwrap().port();
    let plumbing = Plumbing {
        http: http.clone(),
        metrics: Arc::new(Metrics::new("test")),
        readiness,
        openapi,
        clock: common::clock::Clock::system(),
        redis_per_worker: true,
    };
    let server = common::http::serve(listener, plumbing, routes).unwrap();
    Service::new("test", port, server, Duration::from_secs(10))
}

pub async fn ok() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

/// A consumed message: payload and headers.
pub type Consumed = (Vec<u8>, Vec<(String, String)>);

/// Reads every message of a (physical) topic from the beginning for `window`.
pub async fn read_topic(
    brokers: &str,
    topic: &str,
    window: Duration,
) -> Vec<(Vec<u8>, Vec<(String, String)>)> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Ok(m)) = tokio::time::timeout_at(deadline, consumer.recv()).await {
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push((m.payload().unwrap_or_default().to_vec(), headers));
    }
    // Closing a consumer can block on a rebalance: never on the test's async thread.
    std::thread::spawn(move || drop(consumer));
    out
}

/// The test schema: outbox + inbox, and a table the test consumer writes its effect to.
pub struct TestMigrator;

impl MigratorTrait for TestMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            common::migration::outbox_inbox(),
            common::migration::outbox_trace_context(),
            Box::new(common::migration::SqlMigration {
                name: "m20261124_000001_effects",
                up: "CREATE TABLE effects (event_id uuid NOT NULL, note text NOT NULL)",
            }),
        ]
    }
}

pub async fn kafka_client(brokers: &str, prefix: &str, topics: &[&str]) -> KafkaClient {
    let client = KafkaClient::new(&kafka_config(brokers, prefix)).unwrap();
    client.ensure_topics(topics).await.unwrap();
    client
}
