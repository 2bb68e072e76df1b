//! The producer under [`super::KafkaClient`]: librdkafka's producer with a polling thread of
//! our own that serves delivery reports and completes each send's future.
//!
//! rust-rdkafka's `FutureProducer` polls on a thread of its own in 100 ms windows, and its
//! poll spins through the last sub-millisecond of each window: the remaining time, truncated
//! to whole milliseconds, becomes a zero timeout and the loop asks again until the window is
//! over. That cost every idle service 9 ms of CPU a second (about 1 % of a core, more than
//! half of an idle service's CPU; measured from `/proc/<pid>/task/*/stat`). This thread polls
//! in windows of [`POLL_WINDOW`]: a delivery report is still served the moment it arrives,
//! and the spin comes once a second instead of ten times.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::{Client, ClientContext};
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use tokio::sync::oneshot;

/// How long one poll of the polling thread lasts when no report comes; also how long the
/// thread outlives the last handle to the producer.
const POLL_WINDOW: Duration = Duration::from_secs(1);

/// How often a send retries while librdkafka's queue is full.
const QUEUE_FULL_RETRY: Duration = Duration::from_millis(50);

/// Hands each delivery report to the send that waits for it.
pub(super) struct Deliveries;

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<oneshot::Sender<Result<(), KafkaError>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, waiting: Self::DeliveryOpaque) {
        // The send may have been given up on (its future dropped): nobody to tell.
        let _ = waiting.send(result.as_ref().map(|_| ()).map_err(|(e, _)| e.clone()));
    }
}

/// The producer and the flag that ends its polling thread once the last clone is dropped.
struct Polled {
    producer: Arc<BaseProducer<Deliveries>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Polled {
    fn drop(&mut self) {
        // The thread ends within one window; it holds the producer until then.
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// An idempotent producer whose sends are futures (cheap to clone, shared).
#[derive(Clone)]
pub(super) struct PolledProducer(Arc<Polled>);

impl PolledProducer {
    pub(super) fn create(config: &ClientConfig) -> Result<Self, KafkaError> {
        let producer = Arc::new(BaseProducer::from_config_and_context(config, Deliveries)?);
        let stop = Arc::new(AtomicBool::new(false));
        std::thread::Builder::new()
            .name("kafka-producer-poll".into())
            .spawn({
                let producer = producer.clone();
                let stop = stop.clone();
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        producer.poll(POLL_WINDOW);
                    }
                }
            })
            .map_err(|e| KafkaError::ClientCreation(format!("producer polling thread: {e}")))?;
        Ok(Self(Arc::new(Polled { producer, stop })))
    }

    /// Publishes one message and waits for its delivery report; while librdkafka's queue is
    /// full, retries for up to `queue_timeout`.
    pub(super) async fn send(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        headers: OwnedHeaders,
        queue_timeout: Duration,
    ) -> Result<(), KafkaError> {
        let (tx, rx) = oneshot::channel();
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(tx))
            .key(key)
            .payload(payload)
            .headers(headers);
        let started = Instant::now();
        loop {
            match self.0.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if started.elapsed() < queue_timeout =>
                {
                    record = back;
                    tokio::time::sleep(QUEUE_FULL_RETRY).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
        // librdkafka reports every queued message, if only with its `message.timeout.ms`
        // error; a sender dropped unanswered means the producer itself went away.
        rx.await.unwrap_or(Err(KafkaError::Canceled))
    }

    pub(super) fn client(&self) -> &Client<Deliveries> {
        self.0.producer.client()
    }

    pub(super) fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.0.producer.flush(timeout)
    }
}
