//! The consumer loop: at-least-once delivery with per-key order, retries with backoff, the
//! dead-letter topic for what cannot succeed, offsets committed only up to the lowest message
//! still in flight, and the group's assignment and lag watched for the metrics.

use std::future::Future;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::statistics::Statistics;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::KafkaClient;
use super::dead_letter::dead_letter;
use super::offsets::{Done, OffsetBook, worker_for};
use crate::events::Envelope;

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
    /// A dependency the effect lives in cannot be reached (Redis down): retried with backoff
    /// (at most [`UNAVAILABLE_MAX_BACKOFF`] apart) for as long as it is down, never
    /// dead-lettered — the effect is still wanted when it returns, and nothing else would do
    /// it. Shutdown still leaves it uncommitted, to come again.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// The longest pause between two attempts of a handler whose dependency is unavailable
/// (unless `CONSUMER_BACKOFF_MS` is longer): how soon after the dependency returns the
/// consumer notices.
pub const UNAVAILABLE_MAX_BACKOFF: Duration = Duration::from_secs(2);

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

/// Counters and gauges a test or the metrics endpoint can read.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    pub handled: std::sync::atomic::AtomicU64,
    pub failed_attempts: std::sync::atomic::AtomicU64,
    pub dead_lettered: std::sync::atomic::AtomicU64,
    /// Partitions currently assigned to this member (after each rebalance).
    pub assigned_partitions: std::sync::atomic::AtomicI64,
    /// Messages behind the end of the assigned partitions (librdkafka's statistics, 5 s).
    pub lag: std::sync::atomic::AtomicI64,
}

/// The consumer's context: follows the group's rebalances (who holds which partitions, in
/// the log and in [`ConsumerStats::assigned_partitions`]) and the lag statistics.
pub(super) struct GroupWatch {
    group: String,
    stats: std::sync::Arc<ConsumerStats>,
}

impl ClientContext for GroupWatch {
    fn stats(&self, s: Statistics) {
        let lag: i64 = s
            .topics
            .values()
            .flat_map(|t| t.partitions.values())
            .filter(|p| p.partition >= 0 && p.consumer_lag >= 0 && p.fetch_state == "active")
            .map(|p| p.consumer_lag)
            .sum();
        self.stats
            .lag
            .store(lag, std::sync::atomic::Ordering::Relaxed);
    }
}

impl ConsumerContext for GroupWatch {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let assigned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        self.stats
            .assigned_partitions
            .store(assigned as i64, std::sync::atomic::Ordering::Relaxed);
        let list = |tpl: &rdkafka::TopicPartitionList| {
            tpl.elements()
                .iter()
                .map(|e| format!("{}[{}]", e.topic(), e.partition()))
                .collect::<Vec<_>>()
                .join(",")
        };
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(group = %self.group, partitions = %list(tpl), assigned, "partitions assigned")
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(group = %self.group, partitions = %list(tpl), assigned, "partitions revoked")
            }
            Rebalance::Error(e) => {
                tracing::warn!(group = %self.group, error = %e, "rebalance failed")
            }
        }
    }
}

pub(super) type GroupConsumer = StreamConsumer<GroupWatch>;

/// Consumes `topics` (logical names) as `group` until `cancel` fires.
///
/// Messages are handled by `consumer_concurrency` workers; a message goes to the worker its
/// key hashes to, so one key's events (one reservation's) are handled in order while
/// different keys proceed in parallel. Per message: handle; on a retryable error retry up to
/// `consumer_max_attempts` times with exponential backoff; then (or at once for poison)
/// publish to `<topic>.dlq`. An unavailable dependency is waited out instead (retried, never
/// dead-lettered). A partition's offset is committed only up to its lowest message
/// still in flight — so a crash at any point redelivers rather than loses, and the inbox
/// makes a redelivery harmless.
pub async fn run_consumer<H: EventHandler>(
    client: KafkaClient,
    group: &str,
    topics: &[&str],
    handler: H,
    stats: std::sync::Arc<ConsumerStats>,
    cancel: CancellationToken,
) -> Result<(), KafkaError> {
    let cfg = client.config().clone();
    let watch = GroupWatch {
        group: group.to_owned(),
        stats: stats.clone(),
    };
    let consumer = CloseOffThread::new(
        super::client_config(&cfg)
            .set("group.id", client.topic(group))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // A member that died without leaving (SIGKILL, OOM, a lost node) is evicted after
            // the session timeout and its partitions move to a live member; a graceful stop
            // leaves the group at once.
            .set("session.timeout.ms", cfg.session_timeout_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (cfg.session_timeout_ms / 5).max(100).to_string(),
            )
            .set("fetch.wait.max.ms", "20")
            .set("statistics.interval.ms", "5000")
            .create_with_context::<_, GroupConsumer>(watch)?,
    );
    let physical: Vec<String> = topics.iter().map(|t| client.topic(t)).collect();
    let refs: Vec<&str> = physical.iter().map(String::as_str).collect();
    consumer.subscribe(&refs)?;
    tracing::info!(
        group,
        ?topics,
        workers = cfg.consumer_concurrency,
        "consumer started"
    );

    let handler = std::sync::Arc::new(handler);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Done>();
    let mut workers = Vec::with_capacity(cfg.consumer_concurrency);
    let mut worker_tasks = Vec::with_capacity(cfg.consumer_concurrency);
    for _ in 0..cfg.consumer_concurrency {
        let (tx, rx) = tokio::sync::mpsc::channel::<Incoming>(64);
        workers.push(tx);
        worker_tasks.push(tokio::spawn(work(
            rx,
            handler.clone(),
            client.clone(),
            stats.clone(),
            cancel.clone(),
            done_tx.clone(),
        )));
    }
    drop(done_tx);

    let mut offsets = OffsetBook::default();
    let mut commit_tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(done) = done_rx.recv() => offsets.complete(&done),
            _ = commit_tick.tick() => offsets.commit(&consumer, CommitMode::Async),
            m = consumer.recv() => match m {
                Ok(msg) => {
                    let incoming = detach(&msg, &cfg.topic_prefix);
                    offsets.start(msg.topic(), incoming.partition, incoming.offset);
                    let worker = &workers[worker_for(incoming.key.as_deref(), workers.len())];
                    // A full worker queue pushes back on reading, not on memory.
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        sent = worker.send(incoming) => if sent.is_err() { break },
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "consumer receive error");
                    tokio::time::sleep(cfg.consumer_backoff).await;
                }
            },
        }
    }
    // Stop feeding the workers; let them finish (or abandon, uncommitted) what they hold,
    // then commit exactly what completed.
    drop(workers);
    for t in worker_tasks {
        let _ = t.await;
    }
    while let Ok(done) = done_rx.try_recv() {
        offsets.complete(&done);
    }
    offsets.commit(&consumer, CommitMode::Sync);
    consumer.unsubscribe();
    tracing::info!("consumer stopped");
    Ok(())
}

/// Dropping a librdkafka consumer closes it, and closing can block — it waits on a group
/// rebalance (seen: forever, inside `rd_kafka_assign`). That must never happen on an async
/// worker thread (it would stall shutdown, or a runtime being torn down), so the last owner
/// hands the consumer to a plain thread to close. Offsets are committed explicitly before.
struct CloseOffThread(Option<GroupConsumer>);

impl CloseOffThread {
    fn new(consumer: GroupConsumer) -> Self {
        Self(Some(consumer))
    }
}

impl std::ops::Deref for CloseOffThread {
    type Target = GroupConsumer;
    fn deref(&self) -> &GroupConsumer {
        self.0.as_ref().expect("present until dropped")
    }
}

impl Drop for CloseOffThread {
    fn drop(&mut self) {
        if let Some(consumer) = self.0.take() {
            let _ = std::thread::Builder::new()
                .name("kafka-consumer-close".into())
                .spawn(move || drop(consumer));
        }
    }
}

/// One worker: handles its messages in arrival order, with retries and the DLQ.
async fn work<H: EventHandler>(
    mut rx: tokio::sync::mpsc::Receiver<Incoming>,
    handler: std::sync::Arc<H>,
    client: KafkaClient,
    stats: std::sync::Arc<ConsumerStats>,
    cancel: CancellationToken,
    done: tokio::sync::mpsc::UnboundedSender<Done>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let cfg = client.config().clone();
    while let Some(incoming) = rx.recv().await {
        let span = tracing::info_span!("event", topic = %incoming.topic, partition = incoming.partition, offset = incoming.offset);
        let mut attempt = 1;
        // Attempts that failed with `Retryable`: only those count toward the DLQ.
        let mut retryable = 0;
        let outcome = loop {
            let result =
                tracing::Instrument::instrument(handler.handle(&incoming), span.clone()).await;
            let exponential = cfg.consumer_backoff * 2u32.saturating_pow(attempt - 1).min(64);
            let backoff = match result {
                Ok(()) => break Ok(()),
                Err(HandlerError::Poison(e)) => break Err(e),
                Err(HandlerError::Retryable(e)) => {
                    stats.failed_attempts.fetch_add(1, Relaxed);
                    retryable += 1;
                    if retryable >= cfg.consumer_max_attempts {
                        break Err(e);
                    }
                    tracing::warn!(parent: &span, attempt, error = %e, "handler failed; retrying");
                    exponential
                }
                Err(HandlerError::Unavailable(e)) => {
                    stats.failed_attempts.fetch_add(1, Relaxed);
                    tracing::warn!(parent: &span, attempt, error = %e, "a dependency is unavailable; retrying until it returns");
                    exponential.min(UNAVAILABLE_MAX_BACKOFF.max(cfg.consumer_backoff))
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => {
                    // Not done: the offset stays uncommitted and the message comes again.
                    tracing::info!(parent: &span, "shutdown during retry; offset left uncommitted");
                    return;
                }
                _ = tokio::time::sleep(backoff) => {}
            }
            attempt = attempt.saturating_add(1);
        };
        match outcome {
            Ok(()) => {
                stats.handled.fetch_add(1, Relaxed);
            }
            Err(error) => {
                // Park it; if even the DLQ cannot take it, stop here without marking it done,
                // so it is redelivered after a restart.
                if let Err(e) = dead_letter(&client, &incoming, &error, attempt).await {
                    tracing::error!(parent: &span, error = %e, "could not dead-letter; leaving it uncommitted");
                    return;
                }
                stats.dead_lettered.fetch_add(1, Relaxed);
                tracing::error!(parent: &span, attempts = attempt, %error, "event dead-lettered");
            }
        }
        let physical = client.topic(&incoming.topic);
        let _ = done.send(Done {
            topic: physical,
            partition: incoming.partition,
            offset: incoming.offset,
        });
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
