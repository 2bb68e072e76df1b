//! The expiry sweep's statements (DESIGN §2 "Expiry"): dead holds become EXPIRED, their
//! seats free, and `reservation.expired` is written for each.

use chrono::{DateTime, Utc};
use sea_orm::{DatabaseConnection, DbErr, FromQueryResult, TransactionTrait};

use crate::events;
use crate::store::inventory::{Change, Inventory};
use crate::store::settlement::HOLDS_NO_SEAT;
use crate::store::stmt;

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sweep {
    pub seats_freed: u64,
    pub reservations_expired: u64,
    /// The seats freed, per schedule: the inventory's changes, applied after each commit.
    pub changes: Vec<Change>,
}

/// Marks holds dead since before `stale_before` EXPIRED, frees their seats and emits
/// `reservation.expired` (dated `now`), `batch` rows per transaction until none is left.
/// Never touches a CONFIRMED reservation or a SOLD seat (their status is not HELD). `SKIP
/// LOCKED` everywhere: rows a hold or a confirmation is working on are left for the next
/// sweep, so the sweeper never waits and never deadlocks with them.
/// Each transaction's freed seats move from `held` to `available` in `inventory` (if
/// given) right after it commits.
///
/// The seats are found through their reservations: `seats` has no index on `held_until` or
/// `reservation_id` (a hold's and a sale's updates of a seat stay HOT, see the migration
/// `SEATS_HOT_UPDATES`). That finds every dead seat because a HELD seat's reservation is
/// always HELD: a takeover ends a dead hold only once none of its seats is left HELD (see
/// `holds::retire_dead_holds`), and here a reservation expires only when the first statement
/// left none of its seats HELD (one locked by a hold or a payment stays for the next sweep,
/// and with it its reservation).
///
/// The longest dead go first, in the order of the `status = 'HELD'` partial index on
/// `reservations.held_until`, so each statement reads only dead holds whatever the statistics
/// say. In id order the planner walked the primary key instead whenever the last `ANALYZE`
/// had run during a sale (it then expected 20,000 dead holds where none were left): all
/// 744,000 reservations of the benchmark's database read, 170 ms of PostgreSQL every second
/// the sweep ran (0.3 ms through the index, `EXPLAIN ANALYZE` with those statistics). While they
/// lasted, PostgreSQL for batch took 0.76–1.23 ms of each purchase in four sales
/// (`bench/purchase-cost.sh`); 0.13–0.31 ms otherwise.
pub async fn expire_holds(
    db: &DatabaseConnection,
    inventory: Option<&Inventory>,
    stale_before: DateTime<Utc>,
    now: DateTime<Utc>,
    batch: i64,
) -> Result<Sweep, DbErr> {
    #[derive(FromQueryResult)]
    struct Gone {
        id: i64,
        user_id: i64,
    }
    #[derive(FromQueryResult)]
    struct Freed {
        concert_id: i64,
        schedule_id: i64,
        seats: i64,
    }
    let mut sweep = Sweep::default();
    loop {
        let txn = db.begin().await?;
        let groups = Freed::find_by_statement(stmt(
            &txn,
            "WITH stale AS ( \
                SELECT se.id FROM reservations r \
                JOIN reservation_seats rs ON rs.reservation_id = r.id \
                JOIN seats se ON se.id = rs.seat_id \
                WHERE r.status = 'HELD' AND r.held_until < $1 \
                  AND se.reservation_id = r.id AND se.status = 'HELD' \
                ORDER BY r.held_until, r.id, se.id LIMIT $2 FOR UPDATE OF se SKIP LOCKED), \
             off AS (UPDATE reservation_seats SET active = false WHERE active AND seat_id IN (SELECT id FROM stale)), \
             freed AS ( \
                UPDATE seats se SET status = 'AVAILABLE', reservation_id = NULL, held_until = NULL \
                FROM stale WHERE se.id = stale.id RETURNING se.schedule_id) \
             SELECT sc.concert_id, f.schedule_id, count(*) AS seats \
             FROM freed f JOIN schedules sc ON sc.id = f.schedule_id \
             GROUP BY sc.concert_id, f.schedule_id",
            vec![stale_before.into(), batch.into()],
        ))
        .all(&txn)
        .await?;
        let freed: u64 = groups.iter().map(|g| g.seats as u64).sum();
        let gone = Gone::find_by_statement(stmt(
            &txn,
            &format!(
                "WITH dead AS ( \
                    SELECT id FROM reservations r WHERE status = 'HELD' AND held_until < $1 \
                    AND {HOLDS_NO_SEAT} ORDER BY held_until, id LIMIT $2 FOR UPDATE SKIP LOCKED) \
                 UPDATE reservations r SET status = 'EXPIRED', updated_at = now() FROM dead \
                 WHERE r.id = dead.id RETURNING r.id, r.user_id"
            ),
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
        let changes: Vec<Change> = groups
            .iter()
            .map(|g| Change::freed(g.concert_id, g.schedule_id, g.seats))
            .collect();
        if let Some(inventory) = inventory {
            inventory.apply_all(changes.iter().copied()).await;
        }
        sweep.changes.extend(changes);
        sweep.seats_freed += freed;
        sweep.reservations_expired += gone.len() as u64;
        if (freed as i64) < batch && (gone.len() as i64) < batch {
            return Ok(sweep);
        }
    }
}
