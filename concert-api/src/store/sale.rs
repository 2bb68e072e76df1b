//! The live sale view's database figures (`GET /api/admin/concerts/{id}/sale`), in one
//! statement, each read through an index made for it and never from the seats table (the
//! seat counts come from the inventory hashes in Redis): the schedules
//! (`schedules_concert_starts_at`), reservations by status and revenue
//! (`reservations_concert_status`, index-only, plus its twin on `archive.reservations`: the
//! shows already archived still count), holds made in the last minute
//! (`reservations_concert_created`), seats sold in the last minute
//! (`reservations_concert_confirmed`).

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult};

use crate::store::stmt;

/// A concert's schedules, reservations by status, its revenue and its last minute.
#[derive(Debug, Clone, Default, PartialEq, Eq, FromQueryResult)]
pub struct SaleFigures {
    /// By `starts_at`, then id (the `schedules_concert_starts_at` index).
    pub schedule_ids: Vec<i64>,
    pub schedule_starts: Vec<DateTime<Utc>>,
    /// Reservations by status, the archived shows' included.
    pub held: i64,
    pub confirmed: i64,
    pub expired: i64,
    pub cancelled: i64,
    pub rejected: i64,
    /// The amounts of CONFIRMED reservations.
    pub revenue: i64,
    /// Holds (reservations) made in the last minute.
    pub holds_last_minute: i64,
    /// Seats of reservations confirmed in the last minute.
    pub sold_last_minute: i64,
}

/// The figures of `concert_id` in one round trip (a poll during a sale waits for a pooled
/// connection behind the holds, so each round trip counts), or `None` if there is no such
/// concert. "The last minute" is the minute before the database's now (the timestamps it
/// compares with are the database's).
pub async fn figures<C: ConnectionTrait>(
    db: &C,
    concert_id: i64,
) -> Result<Option<SaleFigures>, DbErr> {
    SaleFigures::find_by_statement(stmt(
        db,
        "WITH by_status AS ( \
            SELECT status, count(*) AS n, sum(amount) AS amount FROM ( \
                SELECT status, amount FROM reservations WHERE concert_id = $1 \
                UNION ALL \
                SELECT status, amount FROM archive.reservations WHERE concert_id = $1) r \
            GROUP BY status), \
         sched AS (SELECT id, starts_at FROM schedules WHERE concert_id = $1) \
         SELECT \
            coalesce((SELECT array_agg(id ORDER BY starts_at, id) FROM sched), '{}') AS schedule_ids, \
            coalesce((SELECT array_agg(starts_at ORDER BY starts_at, id) FROM sched), '{}') AS schedule_starts, \
            coalesce((SELECT n FROM by_status WHERE status = 'HELD'), 0) AS held, \
            coalesce((SELECT n FROM by_status WHERE status = 'CONFIRMED'), 0) AS confirmed, \
            coalesce((SELECT n FROM by_status WHERE status = 'EXPIRED'), 0) AS expired, \
            coalesce((SELECT n FROM by_status WHERE status = 'CANCELLED'), 0) AS cancelled, \
            coalesce((SELECT n FROM by_status WHERE status = 'REJECTED'), 0) AS rejected, \
            coalesce((SELECT amount FROM by_status WHERE status = 'CONFIRMED'), 0)::bigint AS revenue, \
            (SELECT count(*) FROM reservations \
                WHERE concert_id = $1 AND created_at > now() - interval '1 minute') AS holds_last_minute, \
            (SELECT coalesce(sum(cardinality(seat_nos)), 0)::bigint FROM reservations \
                WHERE concert_id = $1 AND status = 'CONFIRMED' \
                  AND updated_at > now() - interval '1 minute') AS sold_last_minute \
         FROM concerts WHERE id = $1",
        vec![concert_id.into()],
    ))
    .one(db)
    .await
}
