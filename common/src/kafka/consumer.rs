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

/// How soon the broker answers a consumer's fetch: a consumer's latency against the broker's
/// CPU. A fetch that is answered as soon as one message is waiting carries one message while
/// a sale runs, and the broker spends more on the fetches than on the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Each message as soon as it is written: for a consumer a buyer waits on (the
    /// settlement that confirms their seat).
    AtOnce,
    /// Messages gathered at the broker until [`BATCH_BYTES`] of them are waiting, or for
    /// [`FETCH_WAIT`] at most: for a consumer nobody watches (the records that follow a
    /// confirmation). A flash sale fills a batch in a few tens of milliseconds; a lone
    /// message waits the whole [`FETCH_WAIT`].
    Batched,
}

/// What a [`Delivery::Batched`] fetch waits to gather: some twenty events.
pub const BATCH_BYTES: u32 = 8 * 1024;

/// How long the broker holds a fetch that has less than it asked for (see
/// [`Delivery`]). An idle consumer's fetch waits this long for a first message, so it costs
/// the broker ~3 fetches a second each instead of 50 (20 ms cost it 10 % of a core at rest,
/// and a quarter of one during a sale); a [`Delivery::AtOnce`] message is delivered no later.
pub const FETCH_WAIT: Duration = Duration::from_millis(300);

/// How many messages a worker's line holds before reading from the broker waits for it.
const WORKER_QUEUE: usize = 64;

/// What a service does with each consumed event. The handler records the event in its inbox
/// inside the same transaction as its effect, so a redelivery changes nothing.
pub trait EventHandler: Send + Sync + 'static {
    fn handle(&self, msg: &Incoming) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// How many messages [`handle_batch`](Self::handle_batch) takes at most. Above one, the
    /// consumer runs a single worker, which hands it at once every batchable message waiting
    /// in its line (in order, up to this many): one transaction for a whole fetch instead of
    /// one each. The default, one, handles each message on its own, in
    /// `consumer_concurrency` workers by key.
    const BATCH_LIMIT: usize = 1;

    /// Whether `msg` may go into a batch.
    fn batches(&self, _msg: &Incoming) -> bool {
        false
    }

    /// Handles `msgs` (two or more, each [`batches`](Self::batches)), each at most once
    /// (recorded in the inbox with its effect), so that handling again what a failed batch
    /// did changes nothing. If it fails, whatever the error, the worker handles them again
    /// one at a time through [`handle`](Self::handle), with its retries and the DLQ, so one
    /// bad message cannot hold back the others.
    fn handle_batch(
        &self,
        msgs: &[Incoming],
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let n = msgs.len();
        async move {
            Err(HandlerError::Retryable(format!(
                "this handler takes no batches ({n} messages)"
            )))
        }
    }
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
    /// Times the member was replaced because its group stayed unsettled (see [`run_consumer`]).
    pub restarts: std::sync::atomic::AtomicU64,
}

/// The consumer's context: follows the group's rebalances (who holds which partitions, in
/// the log and in [`ConsumerStats::assigned_partitions`]), the lag statistics, the group
/// handler's state (logged when it changes; how long it has not been settled), and whether an
/// offset commit is still in flight.
pub(super) struct GroupWatch {
    group: String,
    stats: std::sync::Arc<ConsumerStats>,
    /// The group handler's last `state/join_state` seen in the statistics, and since when it
    /// has not been `up/steady` (`None`: settled).
    cgrp: std::sync::Mutex<(String, Option<std::time::Instant>)>,
    /// When the asynchronous commit whose answer has not come back was sent.
    commit_in_flight: std::sync::Mutex<Option<std::time::Instant>>,
}

impl GroupWatch {
    fn new(group: &str, stats: std::sync::Arc<ConsumerStats>) -> Self {
        Self {
            group: group.to_owned(),
            stats,
            cgrp: std::sync::Mutex::default(),
            commit_in_flight: std::sync::Mutex::default(),
        }
    }

    /// Whether a new asynchronous commit may go: not while the last one is unanswered (the
    /// next carries its offsets too). A frozen coordinator otherwise collects a commit per
    /// tick, and librdkafka ends an unassignment only once every commit in flight has its
    /// answer: the group stays out of `steady`, consuming nothing, until they have all timed
    /// out. An answer never comes after `socket.timeout.ms`, so one older than
    /// [`COMMIT_ANSWER_DEADLINE`] is taken as lost.
    pub(super) fn begin_commit(&self) -> bool {
        let mut sent = self
            .commit_in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if sent.is_some_and(|at| at.elapsed() < COMMIT_ANSWER_DEADLINE) {
            return false;
        }
        *sent = Some(std::time::Instant::now());
        true
    }

    pub(super) fn end_commit(&self) {
        *self
            .commit_in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// How long the group handler has been out of `up/steady` (joining, waiting for its
    /// coordinator or for its previous assignment to end) while a broker was up, as of the
    /// last statistics. Zero while no broker is: then nothing a new member could do better.
    fn unsettled_for(&self) -> Duration {
        let cgrp = self.cgrp.lock().unwrap_or_else(|e| e.into_inner());
        cgrp.1.map(|since| since.elapsed()).unwrap_or_default()
    }
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
        // A broker answers: an unsettled group is then this member's trouble, not the cluster's.
        let broker_up = s.brokers.values().any(|b| b.nodeid >= 0 && b.state == "UP");
        let Some(cgrp) = &s.cgrp else { return };
        let state = format!("{}/{}", cgrp.state, cgrp.join_state);
        let mut last = self.cgrp.lock().unwrap_or_else(|e| e.into_inner());
        // The clock runs only while a broker is up: after an outage the group is given its
        // full time to settle again.
        if state == "up/steady" || !broker_up {
            last.1 = None;
        } else if last.1.is_none() {
            last.1 = Some(std::time::Instant::now());
        }
        if last.0 != state {
            tracing::info!(
                group = %self.group,
                %state,
                since_ms = cgrp.stateage,
                assigned = cgrp.assignment_size,
                rebalances = cgrp.rebalance_cnt,
                last_rebalance = %cgrp.rebalance_reason,
                "consumer group state"
            );
            last.0 = state;
        }
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

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        _offsets: &rdkafka::TopicPartitionList,
    ) {
        self.end_commit();
        if let Err(e) = result {
            tracing::debug!(group = %self.group, error = %e, "offset commit failed; the next one carries it");
        }
    }
}

pub(super) type GroupConsumer = StreamConsumer<GroupWatch>;

/// How long a request to a broker may go unanswered (librdkafka's `socket.timeout.ms`, 60 s
/// by default). A frozen broker holds every request until then, and an unanswered offset
/// commit holds the end of a rebalance with it, so a member that lost its session waits this
/// long before it can join again.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);

/// An offset commit unanswered for this long never will be (see [`GroupWatch::begin_commit`]).
const COMMIT_ANSWER_DEADLINE: Duration = Duration::from_secs(2 * SOCKET_TIMEOUT.as_secs());

/// A member whose group has not been settled (`up/steady`) for this many session timeouts is
/// replaced by a new one. A rebalance among live members settles within one session timeout
/// (a member that died is evicted after it); a chaos rehearsal once saw every member of every
/// group wait forever after a broker frozen for 30 s, consuming nothing, with nothing in the
/// log — the new member recovers from whatever state librdkafka got stuck in.
const UNSETTLED_SESSIONS_BEFORE_RESTART: u32 = 6;

/// Consumes `topics` (logical names) as `group` until `cancel` fires.
///
/// Messages are handled by `consumer_concurrency` workers; a message goes to the worker its
/// key hashes to, so one key's events (one reservation's) are handled in order while
/// different keys proceed in parallel. Per message: handle; on a retryable error retry up to
/// `consumer_max_attempts` times with exponential backoff; then (or at once for poison)
/// publish to `<topic>.dlq`. An unavailable dependency is waited out instead (retried, never
/// dead-lettered). A partition's offset is committed only up to its lowest message
/// still in flight — so a crash at any point redelivers rather than loses, and the inbox
/// makes a redelivery harmless. A member whose group stays unsettled (see
/// [`UNSETTLED_SESSIONS_BEFORE_RESTART`]) is closed and a new one joins in its place, counted
/// in [`ConsumerStats::restarts`]; what the old one had in flight is redelivered to the group.
pub async fn run_consumer<H: EventHandler>(
    client: KafkaClient,
    group: &str,
    topics: &[&str],
    delivery: Delivery,
    handler: H,
    stats: std::sync::Arc<ConsumerStats>,
    cancel: CancellationToken,
) -> Result<(), KafkaError> {
    let cfg = client.config().clone();
    let physical: Vec<String> = topics.iter().map(|t| client.topic(t)).collect();
    let refs: Vec<&str> = physical.iter().map(String::as_str).collect();
    let unsettled_limit = Duration::from_millis(u64::from(cfg.session_timeout_ms))
        * UNSETTLED_SESSIONS_BEFORE_RESTART;

    let handler = std::sync::Arc::new(handler);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Done>();
    let worker_count = if H::BATCH_LIMIT > 1 {
        1
    } else {
        cfg.consumer_concurrency
    };
    let mut workers = Vec::with_capacity(worker_count);
    let mut worker_tasks = Vec::with_capacity(worker_count);
    for _ in 0..worker_count {
        let (tx, rx) = tokio::sync::mpsc::channel::<Incoming>(WORKER_QUEUE.max(H::BATCH_LIMIT));
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

    let mut consumer = join_group(&client, group, &refs, delivery, &stats)?;
    tracing::info!(
        group,
        ?topics,
        workers = worker_count,
        batch_limit = H::BATCH_LIMIT,
        "consumer started"
    );
    let mut offsets = OffsetBook::default();
    let mut commit_tick = tokio::time::interval(Duration::from_millis(100));
    let mut settle_check = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(done) = done_rx.recv() => offsets.complete(&done),
            _ = commit_tick.tick() => offsets.commit(&consumer, CommitMode::Async),
            _ = settle_check.tick() => {
                let unsettled = consumer.context().unsettled_for();
                if unsettled >= unsettled_limit {
                    tracing::error!(
                        group,
                        unsettled_secs = unsettled.as_secs(),
                        "consumer group unsettled for too long; replacing this member with a new one"
                    );
                    // Whatever the old member had in flight is redelivered to the group; the
                    // workers' late answers about it find no partition in the new book.
                    offsets = OffsetBook::default();
                    consumer = join_group(&client, group, &refs, delivery, &stats)?;
                    stats.restarts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
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

/// A new member of `group` subscribed to `topics` (physical names).
fn join_group(
    client: &KafkaClient,
    group: &str,
    topics: &[&str],
    delivery: Delivery,
    stats: &std::sync::Arc<ConsumerStats>,
) -> Result<CloseOffThread, KafkaError> {
    let cfg = client.config();
    let consumer = CloseOffThread::new(
        super::client_config(cfg)
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
            .set("socket.timeout.ms", SOCKET_TIMEOUT.as_millis().to_string())
            .set("fetch.wait.max.ms", FETCH_WAIT.as_millis().to_string())
            .set(
                "fetch.min.bytes",
                match delivery {
                    Delivery::AtOnce => 1,
                    Delivery::Batched => BATCH_BYTES,
                }
                .to_string(),
            )
            .set("statistics.interval.ms", "5000")
            .create_with_context::<_, GroupConsumer>(GroupWatch::new(group, stats.clone()))?,
    );
    consumer.subscribe(topics)?;
    Ok(consumer)
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

/// One worker: handles its messages in arrival order, with retries and the DLQ; a batching
/// handler's batchable messages a line at a time (see [`EventHandler::BATCH_LIMIT`]).
async fn work<H: EventHandler>(
    mut rx: tokio::sync::mpsc::Receiver<Incoming>,
    handler: std::sync::Arc<H>,
    client: KafkaClient,
    stats: std::sync::Arc<ConsumerStats>,
    cancel: CancellationToken,
    done: tokio::sync::mpsc::UnboundedSender<Done>,
) {
    let one = One {
        handler: &*handler,
        client: &client,
        stats: &stats,
        cancel: &cancel,
        done: &done,
    };
    // A message taken off the line that did not fit the batch before it.
    let mut next: Option<Incoming> = None;
    loop {
        let first = match next.take() {
            Some(m) => m,
            None => match rx.recv().await {
                Some(m) => m,
                None => return,
            },
        };
        if H::BATCH_LIMIT < 2 || !handler.batches(&first) {
            if !one.handle(first).await {
                return;
            }
            continue;
        }
        let mut batch = vec![first];
        while batch.len() < H::BATCH_LIMIT {
            match rx.try_recv() {
                Ok(m) if handler.batches(&m) => batch.push(m),
                Ok(m) => {
                    next = Some(m);
                    break;
                }
                Err(_) => break,
            }
        }
        if batch.len() > 1 {
            let span = tracing::info_span!(
                "events",
                topic = %batch[0].topic,
                count = batch.len(),
                otel.kind = "consumer",
                otel.name = tracing::field::Empty,
            );
            if crate::telemetry::traces_on() {
                // The batch goes on with its first message's trace and links the others'.
                span.record("otel.name", format!("{} process", batch[0].topic));
                crate::telemetry::continue_trace(&span, batch[0].traceparent.as_deref(), None);
                crate::telemetry::link_traces(
                    &span,
                    batch[1..].iter().map(|m| m.traceparent.as_deref()),
                );
            }
            match tracing::Instrument::instrument(handler.handle_batch(&batch), span.clone()).await
            {
                Ok(()) => {
                    stats
                        .handled
                        .fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    for m in &batch {
                        one.finished(m);
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(parent: &span, error = %e, "batch failed; handling its messages one at a time");
                }
            }
        }
        for m in batch {
            if !one.handle(m).await {
                return;
            }
        }
    }
}

/// What a worker needs to handle one message on its own.
struct One<'a, H> {
    handler: &'a H,
    client: &'a KafkaClient,
    stats: &'a ConsumerStats,
    cancel: &'a CancellationToken,
    done: &'a tokio::sync::mpsc::UnboundedSender<Done>,
}

impl<H: EventHandler> One<'_, H> {
    /// Handles `incoming` with retries, or parks it in the DLQ; `false`: the worker must stop
    /// (shutdown, or the DLQ failed), leaving it uncommitted.
    async fn handle(&self, incoming: Incoming) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let cfg = self.client.config();
        let stats = self.stats;
        let span = tracing::info_span!(
            "event",
            topic = %incoming.topic,
            partition = incoming.partition,
            offset = incoming.offset,
            otel.kind = "consumer",
            otel.name = tracing::field::Empty,
        );
        if crate::telemetry::traces_on() {
            span.record("otel.name", format!("{} process", incoming.topic));
            crate::telemetry::continue_trace(&span, incoming.traceparent.as_deref(), None);
        }
        let mut attempt = 1;
        // Attempts that failed with `Retryable`: only those count toward the DLQ.
        let mut retryable = 0;
        let outcome = loop {
            let result =
                tracing::Instrument::instrument(self.handler.handle(&incoming), span.clone()).await;
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
                _ = self.cancel.cancelled() => {
                    // Not done: the offset stays uncommitted and the message comes again.
                    tracing::info!(parent: &span, "shutdown during retry; offset left uncommitted");
                    return false;
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
                if let Err(e) = dead_letter(self.client, &incoming, &error, attempt).await {
                    tracing::error!(parent: &span, error = %e, "could not dead-letter; leaving it uncommitted");
                    return false;
                }
                stats.dead_lettered.fetch_add(1, Relaxed);
                tracing::error!(parent: &span, attempts = attempt, %error, "event dead-lettered");
            }
        }
        self.finished(&incoming);
        true
    }

    /// `incoming` is dealt with: its offset may be committed.
    fn finished(&self, incoming: &Incoming) {
        let _ = self.done.send(Done {
            topic: self.client.topic(&incoming.topic),
            partition: incoming.partition,
            offset: incoming.offset,
        });
    }
}

fn detach(msg: &BorrowedMessage<'_>, prefix: &str) -> Incoming {
    let traceparent = msg.headers().and_then(|hs| {
        hs.iter()
            .find(|h| h.key == crate::telemetry::TRACEPARENT)
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
    use rdkafka::statistics::{Broker, ConsumerGroup};

    fn statistics(state: &str, join_state: &str, broker: &str) -> Statistics {
        let mut s = Statistics::default();
        s.brokers.insert(
            "127.0.0.1:9092/1".into(),
            Broker {
                nodeid: 1,
                state: broker.into(),
                ..Broker::default()
            },
        );
        s.cgrp = Some(ConsumerGroup {
            state: state.into(),
            join_state: join_state.into(),
            ..ConsumerGroup::default()
        });
        s
    }

    #[test]
    fn a_group_is_unsettled_only_out_of_steady_and_only_while_a_broker_is_up() {
        let watch = GroupWatch::new("g", std::sync::Arc::default());
        watch.stats(statistics("up", "steady", "UP"));
        assert_eq!(watch.unsettled_for(), Duration::ZERO);

        watch.stats(statistics("up", "wait-unassign-to-complete", "UP"));
        std::thread::sleep(Duration::from_millis(30));
        let first = watch.unsettled_for();
        assert!(first >= Duration::from_millis(30), "{first:?}");
        // Still stuck: the clock runs from the first sighting, not the last.
        watch.stats(statistics("up", "wait-unassign-to-complete", "UP"));
        assert!(watch.unsettled_for() >= first);

        // No broker answers: not this member's fault, and the clock starts again after.
        watch.stats(statistics("query-coord", "init", "DOWN"));
        assert_eq!(watch.unsettled_for(), Duration::ZERO);
        watch.stats(statistics("up", "wait-join", "UP"));
        assert!(watch.unsettled_for() < first);

        watch.stats(statistics("up", "steady", "UP"));
        assert_eq!(watch.unsettled_for(), Duration::ZERO);
    }

    #[test]
    fn one_offset_commit_is_in_flight_at_a_time() {
        let watch = GroupWatch::new("g", std::sync::Arc::default());
        assert!(watch.begin_commit());
        assert!(!watch.begin_commit(), "the first is unanswered");
        watch.end_commit();
        assert!(watch.begin_commit());
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
