//! Outbox relay, consumer loop, inbox and DLQ against a real broker and database.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use common::inbox;
use common::kafka::{
    ConsumerStats, Delivery, Envelope, EventHandler, HandlerError, Incoming, KafkaClient,
    run_consumer,
};
use common::outbox::{self, RelayConfig};
use common::testkit::{
    PrivateBroker, TestDatabase, TopicPrefix, delete_kafka_prefix, eventually, kafka_brokers,
    unique_id,
};
use rdkafka::message::OwnedHeaders;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement, TransactionTrait};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::util::SubscriberInitExt;
use uuid::Uuid;

use crate::helpers::{Consumed, TestMigrator, kafka_client, read_topic};

const TOPIC: &str = "demo.happened";

async fn migrated_db() -> (TestDatabase, DatabaseConnection) {
    let db = TestDatabase::create().await;
    let conn = db.connect().await;
    common::db::migrate::<TestMigrator>(&conn, 1).await.unwrap();
    (db, conn)
}

async fn count(db: &DatabaseConnection, sql: &str) -> i64 {
    db.query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "n")
        .unwrap()
}

async fn enqueue(db: &DatabaseConnection, key: &str, data: Value, commit: bool) -> Uuid {
    let event = Envelope::new(TOPIC, data, Utc::now());
    let txn = db.begin().await.unwrap();
    outbox::enqueue(&txn, TOPIC, key, &event).await.unwrap();
    if commit {
        txn.commit().await.unwrap();
    } else {
        txn.rollback().await.unwrap();
    }
    event.id
}

fn start_relay(db: &DatabaseConnection, kafka: &KafkaClient) -> CancellationToken {
    let cancel = CancellationToken::new();
    let cfg = RelayConfig {
        poll_interval: Duration::from_millis(200),
        retry_backoff: Duration::from_millis(200),
        ..RelayConfig::default()
    };
    tokio::spawn(outbox::run_relay(
        db.clone(),
        kafka.clone(),
        cfg,
        None,
        cancel.clone(),
    ));
    cancel
}

fn ids_of(messages: &[Consumed]) -> Vec<Uuid> {
    messages
        .iter()
        .map(|(p, _)| serde_json::from_slice::<Envelope<Value>>(p).unwrap().id)
        .collect()
}

#[tokio::test]
async fn committed_rows_are_published_once_in_key_order_and_rolled_back_ones_never() {
    let (_guard, db) = migrated_db().await;
    let prefix = TopicPrefix::new();
    let kafka = kafka_client(&kafka_brokers(), &prefix.0, &[TOPIC]).await;
    let relay = start_relay(&db, &kafka);

    let committed = enqueue(&db, "r-1", json!({"n": 0}), true).await;
    let rolled_back = enqueue(&db, "r-1", json!({"n": -1}), false).await;
    let mut ordered = vec![committed];
    for n in 1..20 {
        ordered.push(enqueue(&db, "r-1", json!({"n": n}), true).await);
    }
    eventually(
        "every committed row to be marked published",
        Duration::from_secs(20),
        || {
            let db = db.clone();
            async move {
                (count(
                    &db,
                    "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL",
                )
                .await
                    == 0)
                    .then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        count(&db, "SELECT count(*) AS n FROM outbox").await,
        20,
        "the rolled-back row never existed"
    );

    let messages = read_topic(
        &kafka_brokers(),
        &kafka.topic(TOPIC),
        Duration::from_secs(4),
    )
    .await;
    let ids = ids_of(&messages);
    assert_eq!(
        ids, ordered,
        "each committed event exactly once, in key order"
    );
    assert!(!ids.contains(&rolled_back));
    assert!(
        messages
            .iter()
            .all(|(_, headers)| headers.iter().all(|(k, _)| k != "traceparent")),
        "with traces off no trace context is invented"
    );
    relay.cancel();
}

/// Two relays share the outbox: while one holds a key's first row, the other sends the rest of
/// the outbox but nothing later of that key, which then goes out in order after it.
#[tokio::test]
async fn a_row_held_by_another_relay_holds_back_its_key_and_nothing_else() {
    let (_guard, db) = migrated_db().await;
    let prefix = TopicPrefix::new();
    let kafka = kafka_client(&kafka_brokers(), &prefix.0, &[TOPIC]).await;
    let a1 = enqueue(&db, "a", json!({"n": 1}), true).await;
    let b1 = enqueue(&db, "b", json!({"n": 1}), true).await;
    let a2 = enqueue(&db, "a", json!({"n": 2}), true).await;
    let b2 = enqueue(&db, "b", json!({"n": 2}), true).await;

    // The other relay: it has locked a's first row and not yet marked it.
    let other = db.begin().await.unwrap();
    other
        .execute_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT id FROM outbox WHERE key = 'a' ORDER BY id LIMIT 1 FOR UPDATE",
        ))
        .await
        .unwrap();
    assert_eq!(
        outbox::publish_batch(&db, &kafka, 256).await.unwrap(),
        2,
        "b's two rows go; a's second waits behind the held first"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL AND key = 'a'"
        )
        .await,
        2
    );
    // It gives up (say, its broker failed): the rows are free again, and go out in order.
    other.rollback().await.unwrap();
    assert_eq!(outbox::publish_batch(&db, &kafka, 256).await.unwrap(), 2);
    assert_eq!(outbox::publish_batch(&db, &kafka, 256).await.unwrap(), 0);

    let ids = ids_of(
        &read_topic(
            &kafka_brokers(),
            &kafka.topic(TOPIC),
            Duration::from_secs(4),
        )
        .await,
    );
    assert_eq!(
        ids,
        vec![b1, b2, a1, a2],
        "each event once, each key in order"
    );
}

#[tokio::test]
async fn rows_wait_while_the_broker_is_down_and_go_out_when_it_returns() {
    let broker = PrivateBroker::start().await;
    let (_guard, db) = migrated_db().await;
    // The private node outlives this test: a prefix of its own keeps its topic fresh.
    let prefix = format!("{}.", unique_id());
    let kafka = kafka_client(&broker.brokers, &prefix, &[TOPIC]).await;
    let relay = start_relay(&db, &kafka);

    enqueue(&db, "warmup", json!({}), true).await;
    eventually("warm-up row published", Duration::from_secs(20), || {
        let db = db.clone();
        async move {
            (count(
                &db,
                "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL",
            )
            .await
                == 0)
                .then_some(())
        }
    })
    .await;

    broker.pause();
    let mut expected = Vec::new();
    for i in 0..5 {
        // The writer's transaction never waits for the broker: it commits while the broker
        // is still paused (it is resumed only below).
        let written = tokio::time::timeout(
            Duration::from_secs(60),
            enqueue(&db, &format!("k{i}"), json!({"i": i}), true),
        )
        .await
        .expect("a row written while the broker is paused");
        expected.push(written);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        count(
            &db,
            "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL"
        )
        .await,
        5,
        "nothing is marked published while the broker is frozen"
    );

    broker.resume();
    eventually(
        "rows published after the broker returns",
        Duration::from_secs(60),
        || {
            let db = db.clone();
            async move {
                (count(
                    &db,
                    "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL",
                )
                .await
                    == 0)
                    .then_some(())
            }
        },
    )
    .await;
    let ids =
        ids_of(&read_topic(&broker.brokers, &kafka.topic(TOPIC), Duration::from_secs(4)).await);
    for id in expected {
        assert!(ids.contains(&id), "event {id} was delivered");
    }
    relay.cancel();
}

/// Records each event's effect with inbox dedup, or fails on demand.
#[derive(Clone)]
struct RecordingHandler {
    db: DatabaseConnection,
    failing: Arc<AtomicBool>,
}

impl EventHandler for RecordingHandler {
    async fn handle(&self, msg: &Incoming) -> Result<(), HandlerError> {
        let event: Envelope<Value> = msg.decode()?;
        if self.failing.load(Ordering::SeqCst) || event.data["fail"] == true {
            return Err(HandlerError::Retryable("told to fail".into()));
        }
        let txn = self.db.begin().await?;
        if !inbox::record(&txn, event.id, "test-consumer").await? {
            return Ok(());
        }
        txn.execute_raw(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "INSERT INTO effects (event_id, note) VALUES ($1, $2)",
            [event.id.into(), event.data.to_string().into()],
        ))
        .await?;
        txn.commit().await?;
        Ok(())
    }
}

/// A [`RecordingHandler`] whose dependency is down (`Unavailable`) while `down` is set.
struct DependentHandler {
    inner: RecordingHandler,
    down: Arc<AtomicBool>,
}

impl EventHandler for DependentHandler {
    async fn handle(&self, msg: &Incoming) -> Result<(), HandlerError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(HandlerError::Unavailable(
                "redis: connection refused".into(),
            ));
        }
        self.inner.handle(msg).await
    }
}

struct ConsumerRun {
    stats: Arc<ConsumerStats>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn consume(kafka: &KafkaClient, group: &str, handler: impl EventHandler) -> ConsumerRun {
    consume_as(kafka, group, Delivery::AtOnce, handler)
}

fn consume_as(
    kafka: &KafkaClient,
    group: &str,
    delivery: Delivery,
    handler: impl EventHandler,
) -> ConsumerRun {
    let stats = Arc::new(ConsumerStats::default());
    let cancel = CancellationToken::new();
    let (k, g, s, c) = (
        kafka.clone(),
        group.to_owned(),
        stats.clone(),
        cancel.clone(),
    );
    let task = tokio::spawn(async move {
        run_consumer(k, &g, &[TOPIC], delivery, handler, s, c)
            .await
            .unwrap();
    });
    ConsumerRun {
        stats,
        cancel,
        task,
    }
}

async fn produce(kafka: &KafkaClient, payload: &[u8]) {
    kafka
        .send(&kafka.topic(TOPIC), "key", payload, OwnedHeaders::new())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_redelivered_event_is_skipped_by_the_inbox() {
    let (_guard, db) = migrated_db().await;
    let prefix = TopicPrefix::new();
    let kafka = kafka_client(&kafka_brokers(), &prefix.0, &[TOPIC]).await;
    let event = serde_json::to_vec(&Envelope::new(TOPIC, json!({"seat": 1}), Utc::now())).unwrap();
    produce(&kafka, &event).await;
    produce(&kafka, &event).await;
    let run = consume(
        &kafka,
        "g",
        RecordingHandler {
            db: db.clone(),
            failing: Arc::default(),
        },
    );
    eventually("both deliveries handled", Duration::from_secs(30), || {
        let s = run.stats.clone();
        async move { (s.handled.load(Ordering::SeqCst) == 2).then_some(()) }
    })
    .await;
    assert_eq!(
        count(&db, "SELECT count(*) AS n FROM effects").await,
        1,
        "effect applied once"
    );
    run.cancel.cancel();
    run.task.await.unwrap();
}

#[tokio::test]
async fn a_batched_consumer_gets_a_lone_event_and_then_a_burst_each_once() {
    let (_guard, db) = migrated_db().await;
    let prefix = TopicPrefix::new();
    let kafka = kafka_client(&kafka_brokers(), &prefix.0, &[TOPIC]).await;
    let run = consume_as(
        &kafka,
        "g",
        Delivery::Batched,
        RecordingHandler {
            db: db.clone(),
            failing: Arc::default(),
        },
    );
    let event =
        |n: usize| serde_json::to_vec(&Envelope::new(TOPIC, json!({"n": n}), Utc::now())).unwrap();
    // Far less than a batch: the broker answers when its wait runs out.
    produce(&kafka, &event(0)).await;
    eventually("the lone event handled", Duration::from_secs(30), || {
        let s = run.stats.clone();
        async move { (s.handled.load(Ordering::SeqCst) == 1).then_some(()) }
    })
    .await;
    // Several batches' worth, sent at once.
    let burst = 200;
    futures_util::future::join_all((1..=burst).map(|n| {
        let (kafka, payload) = (kafka.clone(), event(n));
        async move { produce(&kafka, &payload).await }
    }))
    .await;
    eventually("the burst handled", Duration::from_secs(30), || {
        let db = db.clone();
        async move {
            (count(&db, "SELECT count(*) AS n FROM effects").await == 1 + burst as i64)
                .then_some(())
        }
    })
    .await;
    assert_eq!(
        run.stats.handled.load(Ordering::SeqCst),
        1 + burst as u64,
        "each event handled once"
    );
    run.cancel.cancel();
    run.task.await.unwrap();
}

/// A [`RecordingHandler`] that also takes batches: all in one transaction, or fails whole if
/// one of them is bad. Counts the batches it committed and the messages in them.
struct BatchingHandler {
    inner: RecordingHandler,
    batches: Arc<std::sync::Mutex<Vec<usize>>>,
}

impl EventHandler for BatchingHandler {
    async fn handle(&self, msg: &Incoming) -> Result<(), HandlerError> {
        self.inner.handle(msg).await
    }

    const BATCH_LIMIT: usize = 64;

    fn batches(&self, msg: &Incoming) -> bool {
        msg.key.as_deref() != Some("alone")
    }

    async fn handle_batch(&self, msgs: &[Incoming]) -> Result<(), HandlerError> {
        assert!(msgs.len() >= 2 && msgs.len() <= Self::BATCH_LIMIT);
        let txn = self.inner.db.begin().await?;
        for msg in msgs {
            assert!(self.batches(msg), "only batchable messages in a batch");
            let event: Envelope<Value> = msg.decode()?;
            if event.data["fail"] == true {
                return Err(HandlerError::Retryable("told to fail".into()));
            }
            if !inbox::record(&txn, event.id, "test-consumer").await? {
                continue;
            }
            txn.execute_raw(Statement::from_sql_and_values(
                txn.get_database_backend(),
                "INSERT INTO effects (event_id, note) VALUES ($1, $2)",
                [event.id.into(), event.data.to_string().into()],
            ))
            .await?;
        }
        txn.commit().await?;
        self.batches.lock().unwrap().push(msgs.len());
        Ok(())
    }
}

#[tokio::test]
async fn a_batching_handler_takes_what_waits_at_once_and_a_bad_batch_goes_one_by_one() {
    let (_guard, db) = migrated_db().await;
    let prefix = TopicPrefix::new();
    let kafka = kafka_client(&kafka_brokers(), &prefix.0, &[TOPIC]).await;
    // All waiting before the consumer starts: 300 good events, with a poison one, one that
    // fails every attempt and a twice-sent one among them, and one that never batches.
    let good = |n: usize| Envelope::new(TOPIC, json!({"n": n}), Utc::now());
    let twice = good(0);
    let mut payloads: Vec<(&str, Vec<u8>)> = (1..300)
        .map(|n| ("key", serde_json::to_vec(&good(n)).unwrap()))
        .collect();
    payloads.insert(40, ("key", b"{not json".to_vec()));
    payloads.insert(
        120,
        (
            "key",
            serde_json::to_vec(&Envelope::new(TOPIC, json!({"fail": true}), Utc::now())).unwrap(),
        ),
    );
    payloads.insert(150, ("key", serde_json::to_vec(&twice).unwrap()));
    payloads.insert(151, ("key", serde_json::to_vec(&twice).unwrap()));
    payloads.insert(200, ("alone", serde_json::to_vec(&good(1000)).unwrap()));
    for (key, payload) in &payloads {
        kafka
            .send(&kafka.topic(TOPIC), key, payload, OwnedHeaders::new())
            .await
            .unwrap();
    }

    let batches = Arc::new(std::sync::Mutex::new(Vec::new()));
    let run = consume(
        &kafka,
        "g",
        BatchingHandler {
            inner: RecordingHandler {
                db: db.clone(),
                failing: Arc::default(),
            },
            batches: batches.clone(),
        },
    );
    let sent = payloads.len() as u64;
    eventually("every message dealt with", Duration::from_secs(60), || {
        let s = run.stats.clone();
        async move {
            (s.handled.load(Ordering::SeqCst) + s.dead_lettered.load(Ordering::SeqCst) == sent)
                .then_some(())
        }
    })
    .await;
    // Each good event's effect once (the twice-sent one too), the two bad ones parked.
    assert_eq!(count(&db, "SELECT count(*) AS n FROM effects").await, 301);
    assert_eq!(run.stats.dead_lettered.load(Ordering::SeqCst), 2);
    assert_eq!(run.stats.handled.load(Ordering::SeqCst), sent - 2);
    // Messages that waited together were handled together (the consumer of old called the
    // handler once a message, and never with a batch).
    let batches = batches.lock().unwrap().clone();
    assert!(!batches.is_empty(), "no batch at all");
    let batched: usize = batches.iter().sum();
    assert!(batched > 100, "{batched} messages in batches: {batches:?}");
    run.cancel.cancel();
    run.task.await.unwrap();
}

#[tokio::test]
async fn a_failing_handler_does_not_commit_the_offset() {
    let (_guard, db) = migrated_db().await;
    let prefix = TopicPrefix::new();
    let mut cfg = crate::helpers::kafka_config(&kafka_brokers(), &prefix.0);
    cfg.consumer_max_attempts = 1000;
    let kafka = KafkaClient::new(&cfg).unwrap();
    kafka.ensure_topics(&[TOPIC]).await.unwrap();
    produce(
        &kafka,
        &serde_json::to_vec(&Envelope::new(TOPIC, json!({}), Utc::now())).unwrap(),
    )
    .await;

    let failing = Arc::new(AtomicBool::new(true));
    let first = consume(
        &kafka,
        "g",
        RecordingHandler {
            db: db.clone(),
            failing: failing.clone(),
        },
    );
    eventually(
        "the handler to fail a few times",
        Duration::from_secs(30),
        || {
            let s = first.stats.clone();
            async move { (s.failed_attempts.load(Ordering::SeqCst) >= 3).then_some(()) }
        },
    )
    .await;
    first.cancel.cancel();
    first.task.await.unwrap();
    assert_eq!(first.stats.handled.load(Ordering::SeqCst), 0);

    // A new member of the same group gets the same message again: nothing was committed.
    failing.store(false, Ordering::SeqCst);
    let second = consume(
        &kafka,
        "g",
        RecordingHandler {
            db: db.clone(),
            failing,
        },
    );
    eventually(
        "the message to be redelivered and handled",
        Duration::from_secs(40),
        || {
            let s = second.stats.clone();
            async move { (s.handled.load(Ordering::SeqCst) == 1).then_some(()) }
        },
    )
    .await;
    assert_eq!(count(&db, "SELECT count(*) AS n FROM effects").await, 1);
    second.cancel.cancel();
    second.task.await.unwrap();
}

#[tokio::test]
async fn poison_messages_land_in_the_dlq_and_the_line_keeps_moving() {
    let (_guard, db) = migrated_db().await;
    let prefix = TopicPrefix::new();
    let kafka = kafka_client(&kafka_brokers(), &prefix.0, &[TOPIC]).await;
    produce(&kafka, b"{definitely not json").await;
    produce(
        &kafka,
        &serde_json::to_vec(&Envelope::new(TOPIC, json!({"fail": true}), Utc::now())).unwrap(),
    )
    .await;
    let good = Envelope::new(TOPIC, json!({"ok": true}), Utc::now());
    produce(&kafka, &serde_json::to_vec(&good).unwrap()).await;

    let run = consume(
        &kafka,
        "g",
        RecordingHandler {
            db: db.clone(),
            failing: Arc::default(),
        },
    );
    eventually(
        "the good message behind the poison to be handled",
        Duration::from_secs(30),
        || {
            let s = run.stats.clone();
            async move { (s.handled.load(Ordering::SeqCst) == 1).then_some(()) }
        },
    )
    .await;
    assert_eq!(run.stats.dead_lettered.load(Ordering::SeqCst), 2);
    assert_eq!(
        run.stats.failed_attempts.load(Ordering::SeqCst),
        3,
        "retried up to CONSUMER_MAX_ATTEMPTS"
    );

    let dlq = read_topic(
        &kafka_brokers(),
        &kafka.topic(&format!("{TOPIC}.dlq")),
        Duration::from_secs(4),
    )
    .await;
    assert_eq!(dlq.len(), 2);
    assert_eq!(dlq[0].0, b"{definitely not json");
    let header = |i: usize, k: &str| {
        dlq[i]
            .1
            .iter()
            .find(|(hk, _)| hk == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert!(header(0, "dlq.error").contains("undecodable"));
    assert!(header(1, "dlq.error").contains("told to fail"));
    assert_eq!(header(1, "dlq.attempts"), "3");
    assert_eq!(header(1, "dlq.source.topic"), kafka.topic(TOPIC));
    run.cancel.cancel();
    run.task.await.unwrap();
}

#[tokio::test]
async fn an_unavailable_dependency_is_waited_out_and_never_dead_lettered() {
    let (_guard, db) = migrated_db().await;
    let prefix = TopicPrefix::new();
    // CONSUMER_MAX_ATTEMPTS is 3 here.
    let kafka = kafka_client(&kafka_brokers(), &prefix.0, &[TOPIC]).await;
    produce(
        &kafka,
        &serde_json::to_vec(&Envelope::new(TOPIC, json!({"n": 1}), Utc::now())).unwrap(),
    )
    .await;
    let down = Arc::new(AtomicBool::new(true));
    let run = consume(
        &kafka,
        "g",
        DependentHandler {
            inner: RecordingHandler {
                db: db.clone(),
                failing: Arc::default(),
            },
            down: down.clone(),
        },
    );
    eventually(
        "far more attempts than CONSUMER_MAX_ATTEMPTS",
        Duration::from_secs(30),
        || {
            let s = run.stats.clone();
            async move { (s.failed_attempts.load(Ordering::SeqCst) >= 8).then_some(()) }
        },
    )
    .await;
    assert_eq!(run.stats.dead_lettered.load(Ordering::SeqCst), 0);
    assert_eq!(run.stats.handled.load(Ordering::SeqCst), 0);

    // The dependency returns: the effect happens, once, and nothing was parked.
    down.store(false, Ordering::SeqCst);
    eventually("the event handled", Duration::from_secs(30), || {
        let s = run.stats.clone();
        async move { (s.handled.load(Ordering::SeqCst) == 1).then_some(()) }
    })
    .await;
    assert_eq!(count(&db, "SELECT count(*) AS n FROM effects").await, 1);
    assert_eq!(run.stats.dead_lettered.load(Ordering::SeqCst), 0);
    let dlq = read_topic(
        &kafka_brokers(),
        &kafka.topic(&format!("{TOPIC}.dlq")),
        Duration::from_secs(2),
    )
    .await;
    assert!(dlq.is_empty(), "nothing dead-lettered");
    run.cancel.cancel();
    run.task.await.unwrap();
}

/// Handles each event a while after it came, so that completions, and the offset commits
/// they cause, keep happening while the broker is frozen.
struct SlowHandler(RecordingHandler);

impl EventHandler for SlowHandler {
    async fn handle(&self, msg: &Incoming) -> Result<(), HandlerError> {
        tokio::time::sleep(Duration::from_millis(700)).await;
        self.0.handle(msg).await
    }
}

/// A broker frozen for longer than the session timeout (SIGSTOP, as a host stalling a VM
/// does) comes back having expired every member of the group at once, while their offset
/// commits of the frozen seconds are still unanswered. The members must notice, rejoin and go
/// on consuming: a chaos rehearsal once saw them wait on those commits, consuming nothing.
#[tokio::test]
async fn consumers_rejoin_and_go_on_after_the_broker_was_frozen_past_the_session_timeout() {
    // The consumers' own account (rebalances, commits, fetch errors), shown only if this fails.
    let _log = tracing_subscriber::fmt()
        .with_env_filter("common=debug,rdkafka=info")
        .with_test_writer()
        .set_default();
    let broker = PrivateBroker::start().await;
    let (_guard, db) = migrated_db().await;
    let prefix = format!("{}.", unique_id());
    let kafka = kafka_client(&broker.brokers, &prefix, &[TOPIC]).await;
    let handler = || {
        SlowHandler(RecordingHandler {
            db: db.clone(),
            failing: Arc::default(),
        })
    };
    let effects = |n: i64| {
        let db = db.clone();
        move || {
            let db = db.clone();
            async move { (count(&db, "SELECT count(*) AS n FROM effects").await >= n).then_some(()) }
        }
    };
    // Two members, as two replicas of a service are.
    let runs = [
        consume(&kafka, "g", handler()),
        consume(&kafka, "g", handler()),
    ];
    let event =
        |n: i32| serde_json::to_vec(&Envelope::new(TOPIC, json!({"n": n}), Utc::now())).unwrap();
    produce(&kafka, &event(0)).await;
    eventually("the group consuming", Duration::from_secs(60), effects(1)).await;

    // Four events of one key, handled one after the other; the freeze comes after the first.
    for n in 1..=4 {
        produce(&kafka, &event(n)).await;
    }
    eventually(
        "the first of four handled",
        Duration::from_secs(30),
        effects(2),
    )
    .await;
    broker.pause();
    // Three session timeouts (10 s each): every member is expired when the broker resumes.
    tokio::time::sleep(Duration::from_secs(30)).await;
    broker.resume();

    produce(&kafka, &event(5)).await;
    // A redelivery counts as handled too (the inbox skips it): the effects table says whether
    // every event came, once.
    eventually(
        "every event, the one sent after the freeze too, handled",
        Duration::from_secs(120),
        effects(6),
    )
    .await;
    assert_eq!(count(&db, "SELECT count(*) AS n FROM effects").await, 6);
    for run in runs {
        run.cancel.cancel();
        run.task.await.unwrap();
    }
    delete_kafka_prefix(&broker.brokers, &prefix).await;
}
