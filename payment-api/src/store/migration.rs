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
            Box::new(SqlMigration {
                name: "m20261203_000001_archive",
                up: ARCHIVE,
            }),
            Box::new(SqlMigration {
                name: "m20261203_000002_ledger_by_month",
                up: LEDGER_BY_MONTH,
            }),
            Box::new(SqlMigration {
                name: "m20261204_000001_ledger_closed_months",
                up: LEDGER_CLOSED_MONTHS,
            }),
            Box::new(SqlMigration {
                name: "m20261205_000001_pay_at_once",
                up: PAY_AT_ONCE,
            }),
            common::migration::inbox_received(),
            common::migration::outbox_vacuum(),
            common::migration::outbox_without_key_index(),
            Box::new(SqlMigration {
                name: "m20261207_000001_pay_at_once_keeps_its_answer_at_once",
                up: PAY_AT_ONCE_ANSWER_WITH_KEY,
            }),
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

/// The archive of finished shows' payments (batch's archive job, `domain::archive`): the
/// payments of an archived schedule's reservations, same columns plus `archived_at`, no checks
/// (final rows, written once, only read). Indexed for the reads that still answer from it:
/// a user's payments, one payment, and "this reservation is already paid".
const ARCHIVE: &str = r#"
CREATE SCHEMA archive;

CREATE TABLE archive.payments (
    id             bigint PRIMARY KEY,
    user_id        bigint NOT NULL,
    reservation_id bigint NOT NULL UNIQUE,
    amount         bigint NOT NULL,
    status         text NOT NULL,
    created_at     timestamptz NOT NULL,
    refunded_at    timestamptz,
    confirmed_at   timestamptz,
    republished_at timestamptz,
    archived_at    timestamptz NOT NULL
);
CREATE INDEX archived_payments_user ON archive.payments (user_id, id DESC);
"#;

/// The ledger keeps every row forever, one partition per calendar month (UTC) of
/// `created_at`: a month is a table of its own (its own indexes, vacuum and dump), and a query
/// that names a time range reads only its months. The primary key must contain the partition
/// key, so it becomes `(id, created_at)`; ids still come from `ledger_id_seq`, unique by
/// themselves. `ledger_default` takes a row whose month has no partition yet, so an insert
/// never fails; batch's archive job creates each month ahead of time (`store::ledger`), and
/// moves such rows out of the default partition when it finds any.
///
/// Existing rows are copied in this migration's transaction (the ledger is locked meanwhile):
/// partitions from the month of the oldest row to the month after this one.
const LEDGER_BY_MONTH: &str = r#"
ALTER TABLE ledger RENAME TO ledger_unpartitioned;
ALTER INDEX ledger_pkey RENAME TO ledger_unpartitioned_pkey;
ALTER INDEX ledger_user RENAME TO ledger_unpartitioned_user;

CREATE TABLE ledger (
    id            bigint NOT NULL DEFAULT nextval('ledger_id_seq'),
    user_id       bigint NOT NULL,
    kind          text NOT NULL CONSTRAINT ledger_kind_check CHECK (kind IN ('CHARGE', 'PAYMENT', 'REFUND')),
    amount        bigint NOT NULL CONSTRAINT ledger_amount_check CHECK (amount > 0),
    balance_after bigint NOT NULL CONSTRAINT ledger_balance_after_check CHECK (balance_after >= 0),
    ref           text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
ALTER SEQUENCE ledger_id_seq OWNED BY ledger.id;
CREATE INDEX ledger_user ON ledger (user_id, id DESC);
CREATE TABLE ledger_default PARTITION OF ledger DEFAULT;

-- Months as UTC wall-clock timestamps, so the bounds do not depend on the session's time zone.
DO $$
DECLARE
    this_month timestamp := date_trunc('month', now() AT TIME ZONE 'UTC');
    month timestamp;
BEGIN
    SELECT least(coalesce(date_trunc('month', min(created_at) AT TIME ZONE 'UTC'), this_month), this_month)
        INTO month FROM ledger_unpartitioned;
    WHILE month <= this_month + interval '1 month' LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF ledger FOR VALUES FROM (%L) TO (%L)',
            to_char(month, '"ledger_y"YYYY"m"MM'),
            month::text || '+00', (month + interval '1 month')::text || '+00');
        month := month + interval '1 month';
    END LOOP;
END $$;

INSERT INTO ledger (id, user_id, kind, amount, balance_after, ref, created_at)
SELECT id, user_id, kind, amount, balance_after, ref, created_at FROM ledger_unpartitioned;
DROP TABLE ledger_unpartitioned;
"#;

/// A month of the ledger is closed once it has been over for a day (`store::ledger::close`):
/// its totals, and each wallet's, are added up once and kept here, and its partition refuses
/// any change from then on. The invariant watchdog then reads only the open months beside
/// these totals, so what it costs does not grow with the years of history.
///
/// `ledger_closed` is one row: every ledger row dated before `before` is counted in its
/// totals (`-infinity`: nothing is closed yet). `ledger_closed_wallets` holds, per wallet with
/// such rows, their sum (CHARGE + REFUND − PAYMENT) and the `balance_after` of the last one.
/// The DEFAULT partition takes a row of a month that has no partition; its trigger refuses
/// one dated before `before`. A closed month's partition gets `ledger_month_closed` (below),
/// which refuses every insert, update and delete.
const LEDGER_CLOSED_MONTHS: &str = r#"
CREATE TABLE ledger_closed (
    one_row  boolean PRIMARY KEY DEFAULT true CONSTRAINT ledger_closed_one_row CHECK (one_row),
    before   timestamptz NOT NULL,
    charged  bigint NOT NULL,
    paid     bigint NOT NULL,
    refunded bigint NOT NULL
);
INSERT INTO ledger_closed (before, charged, paid, refunded) VALUES ('-infinity', 0, 0, 0);

CREATE TABLE ledger_closed_wallets (
    user_id       bigint PRIMARY KEY,
    total         bigint NOT NULL,
    balance_after bigint NOT NULL
);

CREATE FUNCTION ledger_month_closed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger: % is a closed month; its rows never change', TG_TABLE_NAME
        USING ERRCODE = 'check_violation';
END $$;

CREATE FUNCTION ledger_default_not_closed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.created_at < (SELECT before FROM ledger_closed) THEN
        RAISE EXCEPTION 'ledger: a row dated % is in a closed month', NEW.created_at
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER ledger_default_not_closed BEFORE INSERT ON ledger_default
    FOR EACH ROW EXECUTE FUNCTION ledger_default_not_closed();
"#;

/// A payment that goes through, as one call and so one round trip instead of six (BEGIN, the
/// key's claim, the payment with its debit, the outbox row, the key's answer, COMMIT): see
/// `store::payments::pay_at_once`, which says why it is safe under concurrency. It does the
/// same statements in the same order as the transaction it stands for, and does them all or
/// none: whatever else it meets (a key already there, a payment already there, a wallet too
/// short) it raises `PAY_AT_ONCE_DECLINED` (SQLSTATE `TKP01`) so that its whole transaction
/// rolls back, and the caller takes the general path. The event's id is `payment.completed`'s
/// id for the new payment (`events::completed_event_id`: `_event_high` is its first 16 hex
/// digits, `_event_low` the bits of the second half above the payment id).
const PAY_AT_ONCE: &str = r#"
CREATE FUNCTION pay_at_once(
    _user bigint, _key text, _request_hash text, _reservation bigint, _amount bigint,
    _paid_at timestamptz, _topic text, _event jsonb, _event_high text, _event_low bigint,
    _traceparent text, _answer jsonb)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $fn$
DECLARE
    _id bigint;
    _balance bigint;
    _event_id uuid;
BEGIN
    IF _key IS NOT NULL THEN
        INSERT INTO idempotency_keys (user_id, key, request_hash) VALUES (_user, _key, _request_hash)
            ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'TKP01', MESSAGE = 'PAY_AT_ONCE_DECLINED: the key is taken';
        END IF;
    END IF;
    INSERT INTO payments (user_id, reservation_id, amount, status, created_at)
        VALUES (_user, _reservation, _amount, 'COMPLETED', _paid_at)
        ON CONFLICT (reservation_id) DO NOTHING
        RETURNING payments.id INTO _id;
    IF _id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'TKP01', MESSAGE = 'PAY_AT_ONCE_DECLINED: already paid';
    END IF;
    UPDATE wallets SET balance = balance - _amount, updated_at = _paid_at
        WHERE user_id = _user AND balance >= _amount
        RETURNING balance INTO _balance;
    IF _balance IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'TKP01', MESSAGE = 'PAY_AT_ONCE_DECLINED: the wallet is short';
    END IF;
    INSERT INTO ledger (user_id, kind, amount, balance_after, ref, created_at)
        VALUES (_user, 'PAYMENT', _amount, _balance, 'payment:' || _id, _paid_at);
    _event_id := (_event_high || lpad(to_hex(_event_low | _id), 16, '0'))::uuid;
    INSERT INTO outbox (event_id, topic, key, payload, traceparent)
        VALUES (_event_id, _topic, _reservation::text,
                jsonb_set(jsonb_set(_event, '{id}', to_jsonb(_event_id)), '{data,payment_id}', to_jsonb(_id)),
                _traceparent);
    IF _key IS NOT NULL THEN
        UPDATE idempotency_keys SET status_code = 201, response_body = jsonb_set(_answer, '{id}', to_jsonb(_id))
            WHERE user_id = _user AND key = _key;
    END IF;
    RETURN _id;
END
$fn$;
"#;

/// `pay_at_once` again, writing the key's row once: the payment's id is drawn from its
/// sequence first, so the key is claimed with its 201 answer (id filled in) in its insert,
/// instead of an insert and then an update of the same row (a second row version and its WAL,
/// a payment a key). The rest is unchanged, in the same order: the key's claim, the payment,
/// the debit, the ledger row, the outbox row; locks are taken in the same order as before.
/// A declined call rolls back whole as before; the id it drew is lost, as a rolled-back
/// insert's would be.
const PAY_AT_ONCE_ANSWER_WITH_KEY: &str = r#"
CREATE OR REPLACE FUNCTION pay_at_once(
    _user bigint, _key text, _request_hash text, _reservation bigint, _amount bigint,
    _paid_at timestamptz, _topic text, _event jsonb, _event_high text, _event_low bigint,
    _traceparent text, _answer jsonb)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $fn$
DECLARE
    _id bigint := nextval('payments_id_seq');
    _balance bigint;
    _event_id uuid;
BEGIN
    IF _key IS NOT NULL THEN
        INSERT INTO idempotency_keys (user_id, key, request_hash, status_code, response_body)
            VALUES (_user, _key, _request_hash, 201, jsonb_set(_answer, '{id}', to_jsonb(_id)))
            ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'TKP01', MESSAGE = 'PAY_AT_ONCE_DECLINED: the key is taken';
        END IF;
    END IF;
    INSERT INTO payments (id, user_id, reservation_id, amount, status, created_at)
        VALUES (_id, _user, _reservation, _amount, 'COMPLETED', _paid_at)
        ON CONFLICT (reservation_id) DO NOTHING;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'TKP01', MESSAGE = 'PAY_AT_ONCE_DECLINED: already paid';
    END IF;
    UPDATE wallets SET balance = balance - _amount, updated_at = _paid_at
        WHERE user_id = _user AND balance >= _amount
        RETURNING balance INTO _balance;
    IF _balance IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'TKP01', MESSAGE = 'PAY_AT_ONCE_DECLINED: the wallet is short';
    END IF;
    INSERT INTO ledger (user_id, kind, amount, balance_after, ref, created_at)
        VALUES (_user, 'PAYMENT', _amount, _balance, 'payment:' || _id, _paid_at);
    _event_id := (_event_high || lpad(to_hex(_event_low | _id), 16, '0'))::uuid;
    INSERT INTO outbox (event_id, topic, key, payload, traceparent)
        VALUES (_event_id, _topic, _reservation::text,
                jsonb_set(jsonb_set(_event, '{id}', to_jsonb(_event_id)), '{data,payment_id}', to_jsonb(_id)),
                _traceparent);
    RETURN _id;
END
$fn$;
"#;
