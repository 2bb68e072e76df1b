//! A stand-alone consumer for the consumer-group tests (`common/tests/platform/groups.rs`):
//! common's `run_consumer` as group `sink` over the topic `events`, recording each event's
//! effect in `effects` together with its inbox row, in one transaction — what every service
//! consumer does, in a process a test can kill with SIGKILL.
//!
//! Settings: `SINK_DATABASE_URL` (its tables are created at start), `SINK_MEMBER` (a name
//! written with each effect), `SINK_HANDLE_MS` (work per event, default 2), and the usual
//! `KAFKA_*` and `CONSUMER_*` variables. Built only with the `testkit` feature.

use std::sync::Arc;
use std::time::Duration;

use common::config::{DatabaseConfig, Env, KafkaConfig, LogFormat};
use common::kafka::{ConsumerStats, Envelope, EventHandler, HandlerError, Incoming, KafkaClient};
use common::telemetry::LogTo;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use sea_orm_migration::{MigrationTrait, MigratorTrait};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub const TOPIC: &str = "events";

struct SinkMigrator;

impl MigratorTrait for SinkMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            common::migration::outbox_inbox(),
            common::migration::outbox_trace_context(),
            // No unique key on purpose: an effect applied twice must show as two rows.
            Box::new(common::migration::SqlMigration {
                name: "m20261202_000001_sink_effects",
                up: "CREATE TABLE effects (event_id uuid NOT NULL, seq bigint NOT NULL, \
                     part int NOT NULL, member text NOT NULL, \
                     handled_at timestamptz NOT NULL DEFAULT clock_timestamp())",
            }),
        ]
    }
}

struct Sink {
    db: DatabaseConnection,
    member: String,
    work: Duration,
}

impl EventHandler for Sink {
    async fn handle(&self, msg: &Incoming) -> Result<(), HandlerError> {
        let event: Envelope<Value> = msg.decode()?;
        common::inbox::once(&self.db, event.id, "sink", async |txn| {
            // Work inside the transaction widens the window in which a kill leaves an event
            // handled but its offset uncommitted: the case the inbox is for.
            tokio::time::sleep(self.work).await;
            txn.execute_raw(Statement::from_sql_and_values(
                txn.get_database_backend(),
                "INSERT INTO effects (event_id, seq, part, member) VALUES ($1, $2, $3, $4)",
                [
                    event.id.into(),
                    event.data["seq"].as_i64().unwrap_or(-1).into(),
                    msg.partition.into(),
                    self.member.clone().into(),
                ],
            ))
            .await
        })
        .await?;
        Ok(())
    }
}

async fn run(env: &Env) -> Result<(), String> {
    let db_cfg =
        DatabaseConfig::from_env(env, "SINK_DATABASE_URL", "sink").map_err(|e| e.to_string())?;
    let kafka_cfg = KafkaConfig::from_env(env).map_err(|e| e.to_string())?;
    let member = env.string("SINK_MEMBER", "sink");
    let work = env
        .millis("SINK_HANDLE_MS", 2, 0..=10_000)
        .map_err(|e| e.to_string())?;
    let db = common::db::connect(&db_cfg)
        .await
        .map_err(|e| e.to_string())?;
    common::db::migrate::<SinkMigrator>(&db, common::db::migration_lock_key("event-sink"))
        .await
        .map_err(|e| e.to_string())?;
    let kafka = KafkaClient::new(&kafka_cfg).map_err(|e| e.to_string())?;
    kafka
        .ensure_topics(&[TOPIC])
        .await
        .map_err(|e| e.to_string())?;
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        common::lifecycle::termination_signal().await;
        stop.cancel();
    });
    let sink = Sink { db, member, work };
    common::kafka::run_consumer(
        kafka,
        "sink",
        &[TOPIC],
        common::kafka::Delivery::AtOnce,
        sink,
        Arc::new(ConsumerStats::default()),
        cancel,
    )
    .await
    .map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::telemetry::init(LogFormat::Pretty, LogTo::Stdout, "event-sink", None);
    match run(&Env::process()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => common::startup::exit_with("event-sink", e),
    }
}
