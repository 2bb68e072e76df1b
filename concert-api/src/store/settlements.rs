//! What a settlement left behind, read back: the `reservation.rejected` event written for a
//! payment, so a repeated settlement can answer the verdict already given.

use common::events::RESERVATION_REJECTED;
use sea_orm::prelude::Uuid;
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult, Statement};

/// A `reservation.rejected` event in the outbox: its id and the reason it gave.
#[derive(Debug, Clone, PartialEq, Eq, FromQueryResult)]
pub struct Rejection {
    pub event_id: Uuid,
    pub reason: String,
}

/// The rejection just written for `payment_id` in the caller's (uncommitted) transaction.
/// Unpublished and keyed by reservation, so it is found through the outbox's pending index.
pub async fn written_now<C: ConnectionTrait>(
    txn: &C,
    reservation_id: i64,
    payment_id: i64,
) -> Result<Option<Rejection>, DbErr> {
    find(
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
pub async fn first_for<C: ConnectionTrait>(
    db: &C,
    reservation_id: i64,
    payment_id: i64,
) -> Result<Option<Rejection>, DbErr> {
    find(
        db,
        "SELECT event_id, payload->'data'->>'reason' AS reason FROM outbox \
         WHERE key = $1 AND topic = $3 AND payload->'data'->>'payment_id' = $2 \
         ORDER BY id LIMIT 1",
        reservation_id,
        payment_id,
    )
    .await
}

async fn find<C: ConnectionTrait>(
    db: &C,
    sql: &str,
    reservation_id: i64,
    payment_id: i64,
) -> Result<Option<Rejection>, DbErr> {
    // Keys and JSON fields are text: compare as text, so no row of another shape can fail a cast.
    Rejection::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        sql,
        [
            reservation_id.to_string().into(),
            payment_id.to_string().into(),
            RESERVATION_REJECTED.into(),
        ],
    ))
    .one(db)
    .await
}
