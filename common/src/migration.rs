//! Migrations written as plain PostgreSQL, plus the outbox and inbox tables every service has.
//!
//! Plain SQL keeps the schema readable in one place (constraints, partial indexes, checks)
//! while sea-orm-migration tracks what has been applied.

use sea_orm_migration::prelude::*;

/// A migration given as SQL statements, run in one transaction.
pub struct SqlMigration {
    pub name: &'static str,
    pub up: &'static str,
}

impl MigrationName for SqlMigration {
    fn name(&self) -> &str {
        self.name
    }
}

#[async_trait::async_trait]
impl MigrationTrait for SqlMigration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(self.up).await?;
        Ok(())
    }
}

/// `outbox` (events waiting to be published) and `inbox` (events already handled, per consumer).
pub fn outbox_inbox() -> Box<dyn MigrationTrait> {
    Box::new(SqlMigration {
        name: "m20261124_000000_outbox_inbox",
        up: r#"
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    event_id     uuid NOT NULL UNIQUE,
    topic        text NOT NULL,
    key          text NOT NULL,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
-- The relay only ever reads unpublished rows, in id order.
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_pending_key ON outbox (key, id) WHERE published_at IS NULL;

CREATE TABLE inbox (
    event_id    uuid NOT NULL,
    consumer    text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, consumer)
);
"#,
    })
}

/// `outbox.traceparent`: the W3C trace context of the transaction that wrote the event (NULL
/// when traces are off), which the relay puts in the message's headers.
pub fn outbox_trace_context() -> Box<dyn MigrationTrait> {
    Box::new(SqlMigration {
        name: "m20261216_000001_outbox_trace_context",
        up: "ALTER TABLE outbox ADD COLUMN traceparent text",
    })
}

/// `inbox_received`: batch's cleanup deletes the inbox rows received more than a week ago
/// every minute; without an index each run read the whole inbox (a week of events) to find
/// the minute's worth (130–230 ms each for 470,000–520,000 rows). Received times only grow, so the
/// index is written at its right-hand end.
pub fn inbox_received() -> Box<dyn MigrationTrait> {
    Box::new(SqlMigration {
        name: "m20261205_000002_inbox_received",
        up: "CREATE INDEX inbox_received ON inbox (received_at)",
    })
}

/// The outbox is vacuumed after every 10,000 dead rows rather than PostgreSQL's default of a
/// fifth of the table. Each publish leaves the row's previous version dead, and until a
/// vacuum removes it, its entry stays in `outbox_pending`, which the relay walks from the
/// start at every poll. With a week of events kept, the default waited for 150,000 dead
/// rows: with 71,000 of them the relay read 1,198 pages a poll (1.47 ms), against 232
/// (0.20 ms) just after a vacuum (pg_stat_statements, one flash sale each). A vacuum of the
/// outbox costs 0.2–0.3 s of CPU (`VACUUM (VERBOSE)` with 10,000 and 65,000 dead rows), about
/// once a 5,000-seat sale.
pub fn outbox_vacuum() -> Box<dyn MigrationTrait> {
    Box::new(SqlMigration {
        name: "m20261205_000003_outbox_vacuum",
        up: "ALTER TABLE outbox SET \
             (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000)",
    })
}

/// `outbox_pending_key` goes: the relay's check for a key's earlier rows no longer looks them
/// up by key (it reads the few rows other relays hold, `outbox::publish_batch`), and no other
/// statement did. Every event written paid for its entry.
pub fn outbox_without_key_index() -> Box<dyn MigrationTrait> {
    Box::new(SqlMigration {
        name: "m20261207_000001_outbox_without_key_index",
        up: "DROP INDEX IF EXISTS outbox_pending_key",
    })
}
