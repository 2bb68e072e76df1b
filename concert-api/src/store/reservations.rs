//! Reading reservations: one by id, or a user's newest — hot or archived alike (a reservation
//! of an archived show is in `archive.reservations`, unchanged, `migration::ARCHIVE`).

use sea_orm::{ConnectionTrait, DbErr, FromQueryResult};

use crate::domain::reservation::Reservation;
use crate::store::stmt;

/// The columns of a [`Reservation`], for every statement that returns one.
pub(crate) const COLUMNS: &str = "id, user_id, schedule_id, concert_id, seat_nos, amount, status, held_until, payment_id, created_at";

/// Reservation `id`, from the hot table or the archive. One statement, so one snapshot: the
/// archival that moves it commits wholly before or after, and it is found in exactly one.
pub async fn find<C: ConnectionTrait>(db: &C, id: i64) -> Result<Option<Reservation>, DbErr> {
    Reservation::find_by_statement(stmt(
        db,
        &format!(
            "SELECT {COLUMNS} FROM reservations WHERE id = $1 \
             UNION ALL SELECT {COLUMNS} FROM archive.reservations WHERE id = $1"
        ),
        vec![id.into()],
    ))
    .one(db)
    .await
}

/// Archived reservation `id` (a settlement that comes for it after its show was archived).
pub async fn find_archived<C: ConnectionTrait>(
    db: &C,
    id: i64,
) -> Result<Option<Reservation>, DbErr> {
    Reservation::find_by_statement(stmt(
        db,
        &format!("SELECT {COLUMNS} FROM archive.reservations WHERE id = $1"),
        vec![id.into()],
    ))
    .one(db)
    .await
}

/// A user's reservations, newest first, hot and archived: the newest `limit` of each (both
/// through their `(user_id, id DESC)` index), merged.
pub async fn list_for_user<C: ConnectionTrait>(
    db: &C,
    user_id: i64,
    limit: u64,
) -> Result<Vec<Reservation>, DbErr> {
    Reservation::find_by_statement(stmt(
        db,
        &format!(
            "(SELECT {COLUMNS} FROM reservations WHERE user_id = $1 ORDER BY id DESC LIMIT $2) \
             UNION ALL \
             (SELECT {COLUMNS} FROM archive.reservations WHERE user_id = $1 ORDER BY id DESC LIMIT $2) \
             ORDER BY id DESC LIMIT $2"
        ),
        vec![user_id.into(), (limit as i64).into()],
    ))
    .all(db)
    .await
}
