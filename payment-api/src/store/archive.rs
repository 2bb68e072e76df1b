//! The statements of archiving payments (`domain::archive`): lock the payments of some
//! reservations, then move them into `archive.payments` (`migration::ARCHIVE`), in the
//! caller's transaction.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult};

use crate::store::payments::PaymentStatus;
use crate::store::stmt;

/// A payment as archival judges it.
#[derive(Debug, Clone, PartialEq, Eq, FromQueryResult)]
pub struct PaymentState {
    pub id: i64,
    pub reservation_id: i64,
    pub status: PaymentStatus,
    pub confirmed_at: Option<DateTime<Utc>>,
}

/// The hot payments of `reservations`, locked in id order until the transaction ends (a
/// refund or a confirmation of one of them waits, and then finds it gone).
pub async fn lock_for_reservations<C: ConnectionTrait>(
    txn: &C,
    reservations: &[i64],
) -> Result<Vec<PaymentState>, DbErr> {
    PaymentState::find_by_statement(stmt(
        txn,
        "SELECT id, reservation_id, status, confirmed_at FROM payments WHERE reservation_id = ANY($1) \
         ORDER BY id FOR UPDATE",
        vec![reservations.to_vec().into()],
    ))
    .all(txn)
    .await
}

/// Moves the payments of `reservations` into the archive, stamped `archived_at`: one
/// `DELETE … RETURNING` feeding an `INSERT`, so a payment is in exactly one of the two tables
/// whatever a reader's snapshot; payments already moved are simply not found (a no-op).
pub async fn move_for_reservations<C: ConnectionTrait>(
    txn: &C,
    reservations: &[i64],
    archived_at: DateTime<Utc>,
) -> Result<u64, DbErr> {
    const COLUMNS: &str = "id, user_id, reservation_id, amount, status, created_at, \
                           refunded_at, confirmed_at, republished_at";
    Ok(txn
        .execute_raw(stmt(
            txn,
            &format!(
                "WITH moved AS ( \
                    DELETE FROM payments WHERE reservation_id = ANY($1) RETURNING {COLUMNS}) \
                 INSERT INTO archive.payments ({COLUMNS}, archived_at) \
                 SELECT {COLUMNS}, $2 FROM moved"
            ),
            vec![reservations.to_vec().into(), archived_at.into()],
        ))
        .await?
        .rows_affected())
}

/// The tables archival deletes from and inserts into.
pub const TABLES: [&str; 2] = ["payments", "archive.payments"];

/// `VACUUM (ANALYZE)` of [`TABLES`]: outside any transaction (VACUUM refuses one).
pub async fn vacuum<C: ConnectionTrait>(db: &C) -> Result<(), DbErr> {
    db.execute_unprepared(&format!("VACUUM (ANALYZE) {}", TABLES.join(", ")))
        .await
        .map(|_| ())
}
