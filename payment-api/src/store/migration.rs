//! The payment database schema.

use common::migration::SqlMigration;
use sea_orm_migration::prelude::*;

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            common::migration::outbox_inbox(),
            Box::new(SqlMigration {
                name: "m20261124_000001_wallets_ledger_payments",
                up: SCHEMA,
            }),
            common::migration::outbox_trace_context(),
        ]
    }
}

/// Money is bigint (whole KRW). `balance >= 0` is a constraint, so no code path can make a
/// wallet negative; the ledger is append-only and every balance change writes one row of it
/// in the same transaction, so for every user balance = CHARGE + REFUND - PAYMENT.
const SCHEMA: &str = r#"
CREATE TABLE wallets (
    user_id    bigint PRIMARY KEY,
    balance    bigint NOT NULL DEFAULT 0 CHECK (balance >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledger (
    id            bigserial PRIMARY KEY,
    user_id       bigint NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('CHARGE', 'PAYMENT', 'REFUND')),
    amount        bigint NOT NULL CHECK (amount > 0),
    balance_after bigint NOT NULL CHECK (balance_after >= 0),
    ref           text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_user ON ledger (user_id, id DESC);

CREATE TABLE payments (
    id              bigserial PRIMARY KEY,
    user_id         bigint NOT NULL,
    reservation_id  bigint NOT NULL UNIQUE,
    amount          bigint NOT NULL CHECK (amount > 0),
    status          text NOT NULL CHECK (status IN ('COMPLETED', 'REFUNDED')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    refunded_at     timestamptz,
    -- Bookkeeping for reconciliation: when concert-api's confirmation was seen, and when
    -- payment.completed was last re-published for a reservation that never settled.
    confirmed_at    timestamptz,
    republished_at  timestamptz
);
CREATE INDEX payments_user ON payments (user_id, id DESC);
CREATE INDEX payments_unsettled ON payments (created_at) WHERE status = 'COMPLETED' AND confirmed_at IS NULL;

CREATE TABLE idempotency_keys (
    user_id       bigint NOT NULL,
    key           text NOT NULL,
    request_hash  text NOT NULL,
    status_code   integer,
    response_body jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
"#;
