//! The reads reconciliation chases payments with, and the outbox detail of re-publishing.
//!
//! "Unsettled" is a COMPLETED payment whose confirmation has not been seen (`confirmed_at`
//! is NULL): the partial index `payments_unsettled (created_at)` holds exactly those.

use chrono::{DateTime, Utc};
use sea_orm::prelude::Uuid;
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult, Value};

use crate::store::payments::PaymentRow;
use crate::store::stmt;

const COLUMNS: &str = "id, user_id, reservation_id, amount, status, created_at";

/// Unsettled payments made before `before`: the ones to settle directly with concert-api.
/// The oldest first, in the order of the `payments_unsettled` partial index (as in
/// [`due_for_republish`]), so only unsettled payments are read whatever the statistics say:
/// in id order the planner may walk the primary key through every payment (the expiry
/// sweep did, after an `ANALYZE` taken during a sale).
/// A plain read, as for re-publishing: only batch's leader reconciles, and settling twice is
/// harmless (concert-api's inbox, payment-api's refund-once).
pub async fn overdue<C: ConnectionTrait>(
    db: &C,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<PaymentRow>, DbErr> {
    PaymentRow::find_by_statement(stmt(
        db,
        &format!(
            "SELECT {COLUMNS} FROM payments \
             WHERE status = 'COMPLETED' AND confirmed_at IS NULL AND created_at < $1 \
             ORDER BY created_at, id LIMIT $2"
        ),
        vec![before.into(), limit.into()],
    ))
    .all(db)
    .await
}

/// Unsettled payments made in `[overdue_before, before)` and not re-published since
/// `before`: the ones whose `payment.completed` is published again. Older ones are settled
/// directly instead (see [`overdue`]).
pub async fn due_for_republish<C: ConnectionTrait>(
    db: &C,
    before: DateTime<Utc>,
    overdue_before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<PaymentRow>, DbErr> {
    PaymentRow::find_by_statement(stmt(
        db,
        &format!(
            "SELECT {COLUMNS} FROM payments \
             WHERE status = 'COMPLETED' AND confirmed_at IS NULL \
               AND created_at < $1 AND created_at >= $2 \
               AND (republished_at IS NULL OR republished_at < $1) \
             ORDER BY created_at, id LIMIT $3"
        ),
        vec![before.into(), overdue_before.into(), limit.into()],
    ))
    .all(db)
    .await
}

/// Makes way for writing an event again under the same id (the outbox keeps event ids
/// unique): deletes its published row, and says whether it may be written — not if a copy is
/// still waiting for the relay, which will send it anyway. A pending row may be locked by a
/// relay mid-send (for as long as the broker takes to fail); neither statement waits for it:
/// the DELETE only matches published rows, and a plain read takes no lock.
pub async fn clear_published<C: ConnectionTrait>(txn: &C, event_id: Uuid) -> Result<bool, DbErr> {
    let row = txn
        .query_one_raw(stmt(
            txn,
            "WITH gone AS (DELETE FROM outbox WHERE event_id = $1 AND published_at IS NOT NULL) \
             SELECT NOT EXISTS ( \
                SELECT 1 FROM outbox WHERE event_id = $1 AND published_at IS NULL) AS free",
            vec![event_id.into()],
        ))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("outbox check".into()))?;
    row.try_get("", "free")
}

/// How many unsettled payments were made before each of `cutoffs` (one index range scan).
pub async fn unsettled_before<C: ConnectionTrait, const N: usize>(
    db: &C,
    cutoffs: [DateTime<Utc>; N],
) -> Result<[i64; N], DbErr> {
    let Some(latest) = cutoffs.iter().max().copied() else {
        return Ok([0; N]);
    };
    let columns: Vec<String> = (1..=N)
        .map(|i| format!("count(*) FILTER (WHERE created_at < ${i})::bigint AS c{i}"))
        .collect();
    let mut values: Vec<Value> = cutoffs.iter().map(|c| (*c).into()).collect();
    values.push(latest.into());
    let row = db
        .query_one_raw(stmt(
            db,
            &format!(
                "SELECT {} FROM payments \
                 WHERE status = 'COMPLETED' AND confirmed_at IS NULL AND created_at < ${}",
                columns.join(", "),
                N + 1
            ),
            values,
        ))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("unsettled payment counts".into()))?;
    let mut counts = [0; N];
    for (i, count) in counts.iter_mut().enumerate() {
        *count = row.try_get("", &format!("c{}", i + 1))?;
    }
    Ok(counts)
}

/// Forgets the confirmations seen at or after `since` (and when they were re-published), so
/// reconciliation chases those payments again. The number of payments reopened.
pub async fn reopen_since<C: ConnectionTrait>(db: &C, since: DateTime<Utc>) -> Result<u64, DbErr> {
    Ok(db
        .execute_raw(stmt(
            db,
            "UPDATE payments SET confirmed_at = NULL, republished_at = NULL \
             WHERE status = 'COMPLETED' AND confirmed_at >= $1",
            vec![since.into()],
        ))
        .await?
        .rows_affected())
}
