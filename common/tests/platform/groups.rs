//! Consumer groups that heal, against the real broker: consumer processes (`event-sink`,
//! common's consumer loop with the inbox) are killed with SIGKILL, scaled out and in, and
//! restarted one by one while events stream in — and every event has its effect exactly once.
//!
//! Each test prints how long the partitions of a departed member took to be consumed again
//! (the figure the crash drill depends on); the assertions are on counts, never on time.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::kafka::{Envelope, KafkaClient};
use common::testkit::{TestDatabase, TopicPrefix, eventually, kafka_brokers};
use rdkafka::message::OwnedHeaders;
use sea_orm::{ConnectionTrait, DatabaseConnection, FromQueryResult, Statement};
use serde_json::json;

const TOPIC: &str = "events";
const PARTITIONS: &str = "4";
/// The broker's smallest session timeout: a dead member is evicted after this long.
const SESSION_TIMEOUT_MS: &str = "6000";
/// How long a test waits for partitions to reach a member after the group changed. A
/// rebalance usually settles within a session timeout or two; when librdkafka gets stuck in
/// one, the consumer replaces its member after six session timeouts (36 s here) and the new
/// member joins another rebalance, so a shorter wait would fail on the recovery the test
/// exists to prove. A bound on liveness, not a figure: the takeover time is printed.
const REBALANCE_DEADLINE: Duration = Duration::from_secs(120);

/// One `event-sink` process; SIGTERM on drop if still running.
struct Sink {
    child: Child,
}

impl Sink {
    fn start(member: &str, db: &TestDatabase, prefix: &TopicPrefix) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_event-sink"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SINK_DATABASE_URL", &db.url)
            .env("SINK_MEMBER", member)
            .env("DATABASE_POOL_SIZE", "4")
            .env("KAFKA_BROKERS", kafka_brokers())
            .env("KAFKA_TOPIC_PREFIX", &prefix.0)
            .env("KAFKA_TOPIC_PARTITIONS", PARTITIONS)
            .env("KAFKA_SESSION_TIMEOUT_MS", SESSION_TIMEOUT_MS)
            .env("CONSUMER_BACKOFF_MS", "20")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start event-sink");
        Self { child }
    }

    fn signal(&mut self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status();
    }

    /// SIGKILL: no LeaveGroup, no offset commit, a transaction possibly half done.
    fn crash(&mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }

    /// SIGTERM and wait: the graceful stop of a rolling restart.
    async fn stop(mut self) {
        self.signal("-TERM");
        let child = &mut self.child;
        eventually("event-sink to exit", Duration::from_secs(30), || {
            let exited = matches!(child.try_wait(), Ok(Some(_)));
            async move { exited.then_some(()) }
        })
        .await;
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal("-TERM");
            let _ = self.child.wait();
        }
    }
}

/// Produces events (seq 0, 1, …, keys spread over partitions) at a steady pace until told
/// to finish, so events are still streaming whenever a test crashes, stops or adds a
/// member, however long the group took to settle first; the count produced so far is
/// readable while it runs.
struct Stream {
    produced: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<i64>,
}

impl Stream {
    async fn start(prefix: &TopicPrefix, per_tick: i64) -> Self {
        let brokers = kafka_brokers();
        let env = common::config::Env::from_pairs([
            ("KAFKA_BROKERS", brokers.as_str()),
            ("KAFKA_TOPIC_PREFIX", prefix.0.as_str()),
            ("KAFKA_TOPIC_PARTITIONS", PARTITIONS),
        ]);
        let kafka =
            KafkaClient::new(&common::config::KafkaConfig::from_env(&env).unwrap()).unwrap();
        kafka.ensure_topics(&[TOPIC]).await.unwrap();
        let (produced, stop) = (
            Arc::new(AtomicI64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (p, s) = (produced.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let topic = kafka.topic(TOPIC);
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            let mut seq = 0;
            while !s.load(Ordering::SeqCst) {
                tick.tick().await;
                for _ in 0..per_tick {
                    let event = Envelope::new(TOPIC, json!({"seq": seq}), Utc::now());
                    let payload = serde_json::to_vec(&event).unwrap();
                    kafka
                        .send(
                            &topic,
                            &format!("k{}", seq % 64),
                            &payload,
                            OwnedHeaders::new(),
                        )
                        .await
                        .unwrap();
                    seq += 1;
                    p.store(seq, Ordering::SeqCst);
                }
            }
            seq
        });
        Self {
            produced,
            stop,
            task,
        }
    }

    /// Goes on until at least `at_least` events were produced, then stops; returns how
    /// many were.
    async fn finish(self, at_least: i64) -> i64 {
        let produced = &self.produced;
        eventually(
            &format!("{at_least} events produced"),
            Duration::from_secs(120),
            || async move { (produced.load(Ordering::SeqCst) >= at_least).then_some(()) },
        )
        .await;
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap()
    }
}

#[derive(FromQueryResult)]
struct Tally {
    total: i64,
    distinct_events: i64,
    distinct_seqs: i64,
}

async fn tally(db: &DatabaseConnection) -> Tally {
    Tally::find_by_statement(Statement::from_string(
        db.get_database_backend(),
        "SELECT count(*) AS total, count(DISTINCT event_id) AS distinct_events, \
         count(DISTINCT seq) AS distinct_seqs FROM effects",
    ))
    .one(db)
    .await
    .ok()
    .flatten()
    .unwrap_or(Tally {
        total: 0,
        distinct_events: 0,
        distinct_seqs: 0,
    })
}

async fn scalar(db: &DatabaseConnection, sql: &str) -> i64 {
    #[derive(FromQueryResult)]
    struct N {
        n: Option<i64>,
    }
    N::find_by_statement(Statement::from_string(db.get_database_backend(), sql))
        .one(db)
        .await
        .ok()
        .flatten()
        .and_then(|r| r.n)
        .unwrap_or(0)
}

async fn handled_by(db: &DatabaseConnection, member: &str) -> i64 {
    scalar(
        db,
        &format!("SELECT count(*) AS n FROM effects WHERE member = '{member}'"),
    )
    .await
}

/// Waits until `member` has handled at least `n` events (it holds partitions and works).
async fn until_handling(db: &DatabaseConnection, member: &str, n: i64) {
    eventually(
        &format!("{member} to handle {n} events"),
        REBALANCE_DEADLINE,
        || async move { (handled_by(db, member).await >= n).then_some(()) },
    )
    .await;
}

/// Every produced event has exactly one effect.
async fn assert_exactly_once(db: &DatabaseConnection, total: i64) {
    eventually(
        &format!("all {total} events handled"),
        Duration::from_secs(120),
        || async move { (tally(db).await.distinct_seqs == total).then_some(()) },
    )
    .await;
    // Redeliveries still in flight would show up now, not later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = tally(db).await;
    assert_eq!(t.distinct_seqs, total, "every event has its effect");
    assert_eq!(t.distinct_events, total, "one event id per event");
    assert_eq!(t.total, total, "no effect applied twice");
}

/// How long after `since` the partitions `member` was handling were consumed again by
/// another member: the time a departed member's partitions take to move.
async fn takeover_after(db: &DatabaseConnection, member: &str, since: DateTime<Utc>) -> f64 {
    let sql = format!(
        "SELECT (EXTRACT(EPOCH FROM (min(e.handled_at) - '{since}'::timestamptz)) * 1000)::bigint AS n \
         FROM effects e WHERE e.member <> '{member}' AND e.handled_at > '{since}'::timestamptz \
         AND e.part IN (SELECT DISTINCT part FROM effects WHERE member = '{member}' \
                        AND handled_at <= '{since}'::timestamptz)",
        since = since.to_rfc3339(),
    );
    scalar(db, &sql).await as f64 / 1000.0
}

async fn migrated(db: &TestDatabase) -> DatabaseConnection {
    // The sink creates its tables; wait until the first one has.
    let conn = db.connect().await;
    eventually("the sink's tables", Duration::from_secs(60), || {
        let conn = conn.clone();
        async move {
            conn.execute_unprepared("SELECT 1 FROM effects LIMIT 1")
                .await
                .ok()
                .map(|_| ())
        }
    })
    .await;
    conn
}

/// Two members `a` and `b` of one group, both working, while events stream in.
struct Group {
    db: TestDatabase,
    prefix: TopicPrefix,
    conn: DatabaseConnection,
    a: Sink,
    b: Sink,
    stream: Stream,
}

impl Group {
    async fn streaming() -> Self {
        let (db, prefix) = (TestDatabase::create().await, TopicPrefix::new());
        let a = Sink::start("a", &db, &prefix);
        let b = Sink::start("b", &db, &prefix);
        let conn = migrated(&db).await;
        let stream = Stream::start(&prefix, 10).await;
        until_handling(&conn, "a", 100).await;
        until_handling(&conn, "b", 100).await;
        Self {
            db,
            prefix,
            conn,
            a,
            b,
            stream,
        }
    }
}

#[tokio::test]
async fn a_consumer_killed_mid_stream_loses_nothing_and_its_partitions_move() {
    const AT_LEAST: i64 = 3000;
    let Group {
        db,
        prefix,
        conn,
        mut a,
        b,
        stream,
    } = Group::streaming().await;

    let killed_at = Utc::now();
    a.crash();
    let before = stream.produced.load(Ordering::SeqCst);
    eventually("a's partitions consumed by b", REBALANCE_DEADLINE, || {
        let conn = &conn;
        async move { (takeover_after(conn, "a", killed_at).await > 0.0).then_some(()) }
    })
    .await;
    let moved = takeover_after(&conn, "a", killed_at).await;
    eprintln!(
        "[groups] SIGKILL of a consumer after {before} events: its partitions were \
         consumed again {moved:.1} s later (session timeout {SESSION_TIMEOUT_MS} ms)"
    );

    // The killed process comes back (as `stack.sh up` would restart it) and rejoins.
    let restarted = Sink::start("a2", &db, &prefix);
    until_handling(&conn, "a2", 1).await;
    let total = stream.finish(AT_LEAST).await;
    assert_exactly_once(&conn, total).await;
    drop((b, restarted));
}

#[tokio::test]
async fn a_third_replica_joining_and_leaving_mid_stream_loses_nothing() {
    const AT_LEAST: i64 = 3000;
    let Group {
        db,
        prefix,
        conn,
        a,
        b,
        stream,
    } = Group::streaming().await;

    let c = Sink::start("c", &db, &prefix);
    until_handling(&conn, "c", 50).await;
    let left_at = Utc::now();
    c.stop().await;
    eventually(
        "c's partitions consumed by a or b",
        REBALANCE_DEADLINE,
        || {
            let conn = &conn;
            async move { (takeover_after(conn, "c", left_at).await > 0.0).then_some(()) }
        },
    )
    .await;
    eprintln!(
        "[groups] a replica that left gracefully: its partitions were consumed again {:.1} s later",
        takeover_after(&conn, "c", left_at).await
    );
    let total = stream.finish(AT_LEAST).await;
    assert_exactly_once(&conn, total).await;
    assert!(handled_by(&conn, "a").await > 0 && handled_by(&conn, "b").await > 0);
    drop((a, b));
}

#[tokio::test]
async fn a_rolling_restart_of_two_replicas_loses_nothing() {
    const AT_LEAST: i64 = 5000;
    let Group {
        db,
        prefix,
        conn,
        a,
        b,
        stream,
    } = Group::streaming().await;

    // One replica at a time: stop it, start its successor, wait until the successor works.
    a.stop().await;
    let a2 = Sink::start("a2", &db, &prefix);
    until_handling(&conn, "a2", 50).await;
    b.stop().await;
    let b2 = Sink::start("b2", &db, &prefix);
    until_handling(&conn, "b2", 50).await;

    let total = stream.finish(AT_LEAST).await;
    assert_exactly_once(&conn, total).await;
    assert_eq!(
        handled_by(&conn, "a").await
            + handled_by(&conn, "b").await
            + handled_by(&conn, "a2").await
            + handled_by(&conn, "b2").await,
        total
    );
    drop((a2, b2));
}
