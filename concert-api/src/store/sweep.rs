//! The expiry sweep's statements (DESIGN §2 "Expiry"): dead holds become EXPIRED, their
//! seats free, and `reservation.expired` is written for each.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, FromQueryResult, TransactionTrait};

use crate::events;
use crate::store::stmt;

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sweep {
    pub seats_freed: u64,
    pub reservations_expired: u64,
}

/// Marks holds dead since before `stale_before` EXPIRED, frees their seats and emits
/// `reservation.expired` (dated `now`), `batch` rows per transaction until none is left.
/// Never touches a CONFIRMED reservation or a SOLD seat (their status is not HELD). `SKIP
/// LOCKED` everywhere: rows a hold or a confirmation is working on are left for the next
/// sweep, so the sweeper never waits and never deadlocks with them.
pub async fn expire_holds(
    db: &DatabaseConnection,
    stale_before: DateTime<Utc>,
    now: DateTime<Utc>,
    batch: i64,
) -> Result<Sweep, DbErr> {
    #[derive(FromQueryResult)]
    struct Gone {
        id: i64,
        user_id: i64,
    }
    let mut sweep = Sweep::default();
    loop {
        let txn = db.begin().await?;
        let freed = txn
            .execute_raw(stmt(
                &txn,
                "WITH stale AS ( \
                    SELECT id FROM seats WHERE status = 'HELD' AND held_until < $1 \
                    ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED), \
                 off AS (UPDATE reservation_seats SET active = false WHERE active AND seat_id IN (SELECT id FROM stale)) \
                 UPDATE seats se SET status = 'AVAILABLE', reservation_id = NULL, held_until = NULL \
                 FROM stale WHERE se.id = stale.id",
                vec![stale_before.into(), batch.into()],
            ))
            .await?
            .rows_affected();
        let gone = Gone::find_by_statement(stmt(
            &txn,
            "WITH dead AS ( \
                SELECT id FROM reservations WHERE status = 'HELD' AND held_until < $1 \
                ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) \
             UPDATE reservations r SET status = 'EXPIRED', updated_at = now() FROM dead \
             WHERE r.id = dead.id RETURNING r.id, r.user_id",
            vec![stale_before.into(), batch.into()],
        ))
        .all(&txn)
        .await?;
        for g in &gone {
            events::reservation_expired(g.id, g.user_id, now)
                .enqueue(&txn)
                .await?;
        }
        txn.commit().await?;
        sweep.seats_freed += freed;
        sweep.reservations_expired += gone.len() as u64;
        if (freed as i64) < batch && (gone.len() as i64) < batch {
            return Ok(sweep);
        }
    }
}
