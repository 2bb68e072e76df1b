//! The statements of a cancel: lock the owner's reservation, then free its seats and mark it
//! CANCELLED, in the caller's transaction.

use sea_orm::{ConnectionTrait, DbErr, FromQueryResult};

use crate::domain::reservation::Reservation;
use crate::store::reservations::COLUMNS;
use crate::store::settlement::HELD_BY_ONE;
use crate::store::stmt;

/// `user_id`'s reservation `id`, locked until the transaction ends; `None` for another
/// user's, as for a missing one.
pub async fn lock_own<C: ConnectionTrait>(
    txn: &C,
    id: i64,
    user_id: i64,
) -> Result<Option<Reservation>, DbErr> {
    Reservation::find_by_statement(stmt(
        txn,
        &format!("SELECT {COLUMNS} FROM reservations WHERE id = $1 AND user_id = $2 FOR UPDATE"),
        vec![id.into(), user_id.into()],
    ))
    .one(txn)
    .await
}

/// Frees the seats reservation `id` still holds and marks it CANCELLED; answers it and how
/// many seats were freed (fewer than its own if some were taken over after it died).
pub async fn cancel<C: ConnectionTrait>(txn: &C, id: i64) -> Result<(Reservation, i64), DbErr> {
    let row = txn
        .query_one_raw(stmt(
            txn,
            &format!(
                "WITH freed AS ( \
                    UPDATE seats SET status = 'AVAILABLE', reservation_id = NULL, held_until = NULL \
                    WHERE {HELD_BY_ONE} RETURNING id), \
                 off AS (UPDATE reservation_seats SET active = false WHERE reservation_id = $1 AND active) \
                 UPDATE reservations SET status = 'CANCELLED', updated_at = now() WHERE id = $1 \
                 RETURNING {COLUMNS}, (SELECT count(*) FROM freed) AS freed"
            ),
            vec![id.into()],
        ))
        .await?
        .ok_or(DbErr::RecordNotUpdated)?;
    let freed: i64 = row.try_get("", "freed")?;
    Ok((Reservation::from_query_result(&row, "")?, freed))
}
