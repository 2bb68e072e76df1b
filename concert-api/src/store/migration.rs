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
