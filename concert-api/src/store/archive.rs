//! The statements of archival (`domain::archive`): which schedules are due, a schedule's
//! reservations, and the move of its rows from the hot tables into the `archive` schema
//! (`migration::ARCHIVE`), each in the caller's transaction where it locks or moves.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult};

use crate::domain::status::ReservationStatus;
use crate::store::reservations::COLUMNS;
use crate::store::stmt;

/// A schedule old enough to archive.
#[derive(Debug, Clone, PartialEq, Eq, FromQueryResult)]
pub struct DueSchedule {
    pub id: i64,
    pub concert_id: i64,
    pub starts_at: DateTime<Utc>,
}

/// Up to `limit` schedules not archived that started before `before`, oldest first, after
/// `after` (`(starts_at, id)` of the last one seen): the `schedules_unarchived` index.
pub async fn due<C: ConnectionTrait>(
    db: &C,
    before: DateTime<Utc>,
    after: Option<(DateTime<Utc>, i64)>,
    limit: i64,
) -> Result<Vec<DueSchedule>, DbErr> {
    let mut values = vec![before.into(), limit.into()];
    let after_clause = match after {
        Some((at, id)) => {
            values.extend([at.into(), id.into()]);
            "AND (starts_at, id) > ($3, $4)"
        }
        None => "",
    };
    DueSchedule::find_by_statement(stmt(
        db,
        &format!(
            "SELECT id, concert_id, starts_at FROM schedules \
             WHERE archived_at IS NULL AND starts_at < $1 {after_clause} \
             ORDER BY starts_at, id LIMIT $2"
        ),
        values,
    ))
    .all(db)
    .await
}

/// One reservation of a schedule and its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromQueryResult)]
pub struct ReservationState {
    pub id: i64,
    pub schedule_id: i64,
    pub status: ReservationStatus,
}

/// The reservations of the schedules `$1`, by id: every reservation has a `reservation_seats`
/// row per seat (both hold statements insert them with it), so they are found through the
/// schedules' seats (their `(schedule_id, seat_no)` index, then `reservation_seats_seat`).
const OF_SCHEDULES: &str = "SELECT id, schedule_id, status FROM reservations WHERE id IN ( \
        SELECT rs.reservation_id FROM seats se JOIN reservation_seats rs ON rs.seat_id = se.id \
        WHERE se.schedule_id = ANY($1)) \
     ORDER BY id";

/// The reservations of `schedules`, read without locks.
pub async fn reservations_of<C: ConnectionTrait>(
    db: &C,
    schedules: &[i64],
) -> Result<Vec<ReservationState>, DbErr> {
    ReservationState::find_by_statement(stmt(db, OF_SCHEDULES, vec![schedules.to_vec().into()]))
        .all(db)
        .await
}

/// Those of `schedules` not archived, by id, locked until the transaction ends in id order
/// (two archivers of overlapping sets wait for each other; the second then finds them
/// archived). `NO KEY UPDATE`: the foreign-key checks of rows referencing a schedule
/// (`KEY SHARE`) never wait.
pub async fn lock_unarchived<C: ConnectionTrait>(
    txn: &C,
    schedules: &[i64],
) -> Result<Vec<i64>, DbErr> {
    let rows = txn
        .query_all_raw(stmt(
            txn,
            "SELECT id FROM schedules WHERE id = ANY($1) AND archived_at IS NULL \
             ORDER BY id FOR NO KEY UPDATE",
            vec![schedules.to_vec().into()],
        ))
        .await?;
    rows.iter()
        .map(|row| row.try_get::<i64>("", "id"))
        .collect()
}

/// The reservations of `schedules`, locked in id order until the transaction ends, then their
/// seats in seat order: the order of a settlement or a cancel (reservation, then its seats),
/// so archival waits for them, or they for it, and nothing changes under it.
pub async fn lock_reservations_and_seats<C: ConnectionTrait>(
    txn: &C,
    schedules: &[i64],
) -> Result<Vec<ReservationState>, DbErr> {
    let reservations = ReservationState::find_by_statement(stmt(
        txn,
        &format!("{OF_SCHEDULES} FOR UPDATE"),
        vec![schedules.to_vec().into()],
    ))
    .all(txn)
    .await?;
    txn.execute_raw(stmt(
        txn,
        "SELECT id FROM seats WHERE schedule_id = ANY($1) ORDER BY schedule_id, seat_no FOR UPDATE",
        vec![schedules.to_vec().into()],
    ))
    .await?;
    Ok(reservations)
}

/// How many rows archival moved, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MovedRows {
    pub seats: u64,
    pub reservation_seats: u64,
    pub reservations: u64,
}

/// Moves the rows of `schedules` (and of `reservations`, theirs) into the archive, stamped
/// `archived_at`, and marks the schedules archived, in the caller's transaction (after
/// [`lock_reservations_and_seats`]): `reservation_seats` of `reservations` first, then the
/// seats (nothing references them any more), then the reservations. Each move is one
/// `DELETE … RETURNING` feeding an `INSERT`, so a row is in exactly one of the two tables
/// whatever a reader's snapshot.
pub async fn move_schedules<C: ConnectionTrait>(
    txn: &C,
    schedules: &[i64],
    reservations: &[i64],
    archived_at: DateTime<Utc>,
) -> Result<MovedRows, DbErr> {
    let (schedules, reservations) = (schedules.to_vec(), reservations.to_vec());
    let reservation_seats = txn
        .execute_raw(stmt(
            txn,
            "WITH moved AS ( \
                DELETE FROM reservation_seats WHERE reservation_id = ANY($1) \
                RETURNING reservation_id, seat_id, active) \
             INSERT INTO archive.reservation_seats (reservation_id, seat_id, active, archived_at) \
             SELECT reservation_id, seat_id, active, $2 FROM moved",
            vec![reservations.clone().into(), archived_at.into()],
        ))
        .await?
        .rows_affected();
    let seats = txn
        .execute_raw(stmt(
            txn,
            "WITH moved AS ( \
                DELETE FROM seats WHERE schedule_id = ANY($1) \
                RETURNING id, schedule_id, seat_no, price, status, reservation_id, held_until) \
             INSERT INTO archive.seats \
                (id, schedule_id, seat_no, price, status, reservation_id, held_until, archived_at) \
             SELECT id, schedule_id, seat_no, price, status, reservation_id, held_until, $2 FROM moved",
            vec![schedules.clone().into(), archived_at.into()],
        ))
        .await?
        .rows_affected();
    let reservations = txn
        .execute_raw(stmt(
            txn,
            &format!(
                "WITH moved AS ( \
                    DELETE FROM reservations WHERE id = ANY($1) RETURNING {COLUMNS}, updated_at) \
                 INSERT INTO archive.reservations ({COLUMNS}, updated_at, archived_at) \
                 SELECT {COLUMNS}, updated_at, $2 FROM moved"
            ),
            vec![reservations.into(), archived_at.into()],
        ))
        .await?
        .rows_affected();
    txn.execute_raw(stmt(
        txn,
        "UPDATE schedules SET archived_at = $2 WHERE id = ANY($1)",
        vec![schedules.into(), archived_at.into()],
    ))
    .await?;
    Ok(MovedRows {
        seats,
        reservation_seats,
        reservations,
    })
}

/// The tables archival deletes from and inserts into.
pub const TABLES: [&str; 6] = [
    "seats",
    "reservation_seats",
    "reservations",
    "archive.seats",
    "archive.reservation_seats",
    "archive.reservations",
];

/// `VACUUM (ANALYZE)` of [`TABLES`]: outside any transaction (VACUUM refuses one).
pub async fn vacuum<C: ConnectionTrait>(db: &C) -> Result<(), DbErr> {
    db.execute_unprepared(&format!("VACUUM (ANALYZE) {}", TABLES.join(", ")))
        .await
        .map(|_| ())
}
