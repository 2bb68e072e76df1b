//! Concerts and schedules: admin writes and the public, keyset-paginated reads.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult, Value};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::status::SeatStatus;
use crate::store::stmt;

#[derive(Debug, Clone, FromQueryResult, Serialize, ToSchema)]
pub struct Concert {
    pub id: i64,
    pub title: String,
    pub performer: String,
    /// Most seats one buyer may hold or own for this concert, over all its schedules
    /// (HELD + CONFIRMED), 1 to 20.
    #[schema(minimum = 1, maximum = 20)]
    pub max_tickets_per_user: i32,
}

/// The columns of a [`Concert`].
const CONCERT: &str = "id, title, performer, max_tickets_per_user";

#[derive(Debug, Clone, FromQueryResult, Serialize, ToSchema)]
pub struct Schedule {
    pub id: i64,
    pub concert_id: i64,
    pub starts_at: DateTime<Utc>,
    pub booking_opens_at: DateTime<Utc>,
    pub seat_count: i32,
    pub price: i64,
    pub available_seats: i64,
}

/// A seat nobody can be holding any more: never taken, or held by a hold that is past
/// `held_until + grace` (`$stale` is `now - grace`).
pub const FREE_SEAT: &str =
    "(se.status = 'AVAILABLE' OR (se.status = 'HELD' AND se.held_until < $stale))";

pub async fn insert_concert<C: ConnectionTrait>(
    db: &C,
    title: &str,
    performer: &str,
    max_tickets_per_user: i32,
) -> Result<Concert, DbErr> {
    Concert::find_by_statement(stmt(
        db,
        &format!(
            "INSERT INTO concerts (title, performer, max_tickets_per_user) VALUES ($1, $2, $3) RETURNING {CONCERT}"
        ),
        vec![title.into(), performer.into(), max_tickets_per_user.into()],
    ))
    .one(db)
    .await?
    .ok_or(DbErr::RecordNotInserted)
}

pub async fn find_concert<C: ConnectionTrait>(db: &C, id: i64) -> Result<Option<Concert>, DbErr> {
    Concert::find_by_statement(stmt(
        db,
        &format!("SELECT {CONCERT} FROM concerts WHERE id = $1"),
        vec![id.into()],
    ))
    .one(db)
    .await
}

/// Concert `id`, locked until the transaction ends (an admin change reads its "before").
pub async fn lock_concert<C: ConnectionTrait>(db: &C, id: i64) -> Result<Option<Concert>, DbErr> {
    Concert::find_by_statement(stmt(
        db,
        &format!("SELECT {CONCERT} FROM concerts WHERE id = $1 FOR UPDATE"),
        vec![id.into()],
    ))
    .one(db)
    .await
}

/// Sets concert `id`'s per-buyer limit; answers the concert as it now is.
pub async fn set_max_tickets_per_user<C: ConnectionTrait>(
    db: &C,
    id: i64,
    max_tickets_per_user: i32,
) -> Result<Option<Concert>, DbErr> {
    Concert::find_by_statement(stmt(
        db,
        &format!("UPDATE concerts SET max_tickets_per_user = $2 WHERE id = $1 RETURNING {CONCERT}"),
        vec![id.into(), max_tickets_per_user.into()],
    ))
    .one(db)
    .await
}

/// Concerts after `after_id`, by id; one more than `limit` tells whether a next page exists.
pub async fn list_concerts<C: ConnectionTrait>(
    db: &C,
    after_id: i64,
    limit: u64,
) -> Result<Vec<Concert>, DbErr> {
    Concert::find_by_statement(stmt(
        db,
        &format!("SELECT {CONCERT} FROM concerts WHERE id > $1 ORDER BY id LIMIT $2"),
        vec![after_id.into(), (limit as i64 + 1).into()],
    ))
    .all(db)
    .await
}

#[derive(Debug)]
pub struct NewSchedule {
    pub concert_id: i64,
    pub starts_at: DateTime<Utc>,
    pub booking_opens_at: DateTime<Utc>,
    pub seat_count: i32,
    pub price: i64,
}

/// Creates a schedule and all its seats (numbers 1..=seat_count) in the caller's
/// transaction; the seats go in with one bulk statement.
pub async fn insert_schedule<C: ConnectionTrait>(
    txn: &C,
    s: &NewSchedule,
) -> Result<Schedule, DbErr> {
    let schedule = Schedule::find_by_statement(stmt(
        txn,
        "INSERT INTO schedules (concert_id, starts_at, booking_opens_at, seat_count, price) \
         VALUES ($1, $2, $3, $4, $5) \
         RETURNING id, concert_id, starts_at, booking_opens_at, seat_count, price, seat_count::bigint AS available_seats",
        vec![
            s.concert_id.into(),
            s.starts_at.into(),
            s.booking_opens_at.into(),
            s.seat_count.into(),
            s.price.into(),
        ],
    ))
    .one(txn)
    .await?
    .ok_or(DbErr::RecordNotInserted)?;
    txn.execute_raw(stmt(
        txn,
        "INSERT INTO seats (schedule_id, seat_no, price) SELECT $1, n, $2 FROM generate_series(1, $3) AS n",
        vec![schedule.id.into(), s.price.into(), s.seat_count.into()],
    ))
    .await?;
    Ok(schedule)
}

/// A page of a concert's schedules ordered by `(starts_at, id)`, after the cursor.
/// With `only_available`: starts in the future, booking open, at least one free seat.
///
/// Each schedule's free seats are counted among its own seats (a lateral count on the
/// `(schedule_id, seat_no)` index; an archived schedule's in `archive.seats`), so a page
/// costs what the concert's seats cost. Written as
/// a subquery plus `EXISTS`, the planner chose a semi-join that scanned every seat of every
/// show once the statistics said few were free: 35 ms a list in a flash sale, growing with
/// the catalogue.
pub async fn list_schedules<C: ConnectionTrait>(
    db: &C,
    concert_id: i64,
    only_available: bool,
    after: Option<(DateTime<Utc>, i64)>,
    limit: u64,
    now: DateTime<Utc>,
    stale_before: DateTime<Utc>,
) -> Result<Vec<Schedule>, DbErr> {
    let free = FREE_SEAT.replace("$stale", "$2");
    let available = if only_available {
        "AND sc.starts_at > $3 AND sc.booking_opens_at <= $3 AND f.available_seats > 0"
    } else {
        ""
    };
    let mut values: Vec<Value> = vec![
        concert_id.into(),
        stale_before.into(),
        now.into(),
        (limit as i64 + 1).into(),
    ];
    let after_clause = match after {
        Some((at, id)) => {
            values.extend([at.into(), id.into()]);
            "AND (sc.starts_at, sc.id) > ($5, $6)"
        }
        None => "",
    };
    let sql = format!(
        "SELECT sc.id, sc.concert_id, sc.starts_at, sc.booking_opens_at, sc.seat_count, sc.price, \
           f.available_seats \
         FROM schedules sc CROSS JOIN LATERAL ( \
           SELECT count(*) AS available_seats FROM ( \
             SELECT h.status, h.held_until FROM seats h WHERE h.schedule_id = sc.id \
             UNION ALL \
             SELECT a.status, a.held_until FROM archive.seats a \
             WHERE a.schedule_id = sc.id AND sc.archived_at IS NOT NULL) se \
           WHERE {free}) f \
         WHERE sc.concert_id = $1 {available} {after_clause} \
         ORDER BY sc.starts_at, sc.id LIMIT $4"
    );
    Schedule::find_by_statement(stmt(db, &sql, values))
        .all(db)
        .await
}

/// What a hold needs to know about its schedule.
#[derive(Debug, Clone, FromQueryResult)]
pub struct ScheduleFacts {
    pub id: i64,
    pub concert_id: i64,
    pub starts_at: DateTime<Utc>,
    pub booking_opens_at: DateTime<Utc>,
    pub seat_count: i32,
}

pub async fn schedule_facts<C: ConnectionTrait>(
    db: &C,
    id: i64,
) -> Result<Option<ScheduleFacts>, DbErr> {
    ScheduleFacts::find_by_statement(stmt(
        db,
        "SELECT id, concert_id, starts_at, booking_opens_at, seat_count FROM schedules WHERE id = $1",
        vec![id.into()],
    ))
    .one(db)
    .await
}

#[derive(Debug, Clone, FromQueryResult)]
pub struct SeatRow {
    pub seat_no: i32,
    pub price: i64,
    /// As seen by a buyer: a seat of a dead hold reads as available.
    pub status: SeatStatus,
}

/// The seat map of a schedule (of an archived one: its seats as they were archived).
///
/// A live date's seats are read from `seats` alone (one table, no sort: its index is in seat
/// order), through `live_seat_map`, whose plan is generic and kept (migration
/// `m20261205_000004_live_seat_map` says why). Read together with the archive (`UNION ALL`),
/// PostgreSQL planned the statement afresh for every call during a sale. Only a date with no
/// live seats, an archived one, is looked for in the archive: archiving moves a date's seats
/// in one transaction, so they are in one table or the other.
pub async fn seat_map<C: ConnectionTrait>(
    db: &C,
    schedule_id: i64,
    stale_before: DateTime<Utc>,
) -> Result<Vec<SeatRow>, DbErr> {
    let live = SeatRow::find_by_statement(stmt(
        db,
        "SELECT seat_no, price, status FROM live_seat_map($1, $2)",
        vec![schedule_id.into(), stale_before.into()],
    ))
    .all(db)
    .await?;
    if !live.is_empty() {
        return Ok(live);
    }
    let free = FREE_SEAT.replace("$stale", "$2");
    SeatRow::find_by_statement(stmt(
        db,
        &format!(
            "SELECT se.seat_no, se.price, CASE WHEN {free} THEN 'AVAILABLE' ELSE se.status END AS status \
             FROM archive.seats se WHERE se.schedule_id = $1 ORDER BY se.seat_no"
        ),
        vec![schedule_id.into(), stale_before.into()],
    ))
    .all(db)
    .await
}
