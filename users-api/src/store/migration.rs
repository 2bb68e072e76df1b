//! The users database schema.

use common::migration::SqlMigration;
use sea_orm_migration::prelude::*;

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            common::migration::outbox_inbox(),
            Box::new(SqlMigration {
                name: "m20261124_000001_users",
                up: r#"
CREATE TABLE users (
    id            bigserial PRIMARY KEY,
    username      text NOT NULL UNIQUE CHECK (username ~ '^[a-z0-9_]{3,32}$'),
    password_hash text NOT NULL,
    role          text NOT NULL DEFAULT 'USER' CHECK (role IN ('USER', 'ADMIN')),
    created_at    timestamptz NOT NULL DEFAULT now()
);
"#,
            }),
            Box::new(SqlMigration {
                name: "m20261202_000001_admin_audit",
                up: r#"
CREATE TABLE admin_audit (
    id             bigserial PRIMARY KEY,
    actor_id       bigint NOT NULL,
    actor_username text NOT NULL,
    at             timestamptz NOT NULL,
    action         text NOT NULL,
    target         text NOT NULL,
    before         jsonb NOT NULL,
    after          jsonb NOT NULL
);
CREATE INDEX admin_audit_target_at ON admin_audit (target, at);
"#,
            }),
            Box::new(SqlMigration {
                name: "m20261215_000001_queue_rooms",
                up: r#"
-- Each waiting room's organiser settings (DESIGN §10): the source of truth the Redis hash
-- `queue:{c<id>}:settings` is restored from when Redis loses it. A NULL capacity is the env
-- default. SOLD_OUT is not kept here: it is judged from concert-api's inventory.
CREATE TABLE queue_rooms (
    concert_id     bigint PRIMARY KEY CHECK (concert_id > 0),
    paused         boolean NOT NULL DEFAULT false,
    max_active     bigint CHECK (max_active BETWEEN 1 AND 100000),
    admit_per_tick bigint CHECK (admit_per_tick BETWEEN 1 AND 10000),
    sale_opens_at  timestamptz,
    seed           text CHECK (seed ~ '^[0-9a-f]{64}$'),
    commitment     text CHECK (commitment ~ '^[0-9a-f]{64}$'),
    drawn_at       timestamptz,
    updated_at     timestamptz NOT NULL,
    CHECK ((seed IS NULL) = (commitment IS NULL))
);
-- Rooms whose lottery is still to draw: admission ticks them even with nobody in line.
CREATE INDEX queue_rooms_undrawn ON queue_rooms (concert_id)
    WHERE commitment IS NOT NULL AND drawn_at IS NULL;
"#,
            }),
            common::migration::outbox_trace_context(),
            common::migration::inbox_received(),
            common::migration::outbox_vacuum(),
            common::migration::outbox_without_key_index(),
        ]
    }
}
