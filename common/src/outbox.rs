//! Transactional outbox: an event is a row written in the same transaction as the change that
//! caused it; a relay publishes rows in order and marks them. The broker being down delays
//! events, never loses them, and never fails the request that caused them.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::message::{Header, OwnedHeaders};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, Statement, TransactionTrait};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::kafka::{Envelope, KafkaClient};
use crate::metrics::Metrics;

/// Wakes every relay of this process: `enqueue` bumps it, each relay watches it. A watch
/// channel rather than a `Notify`, so a relay busy publishing when the bump comes still sees
/// it, and several relays in one process (tests) all wake.
///
/// Not PostgreSQL's NOTIFY: a notifying transaction takes one database-wide lock at commit
/// and holds it through its WAL flush, so every transaction that wrote an event committed
/// one after another. Under a flash sale that lock was the queue every payment, hold
/// takeover and settlement waited in (27 of 28 busy connections at once).
static WAKE: std::sync::LazyLock<watch::Sender<u64>> =
    std::sync::LazyLock::new(|| watch::channel(0).0);

/// How long a woken relay keeps looking for the row whose insert woke it: the wake comes
/// just before the writer's commit, so a look at once would often miss it. The first look
/// waits for that commit (a round trip or two); most then find the row at once, where looking
/// at once found nothing about half the time and cost an empty transaction (BEGIN, the
/// select, COMMIT: pg_stat_statements over two 5,000-seat flash sales).
const CHASE: [Duration; 5] = [
    Duration::from_millis(2),
    Duration::from_millis(3),
    Duration::from_millis(10),
    Duration::from_millis(30),
    Duration::from_millis(100),
];

/// Writes `event` to the outbox inside the caller's transaction. `key` orders events:
/// the relay never publishes a row before an earlier unpublished row with the same key.
pub async fn enqueue<C: ConnectionTrait, T: Serialize>(
    txn: &C,
    topic: &str,
    key: &str,
    event: &Envelope<T>,
) -> Result<(), DbErr> {
    txn.execute_raw(Statement::from_sql_and_values(
        txn.get_database_backend(),
        format!("INSERT INTO {ROW_COLUMNS} VALUES ($1, $2, $3, $4, $5)"),
        row(topic, key, event)?,
    ))
    .await?;
    written();
    Ok(())
}

/// The table and columns of an outbox row, in the order of [`row`]'s values: for a statement
/// that writes its event itself, in the same round trip as the change that causes it
/// (`INSERT INTO {ROW_COLUMNS} SELECT $n, ... WHERE ...`), then calls [`written`].
pub const ROW_COLUMNS: &str = "outbox (event_id, topic, key, payload, traceparent)";

/// The values of `event`'s outbox row (see [`enqueue`] for `key`), for [`ROW_COLUMNS`].
pub fn row<T: Serialize>(
    topic: &str,
    key: &str,
    event: &Envelope<T>,
) -> Result<[sea_orm::Value; 5], DbErr> {
    let payload =
        serde_json::to_value(event).map_err(|e| DbErr::Custom(format!("event encoding: {e}")))?;
    // The trace of the work that wrote the event, for the relay to send on (traces on only).
    let traceparent = crate::telemetry::current_traceparent();
    Ok([
        event.id.into(),
        topic.into(),
        key.into(),
        payload.into(),
        traceparent.into(),
    ])
}

/// An outbox row was just written in a transaction about to commit: wakes the relays. The
/// row is visible once the caller commits, moments from now; a rollback leaves the woken
/// relay nothing to find.
pub fn written() {
    WAKE.send_modify(|n| *n = n.wrapping_add(1));
}

#[derive(Clone, Debug)]
pub struct RelayConfig {
    pub batch_size: i64,
    /// Poll for rows no wake announced: written by another process (another replica,
    /// batch's sweeps) or committed after the wake's chase gave up.
    pub poll_interval: Duration,
    /// Wait after a failed publish before trying the same rows again.
    pub retry_backoff: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 256,
            poll_interval: Duration::from_millis(100),
            retry_backoff: Duration::from_millis(500),
        }
    }
}

struct Row {
    id: i64,
    topic: String,
    key: String,
    payload: serde_json::Value,
    /// The W3C context of the transaction that wrote the row, if it was traced.
    traceparent: Option<String>,
}

/// Publishes outbox rows until `cancel` fires.
pub async fn run_relay(
    db: DatabaseConnection,
    kafka: KafkaClient,
    cfg: RelayConfig,
    metrics: Option<Arc<Metrics>>,
    cancel: CancellationToken,
) {
    let mut wake = WAKE.subscribe();
    let mut last_gauge = std::time::Instant::now() - Duration::from_secs(60);
    let mut woken = false;
    loop {
        // Drain everything that is ready; after a wake, look (again) briefly until the row
        // that caused it has committed. Then sleep until the next wake or poll tick.
        let mut chase = woken.then_some(CHASE.iter());
        // A woken relay's first look waits too (the chase's first pause).
        let mut pause = chase.as_mut().and_then(Iterator::next);
        loop {
            if let Some(pause) = pause.take() {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(*pause) => {}
                }
            }
            match publish_batch(&db, &kafka, cfg.batch_size).await {
                Ok(0) => match chase.as_mut().and_then(Iterator::next) {
                    Some(next) => pause = Some(next),
                    None => break,
                },
                // A batch short of the limit took every row visible: a row written since
                // has woken the relay again (the wait below returns at once), so looking
                // again now would mostly find nothing.
                Ok(n) if (n as i64) < cfg.batch_size => break,
                Ok(_) => chase = None,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox publish failed; rows stay pending");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(cfg.retry_backoff) => {}
                    }
                    break;
                }
            }
        }
        if let Some(m) = &metrics
            && last_gauge.elapsed() >= Duration::from_secs(2)
        {
            last_gauge = std::time::Instant::now();
            if let Ok(b) = backlog(&db).await {
                m.set_outbox_backlog(b.pending, b.oldest_age_secs);
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = wake.changed() => woken = r.is_ok(),
            _ = tokio::time::sleep(cfg.poll_interval) => woken = false,
        }
    }
}

/// Publishes one batch and returns how many rows it marked published.
///
/// `FOR UPDATE SKIP LOCKED` lets several replicas share the relay: each takes rows no one else
/// holds. A row is left for later if an earlier unpublished row with the same key is outside
/// this batch, so each key's events go out in order. The batch takes the first unlocked rows
/// in id order, so such a row can only be one that another relay holds, below the batch's
/// last id: `others` reads exactly those, in one pass over `outbox_pending` up to that id
/// (usually none). The check once looked up each batch row's earlier rows by key instead,
/// and the planner, whose statistics see an outbox with nothing pending, ran it as a full
/// pass over the pending rows for every row of the batch: a backlog of 23,000 rows took
/// 51 s of PostgreSQL to drain, against 0.41 s now (`bench/outbox-drain.sh`).
///
/// The rows stay locked until they are marked, so no other relay sends them meanwhile;
/// if the broker fails, the transaction rolls back and they are retried. A crash between the
/// broker's ack and the commit republishes them: consumers dedup by event id (inbox).
pub async fn publish_batch(
    db: &DatabaseConnection,
    kafka: &KafkaClient,
    limit: i64,
) -> Result<usize, DbErr> {
    let txn = db.begin().await?;
    let rows = txn
        .query_all_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "WITH batch AS ( \
                SELECT id, topic, key, payload, traceparent FROM outbox \
                WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED), \
             others AS MATERIALIZED ( \
                SELECT p.id, p.key FROM outbox p WHERE p.published_at IS NULL \
                AND p.id < (SELECT max(id) FROM batch) AND p.id NOT IN (SELECT id FROM batch)) \
             SELECT b.id, b.topic, b.key, b.payload, b.traceparent FROM batch b \
             WHERE NOT EXISTS (SELECT 1 FROM others o WHERE o.key = b.key AND o.id < b.id) \
             ORDER BY b.id",
            [limit.into()],
        ))
        .await?;
    if rows.is_empty() {
        txn.commit().await?;
        return Ok(0);
    }
    let rows: Vec<Row> = rows
        .iter()
        .map(|r| {
            Ok(Row {
                id: r.try_get("", "id")?,
                topic: r.try_get("", "topic")?,
                key: r.try_get("", "key")?,
                payload: r.try_get("", "payload")?,
                traceparent: r.try_get("", "traceparent")?,
            })
        })
        .collect::<Result<_, DbErr>>()?;

    // Send the whole batch, then wait for every ack: the idempotent producer keeps each
    // partition's order, so pipelining does not reorder a key's events.
    let sends = rows.iter().map(|row| {
        let topic = kafka.topic(&row.topic);
        let payload = serde_json::to_vec(&row.payload).unwrap_or_default();
        let (span, traceparent) = publish_span(row);
        let send = async move {
            let headers = match &traceparent {
                Some(value) => OwnedHeaders::new().insert(Header {
                    key: crate::telemetry::TRACEPARENT,
                    value: Some(value),
                }),
                None => OwnedHeaders::new(),
            };
            kafka.send(&topic, &row.key, &payload, headers).await
        };
        tracing::Instrument::instrument(send, span)
    });
    let results = futures_util::future::join_all(sends).await;
    if let Some(err) = results.into_iter().find_map(Result::err) {
        txn.rollback().await?;
        return Err(DbErr::Custom(format!("broker: {err}")));
    }

    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    txn.execute_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        "UPDATE outbox SET published_at = now() WHERE id = ANY($1)",
        [ids.into()],
    ))
    .await?;
    txn.commit().await?;
    tracing::debug!(count = rows.len(), "outbox batch published");
    Ok(rows.len())
}

/// The span of one row's publication, continuing the trace stored with the row, and the
/// `traceparent` the message carries: the publication's own context when traces are on, the
/// stored one passed on unchanged when they are off here, none when the row has none.
fn publish_span(row: &Row) -> (tracing::Span, Option<String>) {
    if !crate::telemetry::traces_on() || row.traceparent.is_none() {
        return (tracing::Span::none(), row.traceparent.clone());
    }
    let span = tracing::info_span!(
        "publish",
        otel.kind = "producer",
        otel.name = format!("{} publish", row.topic),
        topic = %row.topic,
        outbox_id = row.id,
    );
    crate::telemetry::continue_trace(&span, row.traceparent.as_deref(), None);
    let traceparent = crate::telemetry::context_of(&span)
        .into_iter()
        .find_map(|(k, v)| (k == crate::telemetry::TRACEPARENT).then_some(v))
        .or_else(|| row.traceparent.clone());
    (span, traceparent)
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    pub pending: i64,
    pub oldest_age_secs: f64,
}

pub async fn backlog<C: ConnectionTrait>(db: &C) -> Result<Backlog, DbErr> {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT count(*)::bigint AS pending, \
             COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 AS oldest \
             FROM outbox WHERE published_at IS NULL",
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("backlog query returned no row".into()))?;
    Ok(Backlog {
        pending: row.try_get("", "pending")?,
        oldest_age_secs: row.try_get("", "oldest")?,
    })
}

/// Deletes rows published before `before` (batch's cleanup); returns how many went.
/// Unpublished rows are never touched, however old: they are events still owed.
///
/// `published_at` has no index (the relay's update of it would maintain one more), so the
/// rows to delete are found through the primary key: ids are handed out as rows are written,
/// and a row published before `before` was written before it, so it lies below the first id
/// written at or after `before`. Finding that id walks the key from the oldest row, past the
/// rows about to go; the delete then reads only the ids below it. A bare `DELETE … WHERE
/// published_at < $1` read the whole table (a week of events) every minute to find the
/// minute's worth that had aged out: 620 ms each for 785,000 rows. A row written by a
/// transaction that began before an older row's (ids and `created_at` can disagree by as long
/// as a transaction lasts) may wait for a later run.
pub async fn delete_published_before<C: ConnectionTrait>(
    db: &C,
    before: DateTime<Utc>,
) -> Result<u64, DbErr> {
    let backend = db.get_database_backend();
    let first_kept = db
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            "SELECT id FROM outbox WHERE created_at >= $1 ORDER BY id LIMIT 1",
            [before.into()],
        ))
        .await?
        .map(|row| row.try_get::<i64>("", "id"))
        .transpose()?;
    // None: every row was written before `before`.
    let below = first_kept.unwrap_or(i64::MAX);
    let res = db
        .execute_raw(Statement::from_sql_and_values(
            backend,
            "DELETE FROM outbox WHERE id < $2 AND published_at < $1",
            [before.into(), below.into()],
        ))
        .await?;
    Ok(res.rows_affected())
}
