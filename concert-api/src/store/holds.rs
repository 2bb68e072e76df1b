//! The statements that claim seats for a hold (DESIGN §2 step 5, §9.1): the one-statement
//! claim of free seats, and the careful takeover of seats whose hold is dead, both under the
//! buyer's lock that keeps a user within the concert's `max_tickets_per_user`.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult};

use crate::domain::reservation::Reservation;
use crate::domain::status::ReservationStatus;
use crate::events;
use crate::store::catalogue::ScheduleFacts;
use crate::store::reservations::COLUMNS;
use crate::store::stmt;

/// What a claim found.
#[derive(Debug)]
pub enum Claim {
    /// Held; `from_available` of its seats were AVAILABLE (the rest taken over from dead
    /// holds, which were HELD already).
    Held {
        reservation: Reservation,
        from_available: i64,
    },
    /// These requested seats are taken; nothing was held.
    Taken(Vec<i32>),
    /// The buyer already owns `owned` live seats of the concert and may own `limit`: this
    /// hold would pass it. Nothing was held.
    OverLimit { limit: i64, owned: i64 },
    /// Every requested seat is free, some only because their hold is dead; nothing was held.
    FreeByTakeover,
    /// The active `reservation_seats` uniqueness refused the hold: nothing was held, and the
    /// transaction is aborted (roll it back).
    Refused(Vec<i32>),
}

/// Who holds what until when: the parts of a hold the statements write.
#[derive(Debug, Clone, Copy)]
pub struct NewHold<'a> {
    pub user_id: i64,
    pub schedule: &'a ScheduleFacts,
    /// Sorted: seats are locked in seat order, so overlapping holds cannot deadlock.
    pub seat_nos: &'a [i32],
    pub held_until: DateTime<Utc>,
    /// Holds that ended before this are dead.
    pub stale_before: DateTime<Utc>,
}

fn is_unique_violation(e: &DbErr) -> bool {
    e.to_string()
        .contains("duplicate key value violates unique constraint")
}

/// Takes the buyer's lock for this concert until the transaction ends: every hold of one
/// user for one concert runs its limit count and claim one after another, so parallel holds
/// cannot each see room under `max_tickets_per_user` and together pass it. Holds of
/// different users never wait on each other.
///
/// In the same round trip it makes the rest of the hold's transaction run its prepared
/// statements on their generic plans (`plan_cache_mode`, as `SET LOCAL`). PostgreSQL
/// re-planned [`claim_free`] for every hold: its generic plan's estimate (for any number of
/// seats) is dearer than a custom plan's, so the plan cache never switched, although both
/// plans are the same index lookups. Planning cost as much as running it — pg_stat_statements
/// over a 5,000-seat flash sale: 5,124 plans for 5,108 holds, 2.76 s planning against 2.94 s
/// executing; `EXPLAIN ANALYZE` of one hold: 0.29 ms planning and 0.28 ms running with a
/// custom plan, 0.02 ms and 0.17 ms with the generic one.
pub async fn lock_buyer<C: ConnectionTrait>(
    txn: &C,
    user_id: i64,
    concert_id: i64,
) -> Result<(), DbErr> {
    txn.execute_raw(stmt(
        txn,
        "SELECT pg_advisory_xact_lock(hashtextextended('buyer:' || $1::text || ':' || $2::text, 0)), \
                set_config('plan_cache_mode', 'force_generic_plan', true)",
        vec![user_id.into(), concert_id.into()],
    ))
    .await?;
    Ok(())
}

/// The buyer's live seats for the concert and its limit: seats of HELD reservations not
/// yet dead (`$4` is `stale_before`) and of CONFIRMED ones (`$6` user, `$7` concert),
/// including those of its archived shows (the `archived_reservations_buyer` index: one probe,
/// nothing found for a buyer who never bought for an archived show).
///
/// `concert_id + 0` keeps the concert out of the index search: only the buyer's own
/// reservations are read. A new concert and its new buyers are beyond the statistics at the
/// on-sale, and the planner then took `reservations_concert_created` as readily as the
/// buyer's index, reading every reservation of the concert for each hold: 1,400 buffers and
/// 8 ms a hold by the end of a 5,000-seat sale, growing with every seat sold.
/// `nextval('reservations_id_seq')` names the sequence once, at planning;
/// `pg_get_serial_sequence` looked it up in the catalogue at every hold.
const OWNED: &str = "mine AS ( \
        SELECT ((SELECT coalesce(sum(cardinality(seat_nos)), 0) FROM reservations \
          WHERE user_id = $6 AND concert_id + 0 = $7 AND status IN ('HELD', 'CONFIRMED') \
            AND NOT (status = 'HELD' AND held_until < $4)) \
        + (SELECT coalesce(sum(cardinality(seat_nos)), 0) FROM archive.reservations \
          WHERE user_id = $6 AND concert_id = $7 AND status = 'CONFIRMED'))::bigint AS owned), \
     lim AS (SELECT max_tickets_per_user::bigint AS max_tickets FROM concerts WHERE id = $7)";

/// The common case in one statement, in the hold's transaction after [`lock_buyer`]: the
/// buyer has room under the concert's limit and every requested seat is AVAILABLE. It locks
/// the seats in seat order, and only if all of them are free and the limit allows does it
/// claim them, insert the reservation and its `reservation_seats` rows — otherwise it changes
/// nothing.
///
/// Measured alternatives: `SKIP LOCKED` or an in-statement peek made the contended case 2x
/// slower (a row lock writes WAL, so every loser paid a commit flush). A lock-free read of
/// the seats before this statement used to turn most losers away; since a seat seen taken is
/// answered from memory for 250 ms, that read only cost every winner a round trip
/// (loadtest, same machine: hold-distinct 1,615 → 2,040 holds/s without it; hold-contended
/// 20.5k → 16.6k req/s, p99 114 → 163 ms).
#[derive(Debug, FromQueryResult)]
struct FreeClaim {
    free: i64,
    dead: i64,
    owned: i64,
    max_tickets: i64,
    unavailable: Option<Vec<i32>>,
    id: Option<i64>,
    amount: Option<i64>,
    created_at: Option<DateTime<Utc>>,
}

/// Claims the hold's seats if the limit allows and every one is AVAILABLE (see
/// [`FreeClaim`]).
pub async fn claim_free<C: ConnectionTrait>(txn: &C, hold: NewHold<'_>) -> Result<Claim, DbErr> {
    let NewHold {
        user_id,
        schedule,
        seat_nos,
        held_until,
        stale_before,
    } = hold;
    let row = FreeClaim::find_by_statement(stmt(
        txn,
        &format!(
            "WITH target AS ( \
                SELECT id, seat_no, price, status, held_until FROM seats \
                WHERE schedule_id = $1 AND seat_no = ANY($2) ORDER BY seat_no FOR UPDATE), \
             verdict AS ( \
                SELECT count(*) FILTER (WHERE status = 'AVAILABLE') AS free, \
                       count(*) FILTER (WHERE status = 'HELD' AND held_until < $4) AS dead, \
                       array_agg(seat_no ORDER BY seat_no) FILTER ( \
                           WHERE NOT (status = 'AVAILABLE' OR (status = 'HELD' AND held_until < $4))) AS unavailable, \
                       sum(price) AS amount \
                FROM target), \
             {OWNED}, \
             rid AS ( \
                SELECT nextval('reservations_id_seq') AS id, v.amount \
                FROM verdict v, mine, lim WHERE v.free = $5 AND mine.owned + $5 <= lim.max_tickets), \
             claimed AS ( \
                UPDATE seats se SET status = 'HELD', reservation_id = rid.id, held_until = $3 \
                FROM target t, rid WHERE se.id = t.id RETURNING se.id), \
             res AS ( \
                INSERT INTO reservations (id, user_id, schedule_id, concert_id, seat_nos, amount, status, held_until) \
                SELECT rid.id, $6, $1, $7, $2, rid.amount, 'HELD', $3 FROM rid \
                RETURNING id, amount, created_at), \
             rs AS ( \
                INSERT INTO reservation_seats (reservation_id, seat_id) SELECT rid.id, c.id FROM rid, claimed c) \
             SELECT v.free, v.dead, mine.owned, lim.max_tickets, v.unavailable, res.id, res.amount, res.created_at \
             FROM verdict v CROSS JOIN mine CROSS JOIN lim LEFT JOIN res ON true"
        ),
        vec![
            schedule.id.into(),
            seat_nos.to_vec().into(),
            held_until.into(),
            stale_before.into(),
            (seat_nos.len() as i64).into(),
            user_id.into(),
            schedule.concert_id.into(),
        ],
    ))
    .one(txn)
    .await;
    let row = match row {
        Ok(Some(row)) => row,
        Ok(None) => return Err(DbErr::RecordNotFound("hold verdict".into())),
        Err(e) if is_unique_violation(&e) => {
            tracing::error!(error = %e, "active reservation_seats uniqueness refused a hold");
            return Ok(Claim::Refused(seat_nos.to_vec()));
        }
        Err(e) => return Err(e),
    };
    if let (Some(id), Some(amount), Some(created_at)) = (row.id, row.amount, row.created_at) {
        return Ok(Claim::Held {
            reservation: Reservation {
                id,
                user_id,
                schedule_id: schedule.id,
                concert_id: schedule.concert_id,
                seat_nos: seat_nos.to_vec(),
                amount,
                status: ReservationStatus::Held,
                held_until,
                payment_id: None,
                created_at,
            },
            from_available: seat_nos.len() as i64,
        });
    }
    if row.owned + seat_nos.len() as i64 > row.max_tickets {
        return Ok(Claim::OverLimit {
            limit: row.max_tickets,
            owned: row.owned,
        });
    }
    if row.free + row.dead == seat_nos.len() as i64 {
        return Ok(Claim::FreeByTakeover);
    }
    Ok(Claim::Taken(row.unavailable.unwrap_or_default()))
}

#[derive(Debug, Clone, FromQueryResult)]
struct Claimed {
    unavailable: Option<Vec<i32>>,
    reservation_id: Option<i64>,
    seat_id: Option<i64>,
    price: Option<i64>,
    previous: Option<i64>,
    was_available: Option<bool>,
}

/// Claims the hold's seats, taking over seats whose previous hold is dead: all of them or
/// none, in the hold's transaction after [`lock_buyer`] and [`claim_free`] (which checked the
/// limit under the same lock). Never answers [`Claim::FreeByTakeover`]. `now` dates the
/// `reservation.expired` events of the holds it ends.
///
/// Why this is safe under any concurrency: the claim is one statement that locks the
/// requested seat rows in seat-number order (so overlapping holds cannot deadlock), then
/// updates them only if every one is free — `AVAILABLE`, or `HELD` by a hold dead since
/// before `stale_before`. A concurrent hold waiting on the same row re-reads it after the
/// winner commits and finds it taken. The partial unique index on active `reservation_seats`
/// backs this: a seat in two active reservations cannot be committed even if this logic were
/// wrong. No application lock, no network call inside the transaction.
pub async fn claim_with_takeover<C: ConnectionTrait>(
    txn: &C,
    hold: NewHold<'_>,
    now: DateTime<Utc>,
) -> Result<Claim, DbErr> {
    let NewHold {
        user_id,
        schedule,
        seat_nos,
        held_until,
        stale_before,
    } = hold;
    let claimed = Claimed::find_by_statement(stmt(
        txn,
        "WITH target AS ( \
            SELECT id, seat_no, status, held_until, reservation_id AS previous FROM seats \
            WHERE schedule_id = $1 AND seat_no = ANY($2) ORDER BY seat_no FOR UPDATE), \
         verdict AS ( \
            SELECT count(*) FILTER (WHERE status = 'AVAILABLE' OR (status = 'HELD' AND held_until < $4)) AS claimable, \
                   array_agg(seat_no ORDER BY seat_no) FILTER ( \
                       WHERE NOT (status = 'AVAILABLE' OR (status = 'HELD' AND held_until < $4))) AS unavailable \
            FROM target), \
         rid AS ( \
            SELECT nextval('reservations_id_seq') AS id FROM verdict WHERE claimable = $5), \
         claimed AS ( \
            UPDATE seats se SET status = 'HELD', reservation_id = rid.id, held_until = $3 \
            FROM target t, rid WHERE se.id = t.id \
            RETURNING rid.id AS reservation_id, se.id AS seat_id, se.seat_no, se.price, t.previous, \
                      t.status = 'AVAILABLE' AS was_available) \
         SELECT v.unavailable, c.reservation_id, c.seat_id, c.price, c.previous, c.was_available \
         FROM verdict v LEFT JOIN claimed c ON true ORDER BY c.seat_no",
        vec![
            schedule.id.into(),
            seat_nos.to_vec().into(),
            held_until.into(),
            stale_before.into(),
            (seat_nos.len() as i64).into(),
        ],
    ))
    .all(txn)
    .await?;

    let Some(reservation_id) = claimed.first().and_then(|c| c.reservation_id) else {
        let missing = claimed
            .into_iter()
            .next()
            .and_then(|c| c.unavailable)
            .unwrap_or_else(|| seat_nos.to_vec());
        return Ok(Claim::Taken(missing));
    };
    let seat_ids: Vec<i64> = claimed.iter().filter_map(|c| c.seat_id).collect();
    let from_available = claimed
        .iter()
        .filter(|c| c.was_available == Some(true))
        .count() as i64;
    let mut dead: Vec<i64> = claimed.iter().filter_map(|c| c.previous).collect();
    dead.sort_unstable();
    dead.dedup();
    if !dead.is_empty() {
        // Seats taken over from dead holds: those holds end here, in the same transaction.
        retire_dead_holds(txn, &dead, &seat_ids, now).await?;
    }

    let amount: i64 = claimed.iter().filter_map(|c| c.price).sum();
    let inserted = Reservation::find_by_statement(stmt(
        txn,
        &format!(
            "WITH r AS ( \
                INSERT INTO reservations (id, user_id, schedule_id, concert_id, seat_nos, amount, status, held_until) \
                VALUES ($1, $2, $3, $4, $5, $6, 'HELD', $7) RETURNING {COLUMNS}), \
             rs AS (INSERT INTO reservation_seats (reservation_id, seat_id) SELECT $1, unnest($8::bigint[])) \
             SELECT {COLUMNS} FROM r"
        ),
        vec![
            reservation_id.into(),
            user_id.into(),
            schedule.id.into(),
            schedule.concert_id.into(),
            seat_nos.to_vec().into(),
            amount.into(),
            held_until.into(),
            seat_ids.into(),
        ],
    ))
    .one(txn)
    .await;
    match inserted {
        Ok(Some(reservation)) => Ok(Claim::Held {
            reservation,
            from_available,
        }),
        Ok(None) => Err(DbErr::RecordNotInserted),
        // The last line of defence fired: refuse rather than double-book.
        Err(e) if is_unique_violation(&e) => {
            tracing::error!(error = %e, "active reservation_seats uniqueness refused a hold");
            Ok(Claim::Refused(seat_nos.to_vec()))
        }
        Err(e) => Err(e),
    }
}

/// Ends holds whose seats were just taken over because they were dead: their
/// `reservation_seats` rows for those seats go inactive, the reservation becomes EXPIRED, and
/// `reservation.expired` is written to the outbox.
async fn retire_dead_holds<C: ConnectionTrait>(
    txn: &C,
    dead: &[i64],
    seat_ids: &[i64],
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    #[derive(FromQueryResult)]
    struct Gone {
        id: i64,
        user_id: i64,
    }
    let gone = Gone::find_by_statement(stmt(
        txn,
        "WITH off AS (UPDATE reservation_seats SET active = false WHERE active AND seat_id = ANY($2)) \
         UPDATE reservations SET status = 'EXPIRED', updated_at = now() \
         WHERE id = ANY($1) AND status = 'HELD' RETURNING id, user_id",
        vec![dead.to_vec().into(), seat_ids.to_vec().into()],
    ))
    .all(txn)
    .await?;
    for g in gone {
        events::reservation_expired(g.id, g.user_id, now)
            .enqueue(txn)
            .await?;
    }
    Ok(())
}
