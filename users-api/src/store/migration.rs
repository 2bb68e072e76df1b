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
        ]
    }
}
