//! The concert database schema.

use common::migration::SqlMigration;
use sea_orm_migration::prelude::*;

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            common::migration::outbox_inbox(),
            Box::new(SqlMigration {
                name: "m20261124_000001_catalogue_and_reservations",
                up: SCHEMA,
            }),
            Box::new(SqlMigration {
                name: "m20261202_000001_on_sale_operations",
                up: ON_SALE,
            }),
            common::migration::outbox_trace_context(),
            Box::new(SqlMigration {
                name: "m20261203_000001_reservations_changed",
                up: RESERVATIONS_CHANGED,
            }),
            Box::new(SqlMigration {
                name: "m20261203_000002_archive",
                up: ARCHIVE,
            }),
            Box::new(SqlMigration {
                name: "m20261204_000001_reservations_without_parent_keys",
                up: RESERVATIONS_WITHOUT_PARENT_KEYS,
            }),
            Box::new(SqlMigration {
                name: "m20261205_000001_claim_free_seats",
                up: CLAIM_FREE_SEATS,
            }),
            common::migration::inbox_received(),
            common::migration::outbox_vacuum(),
            Box::new(SqlMigration {
                name: "m20261205_000004_live_seat_map",
                up: LIVE_SEAT_MAP,
            }),
            Box::new(SqlMigration {
                name: "m20261206_000001_hold_rows_without_keys",
                up: HOLD_ROWS_WITHOUT_KEYS,
            }),
            common::migration::outbox_without_key_index(),
            Box::new(SqlMigration {
                name: "m20261207_000001_seats_hot_updates",
                up: SEATS_HOT_UPDATES,
            }),
        ]
    }
}

/// The indexes on `schedules` are the seed's index study (docs/INDEX_STUDY.md): "upcoming
/// schedules" must be an index range scan. The partial unique index on active
/// `reservation_seats` makes double booking impossible even if the code above it is wrong.
pub const SCHEMA: &str = r#"
CREATE TABLE concerts (
    id         bigserial PRIMARY KEY,
    title      text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    performer  text NOT NULL CHECK (length(performer) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE schedules (
    id               bigserial PRIMARY KEY,
    concert_id       bigint NOT NULL REFERENCES concerts (id),
    starts_at        timestamptz NOT NULL,
    booking_opens_at timestamptz NOT NULL,
    seat_count       integer NOT NULL CHECK (seat_count BETWEEN 1 AND 1000),
    price            bigint NOT NULL CHECK (price BETWEEN 1 AND 10000000),
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (booking_opens_at <= starts_at)
);
CREATE INDEX schedules_starts_at ON schedules (starts_at);
CREATE INDEX schedules_concert_starts_at ON schedules (concert_id, starts_at);

CREATE TABLE reservations (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL,
    schedule_id bigint NOT NULL REFERENCES schedules (id),
    concert_id  bigint NOT NULL REFERENCES concerts (id),
    seat_nos    integer[] NOT NULL,
    amount      bigint NOT NULL CHECK (amount > 0),
    status      text NOT NULL CHECK (status IN ('HELD', 'CONFIRMED', 'EXPIRED', 'CANCELLED', 'REJECTED')),
    held_until  timestamptz NOT NULL,
    payment_id  bigint,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reservations_user ON reservations (user_id, id DESC);
CREATE INDEX reservations_held_until ON reservations (held_until) WHERE status = 'HELD';

CREATE TABLE seats (
    id             bigserial PRIMARY KEY,
    schedule_id    bigint NOT NULL REFERENCES schedules (id),
    seat_no        integer NOT NULL CHECK (seat_no >= 1),
    price          bigint NOT NULL CHECK (price > 0),
    status         text NOT NULL DEFAULT 'AVAILABLE' CHECK (status IN ('AVAILABLE', 'HELD', 'SOLD')),
    -- Deferred: a hold claims its seats for a reservation id before inserting that row.
    reservation_id bigint REFERENCES reservations (id) DEFERRABLE INITIALLY DEFERRED,
    -- The hold's end, copied here so "is this seat free?" needs no join.
    held_until     timestamptz,
    UNIQUE (schedule_id, seat_no),
    CHECK ((status = 'AVAILABLE') = (reservation_id IS NULL)),
    CHECK ((status = 'HELD') = (held_until IS NOT NULL))
);
CREATE INDEX seats_held_until ON seats (held_until) WHERE status = 'HELD';
CREATE INDEX seats_reservation ON seats (reservation_id) WHERE reservation_id IS NOT NULL;

CREATE TABLE reservation_seats (
    reservation_id bigint NOT NULL REFERENCES reservations (id),
    seat_id        bigint NOT NULL REFERENCES seats (id),
    active         boolean NOT NULL DEFAULT true,
    PRIMARY KEY (reservation_id, seat_id)
);
CREATE UNIQUE INDEX reservation_seats_one_active ON reservation_seats (seat_id) WHERE active;
"#;

/// On-sale operations (DESIGN §10): the per-buyer limit, the indexes that keep the buyer's
/// count and the live sale view off the seats table, the admin audit trail, and hold
/// idempotency keys (the layout of payment-api's `idempotency_keys`).
pub const ON_SALE: &str = r#"
ALTER TABLE concerts ADD COLUMN max_tickets_per_user integer NOT NULL DEFAULT 4
    CHECK (max_tickets_per_user BETWEEN 1 AND 20);

-- A buyer's live seats for a concert (the per-buyer limit), counted under the buyer's lock.
CREATE INDEX reservations_buyer_live ON reservations (user_id, concert_id)
    WHERE status IN ('HELD', 'CONFIRMED');
-- The sale view: reservations by status (and revenue) per concert, index-only.
CREATE INDEX reservations_concert_status ON reservations (concert_id, status) INCLUDE (amount);
-- The sale view: holds made in the last minute.
CREATE INDEX reservations_concert_created ON reservations (concert_id, created_at);
-- The sale view: seats sold in the last minute (CONFIRMED is final, so `updated_at` is
-- when it was confirmed).
CREATE INDEX reservations_concert_confirmed ON reservations (concert_id, updated_at)
    WHERE status = 'CONFIRMED';

CREATE TABLE admin_audit (
    id             bigserial PRIMARY KEY,
    actor_id       bigint NOT NULL,
    actor_username text NOT NULL,
    at             timestamptz NOT NULL DEFAULT now(),
    action         text NOT NULL,
    target         text NOT NULL,
    before         jsonb,
    after          jsonb
);
CREATE INDEX admin_audit_target ON admin_audit (target, id);

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

/// The inventory resync's "which concerts changed lately" (`store::inventory::Reach`): every
/// change of a reservation sets its `updated_at`.
pub const RESERVATIONS_CHANGED: &str = r#"
CREATE INDEX reservations_updated ON reservations (updated_at);
"#;

/// The archive of finished shows (batch's archive job, `domain::archive`): a schedule over by
/// `ARCHIVE_AFTER_DAYS` has its seats, `reservation_seats` and reservations moved into the
/// `archive` schema and `schedules.archived_at` set, in one transaction. Same columns as the
/// hot tables plus `archived_at`; no foreign keys and no checks (the rows are final, written
/// once, only read); the indexes serve the reads that still answer from them: a buyer's
/// history, one reservation, the buyer's limit, the sale view, the seat counts.
///
/// `reservation_seats_seat`: deleting a seat makes PostgreSQL look for `reservation_seats`
/// rows still referencing it (the foreign key), and the partial unique index on active rows
/// cannot answer that: without a plain index each archived seat cost a scan of the table.
/// It is also how archival finds a schedule's reservations (seats → reservation_seats).
pub const ARCHIVE: &str = r#"
ALTER TABLE schedules ADD COLUMN archived_at timestamptz;
-- "Schedules over by N days, not archived yet", in archival order.
CREATE INDEX schedules_unarchived ON schedules (starts_at, id) WHERE archived_at IS NULL;
CREATE INDEX reservation_seats_seat ON reservation_seats (seat_id);

CREATE SCHEMA archive;

CREATE TABLE archive.reservations (
    id          bigint PRIMARY KEY,
    user_id     bigint NOT NULL,
    schedule_id bigint NOT NULL,
    concert_id  bigint NOT NULL,
    seat_nos    integer[] NOT NULL,
    amount      bigint NOT NULL,
    status      text NOT NULL,
    held_until  timestamptz NOT NULL,
    payment_id  bigint,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    archived_at timestamptz NOT NULL
);
CREATE INDEX archived_reservations_user ON archive.reservations (user_id, id DESC);
CREATE INDEX archived_reservations_concert_status ON archive.reservations (concert_id, status) INCLUDE (amount);
-- The buyer's limit counts seats bought for the concert's archived shows too.
CREATE INDEX archived_reservations_buyer ON archive.reservations (user_id, concert_id)
    INCLUDE (seat_nos) WHERE status = 'CONFIRMED';

CREATE TABLE archive.seats (
    id             bigint PRIMARY KEY,
    schedule_id    bigint NOT NULL,
    seat_no        integer NOT NULL,
    price          bigint NOT NULL,
    status         text NOT NULL,
    reservation_id bigint,
    held_until     timestamptz,
    archived_at    timestamptz NOT NULL
);
CREATE INDEX archived_seats_schedule ON archive.seats (schedule_id, seat_no) INCLUDE (status, price);

CREATE TABLE archive.reservation_seats (
    reservation_id bigint NOT NULL,
    seat_id        bigint NOT NULL,
    active         boolean NOT NULL,
    archived_at    timestamptz NOT NULL,
    PRIMARY KEY (reservation_id, seat_id)
);
"#;

/// A reservation's `schedule_id` and `concert_id` lose their foreign keys. Each key's check
/// took a `FOR KEY SHARE` row lock on the parent at every hold, and during an on-sale every
/// hold names the same concert row and one of a few schedule rows: concurrent lockers of one
/// row share a MultiXact, each lock rewrites the row's header and writes WAL. The hold's SQL
/// alone through pgbench (bench/pgbench-hold.sh, 64 clients): 2,195 holds/s with the keys,
/// 2,603 without, beside a running stack; 2,430–2,440 and 2,710–2,760 on an idle one.
///
/// Nothing is given up: the only statements that insert reservations (the two claims of
/// `store::holds`) insert one only after claiming seats of its `schedule_id` (`seats` keeps
/// its key to `schedules`), with the `concert_id` of that schedule's row (`schedules` keeps
/// its key to `concerts`); and concerts and schedules are never deleted (archived dates keep
/// theirs).
pub const RESERVATIONS_WITHOUT_PARENT_KEYS: &str = r#"
ALTER TABLE reservations
    DROP CONSTRAINT IF EXISTS reservations_schedule_id_fkey,
    DROP CONSTRAINT IF EXISTS reservations_concert_id_fkey;
"#;

/// The common hold as one call, so that it costs one round trip instead of four (BEGIN, the
/// buyer's lock, the claim, COMMIT): see `store::holds::claim_free`, which says why it is safe
/// under concurrency. Each statement of a VOLATILE PL/pgSQL function takes a fresh snapshot,
/// so the claim, which runs after the buyer's lock is granted, sees every earlier hold of that
/// buyer that has committed — as the separate statements did. Its plans are cached per
/// connection and kept generic (`plan_cache_mode`): a custom plan per hold cost as much
/// planning as running.
pub const CLAIM_FREE_SEATS: &str = r#"
CREATE FUNCTION claim_free_seats(
    _schedule bigint, _seats integer[], _held_until timestamptz, _stale_before timestamptz,
    _user bigint, _concert bigint)
RETURNS TABLE (free bigint, dead bigint, owned bigint, max_tickets bigint, unavailable integer[],
               id bigint, amount bigint, created_at timestamptz)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
AS $fn$
#variable_conflict use_column
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('buyer:' || _user::text || ':' || _concert::text, 0));
    RETURN QUERY
    WITH target AS (
        SELECT id, seat_no, price, status, held_until FROM seats
        WHERE schedule_id = _schedule AND seat_no = ANY(_seats) ORDER BY seat_no FOR UPDATE),
    verdict AS (
        SELECT count(*) FILTER (WHERE status = 'AVAILABLE') AS free,
               count(*) FILTER (WHERE status = 'HELD' AND held_until < _stale_before) AS dead,
               array_agg(seat_no ORDER BY seat_no) FILTER (
                   WHERE NOT (status = 'AVAILABLE' OR (status = 'HELD' AND held_until < _stale_before))) AS unavailable,
               sum(price) AS amount
        FROM target),
    -- concert_id + 0 keeps the concert out of the index search: only the buyer's own
    -- reservations are read (the planner took the concert's index for a new concert's buyers,
    -- reading every reservation of the concert for each hold).
    mine AS (
        SELECT ((SELECT coalesce(sum(cardinality(seat_nos)), 0) FROM reservations
          WHERE user_id = _user AND concert_id + 0 = _concert AND status IN ('HELD', 'CONFIRMED')
            AND NOT (status = 'HELD' AND held_until < _stale_before))
        + (SELECT coalesce(sum(cardinality(seat_nos)), 0) FROM archive.reservations
          WHERE user_id = _user AND concert_id = _concert AND status = 'CONFIRMED'))::bigint AS owned),
    lim AS (SELECT max_tickets_per_user::bigint AS max_tickets FROM concerts WHERE id = _concert),
    rid AS (
        SELECT nextval('reservations_id_seq') AS id, v.amount
        FROM verdict v, mine, lim
        WHERE v.free = cardinality(_seats) AND mine.owned + cardinality(_seats) <= lim.max_tickets),
    claimed AS (
        UPDATE seats se SET status = 'HELD', reservation_id = rid.id, held_until = _held_until
        FROM target t, rid WHERE se.id = t.id RETURNING se.id),
    res AS (
        INSERT INTO reservations (id, user_id, schedule_id, concert_id, seat_nos, amount, status, held_until)
        SELECT rid.id, _user, _schedule, _concert, _seats, rid.amount, 'HELD', _held_until FROM rid
        RETURNING id, amount, created_at),
    rs AS (
        INSERT INTO reservation_seats (reservation_id, seat_id) SELECT rid.id, c.id FROM rid, claimed c)
    SELECT v.free, v.dead, mine.owned, lim.max_tickets, v.unavailable, res.id, res.amount, res.created_at
    FROM verdict v CROSS JOIN mine CROSS JOIN lim LEFT JOIN res ON true;
END
$fn$;
"#;

/// The rows a hold writes lose their foreign keys: `seats.reservation_id` and both columns of
/// `reservation_seats`. Each key's check is a query run at every hold (three a hold, the
/// seats' at commit), and two of them lock the new reservation row (`FOR KEY SHARE`, a WAL
/// record each). The hold's SQL alone (bench/pgbench-hold.sh, 64 clients, 10 s, alternated,
/// three runs each): 4,721, 5,253 and 4,866 holds/s without them against 3,984, 4,415 and
/// 4,086 with them, 18 % more.
///
/// What they guarded stays true by construction: a seat gets a `reservation_id`, and
/// `reservation_seats` a row, only in the hold's own transaction that inserts that
/// reservation (`claim_free_seats`, `store::holds`'s claim over dead holds); the seat's is
/// cleared by every release (expiry, cancel, rejection); and no reservation or seat is ever
/// deleted but by archival, which moves a date's `reservation_seats`, seats and reservations
/// together in one transaction. And it is still watched: batch's seat check counts a SOLD
/// seat whose reservation is missing as a seat sold without a CONFIRMED reservation
/// (`store::invariants`).
pub const HOLD_ROWS_WITHOUT_KEYS: &str = r#"
ALTER TABLE seats DROP CONSTRAINT IF EXISTS seats_reservation_id_fkey;
ALTER TABLE reservation_seats
    DROP CONSTRAINT IF EXISTS reservation_seats_reservation_id_fkey,
    DROP CONSTRAINT IF EXISTS reservation_seats_seat_id_fkey;
"#;

/// A hold's and a sale's updates of a seat become HOT (heap-only: the new row version goes on
/// the same page and no index gets a new entry): `seats` loses its two indexes on the columns
/// they change (`held_until` with its `status = 'HELD'` predicate, and `reservation_id`), and
/// its pages keep a fifth free for the new versions (new pages only: those of the dates
/// created from now on). Before, every claim and every sale of a seat wrote an entry in each
/// of the table's four indexes. A seat is found by reservation through `reservation_seats`
/// instead, and the expiry sweep reaches dead seats through their reservations; for that, a
/// HELD seat's reservation is always HELD (`holds::retire_dead_holds`, `sweep::expire_holds`).
/// A partial takeover could leave a dead hold's other seats HELD under an EXPIRED reservation,
/// which the sweep used to free by the seat index: those are freed here (the inventory's
/// resync counts them again). The hold's SQL through pgbench (16 clients, 10 s, in turn
/// three times): 4,595, 4,297 and 4,186 holds/s without the indexes against 4,098, 4,221
/// and 3,813 with them; in six alternated flash sales PostgreSQL for concert-api spent
/// 1.25–1.32 times nginx's CPU against 1.27–1.41 (docs/BENCHMARKS.md).
pub const SEATS_HOT_UPDATES: &str = r#"
WITH orphan AS (
    SELECT se.id, se.reservation_id FROM seats se JOIN reservations r ON r.id = se.reservation_id
    WHERE se.status = 'HELD' AND r.status <> 'HELD'),
off AS (
    UPDATE reservation_seats rs SET active = false FROM orphan o
    WHERE rs.reservation_id = o.reservation_id AND rs.seat_id = o.id AND rs.active)
UPDATE seats se SET status = 'AVAILABLE', reservation_id = NULL, held_until = NULL
FROM orphan o WHERE se.id = o.id;
DROP INDEX IF EXISTS seats_held_until;
DROP INDEX IF EXISTS seats_reservation;
ALTER TABLE seats SET (fillfactor = 80);
"#;

/// A live date's seat map as one call whose plan is cached per connection and kept generic
/// (`plan_cache_mode`), as the hold's is: PostgreSQL's generic plan for the bare statement
/// looked 7 % dearer than a custom one (561 against 527), so it planned the statement afresh
/// for every call, 6,603 plans for 6,603 seat maps in a flash sale (pg_stat_statements), and
/// planning took longer than running (428 ms against 329). A free seat is
/// `catalogue::FREE_SEAT`.
pub const LIVE_SEAT_MAP: &str = r#"
CREATE FUNCTION live_seat_map(_schedule bigint, _stale_before timestamptz)
RETURNS TABLE (seat_no integer, price bigint, status text)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
AS $fn$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT se.seat_no, se.price,
           CASE WHEN se.status = 'AVAILABLE' OR (se.status = 'HELD' AND se.held_until < _stale_before)
                THEN 'AVAILABLE' ELSE se.status END
    FROM seats se WHERE se.schedule_id = _schedule ORDER BY se.seat_no;
END
$fn$;
"#;
