//! The seat invariant (DESIGN §9, 1) read from live data, for batch's watchdog: a seat is in
//! at most one live reservation, and a SOLD seat belongs to a CONFIRMED one.

use chrono::{DateTime, Utc};
use sea_orm::{DatabaseConnection, DbErr, FromQueryResult, TransactionTrait};

use crate::store::stmt;

/// What breaks the seat invariant, over the dates still to come or just played (a seat of a
/// show long played cannot be sold again, and the history stays out of the scan). Archived
/// dates are left out too: their rows have left these tables (`domain::archive`, at least a
/// day after the show, all final), so a check never sees half of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeatViolations {
    /// Seats (date, number) in more than one HELD or CONFIRMED reservation.
    pub in_two_live_reservations: i64,
    /// SOLD seats whose reservation is not CONFIRMED, or is missing (no foreign key keeps a
    /// seat's `reservation_id` pointing at a row: see the migration `HOLD_ROWS_WITHOUT_KEYS`).
    pub sold_unconfirmed: i64,
}

impl SeatViolations {
    pub fn total(&self) -> i64 {
        self.in_two_live_reservations + self.sold_unconfirmed
    }
}

/// Which dates a check reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeatScope<'a> {
    /// Every date still to come: its cost grows with every live reservation of every show on
    /// sale (175,000 of them took 220–400 ms of PostgreSQL idle, 1.3 s during a sale).
    Every,
    /// The dates of the concerts with a reservation changed after `changed_after`, and of
    /// `suspects` (concerts an earlier check found broken, so that what it found stays
    /// reported until it is mended). A seat can only come to break the invariant through a
    /// write of a reservation (a hold, a sale, a cancel, an expiry, a rejection), and every
    /// such write sets the reservation's `updated_at`. A write of `seats` alone would only be
    /// seen by the next [`SeatScope::Every`]; no code of ours makes one.
    ChangedSince {
        changed_after: DateTime<Utc>,
        suspects: &'a [i64],
    },
}

/// What a check found, and when, by the database's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatCheck {
    pub violations: SeatViolations,
    /// The concerts with a violation, in id order.
    pub broken: Vec<i64>,
    /// The start of the check's transaction: a write whose transaction started after this
    /// is in the next [`SeatScope::ChangedSince`] that starts from it.
    pub at: DateTime<Utc>,
}

/// Every date to come, as a CTE `current (id, concert_id)`, and the two counts over them as
/// CTEs `doubled` and `sold (concert_id, n)`: a scan of each table is the cheapest way to read
/// all of them.
const EVERY: &str = "current AS (SELECT id, concert_id FROM schedules \
       WHERE starts_at > $1 AND archived_at IS NULL), \
     doubled AS ( \
       SELECT c.concert_id, count(*) AS n FROM ( \
          SELECT r.schedule_id, seat_no FROM reservations r \
          CROSS JOIN LATERAL unnest(r.seat_nos) AS seat_no \
          WHERE r.status IN ('HELD', 'CONFIRMED') AND r.schedule_id IN (SELECT id FROM current) \
          GROUP BY r.schedule_id, seat_no HAVING count(*) > 1) d \
       JOIN current c ON c.id = d.schedule_id GROUP BY c.concert_id), \
     sold AS ( \
       SELECT c.concert_id, count(*) AS n \
       FROM seats s LEFT JOIN reservations r ON r.id = s.reservation_id \
       JOIN current c ON c.id = s.schedule_id \
       WHERE s.status = 'SOLD' AND r.status IS DISTINCT FROM 'CONFIRMED' GROUP BY c.concert_id)";

/// The same for [`SeatScope::ChangedSince`] (`$2` changed after, `$3` suspects): the changed
/// concerts are found by `reservations_updated`, then each concert's live reservations by
/// `reservations_concert_status` and each date's seats by `(schedule_id, seat_no)`. The
/// lateral subqueries (kept apart by `OFFSET 0`) make those index lookups certain: the
/// planner cannot know how few concerts changed (it guessed 128 for 2 or 3) and, planning one
/// join, scanned every reservation and every SOLD seat of the database instead: 500 ms a check
/// on the benchmark's database (724,000 reservations, 1.47 million seats) against 42 ms.
const CHANGED: &str = "changed AS ( \
       SELECT DISTINCT concert_id FROM reservations WHERE updated_at > $2 \
       UNION SELECT unnest($3::bigint[])), \
     current AS (SELECT id, concert_id FROM schedules \
       WHERE starts_at > $1 AND archived_at IS NULL \
         AND concert_id IN (SELECT concert_id FROM changed)), \
     doubled AS ( \
       SELECT c.concert_id, count(*) AS n FROM ( \
          SELECT r.schedule_id, seat_no FROM changed ch \
          CROSS JOIN LATERAL (SELECT schedule_id, seat_nos FROM reservations \
             WHERE concert_id = ch.concert_id AND status IN ('HELD', 'CONFIRMED') OFFSET 0) r \
          CROSS JOIN LATERAL unnest(r.seat_nos) AS seat_no \
          WHERE r.schedule_id IN (SELECT id FROM current) \
          GROUP BY r.schedule_id, seat_no HAVING count(*) > 1) d \
       JOIN current c ON c.id = d.schedule_id GROUP BY c.concert_id), \
     sold AS ( \
       SELECT c.concert_id, count(*) AS n FROM current c \
       CROSS JOIN LATERAL (SELECT 1 FROM seats s LEFT JOIN reservations r ON r.id = s.reservation_id \
          WHERE s.schedule_id = c.id AND s.status = 'SOLD' \
            AND r.status IS DISTINCT FROM 'CONFIRMED' OFFSET 0) x \
       GROUP BY c.concert_id)";

#[derive(Debug, FromQueryResult)]
struct Broken {
    concert_id: i64,
    doubled: i64,
    sold_unconfirmed: i64,
}

#[derive(Debug, FromQueryResult)]
struct Started {
    at: DateTime<Utc>,
}

/// Reads both counts in one statement (one snapshot) for the dates starting after `since`
/// that `scope` names, per concert. The statement runs on a plan made for its arguments
/// (`force_custom_plan`): it runs a few times a minute, and which dates it reads changes
/// what the best plan is.
pub async fn seat_violations(
    db: &DatabaseConnection,
    since: DateTime<Utc>,
    scope: SeatScope<'_>,
) -> Result<SeatCheck, DbErr> {
    let (counts, values) = match scope {
        SeatScope::Every => (EVERY, vec![since.into()]),
        SeatScope::ChangedSince {
            changed_after,
            suspects,
        } => (
            CHANGED,
            vec![since.into(), changed_after.into(), suspects.to_vec().into()],
        ),
    };
    let txn = db.begin().await?;
    let Started { at } = Started::find_by_statement(stmt(
        &txn,
        "SELECT now() AS at, set_config('plan_cache_mode', 'force_custom_plan', true)",
        vec![],
    ))
    .one(&txn)
    .await?
    .ok_or_else(|| DbErr::RecordNotFound("the check's start".into()))?;
    let rows = Broken::find_by_statement(stmt(
        &txn,
        &format!(
            "WITH {counts} \
             SELECT coalesce(d.concert_id, s.concert_id) AS concert_id, \
                    coalesce(d.n, 0)::bigint AS doubled, coalesce(s.n, 0)::bigint AS sold_unconfirmed \
             FROM doubled d FULL JOIN sold s ON s.concert_id = d.concert_id \
             ORDER BY 1"
        ),
        values,
    ))
    .all(&txn)
    .await?;
    txn.commit().await?;
    let mut violations = SeatViolations::default();
    for r in &rows {
        violations.in_two_live_reservations += r.doubled;
        violations.sold_unconfirmed += r.sold_unconfirmed;
    }
    Ok(SeatCheck {
        violations,
        broken: rows.iter().map(|r| r.concert_id).collect(),
        at,
    })
}
