//! Kafka: the event envelope (DESIGN §6), an idempotent producer, explicit topic creation
//! (the broker does not auto-create), and a consumer loop with at-least-once delivery:
//! the offset is committed only after the handler (and its database transaction) succeeded;
//! a failing message is retried with backoff and, after `CONSUMER_MAX_ATTEMPTS`, parked in
//! `<topic>.dlq` with the error.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::KafkaConfig;

/// The one envelope every event travels in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope<T> {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub version: u32,
    pub occurred_at: DateTime<Utc>,
    pub data: T,
}

impl<T> Envelope<T> {
    pub fn new(kind: &str, data: T, occurred_at: DateTime<Utc>) -> Self {
        Self {
            id: Uuid::new_v4(),
            kind: kind.to_owned(),
            version: 1,
            occurred_at,
            data,
        }
    }
}

/// The producer shared by a service's outbox relay and its dead-letter writes.
#[derive(Clone)]
pub struct KafkaClient {
    cfg: KafkaConfig,
    producer: FutureProducer,
}

impl KafkaClient {
    pub fn new(cfg: &KafkaConfig) -> Result<Self, KafkaError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", &cfg.brokers)
            // Idempotence: a retried send is written once, in order, per partition.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            // A broker that stops answering fails the send in bounded time, so the outbox
            // relay can roll back and try again instead of hanging.
            .set("message.timeout.ms", "10000")
            .set("socket.timeout.ms", "10000")
            .create()?;
        Ok(Self {
            cfg: cfg.clone(),
            producer,
        })
    }

    pub fn config(&self) -> &KafkaConfig {
        &self.cfg
    }

    /// The physical topic name for a logical one (adds the configured prefix).
    pub fn topic(&self, name: &str) -> String {
        self.cfg.topic(name)
    }

    /// Publishes one message and waits for the broker's acknowledgement.
    pub async fn send(
        &self,
        physical_topic: &str,
        key: &str,
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<(), KafkaError> {
        let record = FutureRecord::to(physical_topic)
            .key(key)
            .payload(payload)
            .headers(headers);
        self.producer
            .send(record, Duration::from_secs(5))
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }

    /// Creates the given logical topics and their `.dlq` twins; existing ones are fine.
    pub async fn ensure_topics(&self, names: &[&str]) -> Result<(), KafkaError> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.cfg.brokers)
            .create()?;
        let physical: Vec<String> = names
            .iter()
            .flat_map(|n| [self.topic(n), self.topic(&format!("{n}.dlq"))])
            .collect();
        let topics: Vec<NewTopic<'_>> = physical
            .iter()
            .map(|t| NewTopic::new(t, self.cfg.topic_partitions, TopicReplication::Fixed(1)))
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for result in admin.create_topics(&topics, &opts).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                        tracing::error!(%topic, ?code, "could not create topic");
                    });
                }
            }
        }
        Ok(())
    }

    /// Broker reachability for readiness: a metadata round trip.
    pub async fn ping(&self, timeout: Duration) -> Result<(), String> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, timeout)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Waits for every queued message to be delivered (shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "producer flush incomplete at shutdown");
        }
    }
}

/// One consumed message, detached from the consumer's buffers.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Logical topic (without the configured prefix).
    pub topic: String,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub partition: i32,
    pub offset: i64,
    pub traceparent: Option<String>,
}

impl Incoming {
    /// Decodes the envelope; a message that does not decode can never succeed, so it is poison.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<Envelope<T>, HandlerError> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| HandlerError::Poison(format!("undecodable {} event: {e}", self.topic)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Might succeed later (database down, deadlock): retried with backoff.
    #[error("retryable: {0}")]
    Retryable(String),
    /// Can never succeed (malformed event): straight to the DLQ.
    #[error("poison: {0}")]
    Poison(String),
}

impl From<sea_orm::DbErr> for HandlerError {
    fn from(e: sea_orm::DbErr) -> Self {
        HandlerError::Retryable(e.to_string())
    }
}

/// What a service does with each consumed event. The handler records the event in its inbox
/// inside the same transaction as its effect, so a redelivery changes nothing.
pub trait EventHandler: Send + Sync + 'static {
    fn handle(&self, msg: &Incoming) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Counters a test or the metrics endpoint can read.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    pub handled: std::sync::atomic::AtomicU64,
    pub failed_attempts: std::sync::atomic::AtomicU64,
    pub dead_lettered: std::sync::atomic::AtomicU64,
}

/// Consumes `topics` (logical names) as `group` until `cancel` fires.
///
/// Per message: handle; on a retryable error retry up to `consumer_max_attempts` times with
/// exponential backoff; then (or at once for poison) publish to `<topic>.dlq`. Only after the
/// handler succeeded, or the message is safely in the DLQ, is its offset committed — so a
/// crash at any point redelivers rather than loses. Messages of one partition are handled in
/// order, one at a time.
pub async fn run_consumer<H: EventHandler>(
    client: KafkaClient,
    group: &str,
    topics: &[&str],
    handler: H,
    stats: std::sync::Arc<ConsumerStats>,
    cancel: CancellationToken,
) -> Result<(), KafkaError> {
    use std::sync::atomic::Ordering::Relaxed;
    let cfg = client.config().clone();
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("group.id", client.topic(group))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("fetch.wait.max.ms", "50")
        .create()?;
    let physical: Vec<String> = topics.iter().map(|t| client.topic(t)).collect();
    let refs: Vec<&str> = physical.iter().map(String::as_str).collect();
    consumer.subscribe(&refs)?;
    tracing::info!(group, ?topics, "consumer started");

    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => break,
            m = consumer.recv() => m,
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "consumer receive error");
                tokio::time::sleep(cfg.consumer_backoff).await;
                continue;
            }
        };
        let incoming = detach(&msg, &cfg.topic_prefix);
        let span = tracing::info_span!("event", topic = %incoming.topic, partition = incoming.partition, offset = incoming.offset);
        let _entered = span.enter();
        drop(_entered);

        let mut attempt = 1;
        let outcome = loop {
            match tracing::Instrument::instrument(handler.handle(&incoming), span.clone()).await {
                Ok(()) => break Ok(()),
                Err(HandlerError::Poison(e)) => break Err(e),
                Err(HandlerError::Retryable(e)) => {
                    stats.failed_attempts.fetch_add(1, Relaxed);
                    if attempt >= cfg.consumer_max_attempts {
                        break Err(e);
                    }
                    tracing::warn!(parent: &span, attempt, error = %e, "handler failed; retrying");
                    let backoff = cfg.consumer_backoff * 2u32.saturating_pow(attempt - 1).min(64);
                    tokio::select! {
                        _ = cancel.cancelled() => {
                            // Not committed: the next consumer of this partition gets it again.
                            tracing::info!(parent: &span, "shutdown during retry; offset left uncommitted");
                            return finish(&consumer);
                        }
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    attempt += 1;
                }
            }
        };
        match outcome {
            Ok(()) => {
                stats.handled.fetch_add(1, Relaxed);
            }
            Err(error) => {
                // Park it; if even the DLQ cannot take it, do not commit and try again later.
                if let Err(e) = dead_letter(&client, &msg, &incoming, &error, attempt).await {
                    tracing::error!(parent: &span, error = %e, "could not dead-letter; will redeliver");
                    tokio::time::sleep(cfg.consumer_backoff).await;
                    consumer.seek(
                        msg.topic(),
                        msg.partition(),
                        rdkafka::Offset::Offset(msg.offset()),
                        Duration::from_secs(5),
                    )?;
                    continue;
                }
                stats.dead_lettered.fetch_add(1, Relaxed);
                tracing::error!(parent: &span, attempts = attempt, %error, "event dead-lettered");
            }
        }
        if let Err(e) = consumer.commit_message(&msg, CommitMode::Async) {
            tracing::warn!(parent: &span, error = %e, "offset commit failed; the event may be redelivered");
        }
    }
    finish(&consumer)
}

fn finish(consumer: &StreamConsumer) -> Result<(), KafkaError> {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => tracing::warn!(error = %e, "final offset commit failed"),
    }
    consumer.unsubscribe();
    tracing::info!("consumer stopped");
    Ok(())
}

fn detach(msg: &BorrowedMessage<'_>, prefix: &str) -> Incoming {
    let traceparent = msg.headers().and_then(|hs| {
        hs.iter()
            .find(|h| h.key == "traceparent")
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    });
    Incoming {
        topic: msg
            .topic()
            .strip_prefix(prefix)
            .unwrap_or(msg.topic())
            .to_owned(),
        key: msg.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        payload: msg.payload().unwrap_or_default().to_vec(),
        partition: msg.partition(),
        offset: msg.offset(),
        traceparent,
    }
}

async fn dead_letter(
    client: &KafkaClient,
    msg: &BorrowedMessage<'_>,
    incoming: &Incoming,
    error: &str,
    attempts: u32,
) -> Result<(), KafkaError> {
    let attempts = attempts.to_string();
    let partition = incoming.partition.to_string();
    let offset = incoming.offset.to_string();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "dlq.error",
            value: Some(error),
        })
        .insert(Header {
            key: "dlq.source.topic",
            value: Some(msg.topic()),
        })
        .insert(Header {
            key: "dlq.source.partition",
            value: Some(&partition),
        })
        .insert(Header {
            key: "dlq.source.offset",
            value: Some(&offset),
        })
        .insert(Header {
            key: "dlq.attempts",
            value: Some(&attempts),
        });
    let dlq = format!("{}.dlq", msg.topic());
    client
        .send(
            &dlq,
            incoming.key.as_deref().unwrap_or(""),
            &incoming.payload,
            headers,
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_the_documented_shape() {
        let at = DateTime::parse_from_rfc3339("2026-11-24T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let e = Envelope::new(
            "payment.completed",
            serde_json::json!({"payment_id": 7}),
            at,
        );
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "payment.completed");
        assert_eq!(v["version"], 1);
        assert_eq!(v["occurred_at"], "2026-11-24T10:00:00Z");
        assert_eq!(v["data"]["payment_id"], 7);
        assert!(Uuid::parse_str(v["id"].as_str().unwrap()).is_ok());
    }

    #[test]
    fn undecodable_payload_is_poison() {
        let m = Incoming {
            topic: "payment.completed".into(),
            key: None,
            payload: b"{not json".to_vec(),
            partition: 0,
            offset: 0,
            traceparent: None,
        };
        assert!(matches!(
            m.decode::<serde_json::Value>(),
            Err(HandlerError::Poison(_))
        ));
    }
}
