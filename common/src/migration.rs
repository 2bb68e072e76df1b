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
