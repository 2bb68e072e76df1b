//! The statements of a settlement (DESIGN §2 step 8), each in the caller's transaction: lock
//! the reservation, sell its seats and confirm it, or end a hold that cannot be paid; and the
//! `reservation.rejected` event written for a payment, read back so a repeated settlement can
//! answer the verdict already given.

use chrono::{DateTime, Utc};
use common::events::{PaymentCompleted, RESERVATION_CONFIRMED, RESERVATION_REJECTED};
use common::outbox;
use sea_orm::prelude::Uuid;
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult, Value};

use crate::domain::reservation::Reservation;
use crate::domain::status::ReservationStatus;
use crate::store::reservations::COLUMNS;
use crate::store::stmt;

/// Reservation `$1`'s seats, `id` and `status`: those it ever claimed (`reservation_seats`)
/// that it still owns. `seats` has no index on `reservation_id` (its updates stay HOT: the
/// migration `SEATS_HOT_UPDATES`); a reservation's rows of `reservation_seats` are a range of
/// their primary key.
pub(crate) const OWNED_BY_ONE: &str = "SELECT se.id, se.status FROM reservation_seats rs \
    JOIN seats se ON se.id = rs.seat_id WHERE rs.reservation_id = $1 AND se.reservation_id = $1";

/// True of a reservation `r` that holds no seat any more (found as in [`OWNED_BY_ONE`]): only
/// then may a HELD one end, so that a HELD seat's reservation is always HELD, which the
/// expiry sweep relies on to find every dead seat (`sweep::expire_holds`).
pub(crate) const HOLDS_NO_SEAT: &str = "NOT EXISTS (SELECT 1 FROM reservation_seats rs \
    JOIN seats se ON se.id = rs.seat_id \
    WHERE rs.reservation_id = r.id AND se.reservation_id = r.id AND se.status = 'HELD')";

/// The condition of an `UPDATE seats` on the seats reservation `$1` still holds, found as in
/// [`OWNED_BY_ONE`].
pub(crate) const HELD_BY_ONE: &str = "id IN (SELECT seat_id FROM reservation_seats WHERE reservation_id = $1) \
    AND reservation_id = $1 AND status = 'HELD'";

/// Reservation `id`, locked until the transaction ends.
pub async fn lock<C: ConnectionTrait>(txn: &C, id: i64) -> Result<Option<Reservation>, DbErr> {
    Reservation::find_by_statement(stmt(
        txn,
        &format!("SELECT {COLUMNS} FROM reservations WHERE id = $1 FOR UPDATE"),
        vec![id.into()],
    ))
    .one(txn)
    .await
}

/// Sells `r` to `payment_id`, in one statement: marks SOLD exactly the seats `r` still holds,
/// and only if it still holds every one of them, and then (only then) marks `r` CONFIRMED and
/// writes `confirmed`, its `reservation.confirmed` outbox row ([`outbox::row`]). Returns how
/// many seats were sold: all of `r.seat_nos` (sold), or fewer (nothing else was written).
pub async fn sell<C: ConnectionTrait>(
    txn: &C,
    r: &Reservation,
    payment_id: i64,
    confirmed: [Value; 5],
) -> Result<u64, DbErr> {
    #[derive(FromQueryResult)]
    struct Sold {
        sold: i64,
    }
    // The seats are found through `reservation_seats` (materialized: every seat the
    // reservation ever claimed, kept only if it is still the seat's owner; `seats` has no
    // index on `reservation_id`, see the migration `SEATS_HOT_UPDATES`) and updated by
    // primary key. The owner and status are re-checked on each locked row (a takeover may
    // have won it). Every part sees the seats `sold` returns, so the reservation and its
    // event follow only a whole sale.
    let mut values: Vec<Value> = vec![
        r.id.into(),
        (r.seat_nos.len() as i64).into(),
        payment_id.into(),
    ];
    values.extend(confirmed);
    let sold = Sold::find_by_statement(stmt(
        txn,
        &format!(
            "WITH mine AS MATERIALIZED ({OWNED_BY_ONE}), \
             sold AS ( \
                UPDATE seats SET status = 'SOLD', held_until = NULL FROM mine \
                WHERE seats.id = mine.id \
                AND seats.reservation_id = $1 AND seats.status = 'HELD' \
                AND (SELECT count(*) FROM mine WHERE status = 'HELD') = $2 \
                RETURNING seats.id), \
             whole AS (SELECT count(*) AS sold, count(*) = $2 AS ok FROM sold), \
             confirmed AS ( \
                UPDATE reservations SET status = 'CONFIRMED', payment_id = $3, updated_at = now() \
                WHERE id = $1 AND (SELECT ok FROM whole)), \
             event AS ( \
                INSERT INTO {} SELECT $4, $5, $6, $7, $8 WHERE (SELECT ok FROM whole)) \
             SELECT sold FROM whole",
            outbox::ROW_COLUMNS
        ),
        values,
    ))
    .one(txn)
    .await?
    .map_or(0, |s| s.sold as u64);
    if sold as usize == r.seat_nos.len() {
        outbox::written();
    }
    Ok(sold)
}

/// A payment [`sell_each_at_once`] settled: its reservation as it now stands (CONFIRMED, with the
/// payment), and how many seats it bought.
#[derive(Debug, FromQueryResult)]
pub struct SoldAtOnce {
    /// The event that sold it.
    pub event_id: Uuid,
    pub reservation_id: i64,
    pub concert_id: i64,
    pub schedule_id: i64,
    pub seat_nos: Vec<i32>,
    pub amount: i64,
    pub held_until: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub sold: i64,
}

impl SoldAtOnce {
    /// The reservation confirmed, as a read of it would now find it.
    pub fn confirmed(&self, payment: &PaymentCompleted) -> Reservation {
        Reservation {
            id: payment.reservation_id,
            user_id: payment.user_id,
            schedule_id: self.schedule_id,
            concert_id: self.concert_id,
            seat_nos: self.seat_nos.clone(),
            amount: self.amount,
            status: ReservationStatus::Confirmed,
            held_until: self.held_until,
            payment_id: Some(payment.payment_id),
            created_at: self.created_at,
        }
    }
}

/// One payment for [`sell_each_at_once`]: the event that announced it, and the id, key and
/// JSON of its `reservation.confirmed` as far as the payment tells it (the statement adds what
/// only the reservation knows: its `concert_id`, `schedule_id` and `seat_nos`).
pub struct ToSell<'a> {
    pub event_id: Uuid,
    pub payment: &'a PaymentCompleted,
    pub confirmed_id: Uuid,
    pub confirmed_key: String,
    pub confirmed_payload: String,
}

/// The common settlement, for one payment or several, in one statement and no transaction of
/// its own: each payment that is the first delivery of its event, for a reservation HELD by its
/// payer, paid by `held_until`, that still holds every one of its seats, is sold there, all in
/// one: the event recorded in the inbox for `consumer`, the seats SOLD, the reservation
/// CONFIRMED and its `reservation.confirmed` written to the outbox (with `traceparent`).
/// Answers those it sold. Every other payment (a repeat, a rejection, an archived show, a lost
/// seat) changed nothing, for the caller to settle in a transaction (`lock`, `sell`, ...),
/// which judges every case. Two payments for one reservation in the list: only the first (by
/// event id) is tried here. One round trip instead of five a payment (BEGIN, inbox, lock,
/// sell, COMMIT).
///
/// The reservations and then their seats are locked before anything is decided, as in the
/// transaction, so what is judged is what is written: a reservation's seats are sold all
/// together or not at all. The inbox rows come before the sale (`first`, as in
/// `inbox::once_in_statement`): a concurrent delivery of the same event waits on its row and
/// then sells nothing. Locks are taken in one order whatever the list's: the reservations by
/// id, then their seats by id, and the inbox rows by event id, so two such statements wait for
/// one another instead of deadlocking.
///
/// The reservations are found by primary key only: `status || ''` matches no index predicate.
/// Written `status = 'HELD' AND held_until >= paid_at`, it let the planner walk the
/// `reservations_held_until` partial index from the payment's time on, through every hold of
/// the sale still in it (each one's `held_until` lies minutes ahead), filtering by id: 0.58 ms
/// a settlement over a 5,000-seat sale (pg_stat_statements), growing with the sale.
pub async fn sell_each_at_once<C: ConnectionTrait>(
    db: &C,
    consumer: &str,
    payments: &[ToSell<'_>],
    traceparent: Option<String>,
) -> Result<Vec<SoldAtOnce>, DbErr> {
    let reservation_ids: Vec<i64> = payments.iter().map(|p| p.payment.reservation_id).collect();
    let user_ids: Vec<i64> = payments.iter().map(|p| p.payment.user_id).collect();
    let paid_at: Vec<DateTime<Utc>> = payments.iter().map(|p| p.payment.paid_at).collect();
    let payment_ids: Vec<i64> = payments.iter().map(|p| p.payment.payment_id).collect();
    let event_ids: Vec<Uuid> = payments.iter().map(|p| p.event_id).collect();
    let confirmed_ids: Vec<Uuid> = payments.iter().map(|p| p.confirmed_id).collect();
    let keys: Vec<String> = payments.iter().map(|p| p.confirmed_key.clone()).collect();
    let bodies: Vec<String> = payments
        .iter()
        .map(|p| p.confirmed_payload.clone())
        .collect();
    let sold = SoldAtOnce::find_by_statement(stmt(
        db,
        &format!(
            "WITH p AS MATERIALIZED ( \
                SELECT DISTINCT ON (reservation_id) * FROM unnest( \
                    $1::bigint[], $2::bigint[], $3::timestamptz[], $4::bigint[], $5::uuid[], \
                    $6::uuid[], $7::text[], $8::text[]) \
                  AS p (reservation_id, user_id, paid_at, payment_id, event_id, out_id, out_key, body) \
                ORDER BY reservation_id, event_id), \
             r AS MATERIALIZED ( \
                SELECT res.id, res.concert_id, res.schedule_id, res.seat_nos, res.amount, \
                    res.held_until, res.created_at, p.payment_id, p.event_id, p.out_id, p.out_key, p.body \
                FROM p JOIN reservations res ON res.id = p.reservation_id \
                WHERE res.status || '' = 'HELD' AND res.user_id = p.user_id AND res.held_until >= p.paid_at \
                ORDER BY res.id \
                FOR UPDATE OF res), \
             mine AS MATERIALIZED ( \
                SELECT se.id, se.status, se.reservation_id FROM seats se \
                WHERE se.id IN (SELECT rs.seat_id FROM reservation_seats rs \
                    WHERE rs.reservation_id = ANY (ARRAY (SELECT id FROM r))) \
                  AND se.reservation_id = ANY (ARRAY (SELECT id FROM r)) \
                ORDER BY se.id FOR UPDATE OF se), \
             sellable AS MATERIALIZED ( \
                SELECT r.* FROM r WHERE cardinality(r.seat_nos) = ( \
                    SELECT count(*) FROM mine WHERE mine.reservation_id = r.id AND mine.status = 'HELD')), \
             first AS ( \
                INSERT INTO inbox (event_id, consumer) \
                SELECT event_id, $9 FROM sellable ORDER BY event_id \
                ON CONFLICT DO NOTHING RETURNING event_id), \
             done AS MATERIALIZED ( \
                SELECT * FROM sellable WHERE event_id IN (SELECT event_id FROM first)), \
             sold AS ( \
                UPDATE seats SET status = 'SOLD', held_until = NULL FROM mine \
                WHERE seats.id = mine.id AND mine.reservation_id IN (SELECT id FROM done) \
                RETURNING mine.reservation_id), \
             confirmed AS ( \
                UPDATE reservations SET status = 'CONFIRMED', payment_id = done.payment_id, updated_at = now() \
                FROM done WHERE reservations.id = done.id), \
             event AS ( \
                INSERT INTO {} SELECT done.out_id, $10, done.out_key, \
                    done.body::jsonb || jsonb_build_object('data', (done.body::jsonb -> 'data') || jsonb_build_object( \
                        'concert_id', done.concert_id, 'schedule_id', done.schedule_id, \
                        'seat_nos', to_jsonb(done.seat_nos))), \
                    $11 \
                FROM done ORDER BY done.id) \
             SELECT done.event_id, done.id AS reservation_id, done.concert_id, done.schedule_id, done.seat_nos, \
                 done.amount, done.held_until, done.created_at, \
                 (SELECT count(*) FROM sold WHERE sold.reservation_id = done.id) AS sold \
             FROM done ORDER BY done.id",
            outbox::ROW_COLUMNS
        ),
        vec![
            reservation_ids.into(),
            user_ids.into(),
            paid_at.into(),
            payment_ids.into(),
            event_ids.into(),
            confirmed_ids.into(),
            keys.into(),
            bodies.into(),
            consumer.into(),
            RESERVATION_CONFIRMED.into(),
            traceparent.into(),
        ],
    ))
    .all(db)
    .await?;
    if !sold.is_empty() {
        outbox::written();
    }
    Ok(sold)
}

/// Ends hold `id` REJECTED and frees its seats (found through `reservation_seats`, as in
/// [`sell`]); answers how many seats were freed.
pub async fn end_rejected<C: ConnectionTrait>(txn: &C, id: i64) -> Result<u64, DbErr> {
    #[derive(FromQueryResult)]
    struct Freed {
        freed: i64,
    }
    Ok(Freed::find_by_statement(stmt(
        txn,
        &format!("WITH freed AS (UPDATE seats SET status = 'AVAILABLE', reservation_id = NULL, held_until = NULL \
             WHERE {HELD_BY_ONE} RETURNING id), \
         off AS (UPDATE reservation_seats SET active = false WHERE reservation_id = $1 AND active), \
         r AS (UPDATE reservations SET status = 'REJECTED', updated_at = now() WHERE id = $1) \
         SELECT count(*) AS freed FROM freed"),
        vec![id.into()],
    ))
    .one(txn)
    .await?
    .map_or(0, |f| f.freed as u64))
}

/// A `reservation.rejected` event in the outbox: its id and the reason it gave.
#[derive(Debug, Clone, PartialEq, Eq, FromQueryResult)]
pub struct WrittenRejection {
    pub event_id: Uuid,
    pub reason: String,
}

/// The rejection just written for `payment_id` in the caller's (uncommitted) transaction.
/// Unpublished and keyed by reservation, so it is found through the outbox's pending index.
pub async fn rejection_written_now<C: ConnectionTrait>(
    txn: &C,
    reservation_id: i64,
    payment_id: i64,
) -> Result<Option<WrittenRejection>, DbErr> {
    find_rejection(
        txn,
        "SELECT event_id, payload->'data'->>'reason' AS reason FROM outbox \
         WHERE published_at IS NULL AND key = $1 AND topic = $3 \
           AND payload->'data'->>'payment_id' = $2 \
         ORDER BY id DESC LIMIT 1",
        reservation_id,
        payment_id,
    )
    .await
}

/// The first rejection ever written for `payment_id`, published or not. Published rows have
/// no index on `key`, so this scans the outbox (a week of events); it only runs when a
/// settlement is asked for again (the direct path after the consumer, or the other way
/// round), which is rare.
pub async fn first_rejection<C: ConnectionTrait>(
    db: &C,
    reservation_id: i64,
    payment_id: i64,
) -> Result<Option<WrittenRejection>, DbErr> {
    find_rejection(
        db,
        "SELECT event_id, payload->'data'->>'reason' AS reason FROM outbox \
         WHERE key = $1 AND topic = $3 AND payload->'data'->>'payment_id' = $2 \
         ORDER BY id LIMIT 1",
        reservation_id,
        payment_id,
    )
    .await
}

async fn find_rejection<C: ConnectionTrait>(
    db: &C,
    sql: &str,
    reservation_id: i64,
    payment_id: i64,
) -> Result<Option<WrittenRejection>, DbErr> {
    // Keys and JSON fields are text: compare as text, so no row of another shape can fail a cast.
    WrittenRejection::find_by_statement(stmt(
        db,
        sql,
        vec![
            reservation_id.to_string().into(),
            payment_id.to_string().into(),
            RESERVATION_REJECTED.into(),
        ],
    ))
    .one(db)
    .await
}
