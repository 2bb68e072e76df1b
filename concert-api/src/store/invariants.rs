//! The seat invariant (DESIGN §9, 1) read from live data, for batch's watchdog: a seat is in
//! at most one live reservation, and a SOLD seat belongs to a CONFIRMED one.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr};

use crate::store::stmt;

/// What breaks the seat invariant, over the dates still to come or just played (a seat of a
/// show long played cannot be sold again, and the history stays out of the scan). Archived
/// dates are left out too: their rows have left these tables (`domain::archive`, at least a
/// day after the show, all final), so a check never sees half of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeatViolations {
    /// Seats (date, number) in more than one HELD or CONFIRMED reservation.
    pub in_two_live_reservations: i64,
    /// SOLD seats whose reservation is not CONFIRMED.
    pub sold_unconfirmed: i64,
}

impl SeatViolations {
    pub fn total(&self) -> i64 {
        self.in_two_live_reservations + self.sold_unconfirmed
    }
}

/// Reads both counts in one statement (one snapshot) for the dates starting after `since`.
pub async fn seat_violations<C: ConnectionTrait>(
    db: &C,
    since: DateTime<Utc>,
) -> Result<SeatViolations, DbErr> {
    let row = db
        .query_one_raw(stmt(
            db,
            "WITH current AS (SELECT id FROM schedules WHERE starts_at > $1 AND archived_at IS NULL) \
             SELECT \
               (SELECT count(*) FROM ( \
                  SELECT r.schedule_id, seat_no FROM reservations r \
                  CROSS JOIN LATERAL unnest(r.seat_nos) AS seat_no \
                  WHERE r.status IN ('HELD', 'CONFIRMED') \
                    AND r.schedule_id IN (SELECT id FROM current) \
                  GROUP BY r.schedule_id, seat_no HAVING count(*) > 1) doubled)::bigint AS doubled, \
               (SELECT count(*) FROM seats s JOIN reservations r ON r.id = s.reservation_id \
                  WHERE s.status = 'SOLD' AND r.status <> 'CONFIRMED' \
                    AND s.schedule_id IN (SELECT id FROM current))::bigint AS sold_unconfirmed",
            vec![since.into()],
        ))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("seat invariants".into()))?;
    Ok(SeatViolations {
        in_two_live_reservations: row.try_get("", "doubled")?,
        sold_unconfirmed: row.try_get("", "sold_unconfirmed")?,
    })
}
